"""Domain: the supervisor's view of one node's queue, live and for today.

The controller publishes an ``AcdStatus`` (agents by state, calls waiting) every second.
Today's figures come from ``QueueCallResult`` records, one per call that asked for an
agent, counted over the Asia/Shanghai calendar day:

- offered: calls that entered the queue that day (answered, abandoned or given up with
  no agent);
- answer rate = answered / offered;
- abandon rate = abandoned / offered, where abandoned means the caller hung up before an
  agent answered;
- SL(15) = answered within 15 s of entering the queue / (offered − calls abandoned within
  5 s). A caller who hangs up within 5 s had no chance of being served, so such calls
  count neither for nor against the service level.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from acd.pool import AgentSnapshot, AgentState, DeviceState, WaitingCall
from tickets.model import CHINA_TZ

SERVICE_LEVEL_THRESHOLD_S = 15.0
SHORT_ABANDON_S = 5.0


class QueueOutcome(enum.Enum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up while waiting or while an agent rang
    NO_AGENT = "no_agent"  # the flow gave up: no agent logged in or none free in time


@dataclass(frozen=True, slots=True)
class QueueCallResult:
    """Final result of one call that asked for an agent; times in UTC."""

    call_id: str
    skill: str
    entered_at: datetime
    ended_at: datetime
    outcome: QueueOutcome
    answered_at: datetime | None = None
    agent_id: str | None = None

    def __post_init__(self) -> None:
        for name in ("entered_at", "ended_at", "answered_at"):
            value = getattr(self, name)
            if value is not None and value.utcoffset() != timedelta(0):
                raise ValueError(f"{name} must be a UTC datetime, got {value!r}")
        if (self.outcome is QueueOutcome.ANSWERED) != (self.answered_at is not None):
            raise ValueError("answered_at is required for an answered call and only for one")

    @property
    def wait_s(self) -> float:
        """Seconds from entering the queue to the agent's answer, or to the end of the call."""
        until = self.answered_at if self.answered_at is not None else self.ended_at
        return max((until - self.entered_at).total_seconds(), 0.0)


@dataclass(frozen=True, slots=True)
class WaitingEntry:
    """A waiting call as published: its skill and the UTC time it entered the queue."""

    call_id: str
    skill: str
    since: datetime


@dataclass(frozen=True, slots=True)
class AgentEntry:
    agent_id: str
    name: str
    state: AgentState
    pause_reason: str | None
    call_id: str | None
    device: DeviceState


@dataclass(frozen=True, slots=True)
class AcdStatus:
    """Snapshot the controller publishes every second for ``hotline status``."""

    node_id: str
    published_at: datetime
    agents: tuple[AgentEntry, ...]
    waiting: tuple[WaitingEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "published_at": self.published_at.isoformat(),
            "agents": [
                {"agent_id": a.agent_id, "name": a.name, "state": a.state.value, "pause_reason": a.pause_reason,
                 "call_id": a.call_id, "device": a.device.value}
                for a in self.agents
            ],
            "waiting": [{"call_id": w.call_id, "skill": w.skill, "since": w.since.isoformat()} for w in self.waiting],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AcdStatus:
        return cls(
            node_id=data["node_id"],
            published_at=datetime.fromisoformat(data["published_at"]),
            agents=tuple(
                AgentEntry(a["agent_id"], a["name"], AgentState(a["state"]), a["pause_reason"], a["call_id"],
                           DeviceState(a["device"]))
                for a in data["agents"]
            ),
            waiting=tuple(WaitingEntry(w["call_id"], w["skill"], datetime.fromisoformat(w["since"]))
                          for w in data["waiting"]),
        )


def build_status(
    node_id: str, now: datetime, agents: Iterable[AgentSnapshot], names: dict[str, str],
    waiting: Iterable[WaitingCall],
) -> AcdStatus:
    """Turn the pool's snapshot into the published status; ``now`` is the UTC publish time."""
    return AcdStatus(
        node_id=node_id,
        published_at=now,
        agents=tuple(
            AgentEntry(a.agent_id, names.get(a.agent_id, a.agent_id), a.state, a.pause_reason, a.call_id, a.device)
            for a in agents
        ),
        waiting=tuple(WaitingEntry(w.call_id, w.skill, now - timedelta(seconds=w.waited_s)) for w in waiting),
    )


@dataclass(frozen=True, slots=True)
class SkillQueue:
    skill: str
    waiting: int
    longest_wait_s: float


def skill_queues(status: AcdStatus, now: datetime) -> list[SkillQueue]:
    """Return the waiting calls and the longest wait per skill, longest wait first."""
    by_skill: dict[str, list[float]] = {}
    for entry in status.waiting:
        by_skill.setdefault(entry.skill, []).append(max((now - entry.since).total_seconds(), 0.0))
    queues = [SkillQueue(skill, len(waits), max(waits)) for skill, waits in by_skill.items()]
    queues.sort(key=lambda queue: (-queue.longest_wait_s, queue.skill))
    return queues


def agents_by_state(status: AcdStatus) -> dict[AgentState, int]:
    """Return how many agents are in each state, every state listed."""
    counts = {state: 0 for state in AgentState}
    for agent in status.agents:
        counts[agent.state] += 1
    return counts


def china_day_bounds(now: datetime) -> tuple[date, datetime, datetime]:
    """Return today's Asia/Shanghai date and its start and end as UTC datetimes."""
    day = now.astimezone(CHINA_TZ).date()
    start = datetime.combine(day, time(0), tzinfo=CHINA_TZ)
    return day, start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


@dataclass(frozen=True, slots=True)
class DailyFigures:
    """Counts and rates of one Asia/Shanghai day; a rate is None when nothing was offered."""

    day: date
    offered: int
    answered: int
    abandoned: int
    abandoned_short: int
    no_agent: int
    answered_within_threshold: int
    threshold_s: float = SERVICE_LEVEL_THRESHOLD_S
    short_abandon_s: float = SHORT_ABANDON_S

    @property
    def answer_rate(self) -> float | None:
        return self.answered / self.offered if self.offered else None

    @property
    def abandon_rate(self) -> float | None:
        return self.abandoned / self.offered if self.offered else None

    @property
    def service_level(self) -> float | None:
        counted = self.offered - self.abandoned_short
        return self.answered_within_threshold / counted if counted > 0 else None


def daily_figures(
    results: Iterable[QueueCallResult], now: datetime, *,
    threshold_s: float = SERVICE_LEVEL_THRESHOLD_S, short_abandon_s: float = SHORT_ABANDON_S,
) -> DailyFigures:
    """Count today's (Asia/Shanghai) queue calls by when they entered the queue."""
    day, start, end = china_day_bounds(now)
    today = [r for r in results if start <= r.entered_at < end]
    answered = [r for r in today if r.outcome is QueueOutcome.ANSWERED]
    abandoned = [r for r in today if r.outcome is QueueOutcome.ABANDONED]
    return DailyFigures(
        day=day,
        offered=len(today),
        answered=len(answered),
        abandoned=len(abandoned),
        abandoned_short=sum(1 for r in abandoned if r.wait_s < short_abandon_s),
        no_agent=sum(1 for r in today if r.outcome is QueueOutcome.NO_AGENT),
        answered_within_threshold=sum(1 for r in answered if r.wait_s <= threshold_s),
        threshold_s=threshold_s,
        short_abandon_s=short_abandon_s,
    )
