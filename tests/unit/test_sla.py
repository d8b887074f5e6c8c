"""SLA clocks: the rule table, phase clocks from event trails, pauses, extensions and provisional dates."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tickets.calendar import CalendarConfigError, HolidayData, WorkingCalendar
from tickets.model import CHINA_TZ, TicketCategory, TicketEvent, TicketState, Tier
from tickets.sla import (
    ClockStatus,
    ClockUnit,
    Limit,
    Phase,
    SlaPolicy,
    SlaRule,
    compute_clocks,
    load_sla_policy,
    ticket_tier,
)

SHIPPED_RULES = Path(__file__).resolve().parents[2] / "config" / "sla.yaml"
TICKET = "330106-20250310-0001"
CALENDAR = WorkingCalendar(HolidayData.from_chinese_calendar())


def cst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ).astimezone(timezone.utc)


class Trail:
    """Builds a ticket's event trail the way the store numbers it."""

    def __init__(self) -> None:
        self.events: list[TicketEvent] = []
        self.state: TicketState | None = None

    def to(self, state: TicketState, at: datetime, kind: str = "state_changed", **payload: Any) -> Trail:
        self.events.append(TicketEvent(
            ticket_id=TICKET, seq=len(self.events) + 1, kind=kind, actor="agent-1001", tier=Tier.COUNTY,
            office=None, occurred_at=at, from_state=self.state, to_state=state, payload=payload,
        ))
        self.state = state
        return self

    def note(self, at: datetime, kind: str, **payload: Any) -> Trail:
        self.events.append(TicketEvent(
            ticket_id=TICKET, seq=len(self.events) + 1, kind=kind, actor="lead-2001", tier=Tier.COUNTY,
            office=None, occurred_at=at, from_state=self.state, to_state=None, payload=payload,
        ))
        return self


def policy_with(*rules: SlaRule, warn_share: float = 0.8) -> SlaPolicy:
    return SlaPolicy(rules=rules, warn_share=warn_share)


def rule(phase: Phase, amount: int, unit: ClockUnit, **match: Any) -> SlaRule:
    return SlaRule(phase, match.get("category"), match.get("tier"), match.get("case_kind"), Limit(amount, unit))


def clock_of(result, phase: Phase):
    (clock,) = [clock for clock in result.clocks if clock.phase is phase]
    return clock


@pytest.fixture(scope="module")
def shipped() -> SlaPolicy:
    return load_sla_policy(SHIPPED_RULES)


class TestShippedTable:
    def test_plan_limits(self, shipped: SlaPolicy) -> None:
        def limit(phase: Phase, category: TicketCategory, tier: Tier, case_kind: str | None = None) -> Limit | None:
            found = shipped.rule_for(phase, category, tier, case_kind)
            return found.limit if found else None

        assert limit(Phase.RESOLVE, TicketCategory.ZHENGCE, Tier.COUNTY) == Limit(3, ClockUnit.WALL_MINUTES)
        assert limit(Phase.DISPATCH, TicketCategory.LINSHI, Tier.CITY) == Limit(1, ClockUnit.WALL_HOURS)
        assert limit(Phase.DISPATCH, TicketCategory.LINSHI, Tier.COUNTY) is None
        assert limit(Phase.RESOLVE, TicketCategory.DIBAO, Tier.CITY, "cross_region") == Limit(3, ClockUnit.WORKING_DAYS)
        assert limit(Phase.RESOLVE, TicketCategory.YANGLAO, Tier.COUNTY, "simple") == Limit(1, ClockUnit.WORKING_DAYS)
        assert limit(Phase.RESOLVE, TicketCategory.YANGLAO, Tier.CITY, "simple") is None
        assert limit(Phase.RESOLVE, TicketCategory.LIULANG, Tier.PROVINCE, "emergency") == Limit(1, ClockUnit.WALL_HOURS)
        assert limit(Phase.CALLBACK, TicketCategory.OTHER, Tier.MINISTRY) == Limit(3, ClockUnit.WORKING_DAYS)

    def test_settings(self, shipped: SlaPolicy) -> None:
        assert shipped.warn_share == 0.8
        assert str(shipped.working_hours) == "08:30-12:00、13:30-17:30"
        assert shipped.calendar_overrides == SHIPPED_RULES.parent.resolve() / "calendar-overrides.yaml"

    def test_case_kind_beats_category(self, shipped: SlaPolicy) -> None:
        """An emergency policy question gets the emergency hour, not the 3-minute answer rule."""
        found = shipped.rule_for(Phase.RESOLVE, TicketCategory.ZHENGCE, Tier.COUNTY, "emergency")
        assert found is not None
        assert found.case_kind == "emergency"


