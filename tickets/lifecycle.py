"""Domain: the ticket (工单) lifecycle, one table of allowed actions and the check that applies it; no I/O.

Every change to a ticket's state goes through ``plan_action``, which validates the action
against ``ACTIONS`` and returns the next ticket snapshot and the event that records it.
Storage writes both in one transaction; nothing else decides whether a transition is allowed.

Rejections raise ``TransitionRejected`` (or a subclass) with a Chinese message for the
operator that names the ticket, its current state, the action and what is allowed instead.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from tickets.model import Ticket, TicketEvent, TicketState, Tier, parse_ticket_id, InvalidTicketId, require_utc

S = TicketState

# A ticket in one of these states is finished: no action and no overlay applies to it any more.
TERMINAL_STATES: frozenset[TicketState] = frozenset({S.CLOSED, S.MERGED, S.CANCELLED})
OPEN_STATES: frozenset[TicketState] = frozenset(TicketState) - TERMINAL_STATES

# 退回 reason codes: why an office sends a dispatched ticket back instead of accepting it.
RETURN_REASONS: Mapping[str, str] = MappingProxyType({
    "not_our_duty": "不属于本单位职责",
    "wrong_region": "不属于本辖区",
    "incomplete_info": "工单信息不全，无法办理",
    "duplicate": "与已办工单重复",
    "needs_higher_tier": "超出本单位权限，需上级协调",
    "other": "其他（须在备注中说明）",
})

# 撤销 reason codes: why a ticket is withdrawn without being handled.
CANCEL_REASONS: Mapping[str, str] = MappingProxyType({
    "caller_withdrew": "来电人撤回诉求",
    "invalid_call": "无效来电（误拨、骚扰或恶意来电）",
    "entered_in_error": "受理时录入错误",
    "duplicate_entry": "重复录入",
    "other": "其他（须在备注中说明）",
})

# The reason code that obliges the actor to explain in the note.
OTHER_REASON = "other"


class Field(enum.Enum):
    """An input an action may require besides the actor."""

    REASON = "reason"
    NOTE = "note"
    OFFICE = "office"
    TARGET = "target_ticket_id"

    @property
    def label(self) -> str:
        return _FIELD_LABELS[self]


_FIELD_LABELS = {
    Field.REASON: "原因代码（--reason）",
    Field.NOTE: "备注（--note）",
    Field.OFFICE: "部门（--office）",
    Field.TARGET: "关联工单号（--target）",
}


@dataclass(frozen=True, slots=True)
class ActionRule:
    """One row of the lifecycle table.

    ``to_state`` is None for an overlay (催办, 督办), which records an event and keeps the state.
    ``reasons`` is the table of valid reason codes when the action takes one.
    ``target_is_local`` marks an action whose target ticket is stored at the same node (并单),
    as opposed to one at another tier (提级).
    """

    name: str
    label: str
    from_states: frozenset[TicketState]
    to_state: TicketState | None
    event_kind: str
    requires: frozenset[Field] = frozenset()
    reasons: Mapping[str, str] | None = None
    target_is_local: bool = False

    @property
    def is_overlay(self) -> bool:
        return self.to_state is None


def _rule(
    name: str,
    label: str,
    from_states: set[TicketState] | frozenset[TicketState],
    to_state: TicketState | None,
    event_kind: str,
    requires: set[Field] | None = None,
    reasons: Mapping[str, str] | None = None,
    *,
    target_is_local: bool = False,
) -> ActionRule:
    return ActionRule(
        name, label, frozenset(from_states), to_state, event_kind, frozenset(requires or ()), reasons, target_is_local
    )


# States from which a ticket can still be merged, escalated or cancelled: open, and not yet resolved.
_UNRESOLVED = frozenset({S.NEW, S.DISPATCHED, S.RETURNED, S.ACCEPTED, S.IN_PROGRESS, S.PENDING, S.REOPENED})

# The lifecycle table: action name → states it applies in → resulting state, and its required inputs.
# 办结 (resolve, answer_directly) needs the result in the note, because the trail must show what was done.
# An event's ``office`` is the office the actor works for; the office that signs for a ticket shows up
# on its 签收 event.
# NOTE: the receiving office of 派单 and 改派 has no field of its own yet and goes into the note.
# NOTE: 督办 by a higher tier is written at the node that owns the ticket, so the event carries that
# node's tier. The supervising office is named in the required ``office``.
ACTIONS: Mapping[str, ActionRule] = MappingProxyType({rule.name: rule for rule in (
    _rule("dispatch", "派单", {S.NEW}, S.DISPATCHED, "dispatched"),
    _rule("accept", "签收", {S.DISPATCHED}, S.ACCEPTED, "accepted"),
    _rule("return", "退回", {S.DISPATCHED}, S.RETURNED, "returned", {Field.REASON}, RETURN_REASONS),
    _rule("redispatch", "改派", {S.RETURNED, S.REOPENED}, S.DISPATCHED, "redispatched"),
    _rule("start", "开始办理", {S.ACCEPTED, S.REOPENED, S.ESCALATED}, S.IN_PROGRESS, "started"),
    _rule("suspend", "挂起", {S.IN_PROGRESS}, S.PENDING, "suspended", {Field.NOTE}),
    _rule("resume", "恢复办理", {S.PENDING}, S.IN_PROGRESS, "resumed"),
    _rule("resolve", "办结", {S.IN_PROGRESS, S.ESCALATED}, S.RESOLVED, "resolved", {Field.NOTE}),
    _rule("answer_directly", "直接答复", {S.NEW}, S.RESOLVED, "answered_directly", {Field.NOTE}),
    _rule("start_callback", "开始回访", {S.RESOLVED}, S.VERIFYING, "callback_started"),
    _rule("close", "归档", {S.VERIFYING}, S.CLOSED, "closed"),
    _rule("reopen", "重办", {S.VERIFYING}, S.REOPENED, "reopened", {Field.NOTE}),
    _rule("merge", "并单", _UNRESOLVED, S.MERGED, "merged", {Field.TARGET}, target_is_local=True),
    # 提级 without --target requests the parent node to open its own linked ticket, whose id comes back
    # later as an "escalation_linked" event. With --target it links a higher-tier ticket that exists already.
    _rule("escalate", "提级", _UNRESOLVED, S.ESCALATED, "escalated"),
    _rule("cancel", "撤销", _UNRESOLVED | {S.ESCALATED}, S.CANCELLED, "cancelled", {Field.REASON}, CANCEL_REASONS),
    _rule("remind", "催办", OPEN_STATES, None, "reminded"),
    _rule("supervise", "督办", OPEN_STATES, None, "supervised", {Field.OFFICE, Field.NOTE}),
)})

# Event kinds written by the lifecycle; storage refuses them through its informational-event path.
LIFECYCLE_EVENT_KINDS: frozenset[str] = frozenset({"created"} | {rule.event_kind for rule in ACTIONS.values()})

# Actions that take another ticket as ``target``: required for 并单, optional for 提级.
TARGET_ACTIONS: frozenset[str] = frozenset({"merge", "escalate"})

# Event kind a lower tier writes when the higher tier reports the id of the ticket it opened for a 提级.
ESCALATION_LINKED_KIND = "escalation_linked"

# Event kinds that link the ticket to another one through ``payload["target_ticket_id"]``.
LINK_EVENT_KINDS: frozenset[str] = frozenset(
    {ACTIONS[name].event_kind for name in TARGET_ACTIONS} | {ESCALATION_LINKED_KIND}
)

# Chinese labels of event kinds for the event trail; kinds not listed are shown as stored.
EVENT_KIND_LABELS: Mapping[str, str] = MappingProxyType({
    "created": "受理",
    **{rule.event_kind: rule.label for rule in ACTIONS.values()},
    "duplicate_merged": "重复工单并入",
    "attachment_added": "添加附件",
    # Events the IVR writes while the call runs; they change no state.
    "agent_answered": "坐席接听",
    "call_ended": "通话结束",
    "emergency_alert": "紧急告警",
    "emergency_overflow": "紧急来电转上级",
    "callback_requested": "申请回电",
    "callback_task": "回电任务",
    "queue_callback": "排队回电",
    "voice_message": "语音留言",
    "satisfaction": "满意度评价",
    "extension_approved": "批准延期",
    # Events of the tier chain: the higher tier's linked ticket, and notices sent down to this tier.
    ESCALATION_LINKED_KIND: "上级已建关联工单",
    "policy_notice": "政策通知",
})


class TransitionRejected(ValueError):
    """An action that the lifecycle does not allow; the message is Chinese and names the fix."""

    def __init__(self, message: str, *, ticket_id: str, state: TicketState, action: str) -> None:
        super().__init__(message)
        self.ticket_id = ticket_id
        self.state = state
        self.action = action


class UnknownAction(TransitionRejected):
    """The action name is not in the lifecycle table."""


class InvalidTransition(TransitionRejected):
    """The action exists but does not apply in the ticket's current state."""


