"""Domain: checks on digit strings a caller types, and how they are read back.

A caller types an ID number's final ``X`` as ``*`` on the keypad; ``normalize_id_number``
turns it into ``X``. Read-back speaks each character from its own prompt (``digit_0`` to
``digit_9`` and ``digit_x``), where ``digit_1`` is recorded as 幺 as numbers are read on
the phone.
"""

from __future__ import annotations

import re

# GB 11643-1999 check digit: weights of the 17 leading digits, and the check character
# for each remainder of the weighted sum modulo 11.
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK_CHARS = "10X98765432"

# Mainland mobile numbers have 11 digits starting with 1; landlines are an area code
# starting with 0 followed by the local number, 10 to 12 digits in all.
_MOBILE_RE = re.compile(r"^1[3-9][0-9]{9}$")
_LANDLINE_RE = re.compile(r"^0[1-9][0-9]{8,10}$")


def normalize_id_number(digits: str) -> str:
    return digits.replace("*", "X")


def valid_id_number(value: str) -> bool:
    """Return True for an 18-character resident ID number whose check character matches.

    A 15-digit number of the first generation, which has no check character, is accepted
    when it is all digits.
    """
    if len(value) == 15:
        return value.isdigit()
    if len(value) != 18 or not value[:17].isdigit():
        return False
    total = sum(int(char) * weight for char, weight in zip(value[:17], _ID_WEIGHTS, strict=True))
    return value[17] == _ID_CHECK_CHARS[total % 11]


def valid_phone(value: str) -> bool:
    """Return True for a mainland mobile number or a landline number with its area code."""
    return bool(_MOBILE_RE.match(value) or _LANDLINE_RE.match(value))


def digit_prompts(value: str) -> list[str]:
    """Return the prompt ids that read ``value`` back character by character."""
    prompts = []
    for char in value:
        if char.isdigit():
            prompts.append(f"digit_{char}")
        elif char in "Xx*":
            prompts.append("digit_x")
        else:
            raise ValueError(f"cannot read back character {char!r}: only digits and X")
    return prompts
