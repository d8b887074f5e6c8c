"""Domain: agents, their states and the choice of an agent for a waiting call.

An agent is offered a call only when three things agree. The agent is logged in and
not paused. The controller itself has no call reserved on or connected to that agent.
The switch reports the agent's device as idle. The switch's device state alone is
not enough, because it is device-wide: an agent on a direct call looks busy to every
skill group, and one who is being rung by us looks idle until the ringing starts.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)


class DeviceState(enum.Enum):
    """State of an agent's phone as the switch reports it."""

    UNKNOWN = "unknown"
    NOT_IN_USE = "not_in_use"
    IN_USE = "in_use"
    BUSY = "busy"
    RINGING = "ringing"
    ON_HOLD = "on_hold"
    UNAVAILABLE = "unavailable"  # not registered


class AgentState(enum.Enum):
    LOGGED_OUT = "logged_out"
    AVAILABLE = "available"
    RESERVED = "reserved"
    ON_CALL = "on_call"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class AgentProfile:
    """An agent as listed in the roster."""

    agent_id: str
    name: str
    endpoint: str
    skills: frozenset[str]


@dataclass(slots=True)
class _AgentStatus:
    profile: AgentProfile
    logged_in: bool = True
    paused: bool = False
    device: DeviceState = DeviceState.UNKNOWN
    call_id: str | None = None
    connected: bool = False
    idle_since: float = 0.0


@dataclass(frozen=True, slots=True, eq=False)
class _Waiter:
    call_id: str
    skill: str
    exclude: frozenset[str]
    priority: int = 0


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


class AgentPool:
    """Agents of one node and the rule that hands a waiting call to one of them.

    Among eligible agents the one idle the longest is chosen. ``clock`` returns
    monotonic seconds.
    """

    def __init__(self, agents: Iterable[AgentProfile], *, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self._agents = {agent.agent_id: _AgentStatus(agent, idle_since=clock()) for agent in agents}
        self._by_endpoint = {status.profile.endpoint: status for status in self._agents.values()}
        self._changed = asyncio.Condition()
        self._waiting: list[_Waiter] = []

    @property
    def agent_ids(self) -> list[str]:
        return list(self._agents)

    def endpoint_known(self, endpoint: str) -> bool:
        return endpoint in self._by_endpoint

    def _state(self, status: _AgentStatus) -> AgentState:
        if not status.logged_in:
            return AgentState.LOGGED_OUT
        if status.call_id is not None:
            return AgentState.ON_CALL if status.connected else AgentState.RESERVED
        if status.paused:
            return AgentState.PAUSED
        return AgentState.AVAILABLE

    def _eligible(self, status: _AgentStatus, skill: str, exclude: frozenset[str]) -> bool:
        return (
            self._state(status) is AgentState.AVAILABLE
            and status.device is DeviceState.NOT_IN_USE
            and skill in status.profile.skills
            and status.profile.agent_id not in exclude
        )

    def snapshot(self) -> list[AgentSnapshot]:
        return [
            AgentSnapshot(s.profile.agent_id, self._state(s), s.device, s.call_id, s.profile.skills)
            for s in self._agents.values()
        ]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def device_state_changed(self, endpoint: str, state: DeviceState) -> None:
        """Record the switch's view of an agent's device; unknown endpoints are ignored."""
        status = self._by_endpoint.get(endpoint)
        if status is None:
            return

        previous = status.device
        status.device = state
        if previous is not state:
            log.info("agent device state", agent_id=status.profile.agent_id, previous=previous.value, state=state.value)
        if state is DeviceState.NOT_IN_USE and previous is not DeviceState.NOT_IN_USE and status.call_id is None:
            status.idle_since = self._clock()
        await self._notify()

    async def set_paused(self, agent_id: str, paused: bool) -> None:
        self._agents[agent_id].paused = paused
        await self._notify()

    async def set_logged_in(self, agent_id: str, logged_in: bool) -> None:
        self._agents[agent_id].logged_in = logged_in
        await self._notify()

    def has_agent_for(self, skill: str) -> bool:
        """Return True when a logged-in agent has the skill, busy or not."""
        return any(s.logged_in and skill in s.profile.skills for s in self._agents.values())

    async def reserve(
        self, call_id: str, skill: str, *, timeout_s: float, exclude: Iterable[str] = (), priority: int = 0
    ) -> Reservation | None:
        """Wait up to ``timeout_s`` for an eligible agent and reserve it for ``call_id``.

        Returns None on timeout. An agent that a call ahead could also take goes to that
        call. Calls with a higher ``priority`` (an emergency) are ahead of all calls with a
        lower one, and calls of equal priority are served in arrival order.
        """
        waiter = _Waiter(call_id, skill, frozenset(exclude), priority)
        self._waiting.append(waiter)
        try:
            async with self._changed:
                async with asyncio.timeout(timeout_s):
                    while True:
                        chosen = self._pick_for(waiter)
                        if chosen is not None:
                            chosen.call_id = call_id
                            chosen.connected = False
                            log.info("agent reserved", call_id=call_id, agent_id=chosen.profile.agent_id, skill=skill)
                            return Reservation(chosen.profile.agent_id, chosen.profile.endpoint, call_id, skill)
                        await self._changed.wait()
        except TimeoutError:
            return None
        finally:
            self._waiting.remove(waiter)
            await self._notify()

    def _pick_for(self, waiter: _Waiter) -> _AgentStatus | None:
        position = self._waiting.index(waiter)
        earlier = [
            other for index, other in enumerate(self._waiting)
            if other.priority > waiter.priority or (other.priority == waiter.priority and index < position)
        ]
        candidates = [s for s in self._agents.values() if self._eligible(s, waiter.skill, waiter.exclude)]
        candidates.sort(key=lambda s: (s.idle_since, s.profile.agent_id))
        for status in candidates:
            if not any(self._eligible(status, other.skill, other.exclude) for other in earlier):
                return status
        return None

    async def connected(self, reservation: Reservation) -> None:
        status = self._agents[reservation.agent_id]
        if status.call_id == reservation.call_id:
            status.connected = True
            await self._notify()

    async def release(self, reservation: Reservation, *, reason: str) -> None:
        """End a reservation; the agent becomes available again once the device is idle."""
        status = self._agents[reservation.agent_id]
        if status.call_id != reservation.call_id:
            return
        status.call_id = None
        status.connected = False
        status.idle_since = self._clock()
        log.info("agent released", call_id=reservation.call_id, agent_id=reservation.agent_id, reason=reason)
        await self._notify()