class MissingField(TransitionRejected):
    """The action needs a reason, note, office or target that was not given."""


class InvalidField(TransitionRejected):
    """A reason code, target ticket or other input has a value the action does not accept."""


@dataclass(frozen=True, slots=True)
class PlannedAction:
    """The result of a validated action: the event to append and the ticket snapshot after it."""

    rule: ActionRule
    event: TicketEvent
    ticket: Ticket


def event_kind_label(kind: str) -> str:
    return EVENT_KIND_LABELS.get(kind, kind)


def reason_label(reason: str | None) -> str | None:
    """Return the Chinese label of a 退回 or 撤销 reason code, or the code itself when it is not one."""
    if reason is None:
        return None
    return RETURN_REASONS.get(reason) or CANCEL_REASONS.get(reason) or reason


def allowed_actions(state: TicketState) -> list[ActionRule]:
    """Return the actions allowed in ``state``, in table order."""
    return [rule for rule in ACTIONS.values() if state in rule.from_states]


def rule_for_state_change(ticket_id: str, from_state: TicketState, to_state: TicketState) -> ActionRule:
    """Return the one action that moves a ticket from ``from_state`` to ``to_state``.

    Raises InvalidTransition when no action does.
    """
    for rule in ACTIONS.values():
        if rule.to_state is to_state and from_state in rule.from_states:
            return rule
    raise InvalidTransition(
        f"工单 {ticket_id} 当前状态为「{from_state.label}」，不能直接改为「{to_state.label}」。"
        f"{_describe_allowed(from_state)}",
        ticket_id=ticket_id, state=from_state, action=f"->{to_state.value}",
    )


