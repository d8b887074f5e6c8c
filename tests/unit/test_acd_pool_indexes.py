"""Routing indexes: the indexed pool routes like a full scan, and large pools record shortened decisions."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

from acd.pool import (
    DIALECT_NEED_PREFIX,
    SIGN_LANGUAGE_NEED,
    SLOW_SPEECH_NEED,
    UNLISTED_AGENTS,
    AcdSettings,
    AgentPool,
    AgentProfile,
    DeviceState,
    ReleaseOutcome,
    Reservation,
)
from tests.fakes.acd import FakeClock, ListRecorder

SKILLS = ("dibao", "linshi", "yanglao", "ertong")
NEEDS = (SIGN_LANGUAGE_NEED, DIALECT_NEED_PREFIX + "温州话", SLOW_SPEECH_NEED, "听力障碍")


def _roster(size: int, rng: random.Random) -> list[AgentProfile]:
    agents = []
    for index in range(size):
        skills = {skill: rng.randint(1, 5) for skill in rng.sample(SKILLS, rng.randint(1, 3))}
        if rng.random() < 0.1:
            skills["sign_language"] = 3
        agents.append(AgentProfile(
            f"a{index:03d}", f"坐席{index}", f"ep{index:03d}", frozenset(skills), tuple(sorted(skills.items())),
            tier=rng.choice(("county", "city")),
            languages=frozenset({"温州话"}) if rng.random() < 0.2 else frozenset(),
            capabilities=frozenset({"video"}) if rng.random() < 0.5 else frozenset(),
            training=frozenset({"elderly_care"}) if rng.random() < 0.3 else frozenset(),
        ))
    return agents


async def _drive(pool: AgentPool, clock: FakeClock, roster: list[AgentProfile], seed: int) -> None:
    """Apply the same random sequence of arrivals, releases, pauses and device changes."""
    rng = random.Random(seed)
    tasks: list[asyncio.Task[Reservation | None]] = []
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
    for step in range(400):
        clock.now += rng.choice((0.0, 0.5, 3.0, 20.0))
        roll = rng.random()
        if roll < 0.45:
            needs = frozenset(rng.sample(NEEDS, rng.choice((0, 0, 0, 1, 2))))
            preferred = rng.choice(roster).agent_id if rng.random() < 0.1 else None
            exclude = {rng.choice(roster).agent_id} if rng.random() < 0.1 else set()
            tasks.append(asyncio.create_task(pool.reserve(
                f"c{step}", rng.choice(SKILLS), timeout_s=1e6, exclude=exclude, priority=rng.choice((0, 0, 1, 3, 9)),
                needs=needs, tier=rng.choice(("county", "city", None)), preferred_agent=preferred)))
        elif roll < 0.75:
            done = [task for task in tasks if task.done() and task.result() is not None]
            if done:
                task = rng.choice(done)
                tasks.remove(task)
                outcome = rng.choice((ReleaseOutcome.ANSWERED, ReleaseOutcome.NO_ANSWER))
                await pool.release(task.result(), reason="test", outcome=outcome)
        elif roll < 0.85:
            await pool.set_paused(rng.choice(roster).agent_id, rng.random() < 0.3, reason="break")
        elif roll < 0.92:
            agent = rng.choice(roster)
            await pool.device_state_changed(agent.endpoint, rng.choice((DeviceState.IN_USE, DeviceState.NOT_IN_USE)))
        else:
            await pool.tick()
        await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def _run(roster, settings, seed):
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(roster, clock=clock, wall_clock=lambda: datetime(2026, 12, 4, 2, 0, tzinfo=UTC),
                     settings=settings, recorder=recorder)
    await _drive(pool, clock, roster, seed)
    return recorder


async def test_shortened_decisions_route_alike():
    roster = _roster(40, random.Random(7))
    full = await _run(roster, AcdSettings(wrap_up_s=10.0), seed=11)
    short = await _run(roster, AcdSettings(wrap_up_s=10.0, explain_all_limit=0, explain_list_size=3), seed=11)

    assigned = [d for d in full.decisions if d.chosen_agent is not None]
    assert len(assigned) > 50
    assert [(d.call_id, d.chosen_agent, d.rule) for d in full.decisions] == \
        [(d.call_id, d.chosen_agent, d.rule) for d in short.decisions]
    for whole, shortened in zip(full.decisions, short.decisions, strict=True):
        assert shortened.candidates == whole.candidates[:3]
        listed = [e for e in shortened.exclusions if e.agent_id != UNLISTED_AGENTS]
        assert set(listed) <= set(whole.exclusions)


async def test_freed_agent_takes_best_waiting_call():
    rng = random.Random(3)
    roster = _roster(300, rng)
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(roster, clock=clock, recorder=recorder, start_paused=True)
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
    settings = pool.settings
    calls = {}
    tasks = []
    for number in range(600):
        clock.now += 0.1
        call = {"skill": rng.choice(SKILLS), "priority": rng.choice((0, 0, 1, 3)),
                "needs": frozenset(rng.sample(NEEDS[1:], rng.choice((0, 1)))), "at": clock.now, "seq": number}
        calls[f"c{number}"] = call
        tasks.append(asyncio.create_task(pool.reserve(
            f"c{number}", call["skill"], timeout_s=1e6, priority=call["priority"], needs=call["needs"],
            waiting_since=call["at"])))
    await asyncio.sleep(0)

    def score(call):
        return (call["priority"] * settings.priority_weight + (clock.now - call["at"]) * settings.wait_slope_per_s
                + sum(settings.need_boosts.get(need, 0.0) for need in call["needs"]))

    def fits(agent, call):
        dialects = [n.removeprefix(DIALECT_NEED_PREFIX) for n in call["needs"] if n.startswith(DIALECT_NEED_PREFIX)]
        return call["skill"] in agent.skills and all(d in agent.languages for d in dialects)

    served = 0
    for agent in rng.sample(roster, 120):
        clock.now += 1.0
        fitting = [(score(c), -c["seq"], call_id) for call_id, c in calls.items() if fits(agent, c)]
        before = len(recorder.decisions)
        await pool.set_paused(agent.agent_id, False)
        made = [d for d in recorder.decisions[before:] if d.chosen_agent is not None]
        if not fitting:
            assert made == []
            continue
        expected = max(fitting)[2]
        assert [(d.call_id, d.chosen_agent) for d in made] == [(expected, agent.agent_id)]
        del calls[expected]
        served += 1
        await pool.release(Reservation(agent.agent_id, agent.endpoint, expected, made[0].skill),
                           reason="test", outcome=ReleaseOutcome.NO_ANSWER)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert served > 80


async def test_large_pool_shortened_decision():
    roster = [AgentProfile(f"a{i:03d}", f"坐席{i}", f"ep{i:03d}", frozenset({"dibao" if i % 2 else "linshi"}),
                           (("dibao" if i % 2 else "linshi", 1 + i % 5),)) for i in range(300)]
    recorder = ListRecorder()
    pool = AgentPool(roster, clock=FakeClock(), recorder=recorder)
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)

    reservation = await pool.reserve("c1", "dibao", timeout_s=1)

    decision = recorder.decisions[-1]
    assert reservation is not None
    assert decision.chosen_agent == reservation.agent_id
    assert len(decision.candidates) == 10
    assert {c.score for c in decision.candidates} == {50.0}
    assert decision.candidates[0].agent_id == "a009"
    counts = [e.reason for e in decision.exclusions if e.agent_id == UNLISTED_AGENTS]
    assert counts == [
        "另有 140 名具备技能 dibao 的坐席未逐一列出（坐席超过 200 名时，只列分数最高的 10 名合格坐席和前 10 名被排除的坐席）",
        "150 名坐席不具备技能 dibao，未逐一列出",
    ]


async def test_wrap_ups_end_in_roster_order():
    roster = [AgentProfile(f"a{i}", f"坐席{i}", f"ep{i}", frozenset({"dibao"})) for i in range(5)]
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(roster, clock=clock, recorder=recorder, settings=AcdSettings(wrap_up_s=15.0))
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
    reservations = [await pool.reserve(f"c{i}", "dibao", timeout_s=1) for i in range(5)]
    for reservation in reversed(reservations):
        await pool.release(reservation, reason="hangup", outcome=ReleaseOutcome.ANSWERED)

    clock.now += 15.0
    await pool.tick()

    ended = [e.agent_id for e in recorder.events if e.reason == "wrap_up_done"]
    assert ended == ["a0", "a1", "a2", "a3", "a4"]


async def _free_in_order(pool: AgentPool, clock: FakeClock, steps: list[tuple[float, str]]) -> None:
    for at, agent_id in steps:
        clock.now = at
        await pool.device_state_changed(f"ep{agent_id[1:]}", DeviceState.NOT_IN_USE)


async def test_free_agents_out_of_order():
    roster = [AgentProfile(f"a{i:03d}", f"坐席{i}", f"ep{i:03d}", frozenset({"dibao"}), (("dibao", 3),))
              for i in range(250)]

    # Equal idle times, freed in an order that is not the id order: a001 must still rank first.
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(roster, clock=clock, recorder=recorder)
    await _free_in_order(pool, clock, [(1000.0, f"a{i:03d}") for i in (*range(10, 21), 1)])
    reservation = await pool.reserve("c1", "dibao", timeout_s=1)
    assert reservation is not None and reservation.agent_id == "a001"
    assert [c.agent_id for c in recorder.decisions[-1].candidates] == ["a001", *(f"a{i:03d}" for i in range(10, 19))]

    # An injected clock stepped back: a200, freed last, has waited longer than a050 and a100.
    clock = FakeClock()
    recorder = ListRecorder()
    pool = AgentPool(roster, clock=clock, recorder=recorder)
    steps = [(1000.0, f"a{i:03d}") for i in range(9)] + [(1007.0, "a050"), (1010.0, "a100"), (1005.0, "a200")]
    await _free_in_order(pool, clock, steps)
    chosen = []
    for number in range(12):
        reservation = await pool.reserve(f"c{number}", "dibao", timeout_s=1)
        assert reservation is not None
        if number == 0:
            assert [c.agent_id for c in recorder.decisions[-1].candidates][-1] == "a200"
        chosen.append(reservation.agent_id)
    assert chosen == [*(f"a{i:03d}" for i in range(9)), "a200", "a050", "a100"]


async def test_tie_goes_to_smaller_agent_id():
    """Equal score and idle time: the smaller agent id wins, whatever the roster's order.

    explain_all_limit 1 puts the pool on its large-pool path, whose scan stops at the best candidates.
    """
    clock = FakeClock()
    ids = ["a30", "a07", "a19", "a11"]
    pool = AgentPool([AgentProfile(agent_id, agent_id, f"ep-{agent_id}", frozenset({"dibao"})) for agent_id in ids],
                     settings=AcdSettings(wrap_up_s=0, explain_all_limit=1, explain_list_size=2), clock=clock)
    for agent_id in ids:
        await pool.device_state_changed(f"ep-{agent_id}", DeviceState.NOT_IN_USE)

    chosen = []
    for number in range(len(ids)):
        reservation = await pool.reserve(f"c{number}", "dibao", timeout_s=1)
        assert reservation is not None
        chosen.append(reservation.agent_id)

    assert chosen == sorted(ids)
