"""End to end: every node kind of the flow language, driven by SIPp RFC 2833 keys on Asterisk 22.

The flow tests/flows_valid/e2e_every_node.yaml runs on a county `hotline run` process. Five
callers press keys at times computed from the built prompts' lengths, concurrently:

- A: menu 1, an ID number read back and refused with 2, keyed again and confirmed with 1,
  queue to an agent, then the satisfaction survey after the agent hangs up (score 5).
- B: an invalid key, then no input, then 3: a voice message recorded from the caller's tone.
- C: 4: a callback to another number, keyed, read back and confirmed.
- D: 7: a transfer through the trunk toward the city's switch, which answers.
- E: 2: a set node adds the slow-speech need, a branch on that need, then the emergency key 9
  in the next menu, which queues the call at priority 9.

Play, menu, collect with read-back, set, branch (on queue state and on a need), queue,
transfer, record, callback, survey and hangup nodes all run, with the no-input and no-match
paths and both flow-wide handlers' kind of key (9 here; 0 runs in the replay library).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hotline.demo import COUNTY, PROMPT_AUDIO_DIR, REPO_ROOT, prompt_seconds
from hotline.privacy import mask_phone
from ivr.entry import digit_prompts
from profiles.id_number import synthetic_id_number
from stack.sipp import CallerResult, CallerStep, Dtmf, EndedBy, Pause, SippCaller, Voice
from storage.ticket_store import TicketStore
from tests.integration.county_stack import Phone, county_stack

pytestmark = pytest.mark.integration

FLOW = (REPO_ROOT / "tests" / "flows_valid" / "e2e_every_node.yaml").read_text(encoding="utf-8")
AGENT_TALK_MS = 3000
TRUNK_TALK_MS = 2000
# Time the switch and the controller add around each prompt, as estimated for a loaded machine.
PROMPT_GAP_S = 0.1
# Keys are pressed this long after the prompt that asks for them has ended.
PRESS_AFTER_S = 1.0
KEY_MS = 200


def _seconds(prompt_id: str, *, slow: bool) -> float:
    """Length of a prompt, of its slow rendition when the caller has that need and it was built."""
    if slow and (PROMPT_AUDIO_DIR / f"{prompt_id}@slow.wav").exists():
        prompt_id = f"{prompt_id}@slow"
    return prompt_seconds(prompt_id) + PROMPT_GAP_S


@dataclass
class Script:
    """A caller's keys, placed on an estimated timeline of the prompts the flow plays."""

    caller: str
    clock_s: float = 0.0
    slow: bool = False
    steps: list[CallerStep] = field(default_factory=list)
    _sent_ms: int = 0

    def hears(self, *prompt_ids: str) -> Script:
        self.clock_s += sum(_seconds(p, slow=self.slow) for p in prompt_ids)
        return self

    def slows_down(self) -> Script:
        """From here on the flow plays slow renditions where they exist."""
        self.slow = True
        return self

    def waits(self, seconds: float) -> Script:
        self.clock_s += seconds
        return self

    def presses(self, keys: str) -> Script:
        at_ms = int((self.clock_s + PRESS_AFTER_S) * 1000)
        if at_ms > self._sent_ms:
            self.steps.append(Pause(at_ms - self._sent_ms))
        self.steps += [Dtmf(key) for key in keys]
        self._sent_ms = at_ms + KEY_MS * len(keys)
        self.clock_s = self._sent_ms / 1000
        return self

    def speaks(self, ms: int) -> Script:
        at_ms = int((self.clock_s + PRESS_AFTER_S) * 1000)
        self.steps += [Pause(at_ms - self._sent_ms), Voice(ms)]
        self._sent_ms = at_ms + ms
        self.clock_s = self._sent_ms / 1000
        return self


def _id_number() -> str:
    """A synthetic ID number that ends in a digit, so the caller can key all of it."""
    rng = random.Random(12349)
    while True:
        number = synthetic_id_number(rng, region_code=COUNTY["region_code"])
        if number[-1].isdigit():
            return number


ID_NUMBER = _id_number()
CALLBACK_NUMBER = "13900000099"


def _scripts() -> dict[str, Script]:
    read_id = ["readback_intro", *digit_prompts(ID_NUMBER), "readback_confirm"]
    read_callback = ["readback_intro", *digit_prompts(CALLBACK_NUMBER), "readback_confirm"]
    agent_s = AGENT_TALK_MS / 1000 + 1.0

    a = (Script("13900000041").hears("welcome", "main_menu").presses("1")
         .hears("id_number_entry").presses(ID_NUMBER).hears(*read_id).presses("2")
         .hears("id_number_entry").presses(ID_NUMBER).hears(*read_id).presses("1")
         .hears("transfer_agent").waits(agent_s).hears("survey").presses("5"))
    b = (Script("13900000042").hears("welcome", "main_menu").presses("8")
         .hears("invalid_key", "main_menu").waits(6.0).hears("no_input", "main_menu").presses("3")
         .hears("record_message").waits(1.0).speaks(3000))
    c = (Script("13900000043").hears("welcome", "main_menu").presses("4")
         .hears("callback_offer").presses("2").hears("callback_number").presses(CALLBACK_NUMBER + "#")
         .hears(*read_callback).presses("1"))
    d = Script("13900000044").hears("welcome", "main_menu").presses("7")
    e = (Script("13900000045").hears("welcome", "main_menu").presses("2").slows_down()
         .hears("slow_speech_set", "main_menu").presses("9"))
    return {"A": a, "B": b, "C": c, "D": d, "E": e}


