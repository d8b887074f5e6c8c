"""Domain: YAML call flows, loaded with line numbers and checked before any caller reaches them.

A flow is a graph of named nodes. ``load_flow`` parses the file, validates its schema and
its graph, and returns an immutable ``Flow`` whose ``version`` is the SHA-256 of the file
bytes, so a call record names exactly the text it ran. Every problem is reported as a
``FlowIssue`` with file, line, column and a Chinese message that says what to change.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

# The caller's keypad: a menu key is one of these characters.
DTMF_KEYS = frozenset("0123456789*#")

# Skill of calls that reach the queue without one (a caller who asked for a human).
DEFAULT_SKILL = "general"

# Ticket categories a menu choice may set, matching the ticket domain's category codes.
CATEGORIES = frozenset({"dibao", "tekun", "linshi", "ertong", "yanglao", "liulang", "zhengce", "other"})

# Node ids become log fields and call-record path entries, so keep them plain.
NODE_ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
SKILL_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
_NODE_ID_RE = re.compile(NODE_ID_PATTERN)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# Limits on caller input retries: the validator rejects flows that exceed them, so a silent
# caller always leaves an input node after a known number of prompts.
MAX_ATTEMPTS_LIMIT = 5
MAX_EXTRA_ATTEMPTS = 2

# A need tag is free text chosen by the admins (需语速放缓, 听力障碍, 紧急 ...).
NeedTag = Annotated[str, Field(min_length=1, max_length=16)]
PromptId = Annotated[str, Field(min_length=1, max_length=80)]
SkillName = Annotated[str, Field(pattern=SKILL_PATTERN)]
# "08:30-17:30" in Asia/Shanghai time; the end may be 24:00 for "until midnight".
TIME_OF_DAY_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"


class MenuChoice(_Strict):
    """Action of one menu key: optionally set the category and skill, then go to ``next``."""

    next: str
    category: str | None = None
    skill: SkillName | None = None
    label: str | None = None


class _InputNode(_Strict):
    """Fields shared by nodes that wait for the caller's keys."""

    timeout_ms: Annotated[int, Field(ge=1000, le=60000)] = 5000
    max_attempts: Annotated[int, Field(ge=1)] = 3
    # A list escalates: the n-th failed attempt plays the n-th prompt, the last one repeats.
    invalid_prompt: PromptId | list[PromptId] | None = None
    no_input_prompt: PromptId | list[PromptId] | None = None
    on_exhausted: str


class PlayNode(_Strict):
    type: Literal["play"]
    prompt: PromptId
    next: str


class Listen(_Strict):
    """Spoken answers a menu also accepts, used only when the node has a speech recogniser.

    After a menu attempt without a key, ``prompt`` (if any) invites the caller to speak,
    the switch records the answer after a beep, and a word from ``words`` counts as
    pressing the key it maps to.
    """

    words: Annotated[dict[Annotated[str, Field(min_length=1, max_length=16)], str], Field(min_length=1)]
    prompt: PromptId | None = None
    max_seconds: Annotated[int, Field(ge=1, le=10)] = 4
    silence_s: Annotated[int, Field(ge=1, le=3)] = 1


class MenuNode(_InputNode):
    type: Literal["menu"]
    prompt: PromptId
    choices: dict[str, MenuChoice]
    listen: Listen | None = None


class ReadBack(_Strict):
    """Read collected digits back: intro, the digits one by one, then the confirm question.

    The confirm prompt offers 1 to accept and 2 to enter the digits again.
    """

    prompt: PromptId
    confirm_prompt: PromptId
    # "need": read back only for callers with a need whose profile sets ``confirm``.
    when: Literal["always", "need"] = "always"


class CollectNode(_InputNode):
    """Collect a digit string (an ID number, a callback number) into ``session.collected[field]``."""

    type: Literal["collect"]
    prompt: PromptId
    field: Annotated[str, Field(pattern=SKILL_PATTERN)]
    min_digits: Annotated[int, Field(ge=1, le=32)] = 1
    max_digits: Annotated[int, Field(ge=1, le=32)]
    terminator: Literal["#", "*", ""] = "#"
    check: Literal["none", "id_number", "phone"] = "none"
    read_back: ReadBack | None = None
    next: str


class SetNode(_Strict):
    """Set ticket fields and need tags on the call, then go to ``next``."""

    type: Literal["set"]
    category: str | None = None
    skill: SkillName | None = None
    needs: list[NeedTag] = []
    priority: Annotated[int, Field(ge=0, le=9)] | None = None
    fields: dict[Annotated[str, Field(pattern=SKILL_PATTERN)], Annotated[str, Field(max_length=200)]] = {}
    next: str


