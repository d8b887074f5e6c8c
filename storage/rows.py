"""Storage: translation between SQLite rows and the domain's frozen dataclasses."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from tickets.call_record import CallInputs, CallOutcome, CallRecord
from tickets.model import Ticket, TicketCategory, TicketEvent, TicketState, Tier


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One event waiting to be acknowledged by the parent tier.

    ``envelope`` is the exact byte string to publish; it is built once, when the event
    is written, so that every re-publish carries the same event id and content.
    """

    row_id: int
    event_id: str
    ticket_id: str
    seq: int
    envelope: bytes
    size: int
    created_at: datetime
    sent_at: datetime | None
    attempts: int
    dead_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """A stored attachment (photo, call recording), named by the SHA-256 of its content."""

    sha256: str
    size: int
    media_type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TicketLink:
    """A link from one ticket to another, written by 并单 (kind "merged") or 提级 (kind "escalated").

    ``seq`` is the event of ``ticket_id`` that created the link.
    """

    ticket_id: str
    kind: str
    linked_ticket_id: str
    seq: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeptCallback:
    """A queue place kept for a caller who chose a callback, as stored at the county node.

    ``number_raw`` is the number to call, sealed when the node has a profile store.
    """

    call_id: str
    ticket_id: str | None
    skill: str
    priority: int
    needs: frozenset[str]
    preferred_agent: str | None
    queued_at: datetime
    expires_at: datetime
    number_raw: str


def row_from_kept_callback(kept_place: KeptCallback, recorded_at: datetime) -> dict[str, Any]:
    return {
        "call_id": kept_place.call_id,
        "ticket_id": kept_place.ticket_id,
        "skill": kept_place.skill,
        "priority": kept_place.priority,
        "needs": canonical_json(sorted(kept_place.needs)),
        "preferred_agent": kept_place.preferred_agent,
        "queued_at": text_from_time(kept_place.queued_at),
        "expires_at": text_from_time(kept_place.expires_at),
        "number_raw": kept_place.number_raw,
        "recorded_at": text_from_time(recorded_at),
    }


def kept_callback_from_row(row: sqlite3.Row) -> KeptCallback:
    queued_at = time_from_text(row["queued_at"])
    expires_at = time_from_text(row["expires_at"])
    assert queued_at is not None and expires_at is not None
    return KeptCallback(
        call_id=row["call_id"],
        ticket_id=row["ticket_id"],
        skill=row["skill"],
        priority=row["priority"],
        needs=frozenset(json.loads(row["needs"])),
        preferred_agent=row["preferred_agent"],
        queued_at=queued_at,
        expires_at=expires_at,
        number_raw=row["number_raw"],
    )


def text_from_time(moment: datetime | None) -> str | None:
    """Format a timestamp as fixed-width ISO UTC text, which sorts in time order."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def time_from_text(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromisoformat(value).astimezone(timezone.utc)


def canonical_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _event_content(event: TicketEvent) -> dict[str, Any]:
    """Return the fields of an event that its digest covers, in column spelling."""
    return {
        "kind": event.kind,
        "actor": event.actor,
        "tier": event.tier.value,
        "office": event.office,
        "occurred_at": text_from_time(event.occurred_at),
        "from_state": event.from_state.value if event.from_state else None,
        "to_state": event.to_state.value if event.to_state else None,
        "reason": event.reason,
        "note": event.note,
        "payload": event.payload,
    }


def event_digest(event: TicketEvent) -> str:
    """Return a hash of an event's content, used to tell a true duplicate from a conflict."""
    return hashlib.sha256(canonical_json(_event_content(event)).encode()).hexdigest()


def ticket_from_row(row: sqlite3.Row) -> Ticket:
    return Ticket(
        ticket_id=row["ticket_id"],
        origin_node=row["origin_node"],
        region_code=row["region_code"],
        category=TicketCategory(row["category"]),
        state=TicketState(row["state"]),
        caller_masked=row["caller_masked"],
        call_id=row["call_id"],
        created_at=time_from_text(row["created_at"]),
        updated_at=time_from_text(row["updated_at"]),
        last_seq=row["last_seq"],
    )


