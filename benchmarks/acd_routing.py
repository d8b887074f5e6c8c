"""Benchmark: ACD routing decision time at 500, 5,000 and 50,000 agents with 10,000 waiting calls.

Run from the repository root::

    .venv/bin/python benchmarks/acd_routing.py --sizes 500,5000,50000 --decisions 2000

The roster is synthetic: 30 skills (``s00``-``s29``) at proficiency 1-5, 3 % of agents with
sign language and a video phone, 10 % speaking a dialect, 20 % trained for elderly callers.
Half of the agents work the 15 busy skills and half the 15 quiet ones. 10,000 calls wait
in the busy skills with mixed priorities (a few emergencies) and needs (sign language,
dialects, slow speech). Two directions are timed with ``time.perf_counter_ns``, each
decision on its own, including building and recording the ``RoutingDecision``. The
thread's CPU time (``time.thread_time_ns``) is taken around the same calls: on a shared
machine it leaves out the time the process waited for a core, which wall time includes.

- agent free: a paused busy-skill agent becomes ready and the pool gives it the best
  waiting call (``AgentPool.set_paused(..., False)``). The agent is then released as
  unanswered, which pauses it again, and a new call joins the queue, so it stays at 10,000.
- new call: a call in a quiet skill arrives while 20 % of the quiet-skill agents are free
  and takes the best of them (``AgentPool.reserve``); the agent is released at once.

The baseline, timed in the same run on the same data, is a naive linear scan: every
waiting call (agent free) or every agent (new call) checked with the same rules. It
builds no decision record, while the pool's time includes one. Every decision of the
pool, in both directions, is checked against the scan's choice.
Results print p50, p99 and max per size, the growth per tenfold agents and the ratio to
the baseline, with the machine, versions and date.

By default the set-up ends with ``gc.collect(); gc.freeze()``, as a county node does once
it has built its pool (``hotline/nodes.py``), so full garbage collections do not walk the
roster and the queue. ``--no-freeze`` measures without it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import platform
import random
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from acd.decisions import AgentEvent, RoutingDecision
from acd.pool import (
    DIALECT_NEED_PREFIX,
    ELDERLY_CARE_TRAINING,
    SIGN_LANGUAGE_NEED,
    SIGN_LANGUAGE_SKILL,
    SLOW_SPEECH_NEED,
    VIDEO_CAPABILITY,
    AcdSettings,
    AgentPool,
    AgentProfile,
    DeviceState,
    ReleaseOutcome,
    Reservation,
)
from hotline.logging import configure_logging

SKILLS = [f"s{i:02d}" for i in range(30)]
BUSY, QUIET = SKILLS[:15], SKILLS[15:]
DIALECTS = ("温州话", "闽南语", "粤语")
SETTINGS = AcdSettings(wrap_up_s=0.0)


class _Recorder:
    """Keeps the last decision, as a store's writer queue would hold it."""

    def __init__(self) -> None:
        self.decisions = 0
        self.last: RoutingDecision | None = None

    def agent_event(self, event: AgentEvent) -> None:
        pass

    def decision(self, decision: RoutingDecision) -> None:
        self.decisions += 1
        self.last = decision


def make_roster(size: int, rng: random.Random) -> list[AgentProfile]:
    agents = []
    for index in range(size):
        group = BUSY if index % 2 == 0 else QUIET
        skills = {skill: rng.randint(1, 5) for skill in rng.sample(group, rng.randint(1, 4))}
        capabilities: set[str] = set()
        if rng.random() < 0.03:
            skills[SIGN_LANGUAGE_SKILL] = rng.randint(2, 5)
            capabilities.add(VIDEO_CAPABILITY)
        languages = {"普通话"} | ({rng.choice(DIALECTS)} if rng.random() < 0.10 else set())
        agents.append(AgentProfile(
            agent_id=f"a{index:05d}", name=f"坐席{index}", endpoint=f"ep{index:05d}",
            skills=frozenset(skills), proficiency=tuple(sorted(skills.items())),
            tier=rng.choice(("county", "city")), languages=frozenset(languages),
            capabilities=frozenset(capabilities),
            training=frozenset({ELDERLY_CARE_TRAINING}) if rng.random() < 0.2 else frozenset(),
        ))
    return agents


def make_call(rng: random.Random, skills: list[str]) -> dict[str, Any]:
    needs: set[str] = set()
    if rng.random() < 0.02:
        needs.add(SIGN_LANGUAGE_NEED)
    if rng.random() < 0.05:
        needs.add(DIALECT_NEED_PREFIX + rng.choice(DIALECTS))
    if rng.random() < 0.10:
        needs.add(SLOW_SPEECH_NEED)
    roll = rng.random()
    if roll < 0.005:
        priority = 9
    elif roll < 0.05:
        priority = 3
    elif roll < 0.2:
        priority = 1
    else:
        priority = 0
    return {"skill": rng.choice(skills), "needs": frozenset(needs), "priority": priority,
            "tier": rng.choice(("county", "city", None))}