class BranchCondition(_Strict):
    """A test on the call; every field given must hold for the case to match."""

    need: NeedTag | None = None
    time: Annotated[str, Field(pattern=TIME_OF_DAY_PATTERN)] | None = None
    working_day: bool | None = None
    agents_for: SkillName | None = None
    agents_available: bool = True
    # "known": the caller's number matched one citizen profile; "open_ticket": that caller
    # also has a ticket that is not closed, merged or cancelled.
    # "overflow": the call came up from a lower tier's switch with its ticket and need tags.
    caller: Literal["known", "open_ticket", "overflow"] | None = None


class BranchCase(_Strict):
    when: BranchCondition
    next: str


class BranchNode(_Strict):
    """Go to the first case whose condition holds, else to ``otherwise``."""

    type: Literal["branch"]
    cases: Annotated[list[BranchCase], Field(min_length=1)]
    otherwise: str


class QueueCallback(_Strict):
    """A key that lets a waiting caller hang up and be called back when their turn comes.

    ``prompt`` offers the key with each announcement, ``done_prompt`` confirms it, and the
    call then goes to ``next`` (usually a goodbye and hang-up).
    """

    key: Annotated[str, Field(pattern=r"^[0-9*#]$")]
    prompt: PromptId
    done_prompt: PromptId
    next: str


class EmergencyOverflow(_Strict):
    """The tier above as the destination of an emergency call that no eligible agent here took within ``after_s``.

    With ``via: trunk`` the call is dialled to ``number`` over ``trunk`` (the SIP trunk to
    the tier above), with its ticket id, need tags and priority in the INVITE. When that
    dial fails, or with ``via: callback``, the call's ticket is escalated (提级) to the
    parent node as an emergency callback request and the caller hears ``callback_prompt``.
    Either way the call then goes to ``next``.
    """

    after_s: Annotated[int, Field(ge=0, le=600)] = 30
    via: Literal["trunk", "callback"] = "trunk"
    prompt: PromptId | None = None
    trunk: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,40}$")] | None = None
    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$")] | None = None
    tier: Literal["city", "province", "national"] = "city"
    ring_timeout_s: Annotated[int, Field(ge=5, le=120)] = 30
    callback_prompt: PromptId
    next: str

    @model_validator(mode="after")
    def _trunk_needs_number(self) -> EmergencyOverflow:
        if self.via == "trunk" and (self.trunk is None or self.number is None):
            raise ValueError("via: trunk 需要同时填写 trunk（通往上级的中继）和 number（上级热线号码），"
                             "或改为 via: callback")
        return self


class QueueNode(_Strict):
    """Connect the caller to an agent with the call's skill (or ``skill`` when given)."""

    type: Literal["queue"]
    prompt: PromptId
    wait_prompt: PromptId
    skill: SkillName | None = None
    max_wait_s: Annotated[int, Field(ge=5, le=1800)] = 120
    announce_every_s: Annotated[int, Field(ge=5, le=300)] = 20
    ring_timeout_s: Annotated[int, Field(ge=5, le=120)] = 20
    retry_prompt: PromptId | None = None
    next: str
    on_no_agent: str
    # Tell the caller their place and expected wait (您前面还有N位…，预计还需等待M分钟)
    # before each wait announcement.
    announce_position: bool = False
    # Music-on-hold class of the switch (musiconhold.conf) played between announcements;
    # without it the caller hears silence there.
    hold_music: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")] | None = None
    callback: QueueCallback | None = None
    # Notice played once on entering the queue (为了服务质量，您的通话可能会被录音); with it
    # the switch records the call with the agent (MixMonitor) for the ticket.
    recording_notice: PromptId | None = None
    # Emergency calls (priority at the emergency level) that wait longer than
    # ``emergency_overflow.after_s`` leave for the tier above.
    emergency_overflow: EmergencyOverflow | None = None


class TransferNode(_Strict):
    """Send the caller to another tier or an outside number through a configured trunk."""

    type: Literal["transfer"]
    prompt: PromptId
    number: Annotated[str, Field(pattern=r"^\+?[0-9]{3,20}$")]
    trunk: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,40}$")]
    tier: Literal["county", "city", "province", "national", "outside"] = "outside"
    ring_timeout_s: Annotated[int, Field(ge=5, le=120)] = 30
    next: str
    on_failed: str


class RecordNode(_Strict):
    """Record a voice message; it becomes a ticket event naming the recording file."""

    type: Literal["record"]
    prompt: PromptId
    max_seconds: Annotated[int, Field(ge=5, le=300)] = 60
    silence_s: Annotated[int, Field(ge=2, le=30)] = 5
    next: str


