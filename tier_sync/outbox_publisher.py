"""MQTT adapter: publishes a node's outbox to its parent tier and clears rows only on the parent's own acknowledgement.

A broker PUBACK is not enough to clear a row: mosquitto can drop queued QoS 1
messages (``max_queued_messages``) and by default writes its persistence file only
every 30 minutes (``autosave_interval 1800``), so a broker crash loses what it had
acknowledged. Rows therefore stay pending until the parent node, having committed
the event to its own database, sends an ack on ``hotline/v1/<node>/down/acks``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from storage import OutboxRow
from tickets.envelope import EnvelopeError, decode_ack
from tier_sync.mqtt_session import SessionSettings, payload_bytes
from tier_sync.topics import down_acks_topic, publish_packet_size, publisher_client_id, up_events_topic
from tier_sync.worker import MqttWorker, run_until_first_done

if TYPE_CHECKING:
    from storage import TicketStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class PublisherSettings:
    """Tuning of the outbox publisher; times in seconds, sizes in bytes.

    ``max_packet_size`` must not exceed the parent broker's ``max_packet_size``.
    NOTE: the default of 1 MiB is a guess, not the setting of any deployed broker.
    """

    session: SessionSettings = field(default_factory=SessionSettings)
    batch_size: int = 10
    max_packet_size: int = 1024 * 1024
    publish_timeout_s: float = 10.0
    ack_timeout_s: float = 60.0
    poll_interval_s: float = 1.0
    takeover_backoff_s: float = 30.0


class OutboxPublisher(MqttWorker):
    """Publishes pending outbox rows, in write order, to ``hotline/v1/<parent>/up/events`` with QoS 1."""

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
    ) -> None:
        settings = settings or PublisherSettings()
        super().__init__(
            store, broker_host, broker_port, node_id, publisher_client_id(node_id), settings.session,
            settings.takeover_backoff_s, use_lock=use_lock,
        )
        self.parent_node_id = parent_node_id
        self.settings = settings
        self.events_topic = up_events_topic(parent_node_id)
        self.acks_topic = down_acks_topic(node_id)
        self._wakeup = asyncio.Event()
        self.published = 0
        self.acked = 0
        self.dead_lettered = 0
        self.publish_timeouts = 0

    def notify(self) -> None:
        """Wake the publisher now, for example right after a ticket was written."""
        self._wakeup.set()

    async def wait_drained(self, timeout: float) -> None:
        """Wait until no live outbox row is pending; raise TimeoutError naming the count left."""
        try:
            async with asyncio.timeout(timeout):
                while await self.store.count_pending_outbox() > 0:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            left = await self.store.count_pending_outbox()
            raise TimeoutError(
                f"outbox of node {self.node_id} still has {left} pending rows after {timeout} s"
            ) from None

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.acks_topic, qos=1)
        connected_at = self.store.now()
        await run_until_first_done(self._receive_acks(client), self._publish_loop(client, connected_at))

    # ------------------------------------------------------------------ acknowledgements

    async def _receive_acks(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if not message.topic.matches(self.acks_topic):
                log.debug("unexpected topic ignored", topic=message.topic.value, node_id=self.node_id)
                continue
            await self._handle_ack(payload_bytes(message.payload))

    async def _handle_ack(self, raw: bytes) -> None:
        try:
            ack = decode_ack(raw)
        except EnvelopeError as exc:
            log.warning("invalid ack ignored", node_id=self.node_id, error=str(exc))
            return

        if ack.status == "rejected":
            row = await self.store.find_outbox_row(ack.event_id)
            if row is not None:
                await self.store.dead_letter(row.row_id, f"rejected by {ack.acked_by}: {ack.error}")
                self.dead_lettered += 1
            log.error(
                "parent rejected event; outbox row dead-lettered", event_id=ack.event_id, ticket_id=ack.ticket_id,
                seq=ack.seq, parent=ack.acked_by, error=ack.error,
            )
            return

        cleared = await self.store.mark_outbox_acked(ack.ticket_id, ack.seq)
        if cleared:
            self.acked += 1
        log.debug("event acknowledged by parent", event_id=ack.event_id, status=ack.status, cleared=cleared)

    # ------------------------------------------------------------------ publishing

    async def _publish_loop(self, client: aiomqtt.Client, connected_at: datetime) -> None:
        ack_timeout = timedelta(seconds=self.settings.ack_timeout_s)
        while True:
            # Rows never sent, sent on an earlier connection, or sent too long ago without an ack.
            sent_before = max(self.store.now() - ack_timeout, connected_at)
            rows = await self.store.pending_outbox(self.settings.batch_size, sent_before=sent_before)
            if not rows:
                await self._idle()
                continue

            sendable = [row for row in rows if not await self._dead_letter_if_oversize(row)]
            results = await asyncio.gather(*(self._publish_row(client, row) for row in sendable))
            confirmed = [row.row_id for row, ok in zip(sendable, results) if ok]
            await self.store.mark_outbox_sent(confirmed)
            self.published += len(confirmed)

            if len(confirmed) < len(sendable):
                # The link may be half-open; keepalive will close it, so do not spin meanwhile.
                await self._idle()

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

    async def _publish_row(self, client: aiomqtt.Client, row: OutboxRow) -> bool:
        """Publish one row with QoS 1 and return whether the broker's PUBACK came in time."""
        if row.attempts > 0:
            log.info("re-publishing unacknowledged event", event_id=row.event_id, ticket_id=row.ticket_id,
                     seq=row.seq, attempt=row.attempts + 1)
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

