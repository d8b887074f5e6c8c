"""Integration: the outbox publisher across a half-open link, simulated by a loopback proxy that goes silent (M04).

Parameters: CI runs ~20 s of silence; ``HOTLINE_SOAK=1`` runs 10 minutes of silence.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import structlog

from stack.mosquitto import MosquittoBroker
from storage import TicketStore
from tickets.model import TicketCategory
from tier_sync import OutboxPublisher, PublisherSettings, ReceiverSettings, SessionSettings, TierReceiver

pytestmark = pytest.mark.integration

COUNTY = "county-330106"
CITY = "city-330100"
SOAK = os.environ.get("HOTLINE_SOAK") == "1"
SILENCE_S = 600.0 if SOAK else 20.0


class SilentProxy:
    """Loopback TCP proxy that can stop forwarding both ways without closing anything.

    While silent, bytes from either side are read and discarded and closes are not passed
    on, so each end sees an open but dead connection. Connections opened during the
    silence stay dead for good; ``resume()`` closes them and forwards new connections.
    """

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._silent = False
        self._pairs: list[dict[str, object]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def go_silent(self) -> None:
        self._silent = True
        for pair in self._pairs:
            pair["dead"] = True

    def resume(self) -> None:
        self._silent = False
        for pair in [pair for pair in self._pairs if pair["dead"]]:
            self._close_pair(pair)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pair in list(self._pairs):
            self._close_pair(pair)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _close_pair(self, pair: dict[str, object]) -> None:
        for writer in (pair["client"], pair["upstream"]):
            writer.close()  # type: ignore[attr-defined]
        if pair in self._pairs:
            self._pairs.remove(pair)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        pair: dict[str, object] = {"client": writer, "upstream": upstream_writer, "dead": self._silent}
        self._pairs.append(pair)
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, pair: dict[str, object]) -> None:
        try:
            while data := await source.read(65536):
                if pair["dead"]:
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        if not pair["dead"]:
            self._close_pair(pair)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(work_dir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def proxy(broker: MosquittoBroker) -> AsyncIterator[SilentProxy]:
    running = SilentProxy(broker.port)
    await running.start()
    yield running
    await running.stop()


async def open_ticket(store: TicketStore, call_id: str) -> str:
    ticket = await store.open_ticket(
        call_id, TicketCategory.YANGLAO, "无号码", datetime(2026, 12, 4, 3, 0, tzinfo=timezone.utc), "ivr", {}
    )
    return ticket.ticket_id


@pytest.mark.timeout(int(SILENCE_S) + 120)
async def test_half_open_link_rows_pending_then_delivered_once(
    tmp_path: Path, broker: MosquittoBroker, proxy: SilentProxy
) -> None:
    """Across a silent link: PUBACK times out, rows stay pending, keepalive drops the session,
    the publisher reconnects once the link is back, and every event reaches the city exactly once.

    Parameters: CI ~20 s of silence; full run 10 minutes of silence with HOTLINE_SOAK=1.
    """
    session = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.5, backoff_max_s=4.0)
    settings = PublisherSettings(session=session, publish_timeout_s=2.0, ack_timeout_s=5.0, poll_interval_s=0.2)
    county = await TicketStore.open(tmp_path / "county.db", COUNTY, "330106")
    city = await TicketStore.open(tmp_path / "city.db", CITY, "330100")
    publisher = OutboxPublisher(county, "127.0.0.1", proxy.port, COUNTY, CITY, settings=settings)
    receiver = TierReceiver(city, broker.host, broker.port, CITY, settings=ReceiverSettings(session=session))

    try:
        with structlog.testing.capture_logs() as logs:
            await receiver.start()
            await publisher.start()

            # A healthy link first.
            first = await open_ticket(county, "1700000010.1")
            await publisher.wait_drained(timeout=10)

            # Silence both ways, then write three more tickets.
            proxy.go_silent()
            during = [await open_ticket(county, f"1700000010.{index}") for index in range(2, 5)]
            publisher.notify()
            await asyncio.sleep(SILENCE_S)

            timeouts_during_silence = publisher.publish_timeouts
            pending_during_silence = await county.count_pending_outbox()
            connected_during_silence = publisher.connected

            proxy.resume()
            await publisher.wait_drained(timeout=30)
    finally:
        await publisher.stop()
        await receiver.stop()

    lost = [entry for entry in logs if entry["event"] == "mqtt connection lost"]
    assert timeouts_during_silence >= 1
    assert pending_during_silence == 3
    assert not connected_during_silence
    assert lost and lost[0]["reason_code"] == 141, lost
    assert publisher.connections >= 2
    assert receiver.duplicates == 0
    for ticket_id in [first, *during]:
        assert len(await city.list_events(ticket_id)) == 1
    assert len(await city.list_tickets()) == 4

    await county.close()
    await city.close()
