"""Kept queue places at the county node: stored rows, sealed numbers, restore after a restart."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

from hotline.queue_callbacks import KeptPlace
from hotline.ticket_desk import TicketDesk
from profiles.keys import generate_key_files, load_keys
from storage.profile_store import ProfileStore
from storage.rows import KeptCallback
from storage.ticket_store import TicketStore
from tickets.model import TicketCategory

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
NUMBER = "13900000071"
COUNTY, REGION = "county-330106", "330106"


def _kept(call_id: str, queued_s_ago: float) -> KeptPlace:
    return KeptPlace(call_id=call_id, ticket_id=f"T-{call_id}", number=NUMBER, skill="dibao", priority=2,
                     needs=frozenset({"sign_language", "slow_speech"}), preferred_agent="agent2",
                     queued_at=NOW - timedelta(seconds=queued_s_ago), expires_at=NOW + timedelta(hours=4))


async def _profiles(tmp_path: Path) -> ProfileStore:
    encryption, lookup = tmp_path / "encryption.json", tmp_path / "lookup.json"
    generate_key_files(encryption, lookup, now=NOW)
    return await ProfileStore.open(tmp_path / "profiles.sqlite3", load_keys(encryption, lookup), clock=lambda: NOW)


async def test_rows_round_trip_oldest_first(tmp_path):
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGION) as store:
        for call_id, ago in (("late", 10), ("early", 300)):
            await store.keep_callback(KeptCallback(
                call_id=call_id, ticket_id=None, skill="dibao", priority=1, needs=frozenset({"elderly"}),
                preferred_agent=None, queued_at=NOW - timedelta(seconds=ago), expires_at=NOW, number_raw=NUMBER))
        rows = await store.list_kept_callbacks()
        await store.forget_callback("early")
        await store.forget_callback("never-stored")
        left = await store.list_kept_callbacks()

    assert [row.call_id for row in rows] == ["early", "late"]
    assert rows[0].queued_at == NOW - timedelta(seconds=300)
    assert rows[0].needs == frozenset({"elderly"})
    assert [row.call_id for row in left] == ["late"]


async def test_number_stored_sealed_and_opened(tmp_path):
    profiles = await _profiles(tmp_path)
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGION) as store:
        desk = TicketDesk(store, profiles=profiles)
        await desk.save_kept_place(_kept("c1", queued_s_ago=120))
        rows = await store.list_kept_callbacks()
        places = await desk.kept_places()
    await profiles.close()

    assert rows[0].number_raw.startswith("sealed:v1:")
    assert NUMBER not in rows[0].number_raw
    assert places == [_kept("c1", queued_s_ago=120)]


async def test_number_in_clear_without_profiles(tmp_path):
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGION) as store:
        desk = TicketDesk(store)
        await desk.save_kept_place(_kept("c1", queued_s_ago=5))
        rows = await store.list_kept_callbacks()
        places = await desk.kept_places()

    assert rows[0].number_raw == NUMBER
    assert [place.number for place in places] == [NUMBER]


async def test_unopenable_number_dropped_and_logged(tmp_path):
    """A place sealed with a profile key this node no longer has is removed, not retried forever."""
    profiles = await _profiles(tmp_path)
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGION) as store:
        await TicketDesk(store, profiles=profiles).save_kept_place(_kept("c1", queued_s_ago=5))
        with structlog.testing.capture_logs() as logs:
            places = await TicketDesk(store).kept_places()
        left = await store.list_kept_callbacks()
    await profiles.close()

    assert places == []
    assert left == []
    dropped = [entry for entry in logs if entry["event"] == "queue callback place dropped: number cannot be opened"]
    assert dropped[0]["call_id"] == "c1"
    assert NUMBER not in str(logs)


async def test_outcome_written_to_ticket(tmp_path):
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGION, clock=lambda: NOW) as store:
        ticket = await store.open_ticket("c1", TicketCategory.DIBAO, "139****0071", NOW, "ivr")
        kept_place = dataclasses.replace(_kept("c1", queued_s_ago=5), ticket_id=ticket.ticket_id)
        await TicketDesk(store).queue_callback_finished(kept_place, {"call_id": "c1", "result": "connected"})
        events = await store.list_events(ticket.ticket_id)

    assert events[-1].kind == "queue_callback"
    assert events[-1].payload == {"call_id": "c1", "result": "connected"}
