"""A settable monotonic clock and a recorder that keeps the ACD pool's events and decisions in lists."""

from __future__ import annotations

from acd.decisions import AgentEvent, RoutingDecision


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ListRecorder:
    def __init__(self) -> None:
        self.events: list[AgentEvent] = []
        self.decisions: list[RoutingDecision] = []

    def agent_event(self, event: AgentEvent) -> None:
        self.events.append(event)

    def decision(self, decision: RoutingDecision) -> None:
        self.decisions.append(decision)