def plan_action(
    ticket: Ticket,
    action: str,
    actor: str,
    tier: Tier,
    occurred_at: datetime,
    *,
    reason: str | None = None,
    note: str | None = None,
    office: str | None = None,
    target: Ticket | str | None = None,
    payload: Mapping[str, Any] | None = None,
) -> PlannedAction:
    """Validate ``action`` on ``ticket`` and build the next event and ticket snapshot.

    ``target`` is the other ticket of 并单 (merge) or 提级 (escalate). For a merge, pass the
    stored target ``Ticket`` so that its state and owner are checked. An escalation target
    lives at another tier, so only its id is known. Raises a ``TransitionRejected`` subclass.
    """
    occurred_at = require_utc(occurred_at, "occurred_at")
    reason = _blank_to_none(reason)
    note = _blank_to_none(note)
    office = _blank_to_none(office)
    target_ticket_id = target.ticket_id if isinstance(target, Ticket) else _blank_to_none(target)

    # Step 1: the action exists and applies in the current state.
    rule = ACTIONS.get(action)
    if rule is None:
        names = "、".join(f"{name}（{known.label}）" for name, known in ACTIONS.items())
        raise UnknownAction(
            f"工单 {ticket.ticket_id}：未知操作 {action!r}。可用的操作有：{names}。",
            ticket_id=ticket.ticket_id, state=ticket.state, action=action,
        )
    if ticket.state not in rule.from_states:
        raise InvalidTransition(
            f"工单 {ticket.ticket_id} 当前状态为「{ticket.state.label}」，不能执行「{rule.label}」（{rule.name}）。"
            f"{_describe_allowed(ticket.state)}",
            ticket_id=ticket.ticket_id, state=ticket.state, action=action,
        )

    # Step 2: required inputs are present and valid.
    provided = {Field.REASON: reason, Field.NOTE: note, Field.OFFICE: office, Field.TARGET: target_ticket_id}
    missing = [field for field in Field if field in rule.requires and provided[field] is None]
    if missing:
        raise MissingField(
            f"工单 {ticket.ticket_id}：「{rule.label}」必须提供"
            f"{'、'.join(field.label for field in missing)}。{_describe_reasons(rule)}",
            ticket_id=ticket.ticket_id, state=ticket.state, action=action,
        )
    _check_reason(ticket, rule, reason, note)
    _check_target(ticket, rule, target, target_ticket_id)

    # Step 3: the event and the snapshot after it.
    event_payload = dict(payload or {})
    if target_ticket_id is not None:
        event_payload["target_ticket_id"] = target_ticket_id
    to_state = rule.to_state
    seq = ticket.last_seq + 1
    event = TicketEvent(
        ticket_id=ticket.ticket_id,
        seq=seq,
        kind=rule.event_kind,
        actor=actor,
        tier=tier,
        office=office,
        occurred_at=occurred_at,
        from_state=ticket.state,
        to_state=to_state,
        reason=reason,
        note=note,
        payload=event_payload,
    )
    updated = replace(
        ticket,
        state=to_state or ticket.state,
        updated_at=max(occurred_at, ticket.updated_at),
        last_seq=seq,
    )
    return PlannedAction(rule=rule, event=event, ticket=updated)


