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

All pools are built first. The decisions then run in rounds: each round runs, per
direction, one batch of ``--batch`` timed decisions per size, after ``--warm-up``
decisions that are checked but not timed. The order of the sizes rotates and the order
of the directions flips from round to round. A slow period on a shared machine thus falls
on every size alike, and the growth between two sizes compares batches that ran in the
same minutes. The first decision of a batch, which follows another pool's batch and so
starts with cold caches, is printed apart as "first".

The baseline, timed in the same run on the same data, is a naive linear scan: every
waiting call (agent free) or every agent (new call) checked with the same rules. It
builds no decision record, while the pool's time includes one. Every decision of the
pool, in both directions, is checked against the scan's choice. The scan keeps its own
copy of the state and replays a batch's decisions in order after the batch. A scan
between two timed decisions would push the pool's data out of the caches, the more so
the larger the roster. ``--check-each`` runs the scan after every decision instead.

Results print p50, p99 and max per size and direction, the ratio to the baseline, and the
growth of p50 and p99 per step in roster size. Each growth comes with a 95 % interval
from a percentile bootstrap over the rounds (``--bootstrap`` resamples, each drawing the
same rounds for both sizes) and the range of the per-round ratios of batch medians.

By default the set-up ends with ``gc.collect(); gc.freeze()``, as a county node does once
it has built its pool (``hotline/nodes.py``), so full garbage collections do not walk the
rosters and the queues. ``--no-freeze`` measures without it.

Options: ``--sizes`` (comma-separated roster sizes), ``--waiting`` (waiting calls per
pool), ``--decisions`` (timed decisions per size and direction, default 2,000),
``--batch`` (timed decisions per size and direction in one round, default 50),
``--warm-up`` (untimed decisions at the start of each batch, default 5), ``--bootstrap``
(resamples, default 1,000), ``--seed``, ``--no-freeze`` and ``--check-each``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import math
import platform
import random
import statistics
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

DIRECTIONS = ("agent_free", "new_call")


def quantile(ordered: list[int], q: float) -> float:
    """Return the q-quantile (nearest rank) of sorted nanosecond samples, in milliseconds."""
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] / 1e6


@dataclass(frozen=True)
class Timings:
    """Nanosecond samples of one size and direction, one list per round."""

    rounds: list[list[int]]

    @property
    def samples_ns(self) -> list[int]:
        return sorted(sample for batch in self.rounds for sample in batch)

    def quantile(self, q: float) -> float:
        return quantile(self.samples_ns, q)

    @property
    def max_ms(self) -> float:
        return max(max(batch) for batch in self.rounds) / 1e6


