"""Integration: county outbox → real mosquitto → city receiver → application ack → county outbox cleared."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
import structlog

from stack.mosquitto import MosquittoBroker
from storage import TicketStore
from tickets.envelope import EventAck
from tickets.model import TicketCategory, TicketState
from tier_sync import (
    NodeAlreadyRunning,
    OutboxPublisher,
    PublisherSettings,
    ReceiverSettings,
    SessionSettings,
    TierReceiver,
)
from tier_sync.topics import down_acks_topic, publisher_client_id, up_events_topic

pytestmark = pytest.mark.integration

COUNTY = "county-330106"
CITY = "city-330100"
CREATED_AT = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)

FAST_SESSION = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.2, backoff_max_s=1.0)


def publisher_settings(**overrides: object) -> PublisherSettings:
    values: dict[str, object] = {
        "session": FAST_SESSION, "publish_timeout_s": 3.0, "ack_timeout_s": 2.0,
        "poll_interval_s": 0.1, "takeover_backoff_s": 1.0,
    }
    values.update(overrides)
    return PublisherSettings(**values)  # type: ignore[arg-type]


RECEIVER_SETTINGS = ReceiverSettings(session=FAST_SESSION, takeover_backoff_s=1.0)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(work_dir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def county(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as store:
        yield store


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "city.db", CITY, "330100") as store:
        yield store


async def open_ticket(store: TicketStore, call_id: str, payload: dict[str, object] | None = None) -> str:
    ticket = await store.open_ticket(
        call_id, TicketCategory.LINSHI, "138****5678", CREATED_AT, "ivr", payload or {"flow_id": "main"}
    )
    return ticket.ticket_id


class TopicSpy:
    """A plain MQTT client that records every message on one topic filter."""

    def __init__(self, broker: MosquittoBroker, topic: str) -> None:
        self._broker = broker
        self._topic = topic
        self.messages: list[bytes] = []
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> TopicSpy:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._ready.wait(), 5)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        async with aiomqtt.Client(self._broker.host, self._broker.port, identifier=f"spy-{secrets.token_hex(4)}") as client:
            await client.subscribe(self._topic, qos=1)
            self._ready.set()
            async for message in client.messages:
                self.messages.append(bytes(message.payload))  # type: ignore[arg-type]


class AckDroppingReceiver(TierReceiver):
    """Receiver that loses the first acknowledgement of every event, like a link drop after the apply."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.dropped: set[str] = set()

    async def _send_ack(self, client: aiomqtt.Client, child_node_id: str, ack: EventAck) -> None:
        if ack.event_id not in self.dropped:
            self.dropped.add(ack.event_id)
            return
        await super()._send_ack(client, child_node_id, ack)


