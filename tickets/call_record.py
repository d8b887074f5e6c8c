"""Domain: the record every call leaves behind, whether or not it opened a ticket."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from tickets.model import TicketCategory, parse_ticket_id, require_utc


# Prefix of a sealed number (profiles.sealing.SEALED_PREFIX), repeated here so the ticket
# domain does not import the profile code.
SEALED_CALLER_PREFIX = "sealed:v1:"


class CallOutcome(enum.Enum):
    """How a call ended from the hotline's point of view."""

    ANSWERED = "answered"
    ABANDONED_IN_MENU = "abandoned_in_menu"
    ABANDONED_IN_QUEUE = "abandoned_in_queue"
    NO_AGENT = "no_agent"  # no agent free within the queue's limit; kept for a callback
    COMPLETED = "completed"  # the flow ended without needing an agent
    FAILED = "failed"

    @property
    def label(self) -> str:
        """Return the Chinese label operators read."""
        return _OUTCOME_LABELS[self]

    @property
    def reached_queue(self) -> bool:
        """Return True for the outcomes of calls that asked for an agent."""
        return self in (CallOutcome.ANSWERED, CallOutcome.ABANDONED_IN_QUEUE, CallOutcome.NO_AGENT)


_OUTCOME_LABELS = {
    CallOutcome.ANSWERED: "已接通坐席",
    CallOutcome.ABANDONED_IN_MENU: "菜单中挂机",
    CallOutcome.ABANDONED_IN_QUEUE: "排队中挂机",
    CallOutcome.NO_AGENT: "无空闲坐席",
    CallOutcome.COMPLETED: "流程结束（未转坐席）",
    CallOutcome.FAILED: "流程出错结束",
}


@dataclass(frozen=True, slots=True)
class RecordedKey:
    """One answer the caller gave to an input prompt: the node, the keys and when.

    ``outcome`` is the runner's verdict: ``accepted``, ``handler`` (a flow-wide key such as
    0 or 9), ``invalid`` or ``no_input``. ``at_ms`` counts from the call's answer. Digits
    typed into a collect node are kept only as their count (``<18 digits>``).
    """

    node: str
    digits: str
    outcome: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class CallInputs:
    """What the caller did on a call, kept so the call can be replayed against another flow.

    ``hung_up`` is True when the caller ended the call (rather than the flow), and
    ``ended_ms`` is when the call ended, counted from its answer.
    """

    flow_version: str
    keys: tuple[RecordedKey, ...] = ()
    hung_up: bool = False
    ended_ms: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", tuple(self.keys))

    def to_json(self) -> dict[str, object]:
        return {
            "flow_version": self.flow_version,
            "keys": [{"node": k.node, "digits": k.digits, "outcome": k.outcome, "at_ms": k.at_ms} for k in self.keys],
            "hung_up": self.hung_up,
            "ended_ms": self.ended_ms,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> CallInputs:
        keys = data.get("keys") or []
        assert isinstance(keys, list)
        ended_ms = data.get("ended_ms")
        return cls(
            flow_version=str(data.get("flow_version") or ""),
            keys=tuple(RecordedKey(str(k["node"]), str(k["digits"]), str(k["outcome"]), int(k["at_ms"])) for k in keys),
            hung_up=bool(data.get("hung_up")),
            ended_ms=int(ended_ms) if isinstance(ended_ms, (int, float)) else None,
        )


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as stored locally at the node that took it.

    ``caller_raw`` is the number exactly as the network gave it. A node with a profile
    store keeps it sealed (``sealed:v1:...``, see profiles.sealing), and only that node's
    keys open it; a node without one keeps it in clear. Either way it is never sent
    upward and is left out of ``repr`` so that logging a record cannot leak it.
    ``path`` lists the flow nodes the caller passed through, in order.
    ``inputs`` holds the caller's keys with their timing; records written before the
    inputs were kept have None.
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
    inputs: CallInputs | None = None

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

    @property
    def caller_sealed(self) -> bool:
        """True when ``caller_raw`` contains the sealed form rather than the number in clear."""
        return self.caller_raw.startswith(SEALED_CALLER_PREFIX)
