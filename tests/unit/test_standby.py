"""Unit tests for the standby pieces: fallback callback tickets and the publisher lock hand-over.

They use real SQLite files, real ``flock`` locks and, for the hand-over, a real second
process that holds the publisher lock until it is killed with SIGKILL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hotline.config import NodeConfig
from hotline.standby import (
    CALLBACK_EVENT_KIND,
    FailoverCountyNode,
    FallbackCall,
    FallbackCallbacks,
    FallbackResult,
    start_publisher_when_free,
)
from hwd_bridge.ami_protocol import AmiMessage
from ivr.call import CallerId
from stack import net
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome, CallRecord
from tickets.model import TicketCategory
from tier_sync.node_lock import NodeAlreadyRunning, NodeLock
from tier_sync.outbox_publisher import OutboxPublisher

AT = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
COUNTY = "county-330106"
REGION = "330106"
CALL_ID = "1764813600.17"
CALLER = "13900000017"


def fallback_event(call_id: str = CALL_ID, caller: str = CALLER, **extra: str) -> AmiMessage:
    """Build a UserEvent as Asterisk 22 sends it: channel headers first, then the dialplan's own."""
    headers = [
        ("Event", "UserEvent"), ("Channel", "PJSIP/anonymous-00000001"), ("CallerIDNum", caller),
        ("Uniqueid", call_id), ("UserEvent", "HotlineFallback"), ("Uniqueid", call_id),
        ("CallerIDNum", caller), ("AgiStatus", extra.get("AgiStatus", "SUCCESS")), ("Failure", extra.get("Failure", "")),
    ]
    return AmiMessage(tuple(headers))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.sqlite3", COUNTY, REGION, clock=lambda: AT) as opened:
        yield opened


def callbacks(store: TicketStore) -> FallbackCallbacks:
    return FallbackCallbacks(store, clock=lambda: AT)


class TestFallbackEvent:
    def test_parsed_from_user_event(self) -> None:
        call = FallbackCall.from_ami_event(fallback_event(AgiStatus="FAILURE"))

        assert call is not None
        assert call.call_id == CALL_ID
        assert call.caller.number == CALLER
        assert call.agi_status == "FAILURE"
        assert call.failure is None

    def test_failure_variable_kept(self) -> None:
        call = FallbackCall.from_ami_event(fallback_event(Failure="disk_full"))

        assert call is not None
        assert call.failure == "disk_full"

    def test_anonymous_caller_has_no_number(self) -> None:
        call = FallbackCall.from_ami_event(fallback_event(caller="anonymous"))

        assert call is not None
        assert call.caller.number is None
        assert "no_caller_id" in call.caller.flags

    def test_other_user_event_ignored(self) -> None:
        message = AmiMessage((("Event", "UserEvent"), ("UserEvent", "HotlineBaseline"), ("Uniqueid", CALL_ID)))

        assert FallbackCall.from_ami_event(message) is None

    def test_event_without_uniqueid_ignored(self) -> None:
        message = AmiMessage((("Event", "UserEvent"), ("UserEvent", "HotlineFallback"), ("CallerIDNum", CALLER)))

        assert FallbackCall.from_ami_event(message) is None


