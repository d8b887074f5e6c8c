"""Unit tests for the ticket domain model: ids, states, categories and validation."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pytest

from tickets.call_record import CallOutcome, CallRecord
from tickets.model import (
    InvalidTicketId,
    TicketCategory,
    TicketEvent,
    TicketState,
    Tier,
    china_day,
    event_id_for,
    format_ticket_id,
    parse_ticket_id,
    tier_for_region_code,
)


class TestTicketId:
    def test_format_and_parse_round_trip(self) -> None:
        ticket_id = format_ticket_id("330106", date(2026, 12, 4), 7)
        assert ticket_id == "330106-20261204-0007"
        parsed = parse_ticket_id(ticket_id)
        assert parsed.region_code == "330106"
        assert parsed.day == date(2026, 12, 4)
        assert parsed.sequence == 7
        assert str(parsed) == ticket_id

    @pytest.mark.parametrize(
        "value",
        ["", "330106-20261204-7", "33010-20261204-0007", "330106-20261304-0007", "330106-20261204-0000",
         "330106_20261204_0007", " 330106-20261204-0007"],
    )
    def test_parse_rejects_malformed(self, value: str) -> None:
        with pytest.raises(InvalidTicketId) as caught:
            parse_ticket_id(value)
        assert repr(value) in str(caught.value)

    def test_sequence_outside_four_digits_rejected(self) -> None:
        with pytest.raises(ValueError):
            format_ticket_id("330106", date(2026, 12, 4), 10_000)

    def test_day_follows_shanghai_calendar(self) -> None:
        """16:30 UTC on 4 December is already 5 December in China."""
        assert china_day(datetime(2026, 12, 4, 16, 30, tzinfo=timezone.utc)) == date(2026, 12, 5)
        assert china_day(datetime(2026, 12, 4, 15, 59, tzinfo=timezone.utc)) == date(2026, 12, 4)

    def test_naive_time_rejected(self) -> None:
        with pytest.raises(ValueError):
            china_day(datetime(2026, 12, 4, 12, 0))

    def test_event_id_joins_ticket_and_seq(self) -> None:
        assert event_id_for("330106-20261204-0007", 3) == "330106-20261204-0007#3"


class TestLabels:
    def test_states_have_chinese_labels(self) -> None:
        assert TicketState.NEW.label == "受理"
        assert TicketState.PENDING.label == "挂起"
        assert all(state.label for state in TicketState)

    def test_categories_have_chinese_labels(self) -> None:
        assert TicketCategory("tekun").label == "特困供养"
        assert TicketCategory.LIULANG.label == "流浪乞讨救助"
        assert {category.value for category in TicketCategory} == {
            "dibao", "tekun", "linshi", "ertong", "yanglao", "liulang", "zhengce", "other"}

    @pytest.mark.parametrize(
        ("code", "tier"),
        [("330106", Tier.COUNTY), ("330100", Tier.CITY), ("330000", Tier.PROVINCE), ("000000", Tier.MINISTRY)],
    )
    def test_tier_from_region_code(self, code: str, tier: Tier) -> None:
        assert tier_for_region_code(code) is tier


class TestTicketEvent:
    def test_seq_starts_at_one(self) -> None:
        with pytest.raises(ValueError):
            TicketEvent("330106-20261204-0001", 0, "created", "ivr", Tier.COUNTY, None,
                        datetime(2026, 12, 4, tzinfo=timezone.utc), None, TicketState.NEW)

    def test_kind_must_be_machine_word(self) -> None:
        with pytest.raises(ValueError):
            TicketEvent("330106-20261204-0001", 1, "Created!", "ivr", Tier.COUNTY, None,
                        datetime(2026, 12, 4, tzinfo=timezone.utc), None, TicketState.NEW)


class TestCallRecord:
    def test_raw_caller_left_out_of_repr(self) -> None:
        record = CallRecord(
            call_id="1700000000.42", caller_raw="13812345678", caller_masked="138****5678",
            caller_flags=frozenset(), dialed="12349", started_at=datetime(2026, 12, 4, tzinfo=timezone.utc),
            outcome=CallOutcome.ANSWERED,
        )
        assert "13812345678" not in repr(record)
        assert "138****5678" in repr(record)
