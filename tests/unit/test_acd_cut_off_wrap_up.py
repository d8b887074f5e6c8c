"""Wrap-up after a conversation that was cut off, and none after a caller who left while it rang."""

from acd.pool import (
    AcdSettings,
    AgentPool,
    AgentProfile,
    AgentState,
    DeviceState,
    ReleaseOutcome,
)
from tests.fakes.acd import FakeClock


async def _reserved(clock: FakeClock):
    pool = AgentPool([AgentProfile("a1", "坐席一", "a1", frozenset({"general"}))], clock=clock,
                     settings=AcdSettings(wrap_up_s=10))
    await pool.device_state_changed("a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "general", timeout_s=0)
    assert reservation is not None
    return pool, reservation


async def test_call_cut_off_while_connected_gets_wrap_up():
    clock = FakeClock()
    pool, reservation = await _reserved(clock)
    await pool.device_state_changed("a1", DeviceState.IN_USE)

    await pool.release(reservation, reason="dial_returned", outcome=ReleaseOutcome.ABANDONED)

    assert pool.agent_state("a1") is AgentState.WRAP_UP
    clock.now += 10
    await pool.tick()
    assert pool.agent_state("a1") is AgentState.AVAILABLE


async def test_caller_gone_while_ringing_frees_agent_at_once():
    clock = FakeClock()
    pool, reservation = await _reserved(clock)
    await pool.device_state_changed("a1", DeviceState.RINGING)

    await pool.release(reservation, reason="dial_returned", outcome=ReleaseOutcome.ABANDONED)

    assert pool.agent_state("a1") is AgentState.AVAILABLE
