"""Domain: the JSON envelope that carries one ticket event between tiers, and its acknowledgement.

``encode_envelope`` masks free text before anything leaves the node. ``decode_envelope``
validates every field of an incoming envelope and raises ``EnvelopeError`` naming the
field, so a bad message is rejected without being applied.

Wire form of an event (schema 1)::

    {"schema": 1, "type": "ticket_event", "event_id": "330106-20261204-0007#2",
     "origin_node": "county-330106", "tier": "county", "occurred_at": "2026-12-04T01:02:03.000000Z",
     "ticket": {"ticket_id": ..., "region_code": ..., "category": "dibao", "state": "new",
                "caller_masked": "138****5678", "call_id": ..., "created_at": ...,
                "updated_at": ..., "last_seq": 2},
     "event": {"seq": 2, "kind": "note_added", "actor": "agent-1001", "office": null,
               "from_state": "new", "to_state": null, "reason": null, "note": "..."},
     "payload": {...}}

``ticket`` is the snapshot of the ticket right after this event, so a parent can apply
events in any order and keep the snapshot of the highest sequence.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from hotline.privacy import mask_text
from tickets.model import (
    InvalidTicketId,
    Ticket,
    TicketCategory,
    TicketEvent,
    TicketState,
    Tier,
    event_id_for,
    parse_ticket_id,
    validate_node_id,
    validate_region_code,
)

# The schema version is "MAJOR.MINOR". A newer minor version only adds optional fields,
# so a node reads it and ignores the fields it does not know. Another major version may
# change what existing fields mean, so a node rejects it instead of guessing. The integer
# form (1) means 1.0; nodes send it while the minor version is 0, because nodes built
# before minor versions existed accept only that form.
SCHEMA_MAJOR = 1
SCHEMA_MINOR = 0
SCHEMA_VERSION: int | str = SCHEMA_MAJOR if SCHEMA_MINOR == 0 else f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
_SCHEMA_TEXT_RE = re.compile(r"^(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})$")
EVENT_TYPE = "ticket_event"
ACK_TYPE = "ticket_event_ack"

# Incoming messages above this size are rejected before JSON parsing.
MAX_ENVELOPE_BYTES = 4 * 1024 * 1024
MAX_PAYLOAD_DEPTH = 8

# Payload keys whose string values are identifiers or timestamps, which the digit masks
# would otherwise mangle (a call id such as "1700000000.42" looks like a phone number).
_ID_KEY_SUFFIXES = ("_id", "_at", "_version", "_code")
# Keyed hashes (HMAC-SHA256, hex) of a person's number or profile: they pass upward as they
# are, since they reveal nothing without the county's key, but only in that exact shape.
_REF_KEY_SUFFIXES = ("_ref", "_refs")
_REF_RE = re.compile(r"^[0-9a-f]{64}$")
# Encrypted copies of personal data; they are readable only at the county and never go up.
_SEALED_KEY_SUFFIX = "_sealed"
# The one personal value that goes upward in clear: the number the tier above calls back
# after an emergency overflowed to it. Without it no tier above the county could reach a
# caller in danger. It is allowed only at the top level of an "escalated" event whose
# payload reason is EMERGENCY_OVERFLOW_REASON, and only as a phone number.
EMERGENCY_CALLBACK_KEY = "emergency_callback_number"
EMERGENCY_OVERFLOW_REASON = "emergency_overflow"
_EMERGENCY_NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")


def _emergency_number_allowed(kind: str, payload: Mapping[str, Any]) -> bool:
    value = payload.get(EMERGENCY_CALLBACK_KEY)
    return (kind == "escalated" and payload.get("reason") == EMERGENCY_OVERFLOW_REASON
            and isinstance(value, str) and bool(_EMERGENCY_NUMBER_RE.match(value)))


class EnvelopeError(ValueError):
    """An envelope or acknowledgement is invalid; ``field`` names the offending field.

    ``origin_node`` and ``event_id`` are set when they could be read before the error,
    so the receiver can still address a rejection to the sender.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"invalid envelope field {field!r}: {problem}")
        self.field = field
        self.problem = problem
        self.origin_node: str | None = None
        self.event_id: str | None = None
        # The forwarding node, when the envelope names one; a rejection goes to it, not to the origin.
        self.sender_node: str | None = None


