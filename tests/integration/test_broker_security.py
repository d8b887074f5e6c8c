"""Integration: a real mosquitto run from the generated TLS, password and ACL configuration.

Each test starts mosquitto with ``mosquitto -c`` on the file ``hotline brokers init``
writes, so what is tested is the configuration an operator deploys, not a test copy.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path

import aiomqtt
import pytest
from click.testing import CliRunner
from structlog.testing import capture_logs

from hotline.brokers import BrokerFiles, init_broker, read_password_file
from hotline.cli import main
from stack.mosquitto import MosquittoBroker, free_port
from storage import TicketStore
from tickets.envelope import (
    SCHEMA_MAJOR,
    EventAck,
    build_envelope,
    decode_ack,
    decode_envelope,
    encode_ack,
    encode_envelope,
)
from tickets.model import Ticket, TicketCategory, TicketEvent, TicketState, Tier
from tier_sync import OutboxPublisher, PublisherSettings, ReceiverSettings, SessionSettings, TierReceiver
from tier_sync.mqtt_session import BrokerConnectError, ClientSecurity, make_client
from tier_sync.topics import TOPIC_ROOT, down_acks_topic, up_events_topic

pytestmark = pytest.mark.integration

CITY = "city-330100"
COUNTY = "county-330106"
OTHER_COUNTY = "county-330108"
AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
FAST = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.2, backoff_max_s=1.0,
                       session_expiry_s=0)
# How long a test waits for a message that must not arrive.
SILENCE_S = 1.0


def child_up_topic(child: str) -> str:
    """Return the topic the generated ACL lets ``child`` publish its events to on the city broker."""
    return up_events_topic(CITY, child)


def envelope_bytes(ticket_number: int, origin_node: str = COUNTY, region: str = "330106") -> bytes:
    ticket_id = f"{region}-20261204-{ticket_number:04d}"
    ticket = Ticket(ticket_id, origin_node, region, TicketCategory.DIBAO, TicketState.NEW, "138****5678",
                    f"1700000000.{ticket_number}", AT, AT, 1)
    event = TicketEvent(ticket_id, 1, "created", "ivr", Tier.COUNTY, None, AT, None, TicketState.NEW,
                        payload={"call_id": f"1700000000.{ticket_number}"})
    return encode_envelope(build_envelope(ticket, event))


@pytest.fixture
def files(tmp_path: Path) -> BrokerFiles:
    return init_broker(tmp_path / "city-broker", CITY, (COUNTY, OTHER_COUNTY), free_port()).files


@pytest.fixture
def broker(files: BrokerFiles) -> Iterator[MosquittoBroker]:
    port = int(next(line for line in files.config_file.read_text().splitlines()
                    if line.startswith("listener ")).split()[1])
    with MosquittoBroker(port, config_file=files.config_file) as running:
        yield running


def login(files: BrokerFiles, node_id: str) -> SessionSettings:
    security = ClientSecurity(files.ca_cert, node_id, read_password_file(files.credential(node_id)))
    return SessionSettings(keepalive_s=FAST.keepalive_s, connect_timeout_s=FAST.connect_timeout_s,
                           session_expiry_s=0, security=security)


def with_backoff(settings: SessionSettings) -> SessionSettings:
    return SessionSettings(keepalive_s=FAST.keepalive_s, connect_timeout_s=FAST.connect_timeout_s,
                           backoff_initial_s=FAST.backoff_initial_s, backoff_max_s=FAST.backoff_max_s,
                           security=settings.security)


class Listener:
    """A logged-in client that records every message it may read under some topic filters."""

    def __init__(self, broker: MosquittoBroker, client_id: str, settings: SessionSettings, *filters: str) -> None:
        self._client = make_client(broker.host, broker.port, client_id, settings)
        self._filters = filters
        self.messages: list[tuple[str, bytes]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Listener:
        await self._client.__aenter__()
        for topic_filter in self._filters:
            await self._client.subscribe(topic_filter, qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        async for message in self._client.messages:
            self.messages.append((message.topic.value, bytes(message.payload)))  # type: ignore[arg-type]

    async def wait_for(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.messages) < count:
                await asyncio.sleep(0.02)

    @property
    def client(self) -> aiomqtt.Client:
        return self._client


class TestAcl:
    async def test_child_event_acked(self, broker: MosquittoBroker, files: BrokerFiles) -> None:
        """A child with its own password publishes under its own id; the city reads it and acks on the child's topic."""
        async with Listener(broker, "city-receiver", login(files, CITY), f"{TOPIC_ROOT}/{CITY}/up/#") as city:
            async with Listener(broker, "county-pub", login(files, COUNTY), down_acks_topic(COUNTY)) as county:
                await county.client.publish(child_up_topic(COUNTY), envelope_bytes(7), qos=1)
                await city.wait_for(1)

                topic, raw = city.messages[0]
                envelope = decode_envelope(raw)
                ack = EventAck(envelope.event_id, "applied", CITY)
                await city.client.publish(down_acks_topic(COUNTY), encode_ack(ack), qos=1)
                await county.wait_for(1)

        assert topic == child_up_topic(COUNTY)
        assert envelope.origin_node == COUNTY
        received = decode_ack(county.messages[0][1])
        assert received.event_id == "330106-20261204-0007#1"
        assert received.status == "applied"

    async def test_publish_as_other_node_dropped(self, broker: MosquittoBroker, files: BrokerFiles) -> None:
        """A child that publishes under another child's id is dropped by the broker; the city never sees it."""
        async with Listener(broker, "city-receiver", login(files, CITY), f"{TOPIC_ROOT}/{CITY}/up/#") as city:
            async with Listener(broker, "county-pub", login(files, COUNTY)) as county:
                forged = envelope_bytes(8, origin_node=OTHER_COUNTY, region="330108")
                await county.client.publish(child_up_topic(OTHER_COUNTY), forged, qos=1)
                # The topic every child shared before each got a level of its own.
                await county.client.publish(f"{TOPIC_ROOT}/{CITY}/up/events", forged, qos=1)
                await county.client.publish(f"{TOPIC_ROOT}/{CITY}/down/anything", forged, qos=1)
                # Sent last on the same connection, so with QoS 1 ordering the forged
                # messages would have arrived before it.
                await county.client.publish(child_up_topic(COUNTY), envelope_bytes(9), qos=1)
                await city.wait_for(1)
                await asyncio.sleep(SILENCE_S)

        assert [topic for topic, _ in city.messages] == [child_up_topic(COUNTY)]
        assert decode_envelope(city.messages[0][1]).event_id == "330106-20261204-0009#1"

    async def test_child_reads_only_own_acks(self, broker: MosquittoBroker, files: BrokerFiles) -> None:
        """A child subscribed to another child's acks and to the up topics receives only its own acks."""
        filters = (down_acks_topic(OTHER_COUNTY), f"{TOPIC_ROOT}/{CITY}/up/#", down_acks_topic(COUNTY))
        async with Listener(broker, "county-sub", login(files, COUNTY), *filters) as county:
            async with Listener(broker, "city-sender", login(files, CITY)) as city:
                other_ack = EventAck("330108-20261204-0001#1", "applied", CITY)
                await city.client.publish(down_acks_topic(OTHER_COUNTY), encode_ack(other_ack), qos=1)
            async with Listener(broker, "other-pub", login(files, OTHER_COUNTY)) as other:
                await other.client.publish(child_up_topic(OTHER_COUNTY),
                                           envelope_bytes(3, OTHER_COUNTY, "330108"), qos=1)
            async with Listener(broker, "city-sender", login(files, CITY)) as city:
                own_ack = EventAck("330106-20261204-0001#1", "applied", CITY)
                await city.client.publish(down_acks_topic(COUNTY), encode_ack(own_ack), qos=1)
            await county.wait_for(1)
            await asyncio.sleep(SILENCE_S)

        assert [topic for topic, _ in county.messages] == [down_acks_topic(COUNTY)]


