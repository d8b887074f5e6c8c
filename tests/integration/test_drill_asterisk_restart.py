"""Fault drill: Asterisk crashes and restarts under a running county node.

Asterisk is killed with SIGKILL, then started again on the same ports with the same
configuration. The county node must log in to AMI again within 5 s of the restart and
re-read the agents' device states: the restarted Asterisk has lost the registrations, so
the agents must show as unavailable rather than stay "available" from before the crash.
Once the phones register again, as real phones do, the next call reaches an agent.
The drill runs once; `make soak` runs it the same way (a single restart is the whole drill).
"""

import asyncio
import json
import os
import signal
import time
from datetime import datetime

import pytest

from hotline.demo import DemoStack, collect_report, standard_calls, wait_for_city
from tickets.call_record import CallOutcome

pytestmark = pytest.mark.integration

AMI_BACK_WITHIN_S = 5.0


def _events(log_path, name):
    """Return the county node's JSON log events called ``name``, in order."""
    found = []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


def _ami_sessions(log_path):
    """Return the UTC times at which the county node's AMI sessions became ready."""
    return [datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
            for event in _events(log_path, "ami_session_ready")]


def test_county_recovers_from_asterisk_crash(tmp_path):
    first_choice = standard_calls()[0]  # 按1 低保, answered by an agent with the dibao skill

    with DemoStack(tmp_path) as stack:
        before = stack.place_call(first_choice)

        os.kill(stack.asterisk.pid, signal.SIGKILL)
        stack.asterisk.stop()
        restarted_at = datetime.now().astimezone()
        stack.asterisk.start()

        deadline = time.monotonic() + 30
        while len(_events(tmp_path / "county.log", "agent states resynced")) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        sessions = _ami_sessions(tmp_path / "county.log")
        states_after_restart = [(e["agent_id"], e["state"]) for e in _events(tmp_path / "county.log", "agent device state")][-2:]

        for phone in stack.agents:
            phone.refresh_registration()
        after = stack.place_call(first_choice)
        asyncio.run(wait_for_city(tmp_path))
        reports = asyncio.run(collect_report(tmp_path, [first_choice, first_choice], [before, after]))

    assert len(sessions) >= 2, "the county node never logged in to AMI again"
    reconnect_s = (sessions[1] - restarted_at).total_seconds()
    assert reconnect_s <= AMI_BACK_WITHIN_S, f"AMI came back after {reconnect_s:.1f} s"
    assert sorted(states_after_restart) == [("agent1", "unavailable"), ("agent2", "unavailable")]

    # Both calls share a caller number, so the report matches each to the latest record.
    # That record is the call after the restart, which must reach an agent and a ticket.
    latest = reports[1].record
    assert latest is not None
    assert latest.outcome is CallOutcome.ANSWERED
    assert latest.agent_id == "agent1"
    assert reports[1].city_ticket is not None
