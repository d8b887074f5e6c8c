"""Agent states: every transition is an event, and no state sticks (wrap-up, expiry, login, busy device)."""

import asyncio
from datetime import UTC, datetime

import pytest

from acd.pool import (
    AcdSettings,
    AgentPool,
    AgentProfile,
    AgentState,
    DeviceState,
    ReleaseOutcome,
)
from tests.fakes.acd import FakeClock, ListRecorder

WALL = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)


def _pool(*agent_ids, settings=None):
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(
        [AgentProfile(a, a, f"ep-{a}", frozenset({"dibao"})) for a in agent_ids],
        clock=clock, wall_clock=lambda: WALL, settings=settings or AcdSettings(wrap_up_s=15), recorder=recorder,
    )
    return pool, clock, recorder


def _state(pool, agent_id):
    return next(s for s in pool.snapshot() if s.agent_id == agent_id).state


async def test_answered_call_full_cycle():
    pool, clock, recorder = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)
    assert _state(pool, "a1") is AgentState.RESERVED
    await pool.device_state_changed("ep-a1", DeviceState.RINGING)
    assert _state(pool, "a1") is AgentState.RINGING
    await pool.device_state_changed("ep-a1", DeviceState.IN_USE)
    assert _state(pool, "a1") is AgentState.ON_CALL
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    await pool.release(reservation, reason="dial_returned")
    assert _state(pool, "a1") is AgentState.WRAP_UP

    clock.now += 14.9
    await pool.tick()
    assert _state(pool, "a1") is AgentState.WRAP_UP
    clock.now += 0.1
    await pool.tick()
    assert _state(pool, "a1") is AgentState.AVAILABLE

    states = [(e.previous, e.state) for e in recorder.events]
    assert states == [
        ("available", "reserved"), ("reserved", "ringing"), ("ringing", "on_call"),
        ("on_call", "wrap_up"), ("wrap_up", "available"),
    ]
    assert all(e.at == WALL for e in recorder.events)
    assert pool.events() == recorder.events


async def test_wrap_up_blocks_offers():
    pool, clock, _ = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)
    await pool.release(reservation, reason="dial_returned", outcome=ReleaseOutcome.ANSWERED)

    waiter = asyncio.create_task(pool.reserve("c2", "dibao", timeout_s=1))
    await asyncio.sleep(0.005)
    assert not waiter.done()

    clock.now += 15
    await pool.tick()
    assert (await waiter).call_id == "c2"


async def test_zero_wrap_up_available_at_once():
    pool, _, _ = _pool("a1", settings=AcdSettings(wrap_up_s=0))
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)
    await pool.release(reservation, reason="dial_returned", outcome=ReleaseOutcome.ANSWERED)

    assert _state(pool, "a1") is AgentState.AVAILABLE


async def test_ring_no_answer_pauses_with_reason():
    pool, _, recorder = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)
    await pool.device_state_changed("ep-a1", DeviceState.RINGING)
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    await pool.release(reservation, reason="dial_returned")

    snap = pool.snapshot()[0]
    assert snap.state is AgentState.PAUSED
    assert snap.pause_reason == "no_answer"
    assert recorder.events[-1].pause_reason == "no_answer"


async def test_no_answer_pause_disabled():
    pool, _, _ = _pool("a1", settings=AcdSettings(no_answer_pause_reason=None))
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)
    await pool.release(reservation, reason="dial_returned", outcome=ReleaseOutcome.NO_ANSWER)

    assert _state(pool, "a1") is AgentState.AVAILABLE


async def test_abandoned_ring_does_not_pause():
    pool, _, _ = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)
    await pool.device_state_changed("ep-a1", DeviceState.RINGING)
    await pool.release(reservation, reason="caller_gone", outcome=ReleaseOutcome.ABANDONED)

    assert _state(pool, "a1") is AgentState.AVAILABLE


