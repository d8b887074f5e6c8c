"""Domain: a discrete-event simulation of one node's queue, driving the real ``AgentPool``.

Calls arrive per skill as Poisson processes, hold the agent for an exponential handle
time and, when a mean patience is given, hang up after an exponential patience if no
agent was reserved by then. Every routing step is the pool's own code: ``reserve``,
``connected``, ``release`` and wrap-up timers.

Calls of skill ``sign_language`` carry the need 手语, so the pool gives them only to agents
with a video phone, as on the node. No other need (dialect, slow speech) and no priority is
simulated, because a traffic file does not describe them.

Time is virtual. The simulation runs on its own asyncio event loop whose clock is a
number: when nothing is ready, the loop jumps to the next timer instead of sleeping, so
an eight-hour day takes seconds and ``asyncio.sleep`` and ``asyncio.wait`` timeouts
inside the pool follow the simulated clock. One seed gives one result.

Figures are counted over the calls that arrive after a warm-up (a tenth of the run by
default), and each such call is followed to its end:

- ASA: mean wait of answered calls, seconds from arrival to the reservation of an agent;
- wait probability: share of answered calls that waited at all;
- service level: calls answered within the target over all calls offered (abandoned calls
  count as missed);
- abandonment: abandoned calls over calls offered;
- occupancy: agent time spent on calls and wrap-up over the agents' time in the window.

Arrivals stop at the end of the run, but calls still queued then keep waiting until an
agent takes them or they hang up, and their whole wait counts. A skill whose load reaches
its agents (``overloaded_skills``) queues without bound, so its mean wait then grows with
the run length; ``SkillResult.waiting_at_end`` counts such calls.
"""

from __future__ import annotations

import asyncio
import csv
import math
import random
import re
import selectors
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from acd.pool import (
    SIGN_LANGUAGE_NEED,
    SIGN_LANGUAGE_SKILL,
    VIDEO_CAPABILITY,
    AcdSettings,
    AgentPool,
    AgentProfile,
    DeviceState,
    ReleaseOutcome,
)

# Wall-clock stamp of simulated time zero, used only on the pool's events and decisions.
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
# Share of the run spent filling the queue before calls are counted.
DEFAULT_WARMUP_FRACTION = 0.1
# Counted calls a skill needs before its shares are shown as usable. The standard error of
# a share p measured over n calls is sqrt(p(1 - p) / n), at most 0.5 / sqrt(n). At 400
# calls that is 2.5 percentage points, so a 95 % interval spans about +-5 points around
# a service level read against a target such as 80/15.
# NOTE: calls in one queue wait in runs, so the real error of waits and service level is
# larger than this bound for independent calls, most of all near full occupancy.
MIN_STABLE_CALLS = 400


def call_needs(skill: str) -> frozenset[str]:
    """Return the need tags a simulated call of ``skill`` carries.

    A sign-language call (skill ``sign_language``) carries the need 手语, so the pool gives it
    only to an agent with that skill and a video phone, as on the node. Other skills' calls
    carry no need: dialects, slow speech and priorities are not part of a traffic file.
    """
    return frozenset({SIGN_LANGUAGE_NEED}) if skill == SIGN_LANGUAGE_SKILL else frozenset()


def can_take(agent: AgentProfile, skill: str) -> bool:
    """Return True when ``agent`` may answer the simulated calls of ``skill`` (see ``call_needs``)."""
    if skill not in agent.skills:
        return False
    return skill != SIGN_LANGUAGE_SKILL or VIDEO_CAPABILITY in agent.capabilities


@dataclass(frozen=True, slots=True)
class SkillTraffic:
    """Offered traffic of one skill: arrivals per hour, mean handle time, mean patience."""

    skill: str
    calls_per_hour: float
    handle_s: float
    # None: callers never hang up while waiting (Erlang C's assumption).
    patience_s: float | None = None

    def __post_init__(self) -> None:
        if self.calls_per_hour < 0 or self.handle_s <= 0:
            raise ValueError(f"skill {self.skill}: calls_per_hour must be >= 0 and handle_s > 0")
        if self.patience_s is not None and self.patience_s <= 0:
            raise ValueError(f"skill {self.skill}: patience_s must be > 0 when given")

    @property
    def load(self) -> float:
        """Offered load in Erlangs."""
        return self.calls_per_hour * self.handle_s / 3600.0


@dataclass(frozen=True, slots=True)
class SkillResult:
    skill: str
    offered: int
    answered: int
    abandoned: int
    asa_s: float
    wait_probability: float
    service_level: float
    abandon_rate: float
    # Counted calls still queued when arrivals stopped; they were answered or hung up later.
    waiting_at_end: int = 0
    # Longest wait of an answered call, seconds (NaN when none was answered).
    max_wait_s: float = math.nan


