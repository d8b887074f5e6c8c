"""Application: call back queued callers who chose a callback, when their place reaches the head.

A caller who pressed the queue's callback key has hung up, but their place stays in the
ACD pool as a waiting call that arrived when they first queued (``reserve`` with
``waiting_since``). When the pool hands that call an agent, ``QueueCallbackDialer`` asks
the switch to ring the agent first and, once the agent answers, to dial the citizen
through the outbound trunk (AMI Originate of ``Dial``). The outcome becomes a
``queue_callback`` event on the call's ticket.

Kept places are also stored at the node (``KeptPlaceStore``), so a controller that is
restarted, or killed, calls the waiting citizens back in their original order.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from acd.pool import AgentPool, ReleaseOutcome
from hotline.privacy import mask_phone
from hwd_bridge.ami_client import AmiClient, OriginateResult
from hwd_bridge.ami_errors import AmiError
from hwd_bridge.ami_protocol import AmiMessage
from ivr.engine import CallSession
from storage.errors import StorageError

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


@dataclass(frozen=True, slots=True)
class KeptPlace:
    """A callback caller's kept queue place: the call, its ticket, the number and the routing of the call.

    ``queued_at`` is when the call first asked for an agent and ``expires_at`` when the
    place is given up, both in UTC, so a place survives a controller restart.
    """

    call_id: str
    ticket_id: str | None
    number: str
    skill: str
    priority: int
    needs: frozenset[str]
    preferred_agent: str | None
    queued_at: datetime
    expires_at: datetime


class KeptPlaceStore(Protocol):
    """Port to the node's storage of kept places."""

    async def save_kept_place(self, kept_place: KeptPlace) -> None: ...

    async def forget_kept_place(self, call_id: str) -> None: ...


