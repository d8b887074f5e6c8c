"""MQTT adapter layer: the only code that speaks MQTT (ticket events up, acknowledgements down)."""

from tier_sync.mqtt_session import SessionSettings
from tier_sync.node_lock import NodeAlreadyRunning
from tier_sync.outbox_publisher import OutboxPublisher, PublisherSettings
from tier_sync.tier_receiver import ReceiverSettings, TierReceiver

__all__ = [
    "NodeAlreadyRunning",
    "OutboxPublisher",
    "PublisherSettings",
    "ReceiverSettings",
    "SessionSettings",
    "TierReceiver",
]