class TestRoundTrip:
    async def test_ticket_reaches_city_and_row_clears_after_ack(
        self, broker: MosquittoBroker, county: TicketStore, city: TicketStore
    ) -> None:
        """A ticket opened at the county appears at the city; its row clears only once the city acked."""
        publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY, settings=publisher_settings())
        receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)

        # Publisher alone: the broker PUBACKs, but with no city ack the row stays pending.
        await publisher.start()
        try:
            ticket_id = await open_ticket(county, "1700000000.1")
            await county.append_event(ticket_id, "dispatched", "agent-1001", {"office_code": "330106-01"},
                                      to_state=TicketState.DISPATCHED)
            publisher.notify()
            for _ in range(100):
                if publisher.published >= 2:
                    break
                await asyncio.sleep(0.05)
            assert publisher.published >= 2
            assert await county.count_pending_outbox() == 2

            # With the city receiving, the rows clear.
            await receiver.start()
            await publisher.wait_drained(timeout=15)
        finally:
            await publisher.stop()
            await receiver.stop()

        stored = await city.get_ticket(ticket_id)
        assert stored.origin_node == COUNTY
        assert stored.state is TicketState.DISPATCHED
        assert stored.caller_masked == "138****5678"
        assert [event.seq for event in await city.list_events(ticket_id)] == [1, 2]
        assert await county.count_pending_outbox() == 0

    async def test_buffered_events_arrive_after_city_restart(
        self, broker: MosquittoBroker, county: TicketStore, city: TicketStore
    ) -> None:
        """Events published while the city receiver was down are delivered from its persistent session."""
        receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)
        await receiver.start()
        await receiver.wait_connected(5)
        await receiver.stop()

        publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY, settings=publisher_settings())
        await publisher.start()
        try:
            ticket_ids = [await open_ticket(county, f"1700000001.{index}") for index in range(5)]
            publisher.notify()
            for _ in range(100):
                if publisher.published >= 5:
                    break
                await asyncio.sleep(0.05)
            await receiver.start()
            await publisher.wait_drained(timeout=15)
        finally:
            await publisher.stop()
            await receiver.stop()

        assert [ticket.ticket_id for ticket in await city.list_tickets(origin_node=COUNTY)] == ticket_ids

    async def test_invalid_event_rejected_and_dead_lettered(
        self, broker: MosquittoBroker, county: TicketStore, city: TicketStore
    ) -> None:
        """A malformed envelope never reaches the city's tables, the receiver keeps running, and the sender gets a rejection."""
        receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)
        await receiver.start()
        try:
            await receiver.wait_connected(5)
            async with TopicSpy(broker, down_acks_topic(COUNTY)) as acks:
                async with aiomqtt.Client(broker.host, broker.port, identifier="bad-sender") as client:
                    bad = {
                        "schema": 1, "type": "ticket_event", "origin_node": COUNTY,
                        "event_id": "330106-20261204-0001#1", "tier": "county", "occurred_at": "yesterday",
                    }
                    await client.publish(up_events_topic(CITY, COUNTY), json.dumps(bad).encode(), qos=1)
                    await client.publish(up_events_topic(CITY, COUNTY), b"\xff\xfe not json", qos=1)
                # Wait for the rejection to reach the county's ack topic too: the bad envelope
                # reuses the event id the valid ticket below gets, so a late rejection would
                # reach the publisher and dead-letter the valid row.
                for _ in range(200):
                    if receiver.rejected >= 2 and acks.messages:
                        break
                    await asyncio.sleep(0.05)

                # A valid event after the bad ones is still applied.
                publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY,
                                            settings=publisher_settings())
                await publisher.start()
                try:
                    ticket_id = await open_ticket(county, "1700000002.1")
                    await publisher.wait_drained(timeout=15)
                finally:
                    await publisher.stop()
        finally:
            await receiver.stop()

        assert receiver.rejected == 2
        assert receiver.connections == 1
        rejection = json.loads(acks.messages[0])
        assert rejection["status"] == "rejected"
        assert "tier" in rejection["error"] or "occurred_at" in rejection["error"]
        assert [ticket.ticket_id for ticket in await city.list_tickets()] == [ticket_id]


class TestDuplicateClientId:
    async def test_second_publisher_of_node_rejected_by_lock(
        self, broker: MosquittoBroker, county: TicketStore
    ) -> None:
        """A second publisher for the same node fails to start with a clear error (M01)."""
        first = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY, settings=publisher_settings())
        second = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY, settings=publisher_settings())
        await first.start()
        try:
            with pytest.raises(NodeAlreadyRunning) as caught:
                await second.start()
            await first.wait_connected(5)
        finally:
            await first.stop()

        assert COUNTY in str(caught.value)
        assert "已在运行" in str(caught.value)
        assert first.takeovers == 0

        # Once the first one stops, the lock is free again.
        await second.start()
        await second.stop()

    async def test_takeover_logged_and_rows_stay_pending(
        self, broker: MosquittoBroker, county: TicketStore, city: TicketStore
    ) -> None:
        """A foreign client that keeps reconnecting with our client id: ERROR logged, rows pending until acked (M01)."""
        publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY,
                                    settings=publisher_settings(takeover_backoff_s=2.0))
        receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)

        with structlog.testing.capture_logs() as logs:
            await publisher.start()
            await publisher.wait_connected(5)
            ticket_id = await open_ticket(county, "1700000003.1")
            publisher.notify()

            # The impostor behaves like a stale sync process: connect, get kicked, reconnect.
            for _ in range(4):
                impostor = aiomqtt.Client(broker.host, broker.port, identifier=publisher_client_id(COUNTY),
                                          protocol=aiomqtt.ProtocolVersion.V5)
                try:
                    async with impostor:
                        await asyncio.sleep(0.8)
                except aiomqtt.MqttError:
                    pass
                if publisher.takeovers:
                    break
            pending_during_takeover = await county.count_pending_outbox()

            await receiver.start()
            try:
                await publisher.wait_drained(timeout=20)
            finally:
                await publisher.stop()
                await receiver.stop()

        takeover_logs = [entry for entry in logs if entry["event"].startswith("mqtt session taken over")]
        assert publisher.takeovers >= 1
        assert takeover_logs and takeover_logs[0]["log_level"] == "error"
        assert takeover_logs[0]["client_id"] == publisher_client_id(COUNTY)
        assert "already connected, closing old connection" in broker.log_text()
        assert pending_during_takeover == 1
        assert len(await city.list_events(ticket_id)) == 1