# --- naive baseline ------------------------------------------------------------------------


def _eligible(agent: AgentProfile, call: dict[str, Any]) -> bool:
    if call["skill"] not in agent.skills:
        return False
    if SIGN_LANGUAGE_NEED in call["needs"] and (
            SIGN_LANGUAGE_SKILL not in agent.skills or VIDEO_CAPABILITY not in agent.capabilities):
        return False
    return all(need.removeprefix(DIALECT_NEED_PREFIX) in agent.languages
               for need in call["needs"] if need.startswith(DIALECT_NEED_PREFIX))


def _call_score(call: dict[str, Any], now: float) -> float:
    s = SETTINGS
    score = call["priority"] * s.priority_weight + (now - call["arrived"]) * s.wait_slope_per_s
    score += sum(s.need_boosts.get(need, 0.0) for need in call["needs"])
    return score + (s.emergency_boost if call["priority"] >= s.emergency_priority else 0.0)


def _agent_score(agent: AgentProfile, call: dict[str, Any]) -> float:
    s = SETTINGS
    score = agent.level(call["skill"]) * s.proficiency_weight
    if SLOW_SPEECH_NEED in call["needs"] and ELDERLY_CARE_TRAINING in agent.training:
        score += s.elderly_care_bonus
    if call["tier"] is not None and agent.tier == call["tier"]:
        score += s.same_tier_bonus
    return score


def naive_best_call(agent: AgentProfile, calls: list[dict[str, Any]], now: float) -> dict[str, Any] | None:
    best, best_key = None, None
    for call in calls:
        if _eligible(agent, call):
            key = (_call_score(call, now), -call["sequence"])
            if best_key is None or key > best_key:
                best, best_key = call, key
    return best


def naive_best_agent(agents: list[AgentProfile], free: list[bool], idle: list[float],
                     call: dict[str, Any]) -> AgentProfile | None:
    best, best_key = None, None
    for index, agent in enumerate(agents):
        if free[index] and _eligible(agent, call):
            key = (_agent_score(agent, call), -idle[index])
            if best_key is None or key > best_key:
                best, best_key = agent, key
    return best


# --- measurement ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    label: str
    samples_ns: list[int]

    def quantile(self, q: float) -> float:
        ordered = sorted(self.samples_ns)
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1e6

    @property
    def max_ms(self) -> float:
        return max(self.samples_ns) / 1e6


