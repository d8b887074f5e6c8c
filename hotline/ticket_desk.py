"""Application: turns what happens on a call into call records, tickets and ticket events.

The flow runner calls the ``CallHooks`` methods (a category chosen, an agent answered,
an emergency, a voice message, a callback request, a survey answer) while the call runs;
the controller calls ``finish_call`` once it ends. Every write goes to SQLite first (the
ticket, its event and the outbox row in one transaction); ``on_written`` then wakes the
upward sync. A storage failure is logged with the call id and never breaks the call.

With a profile store, the desk is also the flow's ``CallerDirectory``: it matches the
caller's number to a citizen profile and that profile's open ticket at call start, and
writes the masked summary to the agent's screen when the call rings. It then keeps phone
numbers in call records and callback events only sealed (encrypted under the profile
keys, openable at this node) with a keyed hash beside them, never in clear.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import structlog

from hotline.privacy import mask_phone
from hotline.queue_callbacks import KeptPlace
from ivr.engine import CallSession
from ivr.ports import CallerProfile, OpenTicket
from profiles.keys import DecryptionFailed
from profiles.model import ProfileSummary
from profiles.phone import PhoneNumberError, normalise_phone
from profiles.sealing import SealedValueError, is_sealed
from storage.errors import StorageError, TicketNotFound
from storage.profile_store import ProfileStore
from storage.rows import KeptCallback
from storage.ticket_store import TicketStore
from tickets.call_record import CallInputs, CallOutcome, CallRecord, RecordedKey
from tickets.envelope import EMERGENCY_CALLBACK_KEY, EMERGENCY_OVERFLOW_REASON
from tickets.lifecycle import OPEN_STATES, TransitionRejected
from tickets.model import TicketCategory
from tier_sync.escalation import ESCALATE_TO_KEY

log = structlog.get_logger(__name__)

IVR_ACTOR = "ivr"

# Purposes bound into sealed numbers: the caller's number in a call record, and the
# number a callback request asks the agent to call.
CALLER_PURPOSE = "caller"
CALLBACK_PURPOSE = "callback"


# Recorded agent calls (MixMonitor) as ticket attachments. The switch writes the file at
# hang-up, so the desk waits up to 2 s for it.
CALL_RECORDING_MEDIA_TYPE = "audio/wav"
CALL_RECORDING_NOTE = "通话录音"
EMPTY_CALL_RECORDING_NOTE = "通话录音（无声音：交换机在通话中没有收到语音数据）"
WAV_HEADER_BYTES = 44
CALL_RECORDING_WAIT_STEPS = 20
CALL_RECORDING_WAIT_STEP_S = 0.1

# How many of a known caller's latest tickets are checked for one that is still open.
OPEN_TICKET_SEARCH_LIMIT = 5


class TicketDesk:
    """Opens one ticket per call that chose a category or reached an agent; finds known callers."""

    def __init__(self, store: TicketStore, *, on_written: Callable[[], None] = lambda: None,
                 profiles: ProfileStore | None = None, default_area_code: str | None = None,
                 call_recordings_dir: Path | None = None, parent_node_id: str | None = None):
        """``call_recordings_dir`` is the switch's monitor folder as this process sees it; with
        it, each recorded agent call is added to its ticket as an attachment. ``parent_node_id``
        is the node an emergency overflow's ticket is escalated to."""
        self._store = store
        self._parent_node_id = parent_node_id
        self._call_recordings_dir = call_recordings_dir
        self._on_written = on_written
        self._profiles = profiles
        self._default_area_code = default_area_code
        # Agent-level summaries of the known callers of live calls, by call id, for the screen.
        self._summaries: dict[str, ProfileSummary] = {}

    # Caller directory: the flow's profile lookup and the agent's screen.

    async def find_caller(self, call_id: str, caller_number: str | None) -> CallerProfile | None:
        """Return the profile matched by the caller's number and its open ticket, or None.

        A number shared by several profiles (a household landline) matches none of them,
        because the flow cannot tell which person is calling.
        """
        if self._profiles is None or caller_number is None:
            return None
        try:
            phone = normalise_phone(caller_number, default_area_code=self._default_area_code)
        except PhoneNumberError:
            log.info("caller number not looked up", call_id=call_id, reason="not a mainland number")
            return None

        try:
            summaries = await self._profiles.lookup_by_phone(phone, for_agent=True)
            if len(summaries) != 1:
                log.info("caller not matched to one profile", call_id=call_id, profiles=len(summaries))
                return None
            summary = summaries[0]
            open_ticket = await self._open_ticket_of(summary.profile_ref)
        except (StorageError, DecryptionFailed) as exc:
            log.error("profile lookup failed, caller treated as unknown", call_id=call_id, error=str(exc))
            return None

        self._summaries[call_id] = summary
        return CallerProfile(
            profile_ref=summary.profile_ref,
            need_tags=frozenset(tag.value for tag in summary.need_tags),
            preferred_agent=summary.preferred_agent,
            open_ticket=open_ticket,
        )

    async def _open_ticket_of(self, profile_ref: str) -> OpenTicket | None:
        assert self._profiles is not None
        for link in await self._profiles.recent_tickets(profile_ref, limit=OPEN_TICKET_SEARCH_LIMIT):
            try:
                ticket = await self._store.get_ticket(link.ticket_id)
            except TicketNotFound:
                continue
            if ticket.state in OPEN_STATES:
                return OpenTicket(link.ticket_id, link.skill, link.agent_id)
        return None

    async def agent_ringing(self, call_id: str, agent_id: str, caller: CallerProfile) -> None:
        """Write the caller's agent-level masked summary where ``hotline profiles screen`` reads it."""
        summary = self._summaries.get(call_id)
        if self._profiles is None or summary is None:
            return
        try:
            await self._profiles.show_on_screen(agent_id, call_id, summary)
        except StorageError as exc:
            log.error("agent screen not written", call_id=call_id, agent_id=agent_id, error=str(exc))
            return
        log.info("agent screen written", call_id=call_id, agent_id=agent_id)

    async def _link_ticket(self, session: CallSession) -> None:
        """Record the call's ticket, skill and agent against the caller's profile."""
        if self._profiles is None or session.caller_profile is None or session.ticket_id is None:
            return
        try:
            await self._profiles.link_ticket(session.caller_profile.profile_ref, session.ticket_id,
                                             skill=session.skill, agent_id=session.agent_id)
        except StorageError as exc:
            log.error("ticket not linked to profile", call_id=session.call.call_id, ticket_id=session.ticket_id,
                      error=str(exc))

    async def category_chosen(self, session: CallSession) -> None:
        if session.ticket_id is None:
            await self._open_ticket(session, reason="category_chosen")

    async def agent_answered(self, session: CallSession) -> None:
        if session.ticket_id is None:
            await self._open_ticket(session, reason="agent_answered")
        if session.ticket_id is None:
            return
        await self._link_ticket(session)

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

    async def overflow_dialling(self, session: CallSession) -> None:
        """Write ``emergency_overflow`` before the trunk dial, opening the ticket whose id travels with the call."""
        await self._event_with_ticket(session, "emergency_overflow", self._overflow_payload(session))

    async def overflow_escalated(self, session: CallSession) -> bool:
        """Escalate (提级) the call's ticket to the parent node as an emergency callback request.

        The parent opens its own linked ticket. The escalation carries the caller's number
        in clear (``EMERGENCY_CALLBACK_KEY``), the only number that goes upward, because the
        tier above must be able to call a caller in danger back.
        """
        if self._parent_node_id is None:
            log.error("emergency overflow not escalated: node has no parent", call_id=session.call.call_id,
                      ticket_id=session.ticket_id)
            return False
        if session.ticket_id is None:
            await self._open_ticket(session, reason="emergency_overflow")
        if session.ticket_id is None:
            return False

        number = session.call.caller.number
        payload = self._overflow_payload(session)
        payload.update({
            ESCALATE_TO_KEY: self._parent_node_id,
            "reason": EMERGENCY_OVERFLOW_REASON,
            # Sensitive, but the tier above needs them so that it does not ask again.
            "needs": sorted(session.needs),
            "number_masked": mask_phone(number),
        })
        if number:
            payload[EMERGENCY_CALLBACK_KEY] = number
        note = "紧急来电本级无坐席及时接听，已提级，请上级尽快回电"
        try:
            event = await self._store.apply_action(session.ticket_id, "escalate", IVR_ACTOR, note=note,
                                                   payload=payload)
        except (StorageError, TransitionRejected) as exc:
            log.error("emergency overflow not escalated", call_id=session.call.call_id,
                      ticket_id=session.ticket_id, error=str(exc))
            return False
        log.warning("emergency overflow escalated", call_id=session.call.call_id, ticket_id=session.ticket_id,
                    parent=self._parent_node_id, seq=event.seq)
        self._on_written()
        return True

    @staticmethod
    def _overflow_payload(session: CallSession) -> dict[str, object]:
        return {
            "call_id": session.call.call_id,
            "via": session.overflow_via,
            "tier": session.overflow_tier,
            "skill": session.skill,
            "priority": session.priority,
            "waited_seconds": session.overflow_waited_s,
        }

    async def message_recorded(self, session: CallSession) -> None:
        await self._event_with_ticket(session, "voice_message", {
            "file_name": session.recording_file,
            "duration_seconds": round(session.recording_seconds, 1),
        })

    async def callback_requested(self, session: CallSession) -> None:
        payload: dict[str, object] = {
            "call_id": session.call.call_id,
            "number_masked": mask_phone(session.callback_number),
            "caller_number": session.callback_is_caller_number,
        }
        payload.update(self._callback_number_fields(session, session.callback_number))
        if session.queue_place is not None:
            # The caller chose the callback while queued; their place in the queue is kept.
            payload["queue_skill"] = session.queue_place.skill
        await self._event_with_ticket(session, "callback_requested", payload)

    def _callback_number_fields(self, session: CallSession, number: str | None) -> dict[str, object]:
        """Return the number an agent calls back, sealed when the node has a profile store.

        With a profile store, `hotline profiles callback-number` opens it at this node,
        with an audit entry.
        """
        if self._profiles is not None and number:
            return {
                "number_sealed": self._profiles.seal_number(number, call_id=session.call.call_id,
                                                            purpose=CALLBACK_PURPOSE),
                "number_ref": self._profiles.number_ref(number),
            }
        # NOTE: a node without a profile store has no key, so the number stays in clear
        # at this node. The upward envelope masks phone numbers in every payload string.
        return {"number": number}

    async def _abandoned_callback_task(self, session: CallSession) -> None:
        """Turn a call abandoned in the queue into a ``callback_task`` event on its ticket."""
        number = session.call.caller.number
        waited = None
        if session.ended_at is not None and session.queue_entered_at is not None:
            waited = round((session.ended_at - session.queue_entered_at).total_seconds(), 1)
        payload: dict[str, object] = {
            "call_id": session.call.call_id,
            "reason": CallOutcome.ABANDONED_IN_QUEUE.value,
            "skill": session.skill,
            "waited_seconds": waited,
            "number_masked": mask_phone(number),
        }
        payload.update(self._callback_number_fields(session, number))
        await self._event_with_ticket(session, "callback_task", payload)

    async def queue_callback_finished(self, kept_place: KeptPlace, payload: dict[str, object]) -> None:
        """Record how the callback of a caller who kept their queue place ended (``queue_callback``)."""
        if kept_place.ticket_id is None:
            log.error("queue callback outcome not written: call has no ticket", call_id=kept_place.call_id,
                      result=payload.get("result"))
            return
        await self._append_to(kept_place.ticket_id, kept_place.call_id, "queue_callback", payload)

    # --- Kept queue places (KeptPlaceStore) ----------------------------------------------------

    async def save_kept_place(self, kept_place: KeptPlace) -> None:
        """Store a kept queue place at this node, the number sealed as in a callback request."""
        number = kept_place.number
        if self._profiles is not None:
            number = self._profiles.seal_number(number, call_id=kept_place.call_id, purpose=CALLBACK_PURPOSE)
        await self._store.keep_callback(KeptCallback(
            call_id=kept_place.call_id, ticket_id=kept_place.ticket_id, skill=kept_place.skill,
            priority=kept_place.priority, needs=kept_place.needs, preferred_agent=kept_place.preferred_agent,
            queued_at=kept_place.queued_at, expires_at=kept_place.expires_at, number_raw=number,
        ))
        log.info("queue callback place stored", call_id=kept_place.call_id, ticket_id=kept_place.ticket_id)

    async def forget_kept_place(self, call_id: str) -> None:
        await self._store.forget_callback(call_id)

    async def kept_places(self) -> list[KeptPlace]:
        """Return the places stored by an earlier run, oldest first.

        A place whose number cannot be opened (key missing or replaced) is removed and
        logged. Its ticket's callback request stays on the agents' callback list.
        """
        places = []
        for row in await self._store.list_kept_callbacks():
            number = row.number_raw
            try:
                if is_sealed(number):
                    if self._profiles is None:
                        raise DecryptionFailed("the node has no profile store to open the number")
                    number = self._profiles.unseal_number(number, call_id=row.call_id, purpose=CALLBACK_PURPOSE)
            except (DecryptionFailed, SealedValueError) as exc:
                log.error("queue callback place dropped: number cannot be opened", call_id=row.call_id,
                          ticket_id=row.ticket_id, error=str(exc))
                await self._store.forget_callback(row.call_id)
                continue
            places.append(KeptPlace(
                call_id=row.call_id, ticket_id=row.ticket_id, number=number, skill=row.skill,
                priority=row.priority, needs=row.needs, preferred_agent=row.preferred_agent,
                queued_at=row.queued_at, expires_at=row.expires_at,
            ))
        return places

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
        """Write the call record and, for a call with a ticket, the call's final event.

        A caller with a number who hung up while queued gets a callback task (a ticket is
        opened for it when the call had none).
        """
        if session.outcome is CallOutcome.ABANDONED_IN_QUEUE and session.call.caller.number:
            await self._abandoned_callback_task(session)

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
            await self._attach_call_recording(session)

        self._summaries.pop(session.call.call_id, None)
        record = record_from_session(session, self._profiles)
        try:
            await self._store.record_call(record)
        except StorageError as exc:
            log.error("call record not written", call_id=session.call.call_id, error=str(exc))
            return
        log.info("call recorded", call_id=session.call.call_id, ticket_id=session.ticket_id,
                 outcome=record.outcome.value if record.outcome else None, path="→".join(session.path))

    async def _attach_call_recording(self, session: CallSession) -> None:
        """Add the agent call's recording to the ticket, stored by the SHA-256 of its content."""
        if self._call_recordings_dir is None or session.call_recording_file is None or session.ticket_id is None:
            return
        path = self._call_recordings_dir / session.call_recording_file
        # MixMonitor closes the file when the channel hangs up, which can be just after the
        # AGI session ends.
        for _ in range(CALL_RECORDING_WAIT_STEPS):
            if path.is_file():
                break
            await asyncio.sleep(CALL_RECORDING_WAIT_STEP_S)
        # A WAV file of header only (44 bytes) means the switch received no audio on the
        # bridge. The attachment's note states this, because the file contains no conversation.
        note = CALL_RECORDING_NOTE
        try:
            if path.is_file() and path.stat().st_size <= WAV_HEADER_BYTES:
                note = EMPTY_CALL_RECORDING_NOTE
                log.warning("call recording has no audio", call_id=session.call.call_id,
                            ticket_id=session.ticket_id, file=session.call_recording_file)
            sha256 = await self._store.add_attachment(session.ticket_id, path, CALL_RECORDING_MEDIA_TYPE, IVR_ACTOR,
                                                      note=note)
        except (OSError, StorageError) as exc:
            log.error("call recording not attached", call_id=session.call.call_id, ticket_id=session.ticket_id,
                      file=session.call_recording_file, error=str(exc))
            return
        log.info("call recording attached", call_id=session.call.call_id, ticket_id=session.ticket_id,
                 sha256=sha256[:12])
        self._on_written()

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
        if self._profiles is not None and session.call.caller.number:
            payload["caller_ref"] = self._profiles.number_ref(session.call.caller.number)
        if session.caller_profile is not None:
            payload["profile_ref"] = session.caller_profile.profile_ref
        if session.handoff is not None and session.handoff.ticket_id is not None:
            # The call overflowed here from a lower tier; its ticket there is linked.
            payload["lower_tier_ticket_id"] = session.handoff.ticket_id
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
        await self._link_ticket(session)

    async def _append(self, session: CallSession, kind: str, payload: dict[str, object]) -> None:
        assert session.ticket_id is not None
        await self._append_to(session.ticket_id, session.call.call_id, kind, payload)

    async def _append_to(self, ticket_id: str, call_id: str, kind: str, payload: dict[str, object]) -> None:
        try:
            event = await self._store.append_event(ticket_id, kind, IVR_ACTOR, payload)
        except StorageError as exc:
            log.error("ticket event not written", call_id=call_id, ticket_id=ticket_id, kind=kind, error=str(exc))
            return
        log.info("ticket event written", call_id=call_id, ticket_id=ticket_id, kind=kind, seq=event.seq)
        self._on_written()


def record_from_session(session: CallSession, profiles: ProfileStore | None = None) -> CallRecord:
    """Build the stored call record from a finished session, with the caller's keys for replay.

    With a profile store the caller's number is stored sealed (see profiles.sealing).
    """
    caller = session.call.caller
    caller_raw = caller.raw
    if profiles is not None and caller.raw:
        caller_raw = profiles.seal_number(caller.raw, call_id=session.call.call_id, purpose=CALLER_PURPOSE)
    ended_ms = None
    if session.ended_at is not None:
        ended_ms = max(0, int((session.ended_at - session.call.started_at).total_seconds() * 1000))
    return CallRecord(
        call_id=session.call.call_id,
        caller_raw=caller_raw,
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
