"""Flow files: the shipped flow loads, and broken edits are rejected with a located Chinese message."""

from pathlib import Path

import pytest

from ivr.flow import FlowError, MenuNode, QueueNode, load_flow, parse_flow

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
flow: "t"
title: 测试
start: menu
nodes:
  menu:
    type: menu
    prompt: main_menu
    on_exhausted: bye
    choices:
      "1": {category: dibao, skill: dibao, next: queue}
  queue:
    type: queue
    prompt: transfer_agent
    wait_prompt: queue_wait
    next: bye
    on_no_agent: bye
  bye:
    type: hangup
    prompt: goodbye
"""


def _issues(text: str, **kwargs) -> list[str]:
    with pytest.raises(FlowError) as caught:
        parse_flow(text.encode(), source="t.yaml", **kwargs)
    return [str(issue) for issue in caught.value.issues]


def test_shipped_flow_loads():
    flow = load_flow(ROOT / "flows" / "12349.yaml")

    menu = flow.node("main_menu")
    assert isinstance(menu, MenuNode)
    assert sorted(menu.choices) == ["0", "1", "2", "3", "4", "5", "6", "7"]
    assert menu.choices["3"].category == "linshi"
    assert isinstance(flow.node("to_agent"), QueueNode)
    assert len(flow.version) == 64


def test_version_is_content_hash():
    first = parse_flow(GOOD.encode(), source="a")
    second = parse_flow(GOOD.encode(), source="b")
    changed = parse_flow(GOOD.replace("测试", "测试二").encode(), source="a")

    assert first.version == second.version
    assert first.version != changed.version


BROKEN = [
    ("unknown target", GOOD.replace("next: queue}", "next: queu}"), "t.yaml:10:", "跳转目标“queu”不存在"),
    ("duplicate key", GOOD.replace('      "1": {category', '      "1": {next: bye}\n      "1": {category'), "t.yaml:11:", "键重复定义"),
    ("unknown node type", GOOD.replace("type: hangup", "type: hangupp"), "t.yaml:18:", "节点类型“hangupp”不存在"),
    ("missing field", GOOD.replace("    on_exhausted: bye\n", ""), "t.yaml:5:", "缺少必填字段“on_exhausted”"),
    ("unknown field", GOOD.replace("    prompt: goodbye", "    prompt: goodbye\n    promt: x"), "t.yaml:20:", "不认识的字段“promt”"),
    ("bad key", GOOD.replace('"1": {category', '"12": {category'), "t.yaml:10:", "按键“12”无效"),
    ("unknown category", GOOD.replace("category: dibao", "category: dibo"), "t.yaml:10:", "业务类别“dibo”不存在"),
    ("unreachable node", GOOD + "  orphan:\n    type: hangup\n", "t.yaml:20:", "节点“orphan”从开始节点“menu”无法到达"),
    ("bad start", GOOD.replace("start: menu", "start: men"), "t.yaml:3:", "跳转目标“men”不存在"),
    ("timeout too small", GOOD.replace("    on_exhausted: bye\n", "    on_exhausted: bye\n    timeout_ms: 10\n"), "t.yaml:9:", "timeout_ms"),
    ("bad yaml", GOOD.replace("  bye:\n", "  bye\n"), "t.yaml:", "YAML 语法错误"),
]


@pytest.mark.parametrize(("case", "text", "location", "message"), BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_flow_rejected(case, text, location, message):
    issues = _issues(text)

    assert any(message in issue for issue in issues), issues
    assert any(issue.startswith(location) for issue in issues), issues


def test_unknown_prompt_rejected():
    issues = _issues(GOOD, prompt_ids={"main_menu", "transfer_agent", "queue_wait"})

    assert issues == ["t.yaml:19:13: 提示音“goodbye”在提示音目录中没有文本，请先在 prompts/zh-CN.yaml 中添加"]


def test_play_only_loop_rejected():
    text = GOOD.replace("start: menu", "start: a") + (
        "  a: {type: play, prompt: welcome, next: b}\n"
        "  b: {type: play, prompt: welcome, next: a}\n"
    )

    issues = _issues(text)

    assert any("只有播放节点的循环" in issue for issue in issues), issues


def test_not_utf8_rejected():
    with pytest.raises(FlowError) as caught:
        parse_flow("flow: 测试".encode("gbk"), source="t.yaml")

    assert "UTF-8" in str(caught.value)


def test_unquoted_menu_key_explained():
    text = GOOD.replace('      "1": {category', "      1: {category")

    issues = _issues(text)

    assert any('键 1 应写成带英文引号的文字，例如 "1"' in issue for issue in issues), issues
