"""Flow diagrams: Chinese labels in the SVG, a PNG of plausible size, and the CJK font resolved."""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

from click.testing import CliRunner

from hotline.cli import main
from ivr.diagram import CJK_FONT, flow_graph, render_flow, shorten
from ivr.flow import load_flow, parse_flow
from speech.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
CATALOG = load_catalog(ROOT / "prompts" / "zh-CN.yaml")
PROMPT_TEXTS = {prompt.prompt_id: prompt.text for prompt in CATALOG.prompts}
FLOW = load_flow(ROOT / "flows" / "12349.yaml", prompt_ids=set(PROMPT_TEXTS))


def png_size(data: bytes) -> tuple[int, int]:
    """Return (width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_shorten_cuts_long_text():
    assert shorten("您好，这里是12349民政服务热线，很高兴为您服务。", 8) == "您好，这里是12…"
    assert shorten("短句", 8) == "短句"
    assert shorten("两行\n文字", 8) == "两行 文字"


def test_graph_labels_in_chinese():
    source = flow_graph(FLOW, PROMPT_TEXTS).source

    assert "按1 低保" in source
    assert "按0 人工服务" in source
    assert "多次无效" in source
    assert "无坐席" in source
    assert "（菜单）" in source
    assert "“您好，这里是12349民政服务热…”" in source
    assert f'fontname="{CJK_FONT}"' in source


def test_graph_draws_call_start_rules():
    """The shipped flow sends a caller with an open ticket past the menu; the diagram shows it."""
    source = flow_graph(FLOW, PROMPT_TEXTS).source

    assert "来电规则1：来电人有未办结工单" in source


def test_graph_without_catalog_names_prompt_ids():
    source = flow_graph(FLOW).source

    assert "提示音 welcome" in source


def test_render_svg_and_png(tmp_path):
    svg_path, png_path = render_flow(FLOW, tmp_path, prompt_texts=PROMPT_TEXTS)

    assert svg_path == tmp_path / "flow-12349.svg"
    svg = svg_path.read_text(encoding="utf-8")
    assert "按1 低保" in svg
    assert "12349民政服务热线主流程" in svg
    assert "WenQuanYi Micro Hei" in svg

    png = png_path.read_bytes()
    width, height = png_size(png)
    assert 800 <= width <= 6000
    assert 300 <= height <= 4000
    assert len(png) > 20_000


def test_cjk_font_resolves():
    # fontconfig falls back to another family when the requested one is not installed.
    matched = subprocess.run(["fc-match", "-f", "%{family}", CJK_FONT], capture_output=True, text=True, check=True)
    assert CJK_FONT in matched.stdout

    covering = subprocess.run(["fc-list", ":lang=zh-cn", "family"], capture_output=True, text=True, check=True)
    assert CJK_FONT in covering.stdout


def test_draw_command(tmp_path):
    result = CliRunner().invoke(main, ["flows", "draw", str(ROOT / "flows" / "12349.yaml"), "--out", str(tmp_path),
                                       "--catalog", str(ROOT / "prompts" / "zh-CN.yaml")])

    assert result.exit_code == 0, result.output
    assert f"已生成 {tmp_path / 'flow-12349.svg'}" in result.output
    assert (tmp_path / "flow-12349.png").stat().st_size > 20_000


def test_draw_command_rejects_bad_flow(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "flows" / "12349.yaml").read_text(encoding="utf-8").replace("start: welcome", "start: hello"),
                   encoding="utf-8")

    result = CliRunner().invoke(main, ["flows", "draw", str(bad), "--out", str(tmp_path / "out"),
                                       "--catalog", str(ROOT / "prompts" / "zh-CN.yaml")])

    assert result.exit_code == 1
    assert "跳转目标“hello”不存在" in result.output
    assert "请先改正再画图" in result.output
    assert not (tmp_path / "out").exists()


def test_branch_and_handler_edge_labels():
    text = """\
flow: t
title: 测试流程
start: check
handlers:
  human: {key: "0", next: bye}
nodes:
  check:
    type: branch
    cases:
      - when: {working_day: true, need: 紧急, time: "08:30-17:30"}
        next: menu
    otherwise: closed
  menu:
    type: menu
    prompt: main_menu
    on_exhausted: bye
    choices:
      "1": {next: bye}
  bye: {type: hangup}
  closed: {type: hangup}
"""
    flow = parse_flow(text.encode(), source="t.yaml")

    source = flow_graph(flow).source

    assert 'label="条件1：需求=紧急，时间 08:30-17:30，工作日"' in source
    assert 'label="其他情况"' in source
    assert 'label="按0 人工服务"' in source
    assert 'label="按1"' in source
    assert "（条件分支）" in source


def edge_labels(graph) -> list[str]:
    """Return the label of every edge line in a Graphviz graph's body, in order."""
    return [match.group(1) for line in graph.body if " -> " in line
            for match in [re.search(r'label="([^"]*)"', line)] if match]


def test_shipped_flow_edge_labels_name_no_fields():
    labels = edge_labels(flow_graph(FLOW, PROMPT_TEXTS))

    assert len(labels) >= 30
    for label in labels:
        assert re.search(r"[A-Za-z_]", label) is None, label


def test_queue_callback_and_overflow_edge_labels():
    source = flow_graph(FLOW, PROMPT_TEXTS).source

    assert 'to_agent -> finished [label="申请回电后"]' in source
    assert 'urgent_agent -> finished [label="溢出至上级后"]' in source
    assert "emergency_overflow.next" not in source
    assert "callback.next" not in source


def test_call_start_overflow_rule_label():
    labels = edge_labels(flow_graph(FLOW, PROMPT_TEXTS))

    assert "来电规则2：下级溢出来的紧急来电" in labels
    assert not any("overflow" in label for label in labels)


def test_edge_labels_keep_node_ids():
    source = flow_graph(FLOW, PROMPT_TEXTS).source

    assert "urgent_agent -> urgent_callback" in source
    assert 'urgent_agent [label="urgent_agent\n（转人工）' in source
