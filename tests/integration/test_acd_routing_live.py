"""End to end: how the ACD picks an agent, on Asterisk 22 with SIPp callers and five SIPp agent phones.

One county `hotline run` process with a citizen profile store serves every scenario. The
phones register in roster order, so an agent listed earlier has been idle longer:
sign-novideo, sign-nocodec, sign-video, yanglao, dibao-a, dibao-b. Callers press menu keys as RFC 2833
events while the menu prompt plays.

- Skill match: the known caller K presses 1 (低保). The call goes to dibao-a, the dibao
  agent idle longest, although three agents without dibao have been idle longer. The
  stored decision and `hotline acd explain` exclude those three with 不具备技能 dibao.
- Sign language: caller S presses 5, whose set node adds the need 手语. Of the three idle
  sign_language agents only sign-video has both the roster capability video and an
  endpoint that allows video codecs on the switch, and it takes the call. sign-novideo has
  been idle longer and is excluded with the reason 来电需要手语，坐席话机不支持视频;
  sign-nocodec is listed with video, but the controller read its endpoint's codecs over
  AMI (PJSIPShowEndpoint) and excludes it too.
- Preferred agent: K calls again. K's first ticket is still open and names dibao-a, so
  the call goes to dibao-a (rule preferred_agent) although dibao-b has been idle longer;
  the decision keeps dibao-b out with 来电正在等上次接待的坐席 dibao-a.
- Emergency first: B occupies the only yanglao agent for ``LONG_TALK_MS``. R (routine)
  queues for yanglao, and E arrives after R and presses the emergency key. When the agent
  frees up, E is reserved first (rule emergency_first) and R only after E's call.

Phase 1 places K's first call alone, so that every other agent is idle at its decision.
Phase 2 places the other five calls together, B, R and E two seconds apart. The whole
file took 67 s on a shared 2-core machine.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from acd.decisions import RoutingDecision
from hotline.cli import main as cli_main
from hotline.demo import COUNTY, PROMPT_AUDIO_DIR
from hotline.privacy import mask_phone
from profiles.keys import generate_key_files, load_keys
from profiles.model import Address, Profile
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_id_for_index
from stack.sipp import CallerResult, Dtmf, EndedBy, Pause, SippCaller
from storage.acd_store import AcdStore, acd_path
from storage.profile_store import ProfileStore
from storage.ticket_store import TicketStore
from tests.integration.county_stack import Phone, county_stack
from tickets.call_record import CallRecord
from tickets.model import TicketEvent

pytestmark = pytest.mark.integration

# Profile keys and rows are stamped with this time.
NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
SHORT_TALK_MS = 3000
# Long enough for R and E to reach the queue while B talks to the only yanglao agent.
LONG_TALK_MS = 12_000
# Keys are pressed this long after the call is answered, while the 20 s menu prompt plays
# (GET DATA stops the prompt at the first key).
PRESS_AT_MS = 4000
CALL_TIMEOUT_S = 150

KNOWN = "13900000051"
SIGN = "13900000052"
BLOCKER = "13900000053"
ROUTINE = "13900000054"
URGENT = "13900000055"

DIBAO_AGENTS = ("dibao-a", "dibao-b")
WITHOUT_DIBAO = ("sign-novideo", "sign-nocodec", "sign-video", "yanglao")

# Roster order is registration order, so each phone has been idle longer than the next.
PHONES = (
    Phone("sign-novideo", ("sign_language",), talk_ms=SHORT_TALK_MS),
    # Listed with a video phone, but its endpoint on the switch allows no video codec.
    Phone("sign-nocodec", ("sign_language",), talk_ms=SHORT_TALK_MS, roster="capabilities: [video]"),
    Phone("sign-video", ("sign_language",), talk_ms=SHORT_TALK_MS, roster="capabilities: [video]", video=True),
    Phone("yanglao", ("yanglao",), talk_ms=LONG_TALK_MS),
    Phone("dibao-a", ("dibao",), talk_ms=SHORT_TALK_MS),
    Phone("dibao-b", ("dibao",), talk_ms=SHORT_TALK_MS),
)

FLOW = """\
flow: "acd-routing-e2e"
title: 坐席分配规则（端到端测试）
start: main_menu
settings:
  fallback_prompt: prompt_fallback

