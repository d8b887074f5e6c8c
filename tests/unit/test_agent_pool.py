"""Agent pool: an agent is offered only when idle by our tracking and by the switch."""

import asyncio

from acd.pool import AgentPool, AgentProfile, AgentState, DeviceState


def _profile(agent_id: str, *skills: str) -> AgentProfile:
    return AgentProfile(agent_id, agent_id, f"ep-{agent_id}", frozenset(skills))


async def test_reserve_needs_idle_device():
    pool = AgentPool([_profile("a1", "dibao")])

    assert await pool.reserve("c1", "dibao", timeout_s=0.05) is None

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.05)

    assert reservation is not None
    assert reservation.endpoint == "ep-a1"


async def test_reserved_agent_not_offered_twice():
    pool = AgentPool([_profile("a1", "dibao")])
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    first = await pool.reserve("c1", "dibao", timeout_s=0.05)
    second = await pool.reserve("c2", "dibao", timeout_s=0.05)

    assert first is not None
    assert second is None
    assert pool.snapshot()[0].state is AgentState.RESERVED


async def test_device_in_use_blocks_offer():
    """An agent busy on a call we did not place is not offered another one."""
    pool = AgentPool([_profile("a1", "dibao", "linshi")])
    await pool.device_state_changed("ep-a1", DeviceState.IN_USE)

    assert await pool.reserve("c1", "linshi", timeout_s=0.05) is None


async def test_waiting_call_gets_agent_when_freed():
    pool = AgentPool([_profile("a1", "dibao")])
    await pool.device_state_changed("ep-a1", DeviceState.IN_USE)

    waiter = asyncio.create_task(pool.reserve("c1", "dibao", timeout_s=2))
    await asyncio.sleep(0.01)
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    reservation = await waiter
    assert reservation is not None
    assert reservation.call_id == "c1"


async def test_earlier_call_served_first():
    pool = AgentPool([_profile("a1", "dibao")])
    first = asyncio.create_task(pool.reserve("c1", "dibao", timeout_s=2))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(pool.reserve("c2", "dibao", timeout_s=0.3))
    await asyncio.sleep(0.01)

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await first).call_id == "c1"
    assert await second is None


async def test_other_skill_not_blocked_by_earlier_waiter():
    pool = AgentPool([_profile("a1", "dibao"), _profile("a2", "linshi")])
    await pool.device_state_changed("ep-a2", DeviceState.NOT_IN_USE)
    blocked = asyncio.create_task(pool.reserve("c1", "dibao", timeout_s=0.5))
    await asyncio.sleep(0.01)

    reservation = await pool.reserve("c2", "linshi", timeout_s=0.1)

    assert reservation is not None
    assert reservation.agent_id == "a2"
    assert await blocked is None


async def test_longest_idle_agent_chosen():
    now = [100.0]
    pool = AgentPool([_profile("a1", "dibao"), _profile("a2", "dibao")], clock=lambda: now[0])
    await pool.device_state_changed("ep-a2", DeviceState.NOT_IN_USE)
    now[0] = 200.0
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    reservation = await pool.reserve("c1", "dibao", timeout_s=0.05)

    assert reservation.agent_id == "a2"


async def test_release_makes_agent_available_again():
    pool = AgentPool([_profile("a1", "dibao")])
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.05)

    await pool.release(reservation, reason="test")

    assert pool.snapshot()[0].state is AgentState.AVAILABLE
    assert await pool.reserve("c2", "dibao", timeout_s=0.05) is not None


async def test_unregistered_agent_not_offered():
    pool = AgentPool([_profile("a1", "dibao")])
    await pool.device_state_changed("ep-a1", DeviceState.UNAVAILABLE)

    assert await pool.reserve("c1", "dibao", timeout_s=0.05) is None
