"""End to end: agent states on Asterisk 22 with four registered SIPp agent phones.

Each test starts its own county ``hotline run`` process on its own Asterisk
(tests/integration/county_stack.py) with four agent phones that register over SIP. It
places SIPp calls and reads what the county stored: the agent events (table
``agent_event`` of the ACD store), the routing decisions, the published status that
``hotline status`` shows, and the call records and tickets.

- Wrap-up: after agent1's call ends, the next waiting call, which only agent1 can take,
  rings agent1 no earlier than ``WRAP_UP_S`` later. The stored events run on_call ->
  wrap_up -> available with at least ``WRAP_UP_S`` between and no reservation in between.
- Ring-no-answer: a phone that rings past the queue's ring timeout is paused with reason
  ``no_answer``, and the same call then reaches another agent, who answers.
- Callback keeping the place: with all four agents busy, a caller presses the callback
  key and is hung up on. When the first agent is free again, the kept place is served
  before a caller who queued later: the agent is rung through AMI Originate, then the
  citizen through the trunk ``carrier`` (a SIPp UAS).
- Callback place after a controller crash: one agent is busy, a caller chooses the
  callback, and the controller is killed with SIGKILL and started again. The place, stored
  at the node, is restored, and the caller is called back when the agent is free.
- Asterisk restart: with one agent on a call and one paused, Asterisk is killed with
  SIGKILL and started again. After the AMI reconnect the pool re-reads the device states
  (every phone unavailable until it registers again). The dropped call's agent is free
  again, the paused agent keeps its pause reason, and once the phones have registered a
  new call is answered. One restart by default; with HOTLINE_SOAK=1 three restarts in a
  row, each killing Asterisk while the previous restart's new call is up.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from acd.decisions import AgentEvent, RoutingDecision
from acd.status import AcdStatus
from hotline.demo import COUNTY, PROMPT_AUDIO_DIR, REPO_ROOT, prompt_seconds
from hotline.privacy import mask_phone
from hwd_bridge.ami_client import AmiClient
from hwd_bridge.ami_protocol import AmiMessage
from stack import net
from stack.sipp import CallerResult, Dtmf, EndedBy, Pause, SippCaller
from storage.acd_store import AcdStore, acd_path
from storage.ticket_store import TicketStore
from tests.integration.county_stack import CountyStack, Phone, county_stack

pytestmark = pytest.mark.integration

SOAK = os.environ.get("HOTLINE_SOAK") == "1"
RESTARTS = 3 if SOAK else 1

WRAP_UP_S = 8
# How much later than the switch's own order an AMI event may reach the test process.
AMI_DELIVERY_SLACK_S = 0.5
# The shortest ring timeout a queue node accepts.
RING_TIMEOUT_S = 5
# The queue's entry prompt, plus the switch's and the controller's time around it.
ENTRY_S = prompt_seconds("transfer_agent") + 0.2
# Wall-clock stamps of two events of one process may differ from the monotonic timer
# that separated them by this much.
CLOCK_SLACK_S = 0.05


def _flow(*, ring_timeout_s: int = 10, callback: bool = False) -> str:
    """Return a flow that queues every caller for skill ``general`` and hangs up after the agent.

    With ``callback`` the queue announces the caller's place with the callback offer (key 2).
    """
    offer = ("    announce_position: true\n"
             '    callback: {key: "2", prompt: queue_callback_offer, done_prompt: queue_callback_done, next: done}\n'
             if callback else "")
    return f"""\
flow: "acd-states-live"
title: 坐席状态（端到端测试）
start: queue
settings:
  fallback_prompt: prompt_fallback
nodes:
  queue:
    type: queue
    skill: general
    prompt: transfer_agent
    wait_prompt: queue_wait
    max_wait_s: 150
    announce_every_s: 120
    ring_timeout_s: {ring_timeout_s}
{offer}    next: done
    on_no_agent: no_agent
  done:
    type: hangup
  no_agent:
    type: hangup
    prompt: no_agent
