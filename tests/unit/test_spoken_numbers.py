"""Unit tests: numbers turned into Mandarin prompt fragments, and the catalog that holds them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.spoken_numbers import (
    FRAGMENT_IDS,
    callers_ahead_fragments,
    cardinal_fragments,
    digits_fragments,
    queue_position_fragments,
    ticket_number_fragments,
    wait_minutes_fragments,
)
from speech.catalog import load_catalog

REPO = Path(__file__).resolve().parents[2]

# Fragment id to the character it speaks, so a table row reads as Mandarin.
SPOKEN = {
    "digit_0": "零", "num_1": "一", "num_2": "二", "num_liang": "两", "num_3": "三", "num_4": "四",
    "num_5": "五", "num_6": "六", "num_7": "七", "num_8": "八", "num_9": "九",
    "num_shi": "十", "num_bai": "百", "num_qian": "千", "num_wan": "万",
    "digit_1": "幺", "digit_2": "二", "digit_3": "三", "digit_4": "四", "digit_5": "五",
    "digit_6": "六", "digit_7": "七", "digit_8": "八", "digit_9": "九", "digit_x": "叉",
}


def spoken(fragments: list[str]) -> str:
    return "".join(SPOKEN[fragment] for fragment in fragments)


class TestCardinal:
    @pytest.mark.parametrize(("number", "expected"), [
        (0, "零"),
        (1, "一"),
        (2, "二"),
        (9, "九"),
        (10, "十"),
        (11, "十一"),
        (12, "十二"),
        (19, "十九"),
        (20, "二十"),
        (22, "二十二"),
        (99, "九十九"),
        (100, "一百"),
        (101, "一百零一"),
        (110, "一百一十"),
        (111, "一百一十一"),
        (200, "两百"),
        (305, "三百零五"),
        (1000, "一千"),
        (1001, "一千零一"),
        (1010, "一千零一十"),
        (1100, "一千一百"),
        (2000, "两千"),
        (9999, "九千九百九十九"),
        (10000, "一万"),
        (10001, "一万零一"),
        (10010, "一万零一十"),
        (10100, "一万零一百"),
        (11000, "一万一千"),
        (20000, "两万"),
        (100000, "十万"),
        (120000, "十二万"),
        (1000000, "一百万"),
        (99999999, "九千九百九十九万九千九百九十九"),
    ])
    def test_reading(self, number: int, expected: str) -> None:
        assert spoken(cardinal_fragments(number)) == expected

    @pytest.mark.parametrize(("number", "expected"), [(2, "两"), (12, "十二"), (22, "二十二"), (1, "一"), (200, "两百")])
    def test_before_measure_word(self, number: int, expected: str) -> None:
        assert spoken(cardinal_fragments(number, measure=True)) == expected

    @pytest.mark.parametrize("number", [-1, 100_000_000, 1.5, True])
    def test_out_of_range_rejected(self, number) -> None:
        with pytest.raises(ValueError, match="cannot read"):
            cardinal_fragments(number)


class TestDigits:
    def test_one_read_as_yao(self) -> None:
        assert spoken(digits_fragments("12349")) == "幺二三四九"

    def test_zero_and_x(self) -> None:
        assert spoken(digits_fragments("10X")) == "幺零叉"

    def test_other_characters_rejected(self) -> None:
        with pytest.raises(ValueError):
            digits_fragments("12-3")


class TestPhrases:
    def test_queue_position_keeps_er_in_ordinal(self) -> None:
        assert queue_position_fragments(2) == ["queue_position_intro", "word_di", "num_2", "unit_wei"]

    def test_queue_position_twelve(self) -> None:
        assert queue_position_fragments(12)[2:4] == ["num_shi", "num_2"]

    def test_queue_position_zero_rejected(self) -> None:
        with pytest.raises(ValueError):
            queue_position_fragments(0)

    def test_callers_ahead_uses_liang(self) -> None:
        assert callers_ahead_fragments(2) == ["queue_ahead_intro", "num_liang", "queue_ahead_callers"]

    def test_wait_minutes(self) -> None:
        assert wait_minutes_fragments(15) == ["wait_minutes_intro", "num_shi", "num_5", "unit_minutes"]

    def test_wait_below_one_minute_read_as_one(self) -> None:
        assert wait_minutes_fragments(0)[1:] == ["num_1", "unit_minutes"]

    def test_ticket_number_digit_by_digit(self) -> None:
        fragments = ticket_number_fragments("330102-20261205-0001")

        assert fragments[0] == "ticket_number_intro"
        assert spoken(fragments[1:]) == "三三零幺零二二零二六幺二零五零零零幺"

    def test_ticket_number_with_letters_rejected(self) -> None:
        with pytest.raises(ValueError, match="ticket id"):
            ticket_number_fragments("A-1")


def test_catalog_has_every_fragment_and_slow_version() -> None:
    """Every fragment the functions return is a catalog prompt, with a slow rendition."""
    catalog = set(load_catalog(REPO / "prompts" / "zh-CN.yaml"))

    assert FRAGMENT_IDS <= catalog, sorted(FRAGMENT_IDS - catalog)
    assert {f"{fragment}@slow" for fragment in FRAGMENT_IDS} <= catalog
