"""``hotline tickets show`` has a Chinese label for every payload key the code writes into ticket events.

The test collects the keys by driving the real writers on temporary stores. These are the
ticket desk (with and without a profile store), the queue callback dialer, every lifecycle
action, the standby controller's fallback and the tier chain, where the city accepts a 提级
and the county applies the city's instructions. A new key without a label fails here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from acd.pool import AcdSettings, AgentPool, AgentProfile, DeviceState
from hotline.commands.tickets import _PAYLOAD_LABELS, _PAYLOAD_VALUES, _describe_payload
from hotline.queue_callbacks import CallbackResult, QueueCallbackDialer
from hotline.standby import FallbackCall, FallbackCallbacks
from hotline.ticket_desk import TicketDesk
from ivr.call import Call, CallerId
from ivr.engine import CallSession, QueuePlace
from ivr.overflow import OverflowHandoff
from storage.ticket_store import TicketStore
from tests.unit.test_profiles_call_path import KNOWN_NUMBER, open_stack
from tests.unit.test_standby import fallback_event
from tickets.call_record import CallOutcome
from tickets.envelope import decode_envelope, decode_instruction
from tickets.lifecycle import ACTIONS, ActionRule, Field
from tickets.model import TicketCategory, TicketEvent, TicketState
from tier_sync.escalation import ESCALATE_TO_KEY, accept_escalation, is_escalation_to
from tier_sync.instructions import InstructionApplier, issue_instruction

AT = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
COUNTY = "county-330106"
CITY = "city-330100"

# Keys whose values are codes from a fixed set; each written value needs a Chinese word.
ENUMERATED_KEYS = ("channel", "opened_because", "outcome", "reason", "via", "tier", "transferred_to", "result",
                   "requested_by", "agi_status", "caller_flags")


@dataclass
class Stores:
    county: TicketStore
    city: TicketStore
    recordings: Path


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[Stores]:
    (tmp_path / "county").mkdir()
    recordings = tmp_path / "monitor"
    recordings.mkdir()
    async with open_stack(tmp_path / "county") as stack, \
            await TicketStore.open(tmp_path / "city.db", CITY, "330100") as city:
        await _write_county_events(stack.tickets, stack.desk, recordings)
        await _write_tier_events(stack.tickets, city)
        yield Stores(stack.tickets, city, recordings)


def _session(call_id: str, number: str = "13900000031") -> CallSession:
    call = Call(call_id=call_id, caller=CallerId.from_raw(number), dialed="12349", channel="PJSIP/caller-1",
                started_at=AT, route="ivr/12349")
    return CallSession(call=call, flow_id="12349", flow_version="v1", path=["welcome", "main_menu"])


class _Originator:
    """Answers every queue callback as connected, like a citizen who picks up."""

    async def call_back(self, agent_endpoint: str, number: str, *, call_id: str, ring_timeout_s: float) -> CallbackResult:
        return CallbackResult.CONNECTED


async def _write_county_events(county: TicketStore, profile_desk: TicketDesk, recordings: Path) -> None:
    desk = TicketDesk(county, call_recordings_dir=recordings, parent_node_id=CITY)

    # An answered call through every hook that writes on its ticket, ending with a recorded conversation.
    answered = _session("1700000000.1")
    answered.category, answered.skill = "dibao", "dibao"
    await desk.category_chosen(answered)
    answered.agent_id, answered.answered_at, answered.talk_seconds = "agent1", AT, 42.0
    await desk.agent_answered(answered)
    answered.emergency_need, answered.priority = "紧急", 9
    await desk.emergency_raised(answered)
    answered.recording_file, answered.recording_seconds = "hotline-messages/msg-1.wav", 8.0
    await desk.message_recorded(answered)
    answered.callback_number = "13900000032"
    await desk.callback_requested(answered)
    answered.survey_score = 5
    await desk.survey_answered(answered)
    answered.call_recording_file = "call-1700000000.1.wav"
    (recordings / answered.call_recording_file).write_bytes(b"RIFF" + bytes(200))
    answered.outcome, answered.ended_at = CallOutcome.ANSWERED, AT + timedelta(minutes=2)
    answered.path.append("finished")
    answered.fields = {"district": "西湖区"}
    answered.emergency, answered.transferred_to = True, "city"
    await desk.finish_call(answered)

    # An emergency that overflows: first through the trunk, then escalated as a callback request.
    overflow = _session("1700000000.2")
    overflow.overflow_via, overflow.overflow_tier, overflow.overflow_waited_s = "trunk", "city", 30.0
    await desk.overflow_dialling(overflow)
    overflow.overflow_via = "callback"
    overflow.needs.update({"紧急"})
    assert await desk.overflow_escalated(overflow)

    # A caller who hangs up in the queue gets a callback task.
    abandoned = _session("1700000000.3")
    abandoned.skill, abandoned.outcome = "dibao", CallOutcome.ABANDONED_IN_QUEUE
    abandoned.ended_at = AT + timedelta(seconds=90)
    await desk.finish_call(abandoned)

    # A caller who kept their queue place and is called back when an agent is free.
    kept = _session("1700000000.4")
    kept.skill, kept.callback_number = "dibao", "13900000034"
    kept.queue_place = QueuePlace(skill="dibao", waiting_since=0.0, priority=0, needs=frozenset(), preferred_agent=None)
    await desk.callback_requested(kept)
    pool = AgentPool([AgentProfile("agent1", "agent1", "agent1", frozenset({"dibao"}))],
                     settings=AcdSettings(wrap_up_s=0))
    await pool.device_state_changed("agent1", DeviceState.NOT_IN_USE)
    assert await QueueCallbackDialer(pool, _Originator(), desk.queue_callback_finished).keep(kept) is CallbackResult.CONNECTED

    # A call that overflowed here from a lower tier, and a call without caller ID.
    handed_off = _session("1700000000.5")
    handed_off.handoff = OverflowHandoff("330106-20261201-0001", frozenset(), 5)
    await desk.category_chosen(handed_off)
    await desk.category_chosen(_session("1700000000.6", number="anonymous"))

    # A known caller at a node with a profile store: references and a sealed callback number.
    known = _session("1700000000.7", number=KNOWN_NUMBER)
    known.caller_profile = await profile_desk.find_caller(known.call.call_id, KNOWN_NUMBER)
    assert known.caller_profile is not None
    await profile_desk.category_chosen(known)
    known.callback_number = KNOWN_NUMBER
    await profile_desk.callback_requested(known)

    # The standby controller's fallback for a call whose controller failed.
    call = FallbackCall.from_ami_event(fallback_event(call_id="1700000000.8", AgiStatus="FAILURE"))
    assert call is not None
    await FallbackCallbacks(county, clock=lambda: AT).handle(call)

    for rule in ACTIONS.values():
        await _apply_once(county, rule)


def _path_to(state: TicketState) -> list[str]:
    """Return the shortest list of actions that moves a new ticket into ``state``."""
    queue: deque[tuple[TicketState, list[str]]] = deque([(TicketState.NEW, [])])
    seen = {TicketState.NEW}
    while queue:
        current, path = queue.popleft()
        if current is state:
            return path
        for rule in ACTIONS.values():
            if current in rule.from_states and rule.to_state is not None and rule.to_state not in seen:
                seen.add(rule.to_state)
                queue.append((rule.to_state, [*path, rule.name]))
    raise AssertionError(f"no action path reaches {state}")


async def _apply_once(store: TicketStore, rule: ActionRule) -> None:
    """Apply ``rule`` to a fresh ticket, moved first into a state the rule applies in."""
    ticket = await store.open_ticket(None, TicketCategory.ERTONG, "139****0001", AT, "ivr", {})
    start = min(rule.from_states, key=lambda state: len(_path_to(state)))
    for name in _path_to(start):
        await store.apply_action(ticket.ticket_id, name, "op1", **_inputs(store, ACTIONS[name]))
    await store.apply_action(ticket.ticket_id, rule.name, "op1", **await _target_inputs(store, rule))


def _inputs(store: TicketStore, rule: ActionRule) -> dict[str, object]:
    inputs: dict[str, object] = {}
    if Field.REASON in rule.requires:
        assert rule.reasons is not None
        inputs["reason"] = next(iter(rule.reasons))
    if Field.NOTE in rule.requires:
        inputs["note"] = "已电话答复"
    if Field.OFFICE in rule.requires:
        inputs["office"] = "区民政局"
    return inputs


async def _target_inputs(store: TicketStore, rule: ActionRule) -> dict[str, object]:
    inputs = _inputs(store, rule)
    if rule.name == "merge":
        survivor = await store.open_ticket(None, TicketCategory.ERTONG, "139****0001", AT, "ivr", {})
        inputs["target_ticket_id"] = survivor.ticket_id
    if rule.name == "escalate":
        # As ``hotline tickets transition ... escalate`` does without --target.
        inputs["payload"] = {ESCALATE_TO_KEY: CITY}
    return inputs


async def _write_tier_events(county: TicketStore, city: TicketStore) -> None:
    """Carry the county's events up, accept its 提级 at the city and apply the city's instructions."""
    for row in await county.pending_channel_outbox(None):
        envelope = decode_envelope(row.envelope)
        await city.apply_remote_event(envelope)
        if is_escalation_to(envelope, CITY):
            await accept_escalation(city, envelope)

    tickets = {ticket.ticket_id: ticket for ticket in await county.list_tickets()}
    new = next(t for t in tickets.values() if t.state is TicketState.NEW and t.origin_node == COUNTY)
    escalated = next(t for t in tickets.values() if t.state is TicketState.ESCALATED)
    await issue_instruction(city, COUNTY, new.ticket_id, "assign", "city-duty", office="区民政局")
    await issue_instruction(city, COUNTY, escalated.ticket_id, "supervise", "city-duty", office="市民政局",
                            note="请加快办理")
    await issue_instruction(city, COUNTY, escalated.ticket_id, "policy_notice", "city-duty", note="新政策")
    await issue_instruction(city, COUNTY, escalated.ticket_id, "return", "city-duty", note="由县级办理")

    applier = InstructionApplier(county, CITY)
    for row in await city.pending_instructions():
        ack = await applier.apply(decode_instruction(row.envelope))
        assert ack.status == "applied", ack


async def _all_events(*stores: TicketStore) -> list[TicketEvent]:
    events = []
    for store in stores:
        for ticket in await store.list_tickets(limit=1000):
            events += await store.list_events(ticket.ticket_id)
    return events


async def test_every_written_key_labelled(stores: Stores):
    events = await _all_events(stores.county, stores.city)
    written = {key for event in events for key in event.payload}

    # The drive above reached the writers of each area: desk, queue callback, fallback, merge, tier chain.
    for key in ("talk_seconds", "number_sealed", "result", "agi_status", "source_ticket_id",
                "escalated_from_ticket_id", "instruction_id", "attachment_id"):
        assert key in written, key
    for key in sorted(written):
        assert key in _PAYLOAD_LABELS, f"payload key {key!r} has no Chinese label in _PAYLOAD_LABELS"


async def test_every_written_code_translated(stores: Stores):
    events = await _all_events(stores.county, stores.city)

    for event in events:
        for key in ENUMERATED_KEYS:
            value = event.payload.get(key)
            codes = value if isinstance(value, list) else [value]
            for code in codes:
                if code is None:
                    continue
                assert code in _PAYLOAD_VALUES[key], f"{key}={code!r} ({event.kind}) has no Chinese word"


async def test_rendered_payload_has_no_raw_key(stores: Stores):
    events = await _all_events(stores.county, stores.city)

    for event in events:
        text = _describe_payload(event.payload)
        for key, value in event.payload.items():
            if value not in (None, "", [], {}):
                assert f"{key}：" not in text, f"{event.kind}: {text}"


def test_unknown_key_shown_as_stored():
    text = _describe_payload({"new_key": {"a": [1, 2]}, "outcome": "new_outcome", "emergency": False})

    assert "new_key：a=1、2" in text
    assert "通话结果：new_outcome" in text
    assert "紧急来电：否" in text


def test_nested_values_in_chinese():
    text = _describe_payload({"extra": {"working_days": 5}, "path": ["welcome", "main_menu"],
                              "caller_flags": ["no_caller_id", "malformed"], "fields": {}})

    assert "延长：5 个工作日" in text
    assert "路径：welcome→main_menu" in text
    assert "号码标记：未显示号码、号码格式无效" in text
    assert "采集的信息" not in text
