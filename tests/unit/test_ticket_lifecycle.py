"""Unit tests for the pure ticket lifecycle: allowed actions, rejections, required inputs and overlays."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from tickets.lifecycle import (
    ACTIONS,
    CANCEL_REASONS,
    OPEN_STATES,
    RETURN_REASONS,
    TERMINAL_STATES,
    Field,
    InvalidField,
    InvalidTransition,
    MissingField,
    UnknownAction,
    allowed_actions,
    event_kind_label,
    plan_action,
    reason_label,
    rule_for_state_change,
)
from tickets.model import Ticket, TicketCategory, TicketState, Tier

S = TicketState
AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
TICKET_ID = "330106-20261204-0001"
OTHER_ID = "330106-20261204-0002"
CITY_TICKET_ID = "330100-20261204-0005"

# The lifecycle as specified, written out independently of ACTIONS: (action, from state) → to state.
# None as the result means an overlay that keeps the state.
_UNRESOLVED = [S.NEW, S.DISPATCHED, S.RETURNED, S.ACCEPTED, S.IN_PROGRESS, S.PENDING, S.REOPENED]
_OPEN = _UNRESOLVED + [S.RESOLVED, S.VERIFYING, S.ESCALATED]
EXPECTED: dict[tuple[str, TicketState], TicketState | None] = {
    ("dispatch", S.NEW): S.DISPATCHED,
    ("accept", S.DISPATCHED): S.ACCEPTED,
    ("return", S.DISPATCHED): S.RETURNED,
    ("redispatch", S.RETURNED): S.DISPATCHED,
    ("redispatch", S.REOPENED): S.DISPATCHED,
    ("start", S.ACCEPTED): S.IN_PROGRESS,
    ("start", S.REOPENED): S.IN_PROGRESS,
    ("start", S.ESCALATED): S.IN_PROGRESS,
    ("suspend", S.IN_PROGRESS): S.PENDING,
    ("resume", S.PENDING): S.IN_PROGRESS,
    ("resolve", S.IN_PROGRESS): S.RESOLVED,
    ("resolve", S.ESCALATED): S.RESOLVED,
    ("answer_directly", S.NEW): S.RESOLVED,
    ("start_callback", S.RESOLVED): S.VERIFYING,
    ("close", S.VERIFYING): S.CLOSED,
    ("reopen", S.VERIFYING): S.REOPENED,
    **{("merge", state): S.MERGED for state in _UNRESOLVED},
    **{("escalate", state): S.ESCALATED for state in _UNRESOLVED},
    **{("cancel", state): S.CANCELLED for state in _UNRESOLVED + [S.ESCALATED]},
    **{("remind", state): None for state in _OPEN},
    **{("supervise", state): None for state in _OPEN},
}

EXPECTED_KINDS = {
    "dispatch": "dispatched", "accept": "accepted", "return": "returned", "redispatch": "redispatched",
    "start": "started", "suspend": "suspended", "resume": "resumed", "resolve": "resolved",
    "answer_directly": "answered_directly", "start_callback": "callback_started", "close": "closed",
    "reopen": "reopened", "merge": "merged", "escalate": "escalated", "cancel": "cancelled",
    "remind": "reminded", "supervise": "supervised",
}

REJECTED = [(action, state) for action in ACTIONS for state in TicketState if (action, state) not in EXPECTED]


def make_ticket(state: TicketState, ticket_id: str = TICKET_ID, origin_node: str = "county-330106") -> Ticket:
    return Ticket(
        ticket_id=ticket_id, origin_node=origin_node, region_code=ticket_id[:6], category=TicketCategory.LINSHI,
        state=state, caller_masked="139****0001", call_id=None, created_at=AT, updated_at=AT, last_seq=3,
    )


def complete_inputs(action: str) -> dict[str, object]:
    """Return valid values for every input that ``action`` requires."""
    rule = ACTIONS[action]
    inputs: dict[str, object] = {}
    if Field.REASON in rule.requires:
        assert rule.reasons is not None
        inputs["reason"] = next(iter(rule.reasons))
    if Field.NOTE in rule.requires:
        inputs["note"] = "已发放临时救助金 800 元"
    if Field.OFFICE in rule.requires:
        inputs["office"] = "杭州市民政局"
    if Field.TARGET in rule.requires:
        inputs["target"] = make_ticket(S.IN_PROGRESS, OTHER_ID) if rule.target_is_local else CITY_TICKET_ID
    return inputs


def plan(state: TicketState, action: str, **inputs: object):
    return plan_action(make_ticket(state), action, "agent-1001", Tier.COUNTY, AT + timedelta(hours=1), **inputs)


class TestTable:
    def test_table_matches_specification(self) -> None:
        """ACTIONS allows exactly the (action, state) pairs of the specified lifecycle, with the specified results."""
        actual = {(name, state): rule.to_state for name, rule in ACTIONS.items() for state in rule.from_states}
        assert set(actual) - set(EXPECTED) == set()
        assert set(EXPECTED) - set(actual) == set()
        assert actual == EXPECTED

    def test_event_kinds(self) -> None:
        assert {name: rule.event_kind for name, rule in ACTIONS.items()} == EXPECTED_KINDS

    def test_terminal_states_allow_nothing(self) -> None:
        assert TERMINAL_STATES == {S.CLOSED, S.MERGED, S.CANCELLED}
        for state in TERMINAL_STATES:
            assert allowed_actions(state) == []

    def test_every_open_state_has_an_exit(self) -> None:
        """From every open state some action changes the state, so no ticket can get stuck."""
        for state in OPEN_STATES:
            assert [rule for rule in allowed_actions(state) if not rule.is_overlay], state

    def test_reason_tables_have_chinese_labels(self) -> None:
        for table in (RETURN_REASONS, CANCEL_REASONS):
            assert "other" in table
            for code, label in table.items():
                assert code.isascii()
                assert code == code.lower()
                assert label and not label.isascii()
        assert reason_label("not_our_duty") == "不属于本单位职责"
        assert reason_label("caller_withdrew") == "来电人撤回诉求"
        assert reason_label("free text") == "free text"

    def test_event_kind_labels(self) -> None:
        assert event_kind_label("returned") == "退回"
        assert event_kind_label("created") == "受理"
        assert event_kind_label("agent_answered") == "坐席接听"
        assert event_kind_label("some_future_kind") == "some_future_kind"


class TestAllowed:
    @pytest.mark.parametrize(("action", "state"), sorted(EXPECTED, key=lambda pair: (pair[0], pair[1].value)))
    def test_allowed_transition(self, action: str, state: TicketState) -> None:
        """Each allowed (action, state) pair yields the next event and snapshot."""
        planned = plan(state, action, **complete_inputs(action))
        expected_state = EXPECTED[(action, state)] or state

        assert planned.ticket.state is expected_state
        assert planned.ticket.last_seq == 4
        assert planned.ticket.updated_at == AT + timedelta(hours=1)
        assert planned.event.seq == 4
        assert planned.event.kind == EXPECTED_KINDS[action]
        assert planned.event.from_state is state
        assert planned.event.to_state is EXPECTED[(action, state)]
        assert planned.event.actor == "agent-1001"
        assert planned.event.tier is Tier.COUNTY

    @pytest.mark.parametrize("state", sorted(OPEN_STATES, key=lambda state: state.value))
    @pytest.mark.parametrize("action", ["remind", "supervise"])
    def test_overlay_keeps_state(self, action: str, state: TicketState) -> None:
        planned = plan(state, action, **{**complete_inputs(action), "note": "来电人再次来电催问进度"})
        assert planned.ticket.state is state
        assert planned.event.to_state is None
        assert planned.event.note == "来电人再次来电催问进度"

    def test_inputs_recorded_on_event(self) -> None:
        planned = plan(S.DISPATCHED, "return", reason="wrong_region", note="应由西湖区办理", office="拱墅区民政局")
        assert (planned.event.reason, planned.event.note, planned.event.office) == (
            "wrong_region", "应由西湖区办理", "拱墅区民政局")

    def test_escalation_records_link(self) -> None:
        planned = plan(S.IN_PROGRESS, "escalate", target=CITY_TICKET_ID, payload={"urgent": True})
        assert planned.event.payload == {"urgent": True, "target_ticket_id": CITY_TICKET_ID}

    def test_merge_records_target(self) -> None:
        planned = plan(S.NEW, "merge", target=make_ticket(S.DISPATCHED, OTHER_ID))
        assert planned.event.payload["target_ticket_id"] == OTHER_ID

    def test_full_path_with_return_and_reopen(self) -> None:
        """A ticket returned once and reopened after callback reaches 归档 with one event per step."""
        ticket = make_ticket(S.NEW)
        steps = [
            ("dispatch", {}), ("return", {"reason": "not_our_duty"}), ("redispatch", {}), ("accept", {}),
            ("start", {}), ("suspend", {"note": "等待补充户籍材料"}), ("resume", {}),
            ("resolve", {"note": "已发放临时救助金"}), ("start_callback", {}),
            ("reopen", {"note": "来电人表示金额不足"}), ("start", {}), ("resolve", {"note": "已补发"}),
            ("start_callback", {}), ("close", {}),
        ]
        states = []
        for index, (action, inputs) in enumerate(steps):
            planned = plan_action(ticket, action, "agent-1001", Tier.COUNTY, AT + timedelta(minutes=index), **inputs)
            ticket = planned.ticket
            states.append(ticket.state)
        assert states == [S.DISPATCHED, S.RETURNED, S.DISPATCHED, S.ACCEPTED, S.IN_PROGRESS, S.PENDING,
                          S.IN_PROGRESS, S.RESOLVED, S.VERIFYING, S.REOPENED, S.IN_PROGRESS, S.RESOLVED,
                          S.VERIFYING, S.CLOSED]
        assert ticket.last_seq == 3 + len(steps)

    def test_updated_at_never_moves_back(self) -> None:
        planned = plan_action(make_ticket(S.NEW), "dispatch", "agent-1001", Tier.COUNTY, AT - timedelta(hours=1))
        assert planned.event.occurred_at == AT - timedelta(hours=1)
        assert planned.ticket.updated_at == AT

    def test_rule_for_state_change(self) -> None:
        assert rule_for_state_change(TICKET_ID, S.NEW, S.DISPATCHED).name == "dispatch"
        assert rule_for_state_change(TICKET_ID, S.RETURNED, S.DISPATCHED).name == "redispatch"
        assert rule_for_state_change(TICKET_ID, S.NEW, S.RESOLVED).name == "answer_directly"


class TestRejected:
    @pytest.mark.parametrize(("action", "state"), sorted(REJECTED, key=lambda pair: (pair[0], pair[1].value)))
    def test_action_not_allowed_in_state(self, action: str, state: TicketState) -> None:
        """The message names the ticket, the current state, the action and what is allowed instead."""
        with pytest.raises(InvalidTransition) as caught:
            plan(state, action, **complete_inputs(action))
        message = str(caught.value)
        assert TICKET_ID in message
        assert f"「{state.label}」" in message
        assert f"「{ACTIONS[action].label}」" in message
        if state in TERMINAL_STATES:
            assert "终结状态" in message
        else:
            assert "当前可执行的操作" in message
            for rule in allowed_actions(state):
                assert rule.name in message
        assert (caught.value.ticket_id, caught.value.state, caught.value.action) == (TICKET_ID, state, action)

    def test_unknown_action(self) -> None:
        with pytest.raises(UnknownAction) as caught:
            plan(S.NEW, "approve")
        assert "未知操作 'approve'" in str(caught.value)
        assert "dispatch（派单）" in str(caught.value)

    @pytest.mark.parametrize("action", sorted(name for name, rule in ACTIONS.items() if rule.requires))
    def test_each_required_input_missing(self, action: str) -> None:
        """Leaving out any one required input rejects the action and names that input."""
        rule = ACTIONS[action]
        state = next(iter(sorted(rule.from_states, key=lambda state: state.value)))
        inputs = complete_inputs(action)
        for field in rule.requires:
            key = "target" if field is Field.TARGET else field.value
            partial = {name: value for name, value in inputs.items() if name != key}
            with pytest.raises(MissingField) as caught:
                plan(state, action, **partial)
            assert field.label in str(caught.value)
            assert rule.label in str(caught.value)

    def test_blank_note_counts_as_missing(self) -> None:
        with pytest.raises(MissingField):
            plan(S.IN_PROGRESS, "resolve", note="   ")

    @pytest.mark.parametrize(("action", "state"), [("return", S.DISPATCHED), ("cancel", S.NEW)])
    def test_unknown_reason_code_lists_codes(self, action: str, state: TicketState) -> None:
        with pytest.raises(InvalidField) as caught:
            plan(state, action, reason="lazy")
        assert "'lazy'" in str(caught.value)
        for code in ACTIONS[action].reasons or {}:
            assert code in str(caught.value)

    @pytest.mark.parametrize(("action", "state"), [("return", S.DISPATCHED), ("cancel", S.NEW)])
    def test_other_reason_needs_note(self, action: str, state: TicketState) -> None:
        with pytest.raises(MissingField) as caught:
            plan(state, action, reason="other")
        assert "备注" in str(caught.value)
        assert plan(state, action, reason="other", note="来电人已自行解决").event.reason == "other"

    def test_missing_reason_lists_codes(self) -> None:
        with pytest.raises(MissingField) as caught:
            plan(S.DISPATCHED, "return")
        assert "原因代码（--reason）" in str(caught.value)
        assert "not_our_duty = 不属于本单位职责" in str(caught.value)

    @pytest.mark.parametrize(("action", "target", "fragment"), [
        ("merge", TICKET_ID, "就是本工单"),
        ("merge", "20261204-0001", "不是有效的工单号"),
        ("escalate", TICKET_ID, "就是本工单"),
        ("escalate", OTHER_ID, "属于本区划 330106"),
        ("dispatch", OTHER_ID, "只能用于并单"),
    ])
    def test_invalid_target(self, action: str, target: str, fragment: str) -> None:
        with pytest.raises(InvalidField) as caught:
            plan(S.NEW, action, target=target)
        assert fragment in str(caught.value)

    @pytest.mark.parametrize("target_state", sorted(TERMINAL_STATES, key=lambda state: state.value))
    def test_merge_into_finished_ticket(self, target_state: TicketState) -> None:
        with pytest.raises(InvalidField) as caught:
            plan(S.NEW, "merge", target=make_ticket(target_state, OTHER_ID))
        assert target_state.label in str(caught.value)

    def test_merge_into_other_node_ticket(self) -> None:
        with pytest.raises(InvalidField) as caught:
            plan(S.NEW, "merge", target=make_ticket(S.NEW, OTHER_ID, origin_node="county-330108"))
        assert "county-330108" in str(caught.value)

    def test_state_change_without_action(self) -> None:
        with pytest.raises(InvalidTransition) as caught:
            rule_for_state_change(TICKET_ID, S.NEW, S.CLOSED)
        assert "「受理」" in str(caught.value)
        assert "「归档」" in str(caught.value)

    def test_naive_time_rejected(self) -> None:
        with pytest.raises(ValueError):
            plan_action(make_ticket(S.NEW), "dispatch", "agent-1001", Tier.COUNTY, datetime(2026, 12, 4, 10, 0))
