"""``hotline profiles`` commands: keys, lookup, audited show, operators, audit log and key rotation."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest

from click.testing import CliRunner

from hotline.commands.profiles import profiles
from profiles.importer import COLUMNS
from profiles.synthetic import synthetic_id_for_index, synthetic_row


@pytest.fixture(autouse=True)
def _wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's consoles are created at import, with the width of whatever terminal was there."""
    from hotline.commands import profiles as profiles_module

    monkeypatch.setattr(profiles_module.console, "width", 200)
    monkeypatch.setattr(profiles_module.error_console, "width", 200)


def _setup(tmp_path: Path, count: int = 10) -> tuple[CliRunner, Path, list[dict[str, str]]]:
    (tmp_path / "keys").mkdir()
    (tmp_path / "db").mkdir()
    config = tmp_path / "profiles.yaml"
    config.write_text(
        f"database: {tmp_path / 'db' / 'profiles.sqlite3'}\n"
        f"encryption_key_file: {tmp_path / 'keys' / 'encryption.json'}\n"
        f"lookup_key_file: {tmp_path / 'keys' / 'lookup.json'}\n"
        'default_area_code: "021"\n',
        encoding="utf-8",
    )
    # A wide terminal, so that rich does not shorten table cells.
    runner = CliRunner(env={"COLUMNS": "200"})
    assert runner.invoke(profiles, ["keygen", "--config", str(config)]).exit_code == 0

    rng = random.Random(3)
    rows = [synthetic_row(index, rng) for index in range(count)]
    rows[0].update(region_code="310115", need_tags="需语速放缓", contact_name="", contact_relation="",
                   contact_phone="")
    source = tmp_path / "in.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    result = runner.invoke(profiles, ["import", str(source), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return runner, config, rows


def _operators(runner: CliRunner, config: Path) -> None:
    for name, region, role in (("pd-agent", "310115", "agent"), ("sh-lead", "310000", "supervisor"),
                               ("bj-agent", "110101", "agent")):
        result = runner.invoke(profiles, ["operators", "add", name, "--region", region, "--role", role,
                                          "--config", str(config)])
        assert result.exit_code == 0, result.output


def test_keygen_refuses_second_run(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 1)
    result = runner.invoke(profiles, ["keygen", "--config", str(config)])
    assert result.exit_code == 2
    assert "已存在，不会覆盖" in result.output


def test_key_next_to_database_rejected(tmp_path: Path) -> None:
    config = tmp_path / "profiles.yaml"
    config.write_text(
        f"database: {tmp_path / 'profiles.sqlite3'}\n"
        f"encryption_key_file: {tmp_path / 'encryption.json'}\n"
        f"lookup_key_file: {tmp_path / 'lookup.json'}\n",
        encoding="utf-8",
    )
    result = CliRunner().invoke(profiles, ["keygen", "--config", str(config)])
    assert result.exit_code == 2
    assert "数据库目录之外" in result.output


def test_lookup_prints_masked_summary(tmp_path: Path) -> None:
    runner, config, rows = _setup(tmp_path)
    result = runner.invoke(profiles, ["lookup", "--phone", "+86 139 0000 0000", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "139****0000" in result.output
    assert "上海市浦东新区" in result.output
    assert "需语速放缓" in result.output
    assert rows[0]["id_number"] not in result.output
    assert rows[0]["name"] not in result.output


def test_lookup_unknown_number(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 1)
    result = runner.invoke(profiles, ["lookup", "--phone", "13900000999", "--config", str(config)])
    assert result.exit_code == 1
    assert "没有对应的档案" in result.output


def test_lookup_invalid_number(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 1)
    result = runner.invoke(profiles, ["lookup", "--phone", "12349", "--config", str(config)])
    assert result.exit_code == 1
    assert "号码无效" in result.output


def test_show_agent_sees_last_four(tmp_path: Path) -> None:
    runner, config, rows = _setup(tmp_path)
    _operators(runner, config)
    result = runner.invoke(profiles, ["show", "--phone", "13900000000", "--operator", "pd-agent",
                                      "--reason", "核实来电人身份", "--config", str(config)])
    assert result.exit_code == 0, result.output
    id_number = rows[0]["id_number"]
    assert id_number not in result.output
    assert id_number[0] + "*" * 13 + id_number[-4:] in result.output
    assert rows[0]["name"] in result.output


def test_show_supervisor_sees_full_id(tmp_path: Path) -> None:
    runner, config, rows = _setup(tmp_path)
    _operators(runner, config)
    result = runner.invoke(profiles, ["show", "--phone", "13900000000", "--operator", "sh-lead",
                                      "--reason", "核实来电人身份", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert rows[0]["id_number"] in result.output


def test_show_other_region_denied_and_audited(tmp_path: Path) -> None:
    runner, config, rows = _setup(tmp_path)
    _operators(runner, config)
    result = runner.invoke(profiles, ["show", "--phone", "13900000000", "--operator", "bj-agent",
                                      "--reason", "核实来电人身份", "--config", str(config)])
    assert result.exit_code == 1
    assert "无权查看" in result.output
    assert rows[0]["name"] not in result.output

    audit = runner.invoke(profiles, ["audit", "--config", str(config)])
    assert audit.exit_code == 0, audit.output
    assert "bj-agent" in audit.output
    assert "被拒绝" in audit.output


def test_show_without_reason_rejected(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 1)
    _operators(runner, config)
    result = runner.invoke(profiles, ["show", "--phone", "13900000000", "--operator", "sh-lead",
                                      "--reason", "看看", "--config", str(config)])
    assert result.exit_code == 1
    assert "必须说明理由" in result.output


def test_rotate_then_retire(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 30)
    key_file = tmp_path / "keys" / "encryption.json"
    first_key = json.loads(key_file.read_text())["active"]

    result = runner.invoke(profiles, ["rotate-key", "--batch-size", "7", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "已重新加密 30 份档案" in result.output
    assert first_key in json.loads(key_file.read_text())["keys"]

    resumed = runner.invoke(profiles, ["rotate-key", "--resume", "--config", str(config)])
    assert "已重新加密 0 份档案" in resumed.output

    retired = runner.invoke(profiles, ["retire-keys", "--config", str(config)])
    assert retired.exit_code == 0, retired.output
    assert first_key not in json.loads(key_file.read_text())["keys"]

    lookup = runner.invoke(profiles, ["lookup", "--phone", "13900000029", "--config", str(config)])
    assert lookup.exit_code == 0, lookup.output


def test_import_bad_file_type(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 1)
    source = tmp_path / "in.xlsx"
    source.write_bytes(b"PK")
    result = runner.invoke(profiles, ["import", str(source), "--config", str(config)])
    assert result.exit_code == 2
    assert "不支持的文件类型 .xlsx" in result.output


def test_operator_unknown_region_rejected(tmp_path: Path) -> None:
    runner, config, _rows = _setup(tmp_path, 1)
    result = runner.invoke(profiles, ["operators", "add", "x-agent", "--region", "999999", "--config", str(config)])
    assert result.exit_code == 1
    assert "999999" in result.output
    assert synthetic_id_for_index(0) not in result.output
