"""Fault drill: partitions, a broker restart and kill -9 while a county writes thousands of tickets.

A county process (TicketStore + OutboxPublisher) writes tickets straight into its store
at a steady rate, with no Asterisk; a city process (TierReceiver) stores them. Both run
as subprocesses of this file so that they can be killed with SIGKILL. Every case ends
with the same checks: the county wrote N tickets, the city stores N tickets with exactly
one event each, every county outbox row was acknowledged by the city, none was rejected
or dead-lettered. The time from healing to that state is printed and recorded as the
test suite's ``<case>_converge_s`` property in the JUnit XML, together with the time
from the county's last write, which is the same as from healing unless the county was
still writing then.

Cases: the broker is stopped (partition by broker), the link between the county and the
broker is cut by a TCP proxy that closes its connections and stops listening (partition
by link), the broker restarts while the outbox drains, the city process is killed with
SIGKILL mid-batch, and the county process is killed with SIGKILL mid-batch.

Parameters: in `make test` the county writes 1,000 tickets at 250 per second and a
partition lasts at least 3 s; with HOTLINE_SOAK=1 (`make soak`) it writes 5,000 tickets
at 40 per second and a partition lasts at least 120 s. A partition starts when a quarter
of the tickets are written and heals once its minimum length has passed and the county
has written them all.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))

from stack.mosquitto import MosquittoBroker, free_port  # noqa: E402

pytestmark = pytest.mark.integration

SOAK = os.environ.get("HOTLINE_SOAK") == "1"
TICKETS = 5000 if SOAK else 1000
WRITE_RATE = 40.0 if SOAK else 250.0
PARTITION_MIN_S = 120.0 if SOAK else 3.0
CONVERGE_WITHIN_S = 600.0 if SOAK else 120.0
TEST_TIMEOUT_S = int(TICKETS / WRITE_RATE + PARTITION_MIN_S + CONVERGE_WITHIN_S + 60)

COUNTY, COUNTY_REGION = "county-330106", "330106"
CITY, CITY_REGION = "city-330100", "330100"
# Tickets are spread over days so that no day runs out of its 9999 numbers.
FIRST_DAY = datetime(2026, 12, 7, 2, 0, tzinfo=timezone.utc)
TICKETS_PER_DAY = 2000


# ---------------------------------------------------------------- subprocess side


async def run_county(database: Path, port: int, tickets: int, rate: float) -> None:
    """Write tickets until the store holds ``tickets``, publishing the outbox meanwhile, until SIGTERM."""
    from storage import TicketStore
    from tickets.model import TicketCategory
    from tier_sync import OutboxPublisher, PublisherSettings, SessionSettings

    session = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.2, backoff_max_s=2.0)
    settings = PublisherSettings(session=session, publish_timeout_s=3.0, ack_timeout_s=5.0, poll_interval_s=0.2,
                                 takeover_backoff_s=1.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async with await TicketStore.open(database, COUNTY, COUNTY_REGION) as store:
        publisher = OutboxPublisher(store, "127.0.0.1", port, COUNTY, CITY, settings=settings)
        await publisher.start()
        try:
            # A restarted county continues from the number of tickets it already holds.
            written = len(await store.list_tickets(limit=tickets + 1))
            tick_s = 0.05
            per_tick = max(1, round(rate * tick_s))
            while written < tickets and not stop.is_set():
                chunk = range(written, min(tickets, written + per_tick))
                await asyncio.gather(*(
                    store.open_ticket(
                        f"drill-{index}", TicketCategory.LINSHI, "139****0001",
                        FIRST_DAY + timedelta(days=index // TICKETS_PER_DAY, seconds=index % TICKETS_PER_DAY), "ivr",
                        {"drill_index": index},
                    )
                    for index in chunk
                ))
                written += len(chunk)
                publisher.notify()
                await asyncio.sleep(tick_s)
            await stop.wait()
        finally:
            await publisher.stop()


async def run_city(database: Path, port: int, ready_file: Path) -> None:
    """Receive the county's events until SIGTERM; print the receiver's counters at the end."""
    from storage import TicketStore
    from tier_sync import ReceiverSettings, SessionSettings, TierReceiver

    session = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.2, backoff_max_s=2.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    async with await TicketStore.open(database, CITY, CITY_REGION) as store:
        receiver = TierReceiver(store, "127.0.0.1", port, CITY,
                                settings=ReceiverSettings(session=session, takeover_backoff_s=1.0))
        await receiver.start()
        try:
            await receiver.wait_connected(30)
            ready_file.write_text(str(os.getpid()))
            await stop.wait()
        finally:
            await receiver.stop()
    print(f"applied={receiver.applied} duplicates={receiver.duplicates} rejected={receiver.rejected}", flush=True)


def subprocess_main() -> None:
    from hotline.logging import configure_logging

    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["county", "city"])
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tickets", type=int, default=TICKETS)
    parser.add_argument("--rate", type=float, default=WRITE_RATE)
    parser.add_argument("--ready-file", type=Path)
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.role == "county":
        asyncio.run(run_county(args.database, args.port, args.tickets, args.rate))
    else:
        asyncio.run(run_city(args.database, args.port, args.ready_file))


# ---------------------------------------------------------------- test side


class CuttableLink:
    """Loopback TCP proxy whose link can be cut: ``cut()`` closes every connection and stops listening.

    While cut, connecting to the port is refused, as with a pulled cable in front of a
    host that answers with RST; ``heal()`` listens on the same port again.
    """

    def __init__(self, target_port: int) -> None:
        self.port = free_port()
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def heal(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, upstream_writer}
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        sink.close()
        self._writers.discard(sink)


@dataclass(frozen=True, slots=True)
class Counts:
    county_tickets: int
    county_pending: int
    county_acked: int
    county_dead: int
    city_tickets: int
    city_events: int
    city_distinct_events: int
    city_first_events: int


def _count(path: Path, sql: str) -> int:
    if not path.exists():
        return 0
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return connection.execute(sql).fetchone()[0]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        connection.close()


def read_counts(work: Path) -> Counts:
    county, city = work / "county.sqlite3", work / "city.sqlite3"
    return Counts(
        county_tickets=_count(county, "SELECT count(*) FROM tickets"),
        county_pending=_count(county, "SELECT count(*) FROM outbox WHERE acked_at IS NULL AND dead_at IS NULL"),
        county_acked=_count(county, "SELECT count(*) FROM outbox WHERE acked_at IS NOT NULL"),
        county_dead=_count(county, "SELECT count(*) FROM outbox WHERE dead_at IS NOT NULL"),
        city_tickets=_count(city, f"SELECT count(*) FROM tickets WHERE origin_node = '{COUNTY}'"),
        city_events=_count(city, "SELECT count(*) FROM ticket_events"),
        city_distinct_events=_count(city, "SELECT count(DISTINCT ticket_id || '/' || seq) FROM ticket_events"),
        city_first_events=_count(city, "SELECT count(*) FROM ticket_events WHERE seq = 1 AND kind = 'created'"),
    )


class Drill:
    """The broker, the two node processes and the measurements of one drill."""

    def __init__(self, work: Path, broker: MosquittoBroker, county_port: int) -> None:
        self.work = work
        self.broker = broker
        self.county_port = county_port
        self.county: subprocess.Popen[str] | None = None
        self.city: subprocess.Popen[str] | None = None
        self.city_reports: list[str] = []

    def _spawn(self, *args: str) -> subprocess.Popen[str]:
        log = (self.work / f"{args[0]}.log").open("a")
        return subprocess.Popen(
            [sys.executable, __file__, *args], cwd=REPO_ROOT, text=True,
            stdout=subprocess.PIPE, stderr=log, env=os.environ | {"PYTHONPATH": str(REPO_ROOT)},
        )

    async def start_city(self) -> None:
        ready = self.work / "city.ready"
        ready.unlink(missing_ok=True)
        self.city = self._spawn("city", "--database", str(self.work / "city.sqlite3"),
                                "--port", str(self.broker.port), "--ready-file", str(ready))
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert self.city.poll() is None, f"city process exited; see {self.work / 'city.log'}"
            assert time.monotonic() < deadline, "city receiver did not connect within 30 s"
            await asyncio.sleep(0.05)

    def start_county(self) -> None:
        self.county = self._spawn("county", "--database", str(self.work / "county.sqlite3"),
                                  "--port", str(self.county_port), "--tickets", str(TICKETS),
                                  "--rate", str(WRITE_RATE))

    def kill(self, role: str) -> None:
        process = self.county if role == "county" else self.city
        assert process is not None and process.poll() is None, f"{role} process is not running"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        for role, process in (("county", self.county), ("city", self.city)):
            if process is None or process.poll() is not None:
                continue
            process.terminate()
            try:
                output, _ = process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                output, _ = process.communicate()
            if role == "city":
                self.city_reports.append(output.strip())

    async def wait_for(self, condition: str, check: object, timeout: float) -> Counts:
        deadline = time.monotonic() + timeout
        while True:
            counts = read_counts(self.work)
            if check(counts):
                return counts
            for role, process in (("county", self.county), ("city", self.city)):
                assert process is None or process.poll() is None or process.returncode == -signal.SIGKILL, (
                    f"{role} process exited with {process.returncode}; see {self.work / (role + '.log')}"
                )
            assert time.monotonic() < deadline, f"{condition} not reached within {timeout} s: {counts}"
            await asyncio.sleep(0.1)

    async def partition_until_written(self, started: float) -> Counts:
        """Keep the partition for its minimum length and until the county has written every ticket."""
        await asyncio.sleep(max(0.0, PARTITION_MIN_S - (time.monotonic() - started)))
        return await self.wait_for("all tickets written", lambda c: c.county_tickets == TICKETS,
                                   TICKETS / WRITE_RATE + 60)

    async def converge(self, healed: float, record: Callable[[str, object], None], case: str) -> float:
        """Wait until the city holds every ticket and the county's outbox is empty; print and record the times."""
        written_at: list[float] = []

        def converged(counts: Counts) -> bool:
            if counts.county_tickets == TICKETS and not written_at:
                written_at.append(time.monotonic())
            return counts.county_tickets == TICKETS and counts.county_pending == 0 and counts.city_events == TICKETS

        counts = await self.wait_for("convergence", converged, CONVERGE_WITHIN_S)
        done = time.monotonic()
        converged_s = done - healed
        after_writes_s = done - max(healed, written_at[0])
        print(f"{case}: {TICKETS} tickets, converged {converged_s:.1f} s after healing, "
              f"{after_writes_s:.1f} s after the last write; {counts}")
        key = case.replace(" ", "_").replace("-", "")
        record(f"{key}_converge_s", round(converged_s, 2))
        record(f"{key}_after_last_write_s", round(after_writes_s, 2))
        return converged_s

    def assert_exactly_once(self) -> None:
        counts = read_counts(self.work)
        assert counts.county_tickets == TICKETS
        assert counts.county_acked == TICKETS, "an outbox row was not acknowledged by the city"
        assert counts.county_dead == 0, "an event was rejected or dead-lettered"
        assert counts.city_tickets == TICKETS, "a ticket is missing at the city"
        assert counts.city_events == counts.city_distinct_events == counts.city_first_events == TICKETS, (
            f"events at the city are missing or stored twice: {counts}"
        )
        county_ids = _ticket_ids(self.work / "county.sqlite3")
        assert county_ids == _ticket_ids(self.work / "city.sqlite3")
        # Duplicates are re-deliveries the city acknowledged again without storing them twice.
        print(f"city receiver counters per run: {self.city_reports}")
        for report in self.city_reports:
            assert report.endswith("rejected=0"), report