class TestFallbackCallbacks:
    async def test_ticket_with_callback_written(self, store: TicketStore) -> None:
        call = FallbackCall.from_ami_event(fallback_event())
        assert call is not None

        result = await callbacks(store).handle(call)

        assert result is FallbackResult.TICKET_OPENED
        record = await store.get_call(CALL_ID)
        assert record.caller_raw == CALLER
        assert record.caller_masked == "139****0017"
        assert record.outcome is CallOutcome.FAILED
        assert record.ticket_id is not None
        ticket = await store.get_ticket(record.ticket_id)
        assert ticket.call_id == CALL_ID
        assert ticket.caller_masked == "139****0017"
        events = await store.list_events(record.ticket_id)
        assert [event.kind for event in events] == ["created", CALLBACK_EVENT_KIND]
        assert events[1].payload["number"] == CALLER
        assert events[1].payload["number_masked"] == "139****0017"
        assert await store.count_pending_outbox() == 2

    async def test_repeated_event_writes_nothing(self, store: TicketStore) -> None:
        call = FallbackCall.from_ami_event(fallback_event())
        assert call is not None
        desk = callbacks(store)
        await desk.handle(call)

        result = await desk.handle(call)

        assert result is FallbackResult.ALREADY_DONE
        assert len(await store.list_tickets()) == 1
        assert await store.count_pending_outbox() == 2

    async def test_two_controllers_write_one_ticket(self, store: TicketStore, tmp_path: Path) -> None:
        call = FallbackCall.from_ami_event(fallback_event())
        assert call is not None

        # A second connection set and lock file descriptor, as a second controller process has.
        async with await TicketStore.open(tmp_path / "county.sqlite3", COUNTY, REGION, clock=lambda: AT) as other:
            results = await asyncio.gather(callbacks(store).handle(call), callbacks(other).handle(call))

        assert sorted(result.value for result in results) == ["already_done", "ticket_opened"]
        tickets = await store.list_tickets()
        assert len(tickets) == 1
        events = await store.list_events(tickets[0].ticket_id)
        assert [event.kind for event in events].count(CALLBACK_EVENT_KIND) == 1

    async def test_callback_added_to_ticket_of_failed_handler(self, store: TicketStore) -> None:
        # The primary's handler failed after the flow opened a ticket and wrote the call record.
        ticket = await store.open_ticket(CALL_ID, TicketCategory.DIBAO, "139****0017", AT, "ivr", {})
        await store.record_call(CallRecord(
            call_id=CALL_ID, caller_raw=CALLER, caller_masked="139****0017", caller_flags=frozenset(),
            dialed="12349", started_at=AT, outcome=CallOutcome.FAILED, ticket_id=ticket.ticket_id,
        ))
        call = FallbackCall.from_ami_event(fallback_event(Failure="handler_error"))
        assert call is not None

        result = await callbacks(store).handle(call)

        assert result is FallbackResult.CALLBACK_ADDED
        assert [t.ticket_id for t in await store.list_tickets()] == [ticket.ticket_id]
        kinds = [event.kind for event in await store.list_events(ticket.ticket_id)]
        assert kinds == ["created", CALLBACK_EVENT_KIND]

    async def test_callback_joins_ticket_of_killed_controller(self, store: TicketStore) -> None:
        """The killed controller opened the ticket but never wrote the call record: no second ticket."""
        ticket = await store.open_ticket(CALL_ID, TicketCategory.DIBAO, "139****0017", AT, "ivr", {})
        call = FallbackCall.from_ami_event(fallback_event())
        assert call is not None

        result = await callbacks(store).handle(call)

        assert result is FallbackResult.CALLBACK_ADDED
        assert [t.ticket_id for t in await store.list_tickets()] == [ticket.ticket_id]
        kinds = [event.kind for event in await store.list_events(ticket.ticket_id)]
        assert kinds == ["created", CALLBACK_EVENT_KIND]
        assert (await store.get_call(CALL_ID)).ticket_id == ticket.ticket_id

    async def test_caller_without_number_gets_ticket_only(self, store: TicketStore) -> None:
        call = FallbackCall.from_ami_event(fallback_event(caller="anonymous"))
        assert call is not None

        result = await callbacks(store).handle(call)

        assert result is FallbackResult.TICKET_OPENED
        record = await store.get_call(CALL_ID)
        assert record.ticket_id is not None
        kinds = [event.kind for event in await store.list_events(record.ticket_id)]
        assert kinds == ["created"]

    async def test_interrupted_write_completed_by_repeat(self, store: TicketStore) -> None:
        # A controller stopped after the call record and ticket but before the callback event.
        ticket = await store.open_ticket(CALL_ID, TicketCategory.OTHER, "139****0017", AT, "fallback", {})
        await store.record_call(CallRecord(
            call_id=CALL_ID, caller_raw=CALLER, caller_masked="139****0017", caller_flags=frozenset(),
            dialed="12349", started_at=AT, outcome=CallOutcome.FAILED, ticket_id=ticket.ticket_id,
        ))
        call = FallbackCall(CALL_ID, CallerId.from_raw(CALLER), "SUCCESS", None)

        result = await callbacks(store).handle(call)

        assert result is FallbackResult.CALLBACK_ADDED
        assert len(await store.list_tickets()) == 1


_HOLD_LOCK = """
import sys, time
from pathlib import Path
from tier_sync.node_lock import NodeLock
NodeLock(Path(sys.argv[1]), "publisher", sys.argv[2]).acquire()
print("locked", flush=True)
time.sleep(120)
"""


