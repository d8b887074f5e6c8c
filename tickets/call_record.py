"""Domain: the record every call leaves behind, whether or not it opened a ticket."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from tickets.model import TicketCategory, parse_ticket_id, require_utc


class CallOutcome(enum.Enum):
    """How a call ended from the hotline's point of view."""

    ANSWERED = "answered"
    ABANDONED_IN_MENU = "abandoned_in_menu"
    ABANDONED_IN_QUEUE = "abandoned_in_queue"
    NO_AGENT = "no_agent"  # no agent free within the queue's limit; kept for a callback
    COMPLETED = "completed"  # the flow ended without needing an agent
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as stored locally at the node that took it.

    ``caller_raw`` is the number exactly as the network gave it. It stays on this node,
    is never sent upward, and is left out of ``repr`` so that logging a record cannot
    leak it. ``path`` lists the flow nodes the caller passed through, in order.
    """

    call_id: str
    caller_raw: str = field(repr=False)
    caller_masked: str
    caller_flags: frozenset[str]
    dialed: str
    started_at: datetime
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    flow_id: str | None = None
    flow_version: str | None = None
    path: tuple[str, ...] = ()
    category: TicketCategory | None = None
    skill: str | None = None
    agent_id: str | None = None
    outcome: CallOutcome | None = None
    ticket_id: str | None = None

    def __post_init__(self) -> None:
        if not self.call_id:
            raise ValueError("call record: call_id is missing")

        object.__setattr__(self, "started_at", require_utc(self.started_at, "started_at"))
        for name in ("answered_at", "ended_at"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(value, name))

        object.__setattr__(self, "caller_flags", frozenset(self.caller_flags))
        object.__setattr__(self, "path", tuple(self.path))
        if self.ticket_id is not None:
            parse_ticket_id(self.ticket_id)