class CallbackNode(_Strict):
    """Offer a callback to the caller's own number or to a number the caller types in."""

    type: Literal["callback"]
    prompt: PromptId
    number_prompt: PromptId
    read_back: ReadBack
    done_prompt: PromptId
    timeout_ms: Annotated[int, Field(ge=1000, le=60000)] = 8000
    max_attempts: Annotated[int, Field(ge=1)] = 3
    next: str
    on_exhausted: str


class SurveyNode(_Strict):
    """Ask for one satisfaction key 1-5 after the agent hangs up."""

    type: Literal["survey"]
    prompt: PromptId
    thanks_prompt: PromptId | None = None
    timeout_ms: Annotated[int, Field(ge=1000, le=60000)] = 6000
    next: str


class HangupNode(_Strict):
    type: Literal["hangup"]
    prompt: PromptId | None = None


Node = Annotated[
    Union[
        PlayNode, MenuNode, CollectNode, SetNode, BranchNode, QueueNode, TransferNode, RecordNode, CallbackNode,
        SurveyNode, HangupNode,
    ],
    Field(discriminator="type"),
]
NODE_TYPES = ("play", "menu", "collect", "set", "branch", "queue", "transfer", "record", "callback", "survey", "hangup")
_NODE_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)

# Nodes that wait for keys, where the flow-wide handler keys work.
INPUT_NODES = (MenuNode, CollectNode, CallbackNode)

# Nodes that end the flow's own handling of a call: a hang-up, a queue, a transfer.
TERMINAL_NODES = (HangupNode, QueueNode, TransferNode)


class NeedProfile(_Strict):
    """Input settings for callers with one need tag. For several tags the most patient value wins."""

    rendition: Literal["slow"] | None = None
    timeout_factor: Annotated[float, Field(ge=1.0, le=3.0)] = 1.0
    extra_attempts: Annotated[int, Field(ge=0)] = 0
    confirm: bool = False
    label: str | None = None


class HumanHandler(_Strict):
    """A key that reaches a human from any menu or digit entry."""

    key: str
    skill: SkillName | None = None
    next: str


class EmergencyHandler(_Strict):
    """A key that marks the call urgent, raises a cross-tier alert and jumps the queue."""

    key: str
    need: NeedTag = "紧急"
    priority: Annotated[int, Field(ge=1, le=9)] = 9
    skill: SkillName | None = None
    prompt: PromptId | None = None
    next: str


class MaxDurationHandler(_Strict):
    """Bound on a call's length in the flow; at the next node after it the call goes to ``next``."""

    seconds: Annotated[int, Field(ge=60, le=14400)]
    next: str


class FlowHandlers(_Strict):
    human: HumanHandler | None = None
    emergency: EmergencyHandler | None = None
    max_duration: MaxDurationHandler | None = None
    # Cases tried once at call start, before ``start``: the first whose condition is true
    # sends the call to its node instead (a known caller with an open ticket skips the menu).
    call_start: list[BranchCase] = []


class FlowSettings(_Strict):
    fallback_prompt: PromptId | None = None


class _FlowHeader(_Strict):
    flow: Annotated[str, Field(min_length=1, max_length=64)]
    title: str
    start: str
    settings: FlowSettings = FlowSettings()
    needs: dict[NeedTag, NeedProfile] = {}
    handlers: FlowHandlers = FlowHandlers()
    nodes: dict[str, Any]


class FlowDocument(_FlowHeader):
    """The whole flow file with typed nodes; used to publish the JSON schema."""

    nodes: dict[Annotated[str, Field(pattern=NODE_ID_PATTERN)], Node]  # type: ignore[assignment]


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
    needs: Mapping[str, NeedProfile] = field(default_factory=lambda: MappingProxyType({}))
    handlers: FlowHandlers = FlowHandlers()
    # Prompt ids with a rendition (``main_menu@slow``) in the catalog the flow was checked
    # against; the runner plays a rendition only when it is listed here.
    renditions: frozenset[str] = frozenset()

    def node(self, node_id: str) -> Node:
        return self.nodes[node_id]