async def test_unreleased_reservation_expires_with_warning(capsys):
    pool, clock, recorder = _pool("a1", settings=AcdSettings(reservation_ttl_s=60))
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    await pool.reserve("c1", "dibao", timeout_s=0.01)

    clock.now += 59
    await pool.tick()
    assert _state(pool, "a1") is AgentState.RESERVED
    clock.now += 1
    await pool.tick()

    assert _state(pool, "a1") is AgentState.AVAILABLE
    assert recorder.events[-1].reason == "reservation_expired"
    assert "reservation expired without release" in capsys.readouterr().out


async def test_live_call_does_not_expire():
    pool, clock, _ = _pool("a1", settings=AcdSettings(reservation_ttl_s=60))
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    await pool.reserve("c1", "dibao", timeout_s=0.01)
    await pool.device_state_changed("ep-a1", DeviceState.IN_USE)

    clock.now += 3600
    await pool.tick()

    assert _state(pool, "a1") is AgentState.ON_CALL


async def test_login_enters_paused():
    pool, _, recorder = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    await pool.set_logged_in("a1", False)
    waiter = asyncio.create_task(pool.reserve("c1", "dibao", timeout_s=1))
    await asyncio.sleep(0.002)

    await pool.set_logged_in("a1", True)
    await asyncio.sleep(0.002)

    assert not waiter.done()
    assert _state(pool, "a1") is AgentState.PAUSED
    assert [(e.previous, e.state) for e in recorder.events][-1] == ("logged_out", "paused")
    await pool.set_paused("a1", False)
    assert (await waiter).agent_id == "a1"


async def test_ready_login_one_transition():
    pool, _, recorder = _pool("a1")
    await pool.set_logged_in("a1", False)
    await pool.set_logged_in("a1", True, ready=True)

    assert [(e.previous, e.state) for e in recorder.events] == [("available", "logged_out"), ("logged_out", "available")]


async def test_direct_call_not_offered():
    pool, _, recorder = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.IN_USE)

    assert await pool.reserve("c1", "dibao", timeout_s=0.005) is None
    assert "话机状态为 in_use" in recorder.decisions[0].exclusions[0].reason


async def test_our_call_not_offered():
    pool, _, _ = _pool("a1")
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.005)
    await pool.connected(reservation)

    assert await pool.reserve("c2", "dibao", timeout_s=0.005) is None
    assert _state(pool, "a1") is AgentState.ON_CALL


async def test_pause_reason_must_be_in_table():
    pool, _, _ = _pool("a1")

    with pytest.raises(ValueError, match="暂停原因“lunch”不在原因表中"):
        await pool.set_paused("a1", True, reason="lunch")
    await pool.set_paused("a1", True, reason="meal")
    assert pool.snapshot()[0].pause_reason == "meal"


async def test_event_ring_is_bounded():
    pool, _, recorder = _pool("a1", settings=AcdSettings(event_ring_size=4))
    for _ in range(5):
        await pool.set_paused("a1", True, reason="break")
        await pool.set_paused("a1", False)

    assert len(pool.events()) == 4
    assert len(recorder.events) == 10


async def test_cancelled_reserve_frees_agent():
    pool, _, recorder = _pool("a1")
    task = asyncio.create_task(pool.reserve("c1", "dibao", timeout_s=1))
    await asyncio.sleep(0.001)
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert _state(pool, "a1") is AgentState.AVAILABLE
    assert recorder.events[-1].reason == "reservation_cancelled"


async def test_start_paused_waits_for_ready():
    pool = AgentPool([AgentProfile("a1", "a1", "ep-a1", frozenset({"dibao"}))], clock=FakeClock(), start_paused=True)
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert await pool.reserve("c1", "dibao", timeout_s=0.002) is None
    assert pool.snapshot()[0].pause_reason == "login"
    await pool.set_paused("a1", False)
    assert (await pool.reserve("c1", "dibao", timeout_s=0.002)).agent_id == "a1"
