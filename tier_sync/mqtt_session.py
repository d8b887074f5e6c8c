"""MQTT adapter: building persistent aiomqtt clients, naming disconnect causes, reconnect backoff."""

from __future__ import annotations

import random
from dataclasses import dataclass

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# MQTT 5 reason codes (OASIS MQTT 5.0, section 2.4) that need their own handling.
REASON_UNSPECIFIED_ERROR = 128  # paho's code for a socket closed without a DISCONNECT packet
REASON_KEEP_ALIVE_TIMEOUT = 141
REASON_SESSION_TAKEN_OVER = 142
REASON_PACKET_TOO_LARGE = 149


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """Connection settings shared by the publisher and the receiver.

    ``session_expiry_s`` keeps the broker-side session (subscriptions and queued QoS 1
    messages) for that long after a disconnect; this is MQTT 5's form of
    ``clean_session=False``.
    """

    keepalive_s: int = 30
    connect_timeout_s: float = 10.0
    session_expiry_s: int = 7 * 24 * 3600
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0


def make_client(host: str, port: int, client_id: str, settings: SessionSettings) -> aiomqtt.Client:
    """Build an MQTT 5 client that resumes its broker session (clean start off)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.session_expiry_s
    return aiomqtt.Client(
        host,
        port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
        keepalive=settings.keepalive_s,
        timeout=settings.connect_timeout_s,
    )


def disconnect_reason(exc: BaseException) -> tuple[int | None, str]:
    """Return the MQTT reason code (if any) and a readable cause behind an aiomqtt error."""
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, aiomqtt.MqttCodeError):
            rc = current.rc
            code = getattr(rc, "value", rc)
            return (code if isinstance(code, int) else None), str(current)
        current = current.__cause__ or current.__context__
    return None, str(exc)


class Backoff:
    """Exponential reconnect delay with jitter: each delay is drawn from [d/2, d]."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self._max_s, self._initial_s * (2 ** self.attempt))
        self.attempt += 1
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self.attempt = 0


def payload_bytes(payload: object) -> bytes:
    """Return an aiomqtt message payload as bytes, whatever type paho delivered it as."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    return str(payload).encode()
