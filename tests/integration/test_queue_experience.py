"""End to end: what a queued caller hears and can do, on Asterisk 22 with SIPp callers and agent.

One agent serves the queue; four callers arrive two seconds apart:

- A finds the agent free and talks to them for ``AGENT_TALK_MS``.
- B queues behind A's call: the place and wait announcement, then music on hold, which
  stops before B is dialled to the agent once A's call and the wrap-up end.
- C queues behind B (one caller ahead), presses 2 during the music, hears the callback
  confirmation and is hung up on; the ticket gets a callback request that keeps the place.
- D hangs up while queued; the abandoned call becomes a callback task on a ticket.

The switch's AMI events (MusicOnHoldStart, MusicOnHoldStop, DialBegin) show the music
on the callers' channels, and the ticket store shows the events the node wrote.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acd.pool import AgentPool, AgentProfile, DeviceState
from hotline.config import load_node_config
from hotline.demo import COUNTY, PROMPT_AUDIO_DIR, REPO_ROOT, _NodeProcess, prompt_seconds
from hotline.hold_music import write_hold_tone
from hotline.nodes import CountyNode
from hotline.privacy import mask_phone, mask_text
from hotline.queue_callbacks import AmiCallbackOriginator, CallbackResult, CallbackSettings, QueueCallbackDialer
from hwd_bridge.ami_client import AmiClient
from hwd_bridge.ami_protocol import AmiMessage
from ivr.call import Call, CallerId
from ivr.engine import CallSession, QueuePlace
from stack import net
from stack.asterisk import AgentEndpoint, AsteriskInstance, ensure_root
from stack.mosquitto import MosquittoBroker
from stack.rtp_events import write_voice_pcap
from stack.sipp import CallerResult, Dtmf, EndedBy, Pause, SippAgent, SippCaller
from storage.ticket_store import TicketStore

pytestmark = pytest.mark.integration

AGENT_TALK_MS = 25_000
AGENT_VOICE_MS = 3000
WRAP_UP_S = 2
ARRIVAL_GAP_S = 2.0
CALLERS = {"A": "13900000041", "B": "13900000042", "C": "13900000043", "D": "13900000044"}
D_HANGUP_MS = 40_000

FLOW = """\
flow: "queue-experience"
title: 排队体验
start: queue
settings:
  fallback_prompt: prompt_fallback
nodes:
  queue:
    type: queue
    skill: general
    prompt: transfer_agent
    wait_prompt: queue_wait
    max_wait_s: 90
    announce_every_s: 60
    announce_position: true
    hold_music: default
    recording_notice: call_recording_notice
    callback: {key: "2", prompt: queue_callback_offer, done_prompt: queue_callback_done, next: goodbye}
    next: goodbye
    on_no_agent: no_agent
  goodbye:
    type: hangup
    prompt: goodbye
  no_agent:
    type: hangup
    prompt: no_agent
"""


@dataclass
class QueueStack:
    asterisk: AsteriskInstance
    county: _NodeProcess | None
    config: Path
    database: Path
    agent: SippAgent
    carrier: SippAgent | None


@contextmanager
def _queue_stack(tmp_path: Path, *, agent_talk_ms: int = 25_000, county_process: bool = True,
                 carrier_talk_ms: int | None = None) -> Iterator[QueueStack]:
    """Start a broker, Asterisk with music on hold, the county node and one registered agent.

    Without ``county_process`` the test runs the county node itself. With
    ``carrier_talk_ms`` a phone registers as the trunk ``carrier`` that reaches citizens.
    """
    root = ensure_root()
    prompt_dir = tmp_path / "prompts"
    shutil.copytree(PROMPT_AUDIO_DIR, prompt_dir)
    write_hold_tone(prompt_dir)
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(FLOW, encoding="utf-8")
    database = tmp_path / "county.sqlite3"
    passwords = {name: secrets.token_urlsafe(12) for name in ("agent1", "carrier")}

    with ExitStack() as stack:
        broker = MosquittoBroker(port=0, work_dir=tmp_path / "broker")
        stack.callback(broker.cleanup)
        stack.callback(broker.stop)
        broker.start()

        fastagi_port = net.free_port()
        name = f"queue{os.getpid()}"
        asterisk = AsteriskInstance.with_free_ports(
            name, root=root, fastagi_port=fastagi_port,
            agents=[AgentEndpoint(endpoint, endpoint, password) for endpoint, password in passwords.items()],
            prompt_dir=prompt_dir, fallback_prompt_id="system_error", test_extensions=False,
        )
        stack.callback(asterisk.stop, remove_files=True)
        asterisk.start()

        secret_file = tmp_path / "ami-secret"
        secret_file.write_text(asterisk.ami.secret, encoding="utf-8")
        roster = tmp_path / "roster.yaml"
        roster.write_text("- {id: agent1, name: 坐席一, endpoint: agent1, skills: [general]}\n", encoding="utf-8")
        acd = tmp_path / "acd.yaml"
        acd.write_text(f"wrap_up_s: {WRAP_UP_S}\n", encoding="utf-8")
        config = tmp_path / "county.yaml"
        config.write_text(f"""\
