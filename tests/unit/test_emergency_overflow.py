"""Emergency overflow to the tier above: the handoff values, the queue's overflow and its arrival."""

from datetime import UTC, datetime

import pytest

from acd.pool import AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow import FlowError, parse_flow
from ivr.overflow import HandoffError, OverflowHandoff, handoff_from_args, parse_handoff
from ivr.ports import DialStatus
from speech.catalog import load_catalog
from tests.fakes.acd import ListRecorder
from tests.fakes.call_port import ScriptedCaller
from tests.unit.test_flow_nodes import CATALOG, AllHooks, Clock
from tickets.call_record import CallOutcome

MONDAY_10 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

FLOW_TEXT = """\
flow: overflow-test
title: 紧急溢出（单元测试）
start: menu

handlers:
  emergency: {key: "9", priority: 9, next: to_agent}
  call_start:
    - when: {caller: overflow}
      next: to_agent

nodes:
  menu:
    type: menu
    prompt: main_menu
    on_exhausted: bye
    choices:
      "1": {category: dibao, skill: dibao, next: to_agent}

  to_agent:
    type: queue
    prompt: transfer_agent
    wait_prompt: queue_wait
    skill: dibao
    max_wait_s: 60
    next: bye
    on_no_agent: bye
    emergency_overflow:
      after_s: {after_s}
      via: {via}
      prompt: overflow_transfer
      trunk: city-trunk
      number: "12349"
      callback_prompt: overflow_callback
      next: bye

  bye:
    type: hangup
    prompt: goodbye
"""


def _flow(*, after_s: int = 0, via: str = "trunk"):
    text = FLOW_TEXT.replace("{after_s}", str(after_s)).replace("{via}", via)
    return parse_flow(text.encode(), source="overflow.yaml", prompt_ids=CATALOG)


def _call(args: tuple[str, ...] = (), caller: str = "13900000011") -> Call:
    return Call(call_id="1700000000.31", caller=CallerId.from_raw(caller), dialed="12349", channel="PJSIP/x-31",
                started_at=MONDAY_10, route="ivr/12349", args=args)


async def _pool(device: DeviceState, recorder: ListRecorder | None = None) -> AgentPool:
    pool = AgentPool([AgentProfile("agent1", "坐席一", "agent1", frozenset({"dibao"}))], recorder=recorder)
    await pool.device_state_changed("agent1", device)
    return pool


async def _run(flow, keys, *, device=DeviceState.IN_USE, args=(), dial=None, recorder=None):
    pool = await _pool(device, recorder)
    hooks = AllHooks()
    port = ScriptedCaller(keys=list(keys), dial_results=dial or {})
    runner = FlowRunner(pool, hooks, wall_clock=lambda: MONDAY_10, clock=Clock())
    session = await runner.run(flow, _call(args), port)
    return session, port, hooks, pool


# --- handoff values ----------------------------------------------------------------------


def test_handoff_round_trip_through_header_values():
    handoff = OverflowHandoff("330106-20261207-0003", frozenset({"手语", "需语速放缓"}), 9)

    ticket, needs, priority = handoff.header_values()

    assert "," not in needs
    assert "^" not in needs
    assert parse_handoff(ticket, needs, priority) == handoff


def test_handoff_without_ticket_or_needs_sends_placeholders():
    values = OverflowHandoff(None, frozenset(), 9).header_values()

    assert values == ("-", "-", "9")
    assert parse_handoff(*values) == OverflowHandoff(None, frozenset(), 9)


@pytest.mark.parametrize(("ticket", "needs", "priority", "named"), [
    ("13900000011", "-", "9", "X-Hotline-Ticket"),
    ("-", "手语", "9", "X-Hotline-Needs"),
    ("-", "%E6%89", "9", "X-Hotline-Needs"),
    ("-", "+".join(f"t{index}" for index in range(9)), "9", "X-Hotline-Needs"),
    ("-", "-", "", "X-Hotline-Priority"),
    ("-", "-", "12", "X-Hotline-Priority"),
])
def test_bad_handoff_value_names_the_header(ticket, needs, priority, named):
    with pytest.raises(HandoffError) as caught:
        parse_handoff(ticket, needs, priority)

    assert named in str(caught.value)


def test_only_calls_marked_overflow_carry_a_handoff():
    assert handoff_from_args(()) is None
    assert handoff_from_args(("lang=zh",)) is None
    assert handoff_from_args(("overflow", "-", "-", "9")) == OverflowHandoff(None, frozenset(), 9)


# --- flow validation ---------------------------------------------------------------------


