"""Flow diagrams: draw a checked flow as SVG and PNG with Graphviz, labelled in Chinese.

Each node shows its id, its kind and the start of the prompt text callers hear. Each edge
shows the menu key and its label, or what the jump means (下一步, 无坐席, ...). Graphviz's
``dot`` program must be installed (Debian package ``graphviz``), and a CJK font for the PNG
(``fonts-wqy-microhei``); the SVG names the same font family for the viewer to resolve.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

import graphviz

from ivr.flow import Flow, flow_edges

# Font family of fonts-wqy-microhei, which covers the CJK characters of every label.
CJK_FONT = "WenQuanYi Micro Hei"
PROMPT_PREVIEW_CHARS = 16
DEFAULT_FORMATS = ("svg", "png")

NODE_KIND_LABELS = {
    "play": "播放",
    "menu": "菜单",
    "collect": "按键输入",
    "set": "设置变量",
    "branch": "条件分支",
    "queue": "转人工",
    "transfer": "转接",
    "record": "录音留言",
    "callback": "预约回拨",
    "survey": "满意度调查",
    "hangup": "挂机",
}

NODE_SHAPES = {
    "menu": "diamond",
    "branch": "diamond",
    "queue": "box3d",
    "transfer": "box3d",
    "hangup": "doubleoctagon",
}

EDGE_FIELD_LABELS = {
    "next": "下一步",
    "on_exhausted": "多次无效",
    "on_no_agent": "无坐席",
    "on_failed": "转接失败",
    "otherwise": "其他情况",
    # A queue's callback: the caller pressed the key to be called back and keep the place.
    "callback.next": "申请回电后",
    # A queue's emergency overflow: the call went on to the tier above.
    "emergency_overflow.next": "溢出至上级后",
}

HANDLER_LABELS = {"human": "人工服务", "emergency": "紧急求助"}


class DiagramError(Exception):
    """The diagram cannot be rendered; the message is Chinese and names the fix."""


def shorten(text: str, limit: int = PROMPT_PREVIEW_CHARS) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def _node_label(node_id: str, node: object, prompt_texts: Mapping[str, str]) -> str:
    kind = str(getattr(node, "type", "?"))
    lines = [node_id, f"（{NODE_KIND_LABELS.get(kind, kind)}）"]
    prompt_id = getattr(node, "prompt", None)
    if isinstance(prompt_id, str):
        text = prompt_texts.get(prompt_id)
        lines.append(f"“{shorten(text)}”" if text else f"提示音 {prompt_id}")
    return "\n".join(lines)


# Branch conditions on the caller's citizen profile.
CALLER_LABELS = {"known": "已登记来电人", "open_ticket": "来电人有未办结工单", "overflow": "下级溢出来的紧急来电"}


def _condition_label(condition: object) -> str:
    """Describe a branch condition briefly, for example ``需求=紧急，工作日``."""
    parts = []
    need = getattr(condition, "need", None)
    if need:
        parts.append(f"需求={need}")
    time_of_day = getattr(condition, "time", None)
    if time_of_day:
        parts.append(f"时间 {time_of_day}")
    working_day = getattr(condition, "working_day", None)
    if working_day is not None:
        parts.append("工作日" if working_day else "非工作日")
    skill = getattr(condition, "agents_for", None)
    if skill:
        parts.append(f"{skill} {'有' if getattr(condition, 'agents_available', True) else '无'}坐席")
    caller = getattr(condition, "caller", None)
    if caller:
        parts.append(CALLER_LABELS.get(caller, caller))
    return "，".join(parts)


def _edge_label(flow: Flow, node: object, label: str) -> str:
    """Turn a ``flow_edges`` label into Chinese: ``按1 低保`` for a menu key, else the jump's meaning."""
    choices = getattr(node, "choices", None)
    if isinstance(choices, Mapping) and label in choices:
        choice_label = getattr(choices[label], "label", None)
        return f"按{label} {choice_label}" if choice_label else f"按{label}"

    parts = label.split(".")
    if parts[0] == "handlers" and len(parts) == 2:
        handler = getattr(getattr(flow, "handlers", None), parts[1], None)
        key = getattr(handler, "key", "?")
        return f"按{key} {HANDLER_LABELS.get(parts[1], parts[1])}"
    if parts[0] == "cases" and len(parts) >= 2 and parts[1].isdigit():
        index = int(parts[1])
        cases = getattr(node, "cases", [])
        condition = _condition_label(cases[index].when) if index < len(cases) else ""
        return f"条件{index + 1}：{condition}" if condition else f"条件{index + 1}"
    return EDGE_FIELD_LABELS.get(label, label)


def flow_graph(flow: Flow, prompt_texts: Mapping[str, str] | None = None, *, font: str = CJK_FONT) -> graphviz.Digraph:
    """Build the Graphviz graph of ``flow``; ``prompt_texts`` maps prompt ids to what callers hear."""
    texts = prompt_texts or {}
    graph = graphviz.Digraph(name=f"flow_{flow.flow_id}", comment=flow.title)
    graph.attr(rankdir="TB", label=f"{flow.title}（版本 {flow.version[:12]}）", labelloc="t", fontname=font,
               fontsize="18")
    graph.attr("node", fontname=font, fontsize="12", style="rounded,filled", fillcolor="#f5f7fa", shape="box")
    graph.attr("edge", fontname=font, fontsize="11")

    graph.node("__start__", "来电", shape="circle", fillcolor="#d8ecd8")
    graph.edge("__start__", flow.start)
    # Call-start rules jump before the first node, e.g. a known caller with an open ticket.
    for index, case in enumerate(getattr(flow.handlers, "call_start", [])):
        condition = _condition_label(case.when)
        graph.edge("__start__", case.next, label=f"来电规则{index + 1}：{condition}" if condition else f"来电规则{index + 1}",
                   style="dashed")
    for node_id, node in flow.nodes.items():
        kind = str(getattr(node, "type", ""))
        graph.node(node_id, _node_label(node_id, node, texts), shape=NODE_SHAPES.get(kind, "box"))

    for source, label, target in flow_edges(flow):
        graph.edge(source, target, label=_edge_label(flow, flow.nodes[source], label))
    return graph


def render_flow(flow: Flow, out_dir: Path | str, *, prompt_texts: Mapping[str, str] | None = None,
                formats: tuple[str, ...] = DEFAULT_FORMATS, font: str = CJK_FONT) -> list[Path]:
    """Write the diagram of ``flow`` into ``out_dir`` as ``flow-<flow id>.<format>`` and return the paths."""
    if shutil.which("dot") is None:
        raise DiagramError("找不到 Graphviz 的 dot 程序，请先安装：apt-get install -y graphviz")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    graph = flow_graph(flow, prompt_texts, font=font)
    written = []
    for fmt in formats:
        target = out_dir / f"flow-{flow.flow_id}.{fmt}"
        try:
            target.write_bytes(graph.pipe(format=fmt, engine="dot"))
        except graphviz.CalledProcessError as exc:
            stderr = exc.stderr.decode(errors="replace").strip() if exc.stderr else ""
            raise DiagramError(f"Graphviz 生成 {fmt.upper()} 失败：{stderr or exc}") from exc
        written.append(target)
    return written
