"""Domain: tickets (工单), their events, states, categories and readable ticket ids; no I/O."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

# Calendar days (the date inside a ticket id, daily sequences) follow China Standard Time.
CHINA_TZ = ZoneInfo("Asia/Shanghai")

# GB/T 2260 region code: 6 digits. The ministry has no code and uses this sentinel.
REGION_CODE_RE = re.compile(r"^[0-9]{6}$")
MINISTRY_REGION_CODE = "000000"

# Node ids appear inside MQTT topic levels and client ids, so they exclude "/", "+" and "#".
NODE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")

# Event kinds are short machine words such as "created" or "state_changed".
EVENT_KIND_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

TICKET_ID_RE = re.compile(r"^(?P<region>[0-9]{6})-(?P<day>[0-9]{8})-(?P<sequence>[0-9]{4})$")
MAX_DAILY_SEQUENCE = 9999


class TicketState(enum.Enum):
    """Ticket lifecycle state; the value is the wire and database spelling."""

    NEW = "new"
    DISPATCHED = "dispatched"
    ACCEPTED = "accepted"
    RETURNED = "returned"
    IN_PROGRESS = "in_progress"
    PENDING = "pending"
    RESOLVED = "resolved"
    VERIFYING = "verifying"
    CLOSED = "closed"
    REOPENED = "reopened"
    MERGED = "merged"
    ESCALATED = "escalated"
    CANCELLED = "cancelled"

    @property
    def label(self) -> str:
        return _STATE_LABELS[self]


_STATE_LABELS = {
    TicketState.NEW: "受理",
    TicketState.DISPATCHED: "派单",
    TicketState.ACCEPTED: "签收",
    TicketState.RETURNED: "退回",
    TicketState.IN_PROGRESS: "办理中",
    TicketState.PENDING: "挂起",
    TicketState.RESOLVED: "办结",
    TicketState.VERIFYING: "回访",
    TicketState.CLOSED: "归档",
    TicketState.REOPENED: "重办",
    TicketState.MERGED: "并单",
    TicketState.ESCALATED: "提级",
    TicketState.CANCELLED: "撤销",
}


class TicketCategory(enum.Enum):
    """Assistance category (救助类型) chosen by the caller or the agent."""

    DIBAO = "dibao"
    TEKUN = "tekun"
    LINSHI = "linshi"
    ERTONG = "ertong"
    YANGLAO = "yanglao"
    LIULANG = "liulang"
    ZHENGCE = "zhengce"
    OTHER = "other"

    @property
    def label(self) -> str:
        return _CATEGORY_LABELS[self]


_CATEGORY_LABELS = {
    TicketCategory.DIBAO: "低保",
    TicketCategory.TEKUN: "特困供养",
    TicketCategory.LINSHI: "临时救助",
    TicketCategory.ERTONG: "儿童福利",
    TicketCategory.YANGLAO: "养老服务",
    TicketCategory.LIULANG: "流浪乞讨救助",
    TicketCategory.ZHENGCE: "政策咨询",
    TicketCategory.OTHER: "其他",
}


class Tier(enum.Enum):
    """Administrative tier of a hotline node."""

    MINISTRY = "ministry"
    PROVINCE = "province"
    CITY = "city"
    COUNTY = "county"

    @property
    def label(self) -> str:
        return {"ministry": "部", "province": "省", "city": "市", "county": "县"}[self.value]


class InvalidTicketId(ValueError):
    """A ticket id does not have the form ``<region>-<YYYYMMDD>-<NNNN>``."""


@dataclass(frozen=True, slots=True)
class TicketId:
    """Parsed ticket id, for example ``330106-20261204-0007``."""

    region_code: str
    day: date
    sequence: int

    def __str__(self) -> str:
        return format_ticket_id(self.region_code, self.day, self.sequence)


def format_ticket_id(region_code: str, day: date, sequence: int) -> str:
    """Build the ticket id that an agent can read aloud to the caller."""
    validate_region_code(region_code)
    if not 1 <= sequence <= MAX_DAILY_SEQUENCE:
        raise ValueError(f"daily ticket sequence {sequence} is outside 1..{MAX_DAILY_SEQUENCE}")
    return f"{region_code}-{day:%Y%m%d}-{sequence:04d}"


def parse_ticket_id(value: str) -> TicketId:
    """Parse and validate a ticket id; raise InvalidTicketId naming the bad value."""
    match = TICKET_ID_RE.match(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidTicketId(
            f"invalid ticket id {value!r}: expected <6-digit region>-<YYYYMMDD>-<4-digit sequence>, "
            "for example 330106-20261204-0007"
        )

    try:
        day = datetime.strptime(match["day"], "%Y%m%d").date()
    except ValueError:
        raise InvalidTicketId(f"invalid ticket id {value!r}: {match['day']} is not a calendar date") from None

    sequence = int(match["sequence"])
    if sequence == 0:
        raise InvalidTicketId(f"invalid ticket id {value!r}: the daily sequence starts at 0001")
    return TicketId(region_code=match["region"], day=day, sequence=sequence)


def is_ticket_id(value: str) -> bool:
    try:
        parse_ticket_id(value)
    except InvalidTicketId:
        return False
    return True


def china_day(moment: datetime) -> date:
    """Return the Asia/Shanghai calendar date of an aware UTC timestamp."""
    return require_utc(moment, "moment").astimezone(CHINA_TZ).date()


def validate_region_code(value: str) -> str:
    if not isinstance(value, str) or not REGION_CODE_RE.match(value):
        raise ValueError(f"invalid region code {value!r}: expected 6 digits (GB/T 2260), e.g. 330106")
    return value


def validate_node_id(value: str) -> str:
    if not isinstance(value, str) or not NODE_ID_RE.match(value):
        raise ValueError(
            f"invalid node id {value!r}: expected 1-63 characters of a-z, 0-9, '-' or '_', "
            "for example county-330106"
        )
    return value


def tier_for_region_code(region_code: str) -> Tier:
    """Guess the tier from the shape of a GB/T 2260 code.

    NOTE: municipalities, province-administered county-level units and cities without
    counties break this rule; nodes in those places must pass their tier explicitly.
    """
    validate_region_code(region_code)
    if region_code == MINISTRY_REGION_CODE:
        return Tier.MINISTRY
    if region_code.endswith("0000"):
        return Tier.PROVINCE
    if region_code.endswith("00"):
        return Tier.CITY
    return Tier.COUNTY


def require_utc(moment: datetime, name: str) -> datetime:
    """Return ``moment`` converted to UTC; naive datetimes are rejected."""
    if not isinstance(moment, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(moment).__name__}")
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc)


def event_id_for(ticket_id: str, seq: int) -> str:
    """Return the wire id of an event, stable across re-publishes."""
    return f"{ticket_id}#{seq}"


@dataclass(frozen=True, slots=True)
class Ticket:
    """One ticket as stored at the node that owns it or at a parent tier that received it.

    ``origin_node`` is the node that opened it. ``last_seq`` is the highest event
    sequence applied to this copy. Only the masked caller number is kept here.
    """

    ticket_id: str
    origin_node: str
    region_code: str
    category: TicketCategory
    state: TicketState
    caller_masked: str
    call_id: str | None
    created_at: datetime
    updated_at: datetime
    last_seq: int

    def __post_init__(self) -> None:
        parse_ticket_id(self.ticket_id)
        validate_node_id(self.origin_node)
        validate_region_code(self.region_code)
        object.__setattr__(self, "created_at", require_utc(self.created_at, "created_at"))
        object.__setattr__(self, "updated_at", require_utc(self.updated_at, "updated_at"))
        if self.last_seq < 0:
            raise ValueError(f"ticket {self.ticket_id}: last_seq {self.last_seq} is negative")


@dataclass(frozen=True, slots=True)
class TicketEvent:
    """One change to a ticket: who, which tier and office, when, from and to which state, and why.

    ``seq`` numbers the events of one ticket from 1 without gaps at the owning node.
    """

    ticket_id: str
    seq: int
    kind: str
    actor: str
    tier: Tier
    office: str | None
    occurred_at: datetime
    from_state: TicketState | None
    to_state: TicketState | None
    reason: str | None = None
    note: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_ticket_id(self.ticket_id)
        if self.seq < 1:
            raise ValueError(f"event of ticket {self.ticket_id}: seq {self.seq} must be 1 or more")
        if not EVENT_KIND_RE.match(self.kind):
            raise ValueError(f"event of ticket {self.ticket_id}: invalid kind {self.kind!r}")
        if not self.actor:
            raise ValueError(f"event of ticket {self.ticket_id}: actor is missing")
        object.__setattr__(self, "occurred_at", require_utc(self.occurred_at, "occurred_at"))

    @property
    def event_id(self) -> str:
        return event_id_for(self.ticket_id, self.seq)
