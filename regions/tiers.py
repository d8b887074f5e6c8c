"""Domain: the hotline tier tree (ministry, province, city, county) over GB/T 2260 codes; no I/O.

Rules, checked against the shipped snapshot by tests/unit/test_regions_tiers.py:

- The ministry has no GB/T 2260 code and uses the sentinel 000000. It has no parent.
- A provincial-level unit is a province node whose parent is the ministry. The four
  municipalities (110000, 120000, 310000, 500000) are province nodes that also do the
  city tier's work.
- A prefecture-level unit with county-level units below it is a city node whose parent
  is its province.
- A prefecture-level unit without any county-level unit below it (东莞 441900, 中山
  442000, 儋州 460400, 嘉峪关 620200) is a county node: it takes calls itself, and its
  parent is its province.
- A county-level unit is a county node whose parent is the division above it in the
  snapshot: its city, or its province for a county of a municipality and for a
  province-administered county-level unit (4190xx, 4290xx, 4690xx, 6590xx).
- The municipal placeholders (110100, 120100, 310100, 500100 "市辖区", 500200 "县") are
  not nodes, because no government or hotline office sits at them. A county of Beijing
  escalates to 110000 directly, and a node configured with 110100 is rejected with a
  message that names 110000.
"""

from __future__ import annotations

from dataclasses import dataclass

from regions.divisions import (
    Division,
    DivisionLevel,
    DivisionTable,
    RegionCodeError,
    default_division_table,
    normalise_region_code,
)
from tickets.model import MINISTRY_REGION_CODE, Tier

MINISTRY_NAME = "民政部"
MUNICIPALITY_CODES = frozenset({"110000", "120000", "310000", "500000"})


class PlaceholderRegionCode(RegionCodeError):
    """A municipal placeholder code (such as 110100) used where a hotline node is meant."""

    def __init__(self, division: Division) -> None:
        municipality = division.parent_code
        super().__init__(
            division.code,
            f"地区代码 {division.code}（{division.name}）是直辖市的占位代码，没有对应的热线节点："
            f"请改用直辖市代码 {municipality}（数据集 {division.dataset_version}）",
        )


@dataclass(frozen=True)
class TierNode:
    """A hotline node position: its region code, tier and the region code of its parent node.

    ``parent_code`` is None only for the ministry. ``dataset_version`` is the division
    dataset the result was computed from; the ministry node carries it too.
    """

    code: str
    name: str
    tier: Tier
    parent_code: str | None
    dataset_version: str


@dataclass(frozen=True)
class EmergencyRoute:
    """Codes alerted directly in an emergency (跨级直连), skipping the tiers in between."""

    origin_code: str
    province_code: str | None
    ministry_code: str
    dataset_version: str


class TierTree:
    """Tier and parent of every hotline node position in one division dataset version."""

    def __init__(self, table: DivisionTable) -> None:
        self._table = table

    @property
    def dataset_version(self) -> str:
        return self._table.dataset_version

    def node(self, value: object) -> TierNode:
        """Return the hotline node for a region code; raise RegionCodeError if there is none."""
        code = normalise_region_code(value)
        if code == MINISTRY_REGION_CODE:
            return TierNode(code, MINISTRY_NAME, Tier.MINISTRY, None, self.dataset_version)

        division = self._table.lookup(code)
        if division.placeholder:
            raise PlaceholderRegionCode(division)

        tier = self._tier_of(division)

        # Below the province, the parent node is the division above in the snapshot, which
        # already is the province for a city, a city without counties, a county of a
        # municipality and a province-administered county-level unit.
        parent_code = MINISTRY_REGION_CODE if tier is Tier.PROVINCE else division.parent_code
        return TierNode(code, division.name, tier, parent_code, self.dataset_version)

    def parent_code(self, value: object) -> str | None:
        """Return the region code of the node above ``value`` (None for the ministry)."""
        return self.node(value).parent_code

    def escalation_chain(self, value: object) -> list[str]:
        """Return the region codes from ``value`` itself up to the ministry 000000, in order."""
        chain = []
        node: TierNode | None = self.node(value)
        while node is not None:
            chain.append(node.code)
            node = None if node.parent_code is None else self.node(node.parent_code)
        return chain

    def emergency_route(self, value: object) -> EmergencyRoute:
        """Return the province and ministry codes to alert directly for an emergency at ``value``.

        For a province node the province is the node itself, and for the ministry there is
        no province (None).
        """
        chain = self.escalation_chain(value)

        # Every province node reports to the ministry, so the province is the last code before it.
        province_code = chain[-2] if len(chain) >= 2 else None
        return EmergencyRoute(chain[0], province_code, MINISTRY_REGION_CODE, self.dataset_version)

    def _tier_of(self, division: Division) -> Tier:
        if division.level is DivisionLevel.PROVINCE:
            return Tier.PROVINCE
        if division.level is DivisionLevel.COUNTY:
            return Tier.COUNTY

        real_children = [child for child in self._table.children(division.code) if not child.placeholder]
        if real_children:
            return Tier.CITY
        return Tier.COUNTY


def default_tier_tree() -> TierTree:
    """Return the tier tree over the shipped division snapshot."""
    return TierTree(default_division_table())


def hotline_node(value: object) -> TierNode:
    """Return the hotline node for a region code in the shipped snapshot."""
    return default_tier_tree().node(value)


def escalation_chain(value: object) -> list[str]:
    """Return the region codes from ``value`` up to the ministry 000000 in the shipped snapshot."""
    return default_tier_tree().escalation_chain(value)


def emergency_route(value: object) -> EmergencyRoute:
    """Return the province and ministry codes for an emergency at ``value`` (跨级直连)."""
    return default_tier_tree().emergency_route(value)


def validate_node_region_code(value: object, tier: Tier | str | None = None) -> TierNode:
    """Return the node for a node's configured region code, checking the tier if one is given.

    ``tier`` is a Tier or its value ("county", "city", "province", "ministry"). Raise
    RegionCodeError (Chinese message naming the value and the fix) for a malformed code,
    a code missing from the snapshot, a municipal placeholder, or a tier that does not
    match the code.
    """
    node = hotline_node(value)
    if isinstance(tier, str):
        tier = Tier(tier)
    if tier is not None and node.tier is not tier:
        raise RegionCodeError(
            value,
            f"地区代码 {node.code}（{node.name}）在数据集 {node.dataset_version} 中是{node.tier.label}级节点，"
            f"但配置的层级是{tier.label}级：请把 tier 改为 {node.tier.value}，或改用{tier.label}级的地区代码",
        )
    return node
