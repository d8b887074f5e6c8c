"""MQTT adapter: publishes a node's outbox to its parent tier and clears rows only on the parent's own acknowledgement.

A broker PUBACK is not enough to clear a row: mosquitto can drop queued QoS 1
messages (``max_queued_messages``) and by default writes its persistence file only
every 30 minutes (``autosave_interval 1800``), so a broker crash loses what it had
acknowledged. Rows therefore stay pending until the parent node, having committed
the event to its own database, sends an ack on ``hotline/v1/<node>/down/acks``.

The same class runs in two modes. The chain publisher sends the upward channel of the
outbox to the parent and also receives the parent's instructions, which arrive on the
same broker. A direct publisher (``direct=True``) sends the copies of emergency tickets
straight to one ancestor (province or ministry) on that ancestor's broker, under its own
client id and lock.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from storage import OutboxRow, StorageError
from tickets.envelope import (
    EnvelopeError,
    InstructionAck,
    decode_ack,
    decode_instruction,
    encode_instruction_ack,
)
from tier_sync.instructions import InstructionApplier
from tier_sync.mqtt_session import SessionSettings, payload_bytes
from tier_sync.topics import (
    direct_publisher_client_id,
    down_acks_topic,
    down_instructions_topic,
    publish_packet_size,
    publisher_client_id,
    up_events_topic,
    up_instruction_acks_topic,
)
from tier_sync.worker import HandlerPool, MqttWorker, run_until_first_done

if TYPE_CHECKING:
    from storage import TicketStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class SentRow:
    """A row published on the current connection and not acknowledged by the parent yet."""

    row: OutboxRow
    sent_at: float  # time.monotonic() when its publish started
    order: int  # position in this connection's sending order


class InFlight:
    """The rows a publisher has sent on one connection and awaits the parent's ack for.

    Decides which of them to send again: see ``PublisherSettings``. Times are
    ``time.monotonic()`` seconds, passed in so that tests can drive them.
    """

    def __init__(self, ack_timeout_s: float, now: float) -> None:
        self.ack_timeout_s = ack_timeout_s
        # Insertion order is sending order, since a row sent again is removed first.
        self._rows: dict[str, SentRow] = {}
        self._next_order = 0
        self._newest_acked_order = -1
        self.last_ack_at = now
        # Keys forgotten while an outbox read was running, which may still return them.
        self._forgotten_during_read: set[str] | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def sent(self, key: str, row: OutboxRow, now: float) -> None:
        self._rows.pop(key, None)
        self._rows[key] = SentRow(row, now, self._next_order)
        self._next_order += 1

    def acked(self, key: str, now: float) -> None:
        """Record an ack from the parent; every ack, even for a row of an earlier connection, shows progress.

        The row stays counted until ``forget``, once the store has cleared it: until then an
        outbox read still returns it, and only this record keeps it from being sent again.
        """
        self.last_ack_at = now
        sent = self._rows.get(key)
        if sent is not None:
            self._newest_acked_order = max(self._newest_acked_order, sent.order)

    def forget(self, key: str) -> None:
        """Drop a row: cleared or dead-lettered in the store, or its publish not confirmed by the broker."""
        self._rows.pop(key, None)
        if self._forgotten_during_read is not None:
            self._forgotten_during_read.add(key)

    def begin_read(self) -> None:
        """Note that an outbox read starts; ``end_read`` then returns the keys forgotten meanwhile."""
        self._forgotten_during_read = set()

    def end_read(self) -> set[str]:
        forgotten, self._forgotten_during_read = self._forgotten_during_read or set(), None
        return forgotten

    def overdue(self, now: float, limit: int) -> list[tuple[str, OutboxRow]]:
        """Return up to ``limit`` rows to send again, oldest first."""
        stuck = now - self.last_ack_at >= self.ack_timeout_s
        due: list[tuple[str, OutboxRow]] = []
        for key, sent in self._rows.items():
            if now - sent.sent_at < self.ack_timeout_s or len(due) >= limit:
                break
            if stuck or sent.order < self._newest_acked_order:
                due.append((key, sent.row))
        return due


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Tuning of the outbox publisher; times in seconds, sizes in bytes.

    ``max_packet_size`` must not exceed the parent broker's ``max_packet_size``.
    NOTE: the default of 1 MiB is a guess, not the setting of any deployed broker.

    ``batch_size`` rows are read from the outbox at once and published; up to
    ``max_pending_publishes`` wait for their PUBACK at a time (paho keeps 20 of them on
    the wire and queues the rest), and reading goes on meanwhile.
    ``max_in_flight`` bounds the rows published on the current connection that the
    parent has not acknowledged yet. A row is published again once ``ack_timeout_s`` has
    passed since it was sent, and then only if a row sent after it has been acknowledged
    (so the parent has moved past it) or no ack at all arrived for ``ack_timeout_s`` (so
    the link is stuck); a backlog that the parent works through slowly is not resent.
    ``max_concurrent_acks`` acks are cleared at once.
    """

    session: SessionSettings = field(default_factory=SessionSettings)
    batch_size: int = 100
    max_in_flight: int = 1000
    max_concurrent_acks: int = 256
    max_pending_publishes: int = 200
    max_packet_size: int = 1024 * 1024
    publish_timeout_s: float = 10.0
    ack_timeout_s: float = 60.0
    poll_interval_s: float = 1.0
    takeover_backoff_s: float = 30.0