def _check_reason(ticket: Ticket, rule: ActionRule, reason: str | None, note: str | None) -> None:
    if reason is None:
        return

    if rule.reasons is None:
        # Actions without a reason table take free text as the reason; only the table-driven ones are checked.
        return
    if reason not in rule.reasons:
        raise InvalidField(
            f"工单 {ticket.ticket_id}：「{rule.label}」的原因代码 {reason!r} 无效。{_describe_reasons(rule)}",
            ticket_id=ticket.ticket_id, state=ticket.state, action=rule.name,
        )
    if reason == OTHER_REASON and note is None:
        raise MissingField(
            f"工单 {ticket.ticket_id}：原因代码 other（其他）必须在备注（--note）中说明具体原因。",
            ticket_id=ticket.ticket_id, state=ticket.state, action=rule.name,
        )


def _check_target(ticket: Ticket, rule: ActionRule, target: Ticket | str | None, target_ticket_id: str | None) -> None:
    if target_ticket_id is None:
        return

    def reject(problem: str) -> InvalidField:
        return InvalidField(
            f"工单 {ticket.ticket_id}：「{rule.label}」的关联工单 {target_ticket_id} {problem}",
            ticket_id=ticket.ticket_id, state=ticket.state, action=rule.name,
        )

    if rule.name not in TARGET_ACTIONS:
        raise reject("只能用于并单（merge）或提级（escalate），请去掉 --target。")
    try:
        target_id = parse_ticket_id(target_ticket_id)
    except InvalidTicketId:
        raise reject("不是有效的工单号，格式应为 6 位区划代码-日期-4 位序号，例如 330106-20261204-0007。") from None
    if target_ticket_id == ticket.ticket_id:
        raise reject("就是本工单，请填写另一张工单的工单号。")

    if rule.name == "escalate" and target_id.region_code == ticket.region_code:
        raise reject(f"属于本区划 {ticket.region_code}，提级的关联工单应是上级受理的工单，请填写上级工单号。")

    if rule.target_is_local and isinstance(target, Ticket):
        if target.state in TERMINAL_STATES:
            raise reject(f"已是「{target.state.label}」状态，不能再并入，请并入仍在办理的工单。")
        if target.origin_node != ticket.origin_node:
            raise reject(f"属于节点 {target.origin_node}，只能并入本节点受理的工单。")


def _describe_allowed(state: TicketState) -> str:
    rules = allowed_actions(state)
    if not rules:
        return f"「{state.label}」是终结状态，不能再执行任何操作。"
    return "当前可执行的操作：" + "、".join(f"{rule.name}（{rule.label}）" for rule in rules) + "。"


def _describe_reasons(rule: ActionRule) -> str:
    if rule.reasons is None:
        return ""
    codes = "；".join(f"{code} = {label}" for code, label in rule.reasons.items())
    return f"可用的原因代码：{codes}。"


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    stripped = value.strip()
    return stripped or None
