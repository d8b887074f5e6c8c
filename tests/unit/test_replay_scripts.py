"""Call script parsing: valid scripts, and Chinese ``file:line`` errors for broken ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from replay.scripts import (
    ScriptError,
    TimedKey,
    load_script,
    parse_script,
    script_files,
)
from tickets.call_record import CallOutcome

LIBRARY = Path(__file__).resolve().parents[1] / "replay"

GOOD = """\
name: 先按8再按5
caller: "13900000003"
needs: [需语速放缓]
keys:
  - {key: "8", at_ms: 9000}
  - {key: "5", after_ms: 4500}
hangup_ms: 30000
expect:
  path_prefix: [welcome, main_menu]
  category: yanglao
  skill: yanglao
  agent: any
  ticket: true
  outcome: answered
"""


def issues(text: str) -> list[str]:
    with pytest.raises(ScriptError) as caught:
        parse_script(text, source="s.yaml")
    return [str(issue) for issue in caught.value.issues]


def test_parses_timed_keys_relative_and_absolute() -> None:
    script = parse_script(GOOD, source="s.yaml")

    assert script.keys == (TimedKey("8", 9000), TimedKey("5", 13500))
    assert script.caller == "13900000003"
    assert script.caller_masked == "139****0003"
    assert script.hangup_ms == 30000
    assert script.needs == frozenset({"需语速放缓"})
    assert script.expect.outcome is CallOutcome.ANSWERED
    assert script.expect.ticket is True
    assert script.expect.path_prefix == ("welcome", "main_menu")
    assert script.expect.path is None


def test_anonymous_caller_and_null_category() -> None:
    script = parse_script("name: x\ncaller: null\nexpect: {category: null, outcome: completed}\n", source="s.yaml")

    assert script.caller is None
    assert script.caller_masked == "无号码"
    assert "category" in script.expect.checks
    assert script.expect.category is None
    assert "skill" not in script.expect.checks


def test_errors_name_file_line_and_fix() -> None:
    text = """\
name: 坏脚本
caller: 13900000001
keys:
  - {key: 5, at_ms: 100}
  - {key: "A", at_ms: 200}
  - {key: "1"}
  - {key: "3", at_ms: 900}
  - {key: "2", at_ms: 50}
expect:
  outcome: hungup
  ticket: yes please
  colour: red
"""
    found = issues(text)

    assert found[0].startswith("s.yaml:2: 主叫号码 13900000001 要加英文引号")
    assert any(line.startswith("s.yaml:4: 按键 5 要加英文引号") for line in found)
    assert any(line.startswith("s.yaml:5: 按键“A”无效") for line in found)
    assert any(line.startswith("s.yaml:6: 第 3 个按键要写 at_ms") for line in found)
    assert any(line.startswith("s.yaml:8: 第 5 个按键的时间 50 毫秒早于上一个按键（900 毫秒）") for line in found)
    assert any(line.startswith("s.yaml:10: 结果“hungup”不存在") for line in found)
    assert any(line.startswith("s.yaml:11: “ticket”应为 true 或 false") for line in found)
    assert any(line.startswith("s.yaml:12: expect 一节里不认识的字段“colour”") for line in found)


def test_missing_expect_and_bad_yaml() -> None:
    assert issues("name: x\nkeys: []\n") == [
        "s.yaml:1: 缺少“expect”一节（期望结果），至少写 outcome，例如 expect: {outcome: answered}"]
    assert issues("name: x\n  keys: [\n")[0].startswith("s.yaml:2: YAML 格式错误")
    assert issues("name: x\nhangup_ms: 10\nkeys: [{key: '1', at_ms: 500}]\nexpect: {outcome: answered}\n") == [
        "s.yaml:2: 挂机时间 10 毫秒早于最后一个按键（500 毫秒），请调大"]
    assert issues("name: x\nexpect: {path: [a], path_prefix: [a]}\n")[0].startswith("s.yaml:2: “path”和“path_prefix”只能写一个")


def test_library_has_at_least_thirty_valid_scripts() -> None:
    files = script_files([LIBRARY])
    scripts = [load_script(path) for path in files]

    assert len(scripts) >= 30
    assert len({script.name for script in scripts}) == len(scripts)
    keys_used = {key.key for script in scripts for key in script.keys}
    assert set("01234579") <= keys_used
    assert any(script.caller is None for script in scripts)