class TestWallClock:
    def test_policy_question_answered_in_time(self, shipped: SlaPolicy) -> None:
        start = cst(2025, 10, 1, 9)
        trail = Trail().to(TicketState.NEW, start, "created").to(TicketState.RESOLVED, start + timedelta(minutes=2))
        result = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start + timedelta(hours=1), shipped, CALENDAR)
        resolve = clock_of(result, Phase.RESOLVE)
        assert resolve.status is ClockStatus.MET
        assert resolve.due_at == start + timedelta(minutes=3)
        assert resolve.elapsed == timedelta(minutes=2)
        assert not resolve.provisional

    def test_policy_question_warn_then_breach(self, shipped: SlaPolicy) -> None:
        start = cst(2025, 10, 1, 9)
        trail = Trail().to(TicketState.NEW, start, "created")
        early = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start + timedelta(minutes=2), shipped, CALENDAR)
        warned = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start + timedelta(seconds=150), shipped, CALENDAR)
        late = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start + timedelta(minutes=4), shipped, CALENDAR)
        assert clock_of(early, Phase.RESOLVE).status is ClockStatus.RUNNING
        assert not clock_of(early, Phase.RESOLVE).warn
        assert clock_of(warned, Phase.RESOLVE).warn
        assert clock_of(warned, Phase.RESOLVE).used_share == pytest.approx(150 / 180)
        assert clock_of(late, Phase.RESOLVE).status is ClockStatus.BREACHED
        assert clock_of(late, Phase.RESOLVE).is_open_breach
        assert not clock_of(late, Phase.RESOLVE).warn
        assert late.breached == [clock_of(late, Phase.RESOLVE)]

    def test_city_temporary_assistance_forward_on_holiday(self, shipped: SlaPolicy) -> None:
        """Wall-clock limits ignore holidays: National Day 10:00 plus one hour is 11:00."""
        start = cst(2025, 10, 1, 10)
        trail = Trail().to(TicketState.NEW, start, "created")
        result = compute_clocks(TICKET, TicketCategory.LINSHI, Tier.CITY, trail.events, cst(2025, 10, 1, 10, 50), shipped, CALENDAR)
        dispatch = clock_of(result, Phase.DISPATCH)
        assert dispatch.due_at == cst(2025, 10, 1, 11)
        assert dispatch.status is ClockStatus.RUNNING
        assert dispatch.warn

    def test_dispatch_met_late(self, shipped: SlaPolicy) -> None:
        start = cst(2025, 10, 1, 10)
        trail = Trail().to(TicketState.NEW, start, "created").to(TicketState.DISPATCHED, cst(2025, 10, 1, 11, 5))
        result = compute_clocks(TICKET, TicketCategory.LINSHI, Tier.CITY, trail.events, cst(2025, 10, 2), shipped, CALENDAR)
        dispatch = clock_of(result, Phase.DISPATCH)
        assert dispatch.status is ClockStatus.BREACHED
        assert dispatch.finished_at == cst(2025, 10, 1, 11, 5)
        assert not dispatch.is_open_breach

    def test_direct_answer_stops_dispatch(self) -> None:
        policy = policy_with(rule(Phase.DISPATCH, 1, ClockUnit.WALL_HOURS))
        start = cst(2025, 3, 10, 9)
        trail = Trail().to(TicketState.NEW, start, "created").to(TicketState.RESOLVED, start + timedelta(minutes=5))
        result = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start + timedelta(hours=3), policy, CALENDAR)
        assert clock_of(result, Phase.DISPATCH).status is ClockStatus.STOPPED

    def test_escalation_ends_dispatch(self) -> None:
        policy = policy_with(rule(Phase.DISPATCH, 1, ClockUnit.WALL_HOURS))
        start = cst(2025, 3, 10, 9)
        trail = Trail().to(TicketState.NEW, start, "created").to(TicketState.ESCALATED, start + timedelta(minutes=30))
        result = compute_clocks(TICKET, TicketCategory.LINSHI, Tier.CITY, trail.events, start + timedelta(hours=2), policy, CALENDAR)
        assert clock_of(result, Phase.DISPATCH).status is ClockStatus.MET
        assert clock_of(result, Phase.DISPATCH).finished_at == start + timedelta(minutes=30)

    def test_rules_follow_opening_tier(self) -> None:
        """A county ticket stored at the city keeps the county's rules."""
        trail = Trail().to(TicketState.NEW, cst(2025, 3, 10, 9), "created")
        assert ticket_tier(trail.events, Tier.CITY) is Tier.COUNTY
        assert ticket_tier([], Tier.CITY) is Tier.CITY

    def test_emergency_from_case_kind_event(self, shipped: SlaPolicy) -> None:
        start = cst(2025, 12, 20, 23, 30)
        trail = (
            Trail().to(TicketState.NEW, start, "created")
            .note(start + timedelta(minutes=1), "case_classified", case_kind="emergency")
        )
        result = compute_clocks(TICKET, TicketCategory.LIULANG, Tier.COUNTY, trail.events, start + timedelta(minutes=61), shipped, CALENDAR)
        assert result.case_kind == "emergency"
        assert clock_of(result, Phase.RESOLVE).due_at == start + timedelta(hours=1)
        assert clock_of(result, Phase.RESOLVE).is_open_breach

    def test_events_after_now_ignored(self, shipped: SlaPolicy) -> None:
        start = cst(2025, 10, 1, 9)
        trail = Trail().to(TicketState.NEW, start, "created").to(TicketState.RESOLVED, start + timedelta(minutes=10))
        result = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start + timedelta(minutes=1), shipped, CALENDAR)
        assert clock_of(result, Phase.RESOLVE).status is ClockStatus.RUNNING
        assert clock_of(result, Phase.CALLBACK).status is ClockStatus.NOT_STARTED


