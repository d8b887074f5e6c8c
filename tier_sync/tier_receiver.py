"""MQTT adapter: receives children's ticket events on a parent node, stores them idempotently, and acknowledges each.

The ack is sent only after the event is committed to the parent's database, for
duplicates too, so that a child whose first ack was lost can still clear its row.
An invalid envelope is never applied; it gets a "rejected" ack when the sender and
event id can be read from it, and is only logged otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiomqtt
import structlog

from storage import StorageError, TicketConflict
from tickets.envelope import EnvelopeError, EventAck, decode_envelope, encode_ack
from tier_sync.mqtt_session import SessionSettings, payload_bytes
from tier_sync.topics import TOPIC_ROOT, down_acks_topic, receiver_client_id, up_subscription
from tier_sync.worker import MqttWorker

if TYPE_CHECKING:
    from storage import TicketStore

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class ReceiverSettings:
    """Tuning of the tier receiver; times in seconds."""

    session: SessionSettings = field(default_factory=SessionSettings)
    ack_publish_timeout_s: float = 10.0
    takeover_backoff_s: float = 30.0


class TierReceiver(MqttWorker):
    """Subscribes to ``hotline/v1/<node>/up/#`` and applies each child event to the store."""

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
    ) -> None:
        settings = settings or ReceiverSettings()
        super().__init__(
            store, broker_host, broker_port, node_id, receiver_client_id(node_id), settings.session,
            settings.takeover_backoff_s, use_lock=use_lock,
        )
        self.settings = settings
        self.subscription = up_subscription(node_id)
        self.events_topic = f"{TOPIC_ROOT}/{node_id}/up/events"
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0

    async def _serve(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.subscription, qos=1)
        async for message in client.messages:
            if message.topic.value != self.events_topic:
                log.warning("message on unknown up topic ignored", topic=message.topic.value, node_id=self.node_id)
                continue
            await self._handle_event(client, payload_bytes(message.payload))

    async def _handle_event(self, client: aiomqtt.Client, raw: bytes) -> None:
        # Step 1: validate; nothing invalid reaches the database.
        try:
            envelope = decode_envelope(raw)
        except EnvelopeError as exc:
            self.rejected += 1
            log.warning("invalid event rejected", node_id=self.node_id, field=exc.field, error=str(exc),
                        event_id=exc.event_id, origin_node=exc.origin_node, size=len(raw))
            if exc.origin_node is not None and exc.event_id is not None:
                await self._send_ack(client, exc.origin_node, EventAck(exc.event_id, "rejected", self.node_id, str(exc)))
            return

        # Step 2: apply. A conflict is permanent, so the child is told; a storage failure is
        # not acknowledged at all, so the child re-publishes after its ack timeout.
        try:
            result = await self.store.apply_remote_event(envelope)
        except TicketConflict as exc:
            self.rejected += 1
            log.error("conflicting event rejected", event_id=envelope.event_id, ticket_id=envelope.ticket.ticket_id,
                      origin_node=envelope.origin_node, error=str(exc))
            await self._send_ack(client, envelope.origin_node,
                                 EventAck(envelope.event_id, "rejected", self.node_id, str(exc)))
            return
        except StorageError as exc:
            log.error("event not stored; no ack sent, the child will re-publish", event_id=envelope.event_id,
                      ticket_id=envelope.ticket.ticket_id, origin_node=envelope.origin_node, error=str(exc))
            return

        # Step 3: acknowledge, duplicates included.
        if result == "applied":
            self.applied += 1
        else:
            self.duplicates += 1
            log.info("duplicate event acknowledged again", event_id=envelope.event_id,
                     ticket_id=envelope.ticket.ticket_id, origin_node=envelope.origin_node)
        await self._send_ack(client, envelope.origin_node, EventAck(envelope.event_id, result, self.node_id))

    async def _send_ack(self, client: aiomqtt.Client, child_node_id: str, ack: EventAck) -> None:
        await client.publish(
            down_acks_topic(child_node_id), encode_ack(ack), qos=1, timeout=self.settings.ack_publish_timeout_s
        )
        log.debug("ack sent", event_id=ack.event_id, status=ack.status, origin_node=child_node_id)