def _position(container: Any, key: Any, *, value: bool = False) -> tuple[int, int]:
    """Return the 1-based line and column of a key (or its value) in a ruamel container."""
    if isinstance(container, (CommentedMap, CommentedSeq)):
        try:
            if isinstance(container, CommentedSeq):
                line, column = container.lc.item(key)
            else:
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
    "literal_error": "字段“{field}”的值“{value}”不对，只能是 {expected} 之一",
    "value_error": "字段“{field}”无效：{reason}",
    "union_tag_invalid": "节点类型“{value}”不存在，可用的类型：" + "、".join(NODE_TYPES),
    "union_tag_not_found": "节点缺少“type”字段，请写明类型之一：" + "、".join(NODE_TYPES),
    "string_pattern_mismatch": "字段“{field}”的值“{value}”格式不对，{hint}",
    "greater_than_equal": "字段“{field}”的值 {value} 太小，最小为 {ge}",
    "less_than_equal": "字段“{field}”的值 {value} 太大，最大为 {le}",
    "int_parsing": "字段“{field}”应为整数，现在是“{value}”",
    "int_type": "字段“{field}”应为整数，现在是“{value}”",
    "string_type": "字段“{field}”应为文字，现在是“{value}”；数字形式的值（如号码）请加英文引号，例如 \"{value}\"",
    "dict_type": "字段“{field}”应为映射（键: 值），现在是“{value}”",
    "model_type": "“{field}”应为映射（键: 值），现在是“{value}”",
    "list_type": "字段“{field}”应为列表，现在是“{value}”",
    "bool_type": "字段“{field}”应为 true 或 false，现在是“{value}”",
    "bool_parsing": "字段“{field}”应为 true 或 false，现在是“{value}”",
    "float_parsing": "字段“{field}”应为数字，现在是“{value}”",
    "too_short": "字段“{field}”不能为空，请至少写一项",
    "string_too_short": "字段“{field}”不能为空",
    "string_too_long": "字段“{field}”的值太长：{msg}",
}


# Accepted format of each field with a pattern, named in the message when a value does not match.
_PATTERN_HINTS = {
    "time": "请写成“时:分-时:分”，两位数字，如 08:30-17:30（北京时间）",
    "number": "只能是数字，可以以 + 开头，共 3 到 20 位",
    "trunk": "只能用字母、数字、点、下划线和减号",
}
_ID_HINT = "只能用小写字母、数字和下划线，并以字母开头"


def _message_for(error: Mapping[str, Any]) -> str:
    loc = error.get("loc", ())
    if "[key]" in loc:
        # A mapping key of the wrong type: in practice a menu key written without quotes.
        key = error.get("input")
        return f"键 {key} 应写成带英文引号的文字，例如 \"{key}\"（菜单按键都要加引号）"
    field_name = str(loc[-1]) if loc else "此处"
    template = _PYDANTIC_MESSAGES.get(error["type"], "字段“{field}”无效：{msg}")
    context = error.get("ctx", {})
    value = context.get("tag", error.get("input"))
    # A validator's own (Chinese) message, without pydantic's "Value error, " prefix.
    reason = str(context.get("error", error.get("msg", "")))
    return template.format(field=field_name, value=value, msg=error.get("msg", ""), reason=reason,
                           expected=str(context.get("expected", "")).replace(" or ", "、").replace(", ", "、"),
                           hint=_PATTERN_HINTS.get(field_name, _ID_HINT), ge=context.get("ge"), le=context.get("le"))


class _Checker:
    """Collects schema and graph issues for one flow document."""

    def __init__(
        self, path: str, document: CommentedMap, prompt_ids: frozenset[str] | None, audio_dir: Path | None = None
    ):
        self.path = path
        self.document = document
        self.prompt_ids = prompt_ids
        self.audio_dir = audio_dir
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
            loc = [part for part in item["loc"] if not (isinstance(part, str) and part in NODE_TYPES)]
            if item["type"] == "union_tag_invalid":
                loc.append("type")
            self.add(prefix + loc, _message_for(item))

    def check_target(self, loc: list[Any], target: str, nodes: Mapping[str, Any]) -> None:
        """Report a jump to a node id that is not defined."""
        if target not in nodes:
            known = "、".join(sorted(nodes)) or "（无）"
            self.add(loc, f"跳转目标“{target}”不存在，请改成已定义的节点之一：{known}", at_value=True)

    def check_prompt(self, loc: list[Any], prompt_id: str | None) -> None:
        """Report a prompt with no text in the catalog or no rendered file in the audio folder."""
        if prompt_id is None:
            return
        at_value = not (loc and loc[-1] == "read_back")
        if self.prompt_ids is not None and prompt_id not in self.prompt_ids:
            self.add(loc, f"提示音“{prompt_id}”在提示音目录中没有文本，请先在 prompts/zh-CN.yaml 中添加", at_value=at_value)
            return
        if self.audio_dir is not None and not (self.audio_dir / f"{prompt_id}.wav").is_file():
            self.add(loc, f"提示音“{prompt_id}”没有录音文件 {self.audio_dir / (prompt_id + '.wav')}，"
                     "请运行 hotline prompts build 生成", at_value=at_value)


