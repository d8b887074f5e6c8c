"""Routing: hard and soft constraints, waiting-call score order, emergencies, ties, explanations."""

import asyncio
from datetime import UTC, datetime

from acd.decisions import describe_decision
from acd.pool import AcdSettings, AgentPool, AgentProfile, DeviceState
from tests.fakes.acd import FakeClock, ListRecorder


def _agent(agent_id, skills=("dibao",), **extra):
    levels = tuple((s.split(":")[0], int(s.split(":")[1])) for s in skills if ":" in s)
    names = frozenset(s.split(":")[0] for s in skills)
    return AgentProfile(agent_id, agent_id, f"ep-{agent_id}", names, levels, **extra)


async def _pool(*agents, settings=None, busy=()):
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(agents, clock=clock, wall_clock=lambda: datetime(2026, 12, 4, 2, 0, tzinfo=UTC),
                     settings=settings or AcdSettings(), recorder=recorder)
    for agent in agents:
        state = DeviceState.IN_USE if agent.agent_id in busy else DeviceState.NOT_IN_USE
        await pool.device_state_changed(agent.endpoint, state)
    return pool, clock, recorder


async def test_sign_language_needs_skill_and_video():
    pool, _, recorder = await _pool(
        _agent("a1", ("dibao", "sign_language")),
        _agent("a2", ("dibao",), capabilities=frozenset({"video"})),
        _agent("a3", ("dibao", "sign_language"), capabilities=frozenset({"video"})),
    )

    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01, needs=frozenset({"手语"}))

    assert reservation.agent_id == "a3"
    reasons = {e.agent_id: e.reason for e in recorder.decisions[-1].exclusions}
    assert reasons == {"a1": "来电需要手语，坐席话机不支持视频", "a2": "来电需要手语，坐席不具备技能 sign_language"}


async def test_dialect_need_is_hard():
    pool, _, recorder = await _pool(_agent("a1", ("dibao:5",), languages=frozenset({"普通话"})))

    assert await pool.reserve("c1", "dibao", timeout_s=0.005, needs=frozenset({"方言:温州话"})) is None
    assert recorder.decisions[0].exclusions[0].reason == "来电需要方言“温州话”，坐席不会"


async def test_higher_proficiency_preferred():
    pool, _, _ = await _pool(_agent("a1", ("dibao:2",)), _agent("a2", ("dibao:4",)))

    assert (await pool.reserve("c1", "dibao", timeout_s=0.01)).agent_id == "a2"


async def test_elderly_care_training_preferred_for_slow_speech():
    pool, _, recorder = await _pool(
        _agent("a1", ("dibao:4",)), _agent("a2", ("dibao:3",), training=frozenset({"elderly_care"})),
    )

    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01, needs=frozenset({"需语速放缓"}))

    assert reservation.agent_id == "a2"
    assert "受过老年人服务培训" in recorder.decisions[-1].candidates[0].reasons


async def test_tie_broken_by_longest_idle():
    pool, clock, recorder = await _pool(_agent("a1"), _agent("a2"), busy=("a1",))
    clock.now += 30
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01)

    assert reservation.agent_id == "a2"
    assert recorder.decisions[-1].rule == "tie_longest_idle"


async def test_preferred_agent_wait_expires():
    pool, clock, recorder = await _pool(_agent("a1"), _agent("a2"), settings=AcdSettings(preferred_wait_s=20),
                                        busy=("a1",))

    waiter = asyncio.create_task(pool.reserve("c1", "dibao", timeout_s=1, preferred_agent="a1"))
    await asyncio.sleep(0.002)
    assert not waiter.done()
    assert "来电正在等上次接待的坐席 a1" in {e.agent_id: e.reason for e in recorder.decisions[0].exclusions}["a2"]

    clock.now += 20
    await pool.tick()
    assert (await waiter).agent_id == "a2"


async def test_preferred_agent_taken_when_free():
    pool, _, recorder = await _pool(_agent("a1", ("dibao:1",)), _agent("a2", ("dibao:5",)))

    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01, preferred_agent="a1")

    assert reservation.agent_id == "a1"
    assert recorder.decisions[-1].rule == "preferred_agent"


