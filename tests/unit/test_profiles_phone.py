"""Caller numbers: every presentation of one number normalises to the same E.164 form."""

from __future__ import annotations

import pytest

from profiles.phone import PhoneKind, PhoneNumberError, normalise_phone


@pytest.mark.parametrize(
    "raw",
    ["13900000001", "+8613900000001", "008613900000001", "8613900000001", "013900000001",
     "139 0000 0001", "139-0000-0001", "+86 139 0000 0001"],
)
def test_mobile_forms_agree(raw: str) -> None:
    number = normalise_phone(raw)
    assert number.e164 == "+8613900000001"
    assert number.kind is PhoneKind.MOBILE
    assert number.national == "13900000001"
    assert number.masked == "139****0001"


@pytest.mark.parametrize(
    "raw", ["02155501234", "021-55501234", "(021)55501234", "+862155501234", "862155501234", "00862155501234"]
)
def test_three_digit_area_code(raw: str) -> None:
    number = normalise_phone(raw)
    assert number.e164 == "+862155501234"
    assert number.kind is PhoneKind.LANDLINE
    assert number.area_code == "021"
    assert number.national == "021-55501234"
    assert number.masked == "021******34"


def test_beijing_010() -> None:
    assert normalise_phone("010-66661234").area_code == "010"
    assert normalise_phone("+861066661234").national == "010-66661234"


@pytest.mark.parametrize("raw", ["0571-88886666", "057188886666", "+8657188886666", "8657188886666"])
def test_four_digit_area_code(raw: str) -> None:
    number = normalise_phone(raw)
    assert number.e164 == "+8657188886666"
    assert number.area_code == "0571"
    assert number.masked == "0571******66"


def test_seven_digit_subscriber() -> None:
    assert normalise_phone("0571-8888666").e164 == "+865718888666"


def test_local_number_uses_default_area_code() -> None:
    assert normalise_phone("55501234", default_area_code="021").e164 == "+862155501234"


def test_local_number_without_default_rejected() -> None:
    with pytest.raises(PhoneNumberError) as caught:
        normalise_phone("55501234")
    assert "区号" in caught.value.message


@pytest.mark.parametrize(
    "raw", ["", "12349", "+1 202 555 0100", "139000000012", "12000000001", "0001234567", "021-0550123", "abc"]
)
def test_invalid_numbers_rejected(raw: str) -> None:
    with pytest.raises(PhoneNumberError):
        normalise_phone(raw)