"""


def _caller(stack: CountyStack, tmp_path: Path, name: str, number: str, **options) -> SippCaller:
    options.setdefault("wait_bye_timeout_ms", 150_000)
    return SippCaller(target_port=stack.asterisk.sip_port, caller_number=number, work_dir=tmp_path / f"caller-{name}",
                      keep_files=True, **options)


async def _read_acd(database: Path, agent_ids: list[str], call_ids: list[str] = (),
                    ) -> tuple[dict[str, list[AgentEvent]], dict[str, list[RoutingDecision]], AcdStatus | None]:
    """Return the stored events per agent, the decisions per call and the last published status."""
    async with await AcdStore.open(acd_path(database)) as store:
        events = {agent_id: await store.events_for(agent_id, limit=1000) for agent_id in agent_ids}
        decisions = {call_id: await store.decisions_for(call_id) for call_id in call_ids}
        status = await store.read_status()
    return events, decisions, status


def _status(database: Path) -> AcdStatus | None:
    return asyncio.run(_read_acd(database, []))[2]


def _agent_events(database: Path, *agent_ids: str) -> dict[str, list[AgentEvent]]:
    return asyncio.run(_read_acd(database, list(agent_ids)))[0]


async def _read_calls(database: Path):
    """Return the call records by masked caller number and the events of each call's ticket."""
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as store:
        calls = {record.caller_masked: record for record in await store.list_calls()}
        tickets = {masked: await store.list_events(record.ticket_id) if record.ticket_id else []
                   for masked, record in calls.items()}
    return calls, tickets


def _hotline(*arguments: str) -> subprocess.CompletedProcess[str]:
    """Run the ``hotline`` CLI as an operator would, with its output captured."""
    return subprocess.run([sys.executable, "-m", "hotline", *arguments], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=60, check=False)


def _state_row(status_output: str, label: str) -> str:
    """Return the row of the agent table of ``hotline status`` that starts with the state ``label``."""
    rows = [line.strip() for line in status_output.splitlines() if line.strip().startswith(label)]
    assert len(rows) == 1, status_output
    return rows[0]


def _transitions(events: list[AgentEvent]) -> list[tuple[str, str]]:
    return [(event.previous, event.state) for event in events]


def _agent_channel(event: AmiMessage, endpoint: str, header: str) -> bool:
    return (event.get(header) or "").startswith(f"PJSIP/{endpoint}-")


# --- wrap-up ------------------------------------------------------------------------------

WRAP_CALLERS = {"first": "13900000081", "second": "13900000082"}
WRAP_TALK_MS = 4000


async def _wrap_up_calls(stack: CountyStack, tmp_path: Path) -> tuple[dict[str, CallerResult],
                                                                     list[tuple[float, AmiMessage]]]:
    """Call agent1 twice: the second caller starts once agent1 has answered the first.

    The second caller reaches the queue about ``ENTRY_S - WRAP_TALK_MS`` seconds into
    agent1's wrap-up. The switch's dial and hangup events are kept with their arrival times.
    """
    events: list[tuple[float, AmiMessage]] = []
    ami = AmiClient("127.0.0.1", stack.asterisk.ami.port, stack.asterisk.ami.username, stack.asterisk.ami.secret)
    ami.subscribe(lambda event: events.append((time.monotonic(), event)), event_names=["DialBegin", "Hangup"])
    await ami.start()
    callers = {name: _caller(stack, tmp_path, name, number) for name, number in WRAP_CALLERS.items()}
    try:
        callers["first"].start()
        answered = await asyncio.to_thread(stack.phones["agent1"].wait_answered, 1, 30)
        assert answered, stack.county.log_tail(30)
        callers["second"].start()
        results = {name: (await asyncio.to_thread(caller.wait, 90))[0] for name, caller in callers.items()}
        # Let the last events arrive.
        await asyncio.sleep(1.0)
    finally:
        await ami.stop()
        for caller in callers.values():
            caller.close()
    return results, events


