"""Call scripts: one YAML file per test call, with the caller's keys and the expected outcome.

A script names the caller (a number, or none for an anonymous call), optional need tags,
the keys the caller presses with their timing, an optional hang-up time and what the
hotline must do with the call. Example::

    name: 先按8（无效）再按5 养老服务
    caller: "13900000003"
    keys:
      - {key: "8", at_ms: 9000}        # 9 s after the answer
      - {key: "5", after_ms: 4500}     # 4.5 s after the previous key
    hangup_ms: 20000                   # optional: caller hangs up 20 s after the answer
    expect:
      path_prefix: [welcome, main_menu, chose_yanglao]
      category: yanglao
      skill: yanglao
      agent: any
      ticket: true
      outcome: answered

Every problem is reported as ``file:line: message`` in Chinese for the tester who wrote it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from hotline.privacy import mask_phone
from tickets.call_record import CallOutcome

ANY = "any"
VALID_KEYS = frozenset("0123456789*#")
_TOP_FIELDS = ("name", "caller", "needs", "keys", "hangup_ms", "expect")
_EXPECT_FIELDS = ("path", "path_prefix", "category", "skill", "agent", "ticket", "outcome")
OUTCOME_NAMES = {outcome.value: outcome for outcome in CallOutcome}


@dataclass(frozen=True, slots=True)
class TimedKey:
    """One key press, ``at_ms`` milliseconds after the call was answered."""

    key: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the hotline must do with the call. None means "not checked"; ``agent`` may be ``any``.

    ``category`` and ``skill`` are checked whenever the script names them, so
    ``category: null`` requires that no category was chosen. ``checks`` lists those names.
    """

    path: tuple[str, ...] | None = None
    path_prefix: tuple[str, ...] | None = None
    category: str | None = None
    skill: str | None = None
    agent: str | None = None
    ticket: bool | None = None
    outcome: CallOutcome | None = None
    checks: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class CallScript:
    name: str
    source: str
    caller: str | None
    needs: frozenset[str]
    keys: tuple[TimedKey, ...]
    hangup_ms: int | None
    expect: Expectation

    @property
    def caller_masked(self) -> str:
        return mask_phone(self.caller)


