"""Unit tests for the wire envelope: encoding, masking and strict validation of incoming events."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from tickets.envelope import (
    EnvelopeError,
    EventAck,
    build_envelope,
    decode_ack,
    decode_envelope,
    encode_ack,
    encode_envelope,
)
from tickets.model import Ticket, TicketCategory, TicketEvent, TicketState, Tier

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)


def sample_document(**payload: Any) -> dict[str, Any]:
    ticket = Ticket("330106-20261204-0007", "county-330106", "330106", TicketCategory.DIBAO, TicketState.NEW,
                    "138****5678", "1700000000.42", AT, AT, 1)
    event = TicketEvent("330106-20261204-0007", 1, "created", "ivr", Tier.COUNTY, None, AT, None,
                        TicketState.NEW, note="回电 13812345678", payload=payload or {"call_id": "1700000000.42"})
    return json.loads(encode_envelope(build_envelope(ticket, event)))


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


class TestEncode:
    def test_round_trip(self) -> None:
        envelope = decode_envelope(encode(sample_document()))
        assert envelope.event_id == "330106-20261204-0007#1"
        assert envelope.origin_node == "county-330106"
        assert envelope.ticket.state is TicketState.NEW
        assert envelope.occurred_at == AT
        assert envelope.payload == {"call_id": "1700000000.42"}

    def test_free_text_masked_before_leaving(self) -> None:
        document = sample_document(text="家属电话 13812345678，身份证 330106199001011234")
        raw = encode(document)
        assert b"13812345678" not in raw
        assert "330106199001011234" not in raw.decode()
        assert document["event"]["note"] == "回电 138****5678"

    def test_id_fields_left_intact(self) -> None:
        assert sample_document()["payload"]["call_id"] == "1700000000.42"


class TestDecodeRejects:
    @pytest.mark.parametrize(
        ("path", "value", "field"),
        [
            (("schema",), 2, "schema"),
            (("tier",), "village", "tier"),
            (("occurred_at",), "2026-12-04T02:00:00", "occurred_at"),
            (("ticket", "last_seq"), 0, "ticket.last_seq"),
            (("ticket", "category"), "lottery", "ticket.category"),
            (("ticket", "region_code"), "330107", "ticket.region_code"),
            (("ticket", "caller_masked"), "13812345678", "ticket.caller_masked"),
            (("event", "seq"), "1", "event.seq"),
            (("event", "note"), "13812345678", "event.note"),
            (("payload",), [], "payload"),
            (("payload", "text"), "call 13812345678", "payload.text"),
            (("event", "extra"), 1, "event.extra"),
        ],
    )
    def test_bad_field_named(self, path: tuple[str, ...], value: Any, field: str) -> None:
        document = sample_document()
        target = document
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.field == field
        assert "13812345678" not in str(caught.value)

    def test_reply_address_kept_on_error(self) -> None:
        document = sample_document()
        document["tier"] = "village"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.origin_node == "county-330106"
        assert caught.value.event_id == "330106-20261204-0007#1"

    @pytest.mark.parametrize("raw", [b"", b"\xff\xfe", b"[1, 2]", b"{\"schema\": 1", b"null"])
    def test_garbage_rejected_cleanly(self, raw: bytes) -> None:
        with pytest.raises(EnvelopeError):
            decode_envelope(raw)

    def test_event_id_must_match_ticket(self) -> None:
        document = sample_document()
        document["event_id"] = "330106-20261204-0008#1"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.field == "ticket.ticket_id"

    def test_nan_in_payload_rejected(self) -> None:
        raw = encode(sample_document()).replace(b'"1700000000.42"}', b'"1700000000.42","x":NaN}')
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(raw)
        assert caught.value.field == "payload.x"


class TestAck:
    def test_round_trip(self) -> None:
        ack = decode_ack(encode_ack(EventAck("330106-20261204-0007#2", "duplicate", "city-330100")))
        assert ack.ticket_id == "330106-20261204-0007"
        assert ack.seq == 2
        assert ack.status == "duplicate"

    def test_unknown_status_rejected(self) -> None:
        raw = encode_ack(EventAck("330106-20261204-0007#2", "applied", "city-330100")).replace(b"applied", b"maybe")
        with pytest.raises(EnvelopeError) as caught:
            decode_ack(raw)
        assert caught.value.field == "status"