def test_wrap_up_holds_next_call(tmp_path):
    """The next call waits out agent1's wrap-up although three other agents are free."""
    assert (PROMPT_AUDIO_DIR / "transfer_agent.wav").exists(), "run `make prompts` first"
    phones = [Phone("agent1", ("general",), talk_ms=WRAP_TALK_MS),
              *(Phone(f"agent{n}", ("dibao",), talk_ms=WRAP_TALK_MS) for n in (2, 3, 4))]

    with county_stack(tmp_path, _flow(), phones, acd_settings=f"wrap_up_s: {WRAP_UP_S}\n") as stack:
        results, ami_events = asyncio.run(_wrap_up_calls(stack, tmp_path))
        answered = {endpoint: phone.answered_calls for endpoint, phone in stack.phones.items()}
        log_tail = stack.county.log_tail(40)

    calls, _ = asyncio.run(_read_calls(stack.database))
    first = calls[mask_phone(WRAP_CALLERS["first"])]
    second = calls[mask_phone(WRAP_CALLERS["second"])]
    events, decisions, _ = asyncio.run(_read_acd(stack.database, ["agent1"], [second.call_id]))
    agent1 = events["agent1"]
    summary = "\n".join(f"{e.at.time()} {e.previous}->{e.state} {e.reason} {e.call_id}" for e in agent1)

    # Both calls reached agent1, who hung up on each. The agents without the skill never rang.
    assert results["first"].ended_by is EndedBy.REMOTE, log_tail
    assert results["second"].ended_by is EndedBy.REMOTE, log_tail
    assert first.agent_id == "agent1"
    assert second.agent_id == "agent1"
    assert answered == {"agent1": 2, "agent2": 0, "agent3": 0, "agent4": 0}

    # agent1's stored events: on_call -> wrap_up -> available for the first call, then the
    # second call's reservation. Nothing reserved agent1 during the wrap-up.
    wrap_index = next(i for i, e in enumerate(agent1) if e.state == "wrap_up" and e.call_id == first.call_id)
    wrap_start, wrap_end, next_reserved = agent1[wrap_index:wrap_index + 3]
    assert wrap_start.previous == "on_call", summary
    assert (wrap_end.previous, wrap_end.state, wrap_end.reason) == ("wrap_up", "available", "wrap_up_done"), summary
    assert (next_reserved.state, next_reserved.call_id) == ("reserved", second.call_id), summary
    wrapped_s = (wrap_end.at - wrap_start.at).total_seconds()
    assert wrapped_s >= WRAP_UP_S - CLOCK_SLACK_S, summary
    assert wrapped_s < WRAP_UP_S + 1.0, summary
    # The second call was waiting, so it took agent1 at the end of the wrap-up.
    assert next_reserved.at - wrap_end.at < timedelta(seconds=1.0), summary

    # On arrival the second call found agent1 in wrap-up and the others without the skill.
    arrival = decisions[second.call_id][0]
    assert arrival.rule == "no_eligible_agent"
    reasons = {exclusion.agent_id: exclusion.reason for exclusion in arrival.exclusions}
    assert reasons["agent1"].startswith("话后整理中"), reasons
    assert all(reasons[f"agent{n}"] == "不具备技能 general" for n in (2, 3, 4)), reasons
    assert [d.chosen_agent for d in decisions[second.call_id][1:]] == ["agent1"]

    # On the switch: agent1's second ring began at least WRAP_UP_S after its first call hung up.
    hangups = [at for at, event in ami_events
               if event.get("Event") == "Hangup" and _agent_channel(event, "agent1", "Channel")]
    dials = [at for at, event in ami_events
             if event.get("Event") == "DialBegin" and _agent_channel(event, "agent1", "DestChannel")]
    assert len(dials) == 2, ami_events
    assert len(hangups) == 2, ami_events
    gap_s = dials[1] - hangups[0]
    # These are the times this process received the AMI events. Under load the Hangup can
    # arrive a little after the controller started the wrap-up; the stored events above
    # measure the wrap-up itself.
    assert gap_s >= WRAP_UP_S - AMI_DELIVERY_SLACK_S, f"agent1 rang again {gap_s:.2f} s after its call ended"
    assert gap_s < WRAP_UP_S + 3.0, f"agent1 rang again {gap_s:.1f} s after its call ended"