def _node_targets(node: Node) -> list[tuple[list[Any], str]]:
    """Return (location suffix, target node id) for every edge leaving a node."""
    if isinstance(node, MenuNode):
        edges: list[tuple[list[Any], str]] = [
            (["choices", key, "next"], choice.next) for key, choice in node.choices.items()
        ]
        edges.append((["on_exhausted"], node.on_exhausted))
        return edges
    if isinstance(node, BranchNode):
        edges = [(["cases", index, "next"], case.next) for index, case in enumerate(node.cases)]
        edges.append((["otherwise"], node.otherwise))
        return edges
    if isinstance(node, HangupNode):
        return []

    edges = [(["next"], node.next)]
    if isinstance(node, QueueNode) and node.callback is not None:
        edges.append((["callback", "next"], node.callback.next))
    if isinstance(node, QueueNode) and node.emergency_overflow is not None:
        edges.append((["emergency_overflow", "next"], node.emergency_overflow.next))
    for field_name in ("on_exhausted", "on_no_agent", "on_failed"):
        target = getattr(node, field_name, None)
        if target is not None:
            edges.append(([field_name], target))
    return edges


def _edge_label(suffix: list[Any]) -> str:
    """Name an edge for people: the key of a menu choice, else the field that names the target."""
    if suffix[0] == "choices":
        return str(suffix[1])
    return ".".join(str(part) for part in suffix)


def flow_edges(flow: Flow) -> list[tuple[str, str, str]]:
    """Return every edge of a flow as (source node, label, target node), in file order.

    The label is the menu key for a menu choice (``"1"``) and otherwise the field that
    names the target (``"next"``, ``"on_exhausted"``, ``"cases.0.next"``, ``"otherwise"``).
    The flow-wide handler keys work in every menu and digit entry, so each such node also
    gets an edge per handler, labelled ``"handlers.human"`` or ``"handlers.emergency"``,
    unless a menu choice already uses that key.
    """
    handlers = [(name, getattr(flow.handlers, name)) for name in ("human", "emergency")]
    edges: list[tuple[str, str, str]] = []
    for node_id, node in flow.nodes.items():
        for suffix, target in _node_targets(node):
            edges.append((node_id, _edge_label(suffix), target))
        if not isinstance(node, INPUT_NODES):
            continue
        for name, handler in handlers:
            if handler is None or (isinstance(node, MenuNode) and handler.key in node.choices):
                continue
            edges.append((node_id, f"handlers.{name}", handler.next))
    return edges


# Edges a call follows with no key from the caller: a loop made only of these never ends
# for a silent caller. Menu choices and accepted entries need a key, queue.next needs an
# agent who answered, and transfer.next a far end that answered.
_KEYED_EDGES = {
    MenuNode: {"choices"},
    CollectNode: {"next"},
    CallbackNode: {"next"},
    QueueNode: {"next", "callback"},
    TransferNode: {"next"},
}


def _is_silent_edge(node: Node, suffix: list[Any]) -> bool:
    return suffix[0] not in _KEYED_EDGES.get(type(node), set())


def _node_prompts(node: Node) -> list[tuple[list[Any], str | None]]:
    """Return (location suffix, prompt id) for every prompt a node plays."""
    prompts: list[tuple[list[Any], str | None]] = []
    for field_name in (
        "prompt", "invalid_prompt", "no_input_prompt", "wait_prompt", "retry_prompt", "number_prompt",
        "done_prompt", "thanks_prompt", "recording_notice",
    ):
        if field_name not in type(node).model_fields:
            continue
        value = getattr(node, field_name)
        if isinstance(value, list):
            prompts.extend(([field_name, index], item) for index, item in enumerate(value))
        else:
            prompts.append(([field_name], value))

    listen = getattr(node, "listen", None)
    if listen is not None and listen.prompt is not None:
        prompts.append((["listen", "prompt"], listen.prompt))

    if isinstance(node, QueueNode) and node.callback is not None:
        prompts.append((["callback", "prompt"], node.callback.prompt))
        prompts.append((["callback", "done_prompt"], node.callback.done_prompt))
    if isinstance(node, QueueNode) and node.emergency_overflow is not None:
        prompts.append((["emergency_overflow", "prompt"], node.emergency_overflow.prompt))
        prompts.append((["emergency_overflow", "callback_prompt"], node.emergency_overflow.callback_prompt))

    read_back = getattr(node, "read_back", None)
    if read_back is not None:
        prompts.append((["read_back", "prompt"], read_back.prompt))
        prompts.append((["read_back", "confirm_prompt"], read_back.confirm_prompt))
        prompts.extend((["read_back"], digit_prompt) for digit_prompt in DIGIT_PROMPTS)
    return prompts


