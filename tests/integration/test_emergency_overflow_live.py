"""End to end: an emergency overflows to the tier above, on Asterisk 22 with SIPp.

Two calls on one county stack:

1. Sending side. A citizen requests sign language and marks the call urgent. The only
   agent with the skill lacks sign language, so after ``after_s`` the county dials the
   tier above over the trunk ``city-trunk``. A SIPp phone plays that trunk and logs the
   INVITE's X-Hotline-* headers: they name the county's ticket for the call, the need tags
   and priority 9. The pool records the decision with rule ``emergency_overflow``.
2. Receiving side. A SIPp UAC plays a lower tier's switch: it authenticates as the trunk
   endpoint ``county-trunk`` (context from-lower-tier) and sends the same headers. The
   controller skips the menu (call-start case ``caller: overflow``), queues the call with
   the need tags at priority 9, an agent answers, and the ticket links the lower tier's
   ticket.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import unquote

import pytest

from hotline.demo import COUNTY, PROMPT_AUDIO_DIR, prompt_seconds
from hotline.privacy import mask_phone
from ivr.overflow import NEEDS_HEADER, PRIORITY_HEADER, TICKET_HEADER, OverflowHandoff
from stack.sipp import (
    Dtmf,
    EndedBy,
    Pause,
    SippCaller,
    build_endpoint_call_scenario,
    place_endpoint_call,
)
from storage.acd_store import AcdStore, acd_path
from storage.ticket_store import TicketStore
from tests.integration.county_stack import Phone, county_stack

pytestmark = pytest.mark.integration

OVERFLOW_AFTER_S = 4
AGENT_TALK_MS = 3000
TRUNK_TALK_MS = 3000
LOWER_TICKET = "330100-20261205-0042"
CALL_TIMEOUT_S = 90

FLOW = f"""\
flow: overflow-e2e
title: 紧急溢出（端到端测试）
start: main_menu

handlers:
  call_start:
    - when: {{caller: overflow}}
      next: to_agent

nodes:
  main_menu:
    type: menu
    prompt: main_menu
    timeout_ms: 8000
    on_exhausted: bye
    choices:
      "1": {{category: dibao, skill: dibao, next: to_agent}}
      "2": {{category: dibao, skill: dibao, next: urgent_sign}}

  urgent_sign:
    type: set
    needs: [手语, 紧急]
    priority: 9
    next: to_agent

  to_agent:
    type: queue
    prompt: transfer_agent
    wait_prompt: queue_wait
    skill: dibao
    max_wait_s: 60
    announce_every_s: 30
    ring_timeout_s: 10
    next: bye
    on_no_agent: bye
    emergency_overflow:
      after_s: {OVERFLOW_AFTER_S}
      via: trunk
      prompt: overflow_transfer
      trunk: city-trunk
      number: "12349"
      callback_prompt: overflow_callback
      next: bye

  bye:
    type: hangup
    prompt: goodbye
