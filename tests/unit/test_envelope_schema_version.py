"""Envelope schema versions: a newer minor version is read, another major version is rejected with the fix."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest

from tickets.envelope import (
    SCHEMA_MAJOR,
    SCHEMA_MINOR,
    SCHEMA_VERSION,
    EnvelopeError,
    EventAck,
    build_envelope,
    decode_ack,
    decode_envelope,
    encode_ack,
    encode_envelope,
    parse_schema_version,
)
from tickets.model import Ticket, TicketCategory, TicketEvent, TicketState, Tier

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
EVENT_ID = "330106-20261204-0007#1"


def event_document() -> dict[str, Any]:
    ticket = Ticket("330106-20261204-0007", "county-330106", "330106", TicketCategory.DIBAO, TicketState.NEW,
                    "138****5678", "1700000000.42", AT, AT, 1)
    event = TicketEvent("330106-20261204-0007", 1, "created", "ivr", Tier.COUNTY, None, AT, None,
                        TicketState.NEW, payload={"call_id": "1700000000.42"})
    return json.loads(encode_envelope(build_envelope(ticket, event)))


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False).encode()


class TestParse:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(1, (1, 0)), ("1.0", (1, 0)), ("1.7", (1, 7)), ("2.0", (2, 0)), (0, (0, 0)), ("10.12", (10, 12))],
    )
    def test_valid_forms(self, value: object, expected: tuple[int, int]) -> None:
        assert parse_schema_version(value) == expected

    @pytest.mark.parametrize("value", [True, -1, 1.5, "1", "1.", ".1", "01.0", "1.0.0", "v1.0", " 1.0", None, [1]])
    def test_invalid_forms_rejected(self, value: object) -> None:
        with pytest.raises(EnvelopeError) as caught:
            parse_schema_version(value)
        assert caught.value.field == "schema"
        assert repr(value) in str(caught.value)


class TestEncoding:
    def test_current_version_sent(self) -> None:
        assert event_document()["schema"] == SCHEMA_VERSION

    def test_integer_form_while_minor_is_zero(self) -> None:
        # Nodes built before minor versions accept only the integer 1.
        if SCHEMA_MINOR == 0:
            assert SCHEMA_VERSION == SCHEMA_MAJOR
        else:
            assert SCHEMA_VERSION == f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"

    def test_ack_carries_version(self) -> None:
        document = json.loads(encode_ack(EventAck(EVENT_ID, "applied", "city-330100")))
        assert document["schema"] == SCHEMA_VERSION


class TestNewerMinor:
    def test_newer_minor_accepted(self) -> None:
        document = event_document()
        document["schema"] = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR + 1}"
        envelope = decode_envelope(encode(document))
        assert envelope.event_id == EVENT_ID

    def test_newer_minor_unknown_fields_ignored(self) -> None:
        document = event_document()
        document["schema"] = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR + 3}"
        document["priority"] = "high"
        document["ticket"]["channel"] = "wechat"
        document["event"]["language"] = "zh-CN"
        envelope = decode_envelope(encode(document))
        assert envelope.ticket.ticket_id == "330106-20261204-0007"
        assert envelope.event.kind == "created"

    @pytest.mark.parametrize(
        ("section", "field"), [(None, "priority"), ("ticket", "channel"), ("event", "language")]
    )
    def test_same_minor_unknown_field_rejected(self, section: str | None, field: str) -> None:
        document = event_document()
        document["schema"] = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR}"
        (document[section] if section else document)[field] = "x"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.field == (f"{section}.{field}" if section else field)

    def test_newer_minor_still_validates_known_fields(self) -> None:
        document = event_document()
        document["schema"] = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR + 1}"
        document["ticket"]["caller_masked"] = "13812345678"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.field == "ticket.caller_masked"

    def test_newer_minor_ack_accepted(self) -> None:
        document = json.loads(encode_ack(EventAck(EVENT_ID, "applied", "city-330100")))
        document["schema"] = f"{SCHEMA_MAJOR}.{SCHEMA_MINOR + 1}"
        document["applied_at"] = "2026-12-04T02:00:01Z"
        assert decode_ack(encode(document)).status == "applied"


class TestUnknownMajor:
    def test_newer_major_rejected_naming_value_and_fix(self) -> None:
        document = event_document()
        document["schema"] = f"{SCHEMA_MAJOR + 1}.0"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        message = str(caught.value)
        assert caught.value.field == "schema"
        assert repr(f"{SCHEMA_MAJOR + 1}.0") in message
        assert f"major version {SCHEMA_MAJOR + 1}" in message
        assert "upgrade the hotline software on this node" in message

    def test_newer_major_integer_form_rejected(self) -> None:
        document = event_document()
        document["schema"] = SCHEMA_MAJOR + 1
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.field == "schema"

    def test_older_major_names_sender_upgrade(self) -> None:
        document = event_document()
        document["schema"] = "0.9"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert "upgrade the hotline software on the sending node" in str(caught.value)

    def test_rejection_keeps_reply_address(self) -> None:
        # The receiver sends a rejection to the sender's acks topic, so both must be known.
        document = event_document()
        document["schema"] = f"{SCHEMA_MAJOR + 1}.0"
        document["format"] = "something new"
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.origin_node == "county-330106"
        assert caught.value.event_id == EVENT_ID

    def test_missing_schema_rejected(self) -> None:
        document = event_document()
        del document["schema"]
        with pytest.raises(EnvelopeError) as caught:
            decode_envelope(encode(document))
        assert caught.value.field == "schema"
        assert "missing" in str(caught.value)

    def test_newer_major_ack_rejected(self) -> None:
        document = json.loads(encode_ack(EventAck(EVENT_ID, "applied", "city-330100")))
        document["schema"] = SCHEMA_MAJOR + 1
        with pytest.raises(EnvelopeError) as caught:
            decode_ack(encode(document))
        assert caught.value.field == "schema"


def test_keyed_hashes_pass_upward_and_sealed_values_stay_home():
    """A 64-hex keyed hash is kept as it is; a *_sealed value is dropped from the upward payload."""
    from tickets.envelope import mask_upward_text

    ref = "ab" * 32
    payload = {"caller_ref": ref, "number_sealed": "sealed:v1:xyz", "note": "回拨 13900000042",
               "bad_ref": "13900000042"}

    upward = mask_upward_text(payload)

    assert upward["caller_ref"] == ref
    assert "number_sealed" not in upward
    assert "13900000042" not in upward["note"]
    assert upward["bad_ref"] != "13900000042"