# --- ring-no-answer -----------------------------------------------------------------------

NO_ANSWER_CALLER = "13900000083"


def test_ring_no_answer_pauses_agent(tmp_path):
    """agent1 never answers: it is paused and agent2 takes the call.

    agent1 registers first, so it has been idle longest and is offered the call first.
    """
    phones = [Phone("agent1", ("general",), talk_ms=3000, ring_ms=(RING_TIMEOUT_S + 30) * 1000),
              Phone("agent2", ("general",), talk_ms=3000),
              *(Phone(f"agent{n}", ("dibao",), talk_ms=3000) for n in (3, 4))]

    with county_stack(tmp_path, _flow(ring_timeout_s=RING_TIMEOUT_S), phones) as stack:
        caller = _caller(stack, tmp_path, "caller", NO_ANSWER_CALLER)
        try:
            caller.start()
            result = caller.wait(90)[0]
        finally:
            caller.close()
        answered = {endpoint: phone.answered_calls for endpoint, phone in stack.phones.items()}
        agent1_log = (Path(stack.phones["agent1"].work_dir) / "agent_logs.log").read_text(encoding="iso-8859-1")
        # The status is published every second.
        time.sleep(1.5)
        status_output = _hotline("status", "--once", "--config", str(stack.config))
        log_tail = stack.county.log_tail(40)

    calls, _ = asyncio.run(_read_calls(stack.database))
    record = calls[mask_phone(NO_ANSWER_CALLER)]
    events, decisions, status = asyncio.run(_read_acd(stack.database, ["agent1", "agent2"], [record.call_id]))

    # The call rang agent1 for the ring timeout, then reached agent2, who answered.
    assert result.ended_by is EndedBy.REMOTE, log_tail
    assert record.outcome.value == "answered", log_tail
    assert record.agent_id == "agent2"
    assert answered == {"agent1": 0, "agent2": 1, "agent3": 0, "agent4": 0}
    assert "CANCELLED " in agent1_log
    assert [d.chosen_agent for d in decisions[record.call_id]] == ["agent1", "agent2"]

    # agent1: reserved, ringing, then paused by the pool with reason no_answer, and still paused.
    agent1 = [e for e in events["agent1"] if e.call_id == record.call_id]
    assert _transitions(agent1) == [("available", "reserved"), ("reserved", "ringing"), ("ringing", "paused")]
    assert agent1[-1].pause_reason == "no_answer"
    assert events["agent1"][-1] == agent1[-1]
    assert _transitions([e for e in events["agent2"] if e.call_id == record.call_id])[-2:] == [
        ("ringing", "on_call"), ("on_call", "wrap_up")]

    # The supervisor's view names the pause reason.
    assert status is not None
    agent1_status = next(agent for agent in status.agents if agent.agent_id == "agent1")
    assert (agent1_status.state.value, agent1_status.pause_reason) == ("paused", "no_answer")
    assert status_output.returncode == 0, status_output.stderr
    assert "agent1（未接听）" in _state_row(status_output.stdout, "暂停")


# --- callback keeping the place -----------------------------------------------------------

BUSY_CALLERS = {f"busy{n}": f"139000000{90 + n}" for n in (1, 2, 3, 4)}
KEEPER = "13900000095"
LATER = "13900000096"
# Long enough that the agents are still busy when the keeper's flow has played the
# confirmation and hung up (see ``test_callback_keeps_place``).
BUSY_TALK_MS = 32_000
CARRIER_TALK_MS = 3000