# Read-back speaks each digit from its own recording; 1 is recorded as 幺 as on the phone.
DIGIT_PROMPTS = tuple(f"digit_{digit}" for digit in "0123456789") + ("digit_x",)


def _check_key(checker: _Checker, loc: list[Any], key: str) -> bool:
    if len(str(key)) != 1 or str(key) not in DTMF_KEYS:
        checker.add(loc, f"按键“{key}”无效，按键只能是 0-9、* 或 # 中的一个字符（数字键请加引号，如 \"1\"）")
        return False
    return True


def _check_category(checker: _Checker, loc: list[Any], category: str | None) -> None:
    if category is not None and category not in CATEGORIES:
        known = "、".join(sorted(CATEGORIES))
        checker.add(loc, f"业务类别“{category}”不存在，可用：{known}", at_value=True)


def _check_attempts(checker: _Checker, loc: list[Any], attempts: int) -> None:
    if attempts > MAX_ATTEMPTS_LIMIT:
        checker.add(loc, f"重试次数 {attempts} 过多：来电者不按键时会一直重复，请改为 1 到 {MAX_ATTEMPTS_LIMIT} 之间",
                    at_value=True)


def _check_node(checker: _Checker, node_id: str, node: Node, handler_keys: Mapping[str, tuple[str, str]]) -> None:
    """Check one node's fields beyond the schema: keys, categories, retry bounds, lengths, times."""
    loc = ["nodes", node_id]

    if isinstance(node, MenuNode):
        for key, choice in node.choices.items():
            if not _check_key(checker, loc + ["choices", key], key):
                continue
            _check_category(checker, loc + ["choices", key, "category"], choice.category)
            handler = handler_keys.get(str(key))
            if handler is not None and handler[1] != choice.next:
                checker.add(loc + ["choices", key],
                            f"按键“{key}”重复定义：全流程的“{handler[0]}”已使用此键（跳到“{handler[1]}”），"
                            f"请换一个按键，或让此选项也跳到“{handler[1]}”")
        if node.listen is not None:
            for word, key in node.listen.words.items():
                if str(key) not in node.choices and str(key) not in handler_keys:
                    checker.add(loc + ["listen", "words", word],
                                f"词语“{word}”对应的按键“{key}”不是本菜单的选项，也不是转人工键或紧急键："
                                f"请改为 {'、'.join(sorted(map(str, node.choices)))} 之一", at_value=True)

    if isinstance(node, INPUT_NODES):
        _check_attempts(checker, loc + ["max_attempts"], node.max_attempts)

    if isinstance(node, CollectNode):
        if node.min_digits > node.max_digits:
            checker.add(loc + ["min_digits"], f"最少位数 {node.min_digits} 大于最多位数 {node.max_digits}，请改小 min_digits",
                        at_value=True)
        if node.terminator and node.terminator in handler_keys:
            checker.add(loc + ["terminator"], f"结束键“{node.terminator}”重复定义：全流程的“{handler_keys[node.terminator][0]}”"
                        "已使用此键，请换一个结束键", at_value=True)

    if isinstance(node, SetNode):
        _check_category(checker, loc + ["category"], node.category)

    if isinstance(node, BranchNode):
        for index, case in enumerate(node.cases):
            case_loc = loc + ["cases", index, "when"]
            when = case.when
            _check_condition(checker, case_loc, case.when)


def _check_condition(checker: _Checker, loc: list[Any], when: BranchCondition) -> None:
    """Check one branch or call-start condition: at least one test, and a time range that is not reversed."""
    if (when.need is None and when.time is None and when.working_day is None and when.agents_for is None
            and when.caller is None):
        checker.add(loc, "条件为空：请写明 need、time、working_day、agents_for 或 caller 中至少一项")
    if when.time is not None:
        begin, finish = when.time.split("-")
        if begin >= finish:
            checker.add(loc + ["time"], f"时间段“{when.time}”的开始不早于结束，请写成如 08:30-17:30（北京时间）",
                        at_value=True)


def _reachable(start: str, nodes: Mapping[str, Node], extra_roots: Iterable[str]) -> set[str]:
    reachable: set[str] = set()
    pending = [start, *extra_roots]
    while pending:
        node_id = pending.pop()
        if node_id in reachable or node_id not in nodes:
            continue
        reachable.add(node_id)
        pending.extend(target for _, target in _node_targets(nodes[node_id]))
    return reachable


