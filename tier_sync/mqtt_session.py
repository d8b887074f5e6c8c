"""MQTT adapter: building persistent aiomqtt clients, naming disconnect causes, reconnect backoff."""

from __future__ import annotations

import errno
import random
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

# MQTT 5 reason codes (OASIS MQTT 5.0, section 2.4) that need their own handling.
REASON_UNSPECIFIED_ERROR = 128  # paho's code for a socket closed without a DISCONNECT packet
REASON_KEEP_ALIVE_TIMEOUT = 141
REASON_SESSION_TAKEN_OVER = 142
REASON_PACKET_TOO_LARGE = 149
# Login rejections: MQTT 5 "bad user name or password" and "not authorized", and the
# MQTT 3.1.1 CONNACK return codes 4 and 5 for the same two cases.
LOGIN_REJECTED_CODES = frozenset({134, 135, 4, 5})
# Publishes awaiting their PUBACK above which aiomqtt logs a warning; above any sync worker's window.
PENDING_CALLS_WARNING = 2000


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    """TLS and login of one node towards one broker.

    ``ca_file`` is the private CA that signed the broker's certificate; the broker's
    host name or address must be in that certificate. ``username`` is the node id that
    the broker's password file and ACL know the node by.
    """

    ca_file: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def tls_context(self) -> ssl.SSLContext | None:
        """Build a verifying TLS 1.2+ client context, or None when TLS is off."""
        if self.ca_file is None:
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


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
    # TLS and login; None connects in plain text without a login (tests and the demo).
    security: ClientSecurity | None = None


class BrokerConnectError(aiomqtt.MqttCodeError):
    """A connection attempt failed; the message is Chinese, names the broker and what to check.

    It is an ``aiomqtt.MqttError``, so the sync workers retry it like any other
    connection failure, and ``rc`` keeps the broker's reason code when there was one.
    """

    def __init__(self, rc: object, message: str) -> None:
        super().__init__(rc, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SessionClient(aiomqtt.Client):
    """An aiomqtt client whose connect errors are rewritten into ``BrokerConnectError``."""

    def __init__(self, host: str, port: int, *, security: ClientSecurity | None = None, **options: object) -> None:
        super().__init__(host, port, **options)  # type: ignore[arg-type]
        self.broker_host = host
        self.broker_port = port
        self.security = security

    async def __aenter__(self) -> SessionClient:
        try:
            await super().__aenter__()
        except aiomqtt.MqttError as exc:
            code = exc.rc if isinstance(exc, aiomqtt.MqttCodeError) else None
            message = describe_connect_failure(exc, self.broker_host, self.broker_port, self.security)
            raise BrokerConnectError(code, message) from exc
        return self


def make_client(host: str, port: int, client_id: str, settings: SessionSettings) -> aiomqtt.Client:
    """Build an MQTT 5 client that resumes its broker session (clean start off)."""
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = settings.session_expiry_s
    security = settings.security
    client = SessionClient(
        host,
        port,
        identifier=client_id,
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
        keepalive=settings.keepalive_s,
        timeout=settings.connect_timeout_s,
        username=security.username if security else None,
        password=security.password if security else None,
        tls_context=security.tls_context() if security else None,
        security=security,
    )
    # The sync workers keep up to a few hundred publishes waiting for their PUBACK on
    # purpose. aiomqtt would log a warning for each one above its default of 10.
    client.pending_calls_threshold = PENDING_CALLS_WARNING
    return client


def describe_connect_failure(exc: BaseException, host: str, port: int, security: ClientSecurity | None) -> str:
    """Explain in Chinese why connecting to a broker failed, naming the broker and what to check."""
    broker = f"MQTT 服务 {host}:{port}"
    code, cause = disconnect_reason(exc)
    username = security.username if security and security.username else None
    ca_file = security.ca_file if security else None

    if code in LOGIN_REJECTED_CODES:
        who = f"节点 {username}" if username else "匿名客户端"
        return (
            f"{broker} 拒绝了{who}的登录（原因码 {code}：用户名或密码错误，或未授权）。"
            f"请检查节点配置中 password_file 指向的是本节点的密码文件，"
            f"并确认该服务的 passwd 文件里有用户 {username or '（未配置）'}；"
            f"可在该服务所在节点重新运行 hotline brokers init --child {username or '<节点编号>'}。"
        )

    # aiomqtt turns socket and TLS errors into a plain MqttError that keeps only the
    # text, so the TLS cases are recognised by OpenSSL's reason names.
    # NOTE: this depends on the wording of OpenSSL 3.0 errors as Python 3.11 reports them.
    if "CERTIFICATE_VERIFY_FAILED" in cause:
        return (
            f"无法验证 {broker} 的 TLS 证书（{cause}）。请检查 tls.ca_file（{ca_file}）"
            f"是否为该服务 hotline brokers init 生成的 ca.crt，以及连接地址 {host} 是否在服务证书中。"
        )
    if "WRONG_VERSION_NUMBER" in cause or "SSL" in cause:
        return (
            f"与 {broker} 的 TLS 握手失败（{cause}）。请确认该端口是 TLS 监听端口"
            f"（hotline brokers init 生成的配置），且双方都支持 TLS 1.2 或更高版本。"
        )
    if f"[Errno {errno.ECONNREFUSED}]" in cause:
        return f"{broker} 拒绝连接（{cause}）。请确认 mosquitto 正在运行并监听该端口，以及配置中的端口号。"
    if ca_file is None:
        return (
            f"连接 {broker} 失败（{cause}）。本节点未配置 TLS；若该服务由 hotline brokers init 生成配置，"
            f"它只接受 TLS 连接，请在节点配置的 broker 一节加入 tls.ca_file 和 password_file。"
        )
    return f"连接 {broker} 失败（{cause}）。请检查该服务是否在运行、端口和 TLS 设置是否与节点配置一致。"


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