async def _queue(pool, call_id, **kwargs):
    task = asyncio.create_task(pool.reserve(call_id, "dibao", timeout_s=1, **kwargs))
    await asyncio.sleep(0.001)
    return task


async def test_priority_beats_longer_wait():
    pool, clock, _ = await _pool(_agent("a1"), busy=("a1",))
    early = await _queue(pool, "c1")
    clock.now += 50
    urgent = await _queue(pool, "c2", priority=1)

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await urgent).call_id == "c2"
    early.cancel()


async def test_priority_change_reaches_waiting_call():
    pool, clock, recorder = await _pool(_agent("a1"), busy=("a1",))
    first = await _queue(pool, "c1")
    clock.now += 10
    second = await _queue(pool, "c2")

    assert pool.set_priority("c2", 1)
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await second).agent_id == "a1"
    assert not first.done()
    assert [w.call_id for w in recorder.decisions[-1].waiting] == ["c2", "c1"]
    first.cancel()


async def test_need_boost_orders_equal_calls():
    pool, _, _ = await _pool(_agent("a1"), busy=("a1",))
    plain = await _queue(pool, "c1")
    hearing = await _queue(pool, "c2", needs=frozenset({"听力障碍"}))

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await hearing).call_id == "c2"
    plain.cancel()


async def test_emergency_jumps_the_order():
    pool, clock, recorder = await _pool(_agent("a1"), busy=("a1",))
    long_waiting = await _queue(pool, "c1", priority=2)
    clock.now += 3600
    emergency = await _queue(pool, "c2", priority=9)

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await emergency).call_id == "c2"
    assert recorder.decisions[-1].rule == "emergency_first"
    long_waiting.cancel()


async def test_ineligible_top_call_does_not_block():
    pool, clock, _ = await _pool(_agent("a1", ("dibao", "linshi")), busy=("a1",))
    sign = await _queue(pool, "c1", needs=frozenset({"手语"}))
    clock.now += 5
    plain = await _queue(pool, "c2")

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await plain).agent_id == "a1"
    assert not sign.done()
    sign.cancel()


async def test_explain_output_lists_everything():
    pool, _, recorder = await _pool(_agent("a1", ("dibao:4",)), _agent("a2", ("linshi",)), _agent("a3"),
                                    busy=("a3",))

    await pool.reserve("c1", "dibao", timeout_s=0.01, needs=frozenset({"需重复确认"}))
    text = "\n".join(describe_decision(recorder.decisions[-1]))

    assert "来电 c1" in text
    assert "需求 需重复确认" in text
    assert "结果：a1" in text
    assert "a1  分数 40" in text
    assert "熟练度 4" in text
    assert "a2：不具备技能 dibao" in text
    assert "a3：话机状态为 in_use" in text
    assert "2026-12-04 10:00:00" in text


async def test_repeated_reserve_keeps_wait():
    pool, clock, recorder = await _pool(_agent("a1"), busy=("a1",))
    assert await pool.reserve("c1", "dibao", timeout_s=0.001) is None
    clock.now += 100
    newcomer = await _queue(pool, "c2")
    again = await _queue(pool, "c1")

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await again).call_id == "c1"
    assert [d.rule for d in recorder.decisions if d.call_id == "c1"] == ["no_eligible_agent", "best_agent"]
    assert recorder.decisions[-1].waiting[0].score == 100
    newcomer.cancel()


async def test_lower_call_takes_unusable_agent():
    pool, clock, recorder = await _pool(_agent("a1", ("linshi",)), busy=("a1",))
    top = await _queue(pool, "c1", priority=3)
    plain = asyncio.create_task(pool.reserve("c2", "linshi", timeout_s=1))
    await asyncio.sleep(0.001)

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    assert (await plain).agent_id == "a1"
    assert recorder.decisions[-1].rule == "higher_calls_ineligible"
    top.cancel()
