"""Application: call back queued callers who chose a callback, when their place reaches the head.

A caller who pressed the queue's callback key has hung up, but their place stays in the
ACD pool as a waiting call that arrived when they first queued (``reserve`` with
``waiting_since``). When the pool hands that call an agent, ``QueueCallbackDialer`` asks
the switch to ring the agent first and, once the agent answers, to dial the citizen
through the outbound trunk (AMI Originate of ``Dial``). The outcome becomes a
``queue_callback`` event on the call's ticket.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import structlog

from acd.pool import AgentPool, ReleaseOutcome
from hotline.privacy import mask_phone
from hwd_bridge.ami_client import AmiClient, OriginateResult
from hwd_bridge.ami_errors import AmiError
from hwd_bridge.ami_protocol import AmiMessage
from ivr.engine import CallSession

log = structlog.get_logger(__name__)

# How long a kept place waits for an agent before the callback is left to the agents'
# callback list (the ticket's callback_requested event).
DEFAULT_MAX_KEEP_S = 4 * 3600.0
DEFAULT_RING_TIMEOUT_S = 30
# A trunk is a PJSIP endpoint name; a number is digits with an optional leading +.
_TRUNK_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,40}$")
_NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")
# Maximum wait for the end of a callback conversation when the Hangup event of the agent's
# channel is missed.
MAX_CALLBACK_TALK_S = 2 * 3600.0


class CallbackResult(enum.Enum):
    """Outcome of one queue callback."""

    CONNECTED = "connected"  # the agent answered and the citizen answered
    CITIZEN_NO_ANSWER = "citizen_no_answer"  # the agent answered, the citizen did not
    AGENT_NO_ANSWER = "agent_no_answer"
    FAILED = "failed"  # the switch could not place the call
    EXPIRED = "expired"  # no agent within the keep limit


class CallbackOriginator(Protocol):
    """Port to the switch: ring ``agent_endpoint``, then dial ``number`` through the trunk for the agent."""

    async def call_back(self, agent_endpoint: str, number: str, *, call_id: str,
                        ring_timeout_s: int) -> CallbackResult: ...


RecordOutcome = Callable[[CallSession, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    max_keep_s: float = DEFAULT_MAX_KEEP_S
    ring_timeout_s: int = DEFAULT_RING_TIMEOUT_S


class QueueCallbackDialer:
    """Keeps the places of callers who chose a callback and calls them back in queue order."""

    def __init__(self, pool: AgentPool, originator: CallbackOriginator, record: RecordOutcome, *,
                 settings: CallbackSettings | None = None) -> None:
        self._pool = pool
        self._originator = originator
        self._record = record
        self._settings = settings or CallbackSettings()
        self._tasks: set[asyncio.Task[CallbackResult]] = set()

    def keep(self, session: CallSession) -> asyncio.Task[CallbackResult] | None:
        """Start keeping the session's queue place; returns the task, or None when it has no place or number."""
        if session.queue_place is None or not session.callback_number:
            return None
        task = asyncio.create_task(self._serve(session), name=f"queue-callback-{session.call.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        """Cancel the kept places; their callback requests stay on the tickets for the agents."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            log.info("queue callbacks dropped at shutdown", count=len(tasks))

    async def _serve(self, session: CallSession) -> CallbackResult:
        place = session.queue_place
        number = session.callback_number
        assert place is not None and number is not None
        call_id = session.call.call_id
        # The kept place is a waiting call of its own, so the pool never confuses it with
        # the caller's finished call.
        waiting_id = f"{call_id}-callback"
        log.info("queue callback waiting", call_id=call_id, skill=place.skill)

        reservation = await self._pool.reserve(
            waiting_id, place.skill, timeout_s=self._settings.max_keep_s, priority=place.priority,
            needs=place.needs, preferred_agent=place.preferred_agent, waiting_since=place.waiting_since,
        )
        if reservation is None:
            self._pool.call_ended(waiting_id)
            await self._finish(session, CallbackResult.EXPIRED, agent_id=None)
            return CallbackResult.EXPIRED

        result = CallbackResult.FAILED
        try:
            result = await self._originator.call_back(reservation.endpoint, number, call_id=call_id,
                                                      ring_timeout_s=self._settings.ring_timeout_s)
        finally:
            await self._pool.release(reservation, reason="queue_callback", outcome=_release_outcome(result))
            self._pool.call_ended(waiting_id)
        await self._finish(session, result, agent_id=reservation.agent_id)
        return result

    async def _finish(self, session: CallSession, result: CallbackResult, *, agent_id: str | None) -> None:
        log.info("queue callback finished", call_id=session.call.call_id, ticket_id=session.ticket_id,
                 result=result.value, agent_id=agent_id)
        await self._record(session, {
            "call_id": session.call.call_id,
            "result": result.value,
            "agent_id": agent_id,
            "number_masked": mask_phone(session.callback_number),
        })


def _release_outcome(result: CallbackResult) -> ReleaseOutcome:
    if result in (CallbackResult.CONNECTED, CallbackResult.CITIZEN_NO_ANSWER):
        return ReleaseOutcome.ANSWERED
    if result is CallbackResult.AGENT_NO_ANSWER:
        return ReleaseOutcome.NO_ANSWER
    return ReleaseOutcome.ABANDONED


class AmiCallbackOriginator:
    """``CallbackOriginator`` over AMI: Originate ``PJSIP/<agent>`` running ``Dial(PJSIP/<number>@<trunk>)``.

    The agent's channel gets a known ``ChannelId``, so the ``DialEnd`` event of its Dial
    reports whether the citizen answered, and its ``Hangup`` event marks the end of the
    conversation. ``call_back`` returns only then, so the agent's wrap-up starts after the
    conversation, as after a queued call.
    """

    def __init__(self, ami: AmiClient, trunk: str, *, caller_id: str = "12349",
                 max_talk_s: float = MAX_CALLBACK_TALK_S) -> None:
        if not _TRUNK_RE.match(trunk):
            raise ValueError(f"invalid callback trunk {trunk!r}: use a PJSIP endpoint name")
        self._ami = ami
        self._trunk = trunk
        self._caller_id = caller_id
        self._max_talk_s = max_talk_s
        self._dial_ends: dict[str, asyncio.Future[str]] = {}
        self._hangups: dict[str, asyncio.Future[None]] = {}
        ami.subscribe(self._on_dial_end, event_names=["DialEnd"])
        ami.subscribe(self._on_hangup, event_names=["Hangup"])

    async def call_back(self, agent_endpoint: str, number: str, *, call_id: str,
                        ring_timeout_s: int) -> CallbackResult:
        if not _NUMBER_RE.match(number):
            raise ValueError(f"invalid callback number {mask_phone(number)}: expected 3 to 20 digits")
        channel_id = f"cb-{call_id}".replace(".", "-")
        loop = asyncio.get_running_loop()
        dial_end: asyncio.Future[str] = loop.create_future()
        hangup: asyncio.Future[None] = loop.create_future()
        self._dial_ends[channel_id] = dial_end
        self._hangups[channel_id] = hangup
        try:
            call = await self._ami.originate(
                f"PJSIP/{agent_endpoint}", application="Dial",
                data=f"PJSIP/{number}@{self._trunk},{ring_timeout_s}", caller_id=self._caller_id,
                ring_timeout_ms=ring_timeout_s * 1000, channel_id=channel_id,
                variables={"HOTLINE_CALLBACK_OF": call_id},
            )
            outcome = await call.outcome()
            if outcome.result is not OriginateResult.ANSWERED:
                log.info("queue callback agent did not answer", call_id=call_id, agent=agent_endpoint,
                         result=outcome.result.value)
                return (CallbackResult.AGENT_NO_ANSWER if outcome.result is OriginateResult.NO_ANSWER
                        else CallbackResult.FAILED)
            # The agent answered; Dial now rings the citizen and DialEnd reports the result.
            status = await asyncio.wait_for(dial_end, timeout=ring_timeout_s + 30)
            log.info("queue callback dialled citizen", call_id=call_id, dial_status=status)
            if status == "ANSWER":
                await self._conversation_over(hangup, call_id)
        except (AmiError, TimeoutError) as exc:
            log.warning("queue callback failed on the switch", call_id=call_id, error=str(exc))
            return CallbackResult.FAILED
        finally:
            self._dial_ends.pop(channel_id, None)
            self._hangups.pop(channel_id, None)

        return CallbackResult.CONNECTED if status == "ANSWER" else CallbackResult.CITIZEN_NO_ANSWER

    async def _conversation_over(self, hangup: asyncio.Future[None], call_id: str) -> None:
        """Wait for the agent's channel to hang up, at most ``max_talk_s``.

        NOTE: a Hangup event lost while AMI reconnects ends this wait only at the bound. The
        pool frees the agent earlier, ``reservation_ttl_s`` after the phone goes idle.
        """
        try:
            await asyncio.wait_for(asyncio.shield(hangup), timeout=self._max_talk_s)
        except TimeoutError:
            log.warning("queue callback hang-up not seen", call_id=call_id, max_talk_s=self._max_talk_s)

    def _on_hangup(self, event: AmiMessage) -> None:
        future = self._hangups.get(event.get("Uniqueid") or "")
        if future is not None and not future.done():
            future.set_result(None)

    def _on_dial_end(self, event: AmiMessage) -> None:
        future = self._dial_ends.get(event.get("Uniqueid") or "")
        if future is not None and not future.done():
            future.set_result(event.get("DialStatus") or "")