def row_from_ticket(ticket: Ticket) -> dict[str, Any]:
    return {
        "ticket_id": ticket.ticket_id,
        "origin_node": ticket.origin_node,
        "region_code": ticket.region_code,
        "category": ticket.category.value,
        "state": ticket.state.value,
        "caller_masked": ticket.caller_masked,
        "call_id": ticket.call_id,
        "created_at": text_from_time(ticket.created_at),
        "updated_at": text_from_time(ticket.updated_at),
        "last_seq": ticket.last_seq,
    }


def event_from_row(row: sqlite3.Row) -> TicketEvent:
    return TicketEvent(
        ticket_id=row["ticket_id"],
        seq=row["seq"],
        kind=row["kind"],
        actor=row["actor"],
        tier=Tier(row["tier"]),
        office=row["office"],
        occurred_at=time_from_text(row["occurred_at"]),
        from_state=TicketState(row["from_state"]) if row["from_state"] else None,
        to_state=TicketState(row["to_state"]) if row["to_state"] else None,
        reason=row["reason"],
        note=row["note"],
        payload=json.loads(row["payload"]),
    )


def row_from_event(event: TicketEvent, origin_node: str, recorded_at: datetime) -> dict[str, Any]:
    return {
        "ticket_id": event.ticket_id,
        "seq": event.seq,
        **_event_content(event),
        "payload": canonical_json(event.payload),
        "origin_node": origin_node,
        "digest": event_digest(event),
        "recorded_at": text_from_time(recorded_at),
    }


def call_from_row(row: sqlite3.Row) -> CallRecord:
    return CallRecord(
        call_id=row["call_id"],
        caller_raw=row["caller_raw"],
        caller_masked=row["caller_masked"],
        caller_flags=frozenset(json.loads(row["caller_flags"])),
        dialed=row["dialed"],
        started_at=time_from_text(row["started_at"]),
        answered_at=time_from_text(row["answered_at"]),
        ended_at=time_from_text(row["ended_at"]),
        flow_id=row["flow_id"],
        flow_version=row["flow_version"],
        path=tuple(json.loads(row["path"])),
        category=TicketCategory(row["category"]) if row["category"] else None,
        skill=row["skill"],
        agent_id=row["agent_id"],
        outcome=CallOutcome(row["outcome"]) if row["outcome"] else None,
        ticket_id=row["ticket_id"],
        inputs=CallInputs.from_json(json.loads(row["inputs"])) if row["inputs"] else None,
    )


def row_from_call(record: CallRecord, recorded_at: datetime) -> dict[str, Any]:
    return {
        "call_id": record.call_id,
        "caller_raw": record.caller_raw,
        "caller_masked": record.caller_masked,
        "caller_flags": json.dumps(sorted(record.caller_flags)),
        "dialed": record.dialed,
        "started_at": text_from_time(record.started_at),
        "answered_at": text_from_time(record.answered_at),
        "ended_at": text_from_time(record.ended_at),
        "flow_id": record.flow_id,
        "flow_version": record.flow_version,
        "path": json.dumps(list(record.path), ensure_ascii=False),
        "category": record.category.value if record.category else None,
        "skill": record.skill,
        "agent_id": record.agent_id,
        "outcome": record.outcome.value if record.outcome else None,
        "ticket_id": record.ticket_id,
        "inputs": json.dumps(record.inputs.to_json(), ensure_ascii=False) if record.inputs else None,
        "recorded_at": text_from_time(recorded_at),
    }


def outbox_from_row(row: sqlite3.Row) -> OutboxRow:
    return OutboxRow(
        row_id=row["row_id"],
        event_id=row["event_id"],
        ticket_id=row["ticket_id"],
        seq=row["seq"],
        envelope=bytes(row["envelope"]),
        size=row["size"],
        created_at=time_from_text(row["created_at"]),
        sent_at=time_from_text(row["sent_at"]),
        attempts=row["attempts"],
        dead_reason=row["dead_reason"],
    )


def attachment_from_row(row: sqlite3.Row) -> Attachment:
    return Attachment(
        sha256=row["sha256"],
        size=row["size"],
        media_type=row["media_type"],
        created_at=time_from_text(row["created_at"]),
    )


def link_from_row(row: sqlite3.Row) -> TicketLink:
    return TicketLink(
        ticket_id=row["ticket_id"],
        kind=row["kind"],
        linked_ticket_id=row["linked_ticket_id"],
        seq=row["seq"],
        created_at=time_from_text(row["created_at"]),
    )