node_id: {COUNTY['node_id']}
tier: county
region_code: "{COUNTY['region_code']}"
database: {database}
parent:
  node_id: city-test
  broker: {{port: {broker.port}}}
telephony:
  fastagi: {{port: {fastagi_port}}}
  ami: {{port: {asterisk.ami.port}, username: {asterisk.ami.username}, secret_file: {secret_file}}}
  flow: {flow_file}
  prompt_catalog: {REPO_ROOT / 'prompts' / 'zh-CN.yaml'}
  prompt_sound_dir: {asterisk.instance_dir / 'sounds'}
  roster: {roster}
  acd_settings: {acd}
""", encoding="utf-8")
        county = None
        if county_process:
            county = _NodeProcess("county", config, tmp_path)
            stack.callback(county.stop)
            county.start()

        # The agent speaks (a tone) for the first seconds of each call, so the recording has sound.
        voice = write_voice_pcap(tmp_path / "agent-voice.pcap", AGENT_VOICE_MS, after_presses=0)
        agent = SippAgent(endpoint_id="agent1", username="agent1", password=passwords["agent1"],
                          registrar_port=asterisk.sip_port, talk_ms=agent_talk_ms, audio_pcap=voice,
                          work_dir=tmp_path / "sipp-agent1", keep_files=True)
        stack.callback(agent.stop)
        agent.start()
        carrier = None
        if carrier_talk_ms is not None:
            carrier = SippAgent(endpoint_id="carrier", username="carrier", password=passwords["carrier"],
                                registrar_port=asterisk.sip_port, talk_ms=carrier_talk_ms,
                                work_dir=tmp_path / "sipp-carrier", keep_files=True)
            stack.callback(carrier.stop)
            carrier.start()

        yield QueueStack(asterisk, county, config, database, agent, carrier)


def _entry_announcement_s(*prompt_ids: str) -> float:
    # 0.1 s per prompt for the switch and the controller between commands.
    return sum(prompt_seconds(prompt_id) + 0.1 for prompt_id in prompt_ids)


def _callers(stack: QueueStack, tmp_path: Path) -> dict[str, SippCaller]:
    # C hears the entry prompt, "您前面还有一位来电者在等待，预计还需等待…分钟" and the
    # callback offer, then presses 2 during the music. The minutes are one or two
    # fragments, so the longer reading is assumed.
    c_press_s = _entry_announcement_s(
        "transfer_agent", "call_recording_notice", "queue_ahead_intro", "num_1", "queue_ahead_callers", "wait_minutes_intro", "num_shi",
        "num_liang", "unit_minutes", "queue_callback_offer",
    ) + 8.0
    steps = {
        "A": (),
        "B": (),
        "C": (Pause(int(c_press_s * 1000)), Dtmf("2")),
        "D": (),
    }
    return {
        name: SippCaller(target_port=stack.asterisk.sip_port, caller_number=number, steps=steps[name],
                         hangup_after_ms=D_HANGUP_MS if name == "D" else None, wait_bye_timeout_ms=120_000,
                         work_dir=tmp_path / f"caller-{name}", keep_files=True)
        for name, number in CALLERS.items()
    }


async def _run_calls(stack: QueueStack, callers: dict[str, SippCaller]) -> tuple[dict[str, CallerResult],
                                                                                  list[AmiMessage]]:
    """Place the calls two seconds apart while recording the switch's music and dial events."""
    events: list[AmiMessage] = []
    ami = AmiClient("127.0.0.1", stack.asterisk.ami.port, stack.asterisk.ami.username, stack.asterisk.ami.secret)
    ami.subscribe(events.append, event_names=["MusicOnHoldStart", "MusicOnHoldStop", "DialBegin"])
    await ami.start()
    try:
        for caller in callers.values():
            caller.start()
            await asyncio.sleep(ARRIVAL_GAP_S)
        results = {}
        for name, caller in callers.items():
            results[name] = (await asyncio.to_thread(caller.wait, 180))[0]
        # Let the last events arrive.
        await asyncio.sleep(1.0)
    finally:
        await ami.stop()
        for caller in callers.values():
            caller.close()
    return results, events


