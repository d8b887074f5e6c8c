"""Emergency overflow in the pool: the decision it records, the call it stops counting, the stored form."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

from acd.decisions import RoutingDecision, describe_decision
from acd.pool import (
    SIGN_LANGUAGE_NEED,
    UNLISTED_AGENTS,
    AgentPool,
    AgentProfile,
    DeviceState,
)
from storage.acd_store import AcdStore
from tests.fakes.acd import FakeClock, ListRecorder

DECIDED_AT = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


def _agent(agent_id: str, skills: set[str], capabilities: frozenset[str] = frozenset()) -> AgentProfile:
    return AgentProfile(agent_id, f"坐席{agent_id}", f"ep-{agent_id}", frozenset(skills), capabilities=capabilities)


async def _pool_with_no_fitting_agent(recorder: ListRecorder, clock: FakeClock) -> AgentPool:
    """Three agents with dibao: a1 lacks sign language, a2 is paused, a3 signs but has no video phone."""
    roster = [_agent("a1", {"dibao"}), _agent("a2", {"dibao", "sign_language"}, frozenset({"video"})),
              _agent("a3", {"dibao", "sign_language"})]
    pool = AgentPool(roster, clock=clock, wall_clock=lambda: DECIDED_AT, recorder=recorder)
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
    await pool.set_paused("a2", True, reason="meal")
    return pool


async def test_overflow_decision_and_waiting():
    recorder = ListRecorder()
    clock = FakeClock()
    pool = await _pool_with_no_fitting_agent(recorder, clock)
    needs = frozenset({SIGN_LANGUAGE_NEED, "紧急"})
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.01, priority=9, needs=needs, tier="county")
    assert reservation is None
    assert [call.call_id for call in pool.waiting_calls()] == ["c1"]

    clock.now += 30.0
    pool.overflowed("c1", target="trunk:city-trunk")

    decision = recorder.decisions[-1]
    assert decision.rule == "emergency_overflow"
    assert decision.overflow_target == "trunk:city-trunk"
    assert (decision.call_id, decision.skill, decision.needs, decision.priority) == (
        "c1", "dibao", tuple(sorted(needs)), 9)
    assert decision.chosen_agent is None
    assert decision.candidates == ()
    reasons = {e.agent_id: e.reason for e in decision.exclusions}
    assert reasons["a1"] == "来电需要手语，坐席不具备技能 sign_language"
    assert reasons["a2"] == "暂停（用餐）"
    assert reasons["a3"] == "来电需要手语，坐席话机不支持视频"
    # Waited 30 s at priority 9: the score carries the wait, the priority and the sign-language boost.
    assert decision.call_score == 9 * 100.0 + 30.0 + 30.0 + 1_000_000.0
    assert pool.waiting_calls() == []


async def test_overflow_uses_latest_priority():
    recorder = ListRecorder()
    clock = FakeClock()
    pool = await _pool_with_no_fitting_agent(recorder, clock)
    await pool.reserve("c1", "dibao", timeout_s=0.01, needs=frozenset({SIGN_LANGUAGE_NEED}))
    await pool.reserve("c1", "dibao", timeout_s=0.01, priority=9, needs=frozenset({SIGN_LANGUAGE_NEED}))
    await pool.reserve("c2", "dibao", timeout_s=0.01, needs=frozenset({SIGN_LANGUAGE_NEED}))

    pool.overflowed("c1", target="callback:city-330100")

    decision = recorder.decisions[-1]
    assert (decision.call_id, decision.priority, decision.overflow_target) == ("c1", 9, "callback:city-330100")
    assert [call.call_id for call in pool.waiting_calls()] == ["c2"]


async def test_overflow_of_unknown_call_records_nothing():
    recorder = ListRecorder()
    pool = await _pool_with_no_fitting_agent(recorder, FakeClock())
    before = len(recorder.decisions)

    pool.overflowed("never-seen", target="trunk:city-trunk")

    assert len(recorder.decisions) == before
    assert pool.waiting_calls() == []


async def test_overflow_in_large_pool_counts_unlisted_agents():
    roster = [_agent(f"a{i:03d}", {"dibao"}) for i in range(250)]
    recorder = ListRecorder()
    clock = FakeClock()
    pool = AgentPool(roster, clock=clock, wall_clock=lambda: DECIDED_AT, recorder=recorder)
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
    await pool.reserve("c1", "dibao", timeout_s=0.01, priority=9, needs=frozenset({SIGN_LANGUAGE_NEED}))

    pool.overflowed("c1", target="trunk:city-trunk")

    decision = recorder.decisions[-1]
    listed = [e for e in decision.exclusions if e.agent_id != UNLISTED_AGENTS]
    counted = [e.reason for e in decision.exclusions if e.agent_id == UNLISTED_AGENTS]
    assert len(listed) == 10
    assert all(e.reason == "来电需要手语，坐席不具备技能 sign_language" for e in listed)
    assert counted and counted[0].startswith("另有 240 名具备技能 dibao 的坐席未逐一列出")


async def test_overflow_decision_survives_the_store(tmp_path):
    recorder = ListRecorder()
    clock = FakeClock()
    pool = await _pool_with_no_fitting_agent(recorder, clock)
    await pool.reserve("c1", "dibao", timeout_s=0.01, priority=9, needs=frozenset({SIGN_LANGUAGE_NEED}))
    pool.overflowed("c1", target="trunk:city-trunk")
    decision = recorder.decisions[-1]

    path = tmp_path / "acd.db"
    async with await AcdStore.open(path) as store:
        await store.write([], recorder.decisions)
        stored = await store.decisions_for("c1")

    assert stored[-1] == decision
    assert stored[0].overflow_target is None
    lines = describe_decision(stored[-1])
    assert "  规则：紧急来电等待期间本级没有坐席可接，溢出至上级" in lines
    assert "  紧急来电溢出至上级：trunk:city-trunk" in lines


async def test_decision_rows_without_overflow_target_still_read(tmp_path):
    decision = RoutingDecision("c9", DECIDED_AT, "no_eligible_agent", "dibao", (), 0, 0.0, None, (), (), ())
    body = decision.to_dict()
    del body["overflow_target"]
    path = tmp_path / "acd.db"
    async with await AcdStore.open(path):
        pass
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO routing_decision (call_id, decided_at, rule, chosen_agent, body) VALUES (?, ?, ?, ?, ?)",
            ("c9", DECIDED_AT.isoformat(), "no_eligible_agent", None, json.dumps(body, ensure_ascii=False)))
    connection.close()

    async with await AcdStore.open(path) as store:
        stored = await store.decisions_for("c9")

    assert stored == [decision]
    assert not any("溢出" in line for line in describe_decision(stored[0]))
