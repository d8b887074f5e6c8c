"""Profile import: row validation with precise Chinese reports, skip policy, idempotent re-import, 100,000 rows."""

from __future__ import annotations

import csv
import json
import random
import re
from datetime import date
from pathlib import Path

import pytest
from click.testing import CliRunner

from hotline.commands.profiles import profiles
from profiles.id_number import check_character
from profiles.importer import (
    COLUMNS,
    ImportFileError,
    RowValidator,
    ValidRow,
    plan_import,
    read_rows,
)
from profiles.synthetic import synthetic_id_for_index, synthetic_row
from regions.divisions import default_division_table

TODAY = date(2026, 12, 4)
REPORT_LINE_RE = re.compile(r"^第 (\d+) 行，列 (\w+)，值 (.*?)：(.+)$")


def _future_id() -> str:
    first17 = "11010520270101001"
    return first17 + check_character(first17)


def _wrong_check(value: str) -> str:
    return value[:17] + ("0" if value[17] != "0" else "1")


def _feb30_id() -> str:
    first17 = "11010519800230001"
    return first17 + check_character(first17)


# Each corruption: (column, change to the row, fragment the message must contain).
CORRUPTIONS = [
    ("id_number", lambda row, i: row.update(id_number=_wrong_check(row["id_number"])), "校验位不符"),
    ("id_number", lambda row, i: row.update(id_number=_feb30_id()), "不是真实日期"),
    ("id_number", lambda row, i: row.update(id_number=_future_id()), "晚于今天"),
    ("id_number", lambda row, i: row.update(id_number=row["id_number"][:17]), "应为 18 位"),
    ("id_number", lambda row, i: row.update(id_number=row["id_number"][:10] + "AB" + row["id_number"][12:]),
     "前 17 位应为数字"),
    ("id_number", lambda row, i: row.update(id_number=synthetic_id_for_index(i - 1)), "身份证号相同"),
    ("phones", lambda row, i: row.update(phones="12345"), "号码只有 5 位"),
    ("phones", lambda row, i: row.update(phones="139000000"), "区号 0139 无效"),
    ("phones", lambda row, i: row.update(phones="021-123456789"), "7 或 8 位本地号码"),
    ("phones", lambda row, i: row.update(phones=""), "至少填写一个电话号码"),
    ("region_code", lambda row, i: row.update(region_code="999999"), "不在区划表"),
    ("region_code", lambda row, i: row.update(region_code="330100"), "不是县级区划"),
    ("statuses", lambda row, i: row.update(statuses="低保户:2023-01-01~"), "未知的救助状态"),
    ("statuses", lambda row, i: row.update(statuses="低保:2024-01-01~2023-01-01"), "结束日期早于开始日期"),
    ("need_tags", lambda row, i: row.update(need_tags="耳背"), "未知的特殊需求标签"),
    ("name", lambda row, i: row.update(name=""), "姓名为必填项"),
    ("help_history", lambda row, i: row.update(help_history="去年帮过"), "每条帮扶记录应写成"),
    ("contact_phone", lambda row, i: row.update(contact_name="赵六", contact_relation="儿子", contact_phone="999"),
     "号码"),
]


def _validator() -> RowValidator:
    return RowValidator(default_division_table(), TODAY)


def _write_config(tmp_path: Path) -> Path:
    (tmp_path / "keys").mkdir()
    (tmp_path / "db").mkdir()
    config = tmp_path / "profiles.yaml"
    config.write_text(
        f"database: {tmp_path / 'db' / 'profiles.sqlite3'}\n"
        f"encryption_key_file: {tmp_path / 'keys' / 'encryption.json'}\n"
        f"lookup_key_file: {tmp_path / 'keys' / 'lookup.json'}\n",
        encoding="utf-8",
    )
    return config


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def test_valid_row_parsed() -> None:
    row = synthetic_row(0, random.Random(1))
    row.update(statuses="低保:2023-01-01~2024-06-30；特困:2024-07-01~", need_tags="手语;需重复确认",
               help_history="2024-03-02 临时救助800元;2024-05-01 入户走访")
    result = _validator().validate(2, row)
    assert isinstance(result, ValidRow)
    assert len(result.profile.statuses) == 2
    assert result.profile.statuses[1].end is None
    assert {tag.value for tag in result.profile.need_tags} == {"手语", "需重复确认"}
    assert [record.description for record in result.profile.help_history] == ["临时救助800元", "入户走访"]


def test_legacy_id_upgraded_on_import() -> None:
    row = synthetic_row(0, random.Random(1))
    # The 15-digit legacy form of synthetic_id_for_index(17, "330106"), 33010619300118001X.
    row["id_number"] = "330106300118001"
    result = _validator().validate(2, row)
    assert isinstance(result, ValidRow)
    assert result.profile.id_number == synthetic_id_for_index(17, "330106")
    assert result.upgraded_id is True