@dataclass(frozen=True, slots=True)
class ScriptIssue:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class ScriptError(Exception):
    """A call script that cannot run; ``issues`` lists every problem found."""

    def __init__(self, issues: list[ScriptIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def _line(container: Any, key: Any) -> int:
    if isinstance(container, CommentedMap) and key in container:
        return container.lc.key(key)[0] + 1
    if isinstance(container, CommentedSeq) and isinstance(key, int) and key < len(container):
        return container.lc.item(key)[0] + 1
    if isinstance(container, (CommentedMap, CommentedSeq)):
        return container.lc.line + 1
    return 1


class _Reader:
    def __init__(self, source: str):
        self.source = source
        self.issues: list[ScriptIssue] = []

    def fail(self, container: Any, key: Any, message: str) -> None:
        self.issues.append(ScriptIssue(self.source, _line(container, key), message))

    def unknown_fields(self, data: CommentedMap, allowed: Iterable[str], where: str) -> None:
        allowed = tuple(allowed)
        for name in data:
            if name not in allowed:
                self.fail(data, name, f"{where}里不认识的字段“{name}”，可用的字段：{'、'.join(allowed)}")

    def milliseconds(self, data: CommentedMap, name: str) -> int | None:
        value = data.get(name)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            self.fail(data, name, f"“{name}”应为不小于 0 的整数毫秒数，现在是“{value}”")
            return None
        return value

    def text(self, data: CommentedMap, name: str) -> str | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(data, name, f"“{name}”应为非空文字，现在是“{value}”；数字请加英文引号")
            return None
        return value.strip()

    def names(self, data: CommentedMap, name: str) -> tuple[str, ...] | None:
        value = data.get(name)
        if value is None:
            return None
        if not isinstance(value, list) or not value or not all(isinstance(item, str) and item for item in value):
            self.fail(data, name, f"“{name}”应为节点名的列表，如 [welcome, main_menu]，现在是“{value}”")
            return None
        return tuple(value)


def _read_caller(reader: _Reader, data: CommentedMap) -> str | None:
    value = data.get("caller")
    if value is None or value == "anonymous":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        reader.fail(data, "caller", f"主叫号码 {value} 要加英文引号，例如 \"{value}\"，否则开头的 0 会丢失")
        return None
    if not isinstance(value, str) or not value.lstrip("+").isdigit() or not 3 <= len(value.lstrip("+")) <= 20:
        reader.fail(data, "caller", f"主叫号码“{value}”无效：只能是 3 到 20 位数字（可以 + 开头）；不显示号码请写 caller: null")
        return None
    return value


def _read_keys(reader: _Reader, data: CommentedMap) -> tuple[TimedKey, ...]:
    items = data.get("keys")
    if items is None:
        return ()
    if not isinstance(items, CommentedSeq):
        reader.fail(data, "keys", "“keys”应为列表，每项写成 {key: \"1\", at_ms: 9000} 或 {key: \"1\", after_ms: 3000}")
        return ()

    keys: list[TimedKey] = []
    previous_ms = 0
    for index, item in enumerate(items):
        if not isinstance(item, CommentedMap):
            reader.fail(items, index, f"第 {index + 1} 个按键应写成 {{key: \"1\", at_ms: 9000}}，现在是“{item}”")
            continue
        reader.unknown_fields(item, ("key", "at_ms", "after_ms"), f"第 {index + 1} 个按键")
        key = item.get("key")
        if isinstance(key, int) and not isinstance(key, bool):
            reader.fail(item, "key", f"按键 {key} 要加英文引号，例如 key: \"{key}\"")
            continue
        if not isinstance(key, str) or key not in VALID_KEYS:
            reader.fail(item, "key", f"按键“{key}”无效：只能是 0-9、* 或 # 中的一个")
            continue
        at_ms = reader.milliseconds(item, "at_ms")
        after_ms = reader.milliseconds(item, "after_ms")
        if (at_ms is None) == (after_ms is None):
            if "at_ms" not in item or "after_ms" not in item:
                reader.fail(items, index, f"第 {index + 1} 个按键要写 at_ms（接通后多少毫秒）或 after_ms（上一个按键后多少毫秒）之一")
            else:
                reader.fail(items, index, f"第 {index + 1} 个按键同时写了 at_ms 和 after_ms，只保留一个")
            continue
        moment = at_ms if at_ms is not None else previous_ms + (after_ms or 0)
        if moment < previous_ms:
            reader.fail(item, "at_ms", f"第 {index + 1} 个按键的时间 {moment} 毫秒早于上一个按键（{previous_ms} 毫秒），请按时间顺序写")
            continue
        keys.append(TimedKey(key, moment))
        previous_ms = moment
    return tuple(keys)


def _read_expect(reader: _Reader, data: CommentedMap) -> Expectation:
    expect = data.get("expect")
    if not isinstance(expect, CommentedMap):
        reader.fail(data, "expect", "缺少“expect”一节（期望结果），至少写 outcome，例如 expect: {outcome: answered}")
        return Expectation()
    reader.unknown_fields(expect, _EXPECT_FIELDS, "expect 一节")

    outcome = None
    if "outcome" in expect:
        value = expect["outcome"]
        outcome = OUTCOME_NAMES.get(value) if isinstance(value, str) else None
        if outcome is None:
            reader.fail(expect, "outcome", f"结果“{value}”不存在，可用：{'、'.join(OUTCOME_NAMES)}")

    ticket = expect.get("ticket")
    if ticket is not None and not isinstance(ticket, bool):
        reader.fail(expect, "ticket", f"“ticket”应为 true 或 false，现在是“{ticket}”")
        ticket = None

    path = reader.names(expect, "path")
    prefix = reader.names(expect, "path_prefix")
    if path is not None and prefix is not None:
        reader.fail(expect, "path_prefix", "“path”和“path_prefix”只能写一个：完整路径用 path，只核对开头用 path_prefix")

    checks = frozenset(name for name in ("category", "skill") if name in expect)
    for name in checks:
        if expect[name] is not None and not isinstance(expect[name], str):
            reader.fail(expect, name, f"“{name}”应为文字或 null，现在是“{expect[name]}”")
    return Expectation(
        path=path, path_prefix=prefix,
        category=expect.get("category") if isinstance(expect.get("category"), str) else None,
        skill=expect.get("skill") if isinstance(expect.get("skill"), str) else None,
        agent=reader.text(expect, "agent"), ticket=ticket, outcome=outcome, checks=checks,
    )


def parse_script(text: str, *, source: str) -> CallScript:
    """Parse one script's text; raise ``ScriptError`` listing every problem with its line."""
    reader = _Reader(source)
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        data = yaml.load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise ScriptError([ScriptIssue(source, line, f"YAML 格式错误：{getattr(exc, 'problem', exc)}，请检查缩进和引号")]) from exc
    if not isinstance(data, CommentedMap):
        raise ScriptError([ScriptIssue(source, 1, "脚本应为映射（键: 值），至少包含 name、keys 和 expect")])

    reader.unknown_fields(data, _TOP_FIELDS, "脚本")
    name = reader.text(data, "name")
    if name is None and "name" not in data:
        reader.fail(data, "name", "缺少“name”（脚本名称），请补上")
    caller = _read_caller(reader, data)
    needs = reader.names(data, "needs") or ()
    keys = _read_keys(reader, data)
    hangup_ms = reader.milliseconds(data, "hangup_ms")
    if hangup_ms is not None and keys and hangup_ms < keys[-1].at_ms:
        reader.fail(data, "hangup_ms", f"挂机时间 {hangup_ms} 毫秒早于最后一个按键（{keys[-1].at_ms} 毫秒），请调大")
    expect = _read_expect(reader, data)

    if reader.issues:
        raise ScriptError(reader.issues)
    return CallScript(name or source, source, caller, frozenset(needs), keys, hangup_ms, expect)


def load_script(path: Path) -> CallScript:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ScriptError([ScriptIssue(str(path), 1, f"无法读取脚本文件：{exc}")]) from exc
    return parse_script(text, source=str(path))


def script_files(paths: Iterable[Path]) -> list[Path]:
    """Expand folders into their ``*.yaml`` files, sorted; files are kept as given."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) if path.is_dir() else [path])
    return files
