"""Domain: YAML call flows, loaded with line numbers and checked before any caller reaches them.

A flow is a graph of named nodes. ``load_flow`` parses the file, validates its schema and
its graph, and returns an immutable ``Flow`` whose ``version`` is the SHA-256 of the file
bytes, so a call record names exactly the text it ran. Every problem is reported as a
``FlowIssue`` with file, line, column and a Chinese message that says what to change.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

# The caller's keypad: a menu key is one of these characters.
DTMF_KEYS = frozenset("0123456789*#")

# Ticket categories a menu choice may set, matching the ticket domain's category codes.
CATEGORIES = frozenset({"dibao", "tekun", "linshi", "ertong", "yanglao", "liulang", "zhengce", "other"})

# Node ids become log fields and call-record path entries, so keep them plain.
NODE_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
SKILL_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
_NODE_ID_RE = re.compile(NODE_ID_PATTERN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MenuChoice(_Strict):
    """Action of one menu key: optionally set the category and skill, then go to ``next``."""

    next: str
    category: str | None = None
    skill: Annotated[str, Field(pattern=SKILL_PATTERN)] | None = None
    label: str | None = None


class PlayNode(_Strict):
    type: Literal["play"]
    prompt: str
    next: str


class MenuNode(_Strict):
    type: Literal["menu"]
    prompt: str
    choices: dict[str, MenuChoice]
    timeout_ms: Annotated[int, Field(ge=1000, le=60000)] = 5000
    max_attempts: Annotated[int, Field(ge=1, le=5)] = 3
    invalid_prompt: str | None = None
    no_input_prompt: str | None = None
    on_exhausted: str


class QueueNode(_Strict):
    """Connect the caller to an agent with the call's skill (or ``skill`` when given)."""

    type: Literal["queue"]
    prompt: str
    wait_prompt: str
    skill: Annotated[str, Field(pattern=SKILL_PATTERN)] | None = None
    max_wait_s: Annotated[int, Field(ge=5, le=1800)] = 120
    announce_every_s: Annotated[int, Field(ge=5, le=300)] = 20
    ring_timeout_s: Annotated[int, Field(ge=5, le=120)] = 20
    retry_prompt: str | None = None
    next: str
    on_no_agent: str


class HangupNode(_Strict):
    type: Literal["hangup"]
    prompt: str | None = None


Node = Annotated[Union[PlayNode, MenuNode, QueueNode, HangupNode], Field(discriminator="type")]
_NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)


class FlowSettings(_Strict):
    fallback_prompt: str | None = None