async def _records(database: Path):
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as store:
        calls = {record.caller_masked: record for record in await store.list_calls()}
        events = {masked: await store.list_events(record.ticket_id) if record.ticket_id else []
                  for masked, record in calls.items()}
    return calls, events


def _channel_events(events: list[AmiMessage], number: str) -> list[str]:
    """Names of the events on the caller's own channel (not the agent's), in order."""
    return [event.get("Event") or "" for event in events
            if event.get("CallerIDNum") == number and not (event.get("Channel") or "").startswith("PJSIP/agent1")]


def test_queue_music_place_and_callbacks(tmp_path):
    assert (PROMPT_AUDIO_DIR / "queue_callback_offer.wav").exists(), "run `make prompts` first"

    with _queue_stack(tmp_path, agent_talk_ms=AGENT_TALK_MS) as stack:
        assert stack.county is not None
        started = time.monotonic()
        results, ami_events = asyncio.run(_run_calls(stack, _callers(stack, tmp_path)))
        elapsed = time.monotonic() - started
        answered = stack.agent.answered_calls
        log_tail = stack.county.log_tail(60)
        # MixMonitor's files, under the instance's astspooldir/monitor.
        recordings = sorted((stack.asterisk.host_dir / "spool" / "monitor" / "hotline-calls").glob("*.wav"))
        recording_sizes = [path.stat().st_size for path in recordings]

    # The switch's events, kept with the other files of the run for diagnosis. Channel names
    # carry the caller's number (PJSIP/<number>-...), so they are masked like the number.
    (tmp_path / "ami-events.txt").write_text("".join(
        f"{event.get('Timestamp')} {event.get('Event')} {mask_text(event.get('Channel') or '')} "
        f"{mask_phone(event.get('CallerIDNum'))}\n"
        for event in ami_events), encoding="utf-8")
    calls, events = asyncio.run(_records(stack.database))
    record = {name: calls.get(mask_phone(number)) for name, number in CALLERS.items()}
    kinds = {name: [event.kind for event in events.get(mask_phone(number), [])] for name, number in CALLERS.items()}

    # A and B reached the agent; C was hung up on after the callback confirmation; D hung up.
    assert answered == 2, log_tail
    assert results["A"].ended_by is EndedBy.REMOTE
    assert results["B"].ended_by is EndedBy.REMOTE
    assert results["C"].ended_by is EndedBy.REMOTE
    assert results["D"].ended_by is EndedBy.CALLER
    assert record["A"].outcome.value == "answered"
    assert record["B"].outcome.value == "answered"
    assert record["C"].outcome.value == "no_agent"
    assert record["D"].outcome.value == "abandoned_in_queue"

    # B: music while queued, stopped before the dial to the agent.
    b_events = _channel_events(ami_events, CALLERS["B"])
    assert "MusicOnHoldStart" in b_events, tmp_path / "ami-events.txt"
    assert b_events.index("MusicOnHoldStart") < b_events.index("MusicOnHoldStop") < b_events.index("DialBegin")
    assert b_events[-1] == "DialBegin"
    # A found the agent free: no music at all.
    assert "MusicOnHoldStart" not in _channel_events(ami_events, CALLERS["A"])
    # C and D heard music and were never dialled to the agent.
    assert "MusicOnHoldStart" in _channel_events(ami_events, CALLERS["C"])
    assert "DialBegin" not in _channel_events(ami_events, CALLERS["C"])
    assert "MusicOnHoldStart" in _channel_events(ami_events, CALLERS["D"])

    # C chose the callback: the ticket keeps the number (in clear at a node without a
    # profile store) and the queue it waits in.
    assert "callback_requested" in kinds["C"]
    request = next(event for event in events[mask_phone(CALLERS["C"])] if event.kind == "callback_requested")
    assert request.payload["queue_skill"] == "general"
    assert request.payload["number_masked"] == mask_phone(CALLERS["C"])

    # D abandoned: a callback task on a ticket opened for it.
    assert "callback_task" in kinds["D"]
    task = next(event for event in events[mask_phone(CALLERS["D"])] if event.kind == "callback_task")
    assert task.payload["reason"] == "abandoned_in_queue"
    assert task.payload["number_masked"] == mask_phone(CALLERS["D"])
    assert task.payload["waited_seconds"] > 5

    # The two agent calls were recorded after the notice; C and D never reached an agent.
    assert len(recordings) == 2, recordings
    assert {path.name for path in recordings} == {f"call-{record[name].call_id.replace('.', '-')}.wav"
                                                  for name in ("A", "B")}
    # Most of the agent's 3 s tone (a few packets go before the bridge is up): 8000
    # samples/s of 16-bit audio after the 44-byte WAV header.
    assert all(size >= 44 + 2 * 16_000 for size in recording_sizes), recording_sizes

    # On arrival B had nobody ahead, C had B, D had B and C; A found the agent free.
    log_lines = [json.loads(line) for line in stack.county.log_path.read_text(encoding="utf-8").splitlines()
                 if line.startswith("{")]
    announced = [line["ahead"] for line in log_lines if line["event"] == "queue position announced"]
    assert announced == [0, 1, 2]
    assert elapsed < 120


