"""Flow runner: every node kind and flow-wide handler, over a scripted caller and a pinned clock."""

import asyncio
from datetime import UTC, date, datetime
from pathlib import Path

from acd.pool import AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner, WeekdayCalendar
from ivr.flow import load_flow
from ivr.ports import DialStatus
from speech.catalog import load_catalog
from tests.fakes.call_port import ScriptedCaller
from tickets.call_record import CallOutcome

ROOT = Path(__file__).resolve().parents[2]
CATALOG = set(load_catalog(ROOT / "prompts" / "zh-CN.yaml"))
# The runner plays a rendition only when the catalog it was checked against lists it.
SLOW = {"main_menu@slow", "no_input@slow"}
FLOW = load_flow(ROOT / "tests" / "flows_valid" / "every_node.yaml", prompt_ids=CATALOG | SLOW)

# 2026-12-07 is a Monday; 02:00 UTC is 10:00 in Asia/Shanghai.
MONDAY_10 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
MONDAY_2030 = datetime(2026, 12, 7, 12, 30, tzinfo=UTC)
SATURDAY_10 = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)

# A synthetic resident ID number with a valid check character, and one with a wrong one.
ID_NUMBER = "33010619600101105X"
ID_NUMBER_BAD = "330106196001011021"


class AllHooks:
    def __init__(self):
        self.events: list[tuple[str, object]] = []

    async def category_chosen(self, session):
        self.events.append(("category", session.category))

    async def agent_answered(self, session):
        self.events.append(("agent", session.agent_id))

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


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _call(caller: str = "13900000001") -> Call:
    return Call(call_id="1700000000.7", caller=CallerId.from_raw(caller), dialed="12349", channel="PJSIP/x-7",
                started_at=MONDAY_10, route="ivr/12349")


async def _pool(*agents: tuple[str, set[str]]) -> AgentPool:
    pool = AgentPool([AgentProfile(agent_id, agent_id, agent_id, frozenset(skills)) for agent_id, skills in agents])
    for agent_id, _ in agents:
        await pool.device_state_changed(agent_id, DeviceState.NOT_IN_USE)
    return pool


async def _run(keys, *, at=MONDAY_10, agents=(("agent1", {"general", "dibao"}),), caller="13900000001",
               clock=None, **caller_options):
    pool = await _pool(*agents)
    hooks = AllHooks()
    port = ScriptedCaller(keys=list(keys), **caller_options)
    runner = FlowRunner(pool, hooks, wall_clock=lambda: at, clock=clock or Clock())
    session = await runner.run(FLOW, _call(caller), port)
    return session, port, hooks


def _digits(port: ScriptedCaller) -> list[str]:
    return [prompt for prompt in port.played if prompt.startswith("digit_")]


async def test_collect_valid_id_then_survey():
    session, port, hooks = await _run(["1", ID_NUMBER.replace("X", "*"), "4"])

    assert session.path == ["welcome", "hours", "main_menu", "id_number", "is_urgent", "to_agent", "survey",
                            "finished"]
    assert session.collected == {"id_number": ID_NUMBER}
    assert session.survey_score == 4
    assert hooks.events == [("category", "dibao"), ("agent", "agent1"), ("survey", 4)]
    assert _digits(port) == []
    assert "survey_thanks" in port.played


async def test_collect_invalid_check_digit_reprompts():
    session, port, _ = await _run(["1", ID_NUMBER_BAD, ID_NUMBER.replace("X", "*"), None])

    assert session.collected == {"id_number": ID_NUMBER}
    assert port.played.count("id_number_entry") == 2
    assert "invalid_key" in port.played
    assert [key.outcome for key in session.keys if key.node == "id_number"] == ["invalid", "accepted"]


async def test_collect_keeps_digits_out_of_key_log():
    session, _, _ = await _run(["1", ID_NUMBER.replace("X", "*"), None])

    assert [key.digits for key in session.keys if key.node == "id_number"] == ["<18 digits>"]


async def test_collect_silence_exhausts_to_agent():
    session, port, _ = await _run(["1", None, None, None])

    assert session.path[:5] == ["welcome", "hours", "main_menu", "id_number", "to_agent"]
    assert port.played.count("no_input") == 1
    assert session.collected == {}


async def test_human_key_in_collect_goes_to_agent():
    session, _, _ = await _run(["1", "0", None])

    assert session.path[3:5] == ["id_number", "to_agent"]
    assert session.skill == "general"


async def test_emergency_key_raises_alert_and_priority():
    session, port, hooks = await _run(["9", None])

    assert session.emergency is True
    assert "紧急" in session.needs
    assert session.priority == 9
    assert ("emergency", 9) in hooks.events
    assert "emergency_ack" in port.played
    assert session.path[2:4] == ["main_menu", "to_agent"]


async def test_menu_no_input_escalates():
    session, port, _ = await _run([None, None, None])

    rejected = [prompt for prompt in port.played if prompt in ("no_input", "prompt_fallback")]
    assert rejected == ["no_input"]
    assert session.path[3] == "to_agent"


async def test_slow_need_changes_rendition_timeout_and_attempts():
    session, port, _ = await _run(["3", None, None, None])

    assert "需语速放缓" in session.needs
    assert session.fields == {"channel_note": "slow"}
    assert port.played.count("main_menu@slow") == 2
    assert "no_input@slow" in port.played
    assert port.timeouts[0] == 5000
    assert port.timeouts[1:3] == [7500, 7500]
    assert session.path[5:7] == ["main_menu_again", "to_agent"]


async def test_read_back_only_for_confirm_need():
    session, port, _ = await _run(["3", "1", ID_NUMBER.replace("X", "*"), None])

    # 需语速放缓 sets no confirm, so the ID is taken as typed.
    assert session.collected == {"id_number": ID_NUMBER}
    assert _digits(port) == []