class TestWorkingClocks:
    def test_callback_over_national_day(self, shipped: SlaPolicy) -> None:
        """Resolved Sep 30, 2025: three working days are Oct 9, Oct 10 and the make-up Saturday Oct 11."""
        trail = (
            Trail().to(TicketState.NEW, cst(2025, 9, 29, 9), "created")
            .to(TicketState.RESOLVED, cst(2025, 9, 30, 10))
        )
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 10, 10, 9), shipped, CALENDAR)
        callback = clock_of(result, Phase.CALLBACK)
        assert callback.due_at == cst(2025, 10, 11, 17, 30)
        assert callback.status is ClockStatus.RUNNING
        # Used: Sep 30 10:00-17:30 less lunch (6 h), Oct 9 (7.5 h) and Oct 10 08:30-09:00.
        assert callback.elapsed == timedelta(hours=14)
        assert callback.budget == timedelta(hours=6 + 7.5 + 7.5 + 7.5)

    def test_callback_closed_in_time(self, shipped: SlaPolicy) -> None:
        trail = (
            Trail().to(TicketState.NEW, cst(2025, 9, 29, 9), "created")
            .to(TicketState.RESOLVED, cst(2025, 9, 30, 10))
            .to(TicketState.VERIFYING, cst(2025, 10, 11, 9))
            .to(TicketState.CLOSED, cst(2025, 10, 11, 9, 20))
        )
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 10, 20), shipped, CALENDAR)
        assert clock_of(result, Phase.CALLBACK).status is ClockStatus.MET

    def test_simple_county_case_over_weekend(self, shipped: SlaPolicy) -> None:
        trail = Trail().to(TicketState.NEW, cst(2025, 3, 7, 16), "created", case_kind="simple")
        result = compute_clocks(TICKET, TicketCategory.YANGLAO, Tier.COUNTY, trail.events, cst(2025, 3, 10, 17), shipped, CALENDAR)
        resolve = clock_of(result, Phase.RESOLVE)
        assert resolve.due_at == cst(2025, 3, 10, 17, 30)
        assert resolve.warn
        assert clock_of(result, Phase.RESOLVE).status is ClockStatus.RUNNING

    def test_pending_pause_in_working_time(self) -> None:
        """Eight working hours from Monday 09:00, with PENDING from 10:00 to 14:30 (3 working hours)."""
        policy = policy_with(rule(Phase.HANDLE, 8, ClockUnit.WORKING_HOURS))
        trail = (
            Trail().to(TicketState.NEW, cst(2025, 3, 10, 8, 40), "created")
            .to(TicketState.DISPATCHED, cst(2025, 3, 10, 8, 45))
            .to(TicketState.ACCEPTED, cst(2025, 3, 10, 9))
            .to(TicketState.IN_PROGRESS, cst(2025, 3, 10, 9, 10))
            .to(TicketState.PENDING, cst(2025, 3, 10, 10))
            .to(TicketState.IN_PROGRESS, cst(2025, 3, 10, 14, 30))
        )
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 3, 11, 10), policy, CALENDAR)
        handle = clock_of(result, Phase.HANDLE)
        # Without the pause: 7 h on Monday, 1 h on Tuesday, so 09:30; the pause adds 3 h, so 14:00.
        assert handle.due_at == cst(2025, 3, 11, 14)
        assert handle.paused == timedelta(hours=4, minutes=30)
        assert handle.elapsed == timedelta(hours=5, minutes=30)
        assert handle.budget == timedelta(hours=8)
        assert handle.status is ClockStatus.RUNNING

    def test_pending_now_shows_paused(self) -> None:
        policy = policy_with(rule(Phase.HANDLE, 8, ClockUnit.WORKING_HOURS))
        trail = (
            Trail().to(TicketState.NEW, cst(2025, 3, 10, 8, 40), "created")
            .to(TicketState.ACCEPTED, cst(2025, 3, 10, 9))
            .to(TicketState.PENDING, cst(2025, 3, 10, 10))
        )
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 3, 11, 9, 30), policy, CALENDAR)
        handle = clock_of(result, Phase.HANDLE)
        assert handle.status is ClockStatus.PAUSED
        assert handle.elapsed == timedelta(hours=1)
        assert not handle.warn
        # Due without the pause: Tuesday 09:30. Paused so far: Monday 10:00-17:30 less lunch (6 h) and
        # Tuesday 08:30-09:30 (1 h), and 7 working hours after Tuesday 09:30 end on Wednesday 09:00.
        assert handle.due_at == cst(2025, 3, 12, 9)

    def test_returned_ticket_restarts_accept_clock(self) -> None:
        policy = policy_with(rule(Phase.ACCEPT, 2, ClockUnit.WORKING_HOURS))
        trail = (
            Trail().to(TicketState.NEW, cst(2025, 3, 10, 8, 40), "created")
            .to(TicketState.DISPATCHED, cst(2025, 3, 10, 9))
            .to(TicketState.RETURNED, cst(2025, 3, 10, 10))
        )
        returned = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 3, 10, 10, 30), policy, CALENDAR)
        assert clock_of(returned, Phase.ACCEPT).status is ClockStatus.STOPPED

        trail.to(TicketState.DISPATCHED, cst(2025, 3, 10, 11))
        again = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 3, 10, 11, 30), policy, CALENDAR)
        accept = clock_of(again, Phase.ACCEPT)
        assert accept.started_at == cst(2025, 3, 10, 11)
        assert accept.due_at == cst(2025, 3, 10, 14, 30)
        assert accept.status is ClockStatus.RUNNING

    def test_cancelled_ticket_stops_clock(self, shipped: SlaPolicy) -> None:
        trail = (
            Trail().to(TicketState.NEW, cst(2025, 3, 10, 9), "created", case_kind="simple")
            .to(TicketState.CANCELLED, cst(2025, 3, 10, 9, 30))
        )
        result = compute_clocks(TICKET, TicketCategory.YANGLAO, Tier.COUNTY, trail.events, cst(2025, 3, 20), shipped, CALENDAR)
        assert clock_of(result, Phase.RESOLVE).status is ClockStatus.STOPPED
        assert result.breached == []


