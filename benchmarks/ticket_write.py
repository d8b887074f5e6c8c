"""Benchmark: durable ticket writes per second through TicketStore, against raw sqlite3 inserts.

Run from the repository root::

    .venv/bin/python benchmarks/ticket_write.py --tickets 2000 --callers 1 8 32

Both sides write to a fresh file with the store's schema, in WAL mode at
``synchronous=FULL`` (the store's level), so every commit waits for an fsync:

- raw: one plain ``sqlite3`` connection, one ``BEGIN IMMEDIATE`` ... ``COMMIT`` per ticket
  holding the same four statements as ``TicketStore.open_ticket`` (next daily number,
  ticket row, "created" event row, outbox row with the encoded envelope). The rows are
  built before the clock starts, so the raw side pays only for SQL and commits;
- store: ``TicketStore.open_ticket`` called by ``--callers`` concurrent tasks, each
  taking the next ticket from a shared counter. Concurrent calls share commits (group
  commit); one caller gets one commit per ticket.

It prints tickets per second for each, the ratio to raw, and the p50/p99 latency of one
``open_ticket`` call, with the machine, versions and date.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotline.logging import configure_logging
from storage.rows import row_from_event, row_from_ticket, text_from_time
from storage.schema import MIGRATIONS
from storage.ticket_store import TicketStore
from tickets.envelope import build_envelope, encode_envelope
from tickets.model import Ticket, TicketCategory, TicketEvent, TicketState, Tier, china_day, format_ticket_id

NODE_ID = "county-330106"
REGION = "330106"
# Daily numbers run out at 9999, so each benchmark run writes on its own day.
FIRST_DAY = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


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


def _raw_rows(count: int, created_at: datetime) -> list[tuple[dict[str, Any], dict[str, Any], tuple[Any, ...]]]:
    """Build the ticket, event and outbox rows that ``open_ticket`` would write for ``count`` tickets."""
    day = china_day(created_at)
    rows = []
    for sequence in range(1, count + 1):
        ticket_id = format_ticket_id(REGION, day, sequence)
        ticket = Ticket(
            ticket_id=ticket_id, origin_node=NODE_ID, region_code=REGION, category=TicketCategory.LINSHI,
            state=TicketState.NEW, caller_masked="139****0001", call_id=f"call-{sequence}",
            created_at=created_at, updated_at=created_at, last_seq=1,
        )
        event = TicketEvent(
            ticket_id=ticket_id, seq=1, kind="created", actor="ivr", tier=Tier.COUNTY, office=None,
            occurred_at=created_at, from_state=None, to_state=TicketState.NEW, note=None,
            payload={"flow_id": "main", "menu": "1"},
        )
        envelope = encode_envelope(build_envelope(ticket, event))
        outbox = (event.event_id, ticket_id, 1, envelope, len(envelope), text_from_time(created_at))
        rows.append((row_from_ticket(ticket), row_from_event(event, NODE_ID, created_at), outbox))
    return rows


def _insert_sql(table: str, row: dict[str, Any]) -> str:
    return f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + name for name in row)})"


def time_raw(path: Path, count: int, created_at: datetime) -> float:
    """Write ``count`` tickets with plain sqlite3, one transaction each; return tickets per second."""
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = FULL")
    connection.execute("PRAGMA foreign_keys = ON")
    for statements in MIGRATIONS:
        for statement in statements:
            connection.execute(statement)

    rows = _raw_rows(count, created_at)
    ticket_sql, event_sql = _insert_sql("tickets", rows[0][0]), _insert_sql("ticket_events", rows[0][1])
    outbox_sql = "INSERT INTO outbox (event_id, ticket_id, seq, envelope, size, created_at) VALUES (?, ?, ?, ?, ?, ?)"
    day = china_day(created_at).isoformat()

    started = time.perf_counter()
    for ticket_row, event_row, outbox_row in rows:
        connection.execute("BEGIN IMMEDIATE")
        connection.execute(
            "INSERT INTO ticket_sequences (region_code, day, last_value) VALUES (?, ?, 1) "
            "ON CONFLICT (region_code, day) DO UPDATE SET last_value = last_value + 1 RETURNING last_value",
            (REGION, day),
        ).fetchone()
        connection.execute(ticket_sql, ticket_row)
        connection.execute(event_sql, event_row)
        connection.execute(outbox_sql, outbox_row)
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return count / elapsed


async def time_store(path: Path, count: int, callers: int, created_at: datetime) -> tuple[float, list[float]]:
    """Write ``count`` tickets through TicketStore from ``callers`` tasks; return rate and latencies in ms."""
    latencies: list[float] = []
    next_index = iter(range(count))

    async with await TicketStore.open(path, NODE_ID, REGION) as store:
        async def caller() -> None:
            for index in next_index:
                started = time.perf_counter()
                await store.open_ticket(
                    f"call-{index}", TicketCategory.LINSHI, "139****0001", created_at, "ivr",
                    {"flow_id": "main", "menu": "1"},
                )
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(callers)))
        elapsed = time.perf_counter() - started
    return count / elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=2000, help="tickets written by each run (at most 9999)")
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 32], help="concurrent callers per store run")
    parser.add_argument("--workdir", type=Path, help="folder for the database files (default: a temporary one)")
    args = parser.parse_args()
    if not 1 <= args.tickets <= 9999:
        parser.error("--tickets must be between 1 and 9999 (the daily ticket numbers of one region)")
    configure_logging("WARNING")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ticket-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_cpu_model()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; {platform.platform()}")
    print(f"{args.tickets} tickets per run; WAL, synchronous=FULL; files in {workdir}")

    raw_rate = time_raw(workdir / "raw.sqlite3", args.tickets, FIRST_DAY)
    print(f"{'raw sqlite3, 1 writer':<28} {raw_rate:8.0f} tickets/s")

    for run, callers in enumerate(args.callers, start=1):
        created_at = FIRST_DAY + timedelta(days=run)
        database = workdir / f"store-{callers}.sqlite3"
        rate, latencies = asyncio.run(time_store(database, args.tickets, callers, created_at))
        print(f"{f'TicketStore, {callers} callers':<28} {rate:8.0f} tickets/s   {rate / raw_rate:5.2f}x raw   "
              f"p50 {_percentile(latencies, 0.5):7.2f} ms   p99 {_percentile(latencies, 0.99):7.2f} ms")


if __name__ == "__main__":
    main()