async def _callback_calls(stack: CountyStack, tmp_path: Path) -> tuple[dict[str, CallerResult],
                                                                       list[AmiMessage]]:
    """Occupy the four agents, then queue the keeper (who presses 2) and a later caller."""
    events: list[AmiMessage] = []
    ami = AmiClient("127.0.0.1", stack.asterisk.ami.port, stack.asterisk.ami.username, stack.asterisk.ami.secret)
    ami.subscribe(events.append, event_names=["DialBegin", "DialEnd"])
    await ami.start()
    # The keeper presses 2 while the place announcement plays; the key interrupts it.
    callers = {name: _caller(stack, tmp_path, name, number) for name, number in BUSY_CALLERS.items()}
    callers["keeper"] = _caller(stack, tmp_path, "keeper", KEEPER,
                                steps=(Pause(int((ENTRY_S + 3.0) * 1000)), Dtmf("2")))
    callers["later"] = _caller(stack, tmp_path, "later", LATER)
    try:
        for name in BUSY_CALLERS:
            callers[name].start()
        answered = await asyncio.to_thread(
            lambda: all(stack.phones[f"agent{n}"].wait_answered(1, 40) for n in (1, 2, 3, 4)))
        assert answered, stack.county.log_tail(30)
        callers["keeper"].start()
        await asyncio.sleep(2.0)
        callers["later"].start()
        results = {name: (await asyncio.to_thread(caller.wait, 150))[0] for name, caller in callers.items()}

        # The citizen's trunk answers the callback once an agent is free.
        carrier = stack.phones["carrier"]
        assert await asyncio.to_thread(carrier.wait_answered, 1, 60), carrier.diagnosis()
        # The result is written once the citizen's leg has hung up.
        await asyncio.sleep(CARRIER_TALK_MS / 1000 + 2.0)
    finally:
        await ami.stop()
        for caller in callers.values():
            caller.close()
    return results, events


def test_callback_keeps_place(tmp_path):
    """The keeper hangs up and is called back before a caller who queued after them."""
    phones = [*(Phone(f"agent{n}", ("general",), talk_ms=BUSY_TALK_MS) for n in (1, 2, 3, 4)),
              Phone("carrier", talk_ms=CARRIER_TALK_MS)]

    with county_stack(tmp_path, _flow(callback=True), phones) as stack:
        # Callbacks go out through the trunk named in the node's configuration.
        stack.county.stop()
        with stack.config.open("a", encoding="utf-8") as config:
            config.write("  callback_trunk: carrier\n")
        stack.county.start()

        results, ami_events = asyncio.run(_callback_calls(stack, tmp_path))
        log_tail = stack.county.log_tail(40)

    calls, tickets = asyncio.run(_read_calls(stack.database))
    keeper = calls[mask_phone(KEEPER)]
    later = calls[mask_phone(LATER)]
    kept_id = f"{keeper.call_id}-callback"
    agent_ids = [f"agent{n}" for n in (1, 2, 3, 4)]
    events, decisions, _ = asyncio.run(_read_acd(stack.database, agent_ids, [kept_id, later.call_id]))
    all_events = sorted((e for agent in agent_ids for e in events[agent]), key=lambda e: e.at)

    # The keeper chose the callback and was hung up on. The later caller reached an agent.
    assert results["keeper"].ended_by is EndedBy.REMOTE, log_tail
    assert keeper.outcome.value == "no_agent", log_tail
    assert later.outcome.value == "answered", log_tail
    assert all(calls[mask_phone(number)].outcome.value == "answered" for number in BUSY_CALLERS.values())
    kinds = [event.kind for event in tickets[mask_phone(KEEPER)]]
    assert "callback_requested" in kinds, kinds

    # The kept place took the first agent free again, before the later caller.
    reserved = [e for e in all_events if e.state == "reserved" and e.call_id in (kept_id, later.call_id)]
    assert [e.call_id for e in reserved] == [kept_id, later.call_id], reserved
    first_free = min(e.at for e in all_events if e.reason == "wrap_up_done")
    assert reserved[0].at >= first_free
    # The kept place found every agent busy when it started waiting, and when an agent was
    # free it led the waiting board, ahead of the later caller.
    assert [(d.rule, d.chosen_agent) for d in decisions[kept_id]][0] == ("no_eligible_agent", None)
    chosen = [d for d in decisions[kept_id] if d.chosen_agent is not None]
    assert [d.chosen_agent for d in chosen] == [reserved[0].agent_id]
    assert [entry.call_id for entry in chosen[0].waiting] == [kept_id, later.call_id]

    # The callback rang that agent first. The agent's channel then dialled the citizen on the trunk.
    callback_agent = reserved[0].agent_id
    dials = [(event.get("Channel") or "", event.get("DialString")) for event in ami_events
             if event.get("Event") == "DialBegin" and event.get("DialString") in (callback_agent, f"{KEEPER}@carrier")]
    assert [dial_string for _, dial_string in dials][-2:] == [callback_agent, f"{KEEPER}@carrier"], dials
    assert dials[-1][0].startswith(f"PJSIP/{callback_agent}-")
    callback_events = [e for e in events[callback_agent] if e.call_id == kept_id]
    assert ("reserved", "ringing") in _transitions(callback_events) or ("reserved", "on_call") in _transitions(
        callback_events), callback_events
    # The wrap-up starts when the conversation with the citizen ends (the carrier's phone
    # hangs up after CARRIER_TALK_MS), not when the citizen answers.
    assert _transitions(callback_events)[-1] == ("on_call", "wrap_up")
    on_call_at = next(e.at for e in callback_events if e.state == "on_call")
    wrap_at = callback_events[-1].at
    assert (wrap_at - on_call_at).total_seconds() >= CARRIER_TALK_MS / 1000 - 0.5, callback_events

    # The ticket has the callback's result.
    outcome = next(event for event in tickets[mask_phone(KEEPER)] if event.kind == "queue_callback")
    assert outcome.payload["result"] == "connected"
    assert outcome.payload["agent_id"] == callback_agent
    assert outcome.payload["number_masked"] == mask_phone(KEEPER)


