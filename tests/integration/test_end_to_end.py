"""End to end: SIPp callers → Asterisk 22 → FastAGI controller → tickets at the city tier.

Runs the demo's calls on real Asterisk, SIPp agents and mosquitto, with the county and
city nodes as separate ``hotline run`` processes, then checks what the city stored.
"""

import asyncio
import re
import subprocess

import pytest

from hotline.demo import CITY, COUNTY, DemoStack, collect_report, standard_calls, wait_for_city
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome

pytestmark = pytest.mark.integration

# Caller numbers as the demo presents them; none may appear in clear in any log.
RAW_NUMBER_RE = re.compile(r"(?<![0-9])(?:139000000\d\d|02155501234)(?![0-9])")


async def _city_events(work_dir, ticket_id):
    async with await TicketStore.open(work_dir / "city.sqlite3", CITY["node_id"], CITY["region_code"]) as store:
        return await store.list_events(ticket_id)


async def _county_events(work_dir, ticket_id):
    async with await TicketStore.open(work_dir / "county.sqlite3", COUNTY["node_id"], COUNTY["region_code"]) as store:
        return await store.list_events(ticket_id), await store.count_pending_outbox()


def test_calls_become_tickets_at_city(tmp_path):
    scripts = standard_calls()

    with DemoStack(tmp_path) as stack:
        asterisk_pid = stack.asterisk.pid
        results = [stack.place_call(script) for script in scripts]
        asyncio.run(wait_for_city(tmp_path))
        reports = asyncio.run(collect_report(tmp_path, scripts, results))

    # Every call ended as scripted, and every ticket reached the city with all its events.
    for report in reports:
        assert report.passed, f"{report.script.label}: {report.problems}"

    answered = [r for r in reports if r.record.outcome is CallOutcome.ANSWERED]
    assert len(answered) == 5
    assert {r.record.agent_id for r in answered} == {"agent1", "agent2"}

    invalid_then_valid = reports[2]
    assert invalid_then_valid.record.category.value == "yanglao"
    assert invalid_then_valid.record.agent_id == "agent2"

    for report in answered:
        ticket_id = report.record.ticket_id
        county_events, pending = asyncio.run(_county_events(tmp_path, ticket_id))
        city_events = asyncio.run(_city_events(tmp_path, ticket_id))
        assert pending == 0
        assert [e.seq for e in city_events] == [e.seq for e in county_events]
        assert [e.kind for e in city_events][:1] == ["created"]
        assert "agent_answered" in [e.kind for e in city_events]
        assert report.city_ticket.caller_masked == report.county_ticket.caller_masked

    anonymous = reports[4]
    assert anonymous.record.caller_flags == frozenset({"no_caller_id"})
    assert anonymous.city_ticket.caller_masked == "无号码"

    # The caller who hung up in the menu left a call record and no ticket.
    assert reports[5].record.outcome is CallOutcome.ABANDONED_IN_MENU
    assert reports[5].record.ticket_id is None

    # Nothing left running, and no raw caller number in any log.
    assert subprocess.run(["kill", "-0", str(asterisk_pid)], capture_output=True).returncode != 0
    for log_file in [tmp_path / "county.log", tmp_path / "city.log"]:
        leaked = RAW_NUMBER_RE.findall(log_file.read_text(encoding="utf-8"))
        assert leaked == [], f"{log_file.name} contains caller numbers in clear"