def _ticket_ids(path: Path) -> set[str]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {row[0] for row in connection.execute("SELECT ticket_id FROM tickets")}
    finally:
        connection.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(work_dir=tmp_path / "broker") as running:
        yield running


@pytest.fixture
async def drill(tmp_path: Path, broker: MosquittoBroker) -> AsyncIterator[Drill]:
    running = Drill(tmp_path, broker, broker.port)
    try:
        yield running
    finally:
        running.stop_all()


QUARTER = TICKETS // 4


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_partition_by_stopping_the_broker(
    drill: Drill, broker: MosquittoBroker, record_testsuite_property: Callable[[str, object], None]
) -> None:
    await drill.start_city()
    drill.start_county()
    await drill.wait_for("a quarter written", lambda c: c.county_tickets >= QUARTER, 60)

    broker.stop()
    started = time.monotonic()
    during = await drill.partition_until_written(started)
    assert during.city_tickets < TICKETS, "the partition did not hold back any ticket"
    assert during.county_pending > 0, "the partition left no row pending"

    broker.start()
    healed = time.monotonic()
    print(f"partition by broker lasted {healed - started:.1f} s; {during.county_pending} rows pending at healing")
    await drill.converge(healed, record_testsuite_property, "broker stopped")
    drill.stop_all()
    drill.assert_exactly_once()


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_partition_by_cutting_the_link(
    tmp_path: Path, broker: MosquittoBroker, record_testsuite_property: Callable[[str, object], None]
) -> None:
    link = CuttableLink(broker.port)
    await link.heal()
    drill = Drill(tmp_path, broker, link.port)
    try:
        await drill.start_city()
        drill.start_county()
        await drill.wait_for("a quarter written", lambda c: c.county_tickets >= QUARTER, 60)

        await link.cut()
        started = time.monotonic()
        during = await drill.partition_until_written(started)
        assert during.county_pending > 0, "the cut left no row pending"
        assert during.city_tickets < TICKETS, "the cut did not hold back any ticket"

        await link.heal()
        healed = time.monotonic()
        print(f"link cut lasted {healed - started:.1f} s; {during.county_pending} rows pending at healing")
        await drill.converge(healed, record_testsuite_property, "link cut")
        drill.stop_all()
        drill.assert_exactly_once()
    finally:
        drill.stop_all()
        await link.close()


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_broker_restart_during_sync(
    drill: Drill, broker: MosquittoBroker, record_testsuite_property: Callable[[str, object], None]
) -> None:
    await drill.start_city()
    drill.start_county()
    before = await drill.wait_for("half synced", lambda c: c.city_events >= TICKETS // 2, TICKETS / WRITE_RATE + 60)
    assert before.county_pending > 0, "the outbox was already drained before the restart"

    broker.stop()
    broker.start()
    healed = time.monotonic()
    await drill.converge(healed, record_testsuite_property, "broker restart")
    drill.stop_all()
    drill.assert_exactly_once()


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_city_killed_mid_batch(
    drill: Drill, record_testsuite_property: Callable[[str, object], None]
) -> None:
    await drill.start_city()
    drill.start_county()
    await drill.wait_for("half synced", lambda c: c.city_events >= TICKETS // 2, TICKETS / WRITE_RATE + 60)

    drill.kill("city")
    killed_at = read_counts(drill.work)
    assert killed_at.city_events < TICKETS
    await drill.start_city()
    healed = time.monotonic()
    await drill.converge(healed, record_testsuite_property, "city kill -9")
    drill.stop_all()
    drill.assert_exactly_once()


@pytest.mark.timeout(TEST_TIMEOUT_S)
async def test_county_killed_mid_batch(
    drill: Drill, record_testsuite_property: Callable[[str, object], None]
) -> None:
    await drill.start_city()
    drill.start_county()
    await drill.wait_for("half written", lambda c: c.county_tickets >= TICKETS // 2, TICKETS / WRITE_RATE + 60)

    drill.kill("county")
    killed_at = read_counts(drill.work)
    assert killed_at.county_tickets < TICKETS
    drill.start_county()
    healed = time.monotonic()
    await drill.converge(healed, record_testsuite_property, "county kill -9")
    drill.stop_all()
    drill.assert_exactly_once()


if __name__ == "__main__":
    subprocess_main()