@dataclass(frozen=True, slots=True)
class SimulationResult:
    agents: int
    simulated_s: float
    target_s: float
    occupancy: float
    # Load the counted calls actually brought, in Erlangs: their handle times over the window.
    offered_load: float
    skills: tuple[SkillResult, ...]
    total: SkillResult


class TrafficError(Exception):
    """A traffic file that cannot be used; the message is Chinese and names the row and the fix.

    ``problems`` lists each mistake on its own when the file was read and its rows checked.
    It is empty when the file could not be read at all, and the message then explains why.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServiceTarget:
    """A service-level target such as 80/15: ``share`` of calls answered within ``seconds``."""

    share: float
    seconds: float

    @classmethod
    def parse(cls, text: str) -> ServiceTarget:
        match = re.fullmatch(r"\s*(\d{1,2}(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)\s*", str(text))
        if match is None or not 0 < float(match.group(1)) < 100:
            raise TrafficError(f"服务水平目标“{text}”格式不对，请写成“百分比/秒数”，例如 80/15（80% 的来电在 15 秒内接起）")
        return cls(float(match.group(1)) / 100.0, float(match.group(2)))

    def label(self) -> str:
        return f"{self.share:.0%} 的来电在 {self.seconds:g} 秒内接起"


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """Contents of a traffic file: traffic per skill, and optionally a target and a wrap-up time."""

    skills: tuple[SkillTraffic, ...]
    target: ServiceTarget | None = None
    wrap_up_s: float = 0.0


_TRAFFIC_FIELDS = ("skill", "calls_per_hour", "handle_s", "patience_s")
# Each number of a traffic row: its Chinese name, its unit word, the smallest valid value,
# whether that value itself is valid, and whether the field may be left out.
_NUMBER_RULES = {
    "calls_per_hour": ("每小时来电数", "数", 0.0, True, False),
    "handle_s": ("平均处理时长", "秒数", 0.0, False, False),
    "patience_s": ("平均耐心时长", "秒数", 0.0, False, True),
}


def _range_text(name: str) -> str:
    _, unit, low, low_valid, optional = _NUMBER_RULES[name]
    text = f"请填{'不小于' if low_valid else '大于'} {low:g} 的{unit}"
    return text + ("，不模拟挂机放弃请留空" if optional else "")


def _number_problem(name: str, value: Any) -> tuple[float | None, str | None]:
    """Return the field's number (None when left out or invalid) and the problem with its value, if any."""
    label, _, low, low_valid, optional = _NUMBER_RULES[name]
    if value is None or str(value).strip() == "":
        return None, (None if optional else f"缺少{label} {name}，{_range_text(name)}")
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        return None, f"{label} {name} 的值“{value}”不是数字，{_range_text(name)}"
    if number < low or (number == low and not low_valid):
        kind = "负数" if number < 0 else " 0"
        return None, f"{label} {name} 是 {value}，不能为{kind}，{_range_text(name)}"
    return number, None


def _skill_traffic(where: str, row: Any) -> tuple[SkillTraffic | None, list[str]]:
    """Check one row of a traffic file; return its traffic (None when invalid) and every problem found."""
    if not isinstance(row, dict):
        return None, [f"{where}应为一个映射（skill、calls_per_hour、handle_s，可选 patience_s）"]
    problems: list[str] = []
    unknown = sorted(set(map(str, row)) - set(_TRAFFIC_FIELDS))
    if unknown:
        problems.append(f"{where}：有未知字段 {'、'.join(unknown)}，可用字段：{'、'.join(_TRAFFIC_FIELDS)}")
    skill = str(row.get("skill") or "").strip()
    if not skill:
        problems.append(f"{where}：缺少技能代码 skill，请填名单里的技能代码，例如 dibao")
    elif not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", skill):
        problems.append(f"{where}：技能“{skill}”格式不对，请用名单里的技能代码，例如 dibao")
    numbers: dict[str, float | None] = {}
    for name in _NUMBER_RULES:
        numbers[name], problem = _number_problem(name, row.get(name))
        if problem is not None:
            problems.append(f"{where}：{problem}")
    if problems:
        return None, problems
    calls, handle = numbers["calls_per_hour"], numbers["handle_s"]
    assert calls is not None and handle is not None
    return SkillTraffic(skill, calls, handle, numbers["patience_s"]), []


