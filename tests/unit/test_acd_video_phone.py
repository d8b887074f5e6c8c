"""The switch's codec list decides whether an agent listed with a video phone takes sign-language calls."""

import asyncio

from acd.pool import AgentPool, AgentProfile, DeviceState
from tests.fakes.acd import ListRecorder


def _agents() -> list[AgentProfile]:
    return [
        AgentProfile("v1", "坐席一", "v1", frozenset({"sign_language"}), capabilities=frozenset({"video"})),
        AgentProfile("plain", "坐席二", "plain", frozenset({"sign_language"})),
    ]


async def _pool(recorder: ListRecorder | None = None) -> AgentPool:
    pool = AgentPool(_agents(), recorder=recorder)
    for agent in ("v1", "plain"):
        await pool.device_state_changed(agent, DeviceState.NOT_IN_USE)
    return pool


async def test_blocked_video_phone_keeps_sign_language_call_waiting():
    recorder = ListRecorder()
    pool = await _pool(recorder)

    assert pool.set_video_phone("v1", False) is True
    reservation = await pool.reserve("c1", "sign_language", timeout_s=0, needs=frozenset({"手语"}))

    assert reservation is None
    reasons = {e.agent_id: e.reason for e in recorder.decisions[-1].exclusions}
    assert "交换机" in reasons["v1"]
    assert "不支持视频" in reasons["plain"]


async def test_video_allowed_again_takes_the_waiting_call():
    pool = await _pool()
    pool.set_video_phone("v1", False)
    waiting = asyncio.ensure_future(
        pool.reserve("c1", "sign_language", timeout_s=5, needs=frozenset({"手语"})))
    await asyncio.sleep(0)

    assert pool.set_video_phone("v1", True) is True
    reservation = await waiting

    assert reservation is not None
    assert reservation.agent_id == "v1"


async def test_agent_without_video_capability_is_not_changed():
    pool = await _pool()

    assert pool.set_video_phone("plain", True) is False
    assert pool.set_video_phone("v1", True) is False


async def test_blocked_video_phone_still_takes_other_calls():
    pool = await _pool()
    pool.set_video_phone("v1", False)

    reservation = await pool.reserve("c2", "sign_language", timeout_s=0, exclude={"plain"})

    assert reservation is not None
    assert reservation.agent_id == "v1"