RESTART_BUSY_CALLER = "13900000097"
RESTART_KEEPER = "13900000098"
# The busy call outlasts the keeper's flow (entry prompt, 3 s, key, confirmation) and the
# controller's restart, so the kept place is still waiting when the controller is back.
RESTART_BUSY_TALK_MS = 40_000


async def _read_kept(database: Path) -> list[str]:
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as store:
        return [kept.call_id for kept in await store.list_kept_callbacks()]


def test_callback_place_survives_controller_kill(tmp_path):
    """The keeper's place, stored at the node, is called back by the controller started after a kill -9."""
    phones = [Phone("agent1", ("general",), talk_ms=RESTART_BUSY_TALK_MS), Phone("carrier", talk_ms=CARRIER_TALK_MS)]

    with county_stack(tmp_path, _flow(callback=True), phones, extra_config="  callback_trunk: carrier\n") as stack:
        busy = _caller(stack, tmp_path, "busy", RESTART_BUSY_CALLER)
        keeper = _caller(stack, tmp_path, "keeper", RESTART_KEEPER,
                         steps=(Pause(int((ENTRY_S + 3.0) * 1000)), Dtmf("2")))
        try:
            busy.start()
            assert stack.phones["agent1"].wait_answered(1, 40), stack.county.log_tail(30)
            keeper.start()
            keeper_result = keeper.wait(60)[0]
            kept_before = asyncio.run(_read_kept(stack.database))

            # The crash: the controller dies with the place kept only in the database.
            stack.county.kill()
            stack.county.start()

            carrier = stack.phones["carrier"]
            assert carrier.wait_answered(1, RESTART_BUSY_TALK_MS / 1000 + 40), (carrier.diagnosis(),
                                                                               stack.county.log_tail(40))
            # The outcome is written once the citizen's leg has hung up.
            net.wait_until(lambda: not asyncio.run(_read_kept(stack.database)), timeout_s=30, interval_s=0.5)
            time.sleep(CARRIER_TALK_MS / 1000 + 2.0)
            log_text = stack.county.log_path.read_text(encoding="utf-8")
        finally:
            busy.close()
            keeper.close()

    calls, tickets = asyncio.run(_read_calls(stack.database))
    keeper_call = calls[mask_phone(RESTART_KEEPER)]

    # Before the kill the place was stored under the keeper's call id.
    assert keeper_result.ended_by is EndedBy.REMOTE
    assert keeper_call.outcome.value == "no_agent"
    assert kept_before == [keeper_call.call_id]

    # The new controller restored the place and called the keeper back; the row is gone.
    assert '"event": "queue callback place restored"' in log_text
    assert asyncio.run(_read_kept(stack.database)) == []
    outcome = next(event for event in tickets[mask_phone(RESTART_KEEPER)] if event.kind == "queue_callback")
    assert outcome.payload["result"] == "connected"
    assert outcome.payload["agent_id"] == "agent1"
    assert outcome.payload["call_id"] == keeper_call.call_id


