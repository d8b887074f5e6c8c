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
from profiles.synthetic import synthetic_id_for_index

TODAY = date(2026, 12, 4)

# A fixed synthetic number whose check character is X: synthetic_id_for_index(17, "330106"),
# region 330106, born 1930-01-18, order 001. Its 15-digit legacy form drops "19" and the X.
SAMPLE = "33010619300118001X"
LEGACY_SAMPLE = "330106300118001"


def test_sample_is_synthetic() -> None:
    assert synthetic_id_for_index(17, "330106") == SAMPLE


def test_check_character_fixed_example() -> None:
    # Weighted sum of 33010619300118001 with 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 is 167;
    # 167 mod 11 = 2, and remainder 2 maps to X.
    assert check_character(SAMPLE[:17]) == "X"


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
    parsed = parse_id_number(SAMPLE.lower(), today=TODAY)
    assert parsed.value == SAMPLE
    assert parsed.birth_date == date(1930, 1, 18)
    assert parsed.upgraded is False


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (SAMPLE[:17] + "1", "check_character"),
        (SAMPLE[:17], "length"),
        (SAMPLE[:17] + "11", "length"),
        ("0" + SAMPLE[1:], "characters"),
        (SAMPLE[:13] + "A" + SAMPLE[14:], "characters"),
        ("330106193002300011", "birth_date"),
        ("330106189912310011", "birth_date_early"),
    ],
)
def test_parse_rejects(value: str, kind: str) -> None:
    with pytest.raises(IdNumberError) as caught:
        parse_id_number(value, today=TODAY)
    assert caught.value.kind == kind


def test_parse_rejects_future_birth() -> None:
    first17 = "33010620261205001"
    with pytest.raises(IdNumberError) as caught:
        parse_id_number(first17 + check_character(first17), today=TODAY)
    assert caught.value.kind == "birth_date_future"


def test_birth_today_is_accepted() -> None:
    first17 = "33010620261204001"
    assert parse_id_number(first17 + check_character(first17), today=TODAY).birth_date == TODAY


def test_leap_day_accepted_only_in_leap_year() -> None:
    leap = "33010620000229001"
    assert parse_id_number(leap + check_character(leap), today=TODAY).birth_date == date(2000, 2, 29)
    common = "33010619000229001"
    with pytest.raises(IdNumberError):
        parse_id_number(common + check_character(common), today=TODAY)


def test_upgrade_legacy_number() -> None:
    # Century 19 inserted, check character appended.
    assert upgrade_15_to_18(LEGACY_SAMPLE, today=TODAY) == SAMPLE
    parsed = parse_id_number(LEGACY_SAMPLE, today=TODAY)
    assert parsed.upgraded is True


def test_upgrade_rejects_bad_legacy_date() -> None:
    with pytest.raises(IdNumberError) as caught:
        parse_id_number("330106301318001", today=TODAY)
    assert caught.value.kind == "birth_date"


def test_upgrade_rejects_18_character_input() -> None:
    with pytest.raises(IdNumberError):
        upgrade_15_to_18(SAMPLE, today=TODAY)


def test_synthetic_numbers_validate() -> None:
    rng = random.Random(12349)
    for _ in range(2000):
        value = synthetic_id_number(rng, region_code="330106")
        assert parse_id_number(value, today=TODAY).value == value
        legacy = synthetic_legacy_id_number(rng)
        assert len(parse_id_number(legacy, today=TODAY).value) == 18


def test_error_messages_are_chinese_with_fix() -> None:
    with pytest.raises(IdNumberError) as caught:
        parse_id_number(SAMPLE[:17] + "1", today=TODAY)
    assert "校验位不符" in caught.value.message
    assert "应为 X" in caught.value.message