@dataclass(frozen=True, slots=True)
class EventEnvelope:
    """A validated ticket event as it travels between tiers."""

    event_id: str
    origin_node: str
    tier: Tier
    ticket: Ticket
    event: TicketEvent
    schema: int | str = SCHEMA_VERSION
    # The node that published this copy when it is not ``origin_node``: a tier that forwards
    # its children's events up the chain. Acknowledgements go to this node.
    sender_node: str | None = None

    @property
    def reply_node(self) -> str:
        """Return the node whose acks topic the receiver publishes the ack to: the sender of this copy."""
        return self.sender_node or self.origin_node

    @property
    def occurred_at(self) -> datetime:
        return self.event.occurred_at

    @property
    def payload(self) -> dict[str, Any]:
        return self.event.payload


@dataclass(frozen=True, slots=True)
class EventAck:
    """A parent's acknowledgement of one event: applied, duplicate or rejected."""

    event_id: str
    status: str
    acked_by: str
    error: str | None = None

    STATUSES = ("applied", "duplicate", "rejected")

    @property
    def ticket_id(self) -> str:
        return self.event_id.rsplit("#", 1)[0]

    @property
    def seq(self) -> int:
        return int(self.event_id.rsplit("#", 1)[1])


def format_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def mask_upward_text(value: Any, key: str = "") -> Any:
    """Mask phone and ID numbers in every string of ``value`` except identifier-like keys."""
    if isinstance(value, str):
        if key.endswith(_ID_KEY_SUFFIXES) or (key.endswith(_REF_KEY_SUFFIXES) and _REF_RE.match(value)):
            return value
        return mask_text(value)
    if isinstance(value, list):
        return [mask_upward_text(item, key) for item in value]
    if isinstance(value, dict):
        return {name: mask_upward_text(item, name) for name, item in value.items()
                if not name.endswith(_SEALED_KEY_SUFFIX)}
    return value