def test_trunk_overflow_without_trunk_is_rejected_in_chinese():
    text = FLOW_TEXT.replace("{after_s}", "0").replace("{via}", "trunk").replace("      trunk: city-trunk\n", "")

    with pytest.raises(FlowError) as caught:
        parse_flow(text.encode(), source="overflow.yaml", prompt_ids=CATALOG)

    assert "via: callback" in str(caught.value)


def test_overflow_prompts_are_checked_against_the_catalog():
    text = FLOW_TEXT.replace("{after_s}", "0").replace("{via}", "callback").replace(
        "callback_prompt: overflow_callback", "callback_prompt: no_such_prompt")

    with pytest.raises(FlowError) as caught:
        parse_flow(text.encode(), source="overflow.yaml", prompt_ids=CATALOG)

    assert "no_such_prompt" in str(caught.value)


# --- the queue's overflow ----------------------------------------------------------------


async def test_busy_emergency_overflows_via_trunk():
    recorder = ListRecorder()
    session, port, hooks, pool = await _run(_flow(), ["9"], dial={"12349@city-trunk": [DialStatus.ANSWERED]},
                                            recorder=recorder)

    assert port.transfers == ["12349@city-trunk"]
    assert port.handoffs[0] is not None
    assert port.handoffs[0].priority == 9
    assert "紧急" in port.handoffs[0].needs
    assert hooks.events[-1][0] == "overflow_dialling"
    assert "overflow_transfer" in port.played
    assert session.overflow_via == "trunk"
    assert session.transferred_to == "city"
    assert session.outcome is CallOutcome.COMPLETED
    assert [d.rule for d in recorder.decisions][-1] == "emergency_overflow"
    assert pool.waiting_calls() == []


async def test_failed_trunk_falls_back_to_escalated_callback():
    session, port, hooks, _ = await _run(_flow(), ["9"], dial={"12349@city-trunk": [DialStatus.CONGESTION]})

    assert port.transfers == ["12349@city-trunk"]
    assert [name for name, _ in hooks.events][-2:] == ["overflow_dialling", "overflow_escalated"]
    assert hooks.events[-1][1] == "13900000011"
    assert session.overflow_via == "callback"
    assert "overflow_callback" in port.played
    assert session.path[-1] == "bye"


async def test_callback_overflow_does_not_dial():
    session, port, hooks, _ = await _run(_flow(via="callback"), ["9"])

    assert port.transfers == []
    assert hooks.events[-1] == ("overflow_escalated", "13900000011")
    assert session.overflow_via == "callback"


async def test_numberless_caller_not_escalated():
    pool = await _pool(DeviceState.IN_USE)
    hooks = AllHooks()
    port = ScriptedCaller(keys=["9"])
    runner = FlowRunner(pool, hooks, wall_clock=lambda: MONDAY_10, clock=Clock())

    session = await runner.run(_flow(via="callback"), _call(caller="anonymous"), port)

    assert "overflow_escalated" not in [name for name, _ in hooks.events]
    assert session.overflow_via is None
    assert "overflow_callback" not in port.played
    assert session.outcome is CallOutcome.NO_AGENT


async def test_routine_call_never_overflows():
    # No agent is logged in for the skill: a routine call goes to on_no_agent.
    pool = AgentPool([AgentProfile("agent1", "坐席一", "agent1", frozenset({"other"}))])
    port = ScriptedCaller(keys=["1"])
    runner = FlowRunner(pool, AllHooks(), wall_clock=lambda: MONDAY_10, clock=Clock())

    session = await runner.run(_flow(), _call(), port)

    assert port.transfers == []
    assert session.overflow_via is None
    assert session.outcome is CallOutcome.NO_AGENT


async def test_emergency_served_locally_when_an_agent_is_free():
    session, port, _, _ = await _run(_flow(), ["9"], device=DeviceState.NOT_IN_USE,
                                         dial={"agent1": [DialStatus.ANSWERED]})

    assert port.transfers == []
    assert session.agent_id == "agent1"
    assert session.overflow_via is None


# --- arrival at the tier above -----------------------------------------------------------


async def test_overflow_arrival_skips_menu():
    handoff = OverflowHandoff("330106-20261207-0003", frozenset({"手语"}), 9)
    session, port, _, _ = await _run(_flow(), [], device=DeviceState.NOT_IN_USE, args=("overflow", *handoff.header_values()),
                                     dial={"agent1": [DialStatus.ANSWERED]})

    assert session.path[0] == "to_agent"
    assert "main_menu" not in port.played
    assert session.handoff == handoff
    assert "手语" in session.needs
    assert session.priority == 9
    assert session.emergency is True


