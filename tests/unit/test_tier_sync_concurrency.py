"""Unit tests for concurrent sync handling: the handler pool, per-ticket locks, the publisher's window, the receiver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from storage import OutboxRow
from storage.ticket_store import TicketStore
from tickets.envelope import decode_ack
from tickets.model import TicketCategory
from tier_sync.outbox_publisher import InFlight
from tier_sync.tier_receiver import TierReceiver
from tier_sync.topics import down_acks_topic, up_events_topic
from tier_sync.worker import HandlerPool, KeyedLocks

AT = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
COUNTY, CITY = "county-330106", "city-330100"
TIMEOUT = 60.0


def row(index: int) -> OutboxRow:
    return OutboxRow(index, f"330106-20261204-{index:04d}#1", f"330106-20261204-{index:04d}", 1, b"{}", 2, AT,
                     None, 0)


def sent_rows(window: InFlight, count: int, at: float) -> list[str]:
    keys = []
    for index in range(1, count + 1):
        sent = row(index)
        window.sent(sent.event_id, sent, at)
        keys.append(sent.event_id)
    return keys


# ---------------------------------------------------------------------- publisher window


def test_backlog_not_resent_while_acks_arrive() -> None:
    window = InFlight(TIMEOUT, now=0.0)
    keys = sent_rows(window, 3, at=0.0)

    window.acked(keys[0], now=50.0)
    window.forget(keys[0])

    assert window.overdue(now=100.0, limit=10) == []


def test_passed_over_row_resent_after_timeout() -> None:
    window = InFlight(TIMEOUT, now=0.0)
    keys = sent_rows(window, 2, at=0.0)
    window.acked(keys[1], now=10.0)
    window.forget(keys[1])

    assert window.overdue(now=59.9, limit=10) == []
    assert [key for key, _ in window.overdue(now=60.0, limit=10)] == [keys[0]]


def test_stuck_link_resends_oldest_rows_first() -> None:
    window = InFlight(TIMEOUT, now=0.0)
    keys = sent_rows(window, 5, at=1.0)

    assert window.overdue(now=60.5, limit=10) == []
    assert [key for key, _ in window.overdue(now=61.0, limit=3)] == keys[:3]


def test_resent_row_waits_another_timeout() -> None:
    window = InFlight(TIMEOUT, now=0.0)
    keys = sent_rows(window, 2, at=0.0)
    due = window.overdue(now=61.0, limit=10)
    for key, sent in due:
        window.sent(key, sent, 61.0)

    assert window.overdue(now=120.0, limit=10) == []
    assert len(window.overdue(now=121.0, limit=10)) == len(keys)


def test_acked_row_counted_until_cleared() -> None:
    window = InFlight(TIMEOUT, now=0.0)
    keys = sent_rows(window, 1, at=0.0)

    window.acked(keys[0], now=1.0)

    assert keys[0] in window
    window.forget(keys[0])
    assert keys[0] not in window


def test_rows_cleared_during_read_reported() -> None:
    window = InFlight(TIMEOUT, now=0.0)
    keys = sent_rows(window, 3, at=0.0)
    window.forget(keys[0])

    window.begin_read()
    window.forget(keys[1])
    cleared_during_read = window.end_read()
    window.forget(keys[2])

    assert cleared_during_read == {keys[1]}


# ---------------------------------------------------------------------- handler pool and keyed locks


async def test_handler_pool_never_runs_more_than_its_limit() -> None:
    pool = HandlerPool(3)
    running = 0
    most = 0

    async def handler() -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.01)
        running -= 1

    for _ in range(10):
        await pool.spawn(handler())
    await pool.drain()

    assert most == 3


async def test_handler_pool_watch_raises_the_first_handler_error() -> None:
    pool = HandlerPool(4)

    async def failing() -> None:
        raise aiomqtt.MqttError("ack publish timed out")

    await pool.spawn(failing())

    with pytest.raises(aiomqtt.MqttError, match="ack publish timed out"):
        await asyncio.wait_for(pool.watch(), timeout=1)


async def test_handler_pool_cancel_stops_running_handlers() -> None:
    pool = HandlerPool(2)
    finished = []

    async def slow() -> None:
        await asyncio.sleep(10)
        finished.append(True)

    await pool.spawn(slow())
    await pool.spawn(slow())
    await pool.cancel()

    assert pool.running == 0
    assert finished == []


async def test_keyed_locks_serialise_one_key() -> None:
    locks = KeyedLocks()
    order: list[str] = []

    async def work(key: str, name: str, delay: float) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(delay)
            order.append(f"{name} out")

    await asyncio.gather(work("t1", "a", 0.02), work("t1", "b", 0.0), work("t2", "c", 0.0))

    assert order == ["a in", "c in", "c out", "a out", "b in", "b out"]
    assert len(locks) == 0


def test_handler_pool_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        HandlerPool(0)


# ---------------------------------------------------------------------- receiver


class RecordingClient:
    """Stands in for aiomqtt.Client: yields prepared messages and records publishes, each taking 10 ms."""

    def __init__(self, messages: list[aiomqtt.Message]) -> None:
        self._messages = messages
        self.published: list[tuple[str, bytes]] = []
        self.publishing = 0
        self.most_publishing = 0

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        async def iterate() -> AsyncIterator[aiomqtt.Message]:
            for message in self._messages:
                yield message

        return iterate()

    async def publish(self, topic: str, payload: bytes, qos: int, timeout: float) -> None:
        self.publishing += 1
        self.most_publishing = max(self.most_publishing, self.publishing)
        await asyncio.sleep(0.01)
        self.publishing -= 1
        self.published.append((topic, payload))


@pytest.fixture
async def county(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106",
                                      clock=lambda: AT + timedelta(hours=1)) as store:
        yield store


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "city.db", CITY, "330100",
                                      clock=lambda: AT + timedelta(hours=2)) as store:
        yield store


async def test_receiver_groups_concurrent_events(county: TicketStore, city: TicketStore) -> None:
    for index in range(60):
        await county.open_ticket(f"call-{index}", TicketCategory.ERTONG, "139****0001", AT, "ivr", {})
    rows = await county.pending_channel_outbox(None, 1000)
    topic = up_events_topic(CITY, COUNTY)
    # Every event twice, as after a re-publish: the second copy must be a duplicate, not a second row.
    messages = [aiomqtt.Message(topic, r.envelope, 1, False, 0, None) for r in rows + rows]
    client = RecordingClient(messages)
    receiver = TierReceiver(city, "127.0.0.1", 1, CITY, use_lock=False)
    commits_before = city.group_commits

    handlers = HandlerPool(receiver.settings.max_concurrent_events)
    await receiver._receive(client, handlers)  # type: ignore[arg-type]
    await handlers.drain()

    acks = [decode_ack(payload) for topic, payload in client.published if topic == down_acks_topic(COUNTY)]
    assert len(acks) == 120
    assert sorted(ack.status for ack in acks) == ["applied"] * 60 + ["duplicate"] * 60
    assert len(await city.list_tickets(origin_node=COUNTY)) == 60
    assert city.group_commits - commits_before < 20
    assert client.most_publishing > 1
