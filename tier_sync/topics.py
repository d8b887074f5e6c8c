"""MQTT adapter: topic names, client ids and the size of a PUBLISH packet on the wire."""

from __future__ import annotations

from tickets.model import validate_node_id

TOPIC_ROOT = "hotline/v1"


def up_events_topic(parent_node_id: str, child_node_id: str) -> str:
    """Return the topic a child publishes its ticket events to, on the parent's broker.

    The child's id is a topic level, so the broker ACL lets each child write only under its own id.
    """
    return f"{TOPIC_ROOT}/{validate_node_id(parent_node_id)}/up/{validate_node_id(child_node_id)}/events"


def up_subscription(node_id: str) -> str:
    """Return the filter a parent subscribes to for everything its children send up."""
    return f"{TOPIC_ROOT}/{validate_node_id(node_id)}/up/#"


def down_acks_topic(child_node_id: str) -> str:
    """Return the topic a parent sends a child's acknowledgements to."""
    return f"{TOPIC_ROOT}/{validate_node_id(child_node_id)}/down/acks"


def down_instructions_topic(child_node_id: str) -> str:
    """Return the topic a parent sends a child's instructions to, on the parent's own broker."""
    return f"{TOPIC_ROOT}/{validate_node_id(child_node_id)}/down/instructions"


def up_instruction_acks_topic(parent_node_id: str, child_node_id: str) -> str:
    """Return the topic a child sends its acks of the parent's instructions to, on the parent's broker.

    The child's id is a topic level, so a broker ACL can let each child write only under its own id.
    """
    return f"{TOPIC_ROOT}/{validate_node_id(parent_node_id)}/up/{validate_node_id(child_node_id)}/instruction-acks"


def sender_of_up_topic(node_id: str, topic: str, leaf: str) -> str | None:
    """Return the child id in ``hotline/v1/<node>/up/<child>/<leaf>``, or None for any other topic."""
    prefix = f"{TOPIC_ROOT}/{node_id}/up/"
    if not topic.startswith(prefix) or not topic.endswith(f"/{leaf}"):
        return None
    child = topic[len(prefix):-len(leaf) - 1]
    try:
        return validate_node_id(child)
    except ValueError:
        return None


def direct_publisher_client_id(node_id: str, destination_node_id: str) -> str:
    """Return the MQTT client id of a node's emergency publisher towards one ancestor, stable across restarts."""
    return f"hotline-{validate_node_id(node_id)}-direct-{validate_node_id(destination_node_id)}"


def publisher_client_id(node_id: str) -> str:
    """Return the MQTT client id of a node's outbox publisher, stable across restarts."""
    return f"hotline-{validate_node_id(node_id)}"


def receiver_client_id(node_id: str) -> str:
    """Return the MQTT client id of a node's receiver, distinct from its publisher's."""
    return f"hotline-{validate_node_id(node_id)}-receiver"


def _varint_length(value: int) -> int:
    length = 1
    while value >= 128:
        value //= 128
        length += 1
    return length


def publish_packet_size(topic: str, payload: bytes) -> int:
    """Return the size in bytes of an MQTT 5 QoS 1 PUBLISH without properties.

    Fixed header (1 byte + remaining-length varint), topic (2 + UTF-8 bytes), packet
    id (2) and an empty property block (1), then the payload.
    """
    remaining = 2 + len(topic.encode()) + 2 + 1 + len(payload)
    return 1 + _varint_length(remaining) + remaining