class TestExtension:
    def trail(self) -> Trail:
        return (
            Trail().to(TicketState.NEW, cst(2025, 9, 29, 9), "created")
            .to(TicketState.RESOLVED, cst(2025, 9, 30, 10))
        )

    def test_extension_moves_due_date(self, shipped: SlaPolicy) -> None:
        trail = self.trail().note(cst(2025, 10, 10, 9), "extension_approved", phase="callback", extra={"working_days": 2})
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 10, 12, 9), shipped, CALENDAR)
        callback = clock_of(result, Phase.CALLBACK)
        assert callback.due_at == cst(2025, 10, 14, 17, 30)
        assert callback.status is ClockStatus.RUNNING
        assert [(extension.amount, extension.unit) for extension in callback.extensions] == [(2, ClockUnit.WORKING_DAYS)]

    def test_extension_not_yet_approved(self, shipped: SlaPolicy) -> None:
        trail = self.trail().note(cst(2025, 10, 13, 9), "extension_approved", phase="callback", extra={"working_days": 2})
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 10, 12, 9), shipped, CALENDAR)
        callback = clock_of(result, Phase.CALLBACK)
        assert callback.due_at == cst(2025, 10, 11, 17, 30)
        assert callback.is_open_breach

    def test_extension_for_other_phase_ignored(self, shipped: SlaPolicy) -> None:
        trail = self.trail().note(cst(2025, 10, 10, 9), "extension_approved", phase="handle", extra={"working_days": 2})
        result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 10, 10, 10), shipped, CALENDAR)
        assert clock_of(result, Phase.CALLBACK).due_at == cst(2025, 10, 11, 17, 30)

    def test_invalid_extension_logged_and_skipped(self, shipped: SlaPolicy) -> None:
        trail = self.trail().note(cst(2025, 10, 10, 9), "extension_approved", phase="callback", extra={"fortnights": 1})
        with capture_logs() as logs:
            result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2025, 10, 10, 10), shipped, CALENDAR)
        assert clock_of(result, Phase.CALLBACK).due_at == cst(2025, 10, 11, 17, 30)
        assert [entry["event"] for entry in logs] == ["extension ignored: unknown unit"]
        assert logs[0]["ticket_id"] == TICKET
        assert logs[0]["phase"] == "callback"

    def test_wall_hours_extension(self) -> None:
        policy = policy_with(rule(Phase.DISPATCH, 1, ClockUnit.WALL_HOURS))
        start = cst(2025, 3, 10, 9)
        trail = Trail().to(TicketState.NEW, start, "created").note(start, "extension_approved", phase="dispatch", extra={"wall_minutes": 30})
        result = compute_clocks(TICKET, TicketCategory.LINSHI, Tier.CITY, trail.events, start, policy, CALENDAR)
        assert clock_of(result, Phase.DISPATCH).due_at == start + timedelta(minutes=90)