RecordOutcome = Callable[[KeptPlace, dict[str, object]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class CallbackSettings:
    max_keep_s: float = DEFAULT_MAX_KEEP_S
    ring_timeout_s: int = DEFAULT_RING_TIMEOUT_S


class QueueCallbackDialer:
    """Keeps the places of callers who chose a callback and calls them back in queue order.

    ``clock`` must be the clock of the flow runner and the pool (queue places carry
    ``waiting_since`` on it). ``wall_clock`` gives the UTC time stored with each place.
    """

    def __init__(self, pool: AgentPool, originator: CallbackOriginator, record: RecordOutcome, *,
                 settings: CallbackSettings | None = None, places: KeptPlaceStore | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._pool = pool
        self._originator = originator
        self._record = record
        self._settings = settings or CallbackSettings()
        self._places = places
        self._clock = clock
        self._wall_clock = wall_clock
        self._tasks: set[asyncio.Task[CallbackResult]] = set()
        # Call ids of the places being served, so a restore does not serve one twice.
        self._serving: set[str] = set()

    def keep(self, session: CallSession) -> asyncio.Task[CallbackResult] | None:
        """Start keeping the session's queue place; returns the task, or None when it has no place or number."""
        place = session.queue_place
        if place is None or not session.callback_number:
            return None

        now = self._wall_clock()
        waited_s = max(0.0, self._clock() - place.waiting_since)
        kept_place = KeptPlace(
            call_id=session.call.call_id, ticket_id=session.ticket_id, number=session.callback_number,
            skill=place.skill, priority=place.priority, needs=place.needs, preferred_agent=place.preferred_agent,
            queued_at=now - timedelta(seconds=waited_s), expires_at=now + timedelta(seconds=self._settings.max_keep_s),
        )
        return self._start(kept_place, save=True)

    def restore(self, places: Iterable[KeptPlace]) -> int:
        """Serve places stored by an earlier run of the node, each from its original queue time.

        Returns how many were restored. A place past its expiry is recorded as expired at once,
        and one this dialer already serves is skipped.
        """
        restored = 0
        for kept_place in places:
            if kept_place.call_id in self._serving:
                continue
            log.info("queue callback place restored", call_id=kept_place.call_id, ticket_id=kept_place.ticket_id,
                     skill=kept_place.skill, queued_at=kept_place.queued_at.isoformat())
            self._start(kept_place, save=False)
            restored += 1
        return restored

    def _start(self, kept_place: KeptPlace, *, save: bool) -> asyncio.Task[CallbackResult]:
        task = asyncio.create_task(self._serve(kept_place, save=save), name=f"queue-callback-{kept_place.call_id}")
        self._tasks.add(task)
        self._serving.add(kept_place.call_id)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._serving.discard(kept_place.call_id))
        return task

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def stop(self) -> None:
        """Cancel the kept places; the stored ones are served again when the node starts next."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
            log.info("queue callbacks stopped at shutdown", count=len(tasks), stored=self._places is not None)

    async def _serve(self, kept_place: KeptPlace, *, save: bool) -> CallbackResult:
        call_id = kept_place.call_id
        if save:
            await self._save(kept_place)

        # The kept place is a waiting call of its own, so the pool never confuses it with
        # the caller's finished call.
        waiting_id = f"{call_id}-callback"
        wall_now = self._wall_clock()
        keep_s = (kept_place.expires_at - wall_now).total_seconds()
        if keep_s <= 0:
            await self._finish(kept_place, CallbackResult.EXPIRED, agent_id=None)
            return CallbackResult.EXPIRED
        waiting_since = self._clock() - max(0.0, (wall_now - kept_place.queued_at).total_seconds())
        log.info("queue callback waiting", call_id=call_id, ticket_id=kept_place.ticket_id, skill=kept_place.skill)

        reservation = await self._pool.reserve(
            waiting_id, kept_place.skill, timeout_s=keep_s, priority=kept_place.priority,
            needs=kept_place.needs, preferred_agent=kept_place.preferred_agent, waiting_since=waiting_since,
        )
        if reservation is None:
            self._pool.call_ended(waiting_id)
            await self._finish(kept_place, CallbackResult.EXPIRED, agent_id=None)
            return CallbackResult.EXPIRED

        # From here the citizen may be rung, so a controller restart must not ring them a
        # second time: the stored place goes before the dial, and the ticket's callback
        # request stays for the agents when the outcome cannot be recorded.
        await self._forget(call_id)
        result = CallbackResult.FAILED
        try:
            result = await self._originator.call_back(reservation.endpoint, kept_place.number, call_id=call_id,
                                                      ring_timeout_s=self._settings.ring_timeout_s)
        finally:
            await self._pool.release(reservation, reason="queue_callback", outcome=_release_outcome(result))
            self._pool.call_ended(waiting_id)
        await self._finish(kept_place, result, agent_id=reservation.agent_id)
        return result

    async def _finish(self, kept_place: KeptPlace, result: CallbackResult, *, agent_id: str | None) -> None:
        log.info("queue callback finished", call_id=kept_place.call_id, ticket_id=kept_place.ticket_id,
                 result=result.value, agent_id=agent_id)
        await self._record(kept_place, {
            "call_id": kept_place.call_id,
            "result": result.value,
            "agent_id": agent_id,
            "number_masked": mask_phone(kept_place.number),
        })
        await self._forget(kept_place.call_id)

    async def _save(self, kept_place: KeptPlace) -> None:
        if self._places is None:
            return
        try:
            await self._places.save_kept_place(kept_place)
        except StorageError as exc:
            # The place is still served by this run; only a restart would lose it.
            log.error("queue callback place not stored", call_id=kept_place.call_id, ticket_id=kept_place.ticket_id,
                      error=str(exc))

    async def _forget(self, call_id: str) -> None:
        if self._places is None:
            return
        try:
            await self._places.forget_kept_place(call_id)
        except StorageError as exc:
            log.error("queue callback place not removed", call_id=call_id, error=str(exc))


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