"""


async def _records(database: Path):
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as store:
        calls = {record.caller_masked: record for record in await store.list_calls()}
        events = {masked: await store.list_events(record.ticket_id) if record.ticket_id else []
                  for masked, record in calls.items()}
    return calls, events


async def _decisions(database: Path, call_id: str):
    async with await AcdStore.open(acd_path(database)) as store:
        return await store.decisions_for(call_id)


def _wait_for(predicate, timeout_s: float, description: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {description}"
        time.sleep(0.2)


def test_emergency_overflow_carries_ticket_and_needs(tmp_path):
    assert (PROMPT_AUDIO_DIR / "welcome.wav").exists(), "run `make prompts` first"
    phones = [Phone("agent1", ("dibao",), talk_ms=AGENT_TALK_MS),
              Phone("city-trunk", talk_ms=TRUNK_TALK_MS, log_headers=(TICKET_HEADER, NEEDS_HEADER, PRIORITY_HEADER)),
              Phone("county-trunk", context="from-lower-tier")]
    urgent_caller, lower_caller = "13900000051", "13900000052"

    with county_stack(tmp_path, FLOW, phones) as stack:
        # Call 1: sign language and urgent; agent1 has no sign language, so the call overflows.
        key_ms = int((prompt_seconds("main_menu") + 1.0) * 1000)
        caller = SippCaller(target_port=stack.asterisk.sip_port, caller_number=urgent_caller,
                            steps=(Pause(key_ms), Dtmf("2")), wait_bye_timeout_ms=CALL_TIMEOUT_S * 1000,
                            work_dir=tmp_path / "caller-urgent", keep_files=True)
        try:
            caller.start()
            urgent = caller.wait(timeout_s=CALL_TIMEOUT_S)[0]
        finally:
            caller.close()
        sent = stack.phones["city-trunk"].received_headers()

        # Call 2: the same headers arrive from a lower tier's switch.
        handoff = OverflowHandoff(LOWER_TICKET, frozenset({"需语速放缓", "紧急"}), 9)
        ticket, needs, priority = handoff.header_values()
        # The lower tier's switch asserts the citizen's number; its From names the trunk.
        scenario = build_endpoint_call_scenario(endpoint_id="county-trunk", target="12349", extra_headers=(
            f"P-Asserted-Identity: <sip:{lower_caller}@[local_ip]>", f"{TICKET_HEADER}: {ticket}",
            f"{NEEDS_HEADER}: {needs}", f"{PRIORITY_HEADER}: {priority}"))
        lower_log = place_endpoint_call(sip_port=stack.asterisk.sip_port, username="county-trunk",
                                        password=stack.passwords["county-trunk"], scenario=scenario,
                                        work_dir=tmp_path / "lower-tier", timeout_s=CALL_TIMEOUT_S)
        _wait_for(lambda: len(asyncio.run(_records(stack.database))[0]) >= 2, 20, "both call records")
        agent_answered = stack.phones["agent1"].answered_calls
        log_tail = stack.county.log_tail(40)

    calls, events = asyncio.run(_records(stack.database))
    first, second = calls.get(mask_phone(urgent_caller)), calls.get(mask_phone(lower_caller))
    assert first is not None and second is not None, (sorted(calls), log_tail)

    # Sending side: the trunk answered and saw the ticket, the needs and the priority.
    assert urgent.ended_by is EndedBy.REMOTE, log_tail
    assert first.path == ("main_menu", "urgent_sign", "to_agent", "bye"), log_tail
    assert first.ticket_id is not None
    assert len(sent) == 1, (sent, log_tail)
    assert sent[0][TICKET_HEADER] == first.ticket_id
    assert set(unquote(sent[0][NEEDS_HEADER]).split("+")) == {"手语", "紧急"}
    assert sent[0][PRIORITY_HEADER] == "9"
    overflow_events = [event for event in events[first.caller_masked] if event.kind == "emergency_overflow"]
    assert len(overflow_events) == 1, [event.kind for event in events[first.caller_masked]]
    assert overflow_events[0].payload["via"] == "trunk"
    assert overflow_events[0].payload["waited_seconds"] >= OVERFLOW_AFTER_S - 0.5
    decisions = asyncio.run(_decisions(stack.database, first.call_id))
    assert decisions[-1].rule == "emergency_overflow", [d.rule for d in decisions]
    assert any("手语" in exclusion.reason for exclusion in decisions[-1].exclusions)

    # Receiving side: no menu, the needs and priority applied, the lower ticket linked.
    assert "ANSWERED" in lower_log
    assert "ENDED" in lower_log
    assert second.path[0] == "to_agent", second.path
    assert "main_menu" not in second.path
    assert second.agent_id == "agent1"
    assert agent_answered == 1
    created = events[second.caller_masked][0]
    assert created.kind == "created"
    assert created.payload["lower_tier_ticket_id"] == LOWER_TICKET
    arrival_decisions = asyncio.run(_decisions(stack.database, second.call_id))
    assert arrival_decisions[0].priority == 9
    assert set(arrival_decisions[0].needs) == {"需语速放缓", "紧急"}