def _silent_cycles(nodes: Mapping[str, Node]) -> list[list[str]]:
    """Return the loops a silent caller can circle forever, each as node ids in file order.

    Uses Tarjan's strongly connected components over the edges taken without a key.
    """
    order = list(nodes)
    successors = {
        node_id: [target for suffix, target in _node_targets(node) if _is_silent_edge(node, suffix) and target in nodes]
        for node_id, node in nodes.items()
    }
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node_id: str) -> None:
        index_of[node_id] = low[node_id] = len(index_of)
        stack.append(node_id)
        on_stack.add(node_id)
        for target in successors[node_id]:
            if target not in index_of:
                visit(target)
                low[node_id] = min(low[node_id], low[target])
            elif target in on_stack:
                low[node_id] = min(low[node_id], index_of[target])
        if low[node_id] == index_of[node_id]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node_id:
                    break
            components.append(component)

    for node_id in order:
        if node_id not in index_of:
            visit(node_id)

    cycles = []
    for component in components:
        if len(component) > 1 or component[0] in successors[component[0]]:
            cycles.append(sorted(component, key=order.index))
    return cycles


def _check_graph(checker: _Checker, start: str, nodes: Mapping[str, Node], handlers: FlowHandlers) -> None:
    """Report unreachable nodes, dead ends and loops with no bounded exit."""
    if start not in nodes:
        checker.check_target(["start"], start, nodes)
        return

    handler_targets = [handler.next for handler in (handlers.human, handlers.emergency, handlers.max_duration) if handler]
    handler_targets += [case.next for case in handlers.call_start]
    reachable = _reachable(start, nodes, handler_targets)
    for node_id in nodes:
        if node_id not in reachable:
            checker.add(["nodes", node_id], f"节点“{node_id}”从开始节点“{start}”无法到达，请删除它或从其他节点跳转过来")

    # A dead end is a node from which no hang-up, queue or transfer can be reached: the call
    # would go round without ever ending or reaching a person.
    ends = {node_id for node_id, node in nodes.items() if isinstance(node, TERMINAL_NODES)}
    leads_to_end = set(ends)
    changed = True
    while changed:
        changed = False
        for node_id, node in nodes.items():
            if node_id not in leads_to_end and any(target in leads_to_end for _, target in _node_targets(node)):
                leads_to_end.add(node_id)
                changed = True
    for node_id in nodes:
        if node_id in reachable and node_id not in leads_to_end:
            checker.add(["nodes", node_id], f"节点“{node_id}”是死路：从这里到不了任何挂机、排队或转接节点，"
                        "请让其中一个跳转通向 hangup、queue 或 transfer 节点")

    for cycle in _silent_cycles(nodes):
        route = " → ".join(cycle + [cycle[0]])
        if all(isinstance(nodes[node_id], PlayNode) for node_id in cycle):
            message = f"节点“{cycle[0]}”处在只有播放节点的循环里（{route}），来电会永远循环，请让循环经过菜单或挂机节点"
        else:
            message = (f"节点“{cycle[0]}”处在没有有界出口的循环里（{route}）：来电者不按键时会永远循环，"
                       "请让其中一个超时或重试用尽的跳转（on_exhausted、on_no_agent 等）离开循环")
        checker.add(["nodes", cycle[0]], message)


def _handler_keys(checker: _Checker, handlers: FlowHandlers) -> dict[str, tuple[str, str]]:
    """Return key -> (handler name, target) for the flow-wide keys, reporting bad or shared keys."""
    keys: dict[str, tuple[str, str]] = {}
    for name, label in (("human", "转人工键"), ("emergency", "紧急键")):
        handler = getattr(handlers, name)
        if handler is None:
            continue
        loc = ["handlers", name, "key"]
        if not _check_key(checker, loc, handler.key):
            continue
        if handler.key in keys:
            checker.add(loc, f"按键“{handler.key}”重复定义：{keys[handler.key][0]}和{label}不能用同一个键", at_value=True)
            continue
        keys[handler.key] = (label, handler.next)
    return keys


def _yaml_loader() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def load_flow(
    path: str | Path, *, prompt_ids: Iterable[str] | None = None, audio_dir: str | Path | None = None
) -> Flow:
    """Load and check a flow file; raise ``FlowError`` listing every problem found.

    ``prompt_ids`` is the set of prompt ids in the prompt catalog; when given, every prompt
    the flow names must be in it. ``audio_dir`` is the folder of rendered prompts
    (``<id>.wav``); when given, every prompt the flow names must have a file there.
    """
    path = Path(path)
    data = path.read_bytes()
    return parse_flow(data, source=str(path), prompt_ids=prompt_ids, audio_dir=audio_dir)


