"""Masking rules for personal data shown in logs, CLI output and upward payloads.

Rules: an ID number keeps its first character and last two, a mobile number keeps its
first three and last four digits, a landline keeps its area code and last two digits,
any other number keeps its last two digits, and a name keeps its first character.
"""

from __future__ import annotations

import re

# 18-character GB 11643 numbers (last character may be X) and 15-digit legacy numbers.
ID_NUMBER_RE = re.compile(r"(?<![0-9A-Za-z])([1-9][0-9]{16}[0-9Xx]|[1-9][0-9]{14})(?![0-9A-Za-z])")

# Mainland mobile numbers, with or without a +86/0086 prefix.
MOBILE_RE = re.compile(r"(?<![0-9])(?:\+?86|0086)?(1[3-9][0-9]{9})(?![0-9])")

# Any other run of 7 or more digits that could be a landline or unlisted number.
LONG_DIGITS_RE = re.compile(r"(?<![0-9])\+?[0-9]{7,}(?![0-9])")


def mask_id_number(value: str) -> str:
    if len(value) < 4:
        return "*" * len(value)
    return value[0] + "*" * (len(value) - 3) + value[-2:]


def mask_phone(value: str | None) -> str:
    """Mask a caller number; a missing number becomes the word for it."""
    if not value:
        return "无号码"

    digits = value.lstrip("+")
    mobile = MOBILE_RE.fullmatch(value)
    if mobile:
        number = mobile.group(1)
        return number[:3] + "****" + number[-4:]

    if len(digits) <= 4:
        return "*" * len(digits)

    # Mainland area codes: 010 and 02X have three digits, the others four.
    area = ""
    if digits.startswith("0") and len(digits) >= 10:
        area = digits[:3] if digits[1] in "12" else digits[:4]
    return area + "*" * (len(digits) - len(area) - 2) + digits[-2:]


def mask_name(value: str) -> str:
    if not value:
        return value
    return value[0] + "*" * (len(value) - 1)


def mask_text(text: str) -> str:
    """Mask every ID number and phone number that appears anywhere in free text."""
    text = ID_NUMBER_RE.sub(lambda m: mask_id_number(m.group(0)), text)
    text = MOBILE_RE.sub(lambda m: mask_phone(m.group(1)), text)
    return LONG_DIGITS_RE.sub(lambda m: mask_phone(m.group(0)), text)