def _upward_payload(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Mask the payload for the trip upward, keeping an emergency overflow's callback number."""
    masked = mask_upward_text(payload)
    if _emergency_number_allowed(kind, payload):
        masked[EMERGENCY_CALLBACK_KEY] = payload[EMERGENCY_CALLBACK_KEY]
    return masked


def build_envelope(ticket: Ticket, event: TicketEvent) -> EventEnvelope:
    """Build the upward envelope for ``event``, with free text masked."""
    if ticket.ticket_id != event.ticket_id or ticket.last_seq != event.seq:
        raise ValueError(
            f"ticket snapshot {ticket.ticket_id}#{ticket.last_seq} does not match event {event.event_id}"
        )

    masked_event = TicketEvent(
        ticket_id=event.ticket_id,
        seq=event.seq,
        kind=event.kind,
        actor=event.actor,
        tier=event.tier,
        office=event.office,
        occurred_at=event.occurred_at,
        from_state=event.from_state,
        to_state=event.to_state,
        reason=event.reason,
        note=mask_text(event.note) if event.note is not None else None,
        payload=_upward_payload(event.kind, event.payload),
    )
    return EventEnvelope(
        event_id=event.event_id,
        origin_node=ticket.origin_node,
        tier=event.tier,
        ticket=ticket,
        event=masked_event,
    )


def encode_envelope(envelope: EventEnvelope) -> bytes:
    """Serialise an envelope to compact UTF-8 JSON."""
    ticket = envelope.ticket
    event = envelope.event
    document = {
        "schema": envelope.schema,
        "type": EVENT_TYPE,
        "event_id": envelope.event_id,
        "origin_node": envelope.origin_node,
        "tier": envelope.tier.value,
        "occurred_at": format_utc(event.occurred_at),
        "ticket": {
            "ticket_id": ticket.ticket_id,
            "region_code": ticket.region_code,
            "category": ticket.category.value,
            "state": ticket.state.value,
            "caller_masked": ticket.caller_masked,
            "call_id": ticket.call_id,
            "created_at": format_utc(ticket.created_at),
            "updated_at": format_utc(ticket.updated_at),
            "last_seq": ticket.last_seq,
        },
        "event": {
            "seq": event.seq,
            "kind": event.kind,
            "actor": event.actor,
            "office": event.office,
            "from_state": event.from_state.value if event.from_state else None,
            "to_state": event.to_state.value if event.to_state else None,
            "reason": event.reason,
            "note": event.note,
        },
        "payload": event.payload,
    }
    if envelope.sender_node is not None:
        document["sender_node"] = envelope.sender_node
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def decode_envelope(raw: bytes) -> EventEnvelope:
    """Parse and validate an incoming envelope; raise EnvelopeError on the first bad field."""
    document = _load_object(raw, "envelope")
    context: dict[str, str] = {}
    try:
        return _envelope_from_document(document, context)
    except EnvelopeError as exc:
        exc.origin_node = context.get("origin_node")
        exc.event_id = context.get("event_id")
        exc.sender_node = context.get("sender_node")
        raise


def encode_ack(ack: EventAck) -> bytes:
    document = {
        "schema": SCHEMA_VERSION,
        "type": ACK_TYPE,
        "event_id": ack.event_id,
        "status": ack.status,
        "acked_by": ack.acked_by,
        "error": ack.error,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_ack(raw: bytes) -> EventAck:
    """Parse and validate an acknowledgement; raise EnvelopeError on a bad field."""
    document = _load_object(raw, "ack")
    _check_header(document, ACK_TYPE)

    event_id = _string(document, "event_id")
    _split_event_id(event_id)
    status = _string(document, "status")
    if status not in EventAck.STATUSES:
        raise EnvelopeError("status", f"value {status!r} is not one of {', '.join(EventAck.STATUSES)}")

    acked_by = _node_id(document, "acked_by")
    error = _optional_string(document, "error")
    return EventAck(event_id=event_id, status=status, acked_by=acked_by, error=error)


# ---------------------------------------------------------------- validation helpers


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise EnvelopeError(what, f"size {len(raw)} bytes exceeds the limit of {MAX_ENVELOPE_BYTES}")
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise EnvelopeError(what, f"not valid UTF-8 at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise EnvelopeError(what, f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(document, dict):
        raise EnvelopeError(what, f"expected a JSON object, got {type(document).__name__}")
    return document


def parse_schema_version(value: Any) -> tuple[int, int]:
    """Return (major, minor) of a ``schema`` value: an integer major or a "MAJOR.MINOR" string."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, 0
    if isinstance(value, str):
        match = _SCHEMA_TEXT_RE.match(value)
        if match:
            return int(match.group(1)), int(match.group(2))
    raise EnvelopeError("schema", f"value {value!r} is not a schema version (an integer such as 1 or a string such as \"1.2\")")


def _check_header(document: dict[str, Any], expected_type: str) -> bool:
    """Check the schema version and message type; return True when the sender's minor version is newer."""
    if "schema" not in document:
        raise EnvelopeError("schema", "missing")
    value = document["schema"]
    major, minor = parse_schema_version(value)
    if major != SCHEMA_MAJOR:
        fix = (
            f"upgrade the hotline software on this node to a release that reads schema {major}.x"
            if major > SCHEMA_MAJOR
            else f"upgrade the hotline software on the sending node to a release that writes schema {SCHEMA_MAJOR}.x"
        )
        raise EnvelopeError(
            "schema",
            f"value {value!r} has major version {major}, but this node reads only major version {SCHEMA_MAJOR} "
            f"(up to {SCHEMA_MAJOR}.{SCHEMA_MINOR}), so the message was not applied; {fix}",
        )

    message_type = document.get("type")
    if message_type != expected_type:
        raise EnvelopeError("type", f"value {message_type!r} is not {expected_type!r}")
    return minor > SCHEMA_MINOR


def _envelope_from_document(document: dict[str, Any], context: dict[str, str]) -> EventEnvelope:
    # Step 1: the reply address, read first so that a rejection can reach the sender.
    origin_node = _node_id(document, "origin_node")
    context["origin_node"] = origin_node
    event_id = _string(document, "event_id")
    ticket_id, seq = _split_event_id(event_id)
    context["event_id"] = event_id
    sender_node = _node_id(document, "sender_node") if document.get("sender_node") is not None else None
    if sender_node is not None:
        context["sender_node"] = sender_node

    newer_minor = _check_header(document, EVENT_TYPE)
    allowed = {"schema", "type", "event_id", "origin_node", "tier", "occurred_at", "ticket", "event", "payload",
               "sender_node"}
    _reject_unknown(document, allowed, "", newer_minor=newer_minor)

    tier = _enum(document, "tier", Tier)
    occurred_at = _timestamp(document, "occurred_at")

    # Step 2: the ticket snapshot.
    ticket_doc = _object(document, "ticket")
    _reject_unknown(
        ticket_doc,
        {"ticket_id", "region_code", "category", "state", "caller_masked", "call_id", "created_at",
         "updated_at", "last_seq"},
        "ticket.",
        newer_minor=newer_minor,
    )
    snapshot_id = _string(ticket_doc, "ticket_id", "ticket.")
    if snapshot_id != ticket_id:
        raise EnvelopeError("ticket.ticket_id", f"value {snapshot_id!r} does not match event_id {event_id!r}")
    region_code = _string(ticket_doc, "region_code", "ticket.")
    try:
        validate_region_code(region_code)
    except ValueError as exc:
        raise EnvelopeError("ticket.region_code", str(exc)) from None
    if parse_ticket_id(ticket_id).region_code != region_code:
        raise EnvelopeError("ticket.region_code", f"value {region_code!r} does not match ticket id {ticket_id!r}")

    caller_masked = _string(ticket_doc, "caller_masked", "ticket.")
    _require_masked(caller_masked, "ticket.caller_masked")
    last_seq = _positive_int(ticket_doc, "last_seq", "ticket.")
    if last_seq != seq:
        raise EnvelopeError("ticket.last_seq", f"value {last_seq} does not match the event sequence {seq}")

    ticket = Ticket(
        ticket_id=ticket_id,
        origin_node=origin_node,
        region_code=region_code,
        category=_enum(ticket_doc, "category", TicketCategory, "ticket."),
        state=_enum(ticket_doc, "state", TicketState, "ticket."),
        caller_masked=caller_masked,
        call_id=_optional_string(ticket_doc, "call_id", "ticket."),
        created_at=_timestamp(ticket_doc, "created_at", "ticket."),
        updated_at=_timestamp(ticket_doc, "updated_at", "ticket."),
        last_seq=last_seq,
    )

    # Step 3: the event itself and its payload.
    event_doc = _object(document, "event")
    _reject_unknown(
        event_doc, {"seq", "kind", "actor", "office", "from_state", "to_state", "reason", "note"}, "event.",
        newer_minor=newer_minor,
    )
    event_seq = _positive_int(event_doc, "seq", "event.")
    if event_seq != seq:
        raise EnvelopeError("event.seq", f"value {event_seq} does not match event_id {event_id!r}")
    note = _optional_string(event_doc, "note", "event.")
    if note is not None:
        _require_masked(note, "event.note")
    reason = _optional_string(event_doc, "reason", "event.")
    if reason is not None:
        _require_masked(reason, "event.reason")

    payload = _object(document, "payload")
    kind_text = event_doc.get("kind")
    if isinstance(kind_text, str) and _emergency_number_allowed(kind_text, payload):
        _check_payload({k: v for k, v in payload.items() if k != EMERGENCY_CALLBACK_KEY}, "payload", depth=1)
    else:
        _check_payload(payload, "payload", depth=1)

    try:
        event = TicketEvent(
            ticket_id=ticket_id,
            seq=seq,
            kind=_string(event_doc, "kind", "event."),
            actor=_string(event_doc, "actor", "event."),
            tier=tier,
            office=_optional_string(event_doc, "office", "event."),
            occurred_at=occurred_at,
            from_state=_optional_enum(event_doc, "from_state", TicketState, "event."),
            to_state=_optional_enum(event_doc, "to_state", TicketState, "event."),
            reason=reason,
            note=note,
            payload=payload,
        )
    except ValueError as exc:
        raise EnvelopeError("event", str(exc)) from None

    return EventEnvelope(event_id=event_id, origin_node=origin_node, tier=tier, ticket=ticket, event=event,
                         sender_node=sender_node)


def _reject_unknown(document: dict[str, Any], allowed: set[str], prefix: str, *, newer_minor: bool = False) -> None:
    # A newer minor version may add optional fields, which this node ignores.
    unknown = sorted(set(document) - allowed)
    if unknown and not newer_minor:
        raise EnvelopeError(prefix + unknown[0], "unknown field")


def _split_event_id(event_id: str) -> tuple[str, int]:
    ticket_id, separator, seq_text = event_id.rpartition("#")
    if not separator or not seq_text.isdigit() or seq_text.startswith("0"):
        raise EnvelopeError("event_id", f"value {event_id!r} is not of the form <ticket id>#<seq>")
    try:
        parse_ticket_id(ticket_id)
    except InvalidTicketId as exc:
        raise EnvelopeError("event_id", str(exc)) from None
    seq = int(seq_text)
    if event_id_for(ticket_id, seq) != event_id:
        raise EnvelopeError("event_id", f"value {event_id!r} is not in canonical form")
    return ticket_id, seq


def _field_value(document: dict[str, Any], name: str, prefix: str) -> Any:
    if name not in document:
        raise EnvelopeError(prefix + name, "missing")
    return document[name]


def _string(document: dict[str, Any], name: str, prefix: str = "") -> str:
    value = _field_value(document, name, prefix)
    if not isinstance(value, str) or not value:
        raise EnvelopeError(prefix + name, f"value {value!r} is not a non-empty string")
    return value


def _optional_string(document: dict[str, Any], name: str, prefix: str = "") -> str | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise EnvelopeError(prefix + name, f"value {value!r} is not a string or null")
    return value


def _node_id(document: dict[str, Any], name: str) -> str:
    value = _string(document, name)
    try:
        return validate_node_id(value)
    except ValueError as exc:
        raise EnvelopeError(name, str(exc)) from None


def _positive_int(document: dict[str, Any], name: str, prefix: str = "") -> int:
    value = _field_value(document, name, prefix)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise EnvelopeError(prefix + name, f"value {value!r} is not a positive integer")
    return value


def _object(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = _field_value(document, name, "")
    if not isinstance(value, dict):
        raise EnvelopeError(name, f"expected a JSON object, got {type(value).__name__}")
    return value


def _enum(document: dict[str, Any], name: str, enum_type: Any, prefix: str = "") -> Any:
    value = _field_value(document, name, prefix)
    try:
        return enum_type(value)
    except ValueError:
        allowed = ", ".join(member.value for member in enum_type)
        raise EnvelopeError(prefix + name, f"value {value!r} is not one of {allowed}") from None


def _optional_enum(document: dict[str, Any], name: str, enum_type: Any, prefix: str = "") -> Any:
    if document.get(name) is None:
        return None
    return _enum(document, name, enum_type, prefix)


def _timestamp(document: dict[str, Any], name: str, prefix: str = "") -> datetime:
    value = _string(document, name, prefix)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise EnvelopeError(prefix + name, f"value {value!r} is not an ISO 8601 timestamp") from None
    if moment.tzinfo is None:
        raise EnvelopeError(prefix + name, f"value {value!r} has no UTC offset")
    return moment.astimezone(timezone.utc)


def _require_masked(value: str, field: str) -> None:
    # The value itself is left out of the message because it holds personal data.
    if mask_text(value) != value:
        raise EnvelopeError(field, "contains an unmasked phone or ID number; mask it before sending upward")


def _check_payload(value: Any, field: str, depth: int) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        raise EnvelopeError(field, f"nesting deeper than {MAX_PAYLOAD_DEPTH} levels")

    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key:
                raise EnvelopeError(field, f"key {key!r} is not a non-empty string")
            _check_payload(item, f"{field}.{key}", depth + 1)
        return

    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_payload(item, f"{field}[{index}]", depth + 1)
        return

    if isinstance(value, str):
        key = field.rsplit(".", 1)[-1].split("[", 1)[0]
        if key.endswith(_SEALED_KEY_SUFFIX):
            raise EnvelopeError(field, "sealed personal data must not leave the county node")
        hashed = key.endswith(_REF_KEY_SUFFIXES) and _REF_RE.match(value)
        if not hashed and not key.endswith(_ID_KEY_SUFFIXES):
            _require_masked(value, field)
        return

    if isinstance(value, float) and not math.isfinite(value):
        raise EnvelopeError(field, f"value {value!r} is not a finite number")
    if value is not None and not isinstance(value, (bool, int, float)):
        raise EnvelopeError(field, f"value of type {type(value).__name__} is not allowed")


# ---------------------------------------------------------------- downward instructions
#
# Wire form of an instruction from a parent tier to one child (schema 1)::
#
#     {"schema": 1, "type": "ticket_instruction", "instruction_id": "city-330100:1f0c9a7e55d2b3a4",
#      "issuer_node": "city-330100", "child_node": "county-330106", "ticket_id": "330106-20261204-0007",
#      "kind": "supervise", "actor": "city-duty-01", "office": "杭州市民政局", "reason": null,
#      "note": "请于今日内回复办理进展", "linked_ticket_id": null, "issued_at": "2026-12-04T03:00:00.000000Z"}
#
# The child applies it as an event of its own ticket and replies with a ``ticket_instruction_ack``.

INSTRUCTION_TYPE = "ticket_instruction"
INSTRUCTION_ACK_TYPE = "ticket_instruction_ack"

# Instruction kinds and their Chinese names. "link_escalation" carries the id of the ticket a
# parent opened for a 提级; the others are orders from the higher tier.
INSTRUCTION_KINDS: dict[str, str] = {
    "assign": "派单",
    "return": "退回下级办理",
    "supervise": "督办",
    "policy_notice": "政策通知",
    "link_escalation": "提级关联",
}

# Instruction ids appear inside outbox keys, which use "@" to separate the destination node.
INSTRUCTION_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,127}$")


@dataclass(frozen=True, slots=True)
class TicketInstruction:
    """An order from a parent tier to a child about one of the child's tickets."""

    instruction_id: str
    issuer_node: str
    child_node: str
    ticket_id: str
    kind: str
    actor: str
    issued_at: datetime
    office: str | None = None
    reason: str | None = None
    note: str | None = None
    linked_ticket_id: str | None = None


@dataclass(frozen=True, slots=True)
class InstructionAck:
    """A child's reply to one instruction: applied, duplicate or rejected with the child's message."""

    instruction_id: str
    status: str
    acked_by: str
    error: str | None = None

    STATUSES = ("applied", "duplicate", "rejected")


def encode_instruction(instruction: TicketInstruction) -> bytes:
    document = {
        "schema": SCHEMA_VERSION,
        "type": INSTRUCTION_TYPE,
        "instruction_id": instruction.instruction_id,
        "issuer_node": instruction.issuer_node,
        "child_node": instruction.child_node,
        "ticket_id": instruction.ticket_id,
        "kind": instruction.kind,
        "actor": instruction.actor,
        "office": instruction.office,
        "reason": instruction.reason,
        "note": instruction.note,
        "linked_ticket_id": instruction.linked_ticket_id,
        "issued_at": format_utc(instruction.issued_at),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_instruction(raw: bytes) -> TicketInstruction:
    """Parse and validate an instruction; raise EnvelopeError naming the first bad field."""
    document = _load_object(raw, "instruction")
    context: dict[str, str] = {}
    try:
        return _instruction_from_document(document, context)
    except EnvelopeError as exc:
        exc.origin_node = context.get("issuer_node")
        exc.event_id = context.get("instruction_id")
        raise


def _instruction_from_document(document: dict[str, Any], context: dict[str, str]) -> TicketInstruction:
    # Step 1: the reply address, so that a rejection can reach the issuer.
    issuer_node = _node_id(document, "issuer_node")
    context["issuer_node"] = issuer_node
    instruction_id = _instruction_id(document)
    context["instruction_id"] = instruction_id

    # Step 2: the header and the fields.
    newer_minor = _check_header(document, INSTRUCTION_TYPE)
    _reject_unknown(
        document,
        {"schema", "type", "instruction_id", "issuer_node", "child_node", "ticket_id", "kind", "actor", "office",
         "reason", "note", "linked_ticket_id", "issued_at"},
        "",
        newer_minor=newer_minor,
    )
    kind = _string(document, "kind")
    if kind not in INSTRUCTION_KINDS:
        raise EnvelopeError("kind", f"value {kind!r} is not one of {', '.join(INSTRUCTION_KINDS)}")
    ticket_id = _ticket_id(document, "ticket_id")
    linked_ticket_id = _ticket_id(document, "linked_ticket_id") if document.get("linked_ticket_id") else None
    if kind == "link_escalation" and linked_ticket_id is None:
        raise EnvelopeError("linked_ticket_id", "missing; a link_escalation instruction names the linked ticket")

    return TicketInstruction(
        instruction_id=instruction_id,
        issuer_node=issuer_node,
        child_node=_node_id(document, "child_node"),
        ticket_id=ticket_id,
        kind=kind,
        actor=_string(document, "actor"),
        issued_at=_timestamp(document, "issued_at"),
        office=_optional_string(document, "office"),
        reason=_optional_string(document, "reason"),
        note=_optional_string(document, "note"),
        linked_ticket_id=linked_ticket_id,
    )


def encode_instruction_ack(ack: InstructionAck) -> bytes:
    document = {
        "schema": SCHEMA_VERSION,
        "type": INSTRUCTION_ACK_TYPE,
        "instruction_id": ack.instruction_id,
        "status": ack.status,
        "acked_by": ack.acked_by,
        "error": ack.error,
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def decode_instruction_ack(raw: bytes) -> InstructionAck:
    """Parse and validate an instruction acknowledgement; raise EnvelopeError on a bad field."""
    document = _load_object(raw, "instruction ack")
    _check_header(document, INSTRUCTION_ACK_TYPE)
    instruction_id = _instruction_id(document)
    status = _string(document, "status")
    if status not in InstructionAck.STATUSES:
        raise EnvelopeError("status", f"value {status!r} is not one of {', '.join(InstructionAck.STATUSES)}")
    return InstructionAck(
        instruction_id=instruction_id,
        status=status,
        acked_by=_node_id(document, "acked_by"),
        error=_optional_string(document, "error"),
    )


def _instruction_id(document: dict[str, Any]) -> str:
    value = _string(document, "instruction_id")
    if not INSTRUCTION_ID_RE.match(value):
        raise EnvelopeError("instruction_id", f"value {value!r} is not 1-128 of a-z, 0-9, '_', '.', ':', '-'")
    return value


def _ticket_id(document: dict[str, Any], name: str) -> str:
    value = _string(document, name)
    try:
        parse_ticket_id(value)
    except InvalidTicketId as exc:
        raise EnvelopeError(name, str(exc)) from None
    return value
