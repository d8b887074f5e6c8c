"""Domain: GB 11643 citizen ID numbers: validation, upgrade of 15-digit numbers and synthetic test data.

The 18-character form is a 6-digit region code (household registration at issue), an
8-digit birth date, a 3-digit order code (odd for men, even for women) and a check
character computed with ISO 7064 MOD 11-2. The 15-digit form issued before 1999 has a
6-digit birth date in the 1900s and no check character.

The region in an ID number is where the household was registered when the number was
issued, not where the person lives now. Nothing in the hotline routes by it or infers a
residence from it, so this module does not parse it beyond its shape.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARACTERS = "10X98765432"

# Earliest birth date accepted. The oldest people alive were born after 1900.
EARLIEST_BIRTH = date(1900, 1, 1)

_FORM_18_RE = re.compile(r"^[1-9][0-9]{16}[0-9X]$")
_FORM_15_RE = re.compile(r"^[1-9][0-9]{14}$")


class IdNumberError(ValueError):
    """An ID number that fails validation. ``message`` is Chinese and names the fix."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class IdNumber:
    """A validated 18-character ID number; ``upgraded`` is True when it was given in the 15-digit form."""

    value: str
    birth_date: date
    upgraded: bool = False


def check_character(first17: str) -> str:
    """Return the ISO 7064 MOD 11-2 check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError(f"expected 17 digits, got {len(first17)} characters")
    total = sum(int(digit) * weight for digit, weight in zip(first17, WEIGHTS))
    return CHECK_CHARACTERS[total % 11]


def _parse_birth_date(text: str, today: date) -> date:
    try:
        birth = date(int(text[0:4]), int(text[4:6]), int(text[6:8]))
    except ValueError:
        raise IdNumberError("birth_date", f"出生日期 {text} 不是真实日期，请核对第 7 至 14 位") from None

    if birth > today:
        raise IdNumberError("birth_date_future", f"出生日期 {text} 晚于今天，请核对第 7 至 14 位")
    if birth < EARLIEST_BIRTH:
        raise IdNumberError("birth_date_early", f"出生日期 {text} 早于 1900 年，请核对第 7 至 14 位")
    return birth


def parse_id_number(raw: str, *, today: date) -> IdNumber:
    """Validate an 18- or 15-character ID number and return it in the 18-character form.

    ``today`` is the current date in Asia/Shanghai, passed in so that tests pin it.
    Raises IdNumberError with a Chinese message naming the fault.
    """
    value = raw.strip().upper()

    if len(value) == 15:
        if not _FORM_15_RE.match(value):
            raise IdNumberError("characters", "15 位旧身份证号只能由数字组成，且首位不能为 0")
        birth = _parse_birth_date("19" + value[6:12], today)
        first17 = value[:6] + "19" + value[6:]
        return IdNumber(first17 + check_character(first17), birth, upgraded=True)

    if len(value) != 18:
        raise IdNumberError("length", f"身份证号应为 18 位（旧证 15 位），实际为 {len(value)} 位")
    if not _FORM_18_RE.match(value):
        raise IdNumberError("characters", "身份证号前 17 位应为数字（首位不为 0），末位为数字或 X")

    birth = _parse_birth_date(value[6:14], today)
    expected = check_character(value[:17])
    if value[17] != expected:
        raise IdNumberError(
            "check_character", f"校验位不符：按前 17 位应为 {expected}，实际为 {value[17]}，请核对是否抄错"
        )
    return IdNumber(value, birth)


def upgrade_15_to_18(value: str, *, today: date) -> str:
    """Return the 18-character form of a 15-digit legacy ID number."""
    if len(value.strip()) != 15:
        raise IdNumberError("length", "只有 15 位旧身份证号需要升位")
    return parse_id_number(value, today=today).value


def synthetic_id_number(
    rng: random.Random,
    *,
    region_code: str = "110101",
    earliest: date = date(1930, 1, 1),
    latest: date = date(2010, 12, 31),
) -> str:
    """Return a synthetic 18-character ID number with a valid check character, for test data.

    The birth date is drawn between ``earliest`` and ``latest`` and the order code at
    random. Such numbers can coincide with real ones, so they belong in test databases only.
    """
    span = (latest - earliest).days
    birth = date.fromordinal(earliest.toordinal() + rng.randint(0, span))
    order = rng.randint(1, 999)
    first17 = f"{region_code}{birth:%Y%m%d}{order:03d}"
    return first17 + check_character(first17)


def synthetic_legacy_id_number(rng: random.Random, *, region_code: str = "110101") -> str:
    """Return a synthetic 15-digit legacy ID number with a birth date in 1930-1984."""
    birth = date.fromordinal(date(1930, 1, 1).toordinal() + rng.randint(0, 20000))
    return f"{region_code}{birth:%y%m%d}{rng.randint(1, 999):03d}"