class TestProvisional:
    def test_uncovered_year_flagged_and_logged(self, shipped: SlaPolicy) -> None:
        trail = (
            Trail().to(TicketState.NEW, cst(2099, 6, 1, 9), "created")
            .to(TicketState.RESOLVED, cst(2099, 6, 5, 16))
        )
        with capture_logs() as logs:
            result = compute_clocks(TICKET, TicketCategory.DIBAO, Tier.COUNTY, trail.events, cst(2099, 6, 8, 9), shipped, CALENDAR)
        callback = clock_of(result, Phase.CALLBACK)
        assert callback.due_at == cst(2099, 6, 10, 17, 30)
        assert callback.provisional
        assert date(2099, 6, 6) in callback.provisional_days
        sla_warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert [entry["event"] for entry in sla_warnings] == ["sla due time provisional: calendar data missing"]
        assert sla_warnings[0]["ticket_id"] == TICKET
        assert sla_warnings[0]["log_level"] == "warning"

    def test_wall_clock_never_provisional(self, shipped: SlaPolicy) -> None:
        start = cst(2099, 6, 1, 9)
        trail = Trail().to(TicketState.NEW, start, "created")
        result = compute_clocks(TICKET, TicketCategory.ZHENGCE, Tier.COUNTY, trail.events, start, shipped, CALENDAR)
        assert not clock_of(result, Phase.RESOLVE).provisional


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sla.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class TestRuleValidation:
    def test_errors_name_file_line_value_and_fix(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "warn_share: 1.5\n"
            "rules:\n"
            "  - {phase: resolve, category: pension, limit: 3, unit: wall_minutes}\n"
            "  - {phase: callback, limit: 3, unit: fortnights}\n"
            "  - {phase: dispatch, limit: -1, unit: wall_hours}\n"
            "  - {phase: review, limit: 1, unit: wall_hours}\n"
            "  - {phase: resolve, case_kind: urgent, limit: 1, unit: wall_hours}\n",
        )
        with pytest.raises(CalendarConfigError) as caught:
            load_sla_policy(path)
        text = str(caught.value)
        assert f"{path}:1: warn_share 的值“1.5”无效" in text
        assert f"{path}:3: 未知的工单类别“pension”，可用：dibao（低保）" in text
        assert f"{path}:4: 未知的时限单位“fortnights”，可用：wall_minutes（分钟（自然时间））" in text
        assert f"{path}:5: 时限 limit 的值“-1”无效，应为正整数" in text
        assert f"{path}:6: 未知的阶段“review”" in text
        assert f"{path}:7: 未知的案件类型“urgent”" in text
        assert len(caught.value.issues) == 6

    def test_duplicate_rule(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "rules:\n"
            "  - {phase: callback, limit: 3, unit: working_days}\n"
            "  - {phase: callback, tier: '*', limit: 5, unit: working_days}\n",
        )
        with pytest.raises(CalendarConfigError, match=r"sla.yaml:3: 这条规则与第 2 行的规则重复"):
            load_sla_policy(path)

    def test_missing_rules_and_unknown_field(self, tmp_path: Path) -> None:
        path = write(tmp_path, "warn: 0.5\n")
        with pytest.raises(CalendarConfigError) as caught:
            load_sla_policy(path)
        text = str(caught.value)
        assert "不认识的字段“warn”" in text
        assert "缺少 rules" in text

    def test_bad_working_hours(self, tmp_path: Path) -> None:
        path = write(tmp_path, "working_hours: ['08:30-12:00', '11:00-17:30']\nrules:\n  - {phase: callback, limit: 3, unit: working_days}\n")
        with pytest.raises(CalendarConfigError, match=r"sla.yaml:1: 工作时段 .*互不重叠"):
            load_sla_policy(path)

    def test_missing_unit(self, tmp_path: Path) -> None:
        path = write(tmp_path, "rules:\n  - phase: callback\n    limit: 3\n")
        with pytest.raises(CalendarConfigError, match=r"sla.yaml:2: 规则缺少 unit"):
            load_sla_policy(path)
