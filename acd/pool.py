"""Domain: agents, their states and the choice of an agent for a waiting call.

An agent is offered a call only when three things agree. The agent is logged in, not
paused and not in wrap-up. The controller itself has no call reserved on, ringing or
connected to that agent. The switch reports the agent's device as idle. The switch's
device state alone is not enough, because it is device-wide: an agent on a direct call
looks busy to every skill group, and one who is being rung by us looks idle until the
ringing starts.

No state can stick. Wrap-up ends by itself after ``AcdSettings.wrap_up_s``. A
reservation that is never released expires after ``AcdSettings.reservation_ttl_s`` (logged
as a warning). Logging in enters the pool paused, so no call rings an agent who has not
signalled "ready".

Routing is one greedy pass run on every change: waiting calls are ordered by a score
(priority, time waited, need boost) computed at that moment, and each call in that
order takes the best eligible free agent. Every assignment, every call that finds no
eligible agent on arrival and every emergency call that overflows to the tier above
(``overflowed``) leaves a ``RoutingDecision`` naming the candidates, the excluded agents
with their reasons, the scores and the rule that fired.

Routing works on in-memory indexes, so the work of one decision does not grow with the
roster or the queue. The indexes are the free agents per skill, one dict per proficiency
level in idle order (an agent becoming free is appended, one leaving is deleted by key),
the waiting calls per skill sorted by score, and heaps for the wrap-up, reservation and
arrival timers. Time waited adds the same amount to every call's score, so the order of
waiting calls only changes when a call arrives, leaves or gets a new priority. A pool
larger than ``AcdSettings.explain_all_limit`` agents records shortened decisions: the best
``explain_list_size`` candidates, up to that many excluded agents and the waiting board's
head, followed by exclusions with agent id ``*`` that count the agents not listed.
"""

from __future__ import annotations

import asyncio
import bisect
import enum
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

import structlog

from acd.decisions import (
    AgentEvent,
    CandidateScore,
    Exclusion,
    RoutingDecision,
    WaitingCallScore,
)

log = structlog.get_logger(__name__)

DEFAULT_PROFICIENCY = 3
SIGN_LANGUAGE_NEED = "手语"
SIGN_LANGUAGE_SKILL = "sign_language"
VIDEO_CAPABILITY = "video"
SLOW_SPEECH_NEED = "需语速放缓"
ELDERLY_CARE_TRAINING = "elderly_care"
# A need tag "方言:温州话" requires an agent who lists 温州话 among their languages.
DIALECT_NEED_PREFIX = "方言:"
# How long after its last ``reserve`` a call still counts as waiting. A flow calls
# ``reserve`` again after each wait announcement, so this must exceed the longest one.
# NOTE: a call whose flow gave up without ``call_ended`` stays listed this long.
WAITING_GAP_S = 60.0
# Agent id of the exclusions that count agents a shortened decision does not list.
UNLISTED_AGENTS = "*"
# A shortened decision looks for further excluded agents among the first (this factor times
# ``explain_list_size``) agents of the skill, so its cost does not grow with the roster.
EXCLUSION_SCAN_FACTOR = 4


class DeviceState(enum.Enum):
    """State of an agent's phone as the switch reports it."""

    UNKNOWN = "unknown"
    NOT_IN_USE = "not_in_use"
    IN_USE = "in_use"
    BUSY = "busy"
    RINGING = "ringing"
    ON_HOLD = "on_hold"
    UNAVAILABLE = "unavailable"  # not registered


_DEVICE_ON_CALL = frozenset({DeviceState.IN_USE, DeviceState.BUSY, DeviceState.ON_HOLD})