class TestRealWorkers:
    async def test_outbox_drained_over_tls(self, broker: MosquittoBroker, files: BrokerFiles,
                                           tmp_path: Path) -> None:
        """The county's outbox publisher and the city's receiver, each logged in as itself, sync one ticket."""
        async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as county, \
                await TicketStore.open(tmp_path / "city.db", CITY, "330100") as city:
            receiver = TierReceiver(city, broker.host, broker.port, CITY, use_lock=False,
                                    settings=ReceiverSettings(session=with_backoff(login(files, CITY))))
            publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY, use_lock=False,
                                        settings=PublisherSettings(session=with_backoff(login(files, COUNTY)),
                                                                   ack_timeout_s=2.0, poll_interval_s=0.1))
            assert publisher.events_topic == child_up_topic(COUNTY)
            await receiver.start()
            await publisher.start()
            try:
                ticket = await county.open_ticket("1700000000.5", TicketCategory.DIBAO, "138****5678", AT, "ivr",
                                                  {"flow_id": "main"})
                publisher.notify()
                await publisher.wait_drained(timeout=15)
            finally:
                await publisher.stop()
                await receiver.stop()

            stored = await city.get_ticket(ticket.ticket_id)

        assert stored.origin_node == COUNTY
        assert publisher.acked == 1
        assert publisher.dead_lettered == 0
        assert receiver.applied == 1


