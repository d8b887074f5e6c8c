"""Domain: a waiting caller's place in the queue and an estimate of the wait, from live figures.

The estimate is what the caller hears ("您前面还有N位来电者在等待，预计还需等待M分钟"),
so it uses only what the node knows now: the agents logged in for the skill, the
calls waiting for it and a moving average of recent handle times (talk time plus
wrap-up). It does no I/O.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from acd.pool import AgentSnapshot, AgentState, WaitingCall

# Agents in these states will take a call for their skill once they are free; paused and
# logged-out agents will not, so they do not shorten anybody's wait.
SERVING_STATES = frozenset(
    {AgentState.AVAILABLE, AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL, AgentState.WRAP_UP}
)

# Handle time assumed for a skill before any of its calls has ended on this node.
DEFAULT_HANDLE_TIME_S = 180.0
# Number of recent calls per skill in the moving average.
DEFAULT_WINDOW = 20


@dataclass(frozen=True, slots=True)
class QueueEstimate:
    """Where one waiting call stands: callers ahead of it and the expected wait in seconds.

    ``wait_s`` is None when no agent serves the skill, because no wait can be promised then.
    """

    ahead: int
    serving_agents: int
    handle_time_s: float
    wait_s: float | None

    @property
    def position(self) -> int:
        """The call's 1-based place in the queue."""
        return self.ahead + 1

    @property
    def wait_minutes(self) -> int | None:
        """The wait rounded up to whole minutes, at least 1, as the caller hears it."""
        if self.wait_s is None:
            return None
        return max(1, math.ceil(self.wait_s / 60))


class HandleTimes:
    """Moving average of the handle times of the last ``window`` answered calls, per skill."""

    def __init__(self, *, window: int = DEFAULT_WINDOW, default_s: float = DEFAULT_HANDLE_TIME_S) -> None:
        if window < 1:
            raise ValueError(f"handle-time window must be at least 1 call, got {window}")
        if default_s <= 0:
            raise ValueError(f"default handle time must be positive, got {default_s} s")
        self._window = window
        self._default_s = default_s
        self._recent: dict[str, deque[float]] = {}

    def record(self, skill: str, seconds: float) -> None:
        """Add one answered call's handle time (talk plus wrap-up, in seconds) for ``skill``."""
        if seconds < 0:
            raise ValueError(f"handle time cannot be negative, got {seconds} s")
        self._recent.setdefault(skill, deque(maxlen=self._window)).append(seconds)

    def average(self, skill: str) -> float:
        """Return the mean of the skill's recent handle times, or the default before any call ended."""
        recent = self._recent.get(skill)
        if not recent:
            return self._default_s
        return sum(recent) / len(recent)


def serving_agents(agents: Iterable[AgentSnapshot], skill: str) -> int:
    """Count the agents with ``skill`` that are logged in and not paused."""
    return sum(1 for agent in agents if skill in agent.skills and agent.state in SERVING_STATES)


def calls_ahead(waiting: Sequence[WaitingCall], call_id: str, skill: str) -> int:
    """Count the calls for ``skill`` listed before ``call_id`` in ``waiting``.

    ``waiting`` is in the order of ``AgentPool.waiting_calls``: longest wait first. A call
    not in the list has not started waiting yet, so every waiting call of the skill is
    ahead of it.

    NOTE: the pool serves calls by score (priority, wait, need boosts), which this order
    ignores, so an emergency call queued later is still counted behind this one.
    """
    ahead = 0
    for call in waiting:
        if call.call_id == call_id:
            return ahead
        if call.skill == skill:
            ahead += 1
    return ahead


def expected_wait_s(*, ahead: int, serving: int, handle_time_s: float) -> float | None:
    """Estimate the seconds until an agent takes a call with ``ahead`` callers before it.

    With every serving agent busy, agents free up on average every ``handle_time_s /
    serving`` seconds, and the first one is on average half a handle time away. The call
    is taken at the ``ahead + 1``-th release, so the wait is ``(ahead + 0.5) *
    handle_time_s / serving``. This is an estimate: it ignores priorities and skills
    shared between queues. Returns None when no agent serves the skill.
    """
    if ahead < 0:
        raise ValueError(f"calls ahead cannot be negative, got {ahead}")
    if serving <= 0:
        return None
    return (ahead + 0.5) * handle_time_s / serving


def estimate_queue(
    *, call_id: str, skill: str, agents: Iterable[AgentSnapshot], waiting: Sequence[WaitingCall],
    handle_times: HandleTimes,
) -> QueueEstimate:
    """Return where ``call_id`` stands in the ``skill`` queue and how long it may wait."""
    ahead = calls_ahead(waiting, call_id, skill)
    serving = serving_agents(agents, skill)
    handle_time_s = handle_times.average(skill)
    wait_s = expected_wait_s(ahead=ahead, serving=serving, handle_time_s=handle_time_s)
    return QueueEstimate(ahead=ahead, serving_agents=serving, handle_time_s=handle_time_s, wait_s=wait_s)
