"""Application: turns what happens on a call into call records, tickets and ticket events.

The flow runner calls the ``CallHooks`` methods (a category chosen, an agent answered,
an emergency, a voice message, a callback request, a survey answer) while the call runs;
the controller calls ``finish_call`` once it ends. Every write goes to SQLite first (the
ticket, its event and the outbox row in one transaction); ``on_written`` then wakes the
upward sync. A storage failure is logged with the call id and never breaks the call.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from hotline.privacy import mask_phone
from ivr.engine import CallSession
from storage.errors import StorageError
from storage.ticket_store import TicketStore
from tickets.call_record import CallInputs, CallOutcome, CallRecord, RecordedKey
from tickets.model import TicketCategory

log = structlog.get_logger(__name__)

IVR_ACTOR = "ivr"


class TicketDesk:
    """Opens one ticket per call that chose a category or reached an agent."""

    def __init__(self, store: TicketStore, *, on_written: Callable[[], None] = lambda: None):
        self._store = store
        self._on_written = on_written

    async def category_chosen(self, session: CallSession) -> None:
        if session.ticket_id is None:
            await self._open_ticket(session, reason="category_chosen")

    async def agent_answered(self, session: CallSession) -> None:
        if session.ticket_id is None:
            await self._open_ticket(session, reason="agent_answered")
        if session.ticket_id is None:
            return

        payload: dict[str, object] = {
            "agent_id": session.agent_id,
            "skill": session.skill,
            "talk_seconds": round(session.talk_seconds, 1),
            "answered_at": session.answered_at.isoformat() if session.answered_at else None,
        }
        await self._append(session, "agent_answered", payload)

    async def emergency_raised(self, session: CallSession) -> None:
        """Write an ``emergency_alert`` event, which the upward sync carries to the other tiers.

        The ticket's state does not change: the alert asks the tiers to watch the call.
        """
        # Other need tags (a disability, for example) are sensitive and stay off the event.
        await self._event_with_ticket(session, "emergency_alert", {
            "need": session.emergency_need,
            "priority": session.priority,
            "node": session.last_node,
            "skill": session.skill,
        })

    async def message_recorded(self, session: CallSession) -> None:
        await self._event_with_ticket(session, "voice_message", {
            "file_name": session.recording_file,
            "duration_seconds": round(session.recording_seconds, 1),
        })

    async def callback_requested(self, session: CallSession) -> None:
        # The county's agents need the clear number to call back. The upward envelope
        # masks phone numbers in every payload string, so only this tier stores it.
        # NOTE: it is stored unencrypted, like the caller number in the call records.
        await self._event_with_ticket(session, "callback_requested", {
            "number": session.callback_number,
            "number_masked": mask_phone(session.callback_number),
            "caller_number": session.callback_is_caller_number,
        })

    async def survey_answered(self, session: CallSession) -> None:
        await self._event_with_ticket(session, "satisfaction", {
            "score": session.survey_score,
            "agent_id": session.agent_id,
        })

    async def _event_with_ticket(self, session: CallSession, kind: str, payload: dict[str, object]) -> None:
        """Append an event, opening the call's ticket first when it has none."""
        if session.ticket_id is None:
            await self._open_ticket(session, reason=kind)
        if session.ticket_id is None:
            return
        await self._append(session, kind, payload)

    async def finish_call(self, session: CallSession) -> None:
        """Write the call record and, for a call with a ticket, the call's final event."""
        if session.ticket_id is not None:
            duration = (session.ended_at - session.call.started_at).total_seconds() if session.ended_at else None
            payload: dict[str, object] = {
                "outcome": session.outcome.value if session.outcome else None,
                "last_node": session.last_node,
                "duration_seconds": round(duration, 1) if duration is not None else None,
                "path": list(session.path),
                "emergency": session.emergency,
                "priority": session.priority,
                "fields": dict(session.fields),
                "transferred_to": session.transferred_to,
            }
            await self._append(session, "call_ended", payload)

        record = record_from_session(session)
        try:
            await self._store.record_call(record)
        except StorageError as exc:
            log.error("call record not written", call_id=session.call.call_id, error=str(exc))
            return
        log.info("call recorded", call_id=session.call.call_id, ticket_id=session.ticket_id,
                 outcome=record.outcome.value if record.outcome else None, path="→".join(session.path))

    async def _open_ticket(self, session: CallSession, *, reason: str) -> None:
        category = TicketCategory(session.category) if session.category else TicketCategory.OTHER
        payload = {
            "call_id": session.call.call_id,
            "channel": "phone",
            "skill": session.skill,
            "flow_id": session.flow_id,
            "flow_version": session.flow_version,
            "caller_flags": sorted(session.call.caller.flags),
            "opened_because": reason,
        }
        try:
            ticket = await self._store.open_ticket(
                session.call.call_id,
                category,
                mask_phone(session.call.caller.number),
                session.call.started_at,
                IVR_ACTOR,
                payload,
            )
        except StorageError as exc:
            log.error("ticket not opened", call_id=session.call.call_id, error=str(exc))
            return

        session.ticket_id = ticket.ticket_id
        self._on_written()

    async def _append(self, session: CallSession, kind: str, payload: dict[str, object]) -> None:
        assert session.ticket_id is not None
        try:
            event = await self._store.append_event(session.ticket_id, kind, IVR_ACTOR, payload)
        except StorageError as exc:
            log.error("ticket event not written", call_id=session.call.call_id, ticket_id=session.ticket_id,
                      kind=kind, error=str(exc))
            return
        log.info("ticket event written", call_id=session.call.call_id, ticket_id=session.ticket_id,
                 kind=kind, seq=event.seq)
        self._on_written()


def record_from_session(session: CallSession) -> CallRecord:
    """Build the stored call record from a finished session, with the caller's keys for replay."""
    caller = session.call.caller
    ended_ms = None
    if session.ended_at is not None:
        ended_ms = max(0, int((session.ended_at - session.call.started_at).total_seconds() * 1000))
    return CallRecord(
        call_id=session.call.call_id,
        caller_raw=caller.raw,
        caller_masked=mask_phone(caller.number),
        caller_flags=caller.flags,
        dialed=session.call.dialed,
        started_at=session.call.started_at,
        answered_at=session.answered_at,
        ended_at=session.ended_at,
        flow_id=session.flow_id,
        flow_version=session.flow_version,
        path=tuple(session.path),
        category=TicketCategory(session.category) if session.category else None,
        skill=session.skill,
        agent_id=session.agent_id,
        outcome=session.outcome,
        ticket_id=session.ticket_id,
        inputs=CallInputs(
            flow_version=session.flow_version,
            keys=tuple(RecordedKey(k.node, k.digits, k.outcome, k.at_ms) for k in session.keys),
            hung_up=session.outcome in (CallOutcome.ABANDONED_IN_MENU, CallOutcome.ABANDONED_IN_QUEUE),
            ended_ms=ended_ms,
        ),
    )