class _FlowHeader(_Strict):
    flow: Annotated[str, Field(min_length=1, max_length=64)]
    title: str
    start: str
    settings: FlowSettings = FlowSettings()
    nodes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FlowIssue:
    """One problem in a flow file, located for the admin who edits it."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}: {self.message}"


class FlowError(Exception):
    """A flow file that must not go live; ``issues`` lists every problem found."""

    def __init__(self, issues: list[FlowIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


@dataclass(frozen=True, slots=True)
class Flow:
    flow_id: str
    title: str
    start: str
    version: str
    source: str
    nodes: Mapping[str, Node]
    settings: FlowSettings

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]


def _position(container: Any, key: Any, *, value: bool = False) -> tuple[int, int]:
    """Return the 1-based line and column of a key (or its value) in a ruamel container."""
    if isinstance(container, (CommentedMap, CommentedSeq)):
        try:
            line, column = container.lc.value(key) if value else container.lc.key(key)
            return line + 1, column + 1
        except (KeyError, IndexError, TypeError):
            return container.lc.line + 1, container.lc.col + 1
    return 1, 1


def _locate(document: Any, loc: Iterable[Any]) -> tuple[int, int]:
    """Follow a pydantic error location into the YAML tree and return the deepest position."""
    node = document
    position = (1, 1)
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            position = _position(node, part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            position = _position(node, part)
            node = node[part]
        else:
            # A missing key is reported where its parent key stands.
            break
    return position


_PYDANTIC_MESSAGES = {
    "missing": "缺少必填字段“{field}”，请补上",
    "extra_forbidden": "不认识的字段“{field}”，请检查拼写或删除",
    "literal_error": "字段“{field}”的值不对：{msg}",
    "union_tag_invalid": "节点类型“{value}”不存在，可用的类型：play、menu、queue、hangup",
    "union_tag_not_found": "节点缺少“type”字段，请写明 play、menu、queue 或 hangup",
    "string_pattern_mismatch": "字段“{field}”的值“{value}”格式不对，只能用小写字母、数字和下划线，并以字母开头",
    "greater_than_equal": "字段“{field}”的值 {value} 太小：{msg}",
    "less_than_equal": "字段“{field}”的值 {value} 太大：{msg}",
    "int_parsing": "字段“{field}”应为整数，现在是“{value}”",
    "int_type": "字段“{field}”应为整数，现在是“{value}”",
    "string_type": "字段“{field}”应为文字，现在是“{value}”",
    "dict_type": "字段“{field}”应为映射（键: 值），现在是“{value}”",
    "model_type": "“{field}”应为映射（键: 值），现在是“{value}”",
}


def _message_for(error: Mapping[str, Any]) -> str:
    loc = error.get("loc", ())
    field = str(loc[-1]) if loc else "?"
    template = _PYDANTIC_MESSAGES.get(error["type"], "字段“{field}”无效：{msg}")
    value = error.get("ctx", {}).get("tag", error.get("input"))
    return template.format(field=field, value=value, msg=error.get("msg", ""))


class _Checker:
    """Collects schema and graph issues for one flow document."""

    def __init__(self, path: str, document: CommentedMap, prompt_ids: frozenset[str] | None):
        self.path = path
        self.document = document
        self.prompt_ids = prompt_ids
        self.issues: list[FlowIssue] = []

    def add(self, loc: Iterable[Any], message: str, *, at_value: bool = False) -> None:
        loc = list(loc)
        if at_value and loc:
            parent = self.document
            for part in loc[:-1]:
                parent = parent[part]
            line, column = _position(parent, loc[-1], value=True)
        else:
            line, column = _locate(self.document, loc)
        self.issues.append(FlowIssue(self.path, line, column, message))

    def add_validation_error(self, prefix: list[Any], error: ValidationError) -> None:
        for item in error.errors():
            loc = [part for part in item["loc"] if not (isinstance(part, str) and part in {"play", "menu", "queue", "hangup"})]
            if item["type"] == "union_tag_invalid":
                loc.append("type")
            self.add(prefix + loc, _message_for(item))

    def check_target(self, loc: list[Any], target: str, nodes: Mapping[str, Any]) -> None:
        """Report a jump to a node id that is not defined."""
        if target not in nodes:
            known = "、".join(sorted(nodes)) or "（无）"
            self.add(loc, f"跳转目标“{target}”不存在，请改成已定义的节点之一：{known}", at_value=True)

    def check_prompt(self, loc: list[Any], prompt_id: str | None) -> None:
        if prompt_id is None or self.prompt_ids is None:
            return
        if prompt_id not in self.prompt_ids:
            self.add(loc, f"提示音“{prompt_id}”在提示音目录中没有文本，请先在 prompts/zh-CN.yaml 中添加", at_value=True)


def _node_targets(node: Node) -> list[tuple[list[Any], str]]:
    """Return (location suffix, target node id) for every edge leaving a node."""
    if isinstance(node, PlayNode):
        return [(["next"], node.next)]
    if isinstance(node, MenuNode):
        edges = [(["choices", key, "next"], choice.next) for key, choice in node.choices.items()]
        edges.append((["on_exhausted"], node.on_exhausted))
        return edges
    if isinstance(node, QueueNode):
        return [(["next"], node.next), (["on_no_agent"], node.on_no_agent)]
    return []


def _node_prompts(node: Node) -> list[tuple[str, str | None]]:
    if isinstance(node, MenuNode):
        return [("prompt", node.prompt), ("invalid_prompt", node.invalid_prompt), ("no_input_prompt", node.no_input_prompt)]
    if isinstance(node, QueueNode):
        return [("prompt", node.prompt), ("wait_prompt", node.wait_prompt), ("retry_prompt", node.retry_prompt)]
    return [("prompt", node.prompt)]


def _check_menu(checker: _Checker, node_id: str, node: MenuNode) -> None:
    for key, choice in node.choices.items():
        loc = ["nodes", node_id, "choices", key]
        if len(str(key)) != 1 or str(key) not in DTMF_KEYS:
            checker.add(loc, f"按键“{key}”无效，菜单按键只能是 0-9、* 或 # 中的一个字符（数字键请加引号，如 \"1\"）")
        if choice.category is not None and choice.category not in CATEGORIES:
            known = "、".join(sorted(CATEGORIES))
            checker.add(loc + ["category"], f"业务类别“{choice.category}”不存在，可用：{known}", at_value=True)


def _check_graph(checker: _Checker, start: str, nodes: Mapping[str, Node]) -> None:
    if start not in nodes:
        checker.check_target(["start"], start, nodes)
        return

    reachable: set[str] = set()
    pending = [start]
    while pending:
        node_id = pending.pop()
        if node_id in reachable or node_id not in nodes:
            continue
        reachable.add(node_id)
        pending.extend(target for _, target in _node_targets(nodes[node_id]))

    for node_id in nodes:
        if node_id not in reachable:
            checker.add(["nodes", node_id], f"节点“{node_id}”从开始节点“{start}”无法到达，请删除它或从其他节点跳转过来")

    # A cycle made only of play nodes never waits for the caller and never ends.
    for node_id, node in nodes.items():
        seen: list[str] = []
        current: str | None = node_id
        while isinstance(nodes.get(current or ""), PlayNode) and current not in seen:
            seen.append(current)
            current = nodes[current].next  # type: ignore[union-attr]
        if current == node_id and seen:
            checker.add(["nodes", node_id], f"节点“{node_id}”处在只有播放节点的循环里（{' → '.join(seen + [node_id])}），来电会永远循环，请让循环经过菜单或挂机节点")


def _yaml_loader() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def load_flow(path: str | Path, *, prompt_ids: Iterable[str] | None = None) -> Flow:
    """Load and check a flow file; raise ``FlowError`` listing every problem found.

    ``prompt_ids`` is the set of prompt ids in the prompt catalog; when given, every prompt
    the flow names must be in it.
    """
    path = Path(path)
    data = path.read_bytes()
    return parse_flow(data, source=str(path), prompt_ids=prompt_ids)


def parse_flow(data: bytes, *, source: str, prompt_ids: Iterable[str] | None = None) -> Flow:
    """Parse flow text already read from ``source``; see ``load_flow``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FlowError([FlowIssue(source, 1, 1, f"文件不是 UTF-8 编码（第 {exc.start} 字节），请用 UTF-8 保存")]) from exc

    try:
        document = _yaml_loader().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or "YAML 语法错误"
        if "duplicate key" in str(problem):
            message = f"键重复定义：{problem.split('found duplicate key')[-1].strip()}，同一层级的键（包括菜单按键）只能出现一次"
        else:
            message = f"YAML 语法错误：{problem}，请检查缩进、冒号和引号"
        raise FlowError([FlowIssue(source, line, column, message)]) from exc

    if not isinstance(document, CommentedMap):
        raise FlowError([FlowIssue(source, 1, 1, "流程文件的顶层应为映射，至少包含 flow、title、start 和 nodes")])

    checker = _Checker(source, document, frozenset(prompt_ids) if prompt_ids is not None else None)

    try:
        header = _FlowHeader.model_validate(dict(document))
    except ValidationError as exc:
        checker.add_validation_error([], exc)
        raise FlowError(checker.issues) from exc

    nodes: dict[str, Node] = {}
    invalid_nodes: set[str] = set()
    for node_id, raw_node in header.nodes.items():
        loc = ["nodes", node_id]
        if not isinstance(node_id, str) or not _NODE_ID_RE.match(node_id):
            checker.add(loc, f"节点名“{node_id}”格式不对，只能用小写字母、数字和下划线，并以字母开头")
            continue
        try:
            nodes[node_id] = _NODE_ADAPTER.validate_python(raw_node)
        except ValidationError as exc:
            checker.add_validation_error(loc, exc)
            invalid_nodes.add(node_id)

    # Nodes that failed validation still count as defined, so one typo gives one message.
    defined = {**nodes, **{node_id: None for node_id in invalid_nodes}}
    for node_id, node in nodes.items():
        loc = ["nodes", node_id]
        for suffix, target in _node_targets(node):
            checker.check_target(loc + suffix, target, defined)
        for field_name, prompt_id in _node_prompts(node):
            checker.check_prompt(loc + [field_name], prompt_id)
        if isinstance(node, MenuNode):
            _check_menu(checker, node_id, node)

    checker.check_prompt(["settings", "fallback_prompt"], header.settings.fallback_prompt)
    if not checker.issues:
        _check_graph(checker, header.start, nodes)

    if checker.issues:
        raise FlowError(checker.issues)

    return Flow(
        flow_id=header.flow,
        title=header.title,
        start=header.start,
        version=hashlib.sha256(data).hexdigest(),
        source=source,
        nodes=nodes,
        settings=header.settings,
    )