def test_report_masks_personal_values() -> None:
    row = synthetic_row(0, random.Random(1))
    row["id_number"] = _wrong_check(row["id_number"])
    row["phones"] = "1390000000"
    errors = _validator().validate(5, row)
    assert isinstance(errors, list)
    rendered = "\n".join(error.render() for error in errors)
    assert row["id_number"] not in rendered
    assert "1390000000" not in rendered
    assert errors[0].row == 5
    assert errors[0].value_masked == row["id_number"][0] + "*" * 15 + row["id_number"][-2:]


def test_several_faults_in_one_row_all_listed() -> None:
    row = synthetic_row(0, random.Random(1))
    row.update(name="", region_code="999999", need_tags="耳背")
    errors = _validator().validate(9, row)
    assert isinstance(errors, list)
    assert [error.column for error in errors] == ["name", "region_code", "need_tags"]


def test_unknown_csv_column_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,id_number,phones,region_code,shoe_size\n", encoding="utf-8")
    with pytest.raises(ImportFileError) as caught:
        list(read_rows(path))
    assert "shoe_size" in str(caught.value)


def test_missing_required_column_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("name,id_number\n", encoding="utf-8")
    with pytest.raises(ImportFileError) as caught:
        list(read_rows(path))
    assert "phones" in str(caught.value)


def test_json_rows_with_lists(tmp_path: Path) -> None:
    row = synthetic_row(3, random.Random(1))
    document = [dict(row, phones=["13900000003", "021-55501234"], need_tags=["手语"])]
    path = tmp_path / "in.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    plan = plan_import(read_rows(path), _validator())
    assert plan.errors == ()
    assert [phone.e164 for phone in plan.valid[0].profile.phones] == ["+8613900000003", "+862155501234"]


def test_cli_reimport_is_idempotent(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    runner = CliRunner()
    assert runner.invoke(profiles, ["keygen", "--config", str(config)]).exit_code == 0

    rng = random.Random(5)
    source = tmp_path / "in.csv"
    _write_csv(source, [synthetic_row(index, rng) for index in range(20)])
    first = runner.invoke(profiles, ["import", str(source), "--config", str(config)])
    second = runner.invoke(profiles, ["import", str(source), "--config", str(config)])
    assert first.exit_code == 0, first.output
    assert "新增 20 份，更新 0 份" in first.output
    assert second.exit_code == 0, second.output
    assert "新增 0 份，更新 20 份" in second.output


def test_cli_import_100000_rows_one_percent_bad(tmp_path: Path) -> None:
    config = _write_config(tmp_path)
    runner = CliRunner()
    assert runner.invoke(profiles, ["keygen", "--config", str(config)]).exit_code == 0

    # Every hundredth row (index 37, 137, ...) gets one fault, cycling through all kinds.
    rng = random.Random(12349)
    rows = []
    expected: dict[int, tuple[str, str]] = {}
    for index in range(100_000):
        row = synthetic_row(index, rng)
        if index % 100 == 37:
            column, corrupt, fragment = CORRUPTIONS[(index // 100) % len(CORRUPTIONS)]
            corrupt(row, index)
            expected[index + 2] = (column, fragment)  # Line 1 of the CSV is the header.
        rows.append(row)
    source = tmp_path / "in.csv"
    _write_csv(source, rows)

    report = tmp_path / "report.txt"
    result = runner.invoke(profiles, ["import", str(source), "--config", str(config), "--report", str(report)])

    assert result.exit_code == 1, result.output
    assert "共 100000 行：新增 99000 份，更新 0 份，跳过有误的 1000 行（共 1000 处错误）" in result.output

    reported: dict[int, tuple[str, str, str]] = {}
    for line in report.read_text(encoding="utf-8").splitlines():
        match = REPORT_LINE_RE.match(line)
        assert match, line
        reported[int(match.group(1))] = (match.group(2), match.group(3), match.group(4))
    assert set(reported) == set(expected)

    for line_number, (column, fragment) in expected.items():
        got_column, value_masked, message = reported[line_number]
        assert got_column == column, (line_number, got_column)
        assert fragment in message, (line_number, message)
        raw = rows[line_number - 2][column]
        if column in ("id_number", "phones", "contact_phone") and len(raw) >= 7:
            assert raw not in value_masked, (line_number, value_masked)

    duplicates = [line for line, (column, fragment) in expected.items() if fragment == "身份证号相同"]
    assert duplicates
    for line_number in duplicates:
        assert f"与第 {line_number - 1} 行的身份证号相同" in reported[line_number][2]