async def test_bad_handoff_runs_plain_call():
    session, _, _, _ = await _run(_flow(), [None, None, None], device=DeviceState.NOT_IN_USE,
                                     args=("overflow", "not-a-ticket", "-", "9"))

    assert session.handoff is None
    assert session.path[0] == "menu"
    assert session.priority == 0


def test_catalog_has_overflow_prompts():
    from hotline.demo import REPO_ROOT

    catalog = load_catalog(REPO_ROOT / "prompts" / "zh-CN.yaml")

    assert {"overflow_transfer", "overflow_callback"} <= set(catalog)


# --- the escalated callback ticket -------------------------------------------------------


async def test_escalated_callback_reaches_parent_with_number_and_needs(tmp_path):
    from hotline.ticket_desk import TicketDesk
    from ivr.engine import CallSession
    from storage import TicketStore
    from tickets.envelope import decode_envelope
    from tickets.model import TicketState
    from tier_sync.escalation import accept_escalation, is_escalation_to

    async with await TicketStore.open(tmp_path / "county.db", "county-330106", "330106") as county, \
            await TicketStore.open(tmp_path / "city.db", "city-330100", "330100") as city:
        desk = TicketDesk(county, parent_node_id="city-330100")
        session = CallSession(call=_call(), flow_id="overflow-test", flow_version="v1", path=["to_agent"])
        session.needs.update({"紧急", "手语"})
        session.priority = 9
        session.overflow_via = "callback"
        session.overflow_tier = "city"
        session.overflow_waited_s = 30.0

        await desk.overflow_escalated(session)

        ticket = await county.get_ticket(session.ticket_id)
        assert ticket.state is TicketState.ESCALATED
        rows = await county.pending_channel_outbox(None)
        upward = [decode_envelope(row.envelope) for row in rows]
        escalation = upward[-1]
        assert escalation.event.kind == "escalated"
        assert escalation.payload["emergency_callback_number"] == "13900000011"
        assert escalation.payload["number_masked"] == "139****0011"
        assert sorted(escalation.payload["needs"]) == ["手语", "紧急"]
        # Every other event of the ticket went up with the number masked.
        assert all("13900000011" not in str(envelope.payload) for envelope in upward[:-1])

        for envelope in upward:
            await city.apply_remote_event(envelope)
        assert is_escalation_to(escalation, "city-330100")
        linked = await accept_escalation(city, escalation)
        assert linked.origin_node == "city-330100"


async def test_clear_number_refused_outside_an_emergency_escalation(tmp_path):
    from storage import TicketStore
    from tickets.envelope import (
        EnvelopeError,
        build_envelope,
        decode_envelope,
        encode_envelope,
    )
    from tickets.model import TicketCategory

    async with await TicketStore.open(tmp_path / "county.db", "county-330106", "330106") as county:
        ticket = await county.open_ticket("1700000000.40", TicketCategory.DIBAO,
                                          "139****0040", MONDAY_10, "ivr", {"channel": "phone"})
        event = await county.apply_action(ticket.ticket_id, "escalate", "agent-1", payload={
            "escalate_to_node_id": "city-330100", "reason": "routine", "emergency_callback_number": "13900000040"})
        envelope = build_envelope(await county.get_ticket(ticket.ticket_id), event)

        assert envelope.payload["emergency_callback_number"] != "13900000040"

        # A sender that put the number in clear anyway is refused by the receiver.
        forged = encode_envelope(envelope).replace(envelope.payload["emergency_callback_number"].encode(),
                                                   b"13900000040")
        with pytest.raises(EnvelopeError):
            decode_envelope(forged)


def test_wrong_choice_names_the_value_and_the_choices():
    text = FLOW_TEXT.replace("{after_s}", "0").replace("{via}", "trunck")

    with pytest.raises(FlowError) as caught:
        parse_flow(text.encode(), source="overflow.yaml", prompt_ids=CATALOG)

    assert "“trunck”" in str(caught.value)
    assert "'trunk'、'callback'" in str(caught.value)


def test_validator_message_has_no_pydantic_prefix():
    text = FLOW_TEXT.replace("{after_s}", "0").replace("{via}", "trunk").replace("      trunk: city-trunk\n", "")

    with pytest.raises(FlowError) as caught:
        parse_flow(text.encode(), source="overflow.yaml", prompt_ids=CATALOG)

    assert "Value error" not in str(caught.value)

