"""Unit tests for TicketStore's group commit: concurrent writes share commits, failures stay with their caller."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from storage import StorageError, TicketIdExhausted, TicketStore
from tickets.model import TicketCategory

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
COUNTY = "county-330106"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as opened:
        yield opened


async def open_one(store: TicketStore, index: int) -> str:
    ticket = await store.open_ticket(f"call-{index}", TicketCategory.DIBAO, "139****0001", AT, "ivr", {"n": index})
    return ticket.ticket_id


def committed_rows(path: Path, table: str) -> int:
    connection = sqlite3.connect(path)
    try:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        connection.close()


async def test_concurrent_tickets_share_commits_and_get_distinct_numbers(store: TicketStore, tmp_path: Path) -> None:
    ids = await asyncio.gather(*(open_one(store, index) for index in range(60)))

    assert len(set(ids)) == 60
    assert sorted(int(ticket_id[-4:]) for ticket_id in ids) == list(range(1, 61))
    assert store.group_commits < 60, "concurrent writes were not grouped"
    for table in ("tickets", "ticket_events", "outbox"):
        assert committed_rows(tmp_path / "county.db", table) == 60


async def test_one_caller_gets_one_commit_per_ticket(store: TicketStore) -> None:
    for index in range(3):
        await open_one(store, index)

    assert store.group_commits == 3


async def test_rejected_ticket_keeps_group_others(store: TicketStore, tmp_path: Path) -> None:
    connection = sqlite3.connect(tmp_path / "county.db")
    connection.execute("INSERT INTO ticket_sequences VALUES ('330106', '2026-12-04', 9998)")
    connection.commit()
    connection.close()

    results = await asyncio.gather(*(open_one(store, index) for index in range(4)), return_exceptions=True)

    opened = [result for result in results if isinstance(result, str)]
    refused = [result for result in results if isinstance(result, TicketIdExhausted)]
    assert opened == ["330106-20261204-9999"]
    assert len(refused) == 3
    assert store.group_commits == 1
    assert committed_rows(tmp_path / "county.db", "outbox") == 1
    assert (await store.get_ticket(opened[0])).call_id == "call-0"


async def test_failed_job_undone_alone(store: TicketStore, tmp_path: Path) -> None:
    def half_then_fail(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO ticket_sequences VALUES ('999999', '2026-12-04', 1)")
        db.execute("INSERT INTO no_such_table VALUES (1)")

    results = await asyncio.gather(
        open_one(store, 1), store._run_grouped("broken write", half_then_fail), open_one(store, 2),
        return_exceptions=True,
    )

    assert isinstance(results[1], StorageError) and "no_such_table" in str(results[1])
    assert isinstance(results[0], str) and isinstance(results[2], str)
    assert store.group_commits == 1
    connection = sqlite3.connect(tmp_path / "county.db")
    regions = [row[0] for row in connection.execute("SELECT region_code FROM ticket_sequences")]
    connection.close()
    assert regions == ["330106"]


async def test_transaction_ending_job_fails_group(store: TicketStore, tmp_path: Path) -> None:
    def end_transaction(db: sqlite3.Connection) -> None:
        db.execute("ROLLBACK")
        raise RuntimeError("transaction ended")

    results = await asyncio.gather(
        open_one(store, 1), store._run_grouped("ending write", end_transaction), open_one(store, 2),
        return_exceptions=True,
    )

    assert isinstance(results[1], RuntimeError)
    assert isinstance(results[0], StorageError) and "rolled back with its write group" in str(results[0])
    assert isinstance(results[2], StorageError)
    assert committed_rows(tmp_path / "county.db", "tickets") == 0

    # The store keeps working afterwards.
    assert await open_one(store, 3) == "330106-20261204-0001"


async def test_cancelled_caller_writes_nothing(store: TicketStore, tmp_path: Path) -> None:
    first = asyncio.create_task(open_one(store, 1))
    second = asyncio.create_task(open_one(store, 2))
    await asyncio.sleep(0)
    second.cancel()

    assert await first == "330106-20261204-0001"
    with pytest.raises(asyncio.CancelledError):
        await second
    assert committed_rows(tmp_path / "county.db", "tickets") == 1
    assert await open_one(store, 3) == "330106-20261204-0002"


async def test_grouped_and_single_writes_interleave(store: TicketStore) -> None:
    tickets = await asyncio.gather(*(open_one(store, index) for index in range(10)))
    events = await asyncio.gather(*(store.apply_action(ticket_id, "dispatch", "desk", office="民政局")
                                    for ticket_id in tickets[:5]), *(open_one(store, 10 + n) for n in range(5)))

    assert len(events) == 10
    assert await store.count_pending_outbox() == 20


async def test_close_runs_queued_jobs_and_refuses_new_ones(tmp_path: Path) -> None:
    store = await TicketStore.open(tmp_path / "county.db", COUNTY, "330106")
    pending = [asyncio.create_task(open_one(store, index)) for index in range(5)]
    await asyncio.sleep(0)
    await store.close()

    assert len({await task for task in pending}) == 5
    with pytest.raises(StorageError, match="closed"):
        await open_one(store, 6)
