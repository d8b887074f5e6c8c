"""TicketDesk turns the flow's emergency, message, callback and survey hooks into ticket events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hotline.ticket_desk import TicketDesk
from ivr.call import Call, CallerId
from ivr.engine import CallSession
from storage import TicketStore
from tickets.envelope import build_envelope
from tickets.model import TicketState


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", "county-330106", "330106") as opened:
        yield opened


def _session() -> CallSession:
    call = Call(call_id="1700000000.9", caller=CallerId.from_raw("13900000009"), dialed="12349",
                channel="PJSIP/x-9", started_at=datetime(2026, 12, 7, 2, 0, tzinfo=UTC), route="ivr/12349")
    return CallSession(call=call, flow_id="12349", flow_version="v1", path=["welcome", "main_menu"])


async def test_emergency_alert_keeps_state(store: TicketStore):
    desk = TicketDesk(store)
    session = _session()
    session.needs.update({"紧急", "听力障碍"})
    session.emergency_need = "紧急"
    session.priority = 9

    await desk.emergency_raised(session)

    assert session.ticket_id is not None
    events = await store.list_events(session.ticket_id)
    alert = events[-1]
    assert alert.kind == "emergency_alert"
    assert alert.to_state is None
    assert alert.payload["need"] == "紧急"
    assert "听力障碍" not in str(alert.payload)
    assert alert.payload["priority"] == 9
    assert events[0].payload["opened_because"] == "emergency_alert"


async def test_callback_number_masked_upward(store: TicketStore):
    desk = TicketDesk(store)
    session = _session()
    session.callback_number = "13900000056"

    await desk.callback_requested(session)

    events = await store.list_events(session.ticket_id)
    event = events[-1]
    assert event.kind == "callback_requested"
    assert event.payload["number"] == "13900000056"
    assert event.payload["caller_number"] is False
    ticket = await store.get_ticket(session.ticket_id)
    upward = build_envelope(ticket, event)
    assert "13900000056" not in str(upward.payload)


async def test_message_and_survey_events(store: TicketStore):
    desk = TicketDesk(store)
    session = _session()
    session.recording_file = "hotline-messages/msg-1700000000-9.wav"
    session.recording_seconds = 12.34
    session.survey_score = 5
    session.agent_id = "agent1"

    await desk.message_recorded(session)
    await desk.survey_answered(session)

    events = await store.list_events(session.ticket_id)
    assert [event.kind for event in events[-2:]] == ["voice_message", "satisfaction"]
    assert events[-2].payload == {"file_name": "hotline-messages/msg-1700000000-9.wav", "duration_seconds": 12.3}
    assert events[-1].payload == {"score": 5, "agent_id": "agent1"}
    assert len({event.ticket_id for event in events}) == 1


async def test_hook_events_do_not_change_state(store: TicketStore):
    desk = TicketDesk(store)
    session = _session()

    await desk.emergency_raised(session)
    await desk.survey_answered(session)

    ticket = await store.get_ticket(session.ticket_id)
    assert ticket.state is TicketState.NEW
