"""MQTT adapter support: a parent tier's side of 提级, opening its own linked ticket for a child's escalation.

A child escalates with the lifecycle action ``escalate`` and no target, naming its parent
in ``payload["escalate_to_node_id"]``. When that event reaches the parent, the parent
opens a ticket of its own (id from its own region code, clocks from its own clock) and
sends the child a "link_escalation" instruction with the new id. Both steps are keyed by
the source ticket, so a re-delivered event opens nothing twice.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from tickets.envelope import EventEnvelope
from tier_sync.instructions import escalation_link_instruction_id, issue_instruction

if TYPE_CHECKING:
    from storage import TicketStore
    from tickets.model import Ticket

log = structlog.get_logger(__name__)

# Payload key of an "escalated" event that names the node asked to open the linked ticket.
ESCALATE_TO_KEY = "escalate_to_node_id"

# Actor of the events the sync writes on its own.
SYNC_ACTOR = "tier-sync"


def is_escalation_to(envelope: EventEnvelope, node_id: str) -> bool:
    """Tell whether ``envelope`` is a 提级 that requests ``node_id`` to open the linked ticket."""
    event = envelope.event
    return (
        event.kind == "escalated"
        and event.payload.get(ESCALATE_TO_KEY) == node_id
        and "target_ticket_id" not in event.payload
    )


async def accept_escalation(store: TicketStore, envelope: EventEnvelope) -> Ticket:
    """Open (once) this node's ticket for the escalated child ticket and queue the link instruction."""
    source = envelope.ticket
    ticket, opened = await store.open_escalated_ticket(
        source, envelope.event_id, SYNC_ACTOR, store.now(), note=envelope.event.note,
    )
    await issue_instruction(
        store, source.origin_node, source.ticket_id, "link_escalation", SYNC_ACTOR,
        linked_ticket_id=ticket.ticket_id,
        instruction_id=escalation_link_instruction_id(store.node_id, source.ticket_id),
    )
    log.info("escalation accepted", ticket_id=ticket.ticket_id, source_ticket_id=source.ticket_id,
             source_node=source.origin_node, opened=opened)
    return ticket