CITIZEN = "13900000061"
CARRIER_TALK_MS = 3000


async def _call_back_through_switch(asterisk: AsteriskInstance) -> tuple[CallbackResult, list[AmiMessage]]:
    """Serve one kept place through AMI: the agent rings first, then the citizen through the trunk."""
    events: list[AmiMessage] = []
    ami = AmiClient("127.0.0.1", asterisk.ami.port, asterisk.ami.username, asterisk.ami.secret)
    ami.subscribe(events.append, event_names=["DialBegin", "DialEnd"])
    await ami.start()
    try:
        pool = AgentPool([AgentProfile("agent1", "坐席一", "agent1", frozenset({"general"}))])
        await pool.device_state_changed("agent1", DeviceState.NOT_IN_USE)
        outcomes: list[dict[str, object]] = []

        async def record(session, payload):
            outcomes.append(payload)

        dialer = QueueCallbackDialer(pool, AmiCallbackOriginator(ami, "carrier"), record,
                                     settings=CallbackSettings(ring_timeout_s=10))
        call = Call(call_id="1796430000.9", caller=CallerId.from_raw(CITIZEN), dialed="12349",
                    channel="PJSIP/anonymous-1", started_at=datetime(2026, 12, 5, 2, 0, tzinfo=UTC),
                    route="ivr/12349")
        session = CallSession(call=call, flow_id="queue-experience", flow_version="v")
        session.callback_number = CITIZEN
        session.queue_place = QueuePlace(skill="general", waiting_since=time.monotonic() - 60, priority=0,
                                         needs=frozenset(), preferred_agent=None)

        task = dialer.keep(session)
        assert task is not None
        result = await asyncio.wait_for(task, timeout=60)
        assert outcomes[0]["result"] == result.value
        assert outcomes[0]["agent_id"] == "agent1"
        await asyncio.sleep(CARRIER_TALK_MS / 1000 + 1)
    finally:
        await ami.stop()
    return result, events


def test_queue_callback_rings_agent_then_citizen(tmp_path):
    """The kept place's callback: Originate to the agent's phone, whose Dial reaches the citizen's trunk."""
    root = ensure_root()
    passwords = {name: secrets.token_urlsafe(12) for name in ("agent1", "carrier")}
    with ExitStack() as stack:
        asterisk = AsteriskInstance.with_free_ports(
            f"qcb{os.getpid()}", root=root, fastagi_port=net.free_port(),
            agents=[AgentEndpoint(name, name, password) for name, password in passwords.items()],
            test_extensions=False,
        )
        stack.callback(asterisk.stop, remove_files=True)
        asterisk.start()
        phones = {}
        for name, talk_ms in (("agent1", None), ("carrier", CARRIER_TALK_MS)):
            phone = SippAgent(endpoint_id=name, username=name, password=passwords[name],
                              registrar_port=asterisk.sip_port, talk_ms=talk_ms,
                              work_dir=tmp_path / f"sipp-{name}", keep_files=True)
            stack.callback(phone.stop)
            phone.start()
            phones[name] = phone

        result, events = asyncio.run(_call_back_through_switch(asterisk))
        agent_answered = phones["agent1"].answered_calls
        carrier_answered = phones["carrier"].answered_calls

    assert result is CallbackResult.CONNECTED
    assert agent_answered == 1
    assert carrier_answered == 1
    # The Originate rang the agent first (no calling channel yet); the agent's answered
    # channel then dialled the citizen's number on the trunk.
    dials = [(event.get("Channel"), event.get("DialString")) for event in events if event.get("Event") == "DialBegin"]
    assert [dial_string for _, dial_string in dials] == ["agent1", f"{CITIZEN}@carrier"]
    assert (dials[1][0] or "").startswith("PJSIP/agent1-")