class TestPublisherHandOver:
    async def test_waits_for_lock_then_takes_over(self, store: TicketStore) -> None:
        holder = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _HOLD_LOCK, str(store.path), COUNTY,
            stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[2],
        )
        try:
            assert holder.stdout is not None
            assert (await holder.stdout.readline()).strip() == b"locked"
            # No broker listens on this port; the publisher's connect attempts just fail and retry.
            publisher = OutboxPublisher(store, net.LOOPBACK, net.free_port(), COUNTY, "city-330100")
            waiter = asyncio.create_task(start_publisher_when_free(publisher, poll_interval_s=0.05))

            await asyncio.sleep(0.5)
            assert not waiter.done()

            os.kill(holder.pid, signal.SIGKILL)
            await asyncio.wait_for(holder.wait(), timeout=5)
            await asyncio.wait_for(waiter, timeout=5)

            # The publisher now holds the lock, so another process would have to wait.
            with pytest.raises(NodeAlreadyRunning):
                NodeLock(store.path, "publisher", COUNTY).acquire()
            await publisher.stop()
        finally:
            if holder.returncode is None:
                holder.kill()
                await asyncio.wait_for(holder.wait(), timeout=5)

    async def test_free_lock_taken_at_once(self, store: TicketStore) -> None:
        publisher = OutboxPublisher(store, net.LOOPBACK, net.free_port(), COUNTY, "city-330100")

        await asyncio.wait_for(start_publisher_when_free(publisher, poll_interval_s=10), timeout=2)

        await publisher.stop()


def county_config(tmp_path: Path, *, standby_port: int | None) -> NodeConfig:
    telephony: dict[str, object] = {
        "fastagi": {"port": 4573},
        "ami": {"port": 5038, "username": "hotline", "secret_file": str(tmp_path / "ami-secret")},
        "flow": str(tmp_path / "flow.yaml"),
        "prompt_catalog": str(tmp_path / "catalog.yaml"),
        "prompt_sound_dir": "/var/lib/hotline/sounds",
        "roster": str(tmp_path / "roster.yaml"),
    }
    if standby_port is not None:
        telephony["standby_fastagi"] = {"port": standby_port}
    return NodeConfig.model_validate({
        "node_id": COUNTY, "tier": "county", "region_code": REGION, "database": str(tmp_path / "county.sqlite3"),
        "parent": {"node_id": "city-330100", "broker": {"port": 1883}}, "telephony": telephony,
    })


class TestFailoverCountyNode:
    def test_standby_listens_on_standby_port(self, tmp_path: Path) -> None:
        node = FailoverCountyNode(county_config(tmp_path, standby_port=4574), standby=True, min_free_bytes=0)

        assert node._fastagi_listen().port == 4574

    def test_primary_listens_on_primary_port(self, tmp_path: Path) -> None:
        node = FailoverCountyNode(county_config(tmp_path, standby_port=4574), min_free_bytes=0)

        assert node._fastagi_listen().port == 4573

    def test_standby_without_listener_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="standby_fastagi"):
            FailoverCountyNode(county_config(tmp_path, standby_port=None), standby=True, min_free_bytes=0)


class TestStoredPlacesOwner:
    """With two controllers, only the one holding the publisher lock serves stored callback places."""

    async def test_paired_node_serves_after_lock(self, store: TicketStore, tmp_path: Path) -> None:
        node = FailoverCountyNode(county_config(tmp_path, standby_port=4574), min_free_bytes=0)
        takeovers: list[bool] = []

        async def take_over() -> None:
            takeovers.append(True)

        node._take_over_stored_places = take_over  # type: ignore[method-assign]
        node._publisher = OutboxPublisher(store, net.LOOPBACK, net.free_port(), COUNTY, "city-330100")
        direct = OutboxPublisher(store, net.LOOPBACK, net.free_port(), COUNTY, "province-330000", direct=True)
        assert not node._serves_stored_places

        await asyncio.wait_for(node._publish_when_free(direct), timeout=2)
        assert takeovers == []
        await asyncio.wait_for(node._publish_when_free(node._publisher), timeout=2)
        assert takeovers == [True]

        await direct.stop()
        await node._publisher.stop()

    def test_single_controller_serves_at_start(self, tmp_path: Path) -> None:
        node = FailoverCountyNode(county_config(tmp_path, standby_port=None), min_free_bytes=0)

        assert node._serves_stored_places
