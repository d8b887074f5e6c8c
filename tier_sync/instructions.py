"""MQTT adapter support: instructions a parent tier sends down to a child (派单, 退回, 督办, 政策通知, 提级关联).

The parent queues an instruction as an outbox row of its own database. Its tier receiver
publishes the row to the child on the parent's broker and clears it on the child's ack.
The child applies it as an event of its own ticket, carrying ``instruction_id`` in the
payload, so a re-delivered instruction is recognised and acknowledged as a duplicate.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import TYPE_CHECKING

import structlog

from storage import TicketConflict, TicketNotFound
from tickets.envelope import INSTRUCTION_KINDS, InstructionAck, TicketInstruction, encode_instruction
from tickets.lifecycle import ACTIONS, TransitionRejected
from tickets.model import require_utc

if TYPE_CHECKING:
    from storage import TicketStore

log = structlog.get_logger(__name__)

# Lifecycle actions an "assign" instruction maps to, tried in this order by the ticket's state.
_ASSIGN_ACTIONS = ("dispatch", "redispatch")


class InvalidInstruction(ValueError):
    """An instruction that cannot be issued; the message is Chinese and names the fix."""


def escalation_link_instruction_id(parent_node_id: str, source_ticket_id: str) -> str:
    """Return the fixed id of the instruction that reports a 提级's linked ticket, so it is queued once."""
    return f"{parent_node_id}.link.{source_ticket_id}"


async def issue_instruction(
    store: TicketStore,
    child_node_id: str,
    ticket_id: str,
    kind: str,
    actor: str,
    *,
    office: str | None = None,
    reason: str | None = None,
    note: str | None = None,
    linked_ticket_id: str | None = None,
    instruction_id: str | None = None,
    issued_at: datetime | None = None,
) -> TicketInstruction:
    """Queue an instruction to ``child_node_id`` in the parent's outbox and return it.

    The running tier receiver of the parent publishes it. ``instruction_id`` defaults to a
    random one; pass a fixed id to make repeated calls queue the instruction once.
    """
    if kind not in INSTRUCTION_KINDS:
        names = "、".join(f"{name}（{label}）" for name, label in INSTRUCTION_KINDS.items())
        raise InvalidInstruction(f"未知的下行指令类型 {kind!r}，可用的类型有：{names}。")
    if kind in ("supervise", "return", "policy_notice") and not (note and note.strip()):
        raise InvalidInstruction(f"「{INSTRUCTION_KINDS[kind]}」指令必须填写说明（--note）。")
    if kind == "assign" and not (office and office.strip()):
        raise InvalidInstruction("「派单」指令必须填写承办部门（--office）。")

    instruction = TicketInstruction(
        instruction_id=instruction_id or f"{store.node_id}:{secrets.token_hex(8)}",
        issuer_node=store.node_id,
        child_node=child_node_id,
        ticket_id=ticket_id,
        kind=kind,
        actor=actor,
        issued_at=require_utc(issued_at or store.now(), "issued_at"),
        office=office,
        reason=reason,
        note=note,
        linked_ticket_id=linked_ticket_id,
    )
    key = store.instruction_key(instruction.instruction_id, child_node_id)
    added = await store.queue_outbox_row(key, ticket_id, 0, encode_instruction(instruction))
    log.info("instruction queued" if added else "instruction already queued", instruction_id=instruction.instruction_id,
             kind=kind, ticket_id=ticket_id, child_node=child_node_id)
    return instruction


