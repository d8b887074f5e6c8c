"""Unit tests for TicketStore against real SQLite files in a temporary directory."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from storage import CallNotFound, SchemaTooNew, StorageError, TicketConflict, TicketIdExhausted, TicketNotFound, TicketStore
from storage.schema import LATEST_VERSION
from tickets.call_record import CallOutcome, CallRecord
from tickets.envelope import build_envelope, decode_envelope
from tickets.model import TicketCategory, TicketState

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
COUNTY = "county-330106"


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as opened:
        yield opened


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "city.db", "city-330100", "330100") as opened:
        yield opened


def call_record(call_id: str = "1700000000.42", **changes: object) -> CallRecord:
    values: dict[str, object] = {
        "call_id": call_id, "caller_raw": "13812345678", "caller_masked": "138****5678",
        "caller_flags": frozenset(), "dialed": "12349", "started_at": AT, "flow_id": "main",
        "flow_version": "3", "path": ("welcome", "menu"),
    }
    values.update(changes)
    return CallRecord(**values)  # type: ignore[arg-type]


class TestOpen:
    async def test_pragmas_and_schema_version(self, store: TicketStore, tmp_path: Path) -> None:
        connection = sqlite3.connect(tmp_path / "county.db")
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        connection.close()

    async def test_reopen_keeps_data(self, tmp_path: Path) -> None:
        async with await TicketStore.open(tmp_path / "a.db", COUNTY, "330106") as first:
            ticket = await first.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        async with await TicketStore.open(tmp_path / "a.db", COUNTY, "330106") as second:
            assert (await second.get_ticket(ticket.ticket_id)).ticket_id == ticket.ticket_id

    async def test_newer_schema_rejected(self, tmp_path: Path) -> None:
        connection = sqlite3.connect(tmp_path / "new.db")
        connection.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
        connection.close()
        with pytest.raises(SchemaTooNew):
            await TicketStore.open(tmp_path / "new.db", COUNTY, "330106")

    async def test_unopenable_path_raises_storage_error(self, tmp_path: Path) -> None:
        with pytest.raises(StorageError):
            await TicketStore.open(tmp_path / "missing-dir" / "x.db", COUNTY, "330106")


class TestCalls:
    async def test_record_insert_then_update(self, store: TicketStore) -> None:
        await store.record_call(call_record())
        await store.record_call(call_record(outcome=CallOutcome.ABANDONED_IN_QUEUE, ended_at=AT + timedelta(minutes=2),
                                            category=TicketCategory.LINSHI, caller_flags=frozenset({"repeat"})))
        stored = await store.get_call("1700000000.42")
        assert stored.outcome is CallOutcome.ABANDONED_IN_QUEUE
        assert stored.caller_raw == "13812345678"
        assert stored.path == ("welcome", "menu")
        assert stored.caller_flags == frozenset({"repeat"})
        assert [record.call_id for record in await store.list_calls()] == ["1700000000.42"]

    async def test_missing_call_raises(self, store: TicketStore) -> None:
        with pytest.raises(CallNotFound):
            await store.get_call("nope")


class TestOpenTicket:
    async def test_writes_ticket_event_outbox_and_links_call(self, store: TicketStore) -> None:
        await store.record_call(call_record())
        ticket = await store.open_ticket("1700000000.42", TicketCategory.LINSHI, "138****5678", AT, "ivr",
                                         {"flow_id": "main"})
        assert ticket.ticket_id == "330106-20261204-0001"
        assert ticket.state is TicketState.NEW
        (event,) = await store.list_events(ticket.ticket_id)
        assert (event.seq, event.kind, event.to_state) == (1, "created", TicketState.NEW)
        (row,) = await store.pending_outbox()
        assert row.event_id == f"{ticket.ticket_id}#1"
        assert decode_envelope(row.envelope).ticket == ticket
        assert (await store.get_call("1700000000.42")).ticket_id == ticket.ticket_id

    async def test_daily_sequence_per_shanghai_day(self, store: TicketStore) -> None:
        first = await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        second = await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        next_day = await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT + timedelta(hours=14), "ivr", {})
        assert [first.ticket_id, second.ticket_id, next_day.ticket_id] == [
            "330106-20261204-0001", "330106-20261204-0002", "330106-20261205-0001"]

    async def test_unmasked_caller_rejected(self, store: TicketStore) -> None:
        with pytest.raises(ValueError):
            await store.open_ticket(None, TicketCategory.DIBAO, "13812345678", AT, "ivr", {})
        assert await store.count_pending_outbox() == 0

    async def test_sequence_exhaustion_rolls_back(self, store: TicketStore, tmp_path: Path) -> None:
        connection = sqlite3.connect(tmp_path / "county.db")
        connection.execute("INSERT INTO ticket_sequences VALUES ('330106', '2026-12-04', 9999)")
        connection.commit()
        connection.close()
        with pytest.raises(TicketIdExhausted):
            await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        assert await store.list_tickets() == []


class TestAppendEvent:
    async def test_seq_and_state_advance(self, store: TicketStore) -> None:
        ticket = await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        event = await store.append_event(ticket.ticket_id, "dispatched", "agent-1001", {}, to_state=TicketState.DISPATCHED,
                                         occurred_at=AT + timedelta(minutes=5))
        note = await store.append_event(ticket.ticket_id, "note_added", "agent-1001", {}, note="已联系")
        assert (event.seq, event.from_state, event.to_state) == (2, TicketState.NEW, TicketState.DISPATCHED)
        assert (note.seq, note.from_state, note.to_state) == (3, TicketState.DISPATCHED, None)
        stored = await store.get_ticket(ticket.ticket_id)
        assert (stored.state, stored.last_seq) == (TicketState.DISPATCHED, 3)
        assert [row.seq for row in await store.pending_outbox()] == [1, 2, 3]

    async def test_unknown_ticket_raises(self, store: TicketStore) -> None:
        with pytest.raises(TicketNotFound):
            await store.append_event("330106-20261204-0042", "note_added", "agent-1001", {})
        assert await store.count_pending_outbox() == 0


class TestOutbox:
    async def test_sent_rows_stay_pending_until_acked(self, store: TicketStore) -> None:
        ticket = await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        (row,) = await store.pending_outbox()
        await store.mark_outbox_sent([row.row_id])
        (sent,) = await store.pending_outbox()
        assert sent.attempts == 1
        assert sent.sent_at is not None
        assert await store.pending_outbox(sent_before=sent.sent_at) == []
        assert await store.mark_outbox_acked(ticket.ticket_id, 1) is True
        assert await store.mark_outbox_acked(ticket.ticket_id, 1) is False
        assert await store.pending_outbox() == []

    async def test_dead_letter_keeps_reason(self, store: TicketStore) -> None:
        await store.open_ticket(None, TicketCategory.DIBAO, "无号码", AT, "ivr", {})
        (row,) = await store.pending_outbox()
        await store.dead_letter(row.row_id, "too large")
        assert await store.pending_outbox() == []
        (dead,) = await store.list_dead_letters()
        assert dead.dead_reason == "too large"
        with pytest.raises(StorageError):
            await store.dead_letter(row.row_id, "again")


class TestApplyRemoteEvent:
    async def test_idempotent_and_order_independent(self, store: TicketStore, city: TicketStore) -> None:
        ticket = await store.open_ticket(None, TicketCategory.ERTONG, "无号码", AT, "ivr", {})
        await store.append_event(ticket.ticket_id, "dispatched", "agent-1001", {}, to_state=TicketState.DISPATCHED)
        first, second = [decode_envelope(row.envelope) for row in await store.pending_outbox()]

        assert await city.apply_remote_event(second) == "applied"
        assert await city.apply_remote_event(first) == "applied"
        assert await city.apply_remote_event(second) == "duplicate"
        stored = await city.get_ticket(ticket.ticket_id)
        assert (stored.origin_node, stored.state, stored.last_seq) == (COUNTY, TicketState.DISPATCHED, 2)
        assert [event.seq for event in await city.list_events(ticket.ticket_id)] == [1, 2]
        assert await city.count_pending_outbox() == 0

    async def test_conflicting_copy_rejected(self, store: TicketStore, city: TicketStore) -> None:
        ticket = await store.open_ticket(None, TicketCategory.ERTONG, "无号码", AT, "ivr", {})
        (event,) = await store.list_events(ticket.ticket_id)
        await city.apply_remote_event(build_envelope(ticket, event))
        altered = build_envelope(ticket, type(event)(**{**{f: getattr(event, f) for f in event.__slots__},
                                                        "actor": "someone-else"}))
        with pytest.raises(TicketConflict):
            await city.apply_remote_event(altered)

    async def test_own_events_rejected(self, store: TicketStore) -> None:
        ticket = await store.open_ticket(None, TicketCategory.ERTONG, "无号码", AT, "ivr", {})
        (row,) = await store.pending_outbox()
        with pytest.raises(TicketConflict):
            await store.apply_remote_event(decode_envelope(row.envelope))
        assert len(await store.list_events(ticket.ticket_id)) == 1


class TestCancelledWrite:
    async def test_open_transaction_left_by_cancel_is_rolled_back(self, store: TicketStore) -> None:
        """A transaction a cancelled caller left open must not wedge every later write."""
        await store._writer.execute("BEGIN IMMEDIATE")

        ticket = await store.open_ticket("1700000000.77", TicketCategory.DIBAO, "无号码", AT, "ivr", {})

        assert (await store.get_ticket(ticket.ticket_id)).ticket_id == ticket.ticket_id
        assert not store._writer.in_transaction