def _run_to_end(coro: Coroutine[Any, Any, Any]) -> tuple[bool, Any]:
    """Step a coroutine once; return (finished, result). An unfinished one is closed."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return True, stop.value
    coro.close()
    return False, None


@dataclass(frozen=True)
class _AgentFreeDecision:
    """One timed agent-free decision, kept until the naive scan has checked it."""

    agent: AgentProfile
    now: float
    chosen_call_id: str | None
    # The waiting call added after the decision, so the queue stays at its size.
    replacement: dict[str, Any] | None


@dataclass(frozen=True)
class _NewCallDecision:
    """One timed new-call decision, kept until the naive scan has checked it."""

    call: dict[str, Any]
    now: float
    chosen_agent_id: str | None


class SizeBench:
    """One pool with its roster and waiting calls, and the naive scan's copy of the same state.

    The scan's copy (``calls``, ``free_flags``, ``idle``) trails the pool. Each decision is
    kept in ``pending`` until ``check()`` replays them in order, so every decision is
    checked against the scan without the scan running between two timed decisions.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = size
        self.rng = random.Random(seed)
        self.clock_now = [1000.0]
        self.recorder = _Recorder()
        self.roster = make_roster(size, self.rng)
        self.pool = AgentPool(self.roster, clock=lambda: self.clock_now[0], settings=SETTINGS,
                              recorder=self.recorder, start_paused=True)
        self.busy_agents = [a for a in self.roster if a.skills & set(BUSY)]
        quiet_agents = [a for a in self.roster if not a.skills & set(BUSY)]
        self.quiet_free = self.rng.sample(quiet_agents, max(1, len(quiet_agents) // 5))
        self.sequence = 0
        self.calls: list[dict[str, Any]] = []
        self.by_id: dict[str, dict[str, Any]] = {}
        self.tasks: set[asyncio.Task[Reservation | None]] = set()
        self.index_of = {a.agent_id: i for i, a in enumerate(self.roster)}
        self.free_flags = [False] * size
        self.idle = [0.0] * size
        for agent in self.quiet_free:
            self.free_flags[self.index_of[agent.agent_id]] = True
        self.new_calls = 0
        self.pending: list[_AgentFreeDecision | _NewCallDecision] = []
        self.wall = {direction: Timings([]) for direction in DIRECTIONS}
        self.cpu = {direction: Timings([]) for direction in DIRECTIONS}
        self.naive: dict[str, list[int]] = {direction: [] for direction in DIRECTIONS}
        self.first: dict[str, list[int]] = {direction: [] for direction in DIRECTIONS}

    async def set_up(self, waiting: int) -> None:
        """Bring every agent's phone up, free 20 % of the quiet-skill agents and queue the waiting calls."""
        for agent in self.roster:
            await self.pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
        for agent in self.quiet_free:
            await self.pool.set_paused(agent.agent_id, False)

        for _ in range(waiting):
            self.clock_now[0] += 0.01
            call = self._add_waiting_call()
            self.calls.append(call)
            self.by_id[call["call_id"]] = call
        await asyncio.sleep(0)

    def _add_waiting_call(self) -> dict[str, Any]:
        """Queue a busy-skill call in the pool and return the scan's record of it."""
        call = make_call(self.rng, BUSY) | {
            "arrived": self.clock_now[0], "sequence": self.sequence, "call_id": f"w{self.sequence}"}
        self.sequence += 1
        task = asyncio.create_task(self.pool.reserve(
            call["call_id"], call["skill"], timeout_s=1e9, priority=call["priority"], needs=call["needs"],
            tier=call["tier"], waiting_since=call["arrived"]))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return call

    async def run_batch(self, direction: str, count: int, warm_up: int, check_each: bool) -> None:
        """Run ``warm_up`` decisions in one direction, then time ``count`` more as this round's batch.

        Every decision is checked against the naive scan. The first decision's time is kept
        apart in ``first``, because it runs after another pool's batch has taken the caches.
        """
        step = self._agent_free if direction == "agent_free" else self._new_call
        wall: list[int] = []
        cpu: list[int] = []
        done = 0
        while done < warm_up + count:
            timed = await step()
            if check_each:
                self.check()
            if timed is None:
                continue

            if done == 0:
                self.first[direction].append(timed[0])
            if done >= warm_up:
                wall.append(timed[0])
                cpu.append(timed[1])
            done += 1
        self.wall[direction].rounds.append(wall)
        self.cpu[direction].rounds.append(cpu)
        self.check()

    async def _agent_free(self) -> tuple[int, int] | None:
        """Time one agent-free decision: a paused busy-skill agent becomes ready and takes the best waiting call.

        Returns (wall ns, CPU ns), or None when no waiting call fits the agent (a rare skill
        mix). Such an agent is paused again, and the scan must agree that nothing fits.
        """
        pool, recorder = self.pool, self.recorder
        self.clock_now[0] += 0.01
        agent = self.rng.choice(self.busy_agents)

        before = recorder.decisions
        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        await pool.set_paused(agent.agent_id, False)
        elapsed = time.perf_counter_ns() - started
        cpu_elapsed = time.thread_time_ns() - cpu_started
        decision = recorder.last if recorder.decisions > before else None
        if decision is None:
            await pool.set_paused(agent.agent_id, True, reason="break")
            self.pending.append(_AgentFreeDecision(agent, self.clock_now[0], None, None))
            return None

        await asyncio.sleep(0)
        reservation = Reservation(agent.agent_id, agent.endpoint, decision.call_id, decision.skill)
        await pool.release(reservation, reason="bench", outcome=ReleaseOutcome.NO_ANSWER)
        replacement = self._add_waiting_call()
        self.pending.append(_AgentFreeDecision(agent, self.clock_now[0], decision.call_id, replacement))
        await asyncio.sleep(0)
        return elapsed, cpu_elapsed

    async def _new_call(self) -> tuple[int, int]:
        """Time one new-call decision: a quiet-skill call takes the best free agent, who is released at once."""
        self.clock_now[0] += 0.01
        call = make_call(self.rng, QUIET) | {"arrived": self.clock_now[0], "sequence": self.sequence,
                                            "call_id": f"n{self.new_calls}"}
        self.sequence += 1
        self.new_calls += 1

        cpu_started = time.thread_time_ns()
        started = time.perf_counter_ns()
        finished, reservation = _run_to_end(self.pool.reserve(
            call["call_id"], call["skill"], timeout_s=1e9, priority=call["priority"], needs=call["needs"],
            tier=call["tier"]))
        elapsed = time.perf_counter_ns() - started
        cpu_elapsed = time.thread_time_ns() - cpu_started

        chosen = reservation.agent_id if finished and reservation is not None else None
        if finished and reservation is not None:
            await self.pool.release(reservation, reason="bench", outcome=ReleaseOutcome.ABANDONED)
        self.pending.append(_NewCallDecision(call, self.clock_now[0], chosen))
        return elapsed, cpu_elapsed

    def check(self) -> None:
        """Replay the pending decisions in order against the naive scan and exit on the first disagreement."""
        for pending in self.pending:
            if isinstance(pending, _AgentFreeDecision):
                started = time.perf_counter_ns()
                expected = naive_best_call(pending.agent, self.calls, pending.now)
                self.naive["agent_free"].append(time.perf_counter_ns() - started)
                expected_id = expected["call_id"] if expected is not None else None
                if pending.chosen_call_id != expected_id:
                    raise SystemExit(f"pool and naive scan disagree at {self.size} agents for "
                                     f"{pending.agent.agent_id}: {pending.chosen_call_id} vs {expected_id}")
                if pending.chosen_call_id is not None and pending.replacement is not None:
                    self.calls.remove(self.by_id.pop(pending.chosen_call_id))
                    self.calls.append(pending.replacement)
                    self.by_id[pending.replacement["call_id"]] = pending.replacement
            else:
                started = time.perf_counter_ns()
                expected_agent = naive_best_agent(self.roster, self.free_flags, self.idle, pending.call)
                self.naive["new_call"].append(time.perf_counter_ns() - started)
                expected_id = expected_agent.agent_id if expected_agent is not None else None
                if pending.chosen_agent_id != expected_id:
                    raise SystemExit(f"pool and naive scan disagree at {self.size} agents for call "
                                     f"{pending.call['call_id']}: {pending.chosen_agent_id} vs {expected_id}")
                if pending.chosen_agent_id is not None:
                    self.idle[self.index_of[pending.chosen_agent_id]] = pending.now
        self.pending.clear()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def run_interleaved(sizes: list[int], waiting: int, decisions: int, batch: int, warm_up: int, seed: int,
                          freeze: bool, check_each: bool) -> tuple[list[SizeBench], float]:
    """Build every pool, then time the decisions in rounds. Returns the pools and the set-up seconds.

    Each round runs one batch per size and direction. The order of the sizes rotates and
    the order of the directions flips from round to round, so a slow period on the shared
    machine falls on every size alike instead of on one size's whole run.
    """
    built = time.perf_counter()
    benches = []
    for size in sizes:
        bench = SizeBench(size, seed)
        await bench.set_up(waiting)
        benches.append(bench)
    set_up_s = time.perf_counter() - built

    # The rosters and queues, which live for the whole run, leave the collector's generations,
    # so full collections do not walk them between decisions (a county node does the same).
    if freeze:
        gc.collect()
        gc.freeze()
    try:
        for number in range(math.ceil(decisions / batch)):
            count = min(batch, decisions - number * batch)
            shift = number % len(benches)
            order = benches[shift:] + benches[:shift]
            directions = DIRECTIONS if number % 2 == 0 else DIRECTIONS[::-1]
            for direction in directions:
                for bench in order:
                    await bench.run_batch(direction, count, warm_up, check_each)
    finally:
        gc.unfreeze()
        for bench in benches:
            await bench.close()
    return benches, set_up_s


# --- growth and its confidence interval ------------------------------------------------------


@dataclass(frozen=True)
class Growth:
    """Ratio of a quantile at the larger size to the smaller, with a 95 % bootstrap interval."""

    ratio: float
    low: float
    high: float


def paired_growth(smaller: Timings, larger: Timings, q: float, resamples: int, rng: random.Random) -> Growth:
    """Return the q-quantile growth and a percentile bootstrap interval over rounds.

    Each resample draws rounds with replacement and takes the same rounds from both sizes,
    because the two batches of one round ran in the same minutes.
    """
    ratio = larger.quantile(q) / smaller.quantile(q)
    count = len(smaller.rounds)
    ratios = []
    for _ in range(resamples):
        picks = [rng.randrange(count) for _ in range(count)]
        small = sorted(sample for pick in picks for sample in smaller.rounds[pick])
        large = sorted(sample for pick in picks for sample in larger.rounds[pick])
        ratios.append(quantile(large, q) / quantile(small, q))
    ratios.sort()
    return Growth(ratio, ratios[int(0.025 * resamples)], ratios[max(0, math.ceil(0.975 * resamples) - 1)])


def round_median_ratios(smaller: Timings, larger: Timings) -> list[float]:
    """Return, per round, the larger size's batch median over the smaller size's, sorted."""
    return sorted(statistics.median(large) / statistics.median(small)
                  for small, large in zip(smaller.rounds, larger.rounds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,5000,50000",
                        help="roster sizes, comma-separated (default: %(default)s)")
    parser.add_argument("--waiting", type=int, default=10_000, help="waiting calls per pool (default: %(default)s)")
    parser.add_argument("--decisions", type=int, default=2000,
                        help="timed decisions per size and direction (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=50,
                        help="timed decisions per size and direction in one round (default: %(default)s)")
    parser.add_argument("--warm-up", type=int, default=5,
                        help="decisions checked but not timed at the start of each batch (default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=1000,
                        help="bootstrap resamples for the growth intervals (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=12349,
                        help="seed of the synthetic rosters and calls (default: %(default)s)")
    parser.add_argument("--freeze", action=argparse.BooleanOptionalAction, default=True,
                        help="gc.collect() and gc.freeze() after the set-up, as a county node does (default: on)")
    parser.add_argument("--check-each", action="store_true",
                        help="run the naive scan after every decision instead of after every batch")
    args = parser.parse_args()
    if args.decisions < 1 or args.batch < 1 or args.bootstrap < 1 or args.warm_up < 0:
        parser.error("--decisions, --batch and --bootstrap must be at least 1 and --warm-up at least 0")
    configure_logging("WARNING")

    sizes = [int(size) for size in args.sizes.split(",")]
    print(f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {platform.processor() or platform.machine()}; "
          f"Python {platform.python_version()}; waiting calls {args.waiting}; decisions per size and direction "
          f"{args.decisions} in rounds of {args.batch} after {args.warm_up} untimed; "
          f"gc.freeze {'on' if args.freeze else 'off'}; "
          f"naive scan after every {'decision' if args.check_each else 'batch'}")
    started = time.perf_counter()
    benches, set_up_s = asyncio.run(run_interleaved(
        sizes, args.waiting, args.decisions, args.batch, args.warm_up, args.seed, args.freeze, args.check_each))
    print(f"set-up {set_up_s:.1f} s, rounds {time.perf_counter() - started - set_up_s:.1f} s; "
          f"every decision matched the naive scan")

    for bench in benches:
        print(f"\nagents {bench.size}")
        for direction in DIRECTIONS:
            wall, cpu = bench.wall[direction], bench.cpu[direction]
            naive = sorted(bench.naive[direction])
            print(f"  {direction:10s} pool  p50 {wall.quantile(0.5):.3f} ms  p99 {wall.quantile(0.99):.3f} ms  "
                  f"max {wall.max_ms:.3f} ms  (n={len(wall.samples_ns)})")
            print(f"  {direction:10s} cpu   p50 {cpu.quantile(0.5):.3f} ms  p99 {cpu.quantile(0.99):.3f} ms  "
                  f"max {cpu.max_ms:.3f} ms")
            first = sorted(bench.first[direction])
            print(f"  {direction:10s} first p50 {quantile(first, 0.5):.3f} ms  max {first[-1] / 1e6:.3f} ms  "
                  f"(first decision of each batch, after another pool's batch)")
            print(f"  {direction:10s} naive p50 {quantile(naive, 0.5):.3f} ms  p99 {quantile(naive, 0.99):.3f} ms  "
                  f"max {naive[-1] / 1e6:.3f} ms  naive/pool p50 {quantile(naive, 0.5) / wall.quantile(0.5):.1f}x")

    rng = random.Random(args.seed)
    rounds = len(benches[0].wall[DIRECTIONS[0]].rounds)
    print(f"\ngrowth per step in agents, 95 % bootstrap interval over {rounds} paired rounds "
          f"({args.bootstrap} resamples)")
    for smaller, larger in itertools.pairwise(benches):
        for direction in DIRECTIONS:
            p50 = paired_growth(smaller.wall[direction], larger.wall[direction], 0.5, args.bootstrap, rng)
            p99 = paired_growth(smaller.wall[direction], larger.wall[direction], 0.99, args.bootstrap, rng)
            cpu99 = larger.cpu[direction].quantile(0.99) / smaller.cpu[direction].quantile(0.99)
            per_round = round_median_ratios(smaller.wall[direction], larger.wall[direction])
            print(f"  {smaller.size} -> {larger.size} {direction:10s} p50 {p50.ratio:.2f}x [{p50.low:.2f}, "
                  f"{p50.high:.2f}]  p99 {p99.ratio:.2f}x [{p99.low:.2f}, {p99.high:.2f}]  cpu p99 {cpu99:.2f}x  "
                  f"round medians {statistics.median(per_round):.2f}x ({per_round[0]:.2f}-{per_round[-1]:.2f})")


if __name__ == "__main__":
    main()