class TestLoginFailures:
    async def test_wrong_password_named(self, broker: MosquittoBroker, files: BrokerFiles) -> None:
        settings = SessionSettings(connect_timeout_s=3, session_expiry_s=0,
                                   security=ClientSecurity(files.ca_cert, COUNTY, "wrong-password-0000"))
        with pytest.raises(BrokerConnectError) as caught:
            async with make_client(broker.host, broker.port, "county-pub", settings):
                pass
        message = str(caught.value)
        assert f"MQTT 服务 {broker.host}:{broker.port}" in message
        assert f"节点 {COUNTY}" in message
        assert "password_file" in message
        assert getattr(caught.value.rc, "value", caught.value.rc) in (134, 135)

    async def test_unknown_user_rejected(self, broker: MosquittoBroker, files: BrokerFiles) -> None:
        password = read_password_file(files.credential(COUNTY))
        settings = SessionSettings(connect_timeout_s=3, session_expiry_s=0,
                                   security=ClientSecurity(files.ca_cert, "county-330199", password))
        with pytest.raises(BrokerConnectError) as caught:
            async with make_client(broker.host, broker.port, "county-pub", settings):
                pass
        assert "county-330199" in str(caught.value)

    async def test_plain_client_told_to_use_tls(self, broker: MosquittoBroker) -> None:
        settings = SessionSettings(connect_timeout_s=2, session_expiry_s=0)
        with pytest.raises(BrokerConnectError) as caught:
            async with make_client(broker.host, broker.port, "county-pub", settings):
                pass
        message = str(caught.value)
        assert f"{broker.host}:{broker.port}" in message
        assert "tls.ca_file" in message

    async def test_tls_without_password_rejected(self, broker: MosquittoBroker, files: BrokerFiles) -> None:
        settings = SessionSettings(connect_timeout_s=3, session_expiry_s=0, security=ClientSecurity(files.ca_cert))
        with pytest.raises(BrokerConnectError) as caught:
            async with make_client(broker.host, broker.port, "county-pub", settings):
                pass
        assert "匿名客户端" in str(caught.value)

    async def test_other_ca_rejected(self, broker: MosquittoBroker, files: BrokerFiles, tmp_path: Path) -> None:
        stranger = init_broker(tmp_path / "other-broker", "city-330200", (), free_port()).files
        password = read_password_file(files.credential(COUNTY))
        settings = SessionSettings(connect_timeout_s=3, session_expiry_s=0,
                                   security=ClientSecurity(stranger.ca_cert, COUNTY, password))
        with pytest.raises(BrokerConnectError) as caught:
            async with make_client(broker.host, broker.port, "county-pub", settings):
                pass
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert str(stranger.ca_cert) in str(caught.value)

    async def test_node_log_names_broker(self, broker: MosquittoBroker, files: BrokerFiles, tmp_path: Path) -> None:
        """A running receiver with a wrong password logs the Chinese cause and keeps retrying."""
        bad_password = tmp_path / "city.password"
        bad_password.write_text("wrong-password-0000\n")
        security = ClientSecurity(files.ca_cert, CITY, read_password_file(bad_password))
        session = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.1, backoff_max_s=0.2,
                                  security=security)
        async with await TicketStore.open(tmp_path / "city.db", CITY, "330100") as store:
            receiver = TierReceiver(store, broker.host, broker.port, CITY,
                                    settings=ReceiverSettings(session=session), use_lock=False)
            with capture_logs() as logs:
                await receiver.start()
                try:
                    async with asyncio.timeout(10):
                        while sum(entry["event"] == "mqtt connect failed" for entry in logs) < 2:
                            await asyncio.sleep(0.05)
                finally:
                    await receiver.stop()

        failure = next(entry for entry in logs if entry["event"] == "mqtt connect failed")
        assert f"MQTT 服务 {broker.host}:{broker.port}" in failure["cause"]
        assert "password_file" in failure["cause"]
        assert "wrong-password" not in json.dumps(logs, default=str, ensure_ascii=False)
        assert receiver.connections == 0