class TestQos1Duplicates:
    async def test_lost_ack_republished_with_same_event_id(
        self, broker: MosquittoBroker, county: TicketStore, city: TicketStore
    ) -> None:
        """When the city's ack is lost, the county re-publishes the same event id and the city keeps one copy (M02)."""
        publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY,
                                    settings=publisher_settings(ack_timeout_s=1.0))
        receiver = AckDroppingReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)

        async with TopicSpy(broker, up_events_topic(CITY, COUNTY)) as wire:
            await receiver.start()
            await publisher.start()
            try:
                ticket_ids = [await open_ticket(county, f"1700000004.{index}") for index in range(3)]
                await county.append_event(ticket_ids[0], "note_added", "agent-1001", {"text": "已核实"})
                await publisher.wait_drained(timeout=20)
            finally:
                await publisher.stop()
                await receiver.stop()

        event_ids = [json.loads(message)["event_id"] for message in wire.messages]
        for event_id in {f"{ticket_ids[0]}#1", f"{ticket_ids[0]}#2", f"{ticket_ids[1]}#1", f"{ticket_ids[2]}#1"}:
            copies = [message for message in wire.messages if json.loads(message)["event_id"] == event_id]
            assert len(copies) >= 2, event_id
            assert len(set(copies)) == 1, f"re-publish of {event_id} changed its bytes"
        assert len(event_ids) >= 8
        assert receiver.applied == 4
        assert receiver.duplicates >= 4
        assert [event.seq for event in await city.list_events(ticket_ids[0])] == [1, 2]
        assert len(await city.list_tickets()) == 3

    async def test_raw_duplicate_publish_stored_once_and_acked_twice(
        self, broker: MosquittoBroker, county: TicketStore, city: TicketStore
    ) -> None:
        """The same envelope delivered twice is stored once and acknowledged as applied, then duplicate (M02)."""
        ticket_id = await open_ticket(county, "1700000005.1")
        (row,) = await county.pending_outbox()
        receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)
        await receiver.start()
        try:
            await receiver.wait_connected(5)
            async with TopicSpy(broker, down_acks_topic(COUNTY)) as acks:
                async with aiomqtt.Client(broker.host, broker.port, identifier="replayer") as client:
                    await client.publish(up_events_topic(CITY, COUNTY), row.envelope, qos=1)
                    await client.publish(up_events_topic(CITY, COUNTY), row.envelope, qos=1)
                for _ in range(100):
                    if len(acks.messages) >= 2:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await receiver.stop()

        statuses = [json.loads(message)["status"] for message in acks.messages]
        assert statuses == ["applied", "duplicate"]
        assert len(await city.list_events(ticket_id)) == 1


class TestOversizePayload:
    async def test_oversize_row_dead_lettered_later_rows_flow(self, tmp_path: Path, county: TicketStore,
                                                             city: TicketStore) -> None:
        """A 300 KB row against a 64 KiB broker limit is dead-lettered with an ERROR; later rows arrive (M03)."""
        with MosquittoBroker(max_packet_size=65536, work_dir=tmp_path / "small-broker") as broker:
            publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY,
                                        settings=publisher_settings(max_packet_size=65536))
            receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=RECEIVER_SETTINGS)

            big_id = await open_ticket(county, "1700000006.1", {"transcript": "来电人询问临时救助的申请材料。" * 20_000})
            small_ids = [await open_ticket(county, f"1700000006.{index}") for index in range(2, 5)]
            with structlog.testing.capture_logs() as logs:
                await receiver.start()
                await publisher.start()
                try:
                    await publisher.wait_drained(timeout=15)
                finally:
                    await publisher.stop()
                    await receiver.stop()

        (dead,) = await county.list_dead_letters()
        assert dead.ticket_id == big_id
        assert dead.size > 300_000
        assert "65536" in (dead.dead_reason or "")
        alerts = [entry for entry in logs if entry["log_level"] == "error" and entry.get("ticket_id") == big_id]
        assert alerts and alerts[0]["limit"] == 65536
        assert publisher.connections == 1
        assert [ticket.ticket_id for ticket in await city.list_tickets()] == small_ids