async def _records(database: Path):
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as store:
        calls = {record.caller_masked: record for record in await store.list_calls()}
        events = {record.caller_masked: await store.list_events(record.ticket_id) if record.ticket_id else []
                  for record in calls.values()}
        integrity = await store.check_integrity()
    return calls, events, integrity


def _keys(record) -> list[tuple[str, str, str]]:
    return [(key.node, key.digits, key.outcome) for key in record.inputs.keys]


def test_every_node_kind_on_real_calls(tmp_path):
    assert (PROMPT_AUDIO_DIR / "welcome.wav").exists(), "run `make prompts` first"
    scripts = _scripts()
    phones = [Phone("agent1", ("general",), talk_ms=AGENT_TALK_MS),
              Phone("agent2", ("general",), talk_ms=AGENT_TALK_MS),
              Phone("city-trunk", talk_ms=TRUNK_TALK_MS)]

    with county_stack(tmp_path, FLOW, phones) as stack:
        callers = {name: SippCaller(target_port=stack.asterisk.sip_port, caller_number=script.caller,
                                    steps=tuple(script.steps), wait_bye_timeout_ms=180_000,
                                    work_dir=tmp_path / f"caller-{name}", keep_files=True)
                   for name, script in scripts.items()}
        started = time.monotonic()
        for caller in callers.values():
            caller.start()
        results: dict[str, CallerResult] = {}
        try:
            for name, caller in callers.items():
                results[name] = caller.wait(timeout_s=240)[0]
        finally:
            for caller in callers.values():
                caller.close()
        elapsed = time.monotonic() - started
        # The trunk phone answered the transfer; the agents answered A and E.
        trunk_answered = stack.phones["city-trunk"].answered_calls
        agents_answered = sum(stack.phones[a].answered_calls for a in ("agent1", "agent2"))
        log_tail = stack.county.log_tail(40)

    calls, events, integrity = asyncio.run(_records(stack.database))
    by_name = {name: calls.get(mask_phone(script.caller)) for name, script in scripts.items()}
    kinds = {name: [event.kind for event in events.get(mask_phone(script.caller), [])]
             for name, script in scripts.items()}

    # Every call ran to the flow's hangup node, which hung up on the caller.
    ended = {name: r.ended_by for name, r in results.items()}
    assert ended == dict.fromkeys(scripts, EndedBy.REMOTE), f"{ended}\n{log_tail}"
    assert all(record is not None for record in by_name.values()), (sorted(calls), log_tail)
    assert integrity == "ok"
    assert elapsed < 240

    a, b, c, d, e = (by_name[name] for name in "ABCDE")
    summary = "\n".join(f"{name}: path={r.path} keys={_keys(r)} outcome={r.outcome} events={kinds[name]}"
                        for name, r in by_name.items())

    # A: read-back refused once, confirmed the second time; queue; survey after the agent.
    assert a.path == ("welcome", "staffed", "main_menu", "id_number", "to_agent", "survey", "finished"), summary
    assert _keys(a) == [("main_menu", "1", "accepted"), ("id_number", "<18 digits>", "accepted"),
                        ("id_number", "<18 digits>", "accepted"), ("survey", "5", "accepted")]
    assert a.outcome.value == "answered", summary
    assert a.agent_id in ("agent1", "agent2")
    assert "agent_answered" in kinds["A"]
    satisfaction = [ev for ev in events[a.caller_masked] if ev.kind == "satisfaction"]
    assert [ev.payload["score"] for ev in satisfaction] == [5], summary

    # B: no-match, then no-input, then the record node keeps the caller's message.
    assert b.path == ("welcome", "staffed", "main_menu", "leave_message", "finished"), summary
    assert _keys(b) == [("main_menu", "8", "invalid"), ("main_menu", "", "no_input"), ("main_menu", "3", "accepted")], summary
    messages = [ev for ev in events[b.caller_masked] if ev.kind == "voice_message"]
    assert len(messages) == 1, summary
    assert messages[0].payload["duration_seconds"] >= 2.0

    # C: callback to another number, read back and confirmed.
    assert c.path == ("welcome", "staffed", "main_menu", "leave_callback", "finished"), summary
    callbacks = [ev for ev in events[c.caller_masked] if ev.kind == "callback_requested"]
    assert len(callbacks) == 1, summary
    assert callbacks[0].payload["number_masked"] == mask_phone(CALLBACK_NUMBER), summary
    assert callbacks[0].payload["caller_number"] is False

    # D: the trunk toward the city answered the transfer.
    assert d.path == ("welcome", "staffed", "main_menu", "to_city", "finished"), summary
    assert d.outcome.value == "completed", summary
    assert trunk_answered == 1, summary

    # E: set adds the need, the branch sees it, the emergency key queues at priority 9.
    assert e.path[:6] == ("welcome", "staffed", "main_menu", "slow_down", "slow_ack", "slow_check"), summary
    assert e.path[6:8] == ("slow_menu", "to_agent"), summary
    assert ("slow_menu", "9", "handler") in _keys(e)
    alerts = [ev for ev in events[e.caller_masked] if ev.kind == "emergency_alert"]
    assert [ev.payload["priority"] for ev in alerts] == [9], summary
    assert e.outcome.value == "answered", summary
    assert agents_answered == 2, summary
