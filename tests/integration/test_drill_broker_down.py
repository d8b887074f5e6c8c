"""Fault drill: the city's broker is down while the county takes calls.

The county keeps answering calls and writing tickets locally; nothing reaches the city.
When the broker comes back, every ticket arrives with all its events, exactly once, and
the county's outbox empties. Parameters: in `make test` two calls are placed while the
broker is down; with HOTLINE_SOAK=1 (`make soak`) all six demo calls are.
"""

import asyncio
import os
import time

import pytest

from hotline.demo import CITY, COUNTY, DemoStack, standard_calls
from storage.ticket_store import TicketStore

pytestmark = pytest.mark.integration

CALLS_WHILE_DOWN = 6 if os.environ.get("HOTLINE_SOAK") == "1" else 2
CONVERGE_WITHIN_S = 60.0


async def _snapshot(work_dir):
    async with await TicketStore.open(work_dir / "county.sqlite3", COUNTY["node_id"], COUNTY["region_code"]) as county:
        county_events = {t.ticket_id: [e.seq for e in await county.list_events(t.ticket_id)]
                         for t in await county.list_tickets()}
        pending = await county.count_pending_outbox()
    async with await TicketStore.open(work_dir / "city.sqlite3", CITY["node_id"], CITY["region_code"]) as city:
        city_events = {t.ticket_id: [e.seq for e in await city.list_events(t.ticket_id)]
                       for t in await city.list_tickets()}
    return county_events, pending, city_events


def test_tickets_arrive_after_broker_returns(tmp_path):
    calls = [call for call in standard_calls() if call.expects_ticket][:CALLS_WHILE_DOWN]

    with DemoStack(tmp_path) as stack:
        stack.city_broker.stop()
        for call in calls:
            stack.place_call(call)

        county_events, pending, city_events = asyncio.run(_snapshot(tmp_path))
        assert len(county_events) == len(calls)
        assert pending > 0
        assert city_events == {}

        restarted = time.monotonic()
        stack.city_broker.start()
        while time.monotonic() - restarted < CONVERGE_WITHIN_S:
            county_events, pending, city_events = asyncio.run(_snapshot(tmp_path))
            if pending == 0 and city_events == county_events:
                break
            time.sleep(0.5)
        converged_s = time.monotonic() - restarted

    print(f"converged {converged_s:.1f} s after the broker restarted, {len(calls)} tickets")
    assert pending == 0
    assert city_events == county_events
    for seqs in city_events.values():
        assert seqs == list(range(1, len(seqs) + 1)), "an event is missing or stored twice at the city"