# --- Asterisk restart ---------------------------------------------------------------------

RESTART_CALLERS = [f"139000000{n}" for n in range(61, 61 + RESTARTS + 1)]
RESYNC_WITHIN_S = 30.0
RESERVATION_TTL_S = 10
RESTART_WRAP_UP_S = 2
AGENT_STAYS_MS = 600_000
TALK_BEFORE_CRASH_S = 2.0
# The last caller hangs up this long after the switch answers: after the entry prompt and
# a few seconds with the agent.
LAST_CALL_MS = int((ENTRY_S + 8.0) * 1000)


def _resyncs(stack: CountyStack) -> int:
    return stack.county.log_path.read_text(encoding="utf-8").count('"event": "agent states resynced"')


def _wait_status(database: Path, predicate, timeout_s: float) -> AcdStatus | None:
    """Poll the published status until ``predicate`` holds, and return the last status read."""
    last: list[AcdStatus | None] = [None]

    def check() -> bool:
        last[0] = _status(database)
        return last[0] is not None and predicate(last[0])

    net.wait_until(check, timeout_s=timeout_s, interval_s=0.5)
    return last[0]


def _states(status: AcdStatus | None) -> dict[str, tuple[str, str | None, str]]:
    """Return each agent's (state, pause reason, device) as published."""
    assert status is not None
    return {agent.agent_id: (agent.state.value, agent.pause_reason, agent.device.value) for agent in status.agents}


def _on_call(status: AcdStatus) -> list[str]:
    return [agent.agent_id for agent in status.agents if agent.state.value == "on_call"]


def test_asterisk_restart_reconciles_agents(tmp_path):
    """After each restart the dropped call's agent is free, the paused agent stays paused, a new call is answered."""
    # The agents stay on each call until the caller hangs up or the switch dies.
    phones = [Phone(f"agent{n}", ("general",), talk_ms=AGENT_STAYS_MS) for n in (1, 2, 3, 4)]
    settings = f"wrap_up_s: {RESTART_WRAP_UP_S}\nreservation_ttl_s: {RESERVATION_TTL_S}\n"

    with county_stack(tmp_path, _flow(), phones, acd_settings=settings) as stack:
        paused = _hotline("acd", "pause", "agent2", "--reason", "meal", "--config", str(stack.config))
        assert paused.returncode == 0, paused.stdout + paused.stderr

        callers: list[SippCaller] = []
        try:
            callers.append(_caller(stack, tmp_path, "call0", RESTART_CALLERS[0]))
            callers[-1].start()
            status = _wait_status(stack.database, lambda s: len(_on_call(s)) == 1, 30)
            # Asterisk dies a little way into the conversation.
            time.sleep(TALK_BEFORE_CRASH_S)
            for cycle in range(1, RESTARTS + 1):
                _restart_and_check(stack, tmp_path, cycle, status, callers)
                status = _status(stack.database)
            last = callers[-1].wait(60)[0]
        finally:
            for caller in callers:
                caller.close()
        log_tail = stack.county.log_tail(40)

    # The last call, placed after the last restart, ran to the caller's hangup with an agent.
    calls, _ = asyncio.run(_read_calls(stack.database))
    record = calls[mask_phone(RESTART_CALLERS[-1])]
    assert last.ended_by is EndedBy.CALLER, log_tail
    assert record.outcome.value == "answered", log_tail
    assert record.agent_id in ("agent1", "agent3", "agent4")
    # agent2 was paused once, by the operator, and never left the pause.
    agent2 = _agent_events(stack.database, "agent2")["agent2"]
    assert [(e.state, e.pause_reason) for e in agent2] == [("paused", "meal")]


