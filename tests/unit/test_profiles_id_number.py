"""GB 11643 ID numbers: check character, birth date, legacy upgrade and the synthetic generator."""

from __future__ import annotations

import random
from datetime import date

import pytest

from profiles.id_number import (
    IdNumberError,
    check_character,
    parse_id_number,
    synthetic_id_number,
    synthetic_legacy_id_number,
    upgrade_15_to_18,
)

TODAY = date(2026, 12, 4)


def test_check_character_published_example() -> None:
    # The worked example of GB 11643-1999 annex: 11010519491231002 → X.
    assert check_character("11010519491231002") == "X"


def test_check_character_all_remainders() -> None:
    # Every remainder 0..10 maps to 1 0 X 9 8 7 6 5 4 3 2.
    seen = {}
    rng = random.Random(7)
    while len(seen) < 11:
        first17 = "".join(str(rng.randint(0, 9)) for _ in range(17))
        total = sum(int(d) * w for d, w in zip(first17, (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)))
        seen[total % 11] = check_character(first17)
    assert [seen[r] for r in range(11)] == list("10X98765432")


def test_parse_valid_with_x() -> None:
    parsed = parse_id_number("11010519491231002x", today=TODAY)
    assert parsed.value == "11010519491231002X"
    assert parsed.birth_date == date(1949, 12, 31)
    assert parsed.upgraded is False


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("110105194912310021", "check_character"),
        ("11010519491231002", "length"),
        ("1101051949123100211", "length"),
        ("01010519491231002X", "characters"),
        ("1101051949123A002X", "characters"),
        ("110105194902300021", "birth_date"),
        ("110105189912310021", "birth_date_early"),
    ],
)
def test_parse_rejects(value: str, kind: str) -> None:
    with pytest.raises(IdNumberError) as caught:
        parse_id_number(value, today=TODAY)
    assert caught.value.kind == kind


def test_parse_rejects_future_birth() -> None:
    first17 = "11010520261205001"
    with pytest.raises(IdNumberError) as caught:
        parse_id_number(first17 + check_character(first17), today=TODAY)
    assert caught.value.kind == "birth_date_future"


def test_birth_today_is_accepted() -> None:
    first17 = "11010520261204001"
    assert parse_id_number(first17 + check_character(first17), today=TODAY).birth_date == TODAY


def test_leap_day_accepted_only_in_leap_year() -> None:
    leap = "11010520000229001"
    assert parse_id_number(leap + check_character(leap), today=TODAY).birth_date == date(2000, 2, 29)
    common = "11010519000229001"
    with pytest.raises(IdNumberError):
        parse_id_number(common + check_character(common), today=TODAY)


def test_upgrade_legacy_number() -> None:
    # 15-digit form of the published example: century 19 inserted, check character appended.
    assert upgrade_15_to_18("110105491231002", today=TODAY) == "11010519491231002X"
    parsed = parse_id_number("110105491231002", today=TODAY)
    assert parsed.upgraded is True


def test_upgrade_rejects_bad_legacy_date() -> None:
    with pytest.raises(IdNumberError) as caught:
        parse_id_number("110105491331002", today=TODAY)
    assert caught.value.kind == "birth_date"


def test_upgrade_rejects_18_character_input() -> None:
    with pytest.raises(IdNumberError):
        upgrade_15_to_18("11010519491231002X", today=TODAY)


def test_synthetic_numbers_validate() -> None:
    rng = random.Random(12349)
    for _ in range(2000):
        value = synthetic_id_number(rng, region_code="330106")
        assert parse_id_number(value, today=TODAY).value == value
        legacy = synthetic_legacy_id_number(rng)
        assert len(parse_id_number(legacy, today=TODAY).value) == 18


def test_error_messages_are_chinese_with_fix() -> None:
    with pytest.raises(IdNumberError) as caught:
        parse_id_number("110105194912310021", today=TODAY)
    assert "校验位不符" in caught.value.message
    assert "应为 X" in caught.value.message
