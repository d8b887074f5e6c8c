"""Benchmark: upward ticket sync (county outbox → mosquitto → city) against raw QoS 1 publishes.

Run from the repository root::

    .venv/bin/python benchmarks/tier_sync.py --tickets 2000 --latency-tickets 500 --rate 50

It starts its own mosquitto on a free loopback port and times three things:

- raw: one aiomqtt client publishes ``--tickets`` messages of the size of a ticket
  envelope with QoS 1 to a QoS 1 subscriber, keeping up to 500 messages on the way (and
  paho's in-flight window); the rate is messages over the time until the subscriber has
  them all;
- sync: ``--tickets`` tickets already in the county outbox, then the OutboxPublisher and
  the city's TierReceiver are started; the rate is tickets over the time until the city
  has stored every one and the county has received every application ack;
- end-to-end latency: with both running, ``--latency-tickets`` tickets are opened at
  ``--rate`` per second; for each, the time from the ``open_ticket`` call to the city's
  commit (the city's ``received_at``) and to the county's ack (``acked_at``), p50 and p99.

Publisher and receiver run with their default settings. The counters line shows how
many rows went out more than once and how many events the city received twice.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotline.logging import configure_logging
from stack.mosquitto import MosquittoBroker
from storage.rows import time_from_text
from storage.ticket_store import TicketStore
from tickets.model import TicketCategory
from tier_sync import OutboxPublisher, TierReceiver

COUNTY, COUNTY_REGION = "county-330106", "330106"
CITY, CITY_REGION = "city-330100", "330100"
CREATED_AT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
# Messages published but not yet received during the raw run; below mosquitto's default queue of 1000.
RAW_WINDOW = 500


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def time_raw(broker: MosquittoBroker, count: int, size: int) -> float:
    """Publish ``count`` QoS 1 messages of ``size`` bytes; return messages per second as received.

    At most ``RAW_WINDOW`` messages are published and not yet received at any time, because
    mosquitto drops what exceeds a subscriber's queue (``max_queued_messages``, 1000 by default).
    """
    topic = "bench/raw"
    payload = b"x" * size
    window = asyncio.Semaphore(RAW_WINDOW)
    received = 0
    all_in = asyncio.Event()

    async with aiomqtt.Client(broker.host, broker.port, identifier="bench-sub") as subscriber:
        await subscriber.subscribe(topic, qos=1)

        async def receive() -> None:
            nonlocal received
            async for _ in subscriber.messages:
                received += 1
                window.release()
                if received == count:
                    all_in.set()
                    return

        async def publish_one(client: aiomqtt.Client) -> None:
            await window.acquire()
            await client.publish(topic, payload, qos=1)

        receiver = asyncio.create_task(receive())
        async with aiomqtt.Client(broker.host, broker.port, identifier="bench-pub") as publisher:
            # All publishes are queued at once on purpose; aiomqtt would warn about each one.
            publisher.pending_calls_threshold = count + 1
            started = time.perf_counter()
            await asyncio.gather(*(publish_one(publisher) for _ in range(count)))
            await asyncio.wait_for(all_in.wait(), timeout=300)
            elapsed = time.perf_counter() - started
        await receiver
    return count / elapsed


async def open_tickets(store: TicketStore, count: int, created_at: datetime) -> None:
    await asyncio.gather(*(
        store.open_ticket(f"call-{index}", TicketCategory.LINSHI, "139****0001", created_at, "ivr",
                          {"flow_id": "main", "menu": "1"})
        for index in range(count)
    ))


async def time_sync(broker: MosquittoBroker, workdir: Path, count: int, latency_count: int,
                    rate: float) -> tuple[float, int, list[float], list[float], str]:
    """Return the sync rate, the envelope size, end-to-end latencies to the city and to the ack in ms, and counters."""
    async with await TicketStore.open(workdir / "county.sqlite3", COUNTY, COUNTY_REGION) as county, \
            await TicketStore.open(workdir / "city.sqlite3", CITY, CITY_REGION) as city:
        await open_tickets(county, count, CREATED_AT)
        size = (await county.pending_outbox(1))[0].size

        publisher = OutboxPublisher(county, broker.host, broker.port, COUNTY, CITY)
        receiver = TierReceiver(city, broker.host, broker.port, CITY)
        await receiver.start()
        await receiver.wait_connected(10)
        started = time.perf_counter()
        await publisher.start()
        try:
            await publisher.wait_drained(600)
            sync_rate = count / (time.perf_counter() - started)

            # Steady load: one ticket every 1/rate seconds, each measured from its write call.
            written_at: dict[str, datetime] = {}
            for index in range(latency_count):
                moment = datetime.now(UTC)
                ticket = await county.open_ticket(
                    f"latency-{index}", TicketCategory.LINSHI, "139****0001", CREATED_AT + timedelta(days=1), "ivr",
                    {"flow_id": "main", "menu": "1"},
                )
                publisher.notify()
                written_at[ticket.ticket_id] = moment
                await asyncio.sleep(1 / rate)
            await publisher.wait_drained(600)
        finally:
            await publisher.stop()
            await receiver.stop()
        counters = (f"rows published {publisher.published} (again: {publisher.republished}), "
                    f"events applied at city {receiver.applied}, duplicates {receiver.duplicates}")

    to_city, to_ack = [], []
    with sqlite3.connect(workdir / "city.sqlite3") as connection:
        for ticket_id, received_at in connection.execute("SELECT ticket_id, received_at FROM tickets"):
            if ticket_id in written_at:
                to_city.append((time_from_text(received_at) - written_at[ticket_id]).total_seconds() * 1000)
    with sqlite3.connect(workdir / "county.sqlite3") as connection:
        for ticket_id, acked_at in connection.execute("SELECT ticket_id, acked_at FROM outbox"):
            if ticket_id in written_at:
                to_ack.append((time_from_text(acked_at) - written_at[ticket_id]).total_seconds() * 1000)
    return sync_rate, size, to_city, to_ack, counters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=2000, help="tickets in the outbox for the throughput run")
    parser.add_argument("--latency-tickets", type=int, default=500, help="tickets written at --rate for latency")
    parser.add_argument("--rate", type=float, default=50.0, help="tickets per second during the latency run")
    parser.add_argument("--workdir", type=Path, help="folder for databases and the broker (default: a temporary one)")
    args = parser.parse_args()
    if not 1 <= args.tickets <= 9999 or not 1 <= args.latency_tickets <= 9999:
        parser.error("--tickets and --latency-tickets must be between 1 and 9999 (daily ticket numbers)")
    configure_logging("WARNING")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sync-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_cpu_model()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; aiomqtt {aiomqtt.__version__}; "
          f"{platform.platform()}")

    with MosquittoBroker(work_dir=workdir / "broker") as broker:
        sync_rate, size, to_city, to_ack, counters = asyncio.run(
            time_sync(broker, workdir, args.tickets, args.latency_tickets, args.rate)
        )
        raw_rate = asyncio.run(time_raw(broker, args.tickets, size))

    print(f"{args.tickets} messages of {size} bytes (one ticket envelope); mosquitto on loopback")
    print(f"{'raw QoS 1 publish':<30} {raw_rate:8.0f} msg/s")
    print(f"{'sync county -> city + ack':<30} {sync_rate:8.0f} tickets/s   {sync_rate / raw_rate:5.2f}x raw")
    print(f"  {counters}")
    print(f"end-to-end at {args.rate:g} tickets/s, {len(to_city)} tickets:")
    print(f"  {'write -> stored at city':<28} p50 {_percentile(to_city, 0.5):8.1f} ms   "
          f"p99 {_percentile(to_city, 0.99):8.1f} ms   max {max(to_city):8.1f} ms")
    print(f"  {'write -> ack at county':<28} p50 {_percentile(to_ack, 0.5):8.1f} ms   "
          f"p99 {_percentile(to_ack, 0.99):8.1f} ms   max {max(to_ack):8.1f} ms")


if __name__ == "__main__":
    main()