class TestCheckCommand:
    def write_config(self, path: Path, broker: MosquittoBroker, files: BrokerFiles, password_file: Path) -> None:
        path.write_text(
            f"node_id: {CITY}\n"
            "tier: city\n"
            "region_code: '330100'\n"
            f"database: {path.parent / 'city.db'}\n"
            "broker:\n"
            f"  port: {broker.port}\n"
            f"  tls: {{ca_file: {files.ca_cert}}}\n"
            f"  password_file: {password_file}\n",
            encoding="utf-8",
        )

    def test_login_succeeds(self, broker: MosquittoBroker, files: BrokerFiles, tmp_path: Path) -> None:
        config = tmp_path / "city.yaml"
        self.write_config(config, broker, files, files.credential(CITY))
        result = CliRunner().invoke(main, ["brokers", "check", "--config", str(config)])
        assert result.exit_code == 0, result.output
        assert f"以节点 {CITY} 登录成功（TLS + 密码）" in result.output

    def test_wrong_password_in_chinese(self, broker: MosquittoBroker, files: BrokerFiles, tmp_path: Path) -> None:
        config = tmp_path / "city.yaml"
        self.write_config(config, broker, files, files.credential(COUNTY))
        result = CliRunner().invoke(main, ["brokers", "check", "--config", str(config)])
        assert result.exit_code == 1
        assert f"拒绝了节点 {CITY}的登录" in result.output
        assert "password_file" in result.output


class TestUnknownMajorOnLiveReceiver:
    @pytest.fixture
    def plain_broker(self, tmp_path: Path) -> Iterator[MosquittoBroker]:
        with MosquittoBroker(work_dir=tmp_path / "plain-broker") as running:
            yield running

    @pytest.fixture
    async def city(self, tmp_path: Path) -> AsyncIterator[TicketStore]:
        async with await TicketStore.open(tmp_path / "city.db", CITY, "330100") as store:
            yield store

    async def test_rejected_without_blocking_later_events(self, plain_broker: MosquittoBroker,
                                                          city: TicketStore) -> None:
        """An event of an unknown major version gets a rejection naming the value and the fix; later events apply."""
        receiver = TierReceiver(city, plain_broker.host, plain_broker.port, CITY,
                                settings=ReceiverSettings(session=FAST), use_lock=False)
        await receiver.start()
        try:
            await receiver.wait_connected(5)
            async with Listener(plain_broker, "county-acks", FAST, down_acks_topic(COUNTY)) as county:
                newer_major = json.loads(envelope_bytes(1))
                newer_major["schema"] = f"{SCHEMA_MAJOR + 1}.0"
                newer_minor = json.loads(envelope_bytes(2))
                newer_minor["schema"] = f"{SCHEMA_MAJOR}.9"
                newer_minor["channel"] = "wechat"
                for document in (newer_major, newer_minor):
                    await county.client.publish(up_events_topic(CITY, COUNTY), json.dumps(document).encode(), qos=1)
                await county.client.publish(up_events_topic(CITY, COUNTY), envelope_bytes(3), qos=1)
                await county.wait_for(3)
        finally:
            await receiver.stop()

        acks = [decode_ack(raw) for _, raw in county.messages]
        assert [(ack.event_id, ack.status) for ack in acks] == [
            ("330106-20261204-0001#1", "rejected"),
            ("330106-20261204-0002#1", "applied"),
            ("330106-20261204-0003#1", "applied"),
        ]
        assert f"'{SCHEMA_MAJOR + 1}.0'" in (acks[0].error or "")
        assert "upgrade the hotline software on this node" in (acks[0].error or "")
        stored = sorted(ticket.ticket_id for ticket in await city.list_tickets())
        assert stored == ["330106-20261204-0002", "330106-20261204-0003"]
        assert receiver.rejected == 1