KEPT_TALK_MS = 30_000
CALLBACK_TALK_MS = 3000
KEPT_CALLERS = {"A": "13900000071", "C": "13900000073"}


async def _run_county_in_process(stack: QueueStack, tmp_path: Path) -> dict[str, CallerResult]:
    """Run the county node here, with recordings attached and callbacks through the trunk ``carrier``."""
    node = CountyNode(load_node_config(stack.config), call_recordings_dir=stack.asterisk.host_dir / "spool" / "monitor",
                      callback_trunk="carrier")
    await node.start()
    try:
        # A takes the free agent; C queues behind A's call and chooses the callback.
        c_press_s = _entry_announcement_s(
            "transfer_agent", "call_recording_notice", "queue_position_intro", "word_di", "num_1", "unit_wei",
            "wait_minutes_intro", "num_liang", "unit_minutes", "queue_callback_offer",
        ) + 3.0
        callers = {
            "A": SippCaller(target_port=stack.asterisk.sip_port, caller_number=KEPT_CALLERS["A"],
                            wait_bye_timeout_ms=120_000, work_dir=tmp_path / "caller-A", keep_files=True),
            "C": SippCaller(target_port=stack.asterisk.sip_port, caller_number=KEPT_CALLERS["C"],
                            steps=(Pause(int(c_press_s * 1000)), Dtmf("2")), wait_bye_timeout_ms=120_000,
                            work_dir=tmp_path / "caller-C", keep_files=True),
        }
        results = {}
        try:
            for caller in callers.values():
                caller.start()
                await asyncio.sleep(ARRIVAL_GAP_S)
            for name, caller in callers.items():
                results[name] = (await asyncio.to_thread(caller.wait, 120))[0]
        finally:
            for caller in callers.values():
                caller.close()

        # C's kept place reaches the head when A's call and the wrap-up end: the agent is
        # rung, then the citizen through the trunk.
        assert stack.carrier is not None
        answered = await asyncio.to_thread(stack.carrier.wait_answered, 1, 60)
        assert answered, stack.carrier.diagnosis()
        # The result event is written once the conversation with the citizen has ended
        # (the carrier's phone hangs up after CALLBACK_TALK_MS).
        await asyncio.sleep(CALLBACK_TALK_MS / 1000 + 2.0)
    finally:
        await node.stop()
    return results


def test_kept_place_called_back_and_recording_attached(tmp_path):
    """In one county node: C keeps its place and is called back through AMI; A's recorded call is attached."""
    with _queue_stack(tmp_path, agent_talk_ms=KEPT_TALK_MS, county_process=False,
                      carrier_talk_ms=CALLBACK_TALK_MS) as stack:
        results = asyncio.run(_run_county_in_process(stack, tmp_path))
        agent_answered = stack.agent.answered_calls

    assert results["A"].ended_by is EndedBy.REMOTE
    assert results["C"].ended_by is EndedBy.REMOTE
    # A's call, then the callback for C.
    assert agent_answered == 2

    calls, events = asyncio.run(_records(stack.database))
    a_events = events[mask_phone(KEPT_CALLERS["A"])]
    c_events = events[mask_phone(KEPT_CALLERS["C"])]

    attachment = next(event for event in a_events if event.kind == "attachment_added")
    assert attachment.payload["media_type"] == "audio/wav"
    assert attachment.payload["size_bytes"] > 44 + 2 * 16_000
    assert attachment.note == "通话录音"

    assert calls[mask_phone(KEPT_CALLERS["C"])].outcome.value == "no_agent"
    outcome = next(event for event in c_events if event.kind == "queue_callback")
    assert outcome.payload["result"] == "connected"
    assert outcome.payload["agent_id"] == "agent1"
    assert outcome.payload["number_masked"] == mask_phone(KEPT_CALLERS["C"])