class OutboxPublisher(MqttWorker):
    """Publishes pending outbox rows, in write order, to ``hotline/v1/<parent>/up/events`` with QoS 1.

    ``parent_node_id`` is the node whose broker this publisher connects to: the parent, or
    with ``direct=True`` the ancestor that receives emergency copies. The chain publisher
    also applies the parent's downward instructions unless ``apply_instructions`` is off.
    """

    role = "publisher"

    def __init__(
        self,
        store: TicketStore,
        broker_host: str,
        broker_port: int,
        node_id: str,
        parent_node_id: str,
        *,
        settings: PublisherSettings | None = None,
        use_lock: bool = True,
        direct: bool = False,
        apply_instructions: bool = True,
    ) -> None:
        settings = settings or PublisherSettings()
        if direct:
            # Each direct link has its own session and lock file, next to the chain publisher's.
            self.role = f"direct-{parent_node_id}"
            client_id = direct_publisher_client_id(node_id, parent_node_id)
        else:
            client_id = publisher_client_id(node_id)
        super().__init__(
            store, broker_host, broker_port, node_id, client_id, settings.session,
            settings.takeover_backoff_s, use_lock=use_lock,
        )
        self.parent_node_id = parent_node_id
        self.direct = direct
        self.instructions = (
            InstructionApplier(store, parent_node_id) if apply_instructions and not direct else None
        )
        self.instructions_topic = down_instructions_topic(node_id)
        # Outbox channel: None is the upward chain, a node id the emergency copies for that node.
        self._channel = parent_node_id if direct else None
        self._copied_up_to_row = 0
        self.settings = settings
        self.events_topic = up_events_topic(parent_node_id, node_id)
        self.acks_topic = down_acks_topic(node_id)
        self._wakeup = asyncio.Event()
        self.published = 0
        self.acked = 0
        self.dead_lettered = 0
        self.publish_timeouts = 0
        self.republished = 0
        self._in_flight = InFlight(settings.ack_timeout_s, time.monotonic())
        self._reject_lock = asyncio.Lock()
        # Row ids confirmed by the broker and not yet marked sent in the store, and their count.
        self._to_mark: list[int] = []
        self._marks_queued = asyncio.Event()
        self._unmarked = 0
        self._publish_failed = asyncio.Event()
        self._batch_size = min(settings.batch_size, settings.max_in_flight)
        self._window_full = False

    def notify(self) -> None:
        """Wake the publisher now, for example right after a ticket was written."""
        self._wakeup.set()

    async def wait_drained(self, timeout: float) -> None:
        """Wait until no live row of this publisher's channel is pending; raise TimeoutError naming the count left."""
        try:
            async with asyncio.timeout(timeout):
                while await self.store.pending_channel_outbox(self._channel, 1):
                    await asyncio.sleep(0.05)
        except TimeoutError:
            left = len(await self.store.pending_channel_outbox(self._channel, 1_000_000))
            raise TimeoutError(
                f"outbox of node {self.node_id} still has {left} rows pending for {self.parent_node_id} "
                f"after {timeout} s"
            ) from None

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.acks_topic, qos=1)
        if self.instructions is not None:
            await client.subscribe(self.instructions_topic, qos=1)
        connected_at = self.store.now()
        # Rows sent on an earlier connection are sent again on this one, so start afresh.
        self._in_flight = InFlight(self.settings.ack_timeout_s, time.monotonic())
        self._to_mark, self._unmarked = [], 0
        self._publish_failed.clear()
        handlers = HandlerPool(self.settings.max_concurrent_acks)
        publishes = HandlerPool(self.settings.max_pending_publishes)
        try:
            await run_until_first_done(
                self._receive(client, handlers), handlers.watch(), publishes.watch(),
                self._publish_loop(client, connected_at, publishes), self._mark_sent_loop(),
            )
        finally:
            await publishes.cancel()
            await handlers.cancel()

    # ------------------------------------------------------------------ acknowledgements and instructions

    async def _receive(self, client: aiomqtt.Client, handlers: HandlerPool) -> None:
        async for message in client.messages:
            if message.topic.matches(self.acks_topic):
                await handlers.spawn(self._handle_ack(payload_bytes(message.payload)))
            elif self.instructions is not None and message.topic.matches(self.instructions_topic):
                await self._handle_instruction(client, payload_bytes(message.payload))
            else:
                log.debug("unexpected topic ignored", topic=message.topic.value, node_id=self.node_id)

    def _outbox_key(self, event_id: str) -> str:
        return event_id if self._channel is None else self.store.emergency_copy_key(event_id, self._channel)

    async def _handle_ack(self, raw: bytes) -> None:
        try:
            ack = decode_ack(raw)
        except EnvelopeError as exc:
            log.warning("invalid ack ignored", node_id=self.node_id, error=str(exc))
            return

        key = self._outbox_key(ack.event_id)
        in_flight = self._in_flight
        in_flight.acked(key, time.monotonic())
        if ack.status == "rejected":
            # Serialised, so that two copies of one rejection cannot both dead-letter the row.
            async with self._reject_lock:
                row = await self.store.find_outbox_row(key)
                if row is not None and row.dead_reason is None:
                    await self.store.dead_letter(row.row_id, f"rejected by {ack.acked_by}: {ack.error}")
                    self.dead_lettered += 1
            self._row_settled(in_flight, key)
            log.error(
                "parent rejected event; outbox row dead-lettered", event_id=ack.event_id, ticket_id=ack.ticket_id,
                seq=ack.seq, parent=ack.acked_by, error=ack.error,
            )
            return

        cleared = await self.store.mark_outbox_key_acked(key)
        self._row_settled(in_flight, key)
        if cleared:
            self.acked += 1
        log.debug("event acknowledged by parent", event_id=ack.event_id, status=ack.status, cleared=cleared)

    def _row_settled(self, in_flight: InFlight, key: str) -> None:
        """The store no longer returns the row as pending: free its place in the window."""
        in_flight.forget(key)
        if self._window_full and self.settings.max_in_flight - len(in_flight) >= self._batch_size:
            self._window_full = False
            self._wakeup.set()

    async def _handle_instruction(self, client: aiomqtt.Client, raw: bytes) -> None:
        assert self.instructions is not None
        try:
            instruction = decode_instruction(raw)
        except EnvelopeError as exc:
            log.warning("invalid instruction rejected", node_id=self.node_id, field=exc.field, error=str(exc),
                        instruction_id=exc.event_id, issuer_node=exc.origin_node)
            if exc.event_id is not None:
                await self._send_instruction_ack(client, InstructionAck(exc.event_id, "rejected", self.node_id, str(exc)))
            return

        try:
            ack = await self.instructions.apply(instruction)
        except StorageError as exc:
            # Not acknowledged, so the parent sends it again after its ack timeout.
            log.error("instruction not stored; no ack sent", instruction_id=instruction.instruction_id,
                      ticket_id=instruction.ticket_id, error=str(exc))
            return
        await self._send_instruction_ack(client, ack)
        self.notify()

    async def _send_instruction_ack(self, client: aiomqtt.Client, ack: InstructionAck) -> None:
        topic = up_instruction_acks_topic(self.parent_node_id, self.node_id)
        await client.publish(topic, encode_instruction_ack(ack), qos=1, timeout=self.settings.publish_timeout_s)
        log.debug("instruction ack sent", instruction_id=ack.instruction_id, status=ack.status)

    # ------------------------------------------------------------------ publishing

    async def _publish_loop(self, client: aiomqtt.Client, connected_at: datetime, publishes: HandlerPool) -> None:
        batch_size = self._batch_size
        while True:
            if self.direct:
                _, self._copied_up_to_row = await self.store.queue_emergency_copies(
                    self.parent_node_id, self._copied_up_to_row
                )

            # Rows overdue for an ack go first; then rows not sent on this connection yet,
            # while fewer than max_in_flight await their ack.
            rows = [row for _, row in self._in_flight.overdue(time.monotonic(), batch_size)]
            again = bool(rows)
            room = self.settings.max_in_flight - len(self._in_flight)
            if not rows and room >= batch_size:
                # The read returns rows published but not marked sent yet, so skip those. It may
                # also return rows cleared while it ran, so skip those too.
                self._in_flight.begin_read()
                fresh = await self.store.pending_channel_outbox(
                    self._channel, batch_size + self._unmarked, sent_before=connected_at
                )
                skip = self._in_flight.end_read()
                rows = [row for row in fresh if row.event_id not in self._in_flight and row.event_id not in skip]
                rows = rows[:batch_size]
            if not rows:
                # An ack wakes the loop early only when it makes room in a full window.
                self._window_full = room < batch_size
                await self._idle()
                continue

            # Each publish waits for its PUBACK in its own task, so the next batch need not
            # wait for this one. A row counts as in flight before its publish, because the
            # parent's ack may come before the PUBACK.
            for row in rows:
                if await self._dead_letter_if_oversize(row):
                    continue
                self._in_flight.sent(row.event_id, row, time.monotonic())
                self._unmarked += 1
                await publishes.spawn(self._publish_and_record(client, row, again=again))

            if self._publish_failed.is_set():
                # The link may be half-open; keepalive will close it, so do not spin meanwhile.
                self._publish_failed.clear()
                await self._idle()

    async def _publish_and_record(self, client: aiomqtt.Client, row: OutboxRow, *, again: bool) -> None:
        if await self._publish_row(client, row, again=again):
            # Marked sent by _mark_sent_loop, so that publishing does not wait for the store's
            # write lock, which the ack handlers hold most of the time.
            self._to_mark.append(row.row_id)
            self._marks_queued.set()
            self.published += 1
            return

        self._unmarked -= 1
        self._publish_failed.set()
        if not again:
            # Not marked sent, so the next outbox read returns it. A row sent again stays in
            # flight and is due again after another ack_timeout_s.
            self._in_flight.forget(row.event_id)

    async def _mark_sent_loop(self) -> None:
        while True:
            await self._marks_queued.wait()
            self._marks_queued.clear()
            while self._to_mark:
                row_ids, self._to_mark = self._to_mark, []
                await self.store.mark_outbox_sent(row_ids)
                self._unmarked -= len(row_ids)

    async def _idle(self) -> None:
        try:
            async with asyncio.timeout(self.settings.poll_interval_s):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _dead_letter_if_oversize(self, row: OutboxRow) -> bool:
        size = publish_packet_size(self.events_topic, row.envelope)
        limit = self.settings.max_packet_size
        if size <= limit:
            return False

        reason = f"MQTT packet of {size} bytes exceeds max_packet_size {limit}"
        await self.store.dead_letter(row.row_id, reason)
        self.dead_lettered += 1
        log.error(
            "outbox row too large to publish; dead-lettered, later rows keep flowing",
            row_id=row.row_id, event_id=row.event_id, ticket_id=row.ticket_id, seq=row.seq, size=size, limit=limit,
        )
        return True

    async def _publish_row(self, client: aiomqtt.Client, row: OutboxRow, *, again: bool) -> bool:
        """Publish one row with QoS 1 and return whether the broker's PUBACK came in time.

        ``again`` marks a row sent on this connection already whose ack is overdue.
        """
        if again or row.attempts > 0:
            self.republished += 1
            log.info("re-publishing unacknowledged event", event_id=row.event_id, ticket_id=row.ticket_id,
                     seq=row.seq, overdue_on_this_connection=again)
        try:
            await client.publish(self.events_topic, row.envelope, qos=1, timeout=self.settings.publish_timeout_s)
        except aiomqtt.MqttError as exc:
            self.publish_timeouts += 1
            log.warning("publish not confirmed by broker; row stays pending", event_id=row.event_id,
                        ticket_id=row.ticket_id, seq=row.seq, error=str(exc),
                        limit=self.settings.publish_timeout_s)
            return False
        log.debug("event published", event_id=row.event_id, ticket_id=row.ticket_id, seq=row.seq, size=row.size)
        return True

