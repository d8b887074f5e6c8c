"""Unit tests for the tier chain without a broker: envelope sender, instructions, outbox channels, 提级 and config."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from hotline.config import ConfigError, load_node_config
from storage.ticket_store import TicketStore
from tickets.envelope import (
    EnvelopeError,
    InstructionAck,
    TicketInstruction,
    decode_envelope,
    decode_instruction,
    decode_instruction_ack,
    encode_envelope,
    encode_instruction,
    encode_instruction_ack,
)
from tickets.lifecycle import LINK_EVENT_KINDS, plan_action
from tickets.model import Ticket, TicketCategory, TicketState, Tier
from tier_sync.escalation import ESCALATE_TO_KEY, accept_escalation, is_escalation_to
from tier_sync.instructions import InstructionApplier, InvalidInstruction, issue_instruction
from tier_sync.topics import sender_of_up_topic, up_instruction_acks_topic

S = TicketState
AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
COUNTY, CITY, PROVINCE = "county-330106", "city-330100", "province-330000"


def county_clock() -> datetime:
    return AT + timedelta(hours=1)


def city_clock() -> datetime:
    return AT + timedelta(hours=3)


@pytest.fixture
async def county(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106", clock=county_clock) as store:
        yield store


@pytest.fixture
async def city(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "city.db", CITY, "330100", clock=city_clock) as store:
        yield store


async def new_ticket(store: TicketStore, minutes: int = 0) -> str:
    ticket = await store.open_ticket(None, TicketCategory.ERTONG, "139****0001", AT + timedelta(minutes=minutes),
                                     "ivr", {})
    return ticket.ticket_id


async def deliver_upward(child: TicketStore, parent: TicketStore) -> list[str]:
    """Apply every pending upward row of ``child`` at ``parent`` and clear it, like one hop of the chain."""
    delivered = []
    for row in await child.pending_channel_outbox(None):
        await parent.apply_remote_event(decode_envelope(row.envelope))
        assert await child.mark_outbox_key_acked(row.event_id)
        delivered.append(row.event_id)
    return delivered


def instruction(kind: str, ticket_id: str, **fields: object) -> TicketInstruction:
    values: dict[str, object] = {
        "instruction_id": f"{CITY}:{kind}", "issuer_node": CITY, "child_node": COUNTY, "ticket_id": ticket_id,
        "kind": kind, "actor": "city-duty-01", "issued_at": AT + timedelta(hours=2),
    }
    values.update(fields)
    return TicketInstruction(**values)  # type: ignore[arg-type]


class TestEnvelopeSender:
    async def test_sender_round_trip(self, county: TicketStore) -> None:
        await new_ticket(county)
        (row,) = await county.pending_channel_outbox(None)
        original = decode_envelope(row.envelope)
        assert original.sender_node is None
        assert original.reply_node == COUNTY

        forwarded = decode_envelope(encode_envelope(dataclasses.replace(original, sender_node=CITY)))
        assert forwarded.sender_node == CITY
        assert forwarded.reply_node == CITY
        assert forwarded.origin_node == COUNTY
        assert forwarded.event == original.event

    async def test_invalid_sender_rejected(self, county: TicketStore) -> None:
        await new_ticket(county)
        (row,) = await county.pending_channel_outbox(None)
        document = json.loads(row.envelope)
        document["sender_node"] = "City/1"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(json.dumps(document).encode())
        assert caught.value.field == "sender_node"

    async def test_rejection_addressed_to_sender(self, county: TicketStore) -> None:
        await new_ticket(county)
        (row,) = await county.pending_channel_outbox(None)
        document = json.loads(row.envelope)
        document["sender_node"] = CITY
        document["tier"] = "village"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(json.dumps(document).encode())
        assert caught.value.sender_node == CITY
        assert caught.value.origin_node == COUNTY


class TestInstructionWire:
    def test_round_trip(self) -> None:
        sent = instruction("supervise", "330106-20261204-0001", office="杭州市民政局", note="请今日内反馈")
        assert decode_instruction(encode_instruction(sent)) == sent

    def test_unknown_kind_rejected(self) -> None:
        raw = encode_instruction(instruction("approve", "330106-20261204-0001"))
        with pytest.raises(EnvelopeError) as caught:
            decode_instruction(raw)
        assert caught.value.field == "kind"
        assert caught.value.origin_node == CITY

    def test_link_without_linked_ticket_rejected(self) -> None:
        raw = encode_instruction(instruction("link_escalation", "330106-20261204-0001"))
        with pytest.raises(EnvelopeError) as caught:
            decode_instruction(raw)
        assert caught.value.field == "linked_ticket_id"

    def test_instruction_id_with_at_sign_rejected(self) -> None:
        raw = encode_instruction(instruction("supervise", "330106-20261204-0001", instruction_id="a@b", note="x"))
        with pytest.raises(EnvelopeError) as caught:
            decode_instruction(raw)
        assert caught.value.field == "instruction_id"

    def test_ack_round_trip(self) -> None:
        ack = InstructionAck("city-330100:1", "rejected", COUNTY, "工单状态不符")
        assert decode_instruction_ack(encode_instruction_ack(ack)) == ack


class TestTopics:
    def test_instruction_ack_topic_names_child(self) -> None:
        topic = up_instruction_acks_topic(CITY, COUNTY)
        assert topic == "hotline/v1/city-330100/up/county-330106/instruction-acks"
        assert sender_of_up_topic(CITY, topic, "instruction-acks") == COUNTY

    def test_other_topics_have_no_sender(self) -> None:
        assert sender_of_up_topic(CITY, "hotline/v1/city-330100/up/events", "events") is None
        assert sender_of_up_topic(CITY, "hotline/v1/province-330000/up/county-330106/events", "events") is None
        assert sender_of_up_topic(CITY, "hotline/v1/city-330100/up/A+B/events", "events") is None


class TestOutboxChannels:
    async def test_emergency_copies_only_for_emergency_tickets(self, county: TicketStore) -> None:
        ordinary = await new_ticket(county)
        emergency = await new_ticket(county, 1)
        await county.append_event(emergency, "emergency_alert", "ivr", {"need": "frostbite"})

        added, mark = await county.queue_emergency_copies(PROVINCE, 0)
        assert added == 2
        copies = await county.pending_channel_outbox(PROVINCE)
        assert [row.event_id for row in copies] == [f"{emergency}#1@{PROVINCE}", f"{emergency}#2@{PROVINCE}"]
        assert all(row.ticket_id != ordinary for row in copies)

        # The upward channel is unchanged, and a second pass adds nothing.
        assert len(await county.pending_channel_outbox(None)) == 3
        assert await county.queue_emergency_copies(PROVINCE, mark) == (0, mark)
        assert (await county.queue_emergency_copies(PROVINCE, 0))[0] == 0

    async def test_later_events_of_emergency_ticket_copied(self, county: TicketStore) -> None:
        emergency = await new_ticket(county)
        await county.append_event(emergency, "emergency_alert", "ivr", {"need": "frostbite"})
        _, mark = await county.queue_emergency_copies(PROVINCE, 0)

        await county.apply_action(emergency, "dispatch", "agent-1001")
        added, _ = await county.queue_emergency_copies(PROVINCE, mark)
        assert added == 1
        assert (await county.pending_channel_outbox(PROVINCE))[-1].event_id == f"{emergency}#3@{PROVINCE}"

    async def test_ack_clears_only_its_channel(self, county: TicketStore) -> None:
        emergency = await new_ticket(county)
        await county.append_event(emergency, "emergency_alert", "ivr", {})
        await county.queue_emergency_copies(PROVINCE, 0)

        assert await county.mark_outbox_key_acked(f"{emergency}#1@{PROVINCE}")
        assert not await county.mark_outbox_key_acked(f"{emergency}#1@{PROVINCE}")
        assert [row.event_id for row in await county.pending_channel_outbox(None)] == [
            f"{emergency}#1", f"{emergency}#2"]
        assert [row.event_id for row in await county.pending_channel_outbox(PROVINCE)] == [f"{emergency}#2@{PROVINCE}"]

    async def test_instructions_outside_upward_channel(self, city: TicketStore) -> None:
        queued = await issue_instruction(city, COUNTY, "330106-20261204-0001", "supervise", "city-duty-01",
                                         note="请今日内反馈")
        assert await city.pending_channel_outbox(None) == []
        (row,) = await city.pending_instructions()
        assert row.event_id == f"down:{queued.instruction_id}@{COUNTY}"
        assert decode_instruction(row.envelope) == queued

    async def test_forward_row_queued_once(self, city: TicketStore) -> None:
        assert await city.queue_outbox_row("330106-20261204-0001#1", "330106-20261204-0001", 1, b"{}")
        assert not await city.queue_outbox_row("330106-20261204-0001#1", "330106-20261204-0001", 1, b"{}")
        assert len(await city.pending_channel_outbox(None)) == 1


class TestEscalation:
    def test_escalate_without_target_allowed(self) -> None:
        ticket = Ticket(
            ticket_id="330106-20261204-0001", origin_node=COUNTY, region_code="330106",
            category=TicketCategory.ERTONG, state=S.IN_PROGRESS, caller_masked="139****0001", call_id=None,
            created_at=AT, updated_at=AT, last_seq=3,
        )
        planned = plan_action(ticket, "escalate", "agent-1001", Tier.COUNTY, AT, payload={ESCALATE_TO_KEY: CITY})
        assert planned.ticket.state is S.ESCALATED
        assert "target_ticket_id" not in planned.event.payload
        assert "escalation_linked" in LINK_EVENT_KINDS

    async def test_parent_opens_linked_ticket_once(self, county: TicketStore, city: TicketStore) -> None:
        ticket_id = await new_ticket(county)
        await county.apply_action(ticket_id, "escalate", "agent-1001", note="需市级审批",
                                  payload={ESCALATE_TO_KEY: CITY})
        rows = await county.pending_channel_outbox(None)
        escalation = decode_envelope(rows[-1].envelope)
        for row in rows:
            await city.apply_remote_event(decode_envelope(row.envelope))
        assert is_escalation_to(escalation, CITY)
        assert not is_escalation_to(escalation, PROVINCE)

        first = await accept_escalation(city, escalation)
        second = await accept_escalation(city, escalation)
        assert second.ticket_id == first.ticket_id
        assert first.ticket_id == "330100-20261204-0001"
        assert first.origin_node == CITY
        assert first.created_at == city_clock()
        assert [(link.kind, link.linked_ticket_id) for link in await city.list_links(first.ticket_id)
                if link.ticket_id == first.ticket_id] == [("escalated_from", ticket_id)]
        (row,) = await city.pending_instructions()
        link = decode_instruction(row.envelope)
        assert (link.kind, link.ticket_id, link.linked_ticket_id) == ("link_escalation", ticket_id, first.ticket_id)

    async def test_link_instruction_recorded_once(self, county: TicketStore, city: TicketStore) -> None:
        ticket_id = await new_ticket(county)
        await county.apply_action(ticket_id, "escalate", "agent-1001", payload={ESCALATE_TO_KEY: CITY})
        applier = InstructionApplier(county, CITY)
        order = instruction("link_escalation", ticket_id, linked_ticket_id="330100-20261204-0001")

        assert (await applier.apply(order)).status == "applied"
        assert (await applier.apply(order)).status == "duplicate"
        events = await county.list_events(ticket_id)
        assert [event.kind for event in events] == ["created", "escalated", "escalation_linked"]
        assert (await county.get_ticket(ticket_id)).state is S.ESCALATED

        # The linked event travels up and records the link at the city as well.
        await deliver_upward(county, city)
        assert [(link.kind, link.linked_ticket_id) for link in await city.list_links(ticket_id)] == [
            ("escalation_linked", "330100-20261204-0001")]


class TestInstructionApplier:
    async def test_supervise_applied_then_duplicate(self, county: TicketStore) -> None:
        ticket_id = await new_ticket(county)
        applier = InstructionApplier(county, CITY)
        order = instruction("supervise", ticket_id, office="杭州市民政局", note="请今日内反馈")

        assert (await applier.apply(order)).status == "applied"
        assert (await applier.apply(order)).status == "duplicate"
        last = (await county.list_events(ticket_id))[-1]
        assert (last.kind, last.office, last.actor) == ("supervised", "杭州市民政局", "city-duty-01")
        assert last.payload == {"instruction_id": order.instruction_id, "issuer_node_id": CITY}
        assert applier.applied == 1
        assert applier.duplicates == 1

    async def test_assign_picks_dispatch_or_redispatch(self, county: TicketStore) -> None:
        fresh = await new_ticket(county)
        returned = await new_ticket(county, 1)
        await county.apply_action(returned, "dispatch", "agent-1001")
        await county.apply_action(returned, "return", "street-01", reason="not_our_duty")
        applier = InstructionApplier(county, CITY)

        for ticket_id, kind in ((fresh, "dispatched"), (returned, "redispatched")):
            ack = await applier.apply(instruction("assign", ticket_id, instruction_id=f"{CITY}:a-{ticket_id}",
                                                  office="西湖区民政局"))
            assert ack.status == "applied"
            last = (await county.list_events(ticket_id))[-1]
            assert last.kind == kind
            assert "西湖区民政局" in (last.note or "")

    async def test_return_resumes_escalated_ticket(self, county: TicketStore) -> None:
        ticket_id = await new_ticket(county)
        await county.apply_action(ticket_id, "escalate", "agent-1001", payload={ESCALATE_TO_KEY: CITY})
        ack = await InstructionApplier(county, CITY).apply(
            instruction("return", ticket_id, note="属县级职责，请自行办理", reason="not_our_duty"))
        assert ack.status == "applied"
        assert (await county.get_ticket(ticket_id)).state is S.IN_PROGRESS

    async def test_not_applicable_instruction_rejected(self, county: TicketStore) -> None:
        ticket_id = await new_ticket(county)
        await county.apply_action(ticket_id, "cancel", "agent-1001", reason="caller_withdrew")
        ack = await InstructionApplier(county, CITY).apply(
            instruction("supervise", ticket_id, office="杭州市民政局", note="请反馈"))
        assert ack.status == "rejected"
        assert "不能执行「督办」" in (ack.error or "")

    async def test_wrong_issuer_or_ticket_rejected(self, county: TicketStore) -> None:
        ticket_id = await new_ticket(county)
        applier = InstructionApplier(county, CITY)
        from_province = await applier.apply(instruction("supervise", ticket_id, issuer_node=PROVINCE, note="x"))
        unknown = await applier.apply(instruction("supervise", "330106-20261204-0099", note="x"))
        assert from_province.status == "rejected"
        assert PROVINCE in (from_province.error or "")
        assert unknown.status == "rejected"
        assert "330106-20261204-0099" in (unknown.error or "")
        assert len(await county.list_events(ticket_id)) == 1

    async def test_issue_checks_required_inputs(self, city: TicketStore) -> None:
        with pytest.raises(InvalidInstruction, match="--note"):
            await issue_instruction(city, COUNTY, "330106-20261204-0001", "supervise", "city-duty-01")
        with pytest.raises(InvalidInstruction, match="--office"):
            await issue_instruction(city, COUNTY, "330106-20261204-0001", "assign", "city-duty-01")
        with pytest.raises(InvalidInstruction, match="未知的下行指令类型"):
            await issue_instruction(city, COUNTY, "330106-20261204-0001", "approve", "city-duty-01")
        assert await city.pending_instructions() == []


CITY_CONFIG = """\
node_id: city-330100
tier: city
region_code: "330100"
database: /tmp/city.sqlite3
broker: {port: 18830}
parent: {node_id: province-330000, broker: {port: 18831}}
"""


class TestDirectUpstreamConfig:
    def test_direct_links_load(self, tmp_path: Path) -> None:
        path = tmp_path / "node.yaml"
        path.write_text(CITY_CONFIG + "direct_upstream:\n  - {node_id: ministry, broker: {port: 18832}}\n",
                        encoding="utf-8")
        config = load_node_config(path)
        assert [link.node_id for link in config.direct_upstream] == ["ministry"]

    @pytest.mark.parametrize("node_id", ["province-330000", "city-330100"])
    def test_direct_link_repeating_chain_rejected(self, tmp_path: Path, node_id: str) -> None:
        path = tmp_path / "node.yaml"
        path.write_text(CITY_CONFIG + f"direct_upstream:\n  - {{node_id: {node_id}, broker: {{port: 18832}}}}\n",
                        encoding="utf-8")
        with pytest.raises(ConfigError, match=f"节点 {node_id} 与本节点、上级节点"):
            load_node_config(path)
