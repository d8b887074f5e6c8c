"""Unit tests for lifecycle actions, links, attachments and migration in TicketStore, on real SQLite files.

Run as a script, this file is one worker process of the two-process race test.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))

import pytest  # noqa: E402

from storage.errors import AttachmentError, AttachmentNotFound, TicketConflict, TicketNotFound  # noqa: E402
from storage.schema import LATEST_VERSION, MIGRATIONS  # noqa: E402
from storage.ticket_store import TicketStore  # noqa: E402
from tickets.envelope import decode_envelope  # noqa: E402
from tickets.lifecycle import InvalidField, InvalidTransition, MissingField, TransitionRejected  # noqa: E402
from tickets.model import TicketCategory, TicketState, Tier  # noqa: E402

S = TicketState
AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
COUNTY = "county-330106"
REGION = "330106"
CITY_TICKET_ID = "330100-20261204-0005"


def fixed_clock() -> datetime:
    return AT + timedelta(hours=2)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGION, clock=fixed_clock) as opened:
        yield opened


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "city.db", "city-330100", "330100", clock=fixed_clock) as opened:
        yield opened


async def new_ticket(store: TicketStore, minutes: int = 0) -> str:
    ticket = await store.open_ticket(None, TicketCategory.LINSHI, "139****0001", AT + timedelta(minutes=minutes),
                                     "ivr", {})
    return ticket.ticket_id


async def outbox_count(store: TicketStore) -> int:
    return await store.count_pending_outbox()


class TestApplyAction:
    async def test_dispatch_then_return(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        await store.apply_action(ticket_id, "dispatch", "agent-1001", occurred_at=AT + timedelta(minutes=1))
        event = await store.apply_action(ticket_id, "return", "office-7", reason="wrong_region",
                                         note="应由西湖区办理", office="拱墅区民政局",
                                         occurred_at=AT + timedelta(minutes=2))

        assert (event.seq, event.kind, event.from_state, event.to_state) == (3, "returned", S.DISPATCHED, S.RETURNED)
        assert (event.reason, event.note, event.office, event.tier) == (
            "wrong_region", "应由西湖区办理", "拱墅区民政局", Tier.COUNTY)
        ticket = await store.get_ticket(ticket_id)
        assert (ticket.state, ticket.last_seq) == (S.RETURNED, 3)
        assert ticket.updated_at == AT + timedelta(minutes=2)
        assert (await store.list_events(ticket_id))[-1] == event

        rows = await store.pending_outbox()
        assert [row.seq for row in rows] == [1, 2, 3]
        envelope = decode_envelope(rows[-1].envelope)
        assert envelope.ticket.state is S.RETURNED
        assert envelope.event.reason == "wrong_region"

    async def test_default_time_from_clock(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        event = await store.apply_action(ticket_id, "dispatch", "agent-1001")
        assert event.occurred_at == fixed_clock()

    @pytest.mark.parametrize(("action", "inputs", "error"), [
        ("accept", {}, InvalidTransition),
        ("close", {}, InvalidTransition),
        ("cancel", {}, MissingField),
        ("cancel", {"reason": "bored"}, InvalidField),
        ("merge", {"target_ticket_id": "330106-20261204-0001"}, InvalidField),
        ("fly", {}, TransitionRejected),
    ])
    async def test_rejected_action_writes_nothing(
        self, store: TicketStore, action: str, inputs: dict[str, str], error: type[Exception]
    ) -> None:
        ticket_id = await new_ticket(store)
        with pytest.raises(error):
            await store.apply_action(ticket_id, action, "agent-1001", **inputs)
        ticket = await store.get_ticket(ticket_id)
        assert (ticket.state, ticket.last_seq) == (S.NEW, 1)
        assert len(await store.list_events(ticket_id)) == 1
        assert await outbox_count(store) == 1

    async def test_overlays_keep_state(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        await store.apply_action(ticket_id, "dispatch", "agent-1001")
        remind = await store.apply_action(ticket_id, "remind", "agent-1002", note="来电人第二次来电催问")
        supervise = await store.apply_action(ticket_id, "supervise", "city-officer-3", office="杭州市民政局",
                                             note="请于明日前办结")
        assert (remind.to_state, supervise.to_state) == (None, None)
        assert (remind.from_state, supervise.from_state) == (S.DISPATCHED, S.DISPATCHED)
        ticket = await store.get_ticket(ticket_id)
        assert (ticket.state, ticket.last_seq) == (S.DISPATCHED, 4)

    async def test_unknown_ticket(self, store: TicketStore) -> None:
        with pytest.raises(TicketNotFound):
            await store.apply_action("330106-20261204-0042", "dispatch", "agent-1001")

    async def test_copy_from_child_cannot_be_changed(self, store: TicketStore, city: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        (row,) = await store.pending_outbox()
        await city.apply_remote_event(decode_envelope(row.envelope))
        with pytest.raises(TicketConflict):
            await city.apply_action(ticket_id, "dispatch", "city-agent-1")
        assert len(await city.list_events(ticket_id)) == 1


class TestMergeAndEscalate:
    async def test_merge_links_both_tickets(self, store: TicketStore) -> None:
        duplicate = await new_ticket(store)
        original = await new_ticket(store, minutes=1)
        await store.apply_action(original, "dispatch", "agent-1001")

        event = await store.apply_action(duplicate, "merge", "agent-1001", target_ticket_id=original,
                                         note="同一来电人同一事项")
        assert event.payload == {"target_ticket_id": original}
        assert (await store.get_ticket(duplicate)).state is S.MERGED

        target_events = await store.list_events(original)
        assert target_events[-1].kind == "duplicate_merged"
        assert target_events[-1].payload == {"source_ticket_id": duplicate}
        assert target_events[-1].to_state is None
        assert (await store.get_ticket(original)).state is S.DISPATCHED

        (link,) = await store.list_links(duplicate)
        assert (link.ticket_id, link.kind, link.linked_ticket_id, link.seq) == (duplicate, "merged", original, 2)
        assert await store.list_links(original) == [link]
        assert await outbox_count(store) == 5

    async def test_merge_into_missing_ticket(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        with pytest.raises(TicketNotFound) as caught:
            await store.apply_action(ticket_id, "merge", "agent-1001", target_ticket_id="330106-20261204-0099")
        assert caught.value.ticket_id == "330106-20261204-0099"
        assert (await store.get_ticket(ticket_id)).state is S.NEW

    async def test_merge_into_cancelled_ticket(self, store: TicketStore) -> None:
        duplicate = await new_ticket(store)
        original = await new_ticket(store)
        await store.apply_action(original, "cancel", "agent-1001", reason="caller_withdrew")
        with pytest.raises(InvalidField):
            await store.apply_action(duplicate, "merge", "agent-1001", target_ticket_id=original)
        assert await store.list_links(duplicate) == []

    async def test_escalation_link_reaches_parent(self, store: TicketStore, city: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        await store.apply_action(ticket_id, "escalate", "agent-1001", target_ticket_id=CITY_TICKET_ID,
                                 note="需跨区协调")
        (link,) = await store.list_links(ticket_id)
        assert (link.kind, link.linked_ticket_id) == ("escalated", CITY_TICKET_ID)

        for row in await store.pending_outbox():
            assert await city.apply_remote_event(decode_envelope(row.envelope)) == "applied"
        assert (await city.get_ticket(ticket_id)).state is S.ESCALATED
        assert [(item.kind, item.linked_ticket_id) for item in await city.list_links(CITY_TICKET_ID)] == [
            ("escalated", CITY_TICKET_ID)]


class TestAppendEventChecks:
    async def test_state_change_checked_by_lifecycle(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        with pytest.raises(InvalidTransition):
            await store.append_event(ticket_id, "closed", "agent-1001", {}, to_state=S.CLOSED)
        assert (await store.get_ticket(ticket_id)).last_seq == 1

    async def test_state_change_needs_matching_kind(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        with pytest.raises(ValueError, match="'dispatched'"):
            await store.append_event(ticket_id, "sent_out", "agent-1001", {}, to_state=S.DISPATCHED)
        assert (await store.get_ticket(ticket_id)).last_seq == 1

    async def test_state_change_needs_required_inputs(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        await store.append_event(ticket_id, "dispatched", "agent-1001", {}, to_state=S.DISPATCHED)
        with pytest.raises(MissingField):
            await store.append_event(ticket_id, "returned", "office-7", {}, to_state=S.RETURNED)
        event = await store.append_event(ticket_id, "returned", "office-7", {"checked": True}, to_state=S.RETURNED,
                                         reason="not_our_duty")
        assert (event.seq, event.to_state, event.payload) == (3, S.RETURNED, {"checked": True})

    @pytest.mark.parametrize("kind", ["returned", "reminded", "supervised", "created", "attachment_added",
                                      "duplicate_merged"])
    async def test_lifecycle_kinds_rejected_without_state(self, store: TicketStore, kind: str) -> None:
        ticket_id = await new_ticket(store)
        with pytest.raises(ValueError, match="apply_action"):
            await store.append_event(ticket_id, kind, "agent-1001", {})
        assert (await store.get_ticket(ticket_id)).last_seq == 1

    async def test_informational_event_in_terminal_state(self, store: TicketStore) -> None:
        """Events such as the end of a call are still recorded after a ticket is finished."""
        ticket_id = await new_ticket(store)
        await store.apply_action(ticket_id, "answer_directly", "agent-1001", note="已告知低保申请材料")
        await store.apply_action(ticket_id, "start_callback", "agent-1002")
        await store.apply_action(ticket_id, "close", "agent-1002", note="非常满意")
        event = await store.append_event(ticket_id, "call_ended", "ivr", {"duration_seconds": 95.0})
        assert (event.from_state, event.to_state) == (S.CLOSED, None)
        assert (await store.get_ticket(ticket_id)).state is S.CLOSED


class TestConcurrentActions:
    async def test_two_connections_one_winner(self, tmp_path: Path) -> None:
        """Accept and return race on one dispatched ticket from two connections: exactly one is stored."""
        path = tmp_path / "county.db"
        async with await TicketStore.open(path, COUNTY, REGION) as first, \
                await TicketStore.open(path, COUNTY, REGION) as second:
            ticket_ids = [await new_ticket(first) for _ in range(10)]
            for ticket_id in ticket_ids:
                await first.apply_action(ticket_id, "dispatch", "agent-1001")

            for ticket_id in ticket_ids:
                results = await asyncio.gather(
                    first.apply_action(ticket_id, "accept", "office-1"),
                    second.apply_action(ticket_id, "return", "office-2", reason="not_our_duty"),
                    return_exceptions=True,
                )
                winners = [result for result in results if not isinstance(result, BaseException)]
                losers = [result for result in results if isinstance(result, BaseException)]
                assert len(winners) == 1, results
                assert len(losers) == 1, results
                assert isinstance(losers[0], InvalidTransition), losers[0]

                events = await first.list_events(ticket_id)
                assert len(events) == 3
                assert (await first.get_ticket(ticket_id)).state is winners[0].to_state

    async def test_two_processes_one_winner(self, tmp_path: Path) -> None:
        """Two processes race accept against return on 40 tickets: each ticket has exactly one winner."""
        path = tmp_path / "county.db"
        async with await TicketStore.open(path, COUNTY, REGION) as store:
            ticket_ids = [await new_ticket(store) for _ in range(40)]
            for ticket_id in ticket_ids:
                await store.apply_action(ticket_id, "dispatch", "agent-1001")

        go_file = tmp_path / "go"
        workers = [spawn_worker(path, action, go_file, ticket_ids) for action in ("accept", "return")]
        ready_files = [Path(f"{go_file}.{action}.ready") for action in ("accept", "return")]
        for _ in range(3000):
            if all(ready.exists() for ready in ready_files) or any(process.poll() is not None for process in workers):
                break
            await asyncio.sleep(0.01)
        go_file.touch()
        outputs = [process.communicate(timeout=120) for process in workers]

        wins: dict[str, list[str]] = {ticket_id: [] for ticket_id in ticket_ids}
        for process, (stdout, stderr) in zip(workers, outputs):
            assert process.returncode == 0, stderr
            # structlog writes its lines to stdout too; the report is the last line.
            report = json.loads(stdout.strip().splitlines()[-1])
            assert report["errors"] == [], report
            for ticket_id in report["won"]:
                wins[ticket_id].append(report["action"])
        assert all(len(actions) == 1 for actions in wins.values()), wins
        assert {action for (action,) in wins.values()} == {"accept", "return"}, wins

        async with await TicketStore.open(path, COUNTY, REGION) as store:
            for ticket_id, (action,) in wins.items():
                ticket = await store.get_ticket(ticket_id)
                assert ticket.state is (S.ACCEPTED if action == "accept" else S.RETURNED)
                assert ticket.last_seq == 3


def spawn_worker(path: Path, action: str, go_file: Path, ticket_ids: list[str]) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, __file__, str(path), action, str(go_file), *ticket_ids],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )


async def run_worker(path: str, action: str, go_file: str, ticket_ids: list[str]) -> None:
    """Wait for ``go_file``, then try ``action`` on every ticket and print which attempts won.

    Each worker visits the tickets in its own shuffled order and pauses briefly after each
    attempt. Without the pause the first worker to take the write lock keeps it for the whole
    list, because SQLite's busy handler makes the other one sleep between retries.
    """
    won: list[str] = []
    errors: list[str] = []
    order = list(ticket_ids)
    random.Random(action).shuffle(order)
    async with await TicketStore.open(path, COUNTY, REGION) as store:
        Path(f"{go_file}.{action}.ready").touch()
        while not os.path.exists(go_file):
            await asyncio.sleep(0.001)
        for ticket_id in order:
            try:
                await store.apply_action(ticket_id, action, f"worker-{action}", reason="not_our_duty"
                                         if action == "return" else None)
            except InvalidTransition:
                pass
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on any entry
                errors.append(f"{ticket_id}: {type(exc).__name__}: {exc}")
            else:
                won.append(ticket_id)
            finally:
                await asyncio.sleep(0.003)
    print(json.dumps({"action": action, "won": won, "errors": errors}))


class TestMigration:
    async def test_version_1_database_migrates(self, tmp_path: Path) -> None:
        """A database left at schema version 1 opens at the latest version with its tickets intact."""
        path = tmp_path / "old.db"
        connection = sqlite3.connect(path)
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute(
            "INSERT INTO tickets (ticket_id, origin_node, region_code, category, state, caller_masked, call_id, "
            "created_at, updated_at, last_seq) VALUES ('330106-20261203-0001', ?, ?, 'dibao', 'dispatched', "
            "'139****0002', NULL, '2026-12-03T02:00:00.000000Z', '2026-12-03T02:05:00.000000Z', 2)",
            (COUNTY, REGION),
        )
        connection.execute("PRAGMA user_version = 1")
        connection.commit()
        connection.close()

        async with await TicketStore.open(path, COUNTY, REGION, clock=fixed_clock) as store:
            ticket = await store.get_ticket("330106-20261203-0001")
            assert (ticket.state, ticket.last_seq) == (S.DISPATCHED, 2)
            event = await store.apply_action(ticket.ticket_id, "escalate", "agent-1001",
                                             target_ticket_id=CITY_TICKET_ID)
            assert event.seq == 3
            assert len(await store.list_links(ticket.ticket_id)) == 1
            sha256 = await store.add_attachment(ticket.ticket_id, b"photo", "image/jpeg", "agent-1001")
            assert (await store.get_attachment(sha256)).size == 5

        connection = sqlite3.connect(path)
        assert connection.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION == 4
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"ticket_links", "attachments"} <= tables
        connection.close()


class TestAppendOnly:
    async def test_events_cannot_be_changed(self, store: TicketStore, tmp_path: Path) -> None:
        """The event trail rejects UPDATE and DELETE, even from another connection."""
        ticket_id = await new_ticket(store)
        connection = sqlite3.connect(tmp_path / "county.db")
        try:
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute("UPDATE ticket_events SET actor = 'someone' WHERE ticket_id = ?", (ticket_id,))
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute("DELETE FROM ticket_events WHERE ticket_id = ?", (ticket_id,))
        finally:
            connection.close()
        assert (await store.list_events(ticket_id))[0].actor == "ivr"


class TestAttachments:
    async def test_identical_content_stored_once(self, store: TicketStore) -> None:
        first = await new_ticket(store)
        second = await new_ticket(store)
        content = b"\xff\xd8\xff\xe0 synthetic photo of a rental contract"
        expected = hashlib.sha256(content).hexdigest()

        assert await store.add_attachment(first, content, "image/jpeg", "agent-1001") == expected
        assert await store.add_attachment(second, content, "image/jpeg", "agent-1002", note="来电人补充") == expected

        path = await store.attachment_path(expected)
        assert path.read_bytes() == content
        assert path.parent.parent == store.attachment_dir
        files = [item for item in store.attachment_dir.rglob("*") if item.is_file()]
        assert files == [path]

        attachment = await store.get_attachment(expected)
        assert (attachment.size, attachment.media_type) == (len(content), "image/jpeg")
        for ticket_id in (first, second):
            event = (await store.list_events(ticket_id))[-1]
            assert event.kind == "attachment_added"
            assert event.payload == {"attachment_id": expected, "size_bytes": len(content), "media_type": "image/jpeg"}
            assert event.to_state is None

    async def test_from_file_path(self, store: TicketStore, tmp_path: Path) -> None:
        ticket_id = await new_ticket(store)
        source = tmp_path / "recording.wav"
        source.write_bytes(b"RIFF" + bytes(range(256)) * 5000)
        sha256 = await store.add_attachment(ticket_id, source, "audio/wav", "ivr")
        assert sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
        assert (await store.attachment_path(sha256)).read_bytes() == source.read_bytes()
        assert not list(store.attachment_dir.glob(".incoming-*"))

    async def test_event_reaches_parent_unmasked(self, store: TicketStore, city: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        sha256 = await store.add_attachment(ticket_id, b"13900000001 on a scanned form", "image/png", "agent-1001")
        for row in await store.pending_outbox():
            await city.apply_remote_event(decode_envelope(row.envelope))
        assert (await city.list_events(ticket_id))[-1].payload["attachment_id"] == sha256

    async def test_invalid_inputs(self, store: TicketStore, tmp_path: Path) -> None:
        ticket_id = await new_ticket(store)
        with pytest.raises(ValueError):
            await store.add_attachment(ticket_id, b"x", "JPEG", "agent-1001")
        with pytest.raises(AttachmentError):
            await store.add_attachment(ticket_id, tmp_path / "missing.jpg", "image/jpeg", "agent-1001")
        with pytest.raises(AttachmentError):
            await store.add_attachment(ticket_id, tmp_path, "image/jpeg", "agent-1001")
        assert (await store.get_ticket(ticket_id)).last_seq == 1

    async def test_unknown_ticket_keeps_no_row(self, store: TicketStore) -> None:
        with pytest.raises(TicketNotFound):
            await store.add_attachment("330106-20261204-0042", b"x", "image/jpeg", "agent-1001")
        with pytest.raises(AttachmentNotFound):
            await store.get_attachment(hashlib.sha256(b"x").hexdigest())

    async def test_missing_file_reported(self, store: TicketStore) -> None:
        ticket_id = await new_ticket(store)
        sha256 = await store.add_attachment(ticket_id, b"photo", "image/jpeg", "agent-1001")
        (await store.attachment_path(sha256)).unlink()
        with pytest.raises(AttachmentNotFound, match="missing"):
            await store.attachment_path(sha256)


class TestParentProjection:
    async def test_every_kind_applied_in_any_order(self, store: TicketStore, city: TicketStore) -> None:
        """The parent stores events of every kind, in reverse order too, and ends with the child's state."""
        ticket_id = await new_ticket(store)
        await store.append_event(ticket_id, "agent_answered", "ivr", {"agent_id": "1001"})
        steps = [
            ("dispatch", {}), ("remind", {}), ("return", {"reason": "incomplete_info"}), ("redispatch", {}),
            ("accept", {}), ("start", {}), ("suspend", {"note": "等待补充材料"}), ("resume", {}),
            ("supervise", {"office": "杭州市民政局", "note": "请尽快办结"}), ("resolve", {"note": "已发放"}),
            ("start_callback", {}), ("reopen", {"note": "不满意"}), ("redispatch", {}), ("accept", {}),
            ("start", {}), ("resolve", {"note": "已补发"}), ("start_callback", {}), ("close", {"note": "满意"}),
        ]
        for action, inputs in steps:
            await store.apply_action(ticket_id, action, "agent-1001", **inputs)
        await store.add_attachment(ticket_id, b"receipt", "image/jpeg", "agent-1001")

        for row in reversed(await store.pending_outbox()):
            assert await city.apply_remote_event(decode_envelope(row.envelope)) == "applied"

        county_events = await store.list_events(ticket_id)
        city_events = await city.list_events(ticket_id)
        assert [event.kind for event in city_events] == [event.kind for event in county_events]
        stored = await city.get_ticket(ticket_id)
        assert (stored.state, stored.last_seq) == (S.CLOSED, len(county_events))


if __name__ == "__main__":
    db_path, worker_action, go, *ids = sys.argv[1:]
    asyncio.run(run_worker(db_path, worker_action, go, ids))
