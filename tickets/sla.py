"""Domain: SLA clocks (时限) of a ticket's phases, computed from its event trail; pure, stores nothing.

One table (``config/sla.yaml``) gives each phase a limit per ticket category, node tier and
case kind. ``compute_clocks`` replays the events up to ``now`` and returns one clock per phase.
Each clock has its start, its due time (UTC), the time used and paused, and its status. It also
tells whether the warning share of the limit has passed and whether the due time rests on
provisional calendar data.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from tickets.calendar import (
    DEFAULT_WORKING_HOURS,
    CalendarConfigError,
    ConfigIssue,
    Deadline,
    WorkingCalendar,
    WorkingDuration,
    WorkingHours,
    line_of,
    load_yaml_document,
)
from tickets.model import TicketCategory, TicketEvent, TicketState, Tier, require_utc

log = structlog.get_logger(__name__)

EXTENSION_EVENT_KIND = "extension_approved"

# Payload key, on any event, that classifies the case; the latest value wins.
CASE_KIND_KEY = "case_kind"
CASE_KINDS = {"emergency": "紧急", "cross_region": "跨区域", "simple": "简易"}

DEFAULT_WARN_SHARE = 0.8


class ClockUnit(enum.Enum):
    """Unit of a limit and of the clock that measures it."""

    WALL_MINUTES = "wall_minutes"
    WALL_HOURS = "wall_hours"
    WORKING_HOURS = "working_hours"
    WORKING_DAYS = "working_days"

    @property
    def is_working_time(self) -> bool:
        return self in (ClockUnit.WORKING_HOURS, ClockUnit.WORKING_DAYS)

    @property
    def label(self) -> str:
        return _UNIT_LABELS[self]


_UNIT_LABELS = {
    ClockUnit.WALL_MINUTES: "分钟（自然时间）",
    ClockUnit.WALL_HOURS: "小时（自然时间）",
    ClockUnit.WORKING_HOURS: "工作小时",
    ClockUnit.WORKING_DAYS: "个工作日",
}


class Phase(enum.Enum):
    """A clocked stretch of the ticket lifecycle."""

    DISPATCH = "dispatch"
    ACCEPT = "accept"
    HANDLE = "handle"
    RESOLVE = "resolve"
    CALLBACK = "callback"

    @property
    def label(self) -> str:
        return PHASE_SPECS[self].label


@dataclass(frozen=True, slots=True)
class PhaseSpec:
    """State entries that start, end and stop a phase.

    ``restarts`` phases start over on every new entry into a start state, so an office that
    receives a returned and re-dispatched ticket gets the full time. ``pausable`` phases do
    not count time while the ticket is PENDING (挂起).
    """

    label: str
    starts: frozenset[TicketState]
    ends: frozenset[TicketState]
    stops: frozenset[TicketState]
    pausable: bool = False
    restarts: bool = False


_CANCELLING = frozenset({TicketState.CANCELLED, TicketState.MERGED})

# NOTE: only the first cycle is clocked. After 重办 (REOPENED) the handle, resolve and callback
# phases of the second cycle are not timed, because each phase ends at its first end state.

PHASE_SPECS: Mapping[Phase, PhaseSpec] = {
    Phase.DISPATCH: PhaseSpec(
        "转出", frozenset({TicketState.NEW}), frozenset({TicketState.DISPATCHED, TicketState.ESCALATED}),
        _CANCELLING | {TicketState.RESOLVED, TicketState.CLOSED},
    ),
    Phase.ACCEPT: PhaseSpec(
        "签收", frozenset({TicketState.DISPATCHED}), frozenset({TicketState.ACCEPTED}),
        _CANCELLING | {TicketState.RETURNED}, restarts=True,
    ),
    Phase.HANDLE: PhaseSpec(
        "办理", frozenset({TicketState.ACCEPTED}), frozenset({TicketState.RESOLVED}), _CANCELLING, pausable=True,
    ),
    Phase.RESOLVE: PhaseSpec(
        "办结", frozenset({TicketState.NEW}), frozenset({TicketState.RESOLVED}), _CANCELLING, pausable=True,
    ),
    Phase.CALLBACK: PhaseSpec(
        "回访", frozenset({TicketState.RESOLVED}), frozenset({TicketState.CLOSED, TicketState.REOPENED}), _CANCELLING,
    ),
}


class ClockStatus(enum.Enum):
    NOT_STARTED = "not_started"
    RUNNING = "running"
    PAUSED = "paused"
    MET = "met"
    BREACHED = "breached"
    STOPPED = "stopped"

    @property
    def label(self) -> str:
        return _STATUS_LABELS[self]


_STATUS_LABELS = {
    ClockStatus.NOT_STARTED: "未开始",
    ClockStatus.RUNNING: "计时中",
    ClockStatus.PAUSED: "挂起暂停",
    ClockStatus.MET: "按时完成",
    ClockStatus.BREACHED: "已超时",
    ClockStatus.STOPPED: "已停止",
}


# ---------------------------------------------------------------------------- rules


@dataclass(frozen=True, slots=True)
class Limit:
    amount: int
    unit: ClockUnit

    def __str__(self) -> str:
        return f"{self.amount} {self.unit.label}"


@dataclass(frozen=True, slots=True)
class SlaRule:
    """One row of the SLA table; ``None`` in category, tier or case_kind matches any value."""

    phase: Phase
    category: TicketCategory | None
    tier: Tier | None
    case_kind: str | None
    limit: Limit
    note: str | None = None
    line: int = 0

    @property
    def specificity(self) -> tuple[bool, bool, bool]:
        return (self.case_kind is not None, self.category is not None, self.tier is not None)

    def matches(self, category: TicketCategory, tier: Tier, case_kind: str | None) -> bool:
        return (
            (self.category is None or self.category == category)
            and (self.tier is None or self.tier == tier)
            and (self.case_kind is None or self.case_kind == case_kind)
        )


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    """The SLA table, the warning share, office hours and the calendar override file it names."""

    rules: tuple[SlaRule, ...]
    warn_share: float = DEFAULT_WARN_SHARE
    working_hours: WorkingHours = DEFAULT_WORKING_HOURS
    calendar_overrides: Path | None = None
    source: str | None = None

    def rule_for(self, phase: Phase, category: TicketCategory, tier: Tier, case_kind: str | None) -> SlaRule | None:
        """Return the most specific matching rule: a case kind beats a category, which beats a tier."""
        candidates = [rule for rule in self.rules if rule.phase == phase and rule.matches(category, tier, case_kind)]
        if not candidates:
            return None
        return max(candidates, key=lambda rule: rule.specificity)


_RULE_FIELDS = ("phase", "category", "tier", "case_kind", "limit", "unit", "note")
_POLICY_FIELDS = ("warn_share", "working_hours", "calendar_overrides", "rules")


def load_sla_policy(path: str | Path) -> SlaPolicy:
    """Load and validate the SLA table; raise CalendarConfigError listing every problem in Chinese."""
    path = Path(path)
    source, document = load_yaml_document(path)
    if not isinstance(document, CommentedMap):
        raise CalendarConfigError([ConfigIssue(source, 1, "文件顶层应为映射，包含 rules（时限规则表）")])

    issues: list[ConfigIssue] = []
    for key in document:
        if key not in _POLICY_FIELDS:
            issues.append(ConfigIssue(
                source, line_of(document, key), f"不认识的字段“{key}”，只能有 {'、'.join(_POLICY_FIELDS)}，请检查拼写或删除"
            ))

    warn_share = _parse_warn_share(source, document, issues)
    hours = _parse_hours(source, document, issues)
    overrides = document.get("calendar_overrides")
    overrides_path: Path | None = None
    if overrides is not None:
        if isinstance(overrides, str) and overrides.strip():
            overrides_path = (path.parent / overrides.strip()).resolve()
        else:
            issues.append(ConfigIssue(
                source, line_of(document, "calendar_overrides", value=True),
                f"calendar_overrides 的值“{overrides}”无效，请写日历调整文件的路径（相对于本文件）或删除这一行",
            ))

    rules = _parse_rules(source, document.get("rules"), line_of(document, "rules"), issues)
    if issues:
        raise CalendarConfigError(issues)
    return SlaPolicy(tuple(rules), warn_share, hours, overrides_path, source)


def _parse_warn_share(source: str, document: CommentedMap, issues: list[ConfigIssue]) -> float:
    value = document.get("warn_share", DEFAULT_WARN_SHARE)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        issues.append(ConfigIssue(
            source, line_of(document, "warn_share", value=True),
            f"warn_share 的值“{value}”无效，应为 0 到 1 之间的小数，例如 0.8 表示用去 80% 时限时预警",
        ))
        return DEFAULT_WARN_SHARE
    return float(value)


def _parse_hours(source: str, document: CommentedMap, issues: list[ConfigIssue]) -> WorkingHours:
    specs = document.get("working_hours")
    if specs is None:
        return DEFAULT_WORKING_HOURS
    line = line_of(document, "working_hours", value=True)
    if not isinstance(specs, CommentedSeq) or not specs:
        issues.append(ConfigIssue(source, line, "working_hours 应为时段列表，例如 [\"08:30-12:00\", \"13:30-17:30\"]"))
        return DEFAULT_WORKING_HOURS
    try:
        return WorkingHours.parse(specs)
    except ValueError as exc:
        issues.append(ConfigIssue(source, line, str(exc)))
        return DEFAULT_WORKING_HOURS


def _parse_rules(source: str, section: Any, section_line: int, issues: list[ConfigIssue]) -> list[SlaRule]:
    if not isinstance(section, CommentedSeq) or not section:
        issues.append(ConfigIssue(source, section_line, "缺少 rules（时限规则表），请至少写一条规则"))
        return []

    rules: list[SlaRule] = []
    seen: dict[tuple[Any, ...], int] = {}
    for index, entry in enumerate(section):
        line = line_of(section, index)
        if not isinstance(entry, CommentedMap):
            issues.append(ConfigIssue(source, line, "每条规则应为映射，例如 {phase: resolve, category: zhengce, limit: 3, unit: wall_minutes}"))
            continue
        rule = _parse_rule(source, entry, line, issues)
        if rule is None:
            continue

        key = (rule.phase, rule.category, rule.tier, rule.case_kind)
        if key in seen:
            issues.append(ConfigIssue(
                source, line, f"这条规则与第 {seen[key]} 行的规则重复（阶段、类别、层级、案件类型都相同），请删除其中一条"
            ))
            continue
        seen[key] = line
        rules.append(rule)
    return rules


def _parse_rule(source: str, entry: CommentedMap, line: int, issues: list[ConfigIssue]) -> SlaRule | None:
    count_before = len(issues)
    for key in entry:
        if key not in _RULE_FIELDS:
            issues.append(ConfigIssue(
                source, line_of(entry, key), f"规则里有不认识的字段“{key}”，只能有 {'、'.join(_RULE_FIELDS)}"
            ))

    phase = _choice(source, entry, "phase", Phase, issues, required=True)
    category = _choice(source, entry, "category", TicketCategory, issues)
    tier = _choice(source, entry, "tier", Tier, issues)
    unit = _choice(source, entry, "unit", ClockUnit, issues, required=True)

    case_kind = entry.get("case_kind")
    if case_kind is not None and case_kind not in CASE_KINDS:
        issues.append(ConfigIssue(
            source, line_of(entry, "case_kind", value=True),
            f"未知的案件类型“{case_kind}”，可用：{'、'.join(f'{key}（{label}）' for key, label in CASE_KINDS.items())}，或删除这一行表示不限",
        ))

    amount = entry.get("limit")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        where = line_of(entry, "limit", value=True) if "limit" in entry else line
        issues.append(ConfigIssue(source, where, f"时限 limit 的值“{amount}”无效，应为正整数（不能为负数或零），单位由 unit 给出"))

    note = entry.get("note")
    if len(issues) > count_before:
        return None
    return SlaRule(phase, category, tier, case_kind, Limit(amount, unit), str(note) if note is not None else None, line)


def _choice(source: str, entry: CommentedMap, key: str, enum_type: type[enum.Enum], issues: list[ConfigIssue], *, required: bool = False) -> Any:
    value = entry.get(key)
    if value is None or value == "*":
        if required:
            issues.append(ConfigIssue(source, line_of(entry, key) if key in entry else entry.lc.line + 1,
                                      f"规则缺少 {key}，请从 {_choices(enum_type)} 中选一个"))
        return None
    try:
        return enum_type(value)
    except ValueError:
        names = {"phase": "阶段", "category": "工单类别", "tier": "层级", "unit": "时限单位"}
        issues.append(ConfigIssue(
            source, line_of(entry, key, value=True),
            f"未知的{names[key]}“{value}”，可用：{_choices(enum_type)}" + ("" if required else "，或写 * 表示不限"),
        ))
        return None


def _choices(enum_type: type[enum.Enum]) -> str:
    return "、".join(f"{member.value}（{member.label}）" for member in enum_type)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------- clocks


@dataclass(frozen=True, slots=True)
class Extension:
    """An approved extension of one phase, taken from an ``extension_approved`` event."""

    seq: int
    approved_at: datetime
    amount: int
    unit: ClockUnit


@dataclass(frozen=True, slots=True)
class PhaseClock:
    """State of one phase's clock at ``now``.

    ``elapsed`` and ``budget`` are measured on the phase's clock: wall time for wall units,
    working time for working units, both without paused time. ``paused`` is wall time.
    ``due_at`` of a paused phase assumes the pause ends at ``now``.
    """

    phase: Phase
    rule: SlaRule
    status: ClockStatus
    started_at: datetime | None = None
    finished_at: datetime | None = None
    due_at: datetime | None = None
    elapsed: timedelta = timedelta(0)
    budget: timedelta = timedelta(0)
    paused: timedelta = timedelta(0)
    warn: bool = False
    provisional_days: tuple[date, ...] = ()
    extensions: tuple[Extension, ...] = ()

    @property
    def provisional(self) -> bool:
        return bool(self.provisional_days)

    @property
    def used_share(self) -> float | None:
        if self.budget <= timedelta(0):
            return None
        return self.elapsed / self.budget

    @property
    def is_open_breach(self) -> bool:
        """True for a phase past its due time and still not finished: a candidate for supervision (督办)."""
        return self.status is ClockStatus.BREACHED and self.finished_at is None


@dataclass(frozen=True, slots=True)
class TicketClocks:
    ticket_id: str
    case_kind: str | None
    clocks: tuple[PhaseClock, ...]

    @property
    def breached(self) -> list[PhaseClock]:
        return [clock for clock in self.clocks if clock.is_open_breach]

    @property
    def warned(self) -> list[PhaseClock]:
        return [clock for clock in self.clocks if clock.warn]


def ticket_tier(events: Sequence[TicketEvent], default: Tier) -> Tier:
    """Return the tier that opened the ticket (its first event's tier), which selects the rules."""
    if not events:
        return default
    return min(events, key=lambda event: event.seq).tier


def case_kind_from_events(events: Iterable[TicketEvent]) -> str | None:
    """Return the latest ``case_kind`` payload value among the events, if any."""
    kind = None
    for event in events:
        value = (event.payload or {}).get(CASE_KIND_KEY)
        if isinstance(value, str) and value:
            kind = value
    return kind


def compute_clocks(
    ticket_id: str,
    category: TicketCategory,
    tier: Tier,
    events: Sequence[TicketEvent],
    now: datetime,
    policy: SlaPolicy,
    calendar: WorkingCalendar,
) -> TicketClocks:
    """Replay the events that occurred up to ``now`` and return the clock of every phase that has a rule."""
    now = require_utc(now, "now")
    trail = sorted((event for event in events if event.occurred_at <= now), key=lambda event: (event.occurred_at, event.seq))
    case_kind = case_kind_from_events(trail)
    pauses, pending_now = _pause_intervals(trail, now)

    clocks = []
    for phase in Phase:
        rule = policy.rule_for(phase, category, tier, case_kind)
        if rule is None:
            continue
        phase_log = log.bind(ticket_id=ticket_id, phase=phase.value)
        clocks.append(_phase_clock(phase, rule, trail, pauses, pending_now, now, policy, calendar, phase_log))
    return TicketClocks(ticket_id, case_kind, tuple(clocks))


def _pause_intervals(trail: Sequence[TicketEvent], now: datetime) -> tuple[list[tuple[datetime, datetime]], bool]:
    """Return the PENDING intervals (an open one ends at ``now``) and whether the ticket is PENDING at ``now``."""
    intervals = []
    paused_since: datetime | None = None
    for event in trail:
        if event.to_state is None:
            continue
        if event.to_state is TicketState.PENDING and paused_since is None:
            paused_since = event.occurred_at
        elif event.to_state is not TicketState.PENDING and paused_since is not None:
            intervals.append((paused_since, event.occurred_at))
            paused_since = None
    if paused_since is not None:
        intervals.append((paused_since, now))
    return intervals, paused_since is not None


def _phase_bounds(spec: PhaseSpec, trail: Sequence[TicketEvent]) -> tuple[datetime | None, datetime | None, datetime | None]:
    """Return (started_at, finished_at, stopped_at) of a phase from the state entries in the trail."""
    started: datetime | None = None
    stopped: datetime | None = None
    for event in trail:
        state = event.to_state
        if state is None:
            continue
        if started is not None and stopped is None and state in spec.ends:
            return started, event.occurred_at, None
        if state in spec.starts:
            if started is None or spec.restarts:
                started, stopped = event.occurred_at, None
        elif started is not None and stopped is None and state in spec.stops:
            stopped = event.occurred_at
            if not spec.restarts:
                break
    return started, None, stopped


def _phase_clock(
    phase: Phase,
    rule: SlaRule,
    trail: Sequence[TicketEvent],
    pauses: list[tuple[datetime, datetime]],
    pending_now: bool,
    now: datetime,
    policy: SlaPolicy,
    calendar: WorkingCalendar,
    phase_log: Any,
) -> PhaseClock:
    spec = PHASE_SPECS[phase]
    started, finished, stopped = _phase_bounds(spec, trail)
    if started is None:
        return PhaseClock(phase, rule, ClockStatus.NOT_STARTED)

    # Step 1: time the ticket spent PENDING inside this phase, if the phase pauses.
    window_end = finished or stopped or now
    phase_pauses = _clip(pauses, started, window_end) if spec.pausable else []
    paused_wall = sum((end - begin for begin, end in phase_pauses), timedelta(0))
    paused_now = spec.pausable and pending_now and finished is None and stopped is None

    # Step 2: the due time: the limit from the start, then the paused time, then each approved extension.
    unit = rule.limit.unit
    deadline = _add(calendar, unit, started, rule.limit.amount)
    provisional = list(deadline.provisional_days)
    if phase_pauses:
        paused_clock = _measure(calendar, unit, phase_pauses)
        if paused_clock.amount > timedelta(0):
            deadline = _extend_by(calendar, unit, deadline.at, paused_clock.amount)
            provisional += deadline.provisional_days
        provisional += paused_clock.provisional_days
    # An extension in working days ends at close of business, like any working-day limit.
    extensions = _extensions_for(phase, trail, phase_log)
    for extension in extensions:
        deadline = _add(calendar, extension.unit, deadline.at, extension.amount)
        provisional += deadline.provisional_days
    due_at = deadline.at

    # Step 3: time used and the budget, both on the phase's clock without paused time.
    used = _measure(calendar, unit, [(started, window_end)])
    budget = _measure(calendar, unit, [(started, due_at)])
    paused_used = _measure(calendar, unit, phase_pauses)
    paused_budget = _measure(calendar, unit, _clip(phase_pauses, started, due_at))
    provisional += used.provisional_days + budget.provisional_days
    elapsed = max(used.amount - paused_used.amount, timedelta(0))
    budget_amount = max(budget.amount - paused_budget.amount, timedelta(0))

    # Step 4: status and warning.
    if finished is not None:
        status = ClockStatus.MET if finished <= due_at else ClockStatus.BREACHED
    elif stopped is not None:
        status = ClockStatus.STOPPED
    elif now > due_at:
        status = ClockStatus.BREACHED
    elif paused_now:
        status = ClockStatus.PAUSED
    else:
        status = ClockStatus.RUNNING
    open_clock = status in (ClockStatus.RUNNING, ClockStatus.PAUSED)
    warn = open_clock and budget_amount > timedelta(0) and elapsed >= budget_amount * policy.warn_share

    provisional_days = tuple(sorted(set(provisional)))
    if provisional_days and open_clock:
        phase_log.warning(
            "sla due time provisional: calendar data missing",
            due_at=due_at.isoformat(),
            uncovered_days=[day.isoformat() for day in provisional_days],
        )
    return PhaseClock(
        phase=phase,
        rule=rule,
        status=status,
        started_at=started,
        finished_at=finished,
        due_at=due_at,
        elapsed=elapsed,
        budget=budget_amount,
        paused=paused_wall,
        warn=warn,
        provisional_days=provisional_days,
        extensions=tuple(extensions),
    )


def _clip(intervals: Iterable[tuple[datetime, datetime]], start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
    clipped = []
    for begin, finish in intervals:
        begin, finish = max(begin, start), min(finish, end)
        if finish > begin:
            clipped.append((begin, finish))
    return clipped


def _add(calendar: WorkingCalendar, unit: ClockUnit, start: datetime, amount: int) -> Deadline:
    if unit is ClockUnit.WALL_MINUTES:
        return Deadline(start + timedelta(minutes=amount))
    if unit is ClockUnit.WALL_HOURS:
        return Deadline(start + timedelta(hours=amount))
    if unit is ClockUnit.WORKING_HOURS:
        return calendar.add_working_time(start, timedelta(hours=amount), warn=False)
    return calendar.add_working_days(start, amount, warn=False)


def _extend_by(calendar: WorkingCalendar, unit: ClockUnit, start: datetime, amount: timedelta) -> Deadline:
    if unit.is_working_time:
        return calendar.add_working_time(start, amount, warn=False)
    return Deadline(start + amount)


def _measure(calendar: WorkingCalendar, unit: ClockUnit, intervals: Iterable[tuple[datetime, datetime]]) -> WorkingDuration:
    """Return the total of the intervals on the unit's clock."""
    total = timedelta(0)
    provisional: list[date] = []
    for begin, end in intervals:
        if end <= begin:
            continue
        if unit.is_working_time:
            measured = calendar.working_time_between(begin, end)
            total += measured.amount
            provisional += measured.provisional_days
        else:
            total += end - begin
    return WorkingDuration(total, tuple(provisional))


def _extensions_for(phase: Phase, trail: Sequence[TicketEvent], phase_log: Any) -> list[Extension]:
    """Return the valid extensions of ``phase``; an unusable payload is logged and skipped."""
    extensions = []
    for event in trail:
        if event.kind != EXTENSION_EVENT_KIND:
            continue
        payload = event.payload or {}
        if payload.get("phase") != phase.value:
            continue

        extra = payload.get("extra")
        if not isinstance(extra, dict) or not extra:
            phase_log.warning("extension ignored: payload has no extra", seq=event.seq)
            continue
        for unit_name, amount in extra.items():
            try:
                unit = ClockUnit(unit_name)
            except ValueError:
                phase_log.warning("extension ignored: unknown unit", seq=event.seq, unit=str(unit_name))
                continue
            if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
                phase_log.warning("extension ignored: amount is not a positive integer", seq=event.seq, unit=unit.value)
                continue
            extensions.append(Extension(event.seq, event.occurred_at, amount, unit))
    return extensions