def _run_to_end(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Step a coroutine once; return (finished, result). An unfinished one is closed."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    coro.close()
    return False, None


async def bench_size(size: int, waiting: int, decisions: int, seed: int, freeze: bool = True) -> dict[str, Timings]:
    rng = random.Random(seed)
    clock_now = [1000.0]
    recorder = _Recorder()
    roster = make_roster(size, rng)
    pool = AgentPool(roster, clock=lambda: clock_now[0], settings=SETTINGS, recorder=recorder, start_paused=True)
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)

    busy_agents = [a for a in roster if a.skills & set(BUSY)]
    quiet_agents = [a for a in roster if not a.skills & set(BUSY)]
    quiet_free = rng.sample(quiet_agents, max(1, len(quiet_agents) // 5))
    for agent in quiet_free:
        await pool.set_paused(agent.agent_id, False)

    sequence = 0
    calls: list[dict[str, Any]] = []
    tasks: set[asyncio.Task[Reservation | None]] = set()

    def add_waiting_call() -> None:
        nonlocal sequence
        call = make_call(rng, BUSY) | {"arrived": clock_now[0], "sequence": sequence, "call_id": f"w{sequence}"}
        sequence += 1
        calls.append(call)
        task = asyncio.create_task(pool.reserve(
            call["call_id"], call["skill"], timeout_s=1e9, priority=call["priority"], needs=call["needs"],
            tier=call["tier"], waiting_since=call["arrived"]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    for _ in range(waiting):
        clock_now[0] += 0.01
        add_waiting_call()
    await asyncio.sleep(0)

    by_id = {c["call_id"]: c for c in calls}
    # The roster and queue, which live for the whole run, leave the collector's generations,
    # so full collections do not walk them between decisions (a county node does the same).
    if freeze:
        gc.collect()
        gc.freeze()
    agent_free, naive_free, agent_free_cpu = [], [], []
    for _ in range(decisions):
        clock_now[0] += 0.01
        agent = rng.choice(busy_agents)

        started = time.perf_counter_ns()
        expected = naive_best_call(agent, calls, clock_now[0])
        naive_free.append(time.perf_counter_ns() - started)

        before = recorder.decisions
        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        await pool.set_paused(agent.agent_id, False)
        elapsed = time.perf_counter_ns() - started
        cpu_elapsed = time.thread_time_ns() - cpu_started
        decision = recorder.last if recorder.decisions > before else None
        if decision is None:
            # No waiting call fits this agent (a rare skill mix); put it back and draw again.
            await pool.set_paused(agent.agent_id, True, reason="break")
            continue
        agent_free.append(elapsed)
        agent_free_cpu.append(cpu_elapsed)
        if expected is None or decision.call_id != expected["call_id"]:
            raise SystemExit(f"pool and naive scan disagree for {agent.agent_id}: "
                             f"{decision.call_id} vs {expected and expected['call_id']}")

        calls.remove(by_id.pop(decision.call_id))
        await asyncio.sleep(0)
        reservation = Reservation(agent.agent_id, agent.endpoint, decision.call_id, decision.skill)
        await pool.release(reservation, reason="bench", outcome=ReleaseOutcome.NO_ANSWER)
        add_waiting_call()
        by_id[calls[-1]["call_id"]] = calls[-1]
        await asyncio.sleep(0)

    free_flags = [False] * len(roster)
    idle = [0.0] * len(roster)
    index_of = {a.agent_id: i for i, a in enumerate(roster)}
    for agent in quiet_free:
        free_flags[index_of[agent.agent_id]] = True
    new_call, naive_new, new_call_cpu = [], [], []
    for number in range(decisions):
        clock_now[0] += 0.01
        call = make_call(rng, QUIET) | {"arrived": clock_now[0], "sequence": sequence}
        sequence += 1

        started = time.perf_counter_ns()
        expected_agent = naive_best_agent(roster, free_flags, idle, call)
        naive_new.append(time.perf_counter_ns() - started)

        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        finished, reservation = _run_to_end(pool.reserve(
            f"n{number}", call["skill"], timeout_s=1e9, priority=call["priority"], needs=call["needs"],
            tier=call["tier"]))
        new_call.append(time.perf_counter_ns() - started)
        new_call_cpu.append(time.thread_time_ns() - cpu_started)
        chosen = reservation.agent_id if finished and reservation is not None else None
        if chosen != (expected_agent.agent_id if expected_agent is not None else None):
            raise SystemExit(f"pool and naive scan disagree for call n{number}: "
                             f"{chosen} vs {expected_agent and expected_agent.agent_id}")
        if finished and reservation is not None:
            await pool.release(reservation, reason="bench", outcome=ReleaseOutcome.ABANDONED)
            idle[index_of[reservation.agent_id]] = clock_now[0]

    gc.unfreeze()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "agent_free": Timings("坐席空闲→选来电", agent_free), "agent_free_naive": Timings("naive", naive_free),
        "new_call": Timings("新来电→选坐席", new_call), "new_call_naive": Timings("naive", naive_new),
        "agent_free_cpu": Timings("cpu", agent_free_cpu), "new_call_cpu": Timings("cpu", new_call_cpu),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000,50000")
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=12349)
    parser.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="gc.collect() and gc.freeze() after the set-up, as a county node does (default: on)")
    args = parser.parse_args()
    configure_logging("WARNING")

    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}; "
          f"Python {platform.python_version()}; waiting calls {args.waiting}; decisions per size {args.decisions}; "
          f"gc.freeze {'on' if args.freeze else 'off'}")
    results = {}
    for size in sizes:
        built = time.perf_counter()
        results[size] = asyncio.run(bench_size(size, args.waiting, args.decisions, args.seed, args.freeze))
        print(f"\nagents {size} (set-up and run {time.perf_counter() - built:.1f} s)")
        for direction in ("agent_free", "new_call"):
            pool_t, naive_t = results[size][direction], results[size][direction + "_naive"]
            print(f"  {direction:10s} pool  p50 {pool_t.quantile(0.5):.3f} ms  p99 {pool_t.quantile(0.99):.3f} ms  "
                  f"max {pool_t.max_ms:.3f} ms  (n={len(pool_t.samples_ns)})")
            cpu_t = results[size][direction + "_cpu"]
            print(f"  {direction:10s} cpu   p50 {cpu_t.quantile(0.5):.3f} ms  p99 {cpu_t.quantile(0.99):.3f} ms  "
                  f"max {cpu_t.max_ms:.3f} ms")
            print(f"  {direction:10s} naive p50 {naive_t.quantile(0.5):.3f} ms  p99 {naive_t.quantile(0.99):.3f} ms  "
                  f"max {naive_t.max_ms:.3f} ms  naive/pool p50 {naive_t.quantile(0.5) / pool_t.quantile(0.5):.1f}x")

    for previous, size in zip(sizes, sizes[1:]):
        for direction in ("agent_free", "new_call"):
            growth = results[size][direction].quantile(0.99) / results[previous][direction].quantile(0.99)
            cpu_growth = (results[size][direction + "_cpu"].quantile(0.99)
                          / results[previous][direction + "_cpu"].quantile(0.99))
            print(f"p99 growth {previous} -> {size} agents, {direction}: {growth:.2f}x (cpu {cpu_growth:.2f}x)")


if __name__ == "__main__":
    main()
