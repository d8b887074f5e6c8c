"""Supervisor status: today's figures on the Asia/Shanghai day, queues per skill, the status store."""

from datetime import UTC, datetime, timedelta

import pytest

from acd.agent_commands import AgentAction, AgentCommand
from acd.pool import AgentPool, AgentProfile, AgentState, DeviceState
from acd.status import (
    AcdStatus,
    QueueCallResult,
    QueueOutcome,
    agents_by_state,
    build_status,
    china_day_bounds,
    daily_figures,
    skill_queues,
)
from storage.acd_store import AcdStore

# 2026-03-10 10:00 in Beijing.
NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


def _answered(call_id: str, entered: datetime, wait_s: float) -> QueueCallResult:
    answered_at = entered + timedelta(seconds=wait_s)
    return QueueCallResult(call_id, "dibao", entered, answered_at + timedelta(seconds=60), QueueOutcome.ANSWERED,
                           answered_at, "a1")


def _abandoned(call_id: str, entered: datetime, wait_s: float) -> QueueCallResult:
    return QueueCallResult(call_id, "dibao", entered, entered + timedelta(seconds=wait_s), QueueOutcome.ABANDONED)


def _day_results() -> list[QueueCallResult]:
    morning = NOW - timedelta(hours=1)
    return [
        _answered("c1", morning, 3),
        _answered("c2", morning, 15),  # exactly at the threshold counts as within
        _answered("c3", morning, 40),
        _abandoned("c4", morning, 2),  # short abandon: out of the SL denominator
        _abandoned("c5", morning, 30),
        QueueCallResult("c6", "dibao", morning, morning + timedelta(seconds=120), QueueOutcome.NO_AGENT),
    ]


def test_daily_figures_counts():
    figures = daily_figures(_day_results(), NOW)

    assert figures.offered == 6
    assert figures.answered == 3
    assert figures.abandoned == 2
    assert figures.abandoned_short == 1
    assert figures.no_agent == 1
    assert figures.answered_within_threshold == 2


def test_daily_figures_rates():
    figures = daily_figures(_day_results(), NOW)

    assert figures.answer_rate == pytest.approx(3 / 6)
    assert figures.abandon_rate == pytest.approx(2 / 6)
    assert figures.service_level == pytest.approx(2 / 5)


def test_day_is_beijing_day():
    # 2026-03-09 16:30 UTC is 2026-03-10 00:30 in Beijing: today. 15:59 UTC is yesterday.
    today_early = datetime(2026, 3, 9, 16, 30, tzinfo=UTC)
    yesterday_late = datetime(2026, 3, 9, 15, 59, tzinfo=UTC)
    results = [_answered("c1", today_early, 5), _answered("c2", yesterday_late, 5)]

    figures = daily_figures(results, NOW)
    day, start, end = china_day_bounds(NOW)

    assert figures.offered == 1
    assert day.isoformat() == "2026-03-10"
    assert start == datetime(2026, 3, 9, 16, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 10, 16, 0, tzinfo=UTC)


def test_empty_day_has_no_rates():
    figures = daily_figures([], NOW)

    assert figures.offered == 0
    assert figures.answer_rate is None
    assert figures.service_level is None
    assert figures.abandon_rate is None


def test_only_short_abandons_no_service_level():
    figures = daily_figures([_abandoned("c1", NOW - timedelta(minutes=5), 1)], NOW)

    assert figures.abandon_rate == 1.0
    assert figures.service_level is None


def test_queue_result_needs_utc_and_answer_time():
    with pytest.raises(ValueError):
        QueueCallResult("c1", "dibao", datetime(2026, 3, 10, 10, 0), NOW, QueueOutcome.ABANDONED)
    with pytest.raises(ValueError):
        QueueCallResult("c1", "dibao", NOW, NOW, QueueOutcome.ANSWERED)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_waiting_calls_by_skill():
    clock = _Clock()
    pool = AgentPool([AgentProfile("a1", "坐席一", "ep-a1", frozenset({"dibao"}))], clock=clock)
    await pool.set_paused("a1", True, reason="break")

    assert await pool.reserve("c1", "dibao", timeout_s=0.01) is None
    clock.now += 20
    assert await pool.reserve("c2", "dibao", timeout_s=0.01) is None
    assert await pool.reserve("c3", "linshi", timeout_s=0.01) is None
    clock.now += 5

    status = build_status("county-1", NOW, pool.snapshot(), {"a1": "坐席一"}, pool.waiting_calls())
    queues = skill_queues(status, NOW)

    assert [(q.skill, q.waiting, round(q.longest_wait_s)) for q in queues] == [("dibao", 2, 25), ("linshi", 1, 5)]
    assert agents_by_state(status)[AgentState.PAUSED] == 1


async def test_waiting_ends_on_reservation_and_call_end():
    clock = _Clock()
    pool = AgentPool([AgentProfile("a1", "坐席一", "ep-a1", frozenset({"dibao"}))], clock=clock)
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert await pool.reserve("c1", "dibao", timeout_s=0.01) is not None
    assert await pool.reserve("c2", "dibao", timeout_s=0.01) is None
    waiting_before_end = [call.call_id for call in pool.waiting_calls()]
    pool.call_ended("c2")

    assert waiting_before_end == ["c2"]
    assert pool.waiting_calls() == []


async def test_waiting_call_forgotten_after_gap():
    clock = _Clock()
    pool = AgentPool([AgentProfile("a1", "坐席一", "ep-a1", frozenset({"dibao"}))], clock=clock)

    assert await pool.reserve("c1", "dibao", timeout_s=0.01) is None
    clock.now += 61

    assert pool.waiting_calls() == []


async def test_store_keeps_status_and_results(tmp_path):
    status = AcdStatus.from_dict(build_status("county-1", NOW, [], {}, []).to_dict())
    results = _day_results()

    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        assert await store.read_status() is None
        await store.publish_status(status)
        for result in results:
            await store.record_queue_call(result)
        _, start, end = china_day_bounds(NOW)
        stored = await store.queue_calls_between(start, end)
        read_back = await store.read_status()

    assert read_back == status
    assert stored == results


async def test_store_command_claim_and_withdraw(tmp_path):
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        first = await store.enqueue_command("a1", AgentCommand(AgentAction.PAUSE, "break"), NOW)
        second = await store.enqueue_command("a2", AgentCommand(AgentAction.LOGIN), NOW)
        pending = await store.pending_commands()

        claimed = await store.claim_command(first)
        withdrawn_after_claim = await store.withdraw_command(first, "too late", NOW)
        await store.finish_command(first, "done", "坐席 a1 已暂停", NOW)
        withdrawn = await store.withdraw_command(second, "节点没有处理", NOW)
        claimed_after_withdraw = await store.claim_command(second)

        assert [(p.agent_id, p.command) for p in pending] == [
            ("a1", AgentCommand(AgentAction.PAUSE, "break")), ("a2", AgentCommand(AgentAction.LOGIN)),
        ]
        assert claimed
        assert not withdrawn_after_claim
        assert await store.command_result(first) == ("done", "坐席 a1 已暂停")
        assert withdrawn
        assert not claimed_after_withdraw
        assert await store.command_result(second) == ("expired", "节点没有处理")
        assert await store.pending_commands() == []