class InstructionApplier:
    """Applies the instructions of one parent node to this node's tickets and builds the ack."""

    def __init__(self, store: TicketStore, parent_node_id: str) -> None:
        self.store = store
        self.parent_node_id = parent_node_id
        self.applied = 0
        self.duplicates = 0
        self.rejected = 0

    async def apply(self, instruction: TicketInstruction) -> InstructionAck:
        """Apply one instruction; a storage failure propagates so that no ack is sent and the parent retries."""
        node_id = self.store.node_id
        if instruction.child_node != node_id or instruction.issuer_node != self.parent_node_id:
            return self._reject(
                instruction,
                f"指令 {instruction.instruction_id} 由 {instruction.issuer_node} 发给 {instruction.child_node}，"
                f"但本节点是 {node_id}、上级是 {self.parent_node_id}，请检查上级节点的下级配置。",
            )

        if await self.store.find_instruction_event(instruction.ticket_id, instruction.instruction_id) is not None:
            self.duplicates += 1
            return InstructionAck(instruction.instruction_id, "duplicate", node_id)

        try:
            written = await self._apply(instruction)
        except TransitionRejected as exc:
            return self._reject(instruction, str(exc))
        except TicketNotFound:
            return self._reject(instruction, f"本节点 {node_id} 没有工单 {instruction.ticket_id}，请检查工单号。")
        except TicketConflict:
            return self._reject(
                instruction, f"工单 {instruction.ticket_id} 不是本节点 {node_id} 受理的，指令应发给受理节点。"
            )

        if not written:
            self.duplicates += 1
            return InstructionAck(instruction.instruction_id, "duplicate", node_id)
        self.applied += 1
        log.info("instruction applied", instruction_id=instruction.instruction_id, kind=instruction.kind,
                 ticket_id=instruction.ticket_id, issuer_node=instruction.issuer_node)
        return InstructionAck(instruction.instruction_id, "applied", node_id)

    async def _apply(self, instruction: TicketInstruction) -> bool:
        """Write the instruction's event; return False when it turned out to be applied already."""
        store = self.store
        payload = {"instruction_id": instruction.instruction_id, "issuer_node_id": instruction.issuer_node}
        common = {"note": instruction.note, "occurred_at": instruction.issued_at, "payload": payload}

        if instruction.kind == "link_escalation":
            assert instruction.linked_ticket_id is not None
            event = await store.record_escalation_link(
                instruction.ticket_id, instruction.linked_ticket_id, instruction.actor,
                payload=payload, occurred_at=instruction.issued_at,
            )
            return event is not None

        if instruction.kind == "policy_notice":
            await store.append_event(instruction.ticket_id, "policy_notice", instruction.actor, payload,
                                     note=instruction.note, office=instruction.office,
                                     occurred_at=instruction.issued_at)
            return True

        if instruction.kind == "supervise":
            # 督办 names the supervising office; the issuing node stands in when none was given.
            office = instruction.office or instruction.issuer_node
            await store.apply_action(instruction.ticket_id, "supervise", instruction.actor, office=office, **common)
            return True

        if instruction.kind == "return":
            # The higher tier hands an escalated ticket back: this tier resumes handling it.
            await store.apply_action(instruction.ticket_id, "start", instruction.actor, reason=instruction.reason,
                                     office=instruction.office, **common)
            return True

        # "assign": 派单 from a new ticket, 改派 from a returned or reopened one.
        ticket = await store.get_ticket(instruction.ticket_id)
        action = next((name for name in _ASSIGN_ACTIONS if ticket.state in ACTIONS[name].from_states),
                      _ASSIGN_ACTIONS[0])
        note = f"承办部门：{instruction.office}" + (f"；{instruction.note}" if instruction.note else "")
        await store.apply_action(instruction.ticket_id, action, instruction.actor, office=None,
                                 note=note, occurred_at=instruction.issued_at, payload=payload)
        return True

    def _reject(self, instruction: TicketInstruction, message: str) -> InstructionAck:
        self.rejected += 1
        log.error("instruction rejected", instruction_id=instruction.instruction_id, kind=instruction.kind,
                  ticket_id=instruction.ticket_id, issuer_node=instruction.issuer_node, error=message)
        return InstructionAck(instruction.instruction_id, "rejected", self.store.node_id, message)
