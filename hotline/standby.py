"""Application: controller fault tolerance of a county node.

A county node can run two controllers that share its SQLite database: the primary
(``hotline run``) and a standby (``hotline run --standby``) listening on
``telephony.standby_fastagi``. The dialplan offers each new call to the primary and, only
when the primary cannot be reached, to the standby. A call cut off by a dying controller
hears the fallback notice, and the dialplan raises the AMI UserEvent ``HotlineFallback``.

Three pieces live here:

- ``FallbackCallbacks`` turns each ``HotlineFallback`` event into a callback ticket, once per
  call id even when both controllers receive the event.
- ``start_publisher_when_free`` lets a controller wait for the node's publisher lock, so
  exactly one process publishes upward and the survivor takes over when the other dies.
- ``FailoverCountyNode`` is the county node with both, plus the free-space check per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import fcntl
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from hotline.config import FastAgiListen, NodeConfig
from hotline.disk_space import DiskGuard
from hotline.nodes import CountyNode
from hotline.privacy import mask_phone
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.ami_protocol import AmiMessage
from hwd_bridge.errors import AgiError
from hwd_bridge.fastagi_server import HOTLINE_FAILURE_VARIABLE
from ivr.call import CallerId
from storage.errors import CallNotFound, StorageError
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome, CallRecord
from tickets.model import TicketCategory
from tier_sync.node_lock import NodeAlreadyRunning, NodeLock
from tier_sync.outbox_publisher import OutboxPublisher

log = structlog.get_logger(__name__)

FALLBACK_EVENT = "HotlineFallback"
# Actor of the tickets and events written for calls that ended in the dialplan's fallback.
FALLBACK_ACTOR = "fallback"
# Event kind the flow's callback node writes too, so agents find both in one place.
CALLBACK_EVENT_KIND = "callback_requested"
# Value of HOTLINE_FAILURE set when a call is refused because the database's disk is full.
DISK_FULL_FAILURE = "disk_full"
HOTLINE_NUMBER = "12349"

LOCK_POLL_INTERVAL_S = 1.0
# Fallback events whose ticket could not be written are retried at this interval, and at
# most this many are kept.
FALLBACK_RETRY_INTERVAL_S = 5.0
MAX_PENDING_FALLBACKS = 1000


@dataclass(frozen=True, slots=True)
class FallbackCall:
    """A call that ended in the dialplan's fallback branch, from its ``HotlineFallback`` event.

    ``agi_status`` is Asterisk's AGISTATUS after the last AGI() (FAILURE: no controller was
    reachable; SUCCESS: a controller was cut off or refused the call). ``failure`` is the
    controller's HOTLINE_FAILURE value, or None when no controller set one.
    """

    call_id: str
    caller: CallerId
    agi_status: str
    failure: str | None

    @classmethod
    def from_ami_event(cls, message: AmiMessage) -> FallbackCall | None:
        """Parse a ``HotlineFallback`` UserEvent; return None for other events or one without a Uniqueid."""
        if (message.get("UserEvent") or "").lower() != FALLBACK_EVENT.lower():
            return None
        call_id = (message.get("Uniqueid") or "").strip()
        if not call_id:
            log.warning("HotlineFallback event without Uniqueid ignored")
            return None
        return cls(
            call_id=call_id,
            caller=CallerId.from_raw(message.get("CallerIDNum")),
            agi_status=(message.get("AgiStatus") or "").strip(),
            failure=(message.get("Failure") or "").strip() or None,
        )


class FallbackResult(enum.Enum):
    """Outcome of ``FallbackCallbacks.handle`` for one event."""

    TICKET_OPENED = "ticket_opened"  # a new ticket with a callback request
    CALLBACK_ADDED = "callback_added"  # a callback request on the call's existing ticket
    ALREADY_DONE = "already_done"  # the call already has its ticket and callback request


class FallbackCallbacks:
    """Writes one callback ticket per call that ended in the fallback branch.

    The call record with the event's Uniqueid is the idempotency key. The check and the
    writes run under an exclusive ``flock`` on ``<database>.fallback.lock``, so two
    controllers that receive the same event write one ticket. The caller's number is
    stored like a call record stores it (clear in the local call record and in the
    county's callback event, masked on the ticket and in every log line).

    A controller killed mid-call may have opened the call's ticket before it could write
    the call record; the callback request then joins that ticket.
    """

    def __init__(
        self,
        store: TicketStore,
        *,
        on_written: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._store = store
        self._on_written = on_written
        self._clock = clock
        self.lock_path = Path(f"{store.path}.fallback.lock")

    async def handle(self, call: FallbackCall) -> FallbackResult:
        """Write the call's record, ticket and callback request, skipping what already exists.

        Raises ``StorageError`` (``StorageFull`` for a full disk) when a write fails;
        whatever was committed before stays and a repeated event completes the rest.
        """
        async with self._exclusive():
            record = await self._existing_record(call.call_id)

            # Step 1: the call record, the key that makes a repeated event a no-op. The dead
            # controller may have opened the call's ticket before it could write the record.
            if record is None:
                existing = await self._store.find_ticket_by_call(call.call_id)
                record = self._record_for(call)
                if existing is not None:
                    record = dataclasses.replace(record, ticket_id=existing.ticket_id)
                await self._store.record_call(record)

            # Step 2: the ticket, which open_ticket links to the call record in its transaction.
            ticket_id = record.ticket_id
            opened = ticket_id is None
            if ticket_id is None:
                ticket = await self._store.open_ticket(
                    call.call_id, TicketCategory.OTHER, mask_phone(call.caller.number), record.started_at,
                    FALLBACK_ACTOR, self._ticket_payload(call),
                )
                ticket_id = ticket.ticket_id
                self._on_written()

            # Step 3: the callback request, unless the ticket has one or there is no number to call.
            events = await self._store.list_events(ticket_id)
            if call.caller.number is None or any(event.kind == CALLBACK_EVENT_KIND for event in events):
                result = FallbackResult.TICKET_OPENED if opened else FallbackResult.ALREADY_DONE
            else:
                await self._store.append_event(ticket_id, CALLBACK_EVENT_KIND, FALLBACK_ACTOR, {
                    "number": call.caller.number,
                    "number_masked": mask_phone(call.caller.number),
                    "caller_number": True,
                    "requested_by": "controller_fallback",
                })
                self._on_written()
                result = FallbackResult.TICKET_OPENED if opened else FallbackResult.CALLBACK_ADDED

        log.info("fallback call handled", call_id=call.call_id, ticket_id=ticket_id, result=result.value,
                 caller=mask_phone(call.caller.number), agi_status=call.agi_status, failure=call.failure)
        return result

    @contextlib.asynccontextmanager
    async def _exclusive(self) -> AsyncIterator[None]:
        descriptor = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            # The other holder only runs a few short writes, so a blocking wait in a thread is bounded.
            await asyncio.to_thread(fcntl.flock, descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)

    async def _existing_record(self, call_id: str) -> CallRecord | None:
        try:
            return await self._store.get_call(call_id)
        except CallNotFound:
            return None

    def _record_for(self, call: FallbackCall) -> CallRecord:
        now = self._clock()
        return CallRecord(
            call_id=call.call_id,
            caller_raw=call.caller.raw,
            caller_masked=mask_phone(call.caller.number),
            caller_flags=call.caller.flags,
            dialed=HOTLINE_NUMBER,
            started_at=now,
            ended_at=now,
            outcome=CallOutcome.FAILED,
        )

    @staticmethod
    def _ticket_payload(call: FallbackCall) -> dict[str, object]:
        return {
            "call_id": call.call_id,
            "channel": "phone",
            "opened_because": "controller_fallback",
            "agi_status": call.agi_status,
            "failure": call.failure,
            "caller_flags": sorted(call.caller.flags),
        }


def _lock_is_free(path: Path) -> bool:
    """Return whether no process holds ``flock`` on ``path``, without keeping the lock."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return True
    finally:
        os.close(descriptor)


async def start_publisher_when_free(publisher: OutboxPublisher, *, poll_interval_s: float = LOCK_POLL_INTERVAL_S) -> None:
    """Start ``publisher`` once no other process of the node holds its lock.

    The lock is the one ``tier_sync.node_lock.NodeLock`` takes, and the kernel frees it when
    its holder exits, also after ``kill -9``. Rows stay in the shared outbox until the
    parent acknowledges them, so the process that takes over publishes what the other left.
    """
    lock_path = NodeLock(publisher.store.path, publisher.role, publisher.node_id).path
    waiting_since: float | None = None
    loop = asyncio.get_running_loop()

    while True:
        if _lock_is_free(lock_path):
            try:
                await publisher.start()
            except NodeAlreadyRunning:
                # Another process took the lock between the check and the start.
                pass
            else:
                if waiting_since is not None:
                    log.warning("publisher lock taken over; this process now publishes upward",
                                node_id=publisher.node_id, waited_s=round(loop.time() - waiting_since, 1))
                return

        if waiting_since is None:
            waiting_since = loop.time()
            holder = lock_path.read_text(encoding="utf-8", errors="replace").strip() if lock_path.exists() else ""
            log.info("another process of the node publishes upward; waiting for its lock",
                     node_id=publisher.node_id, lock_path=str(lock_path), holder_pid=holder or None)
        await asyncio.sleep(poll_interval_s)


class FailoverCountyNode(CountyNode):
    """A county node that can share its database with a second controller.

    ``standby`` picks the listener: ``telephony.standby_fastagi`` instead of
    ``telephony.fastagi``. With a standby configured, the publisher waits for the node lock
    instead of failing, in both roles. Every call first passes the ``DiskGuard``, and every
    ``HotlineFallback`` event becomes a callback ticket.
    """

    def __init__(self, config: NodeConfig, *, standby: bool = False, min_free_bytes: int,
                 lock_poll_interval_s: float = LOCK_POLL_INTERVAL_S) -> None:
        super().__init__(config)
        assert config.telephony is not None
        if standby and config.telephony.standby_fastagi is None:
            raise ValueError("a standby controller needs telephony.standby_fastagi in the node config")
        self.standby = standby
        self._paired = config.telephony.standby_fastagi is not None
        self._lock_poll_interval_s = lock_poll_interval_s
        self.disk_guard = DiskGuard(config.database, min_free_bytes)
        self._fallbacks: FallbackCallbacks | None = None
        self._publisher_waiters: list[asyncio.Task[None]] = []
        # NOTE: pending fallback calls live in this process only; a controller stopped
        # while the disk is full loses their callback tickets.
        self._pending_fallbacks: dict[str, FallbackCall] = {}
        self._fallback_retry: asyncio.Task[None] | None = None
        # With two controllers, the one holding the publisher lock also serves the stored
        # queue callback places, so a place is called back once.
        if self._paired:
            self._serves_stored_places = False

    async def start(self) -> None:
        await super().start()
        assert self._store is not None
        assert self._publisher is not None
        assert self._ami is not None

        self._fallbacks = FallbackCallbacks(self._store, on_written=self.notify_publishers)
        self._ami.subscribe(self._on_user_event, event_names=["UserEvent"])
        log.info("controller role", node_id=self.config.node_id, role="standby" if self.standby else "primary",
                 paired=self._paired)

    async def stop(self) -> None:
        for task in (*self._publisher_waiters, self._fallback_retry):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._publisher_waiters = []
        self._fallback_retry = None
        if self._pending_fallbacks:
            log.error("fallback callback tickets not written before stop", count=len(self._pending_fallbacks),
                      call_ids=sorted(self._pending_fallbacks))
        await super().stop()

    async def _start_publisher(self, publisher: OutboxPublisher) -> None:
        if not self._paired:
            await publisher.start()
            return
        self._publisher_waiters.append(asyncio.create_task(
            self._publish_when_free(publisher), name=f"publisher-lock-{publisher.role}",
        ))

    async def _publish_when_free(self, publisher: OutboxPublisher) -> None:
        await start_publisher_when_free(publisher, poll_interval_s=self._lock_poll_interval_s)
        if publisher is self._publisher:
            log.info("controller serves the stored queue callback places", node_id=self.config.node_id,
                     role="standby" if self.standby else "primary")
            await self._take_over_stored_places()

    def _fastagi_listen(self) -> FastAgiListen:
        assert self.config.telephony is not None
        if self.standby:
            assert self.config.telephony.standby_fastagi is not None
            return self.config.telephony.standby_fastagi
        return self.config.telephony.fastagi

    async def _handle_call(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        if self.disk_guard.call_allowed(env.uniqueid):
            await super()._handle_call(env, channel)
            return

        # Rejected before the call is answered: the dialplan plays the fallback notice and
        # raises HotlineFallback, whose callback ticket is retried until space is back.
        try:
            await channel.set_variable(HOTLINE_FAILURE_VARIABLE, DISK_FULL_FAILURE)
        except AgiError as exc:
            log.warning("disk-full rejection not signalled to the dialplan", call_id=env.uniqueid, error=str(exc))

    async def _on_user_event(self, message: AmiMessage) -> None:
        call = FallbackCall.from_ami_event(message)
        if call is None:
            return
        if not await self._write_fallback(call):
            self._keep_for_retry(call)

    async def _write_fallback(self, call: FallbackCall) -> bool:
        """Write the call's callback ticket; return False when storage failed."""
        assert self._fallbacks is not None
        try:
            await self._fallbacks.handle(call)
        except StorageError as exc:
            if not self.disk_guard.storage_failed(exc, "fallback callback ticket", call_id=call.call_id):
                log.error("fallback callback ticket not written; will retry", call_id=call.call_id, error=str(exc))
            return False
        self.disk_guard.storage_succeeded()
        return True

    def _keep_for_retry(self, call: FallbackCall) -> None:
        if len(self._pending_fallbacks) >= MAX_PENDING_FALLBACKS and call.call_id not in self._pending_fallbacks:
            log.error("fallback callback ticket dropped: retry queue full", call_id=call.call_id,
                      limit=MAX_PENDING_FALLBACKS)
            return
        self._pending_fallbacks[call.call_id] = call
        if self._fallback_retry is None or self._fallback_retry.done():
            self._fallback_retry = asyncio.create_task(self._retry_fallbacks(), name="fallback-retry")

    async def _retry_fallbacks(self) -> None:
        while self._pending_fallbacks:
            await asyncio.sleep(FALLBACK_RETRY_INTERVAL_S)
            for call_id, call in list(self._pending_fallbacks.items()):
                if not await self._write_fallback(call):
                    break
                del self._pending_fallbacks[call_id]
                log.info("fallback callback ticket written on retry", call_id=call_id,
                         still_pending=len(self._pending_fallbacks))
