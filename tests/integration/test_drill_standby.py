"""Fault drill: the primary county controller is killed with SIGKILL mid-call while a standby runs.

Each round places a call, kills the primary while the caller hears the category prompt
(its ticket is committed, the call not yet queued), then places a second call while the
primary is dead. The first caller hears the fallback notice (Q.850 cause 41) and the
standby turns the dialplan's HotlineFallback event into a callback request on the ticket
the killed primary had opened for that call.
The second call reaches the standby through the dialplan's standby branch and completes.
The primary is then started again and waits for the publisher lock the standby took.
At the end every ticket event the county committed is at the city exactly once.
Parameters: one round in `make test`; with HOTLINE_SOAK=1 (`make soak`) three rounds.
"""

import asyncio
import os
import time

import pytest

from hotline.demo import (
    CITY,
    COUNTY,
    DemoStack,
    prompt_seconds,
    standard_calls,
    wait_for_city,
)
from hotline.privacy import mask_phone
from hotline.standby import CALLBACK_EVENT_KIND
from stack.asterisk import FALLBACK_HANGUP_CAUSE
from stack.sipp import EndedBy
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome

pytestmark = pytest.mark.integration

ROUNDS = 3 if os.environ.get("HOTLINE_SOAK") == "1" else 1


async def _read(database, node):
    async with await TicketStore.open(database, node["node_id"], node["region_code"]) as store:
        calls = await store.list_calls(limit=1000)
        tickets = await store.list_tickets()
        events = {t.ticket_id: [(e.seq, e.kind, e.payload) for e in await store.list_events(t.ticket_id)]
                  for t in tickets}
        return calls, events, await store.count_pending_outbox(), await store.check_integrity()


def test_standby_takes_calls_and_callbacks(tmp_path):
    calls = standard_calls()
    dibao, linshi = calls[0], calls[1]
    kill_after_s = (prompt_seconds("welcome") + 1.5) + 1.0

    with DemoStack(tmp_path, standby=True) as stack:
        crashed_results, answered_results = [], []
        for _ in range(ROUNDS):
            caller = stack.caller(linshi)
            caller.start()
            time.sleep(kill_after_s)
            stack.county.kill()
            crashed_results.append(caller.wait(timeout_s=60)[0])
            caller.close()

            # The primary is dead: this call can only be taken by the standby.
            answered_results.append(stack.place_call(dibao))

            stack.county.start()

        asyncio.run(wait_for_city(tmp_path))
        county_calls, county_events, pending, county_check = asyncio.run(_read(tmp_path / "county.sqlite3", COUNTY))
        _, city_events, _, city_check = asyncio.run(_read(tmp_path / "city.sqlite3", CITY))
        standby_log = stack.standby.log_path.read_text(encoding="utf-8")
        assert stack.standby.running

    for crashed in crashed_results:
        assert crashed.ended_by is EndedBy.REMOTE
        assert crashed.cause == FALLBACK_HANGUP_CAUSE
    for answered in answered_results:
        assert answered.completed

    # Each killed call has the standby's call record, linked to a ticket with a callback request.
    failed = [record for record in county_calls if record.outcome is CallOutcome.FAILED]
    assert len(failed) == ROUNDS
    for record in failed:
        assert record.caller_masked == mask_phone(linshi.caller_number)
        assert record.caller_raw == linshi.caller_number
        assert record.ticket_id is not None
        callbacks = [payload for _, kind, payload in county_events[record.ticket_id] if kind == CALLBACK_EVENT_KIND]
        assert len(callbacks) == 1
        assert callbacks[0]["number"] == linshi.caller_number
        assert f'"call_id": "{record.call_id}"' in standby_log

    # The calls placed while the primary was dead were answered by the standby.
    answered_records = [record for record in county_calls
                        if record.caller_masked == mask_phone(dibao.caller_number)]
    assert len(answered_records) == ROUNDS
    for record in answered_records:
        assert record.outcome is CallOutcome.ANSWERED
        assert record.ticket_id is not None
        # The agent hung up on a served caller: that is no fallback and needs no callback.
        assert CALLBACK_EVENT_KIND not in [kind for _, kind, _ in county_events[record.ticket_id]]
        assert f'"call_id": "{record.call_id}"' in standby_log

    # Per round: the killed call's flow ticket, which the callback request joined (the call
    # was killed after its category opened a ticket), and the answered call's ticket.
    assert len(county_events) == 2 * ROUNDS
    fallback_tickets = [ticket_id for ticket_id, events in county_events.items()
                        if events[0][2].get("opened_because") == "controller_fallback"]
    assert fallback_tickets == []
    assert {record.ticket_id for record in failed} <= set(county_events)

    # The standby took the publisher lock the killed primary held, and published from then on.
    assert "publisher lock taken over" in standby_log

    # Everything committed reached the city once: same tickets, same event sequences.
    assert pending == 0
    assert county_check == "ok"
    assert city_check == "ok"
    assert {t: [seq for seq, _, _ in events] for t, events in city_events.items()} == \
        {t: [seq for seq, _, _ in events] for t, events in county_events.items()}