class AgentState(enum.Enum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"
    RINGING = "ringing"
    ON_CALL = "on_call"
    WRAP_UP = "wrap_up"
    PAUSED = "paused"


# Pause reason codes an operator or the pool may set, with the Chinese label shown to
# operators. The table is fixed; docs/zh-CN/acd.md lists it.
PAUSE_REASONS: Mapping[str, str] = {
    "login": "登录待就绪",
    "break": "小休",
    "meal": "用餐",
    "training": "培训",
    "meeting": "会议",
    "paperwork": "案头工作",
    "no_answer": "未接听",
    "supervisor": "班长暂停",
    "other": "其他",
}

STATE_LABELS: Mapping[AgentState, str] = {
    AgentState.LOGGED_OUT: "未登录",
    AgentState.AVAILABLE: "空闲",
    AgentState.RESERVED: "已预留",
    AgentState.RINGING: "振铃中",
    AgentState.ON_CALL: "通话中",
    AgentState.WRAP_UP: "话后整理",
    AgentState.PAUSED: "暂停",
}


class ReleaseOutcome(enum.Enum):
    """Dial result of a reserved call, passed to ``release`` when the flow has it."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    ABANDONED = "abandoned"  # the caller hung up or the dial failed before the agent answered


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """An agent as listed in the roster.

    ``proficiency`` contains (skill, level 1-5) pairs; a skill in ``skills`` without a pair
    has level ``DEFAULT_PROFICIENCY``.
    """

    agent_id: str
    name: str
    endpoint: str
    skills: frozenset[str]
    proficiency: tuple[tuple[str, int], ...] = ()
    tier: str | None = None
    region_code: str | None = None
    languages: frozenset[str] = frozenset()
    capabilities: frozenset[str] = frozenset()
    training: frozenset[str] = frozenset()

    def level(self, skill: str) -> int:
        """Return the proficiency 1-5 in ``skill``, or 0 when the agent lacks it."""
        if skill not in self.skills:
            return 0
        return dict(self.proficiency).get(skill, DEFAULT_PROFICIENCY)


@dataclass(frozen=True, slots=True)
class AcdSettings:
    """Timers and routing weights of one node's pool."""

    wrap_up_s: float = 15.0
    # Reason code for pausing an agent whose phone rang unanswered. None disables the pause.
    no_answer_pause_reason: str | None = "no_answer"
    reservation_ttl_s: float = 120.0
    # During this many seconds of waiting, a call with a preferred agent waits for that agent.
    preferred_wait_s: float = 30.0
    priority_weight: float = 100.0
    wait_slope_per_s: float = 1.0
    emergency_priority: int = 9
    emergency_boost: float = 1_000_000.0
    need_boosts: Mapping[str, float] = field(default_factory=lambda: {
        SIGN_LANGUAGE_NEED: 30.0, "听力障碍": 20.0, SLOW_SPEECH_NEED: 10.0, "需重复确认": 10.0,
    })
    proficiency_weight: float = 10.0
    elderly_care_bonus: float = 15.0
    preferred_agent_bonus: float = 100.0
    same_tier_bonus: float = 5.0
    event_ring_size: int = 1000
    # Pools with more agents than this record shortened decisions (see the module docstring).
    explain_all_limit: int = 200
    explain_list_size: int = 10
    # How long a call that stopped waiting is remembered, so a flow's next ``reserve`` for
    # it continues the same wait.
    arrival_memory_s: float = 600.0

    def __post_init__(self) -> None:
        if self.wrap_up_s < 0 or self.reservation_ttl_s <= 0 or self.preferred_wait_s < 0:
            raise ValueError("wrap_up_s and preferred_wait_s must be >= 0 and reservation_ttl_s > 0")
        if self.no_answer_pause_reason is not None and self.no_answer_pause_reason not in PAUSE_REASONS:
            raise ValueError(f"unknown pause reason {self.no_answer_pause_reason!r}")
        # The rule "tie_longest_idle" compares the best two candidates, so a list keeps two.
        if self.explain_all_limit < 0 or self.explain_list_size < 2:
            raise ValueError("explain_all_limit must be >= 0 and explain_list_size >= 2")


class AcdRecorder(Protocol):
    """Sink for the pool's events and decisions. Its methods must not block."""

    def agent_event(self, event: AgentEvent) -> None: ...

    def decision(self, decision: RoutingDecision) -> None: ...


@dataclass(slots=True)
class _AgentStatus:
    profile: AgentProfile
    logged_in: bool = True
    pause_reason: str | None = None
    device: DeviceState = DeviceState.UNKNOWN
    call_id: str | None = None
    ringing: bool = False
    connected: bool = False
    # Monotonic time of the last sign of life of the current reservation.
    progress_at: float = 0.0
    wrap_until: float | None = None
    idle_since: float = 0.0
    state: AgentState = AgentState.AVAILABLE
    order: int = 0
    # Position of the agent id among the roster's sorted ids. Heap keys negate it, so the
    # smaller id wins between equal scores and idle times without a string comparison.
    id_rank: int = 0
    # Sort key in the per-skill free-agent lists while the agent is free, else None.
    free_key: tuple[float, str] | None = None
    # Proficiency per skill (``AgentProfile.level``) and the free-agent lists the agent
    # joins besides the skill's own, both fixed by the roster.
    levels: dict[str, int] = field(default_factory=dict)
    narrow_tags: tuple[str, ...] = ()
    # True while the switch's endpoint of an agent listed with a video phone allows no
    # video codec (``set_video_phone``): such an agent takes no sign-language call.
    video_blocked: bool = False


class _FreeAgents:
    """Free agents of one skill, or of one skill narrowed by a tag, best proficiency first.

    Each proficiency level keeps its agents in a dict in (idle since, agent id) order. An
    agent who becomes free gets the pool's current time as idle time, so adding one
    appends to its level after one comparison with the level's last agent, and removing
    one deletes a dict key. Neither step depends on how many agents are free. An agent
    whose key sorts before the level's last one (equal idle times, a clock moved back)
    re-sorts that level.
    """

    __slots__ = ("_count", "_levels", "_order")

    def __init__(self) -> None:
        self._levels: dict[int, dict[str, _AgentStatus]] = {}
        # Levels present, highest first.
        self._order: list[int] = []
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, status: _AgentStatus, level: int) -> None:
        """Add a free agent whose ``status.free_key`` is already set."""
        agents = self._levels.get(level)
        if agents is None:
            agents = self._levels[level] = {}
            bisect.insort(self._order, -level)
        agent_id = status.profile.agent_id
        if agents:
            last = agents[next(reversed(agents))]
            if last.free_key is not None and status.free_key is not None and status.free_key < last.free_key:
                ordered = sorted([*agents.values(), status], key=lambda s: s.free_key or (0.0, ""))
                agents.clear()
                agents.update((s.profile.agent_id, s) for s in ordered)
                self._count += 1
                return
        agents[agent_id] = status
        self._count += 1

    def remove(self, status: _AgentStatus, level: int) -> None:
        del self._levels[level][status.profile.agent_id]
        self._count -= 1

    def by_level(self) -> list[tuple[int, dict[str, _AgentStatus]]]:
        """Return (level, agents in idle order) from the highest level down."""
        levels = self._levels
        return [(-negated, levels[-negated]) for negated in self._order]


# The free-agent list of a skill or tag no roster agent has. Nothing is ever added to it.
_NO_FREE_AGENTS = _FreeAgents()


@dataclass(slots=True, eq=False)
class _Waiter:
    call_id: str
    skill: str
    exclude: frozenset[str]
    priority: int
    needs: frozenset[str]
    tier: str | None
    preferred_agent: str | None
    arrived_at: float
    sequence: int
    future: asyncio.Future[Reservation]
    # Sort key in the per-skill queue while the call waits there, else None.
    queue_key: tuple[float, int] | None = None


@dataclass(slots=True)
class _Arrival:
    """When a call first asked for an agent, kept across its repeated ``reserve`` calls."""

    arrived_at: float
    last_seen: float = 0.0
    explained: bool = False
    skill: str | None = None
    # True from the moment an agent is reserved for the call until its next ``reserve``.
    reserved: bool = False
    ended: bool = False
    # The call's most recent ``reserve``: skill, needs and priority for a later explanation.
    waiter: _Waiter | None = None


@dataclass(frozen=True, slots=True)
class Reservation:
    """A claim on one agent for one call, returned by ``AgentPool.reserve``."""

    agent_id: str
    endpoint: str
    call_id: str
    skill: str


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    agent_id: str
    state: AgentState
    device: DeviceState
    call_id: str | None
    skills: frozenset[str] = field(default_factory=frozenset)
    pause_reason: str | None = None


@dataclass(frozen=True, slots=True)
class WaitingCall:
    """A call that asked for an agent and has none yet, with the seconds it has waited."""

    call_id: str
    skill: str
    waited_s: float