def _yaml_line(container: Any, key: Any) -> int | None:
    """Return the 1-based line of ``key`` in a round-trip YAML mapping or list, or None when unknown."""
    try:
        if isinstance(container, CommentedMap):
            return container.lc.key(key)[0] + 1
        if isinstance(container, CommentedSeq):
            return container.lc.item(key)[0] + 1
    except (KeyError, IndexError, TypeError):
        return None
    return None


def _yaml_rows(path: Path, text: str, problems: list[str]) -> tuple[list[tuple[str, Any]], ServiceTarget | None, float]:
    """Read a YAML traffic file's rows, target and wrap-up; add the file-level problems to ``problems``."""
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        raise TrafficError(f"话务量文件 {path} 不是有效的 YAML：{exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("skills"), list):
        raise TrafficError(f"话务量文件 {path} 应有 skills 列表，每项一个技能（skill、calls_per_hour、handle_s）")

    def where(key: str) -> str:
        line = _yaml_line(data, key)
        return f"第 {line} 行" if line else key

    target: ServiceTarget | None = None
    if data.get("service_level") is not None:
        try:
            target = ServiceTarget.parse(str(data["service_level"]))
        except TrafficError as exc:
            problems.append(f"{where('service_level')}：{exc}")
    wrap_up_s = 0.0
    raw_wrap_up = data.get("wrap_up_s")
    if raw_wrap_up is not None:
        try:
            wrap_up_s = float(raw_wrap_up)
        except (TypeError, ValueError):
            problems.append(f"{where('wrap_up_s')}：话后整理秒数 wrap_up_s 的值“{raw_wrap_up}”不是数字，请填不小于 0 的秒数")
        else:
            if not math.isfinite(wrap_up_s) or wrap_up_s < 0:
                problems.append(f"{where('wrap_up_s')}：话后整理秒数 wrap_up_s 是 {raw_wrap_up}，请填不小于 0 的秒数")
                wrap_up_s = 0.0
    extra = sorted(set(map(str, data)) - {"skills", "service_level", "wrap_up_s"})
    if extra:
        problems.append(f"有未知字段 {'、'.join(extra)}，可用字段：skills、service_level、wrap_up_s")

    skills = data["skills"]
    rows = []
    for number, row in enumerate(skills, start=1):
        line = _yaml_line(skills, number - 1)
        rows.append((f"第 {line} 行（skills 第 {number} 项）" if line else f"skills 第 {number} 项", row))
    return rows, target, wrap_up_s


def _csv_rows(text: str) -> list[tuple[str, Any]]:
    reader = csv.DictReader(text.splitlines())
    rows = []
    for row in reader:
        if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
            continue
        fields = {key: value for key, value in row.items() if key is not None}
        if None in row:
            fields["（多余的列）"] = row[None]
        rows.append((f"第 {reader.line_num} 行", fields))
    return rows


def load_traffic(path: str | Path) -> TrafficPlan:
    """Load a traffic file: YAML (``skills`` list plus optional ``service_level``, ``wrap_up_s``) or CSV.

    A CSV file has the header ``skill,calls_per_hour,handle_s,patience_s`` and one skill a row.
    Raises ``TrafficError`` whose ``problems`` list every mistake, each with its line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TrafficError(f"找不到话务量文件 {path}，请检查路径") from None

    problems: list[str] = []
    target: ServiceTarget | None = None
    wrap_up_s = 0.0
    if path.suffix.lower() == ".csv":
        rows = _csv_rows(text)
    else:
        rows, target, wrap_up_s = _yaml_rows(path, text, problems)
    if not rows and not problems:
        raise TrafficError(f"话务量文件 {path} 没有技能：每个技能写一行 skill、calls_per_hour、handle_s")

    skills: list[SkillTraffic] = []
    first_row: dict[str, str] = {}
    for where, row in rows:
        traffic, row_problems = _skill_traffic(where, row)
        problems.extend(row_problems)
        if traffic is None:
            continue
        if traffic.skill in first_row:
            problems.append(f"{where}：技能 {traffic.skill} 已写在{first_row[traffic.skill]}，每个技能只写一次，请合并成一行")
            continue
        first_row[traffic.skill] = where
        skills.append(traffic)

    if problems:
        message = f"话务量文件 {path} 有误：\n" + "\n".join(f"  - {problem}" for problem in problems)
        raise TrafficError(message, tuple(problems))
    return TrafficPlan(tuple(skills), target, wrap_up_s)


class _VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0


class _JumpingSelector(selectors.BaseSelector):
    """A selector that never blocks: a wait for ``timeout`` seconds moves the clock instead.

    The loop only asks to wait when no callback is ready, so jumping to the next timer is
    exactly what would happen in real time, minus the waiting.
    """

    def __init__(self, clock: _VirtualClock) -> None:
        self._clock = clock
        self._real = selectors.DefaultSelector()

    def register(self, fileobj, events, data=None):
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj):
        return self._real.unregister(fileobj)

    def modify(self, fileobj, events, data=None):
        return self._real.modify(fileobj, events, data)

    def select(self, timeout=None):
        if timeout is None:
            raise RuntimeError("simulation stalled: no call or timer is pending")
        if timeout > 0:
            self._clock.now += timeout
        return self._real.select(0)

    def close(self) -> None:
        self._real.close()

    def get_map(self):
        return self._real.get_map()


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: _VirtualClock) -> None:
        super().__init__(_JumpingSelector(clock))
        self._virtual = clock

    def time(self) -> float:
        return self._virtual.now


@dataclass(slots=True)
class _Tally:
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    waited: int = 0
    within_target: int = 0
    wait_sum: float = 0.0
    waiting_at_end: int = 0
    max_wait_s: float = 0.0

    def add(self, other: _Tally) -> None:
        self.offered += other.offered
        self.answered += other.answered
        self.abandoned += other.abandoned
        self.waited += other.waited
        self.within_target += other.within_target
        self.wait_sum += other.wait_sum
        self.waiting_at_end += other.waiting_at_end
        self.max_wait_s = max(self.max_wait_s, other.max_wait_s)

    def result(self, skill: str) -> SkillResult:
        return SkillResult(
            skill=skill, offered=self.offered, answered=self.answered, abandoned=self.abandoned,
            asa_s=self.wait_sum / self.answered if self.answered else math.nan,
            wait_probability=self.waited / self.answered if self.answered else math.nan,
            service_level=self.within_target / self.offered if self.offered else math.nan,
            abandon_rate=self.abandoned / self.offered if self.offered else math.nan,
            waiting_at_end=self.waiting_at_end,
            max_wait_s=self.max_wait_s if self.answered else math.nan,
        )


@dataclass(slots=True)
class _Run:
    pool: AgentPool
    rng: random.Random
    window: tuple[float, float]
    target_s: float
    wrap_up_s: float
    tallies: dict[str, _Tally] = field(default_factory=dict)
    busy_s: float = 0.0
    offered_s: float = 0.0

    def busy(self, start: float, end: float) -> None:
        low, high = self.window
        self.busy_s += max(0.0, min(end, high) - max(start, low))


async def _call(run: _Run, call_id: str, traffic: SkillTraffic, horizon_s: float) -> None:
    loop = asyncio.get_running_loop()
    arrived = loop.time()
    counted = run.window[0] <= arrived < run.window[1]
    tally = run.tallies[traffic.skill]
    handle_s = run.rng.expovariate(1.0 / traffic.handle_s)
    if counted:
        tally.offered += 1
        run.offered_s += handle_s

    patience = run.rng.expovariate(1.0 / traffic.patience_s) if traffic.patience_s else 10.0 * horizon_s
    reservation = await run.pool.reserve(call_id, traffic.skill, timeout_s=patience, needs=call_needs(traffic.skill))
    if counted and loop.time() > horizon_s:
        tally.waiting_at_end += 1
    if reservation is None:
        run.pool.call_ended(call_id)
        if counted:
            tally.abandoned += 1
        return

    wait = loop.time() - arrived
    if counted:
        tally.answered += 1
        tally.wait_sum += wait
        tally.max_wait_s = max(tally.max_wait_s, wait)
        tally.waited += wait > 0
        tally.within_target += wait <= run.target_s
    # The agent answers at once. The phone's own state is not simulated: the pool's view
    # (reserved, connected, released) decides, and the reservation timeout is set past the run.
    await run.pool.connected(reservation)
    started = loop.time()
    await asyncio.sleep(handle_s)
    ended = loop.time()
    run.busy(started, ended + run.wrap_up_s)
    await run.pool.release(reservation, reason="hangup", outcome=ReleaseOutcome.ANSWERED)
    run.pool.call_ended(call_id)


async def _arrivals(run: _Run, traffic: SkillTraffic, horizon_s: float, calls: set[asyncio.Task[None]]) -> None:
    if traffic.calls_per_hour == 0:
        return
    loop = asyncio.get_running_loop()
    rate = traffic.calls_per_hour / 3600.0
    number = 0
    while True:
        await asyncio.sleep(run.rng.expovariate(rate))
        if loop.time() >= horizon_s:
            return
        number += 1
        task = asyncio.create_task(_call(run, f"{traffic.skill}-{number}", traffic, horizon_s))
        calls.add(task)
        task.add_done_callback(calls.discard)


async def _simulate(roster: Sequence[AgentProfile], traffic: Sequence[SkillTraffic], hours: float,
                    target_s: float, seed: int, warmup_fraction: float, wrap_up_s: float) -> SimulationResult:
    loop = asyncio.get_running_loop()
    horizon = hours * 3600.0
    pool = AgentPool(
        roster, clock=loop.time, wall_clock=lambda: _EPOCH + timedelta(seconds=loop.time()),
        settings=AcdSettings(wrap_up_s=wrap_up_s, no_answer_pause_reason=None, reservation_ttl_s=10.0 * horizon),
    )
    for agent in roster:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)

    run = _Run(pool, random.Random(seed), (horizon * warmup_fraction, horizon), target_s, wrap_up_s,
               {t.skill: _Tally() for t in traffic})
    calls: set[asyncio.Task[None]] = set()
    await asyncio.gather(*(_arrivals(run, t, horizon, calls) for t in traffic))
    while calls:
        await asyncio.gather(*list(calls))

    total = _Tally()
    for tally in run.tallies.values():
        total.add(tally)
    window = horizon * (1.0 - warmup_fraction)
    return SimulationResult(
        agents=len(roster), simulated_s=horizon, target_s=target_s,
        occupancy=run.busy_s / (len(roster) * window) if roster else math.nan, offered_load=run.offered_s / window,
        skills=tuple(run.tallies[t.skill].result(t.skill) for t in traffic), total=total.result("全部"),
    )


def simulate(roster: Sequence[AgentProfile], traffic: Sequence[SkillTraffic], *, hours: float, target_s: float,
             seed: int = 12349, warmup_fraction: float = DEFAULT_WARMUP_FRACTION,
             wrap_up_s: float = 0.0) -> SimulationResult:
    """Run the pool against Poisson traffic for ``hours`` of simulated time and return the figures.

    Must be called outside a running event loop; it runs its own virtual-time loop.
    """
    if hours <= 0 or not 0 <= warmup_fraction < 1:
        raise ValueError("hours must be > 0 and warmup_fraction in [0, 1)")
    loop = _VirtualLoop(_VirtualClock())
    try:
        return loop.run_until_complete(
            _simulate(roster, traffic, hours, target_s, seed, warmup_fraction, wrap_up_s))
    finally:
        loop.close()


def sparse_skills(results: Sequence[SimulationResult], traffic: Sequence[SkillTraffic],
                  min_calls: int = MIN_STABLE_CALLS) -> dict[str, int]:
    """Return the skills with traffic whose fewest counted calls over ``results`` is below ``min_calls``.

    The value is that fewest count, so a caller can show how thin the sample was.
    """
    sparse: dict[str, int] = {}
    for item in traffic:
        if item.calls_per_hour == 0:
            continue
        counts = [row.offered for result in results for row in result.skills if row.skill == item.skill]
        fewest = min(counts, default=0)
        if fewest < min_calls:
            sparse[item.skill] = fewest
    return sparse


def hours_for_calls(traffic: Sequence[SkillTraffic], skills: Sequence[str], min_calls: int = MIN_STABLE_CALLS,
                    warmup_fraction: float = DEFAULT_WARMUP_FRACTION) -> int:
    """Return the whole hours after which each of ``skills`` expects ``min_calls`` counted calls.

    The expectation uses each skill's nominal rate and leaves out the warm-up share of the run.
    """
    rates = [item.calls_per_hour for item in traffic if item.skill in skills and item.calls_per_hour > 0]
    if not rates:
        return 0
    return math.ceil(min_calls / (min(rates) * (1.0 - warmup_fraction)))


@dataclass(frozen=True, slots=True)
class Overload:
    """A skill whose offered load, wrap-up included, reaches the agents who can take its calls."""

    skill: str
    # Erlangs: calls per hour times (handle time plus wrap-up) over 3600 s.
    load: float
    agents: int


def overloaded_skills(roster: Sequence[AgentProfile], traffic: Sequence[SkillTraffic],
                      wrap_up_s: float = 0.0) -> tuple[Overload, ...]:
    """Return the skills whose load is at least the number of roster agents who can take their calls.

    Such a queue has no steady state when callers never hang up: it grows for as long as
    calls arrive. Skills no agent can take are left out, since every call of theirs goes unanswered.
    """
    found: list[Overload] = []
    for item in traffic:
        agents = sum(1 for agent in roster if can_take(agent, item.skill))
        load = item.calls_per_hour * (item.handle_s + wrap_up_s) / 3600.0
        if agents > 0 and load > 0 and load >= agents:
            found.append(Overload(item.skill, load, agents))
    return tuple(found)
