"""Flow runner: menu choices, retries, hang-ups and agent connection over a scripted caller."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from acd.pool import AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from tickets.call_record import CallOutcome
from ivr.flow import load_flow
from ivr.ports import DialStatus
from tests.fakes.call_port import ScriptedCaller

FLOW = load_flow(Path(__file__).resolve().parents[2] / "flows" / "12349.yaml")


class RecordingHooks:
    def __init__(self):
        self.events: list[tuple[str, str | None]] = []

    async def category_chosen(self, session):
        self.events.append(("category", session.category))

    async def agent_answered(self, session):
        self.events.append(("agent", session.agent_id))


def _call(call_id: str = "1700000000.1") -> Call:
    return Call(call_id=call_id, caller=CallerId.from_raw("13800000000"), dialed="12349", channel="PJSIP/x-1",
                started_at=datetime(2026, 12, 4, 2, 0, tzinfo=UTC), route="ivr/12349")


async def _pool(*agents: tuple[str, set[str]]) -> AgentPool:
    pool = AgentPool([AgentProfile(agent_id, agent_id, agent_id, frozenset(skills)) for agent_id, skills in agents])
    for agent_id, _ in agents:
        await pool.device_state_changed(agent_id, DeviceState.NOT_IN_USE)
    return pool


async def test_menu_choice_reaches_agent_with_skill():
    pool = await _pool(("agent1", {"dibao", "general"}), ("agent2", {"linshi", "general"}))
    hooks = RecordingHooks()
    caller = ScriptedCaller(keys=["3", None])

    session = await FlowRunner(pool, hooks).run(FLOW, _call(), caller)

    assert session.outcome is CallOutcome.ANSWERED
    assert session.category == "linshi"
    assert session.agent_id == "agent2"
    assert caller.dialed == ["agent2"]
    assert hooks.events == [("category", "linshi"), ("agent", "agent2")]
    assert session.path == ["welcome", "main_menu", "chose_linshi", "to_agent", "survey", "finished"]
    assert "category_linshi" in caller.played


async def test_invalid_key_then_valid_key():
    pool = await _pool(("agent1", {"dibao", "general"}))
    caller = ScriptedCaller(keys=["8", "1", None])

    session = await FlowRunner(pool, RecordingHooks()).run(FLOW, _call(), caller)

    # The last entry is the survey after the agent, left unanswered.
    assert [(k.digits, k.outcome) for k in session.keys] == [("8", "invalid"), ("1", "accepted"), ("", "no_input")]
    assert caller.played.count("main_menu") == 2
    assert "invalid_key" in caller.played
    assert session.outcome is CallOutcome.ANSWERED


async def test_silence_three_times_goes_to_human():
    pool = await _pool(("agent1", {"general"}))
    caller = ScriptedCaller(keys=[None, None, None, None])

    session = await FlowRunner(pool, RecordingHooks()).run(FLOW, _call(), caller)

    assert caller.played.count("no_input") == 2
    assert session.skill == "general"
    assert session.agent_id == "agent1"
    assert session.category is None


async def test_hangup_in_menu_is_abandoned_without_category():
    pool = await _pool(("agent1", {"general"}))
    hooks = RecordingHooks()
    caller = ScriptedCaller(keys=["HANGUP"])

    session = await FlowRunner(pool, hooks).run(FLOW, _call(), caller)

    assert session.outcome is CallOutcome.ABANDONED_IN_MENU
    assert session.last_node == "main_menu"
    assert hooks.events == []
    assert session.ended_at is not None


async def test_no_agent_logged_in_for_skill():
    pool = await _pool(("agent1", {"dibao"}))
    caller = ScriptedCaller(keys=["5"])

    session = await FlowRunner(pool, RecordingHooks()).run(FLOW, _call(), caller)

    assert session.outcome is CallOutcome.NO_AGENT
    assert caller.played[-1] == "no_agent"
    assert caller.dialed == []


async def test_unanswered_agent_is_skipped_for_next():
    pool = await _pool(("agent1", {"dibao"}), ("agent2", {"dibao"}))
    caller = ScriptedCaller(keys=["1", None], dial_results={"agent1": [DialStatus.NO_ANSWER]})

    session = await FlowRunner(pool, RecordingHooks()).run(FLOW, _call(), caller)

    assert caller.dialed == ["agent1", "agent2"]
    assert session.agent_id == "agent2"
    assert "agent_failed" in caller.played


async def test_failed_prompt_plays_fallback_and_continues():
    pool = await _pool(("agent1", {"dibao"}))
    caller = ScriptedCaller(keys=["1", None], broken_prompts={"welcome"})

    session = await FlowRunner(pool, RecordingHooks()).run(FLOW, _call(), caller)

    assert session.prompt_failures == ["welcome"]
    assert caller.played[0] == "prompt_fallback"
    assert session.outcome is CallOutcome.ANSWERED


async def test_hangup_while_queued_is_abandoned_in_queue():
    pool = await _pool(("agent1", {"dibao"}))
    caller = ScriptedCaller(keys=["1"], hang_up_on_prompt="transfer_agent")

    session = await FlowRunner(pool, RecordingHooks()).run(FLOW, _call(), caller)

    assert session.outcome is CallOutcome.ABANDONED_IN_QUEUE
    assert session.category == "dibao"


class AllHooks(RecordingHooks):
    async def emergency_raised(self, session):
        self.events.append(("emergency", session.priority))

    async def message_recorded(self, session):
        self.events.append(("message", session.recording_file))

    async def callback_requested(self, session):
        self.events.append(("callback", session.callback_number))

    async def survey_answered(self, session):
        self.events.append(("survey", session.survey_score))

    async def overflow_dialling(self, session):
        self.events.append(("overflow_dialling", session.ticket_id))

    async def overflow_escalated(self, session):
        self.events.append(("overflow_escalated", session.callback_number))
        return True


async def test_emergency_key_in_main_menu():
    pool = await _pool(("agent1", {"general"}))
    hooks = AllHooks()
    caller = ScriptedCaller(keys=["9", None])

    session = await FlowRunner(pool, hooks).run(FLOW, _call(), caller)

    assert session.path == ["welcome", "main_menu", "urgent_agent", "survey", "finished"]
    assert session.priority == 9
    assert "紧急" in session.needs
    assert hooks.events == [("emergency", 9), ("agent", "agent1")]
    assert caller.played.index("emergency_ack") < caller.played.index("transfer_agent")


async def test_unstaffed_emergency_escalates_callback():
    pool = await _pool(("agent1", {"dibao"}))
    hooks = AllHooks()
    caller = ScriptedCaller(keys=["9"])

    session = await FlowRunner(pool, hooks).run(FLOW, _call(), caller)

    assert session.path == ["welcome", "main_menu", "urgent_agent", "finished"]
    assert session.callback_number == "13800000000"
    assert session.overflow_via == "callback"
    assert hooks.events == [("emergency", 9), ("overflow_escalated", "13800000000")]
    assert "overflow_callback" in caller.played


async def test_emergency_without_agent_or_number_leaves_callback():
    pool = await _pool(("agent1", {"dibao"}))
    hooks = AllHooks()
    caller = ScriptedCaller(keys=["9", "13800000099", "1"])
    call = Call(call_id="1700000000.2", caller=CallerId.from_raw("anonymous"), dialed="12349", channel="PJSIP/x-2",
                started_at=datetime(2026, 12, 4, 2, 0, tzinfo=UTC), route="ivr/12349")

    session = await FlowRunner(pool, hooks).run(FLOW, call, caller)

    assert session.path == ["welcome", "main_menu", "urgent_agent", "urgent_callback", "finished"]
    assert session.callback_number == "13800000099"
    assert hooks.events == [("emergency", 9), ("callback", "13800000099")]