def parse_flow(
    data: bytes, *, source: str, prompt_ids: Iterable[str] | None = None, audio_dir: str | Path | None = None
) -> Flow:
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
            duplicate = re.search(r'found duplicate key "(.*?)" with value', str(problem))
            key = duplicate.group(1) if duplicate else problem.split("found duplicate key")[-1].strip()
            message = f"键重复定义：“{key}”，同一层级的键（包括菜单按键和节点名）只能出现一次，请删除或改名其中一个"
        else:
            message = f"YAML 语法错误：{problem}，请检查缩进、冒号和引号"
        raise FlowError([FlowIssue(source, line, column, message)]) from exc

    if not isinstance(document, CommentedMap):
        raise FlowError([FlowIssue(source, 1, 1, "流程文件的顶层应为映射，至少包含 flow、title、start 和 nodes")])

    known_prompts = frozenset(prompt_ids) if prompt_ids is not None else None
    checker = _Checker(source, document, known_prompts, Path(audio_dir) if audio_dir is not None else None)

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
    handler_keys = _handler_keys(checker, header.handlers)
    for node_id, node in nodes.items():
        loc = ["nodes", node_id]
        for suffix, target in _node_targets(node):
            checker.check_target(loc + suffix, target, defined)
        for suffix, prompt_id in _node_prompts(node):
            checker.check_prompt(loc + suffix, prompt_id)
        _check_node(checker, node_id, node, handler_keys)

    _check_flow_wide(checker, header, defined)
    if not checker.issues:
        _check_graph(checker, header.start, nodes, header.handlers)

    if checker.issues:
        raise FlowError(checker.issues)

    return Flow(
        flow_id=header.flow,
        title=header.title,
        start=header.start,
        version=hashlib.sha256(data).hexdigest(),
        source=source,
        nodes=MappingProxyType(nodes),
        settings=header.settings,
        needs=MappingProxyType(dict(header.needs)),
        handlers=header.handlers,
        renditions=frozenset(prompt for prompt in known_prompts or () if "@" in prompt),
    )


def _check_flow_wide(checker: _Checker, header: _FlowHeader, defined: Mapping[str, Any]) -> None:
    """Check the settings, needs and handlers sections."""
    checker.check_prompt(["settings", "fallback_prompt"], header.settings.fallback_prompt)

    for tag, profile in header.needs.items():
        if profile.extra_attempts > MAX_EXTRA_ATTEMPTS:
            checker.add(["needs", tag, "extra_attempts"],
                        f"需求“{tag}”的额外重试次数 {profile.extra_attempts} 过多，请改为 0 到 {MAX_EXTRA_ATTEMPTS} 之间",
                        at_value=True)

    for name in ("human", "emergency", "max_duration"):
        handler = getattr(header.handlers, name)
        if handler is None:
            continue
        checker.check_target(["handlers", name, "next"], handler.next, defined)
        if name == "emergency":
            checker.check_prompt(["handlers", name, "prompt"], handler.prompt)

    for index, case in enumerate(header.handlers.call_start):
        loc = ["handlers", "call_start", index]
        checker.check_target(loc + ["next"], case.next, defined)
        _check_condition(checker, loc + ["when"], case.when)


def flow_json_schema() -> dict[str, Any]:
    """Return the JSON schema of a flow file, as published in ivr/flow-schema.json."""
    schema = FlowDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "12349 hotline call flow"
    return schema


FLOW_SCHEMA_PATH = Path(__file__).with_name("flow-schema.json")


def render_flow_schema() -> str:
    """Return the published schema file's text: sorted keys, two-space indent, trailing newline."""
    return json.dumps(flow_json_schema(), ensure_ascii=False, indent=2, sort_keys=True) + "\n"


def write_flow_schema(path: Path = FLOW_SCHEMA_PATH) -> None:
    """Rewrite ivr/flow-schema.json from the models; run after changing any flow model."""
    path.write_text(render_flow_schema(), encoding="utf-8")



def flow_skills(flow: Flow) -> set[str]:
    """Return every agent skill the flow can route a call to, including the default one."""
    skills = {DEFAULT_SKILL}
    for node in flow.nodes.values():
        if isinstance(node, MenuNode):
            skills.update(choice.skill for choice in node.choices.values() if choice.skill)
        skill = getattr(node, "skill", None)
        if skill:
            skills.add(skill)
        condition_skills = [case.when.agents_for for case in getattr(node, "cases", ()) if case.when.agents_for]
        skills.update(condition_skills)
    skills.update(case.when.agents_for for case in flow.handlers.call_start if case.when.agents_for)
    for handler in (flow.handlers.human, flow.handlers.emergency):
        if handler is not None and handler.skill:
            skills.add(handler.skill)
    return skills