class AgentPool:
    """Agents of one node and the rule that hands a waiting call to one of them.

    ``clock`` returns monotonic seconds and drives every timer; ``wall_clock`` returns the
    UTC time stamped on events and decisions. Time-driven changes (end of wrap-up,
    expired reservations) happen on a loop timer, and also whenever ``tick`` or any other
    method runs, so a test with an injected clock calls ``tick`` after advancing it.
    """

    def __init__(
        self,
        agents: Iterable[AgentProfile],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        settings: AcdSettings | None = None,
        recorder: AcdRecorder | None = None,
        start_paused: bool = False,
    ):
        self._clock = clock
        self._wall_clock = wall_clock
        self._settings = settings or AcdSettings()
        self._recorder = recorder
        # Every roster agent starts logged in. With ``start_paused`` each also waits for an
        # explicit "ready" (reason ``login``), as a login does.
        # NOTE: without ``start_paused`` a node's restart offers calls to every roster agent at once.
        initial = AgentState.PAUSED if start_paused else AgentState.AVAILABLE
        self._agents = {
            agent.agent_id: _AgentStatus(agent, pause_reason="login" if start_paused else None,
                                         idle_since=clock(), state=initial)
            for agent in agents
        }
        self._by_endpoint = {status.profile.endpoint: status for status in self._agents.values()}
        # Roster agents per skill in roster order, and the free ones per skill in
        # (-proficiency, idle since, agent id) order: the order ``_rank`` uses between equal scores.
        self._by_skill: dict[str, list[_AgentStatus]] = {}
        self._free: dict[str, _FreeAgents] = {}
        # The same per skill, narrowed to one language, to sign language with video or to
        # elderly-care training, so a call with such a need scans the agents it concerns first.
        self._free_narrow: dict[tuple[str, str], _FreeAgents] = {}
        for order, status in enumerate(self._agents.values()):
            status.order = order
            profile = status.profile
            listed_levels = dict(profile.proficiency)
            status.levels = {skill: listed_levels.get(skill, DEFAULT_PROFICIENCY) for skill in profile.skills}
            status.narrow_tags = self._narrow_tags(status)
            for skill in profile.skills:
                self._by_skill.setdefault(skill, []).append(status)
                self._free.setdefault(skill, _FreeAgents())
                for tag in status.narrow_tags:
                    self._free_narrow.setdefault((skill, tag), _FreeAgents())
        # Waiting calls in ``reserve`` by sequence, and those still unassigned per skill,
        # sorted by (-score without the wait term, sequence).
        self._waiting: dict[int, _Waiter] = {}
        self._queues: dict[str, list[tuple[float, int, _Waiter]]] = {}
        self._waiting_ids: dict[str, int] = {}
        # Timer heaps with lazy deletion: (due, roster order) and (due, call id).
        self._wrap_heap: list[tuple[float, int]] = []
        self._ttl_heap: list[tuple[float, int]] = []
        self._arrival_heap: list[tuple[float, str]] = []
        self._statuses = list(self._agents.values())
        for rank, agent_id in enumerate(sorted(self._agents)):
            self._agents[agent_id].id_rank = rank
        self._sequence = itertools.count()
        self._events: deque[AgentEvent] = deque(maxlen=self._settings.event_ring_size)
        self._arrivals: dict[str, _Arrival] = {}

    @property
    def agent_ids(self) -> list[str]:
        return list(self._agents)

    @property
    def settings(self) -> AcdSettings:
        return self._settings

    def endpoint_known(self, endpoint: str) -> bool:
        return endpoint in self._by_endpoint

    def agent_for_endpoint(self, endpoint: str) -> AgentProfile | None:
        """Return the roster agent whose phone is ``endpoint``, or None."""
        status = self._by_endpoint.get(endpoint)
        return status.profile if status is not None else None

    def agent_state(self, agent_id: str) -> AgentState | None:
        """Return the agent's current state, or None for an agent not on the roster."""
        status = self._agents.get(agent_id)
        if status is None:
            return None
        self._housekeep()
        return status.state

    def waiting_calls(self) -> list[WaitingCall]:
        """Return the calls waiting for an agent now, longest wait first.

        A call counts as waiting from its first ``reserve`` until an agent is reserved for
        it or ``call_ended`` is called. Between two ``reserve`` calls (while the flow plays
        a wait announcement) it still counts, for up to ``WAITING_GAP_S``.
        """
        now = self._clock()
        in_reserve = {w.call_id for w in self._waiting.values() if not w.future.done()}
        calls = []
        for call_id, arrival in self._arrivals.items():
            if arrival.skill is None or arrival.reserved or arrival.ended:
                continue
            if call_id not in in_reserve and now - arrival.last_seen > WAITING_GAP_S:
                continue
            calls.append(WaitingCall(call_id, arrival.skill, max(now - arrival.arrived_at, 0.0)))
        calls.sort(key=lambda call: -call.waited_s)
        return calls

    def call_ended(self, call_id: str) -> None:
        """Record that a call is over, so it no longer counts as waiting."""
        arrival = self._arrivals.get(call_id)
        if arrival is not None:
            arrival.ended = True

    def overflowed(self, call_id: str, *, target: str) -> None:
        """Record that a waiting call left this pool for the tier above; it no longer counts as waiting.

        The decision recorded (rule ``emergency_overflow``) names ``target``, such as
        ``trunk:city-trunk`` or ``callback:city-330100``, and explains with the call's most
        recent skill, needs and priority why no agent here could take it now. A call the
        pool never saw is only logged.
        """
        arrival = self._arrivals.get(call_id)
        if arrival is None or arrival.waiter is None:
            log.warning("overflow of a call this pool never saw", call_id=call_id, target=target)
            return

        arrival.ended = True
        log.info("call overflowed to the tier above", call_id=call_id, skill=arrival.waiter.skill, target=target)
        if self._recorder is not None:
            self._explain_waiting(arrival.waiter, rule="emergency_overflow", overflow_target=target)

    def events(self) -> list[AgentEvent]:
        """Return the most recent state changes, oldest first."""
        return list(self._events)

    # --- state -------------------------------------------------------------------------

    def _derive(self, status: _AgentStatus) -> AgentState:
        if not status.logged_in:
            return AgentState.LOGGED_OUT
        if status.call_id is not None:
            if status.connected:
                return AgentState.ON_CALL
            return AgentState.RINGING if status.ringing else AgentState.RESERVED
        if status.wrap_until is not None:
            return AgentState.WRAP_UP
        if status.pause_reason is not None:
            return AgentState.PAUSED
        return AgentState.AVAILABLE

    def _settle(self, status: _AgentStatus, reason: str, call_id: str | None = None) -> None:
        """Record a transition when the mutation just made changed the agent's state."""
        state = self._derive(status)
        if state is status.state:
            return

        event = AgentEvent(
            at=self._wall_clock(), agent_id=status.profile.agent_id, previous=status.state.value,
            state=state.value, reason=reason, call_id=call_id or status.call_id,
            pause_reason=status.pause_reason if state is AgentState.PAUSED else None,
        )
        status.state = state
        if state is AgentState.AVAILABLE:
            status.idle_since = self._clock()
        self._index_agent(status)
        self._events.append(event)
        if self._recorder is not None:
            self._recorder.agent_event(event)
        log.info("agent state", agent_id=event.agent_id, previous=event.previous, state=event.state,
                 reason=reason, call_id=event.call_id)

    def snapshot(self) -> list[AgentSnapshot]:
        self._housekeep()
        return [
            AgentSnapshot(s.profile.agent_id, s.state, s.device, s.call_id, s.profile.skills, s.pause_reason)
            for s in self._agents.values()
        ]

    def _housekeep(self) -> None:
        """End wrap-ups whose time is up and expire reservations that were never released.

        Each timer sits in a heap with lazy deletion: an entry whose condition no longer
        holds is dropped, because the change that invalidated it pushed a newer one.
        """
        now = self._clock()
        memory = self._settings.arrival_memory_s
        retry_arrivals = []
        while self._arrival_heap and self._arrival_heap[0][0] <= now:
            due, call_id = heapq.heappop(self._arrival_heap)
            arrival = self._arrivals.get(call_id)
            if arrival is None or call_id in self._waiting_ids or due != arrival.last_seen + memory:
                continue
            if now - arrival.last_seen >= memory:
                del self._arrivals[call_id]
            else:
                retry_arrivals.append((due, call_id))

        due_agents: set[int] = set()
        for heap in (self._wrap_heap, self._ttl_heap):
            while heap and heap[0][0] <= now:
                due_agents.add(heapq.heappop(heap)[1])

        ttl = self._settings.reservation_ttl_s
        for order in sorted(due_agents):
            status = self._statuses[order]
            if status.wrap_until is not None and now >= status.wrap_until:
                status.wrap_until = None
                self._settle(status, "wrap_up_done")

            stale = status.call_id is not None and (not status.connected or status.device not in _DEVICE_ON_CALL)
            if stale and now - status.progress_at >= ttl:
                call_id = status.call_id
                log.warning("reservation expired without release", agent_id=status.profile.agent_id,
                            call_id=call_id, ttl_s=ttl)
                status.call_id = None
                status.ringing = status.connected = False
                self._settle(status, "reservation_expired", call_id)
            elif stale:
                # Rounding put the due time a hair before the expiry; look again next time.
                heapq.heappush(self._ttl_heap, (status.progress_at + ttl, order))
        for entry in retry_arrivals:
            heapq.heappush(self._arrival_heap, entry)

    def _touch(self, status: _AgentStatus) -> None:
        """Mark a sign of life of the agent's reservation and watch it for expiry."""
        status.progress_at = self._clock()
        heapq.heappush(self._ttl_heap, (status.progress_at + self._settings.reservation_ttl_s, status.order))

    @staticmethod
    def _narrow_tags(status: _AgentStatus) -> tuple[str, ...]:
        """Return the narrowed free-agent lists the agent joins besides its skills' own."""
        profile = status.profile
        narrow = [f"lang:{language}" for language in sorted(profile.languages)]
        if (SIGN_LANGUAGE_SKILL in profile.skills and VIDEO_CAPABILITY in profile.capabilities
                and not status.video_blocked):
            narrow.append(SIGN_LANGUAGE_SKILL)
        if ELDERLY_CARE_TRAINING in profile.training:
            narrow.append(ELDERLY_CARE_TRAINING)
        return tuple(narrow)

    def set_video_phone(self, agent_id: str, allows_video: bool) -> bool:
        """Record whether the switch lets the agent's endpoint carry video; return True when that changed.

        The roster's capability ``video`` records that the agent has a video phone. The
        endpoint's codec list on the switch decides whether a call to it can carry video. An agent
        listed with video whose endpoint allows no video codec takes no sign-language
        call until the switch allows one. Agents without the capability are not changed.
        """
        status = self._agents[agent_id]
        if VIDEO_CAPABILITY not in status.profile.capabilities or status.video_blocked == (not allows_video):
            return False

        # Leave the free-agent lists under the old tags and join them again under the new ones.
        if status.free_key is not None:
            for skill, level in status.levels.items():
                for agents in self._free_lists(status, skill):
                    agents.remove(status, level)
            status.free_key = None
        status.video_blocked = not allows_video
        status.narrow_tags = self._narrow_tags(status)
        for skill in status.levels:
            for tag in status.narrow_tags:
                self._free_narrow.setdefault((skill, tag), _FreeAgents())
        self._index_agent(status)
        log.warning("agent video phone", agent_id=agent_id, allows_video=allows_video)
        self._dispatch()
        return True

    def _free_lists(self, status: _AgentStatus, skill: str) -> list[_FreeAgents]:
        """Return the skill's free-agent list and the narrowed ones the agent joins under its tags."""
        return [self._free[skill], *(self._free_narrow[(skill, tag)] for tag in status.narrow_tags)]

    def _index_agent(self, status: _AgentStatus) -> None:
        """Keep the per-skill free-agent lists in step with the agent's state and device."""
        free = status.state is AgentState.AVAILABLE and status.device is DeviceState.NOT_IN_USE
        key = (status.idle_since, status.profile.agent_id) if free else None
        if key == status.free_key:
            return

        was_free = status.free_key is not None
        status.free_key = key
        for skill, level in status.levels.items():
            for agents in self._free_lists(status, skill):
                if was_free:
                    agents.remove(status, level)
                if key is not None:
                    agents.add(status, level)

    def _free_for(self, waiter: _Waiter, base: _FreeAgents | None = None) -> _FreeAgents:
        """Return the shortest free-agent list that still contains every agent in ``base`` who may fit ``waiter``.

        ``base`` is the skill's whole free list unless given.
        """
        lists = [self._free.get(waiter.skill, _NO_FREE_AGENTS) if base is None else base]
        for need in waiter.needs:
            if need == SIGN_LANGUAGE_NEED:
                lists.append(self._free_narrow.get((waiter.skill, SIGN_LANGUAGE_SKILL), _NO_FREE_AGENTS))
            elif need.startswith(DIALECT_NEED_PREFIX):
                tag = f"lang:{need.removeprefix(DIALECT_NEED_PREFIX)}"
                lists.append(self._free_narrow.get((waiter.skill, tag), _NO_FREE_AGENTS))
        return min(lists, key=len)

    def _queue_key(self, waiter: _Waiter) -> tuple[float, int]:
        """Sort key of a waiting call: its score without the wait term (shared by all calls)."""
        s = self._settings
        base = waiter.priority * s.priority_weight - waiter.arrived_at * s.wait_slope_per_s
        base += sum(s.need_boosts.get(need, 0.0) for need in waiter.needs)
        if waiter.priority >= s.emergency_priority:
            base += s.emergency_boost
        return (-base, waiter.sequence)

    def _enqueue(self, waiter: _Waiter) -> None:
        waiter.queue_key = self._queue_key(waiter)
        bisect.insort(self._queues.setdefault(waiter.skill, []), (*waiter.queue_key, waiter))

    def _dequeue(self, waiter: _Waiter) -> None:
        if waiter.queue_key is None:
            return
        queue = self._queues[waiter.skill]
        del queue[bisect.bisect_left(queue, waiter.queue_key)]
        waiter.queue_key = None

    def _arm_timer(self, delay_s: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        loop.call_later(max(delay_s, 0.0) + 0.001, self._on_timer)

    def _on_timer(self) -> None:
        self._housekeep()
        self._dispatch()

    async def tick(self) -> None:
        """Apply time-driven changes now and route; for tests that move an injected clock."""
        self._on_timer()

    # --- inputs ------------------------------------------------------------------------

    async def device_state_changed(self, endpoint: str, state: DeviceState) -> None:
        """Record the switch's view of an agent's device; unknown endpoints are ignored."""
        status = self._by_endpoint.get(endpoint)
        if status is None:
            return

        previous = status.device
        status.device = state
        if previous is not state:
            log.info("agent device state", agent_id=status.profile.agent_id, previous=previous.value, state=state.value)

        if status.call_id is not None and previous is not state:
            self._touch(status)
            if state is DeviceState.RINGING and not status.connected:
                status.ringing = True
                self._settle(status, "device_ringing")
            elif state in _DEVICE_ON_CALL and not status.connected:
                status.connected = True
                self._settle(status, "device_in_use")
            elif state is DeviceState.NOT_IN_USE and status.connected:
                # The switch reports the call is over. The flow's release usually follows,
                # and the reservation timer frees the agent when it does not.
                self._arm_timer(self._settings.reservation_ttl_s)
        elif status.call_id is None and state is DeviceState.NOT_IN_USE and previous is not state:
            status.idle_since = self._clock()
        self._index_agent(status)

        self._housekeep()
        self._dispatch()

    async def set_paused(self, agent_id: str, paused: bool, *, reason: str = "other", source: str = "") -> None:
        """Pause an agent with a reason code from ``PAUSE_REASONS``, or unpause.

        ``source`` (such as ``/phone``) is appended to the recorded event's reason.
        """
        if paused and reason not in PAUSE_REASONS:
            known = "、".join(f"{code}（{label}）" for code, label in PAUSE_REASONS.items())
            raise ValueError(f"暂停原因“{reason}”不在原因表中，请改用：{known}")
        status = self._agents[agent_id]
        status.pause_reason = reason if paused else None
        self._settle(status, (f"pause:{reason}" if paused else "unpause") + source)
        self._housekeep()
        self._dispatch()

    async def set_logged_in(self, agent_id: str, logged_in: bool, *, ready: bool = False, source: str = "") -> None:
        """Log an agent in or out in one step.

        Logging in enters the pool paused with reason ``login`` unless ``ready`` is True,
        so no call is offered between the login and the agent's "ready". ``source`` is
        appended to the recorded event's reason.
        """
        status = self._agents[agent_id]
        if logged_in and not status.logged_in:
            status.pause_reason = None if ready else "login"
        status.logged_in = logged_in
        self._settle(status, ("login" if logged_in else "logout") + source)
        self._housekeep()
        self._dispatch()

    def has_agent_for(self, skill: str) -> bool:
        """Return True when a logged-in agent has the skill, busy or not."""
        return any(s.logged_in for s in self._by_skill.get(skill, ()))

    # --- reserve / release ---------------------------------------------------------------

    async def reserve(
        self,
        call_id: str,
        skill: str,
        *,
        timeout_s: float,
        exclude: Iterable[str] = (),
        priority: int = 0,
        needs: frozenset[str] = frozenset(),
        tier: str | None = None,
        preferred_agent: str | None = None,
        waiting_since: float | None = None,
    ) -> Reservation | None:
        """Wait up to ``timeout_s`` for an eligible agent and reserve it for ``call_id``.

        Returns None on timeout. Waiting calls are served in score order (see
        ``waiting_score``). A call's first ``reserve`` sets its arrival time, which later
        calls for the same ``call_id`` keep. ``waiting_since`` (the pool's clock) overrides it.
        """
        loop = asyncio.get_running_loop()
        now = self._clock()
        # A flow calls reserve again after each announcement or unanswered ring; the call
        # keeps the time it first arrived, so its wait keeps counting.
        arrival = self._arrivals.get(call_id)
        if arrival is None:
            arrival = self._arrivals[call_id] = _Arrival(now if waiting_since is None else waiting_since)
        arrival.last_seen = now
        arrival.skill = skill
        arrival.reserved = False
        waiter = _Waiter(
            call_id, skill, frozenset(exclude), priority, frozenset(needs), tier, preferred_agent,
            arrival.arrived_at if waiting_since is None else waiting_since, next(self._sequence), loop.create_future(),
        )
        arrival.waiter = waiter
        self._waiting[waiter.sequence] = waiter
        self._waiting_ids[call_id] = self._waiting_ids.get(call_id, 0) + 1
        self._enqueue(waiter)
        try:
            self._housekeep()
            self._dispatch()
            if not waiter.future.done():
                if not arrival.explained and self._recorder is not None:
                    arrival.explained = True
                    self._explain_waiting(waiter)
                if preferred_agent is not None:
                    self._arm_timer(waiter.arrived_at + self._settings.preferred_wait_s - self._clock())
                await asyncio.wait({waiter.future}, timeout=timeout_s)
        except asyncio.CancelledError:
            # The flow was cancelled (caller gone, shutdown) after an agent was chosen: free
            # the agent now rather than at reservation expiry.
            if waiter.future.done() and not waiter.future.cancelled():
                self._undo(waiter.future.result())
            arrival.ended = True
            raise
        finally:
            del self._waiting[waiter.sequence]
            self._dequeue(waiter)
            if self._waiting_ids[call_id] == 1:
                del self._waiting_ids[call_id]
            else:
                self._waiting_ids[call_id] -= 1
            arrival.last_seen = self._clock()
            heapq.heappush(self._arrival_heap, (arrival.last_seen + self._settings.arrival_memory_s, call_id))
        if waiter.future.done():
            return waiter.future.result()
        waiter.future.cancel()
        self._dispatch()
        return None

    def _undo(self, reservation: Reservation) -> None:
        status = self._agents[reservation.agent_id]
        if status.call_id == reservation.call_id and not status.connected:
            status.call_id = None
            status.ringing = False
            self._settle(status, "reservation_cancelled", reservation.call_id)
            self._dispatch()

    def set_priority(self, call_id: str, priority: int) -> bool:
        """Change a waiting call's priority; it takes effect at the next routing decision."""
        for waiter in self._waiting.values():
            if waiter.call_id == call_id:
                queued = waiter.queue_key is not None
                self._dequeue(waiter)
                waiter.priority = priority
                if queued:
                    self._enqueue(waiter)
                log.info("waiting call priority changed", call_id=call_id, priority=priority)
                self._dispatch()
                return True
        return False

    async def connected(self, reservation: Reservation) -> None:
        status = self._agents[reservation.agent_id]
        if status.call_id == reservation.call_id:
            status.connected = True
            self._touch(status)
            self._settle(status, "connected")

    async def release(self, reservation: Reservation, *, reason: str, outcome: ReleaseOutcome | None = None) -> None:
        """End a reservation.

        After a connected call the agent enters wrap-up, also when the call was cut off
        while connected (``outcome`` ABANDONED with the device in use: the switch dropped
        it or the caller hung up mid-conversation). When the phone rang and was not
        answered (``outcome`` NO_ANSWER, or no outcome given and the device rang but never
        went in use) the agent is paused with the configured reason.
        """
        status = self._agents[reservation.agent_id]
        if status.call_id != reservation.call_id:
            return

        answered = outcome is ReleaseOutcome.ANSWERED or (outcome is not ReleaseOutcome.NO_ANSWER and status.connected)
        no_answer = outcome is ReleaseOutcome.NO_ANSWER or (outcome is None and status.ringing and not status.connected)
        status.call_id = None
        status.ringing = status.connected = False
        if answered and self._settings.wrap_up_s > 0:
            status.wrap_until = self._clock() + self._settings.wrap_up_s
            heapq.heappush(self._wrap_heap, (status.wrap_until, status.order))
            self._arm_timer(self._settings.wrap_up_s)
        elif no_answer and self._settings.no_answer_pause_reason is not None:
            status.pause_reason = self._settings.no_answer_pause_reason
        log.info("agent released", call_id=reservation.call_id, agent_id=reservation.agent_id, reason=reason,
                 outcome=outcome.value if outcome else None)
        self._settle(status, f"release:{reason}", reservation.call_id)
        self._housekeep()
        self._dispatch()

    # --- routing -------------------------------------------------------------------------

    def waiting_score(self, waiter: _Waiter, now: float) -> float:
        """Priority, time waited and need boost as one number; higher is served first."""
        s = self._settings
        score = waiter.priority * s.priority_weight + (now - waiter.arrived_at) * s.wait_slope_per_s
        score += sum(s.need_boosts.get(need, 0.0) for need in waiter.needs)
        if waiter.priority >= s.emergency_priority:
            score += s.emergency_boost
        return score

    def _exclusion(self, status: _AgentStatus, waiter: _Waiter, now: float) -> str | None:
        """Return why ``status`` cannot take ``waiter`` now, in Chinese, or None."""
        profile = status.profile
        state = status.state
        if state is AgentState.LOGGED_OUT:
            return "未登录"
        if state is AgentState.PAUSED:
            return f"暂停（{PAUSE_REASONS.get(status.pause_reason or '', status.pause_reason)}）"
        if state is AgentState.WRAP_UP:
            return f"话后整理中，还剩 {max((status.wrap_until or now) - now, 0):.0f} 秒"
        if state is not AgentState.AVAILABLE:
            return f"本系统记录其正在处理呼叫 {status.call_id}（{STATE_LABELS[state]}）"

        if status.device is not DeviceState.NOT_IN_USE:
            return f"话机状态为 {status.device.value}，不是空闲（可能在打其他电话或未注册）"
        if waiter.skill not in profile.skills:
            return f"不具备技能 {waiter.skill}"
        if profile.agent_id in waiter.exclude:
            return "本次排队中已振铃未接"

        if SIGN_LANGUAGE_NEED in waiter.needs:
            if SIGN_LANGUAGE_SKILL not in profile.skills:
                return f"来电需要手语，坐席不具备技能 {SIGN_LANGUAGE_SKILL}"
            if VIDEO_CAPABILITY not in profile.capabilities:
                return "来电需要手语，坐席话机不支持视频"
            if status.video_blocked:
                return "来电需要手语，坐席的话机端点在交换机上没有开通视频编解码（pjsip.conf 的 allow 中没有视频格式）"
        for need in waiter.needs:
            if need.startswith(DIALECT_NEED_PREFIX):
                dialect = need.removeprefix(DIALECT_NEED_PREFIX)
                if dialect not in profile.languages:
                    return f"来电需要方言“{dialect}”，坐席不会"

        held_for = waiter.preferred_agent
        if (held_for is not None and held_for != profile.agent_id and held_for in self._agents
                and self._agents[held_for].logged_in and held_for not in waiter.exclude
                and now - waiter.arrived_at < self._settings.preferred_wait_s):
            left = self._settings.preferred_wait_s - (now - waiter.arrived_at)
            return f"来电正在等上次接待的坐席 {held_for}（还等 {left:.0f} 秒）"
        return None

    def _agent_score(self, status: _AgentStatus, waiter: _Waiter) -> tuple[float, tuple[str, ...]]:
        s = self._settings
        profile = status.profile
        level = status.levels.get(waiter.skill, 0)
        score = level * s.proficiency_weight
        reasons = [f"熟练度 {level}"]
        if SLOW_SPEECH_NEED in waiter.needs and ELDERLY_CARE_TRAINING in profile.training:
            score += s.elderly_care_bonus
            reasons.append("受过老年人服务培训")
        if waiter.preferred_agent == profile.agent_id:
            score += s.preferred_agent_bonus
            reasons.append("上次接待该来电人")
        if waiter.tier is not None and profile.tier == waiter.tier:
            score += s.same_tier_bonus
            reasons.append("同一层级")
        return score, tuple(reasons)

    def _rank(self, waiter: _Waiter, now: float, assigned: set[str]):
        candidates: list[tuple[_AgentStatus, float, tuple[str, ...]]] = []
        exclusions: list[Exclusion] = []
        for status in self._agents.values():
            reason = self._exclusion(status, waiter, now)
            if reason is None and status.profile.agent_id in assigned:
                reason = "本轮已分给分数更高的来电"
            if reason is not None:
                exclusions.append(Exclusion(status.profile.agent_id, reason))
                continue
            score, reasons = self._agent_score(status, waiter)
            candidates.append((status, score, reasons))
        candidates.sort(key=lambda c: (-c[1], c[0].idle_since, c[0].profile.agent_id))
        return candidates, exclusions

    def _held(self, waiter: _Waiter, now: float) -> bool:
        """Return True while the call waits for its preferred agent (see ``_exclusion``)."""
        held_for = waiter.preferred_agent
        return (held_for is not None and held_for in self._agents and self._agents[held_for].logged_in
                and held_for not in waiter.exclude and now - waiter.arrived_at < self._settings.preferred_wait_s)

    def _has_candidate(self, waiter: _Waiter, now: float) -> bool:
        """Return True when some free agent may take ``waiter`` now."""
        if self._held(waiter, now):
            status = self._agents[waiter.preferred_agent or ""]
            return status.free_key is not None and self._exclusion(status, waiter, now) is None
        for _, agents in self._free_for(waiter).by_level():
            for status in agents.values():
                if self._exclusion(status, waiter, now) is None:
                    return True
        return False

    def _rank_capped(self, waiter: _Waiter, now: float):
        """``_rank`` for a large pool: the best candidates and the first exclusions, then counts.

        Free agents are scanned best proficiency first and the scan stops once no agent
        left can beat the last listed candidate. Further excluded agents (busy, paused, or
        free but unfit for the call's needs) are looked for among the first
        ``EXCLUSION_SCAN_FACTOR * explain_list_size`` agents of the skill in roster order,
        so a skill whose first agents are all fit and free lists fewer of them.
        """
        s = self._settings
        size = s.explain_list_size
        candidates: list[tuple[_AgentStatus, float, tuple[str, ...]]] = []
        excluded: list[tuple[int, Exclusion]] = []
        listed: set[str] = set()
        # Min-heap of the ``size`` best candidate keys (score, -idle since, -id rank) so far, worst first.
        best: list[tuple[float, float, int]] = []
        held = self._held(waiter, now)
        tier_bonus = max(s.same_tier_bonus, 0.0) if waiter.tier is not None else 0.0
        # Each pass scans a list in (-proficiency, idle since) order with the largest bonus any
        # agent in it can still get. Agents trained for elderly callers come first, so the
        # full list's pass can leave that bonus out of its bound.
        passes = [(self._free_for(waiter), tier_bonus)]
        if SLOW_SPEECH_NEED in waiter.needs and s.elderly_care_bonus > 0:
            trained = self._free_narrow.get((waiter.skill, ELDERLY_CARE_TRAINING), _NO_FREE_AGENTS)
            passes.insert(0, (self._free_for(waiter, trained), s.elderly_care_bonus + tier_bonus))

        def consider(status: _AgentStatus) -> None:
            listed.add(status.profile.agent_id)
            reason = self._exclusion(status, waiter, now)
            if reason is not None:
                if len(excluded) < size:
                    excluded.append((status.order, Exclusion(status.profile.agent_id, reason)))
                return
            score, reasons = self._agent_score(status, waiter)
            candidates.append((status, score, reasons))
            key = (score, -status.idle_since, -status.id_rank)
            if len(best) < size:
                heapq.heappush(best, key)
            elif key > best[0]:
                heapq.heapreplace(best, key)

        preferred = self._agents.get(waiter.preferred_agent or "")
        if preferred is not None and preferred.free_key is not None and waiter.skill in preferred.profile.skills:
            consider(preferred)
        for free, bonus in passes:
            for level, agents in free.by_level():
                bound = level * s.proficiency_weight + bonus
                if len(best) >= size and bound < best[0][0]:
                    break
                # Within one level the agents run in idle order, so once one cannot beat
                # the last listed candidate, no later agent of that level can either.
                for agent_id, status in agents.items():
                    if held and len(excluded) >= size:
                        break
                    if len(best) >= size and (bound, -status.idle_since, -status.id_rank) < best[0]:
                        break
                    if agent_id not in listed:
                        consider(status)
                if held and len(excluded) >= size:
                    break
        candidates.sort(key=lambda c: (-c[1], c[0].idle_since, c[0].profile.agent_id))
        del candidates[size:]
        listed = {c[0].profile.agent_id for c in candidates} | {e.agent_id for _, e in excluded}

        for status in itertools.islice(self._by_skill.get(waiter.skill, ()), EXCLUSION_SCAN_FACTOR * size):
            if len(excluded) >= size:
                break
            if status.profile.agent_id in listed:
                continue
            # A free agent the scan skipped is either a lower candidate (no reason) or one the
            # call's needs rule out, which the narrowed free list left out.
            reason = self._exclusion(status, waiter, now)
            if reason is not None:
                excluded.append((status.order, Exclusion(status.profile.agent_id, reason)))
        excluded.sort(key=lambda e: e[0])
        exclusions = [e for _, e in excluded]

        with_skill = len(self._by_skill.get(waiter.skill, ()))
        unlisted = with_skill - len(candidates) - len(exclusions)
        if unlisted > 0:
            exclusions.append(Exclusion(UNLISTED_AGENTS, (
                f"另有 {unlisted} 名具备技能 {waiter.skill} 的坐席未逐一列出"
                f"（坐席超过 {s.explain_all_limit} 名时，只列分数最高的 {size} 名合格坐席和前 {size} 名被排除的坐席）")))
        if len(self._agents) > with_skill:
            exclusions.append(Exclusion(UNLISTED_AGENTS,
                                        f"{len(self._agents) - with_skill} 名坐席不具备技能 {waiter.skill}，未逐一列出"))
        return candidates, exclusions

    def _board(self, now: float) -> tuple[WaitingCallScore, ...]:
        """Waiting calls best first; only the head when more than ``explain_all_limit`` wait."""
        s = self._settings
        queued = sum(len(queue) for queue in self._queues.values())
        merged = heapq.merge(*self._queues.values())
        if queued > s.explain_all_limit:
            merged = itertools.islice(merged, s.explain_list_size)
        return tuple(WaitingCallScore(w.call_id, round(self.waiting_score(w, now), 2), w.priority)
                     for _, _, w in merged)

    def _dispatch(self) -> None:
        """Give free agents to waiting calls in score order; record each decision."""
        active = [skill for skill, queue in self._queues.items() if queue and self._free.get(skill)]
        if not active:
            return

        now = self._clock()
        heads = [queue[0] for queue in self._queues.values() if queue]
        head = min(heads)[2]
        full = len(self._agents) <= self._settings.explain_all_limit
        board: tuple[WaitingCallScore, ...] | None = None
        assigned: set[str] = set()
        served: list[_Waiter] = []
        for _, _, waiter in heapq.merge(*(self._queues[skill] for skill in active)):
            if not self._free[waiter.skill]:
                if not any(self._free[skill] for skill in active):
                    break
                continue
            if not self._has_candidate(waiter, now):
                continue

            # Without a recorder no decision is kept, so the short ranking (same choice) will do.
            if full and self._recorder is not None:
                candidates, exclusions = self._rank(waiter, now, assigned)
            else:
                candidates, exclusions = self._rank_capped(waiter, now)
            chosen, chosen_score, _ = candidates[0]
            status = chosen
            assigned.add(status.profile.agent_id)
            rule = self._rule(waiter, candidates, head)
            if self._recorder is not None:
                if board is None:
                    board = self._board(now)
                self._record(RoutingDecision(
                    call_id=waiter.call_id, decided_at=self._wall_clock(), rule=rule, skill=waiter.skill,
                    needs=tuple(sorted(waiter.needs)), priority=waiter.priority,
                    call_score=round(self.waiting_score(waiter, now), 2), chosen_agent=status.profile.agent_id,
                    candidates=tuple(
                        CandidateScore(c.profile.agent_id, round(sc, 2), round(now - c.idle_since, 1), reasons)
                        for c, sc, reasons in candidates
                    ),
                    exclusions=tuple(exclusions), waiting=board,
                ))

            status.call_id = waiter.call_id
            status.ringing = status.connected = False
            self._touch(status)
            if waiter.call_id in self._arrivals:
                self._arrivals[waiter.call_id].reserved = True
            self._settle(status, "reserved", waiter.call_id)
            self._arm_timer(self._settings.reservation_ttl_s)
            log.info("agent reserved", call_id=waiter.call_id, agent_id=status.profile.agent_id,
                     skill=waiter.skill, rule=rule)
            served.append(waiter)
            waiter.future.set_result(
                Reservation(status.profile.agent_id, status.profile.endpoint, waiter.call_id, waiter.skill)
            )
        for waiter in served:
            self._dequeue(waiter)

    def _rule(self, waiter: _Waiter, candidates, head: _Waiter) -> str:
        chosen, chosen_score, _ = candidates[0]
        if waiter.priority >= self._settings.emergency_priority:
            return "emergency_first"
        if waiter.preferred_agent == chosen.profile.agent_id:
            return "preferred_agent"
        if len(candidates) > 1 and candidates[1][1] == chosen_score:
            return "tie_longest_idle"
        if head is waiter:
            return "best_agent"
        return "higher_calls_ineligible"

    def _explain_waiting(self, waiter: _Waiter, *, rule: str = "no_eligible_agent",
                         overflow_target: str | None = None) -> None:
        """Record why a call found no agent on arrival, or (with ``overflow_target``) when it overflowed."""
        now = self._clock()
        s = self._settings
        if len(self._agents) <= s.explain_all_limit:
            _, exclusions = self._rank(waiter, now, set())
        else:
            _, exclusions = self._rank_capped(waiter, now)
        pending = (w for w in self._waiting.values() if not w.future.done())
        if len(self._waiting) > s.explain_all_limit:
            pending = itertools.islice(pending, s.explain_list_size)
        self._record(RoutingDecision(
            call_id=waiter.call_id, decided_at=self._wall_clock(), rule=rule, skill=waiter.skill,
            needs=tuple(sorted(waiter.needs)), priority=waiter.priority,
            call_score=round(self.waiting_score(waiter, now), 2), chosen_agent=None, candidates=(),
            exclusions=tuple(exclusions),
            waiting=tuple(WaitingCallScore(w.call_id, round(self.waiting_score(w, now), 2), w.priority)
                          for w in pending),
            overflow_target=overflow_target,
        ))

    def _record(self, decision: RoutingDecision) -> None:
        if self._recorder is not None:
            self._recorder.decision(decision)