async def test_confirm_need_reads_back_and_retries():
    typed = ID_NUMBER.replace("X", "*")

    session, port, _ = await _run(["4", "1", typed, "2", typed, "1", None])

    assert "需重复确认" in session.needs
    assert session.priority == 2
    assert session.collected == {"id_number": ID_NUMBER}
    assert port.played.count("readback_intro") == 2
    assert _digits(port)[:18] == ["digit_3", "digit_3", "digit_0", "digit_1", "digit_0", "digit_6", "digit_1",
                                  "digit_9", "digit_6", "digit_0", "digit_0", "digit_1", "digit_0", "digit_1",
                                  "digit_1", "digit_0", "digit_5", "digit_x"]
    assert [key.outcome for key in session.keys if key.node == "id_number"] == ["accepted", "accepted"]


async def test_read_back_never_confirmed_exhausts():
    typed = ID_NUMBER.replace("X", "*")

    session, _, _ = await _run(["4", "1", typed, None, typed, "2", None])

    assert session.collected == {}
    assert session.path[4:7] == ["main_menu_again", "id_number", "to_agent"]


async def test_after_hours_callback_own_number():
    session, port, hooks = await _run(["1", "1"], at=MONDAY_2030)

    assert session.path == ["welcome", "hours", "closed", "leave_callback", "finished"]
    assert session.callback_number == "13900000001"
    assert session.callback_is_caller_number is True
    assert hooks.events == [("callback", "13900000001")]
    assert _digits(port) == ["digit_1", "digit_3", "digit_9"] + ["digit_0"] * 7 + ["digit_1"]
    assert port.played.index("readback_intro") < port.played.index("digit_3")
    assert "callback_done" in port.played


async def test_callback_other_number_retry_then_confirm():
    keys = ["2", "13900000055", "2", "2", "13900000056", "1"]

    session, port, hooks = await _run(keys, at=SATURDAY_10)

    assert session.path[2] == "closed"
    assert session.callback_number == "13900000056"
    assert session.callback_is_caller_number is False
    assert port.played.count("readback_confirm") == 2
    assert hooks.events == [("callback", "13900000056")]


async def test_callback_without_caller_id_asks_for_number():
    session, port, _ = await _run(["02155501234", "1"], at=SATURDAY_10, caller="unknown")

    assert "callback_offer" not in port.played
    assert session.callback_number == "02155501234"


async def test_callback_exhausted_records_message():
    session, port, hooks = await _run([None, None, None], at=SATURDAY_10)

    assert session.path == ["welcome", "hours", "closed", "leave_callback", "leave_message", "finished"]
    assert port.recorded == ["msg-1700000000.7"]
    assert session.recording_file == "msg-1700000000.7.wav"
    assert hooks.events == [("message", "msg-1700000000.7.wav")]


async def test_silent_recording_writes_no_event():
    _, _, hooks = await _run([None, None, None], at=SATURDAY_10, record_seconds=0.0)

    assert hooks.events == []


async def test_no_agent_logged_in_goes_after_hours():
    session, _, _ = await _run(["1", "1"], agents=(("agent1", {"dibao"}),))

    assert session.path[2] == "closed"


async def test_transfer_to_city_answered():
    session, port, _ = await _run(["7"])

    assert port.transfers == ["12349@city-trunk"]
    assert session.transferred_to == "city"
    assert session.outcome is CallOutcome.COMPLETED
    assert session.path[-2:] == ["to_city", "finished"]


async def test_transfer_failed_falls_back_to_agent():
    session, port, _ = await _run(["7", None], dial_results={"12349@city-trunk": [DialStatus.CONGESTION]})

    assert session.path[3:6] == ["to_city", "transfer_failed", "to_agent"]
    assert session.transferred_to is None
    assert session.agent_id == "agent1"


async def test_survey_invalid_key_stores_no_score():
    session, _, hooks = await _run(["0", "8"])

    assert session.survey_score is None
    assert [event for event in hooks.events if event[0] == "survey"] == []


async def test_max_duration_jumps_to_end():
    clock = Clock()

    class SlowCaller(ScriptedCaller):
        async def play_prompt(self, prompt_id, *, interrupt_keys=""):
            clock.now += 400
            return await super().play_prompt(prompt_id, interrupt_keys=interrupt_keys)

        async def collect_digits(self, prompt_id, *, max_digits, timeout_ms):
            clock.now += 400
            return await super().collect_digits(prompt_id, max_digits=max_digits, timeout_ms=timeout_ms)

    pool = await _pool(("agent1", {"general", "dibao"}))
    port = SlowCaller(keys=["1"])
    session = await FlowRunner(pool, AllHooks(), wall_clock=lambda: MONDAY_10, clock=clock).run(FLOW, _call(), port)

    # The welcome and the menu take 800 s in all, so the node after the menu is replaced.
    assert session.path == ["welcome", "hours", "main_menu", "finished"]
    assert session.outcome is CallOutcome.COMPLETED


async def test_emergency_call_goes_ahead_in_queue():
    pool = AgentPool([AgentProfile("a1", "a1", "ep-a1", frozenset({"general"}))])
    normal = asyncio.create_task(pool.reserve("c1", "general", timeout_s=0.3))
    await asyncio.sleep(0.01)
    urgent = asyncio.create_task(pool.reserve("c2", "general", timeout_s=2, priority=9))
    await asyncio.sleep(0.01)

    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    reservation = await urgent
    assert reservation is not None
    assert reservation.call_id == "c2"
    assert await normal is None


def test_weekday_calendar():
    calendar = WeekdayCalendar()

    assert calendar.is_working_day(date(2026, 12, 7)) is True
    assert calendar.is_working_day(date(2026, 12, 5)) is False
