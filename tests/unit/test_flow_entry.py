"""Digit entry checks: resident ID check character, phone numbers, read-back prompts."""

import pytest

from ivr.entry import digit_prompts, normalize_id_number, valid_id_number, valid_phone


# Synthetic numbers with valid GB 11643 check characters; the 15-digit one is the legacy form.
@pytest.mark.parametrize("value", ["33010619600101105X", "330106198003050027", "330106491231002"])
def test_valid_id_numbers(value):
    assert valid_id_number(value)


@pytest.mark.parametrize("value", ["330106194912310021", "33010619491231002", "3301061949123100XX", "33010649123100X", ""])
def test_invalid_id_numbers(value):
    assert not valid_id_number(value)


def test_star_is_x():
    assert normalize_id_number("33010619600101105*") == "33010619600101105X"


@pytest.mark.parametrize(("value", "valid"), [
    ("13900000001", True), ("02155501234", True), ("12349", False), ("23900000001", False), ("139000000012", False),
])
def test_phone_numbers(value, valid):
    assert valid_phone(value) is valid


def test_digit_prompts_read_one_as_yao_recording():
    assert digit_prompts("1029X") == ["digit_1", "digit_0", "digit_2", "digit_9", "digit_x"]


def test_digit_prompts_reject_letters():
    with pytest.raises(ValueError):
        digit_prompts("12a")