handlers:
  emergency: {key: "9", priority: 9, skill: yanglao, next: to_agent}

nodes:
  main_menu:
    type: menu
    prompt: main_menu
    timeout_ms: 6000
    max_attempts: 2
    invalid_prompt: invalid_key
    no_input_prompt: no_input
    on_exhausted: finished
    choices:
      "1": {category: dibao, skill: dibao, next: to_agent}
      "3": {category: yanglao, skill: yanglao, next: to_agent}
      "5": {next: sign_language}

  sign_language:
    type: set
    skill: sign_language
    needs: [手语]
    next: to_agent

  # One reserve per call: the first wait announcement would come after 120 s.
  to_agent:
    type: queue
    prompt: transfer_agent
    wait_prompt: queue_wait
    max_wait_s: 150
    announce_every_s: 120
    next: finished
    on_no_agent: finished

  finished:
    type: hangup
"""


@dataclass(frozen=True)
class RoutingRun:
    """What the run left behind, read after the stack stopped."""

    results: dict[str, CallerResult]
    calls: dict[str, CallRecord]
    decisions: dict[str, list[RoutingDecision]]
    events: dict[str, list[TicketEvent]]
    answered: dict[str, int]
    explain_k1: str
    log_tail: str

    def assignment(self, name: str) -> RoutingDecision:
        """Return the decision that reserved an agent for the call, failing if there is not exactly one."""
        chosen = [d for d in self.decisions[name] if d.chosen_agent is not None]
        assert len(chosen) == 1, (name, self.decisions[name], self.log_tail)
        return chosen[0]


async def _write_profiles(folder: Path) -> Path:
    """Write profile keys, a profile store with K's profile and its config file, and return the config's path."""
    keys = folder / "profile-keys"
    keys.mkdir()
    database_dir = folder / "profile-db"
    database_dir.mkdir()
    encryption, lookup = keys / "encryption.json", keys / "lookup.json"
    generate_key_files(encryption, lookup, now=NOW)
    database = database_dir / "profiles.sqlite3"

    store = await ProfileStore.open(database, load_keys(encryption, lookup), clock=lambda: NOW)
    try:
        # No preferred agent in the profile: the preference must come from the open ticket.
        await store.upsert_profiles([
            Profile(name="周五", id_number=synthetic_id_for_index(51, COUNTY["region_code"]),
                    phones=(normalise_phone(KNOWN),), address=Address(COUNTY["region_code"], "文三路51号")),
        ])
    finally:
        await store.close()

    config = folder / "profiles.yaml"
    config.write_text(f"database: {database}\nencryption_key_file: {encryption}\nlookup_key_file: {lookup}\n",
                      encoding="utf-8")
    return config


def _place_calls(sip_port: int, folder: Path, callers: dict[str, tuple[str, str, float]]) -> dict[str, CallerResult]:
    """Start one SIPp caller per entry (number, key, start offset in s) and wait for all of them."""
    started = time.monotonic()
    running: dict[str, SippCaller] = {}
    try:
        for name, (number, key, offset_s) in sorted(callers.items(), key=lambda item: item[1][2]):
            time.sleep(max(0.0, started + offset_s - time.monotonic()))
            caller = SippCaller(target_port=sip_port, caller_number=number, steps=(Pause(PRESS_AT_MS), Dtmf(key)),
                                wait_bye_timeout_ms=CALL_TIMEOUT_S * 1000, work_dir=folder / f"caller-{name}",
                                keep_files=True)
            running[name] = caller
            caller.start()
        return {name: caller.wait(timeout_s=CALL_TIMEOUT_S)[0] for name, caller in running.items()}
    finally:
        for caller in running.values():
            caller.close()


async def _read_stores(database: Path, numbers: dict[str, str]):
    """Return the call records, routing decisions and ticket events of the named callers.

    Two callers with the same number get that number's records in start order.
    """
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as tickets:
        records = await tickets.list_calls()
        by_number: dict[str, list[CallRecord]] = {}
        for record in records:
            by_number.setdefault(record.caller_masked, []).append(record)
        calls = {}
        for name, number in numbers.items():
            calls[name] = by_number[mask_phone(number)].pop(0)
        events = {name: await tickets.list_events(record.ticket_id) if record.ticket_id else []
                  for name, record in calls.items()}
    async with await AcdStore.open(acd_path(database)) as acd:
        decisions = {name: await acd.decisions_for(record.call_id) for name, record in calls.items()}
    return calls, decisions, events


@pytest.fixture(scope="module")
def routing_run(tmp_path_factory) -> RoutingRun:
    assert (PROMPT_AUDIO_DIR / "main_menu.wav").exists(), "run `make prompts` first"
    folder = tmp_path_factory.mktemp("acd-routing")
    profiles_config = asyncio.run(_write_profiles(folder))

    with county_stack(folder, FLOW, PHONES, extra_config=f"  profiles: {profiles_config}\n") as stack:
        sip_port = stack.asterisk.sip_port
        # Phase 1: K's first call, with every other agent idle.
        results = _place_calls(sip_port, folder / "phase1", {"K1": (KNOWN, "1", 0.0)})
        # Phase 2: dibao-a's wrap-up (2 s) ends long before K's second call reaches the queue.
        results |= _place_calls(sip_port, folder / "phase2", {
            "K2": (KNOWN, "1", 0.0),
            "S": (SIGN, "5", 0.0),
            "B": (BLOCKER, "3", 0.0),
            "R": (ROUTINE, "3", 2.0),
            "E": (URGENT, "9", 4.0),
        })
        answered = {name: phone.answered_calls for name, phone in stack.phones.items()}
        log_tail = stack.county.log_tail(60)

    numbers = {"K1": KNOWN, "K2": KNOWN, "S": SIGN, "B": BLOCKER, "R": ROUTINE, "E": URGENT}
    calls, decisions, events = asyncio.run(_read_stores(stack.database, numbers))
    explain = CliRunner().invoke(cli_main, ["acd", "explain", calls["K1"].call_id, "--config", str(stack.config)])
    assert explain.exit_code == 0, explain.output
    return RoutingRun(results, calls, decisions, events, answered, explain.output, log_tail)


def test_every_call_answered_by_agent(routing_run: RoutingRun):
    run = routing_run
    for name, result in run.results.items():
        assert result.ended_by is EndedBy.REMOTE, (name, result, run.log_tail)
    for name, record in run.calls.items():
        assert record.outcome is not None and record.outcome.value == "answered", (name, record.path, run.log_tail)
    assert run.answered == {"sign-novideo": 0, "sign-nocodec": 0, "sign-video": 1, "yanglao": 3, "dibao-a": 2,
                            "dibao-b": 0}


def test_skill_match_excludes_agents_without_skill(routing_run: RoutingRun):
    run = routing_run
    decision = run.assignment("K1")

    assert run.calls["K1"].agent_id == "dibao-a"
    assert run.calls["K1"].skill == "dibao"
    assert decision.chosen_agent == "dibao-a"
    assert [c.agent_id for c in decision.candidates] == list(DIBAO_AGENTS)
    # Equal proficiency: the dibao agent idle longest wins.
    assert decision.rule == "tie_longest_idle"
    exclusions = {e.agent_id: e.reason for e in decision.exclusions}
    assert exclusions == dict.fromkeys(WITHOUT_DIBAO, "不具备技能 dibao")

    # The operator's view of the same decision.
    assert "结果：dibao-a" in run.explain_k1, run.explain_k1
    assert "规则：几名合格坐席分数相同，选空闲最久的一名" in run.explain_k1, run.explain_k1
    for agent_id in WITHOUT_DIBAO:
        assert f"    {agent_id}：不具备技能 dibao" in run.explain_k1, run.explain_k1


def test_sign_language_needs_video_phone(routing_run: RoutingRun):
    run = routing_run
    decision = run.assignment("S")

    assert run.calls["S"].agent_id == "sign-video"
    assert run.calls["S"].path == ("main_menu", "sign_language", "to_agent", "finished")
    assert decision.skill == "sign_language"
    assert "手语" in decision.needs
    assert decision.chosen_agent == "sign-video"
    assert [c.agent_id for c in decision.candidates] == ["sign-video"]
    exclusions = {e.agent_id: e.reason for e in decision.exclusions}
    # sign-novideo registered before sign-video and took no call, so it had been idle longer.
    assert exclusions["sign-novideo"] == "来电需要手语，坐席话机不支持视频"
    assert run.answered["sign-novideo"] == 0
    # The roster lists a video phone for sign-nocodec, but the switch's endpoint allows no video.
    assert "没有开通视频编解码" in exclusions["sign-nocodec"]
    assert run.answered["sign-nocodec"] == 0


def test_open_ticket_prefers_last_agent(routing_run: RoutingRun):
    run = routing_run
    first, second = run.calls["K1"], run.calls["K2"]
    first_decision = run.assignment("K1")
    decision = run.assignment("K2")

    assert second.started_at > first.started_at
    assert second.agent_id == first.agent_id == "dibao-a"
    assert decision.rule == "preferred_agent"
    assert decision.chosen_agent == "dibao-a"
    assert [c.agent_id for c in decision.candidates] == ["dibao-a"]
    assert "上次接待该来电人" in decision.candidates[0].reasons
    # While the call waits for its preferred agent, the other dibao agent is held back.
    exclusions = {e.agent_id: e.reason for e in decision.exclusions}
    assert exclusions["dibao-b"].startswith("来电正在等上次接待的坐席 dibao-a"), exclusions

    # dibao-b took no call, so it has been idle since before K's first call. dibao-a became
    # idle only after that call's wrap-up, so without the preference dibao-b would win.
    assert run.answered["dibao-b"] == 0
    dibao_b_idle_then = {c.agent_id: c.idle_s for c in first_decision.candidates}["dibao-b"]
    dibao_b_idle_now = dibao_b_idle_then + (decision.decided_at - first_decision.decided_at).total_seconds()
    assert dibao_b_idle_now > decision.candidates[0].idle_s

    # The preference came from K's first ticket, still open, which the second call points at.
    ended = [e for e in run.events["K2"] if e.kind == "call_ended"]
    assert len(ended) == 1, [e.kind for e in run.events["K2"]]
    assert ended[0].payload["fields"]["related_ticket_id"] == first.ticket_id


def test_emergency_served_before_earlier_call(routing_run: RoutingRun):
    run = routing_run
    blocker, routine, urgent = run.calls["B"], run.calls["R"], run.calls["E"]
    urgent_decision = run.assignment("E")
    routine_decision = run.assignment("R")

    assert {blocker.agent_id, routine.agent_id, urgent.agent_id} == {"yanglao"}
    # R reached the switch first, and both queued while B talked to the only yanglao agent.
    assert routine.started_at < urgent.started_at
    first_routine = run.decisions["R"][0]
    assert first_routine.rule == "no_eligible_agent"
    assert {e.agent_id: e.reason for e in first_routine.exclusions}["yanglao"].startswith(
        f"本系统记录其正在处理呼叫 {blocker.call_id}")
    assert run.decisions["E"][0].rule == "no_eligible_agent"

    # When the agent freed up, E was reserved ahead of R, which was still waiting.
    assert urgent_decision.rule == "emergency_first"
    assert urgent_decision.priority == 9
    assert urgent_decision.chosen_agent == "yanglao"
    board = [w.call_id for w in urgent_decision.waiting]
    assert board[:2] == [urgent.call_id, routine.call_id], urgent_decision.waiting
    assert routine_decision.decided_at > urgent_decision.decided_at
    assert routine_decision.priority == 0
    assert urgent.answered_at is not None and routine.answered_at is not None
    assert urgent.answered_at < routine.answered_at

    alerts = [e for e in run.events["E"] if e.kind == "emergency_alert"]
    assert [e.payload["priority"] for e in alerts] == [9]
