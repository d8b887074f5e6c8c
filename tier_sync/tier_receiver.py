"""MQTT adapter: receives children's ticket events on a parent node, stores them idempotently, and acknowledges each.

The ack is sent only after the event is committed to the parent's database, for
duplicates too, so that a child whose first ack was lost can still clear its row.
An invalid envelope is never applied; it gets a "rejected" ack when the sender and
event id can be read from it, and is only logged otherwise.

A receiver of a node that has a parent (city, province) also queues each event in its
own outbox, marked with itself as sender, before acknowledging it, so the chain publisher
carries it one tier further; the hop's ack clears only that hop's row. The receiver is
the node's one session on its own broker, so it also publishes the node's queued
instructions to children and takes their acks, and it opens the linked ticket when a
child escalates (提级) to this node.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from storage import OutboxRow, StorageError, TicketConflict
from tickets.envelope import (
    EnvelopeError,
    EventAck,
    EventEnvelope,
    decode_envelope,
    decode_instruction_ack,
    encode_ack,
    encode_envelope,
)
from tier_sync.escalation import accept_escalation, is_escalation_to
from tier_sync.mqtt_session import SessionSettings, payload_bytes
from tier_sync.topics import (
    down_acks_topic,
    down_instructions_topic,
    receiver_client_id,
    sender_of_up_topic,
    up_subscription,
)
from tier_sync.worker import HandlerPool, KeyedLocks, MqttWorker, run_until_first_done

if TYPE_CHECKING:
    from storage import TicketStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """Tuning of the tier receiver; times in seconds."""

    session: SessionSettings = field(default_factory=SessionSettings)
    ack_publish_timeout_s: float = 10.0
    # Child events handled at once. Their store writes share group commits, and each
    # handler waits for its ack's PUBACK without holding up the next message.
    max_concurrent_events: int = 256
    takeover_backoff_s: float = 30.0
    # Downward instructions: how many per batch, and when an unacknowledged one is sent again.
    instruction_batch_size: int = 10
    instruction_ack_timeout_s: float = 60.0
    poll_interval_s: float = 1.0


class TierReceiver(MqttWorker):
    """Subscribes to ``hotline/v1/<node>/up/#`` and applies each child event to the store.

    Up to ``max_concurrent_events`` events are handled at once. Events of the same ticket
    wait for each other, so they are applied in arrival order (the store accepts any order).

    ``forward`` queues every received event for the parent; ``on_written`` is called after
    anything was added to the upward outbox, to wake the chain publisher.
    """

    role = "receiver"

    def __init__(
        self,
        store: TicketStore,
        broker_host: str,
        broker_port: int,
        node_id: str,
        *,
        settings: ReceiverSettings | None = None,
        use_lock: bool = True,
        forward: bool = False,
        on_written: Callable[[], None] | None = None,
    ) -> None:
        settings = settings or ReceiverSettings()
        super().__init__(
            store, broker_host, broker_port, node_id, receiver_client_id(node_id), settings.session,
            settings.takeover_backoff_s, use_lock=use_lock,
        )
        self.settings = settings
        self.subscription = up_subscription(node_id)
        self.forward = forward
        self._on_written = on_written or (lambda: None)
        self._wakeup = asyncio.Event()
        # Events of one ticket are applied one after another, in arrival order.
        self._ticket_locks = KeyedLocks()
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0
        self.forwarded = 0
        self.escalations = 0
        self.instructions_sent = 0
        self.instructions_acked = 0
        self.instructions_rejected = 0

    def notify(self) -> None:
        """Wake the instruction loop now, for example right after an instruction was queued."""
        self._wakeup.set()

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.subscription, qos=1)
        connected_at = self.store.now()
        handlers = HandlerPool(self.settings.max_concurrent_events)
        try:
            await run_until_first_done(
                self._receive(client, handlers), handlers.watch(), self._instruction_loop(client, connected_at)
            )
        finally:
            await handlers.cancel()

    async def _receive(self, client: aiomqtt.Client, handlers: HandlerPool) -> None:
        async for message in client.messages:
            topic = message.topic.value
            if (child := sender_of_up_topic(self.node_id, topic, "events")) is not None:
                await handlers.spawn(self._handle_event(client, payload_bytes(message.payload), child))
            elif (child := sender_of_up_topic(self.node_id, topic, "instruction-acks")) is not None:
                await self._handle_instruction_ack(child, payload_bytes(message.payload))
            else:
                log.warning("message on unknown up topic ignored", topic=topic, node_id=self.node_id)

    async def _handle_event(self, client: aiomqtt.Client, raw: bytes, topic_sender: str) -> None:
        # Step 1: validate; nothing invalid reaches the database.
        try:
            envelope = decode_envelope(raw)
        except EnvelopeError as exc:
            self.rejected += 1
            log.warning("invalid event rejected", node_id=self.node_id, field=exc.field, error=str(exc),
                        event_id=exc.event_id, origin_node=exc.origin_node, size=len(raw))
            if exc.event_id is not None:
                await self._send_ack(client, topic_sender, EventAck(exc.event_id, "rejected", self.node_id, str(exc)))
            return

        # The broker ACL ties the topic level to the login, so the envelope must name the same
        # sender; otherwise one child could file events as another.
        if envelope.reply_node != topic_sender:
            self.rejected += 1
            log.warning("event from another sender's topic rejected", node_id=self.node_id,
                        event_id=envelope.event_id, sender=envelope.reply_node, topic_sender=topic_sender)
            await self._send_ack(client, topic_sender, EventAck(
                envelope.event_id, "rejected", self.node_id,
                f"sender {envelope.reply_node!r} does not match topic sender {topic_sender!r}"))
            return

        async with self._ticket_locks.hold(envelope.ticket.ticket_id):
            result = await self._store_event(client, envelope)
        if result is None:
            return

        # Step 4: acknowledge, duplicates included.
        if result == "applied":
            self.applied += 1
        else:
            self.duplicates += 1
            log.info("duplicate event acknowledged again", event_id=envelope.event_id,
                     ticket_id=envelope.ticket.ticket_id, origin_node=envelope.origin_node)
        await self._send_ack(client, envelope.reply_node, EventAck(envelope.event_id, result, self.node_id))

    async def _store_event(self, client: aiomqtt.Client, envelope: EventEnvelope) -> str | None:
        """Apply and pass on one valid event; return the ack status, or None when no ack is to be sent."""
        # Step 2: apply. A conflict is permanent, so the child is told; a storage failure is
        # not acknowledged at all, so the child re-publishes after its ack timeout.
        try:
            result = await self.store.apply_remote_event(envelope)
        except TicketConflict as exc:
            self.rejected += 1
            log.error("conflicting event rejected", event_id=envelope.event_id, ticket_id=envelope.ticket.ticket_id,
                      origin_node=envelope.origin_node, error=str(exc))
            await self._send_ack(client, envelope.reply_node,
                                 EventAck(envelope.event_id, "rejected", self.node_id, str(exc)))
            return None
        except StorageError as exc:
            log.error("event not stored; no ack sent, the child will re-publish", event_id=envelope.event_id,
                      ticket_id=envelope.ticket.ticket_id, origin_node=envelope.origin_node, error=str(exc))
            return None

        # Step 3: pass it on. Duplicates too, because a crash may have come between the
        # apply and the forward; both writes are idempotent.
        try:
            await self._pass_on(envelope)
        except StorageError as exc:
            log.error("event not forwarded; no ack sent, the child will re-publish", event_id=envelope.event_id,
                      ticket_id=envelope.ticket.ticket_id, origin_node=envelope.origin_node, error=str(exc))
            return None
        return result

    async def _pass_on(self, envelope: EventEnvelope) -> None:
        """Queue the event for the parent and open the linked ticket of a 提级 addressed to this node."""
        written = False
        if self.forward:
            copy = dataclasses.replace(envelope, sender_node=self.node_id)
            if await self.store.queue_outbox_row(envelope.event_id, envelope.ticket.ticket_id, envelope.event.seq,
                                                 encode_envelope(copy)):
                self.forwarded += 1
                written = True

        if is_escalation_to(envelope, self.node_id):
            await accept_escalation(self.store, envelope)
            self.escalations += 1
            written = True
            self.notify()

        if written:
            self._on_written()

    async def _send_ack(self, client: aiomqtt.Client, child_node_id: str, ack: EventAck) -> None:
        await client.publish(
            down_acks_topic(child_node_id), encode_ack(ack), qos=1, timeout=self.settings.ack_publish_timeout_s
        )
        log.debug("ack sent", event_id=ack.event_id, status=ack.status, origin_node=child_node_id)

    # ------------------------------------------------------------------ instructions to children

    async def _instruction_loop(self, client: aiomqtt.Client, connected_at: datetime) -> None:
        ack_timeout = timedelta(seconds=self.settings.instruction_ack_timeout_s)
        while True:
            sent_before = max(self.store.now() - ack_timeout, connected_at)
            rows = await self.store.pending_instructions(self.settings.instruction_batch_size, sent_before=sent_before)
            if not rows:
                await self._idle()
                continue

            results = await asyncio.gather(*(self._publish_instruction(client, row) for row in rows))
            confirmed = [row.row_id for row, ok in zip(rows, results) if ok]
            await self.store.mark_outbox_sent(confirmed)
            self.instructions_sent += len(confirmed)
            if len(confirmed) < len(rows):
                await self._idle()

    async def _idle(self) -> None:
        try:
            async with asyncio.timeout(self.settings.poll_interval_s):
                await self._wakeup.wait()
        except TimeoutError:
            pass
        self._wakeup.clear()

    async def _publish_instruction(self, client: aiomqtt.Client, row: OutboxRow) -> bool:
        child_node = row.event_id.rsplit("@", 1)[1]
        try:
            await client.publish(down_instructions_topic(child_node), row.envelope, qos=1,
                                 timeout=self.settings.ack_publish_timeout_s)
        except aiomqtt.MqttError as exc:
            log.warning("instruction publish not confirmed by broker; row stays pending", key=row.event_id,
                        ticket_id=row.ticket_id, error=str(exc))
            return False
        log.debug("instruction published", key=row.event_id, ticket_id=row.ticket_id, attempt=row.attempts + 1)
        return True

    async def _handle_instruction_ack(self, child_node: str, raw: bytes) -> None:
        try:
            ack = decode_instruction_ack(raw)
        except EnvelopeError as exc:
            log.warning("invalid instruction ack ignored", node_id=self.node_id, child_node=child_node, error=str(exc))
            return
        if ack.acked_by != child_node:
            log.warning("instruction ack from another child's topic ignored", node_id=self.node_id,
                        child_node=child_node, acked_by=ack.acked_by, instruction_id=ack.instruction_id)
            return

        key = self.store.instruction_key(ack.instruction_id, ack.acked_by)
        if ack.status == "rejected":
            row = await self.store.find_outbox_row(key)
            if row is not None and row.dead_reason is None:
                await self.store.dead_letter(row.row_id, f"rejected by {ack.acked_by}: {ack.error}")
            self.instructions_rejected += 1
            log.error("child rejected instruction; outbox row dead-lettered", instruction_id=ack.instruction_id,
                      child_node=ack.acked_by, error=ack.error)
            return

        if await self.store.mark_outbox_key_acked(key):
            self.instructions_acked += 1
        log.debug("instruction acknowledged by child", instruction_id=ack.instruction_id, status=ack.status)