def _restart_and_check(stack: CountyStack, tmp_path: Path, cycle: int, before: AcdStatus | None,
                       callers: list[SippCaller]) -> None:
    """Kill Asterisk under a call, start it again and check how the pool reconciles."""
    states = _states(before)
    on_call = _on_call(before)
    assert len(on_call) == 1, states
    dropped_agent = on_call[0]
    assert before is not None
    dropped_call = next(agent.call_id for agent in before.agents if agent.agent_id == dropped_agent)
    assert states["agent2"] == ("paused", "meal", "not_in_use"), states
    resyncs = _resyncs(stack)

    os.kill(stack.asterisk.pid, signal.SIGKILL)
    stack.asterisk.stop()
    stack.asterisk.start()

    # The county logs in to AMI again and re-reads the devices: no phone is registered yet.
    assert net.wait_until(lambda: _resyncs(stack) > resyncs, timeout_s=RESYNC_WITHIN_S), stack.county.log_tail(30)
    unregistered = _wait_status(stack.database, lambda s: all(a.device.value == "unavailable" for a in s.agents), 5)
    assert {agent: device for agent, (_, _, device) in _states(unregistered).items()} == dict.fromkeys(
        ("agent1", "agent2", "agent3", "agent4"), "unavailable"), cycle

    # The phones register again, as real phones do after losing their registrar.
    for phone in stack.phones.values():
        phone.refresh_registration()
    limit_s = RESTART_WRAP_UP_S + RESERVATION_TTL_S + 5
    settled = _wait_status(stack.database, lambda s: all(
        a.device.value == "not_in_use" and a.state.value in ("available", "paused") for a in s.agents), limit_s)
    states = _states(settled)
    assert states[dropped_agent] == ("available", None, "not_in_use"), (cycle, states)
    assert states["agent2"] == ("paused", "meal", "not_in_use"), (cycle, states)

    # The dropped call's agent left the call, and its stored events record how.
    events = _agent_events(stack.database, dropped_agent)[dropped_agent]
    left = [e for e in events if e.call_id == dropped_call and e.previous == "on_call"]
    assert len(left) == 1, events[-6:]
    # A conversation the switch cut off gets its wrap-up when the flow releases it. The
    # reservation timer may free the agent first, and then no wrap-up follows.
    assert left[0].state in ("wrap_up", "available"), left

    status_output = _hotline("status", "--once", "--config", str(stack.config))
    assert status_output.returncode == 0, status_output.stderr
    assert "agent2（用餐）" in _state_row(status_output.stdout, "暂停"), status_output.stdout
    assert dropped_agent in _state_row(status_output.stdout, "空闲"), status_output.stdout

    # A new call after the restart reaches an agent who answers it. The last one hangs up by itself.
    number = RESTART_CALLERS[cycle]
    options = {"hangup_after_ms": LAST_CALL_MS} if cycle == RESTARTS else {}
    callers.append(_caller(stack, tmp_path, f"call{cycle}", number, **options))
    callers[-1].start()
    connected = _wait_status(stack.database, lambda s: len(_on_call(s)) == 1, 30)
    assert connected is not None and len(_on_call(connected)) == 1, (cycle, _states(connected))
    assert _on_call(connected)[0] != "agent2"
    time.sleep(TALK_BEFORE_CRASH_S)
