"""Domain: normalisation of mainland caller numbers to one canonical form before lookup.

The switch may present the same person as 13900000001, +8613900000001, 008613900000001,
8613900000001 or 013900000001, and a landline as 02155501234, 021-55501234, +862155501234
or 862155501234. Every form becomes the E.164 string (``+86`` followed by the national
number without the trunk prefix 0): ``+8613900000001`` and ``+862155501234``. Keyed
hashes for lookup are computed over that string only.

Area codes: 010 and 02X (020-029) have two digits after the trunk prefix, every other
area code (03XX-09XX) has three, and a subscriber number has 7 or 8 digits.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hotline.privacy import mask_phone

_SEPARATORS_RE = re.compile(r"[\s\-()（）]")
_MOBILE_RE = re.compile(r"^1[3-9][0-9]{9}$")


class PhoneKind(enum.Enum):
    MOBILE = "mobile"
    LANDLINE = "landline"

    @property
    def label(self) -> str:
        return {"mobile": "手机", "landline": "固话"}[self.value]


class PhoneNumberError(ValueError):
    """A caller number that cannot be normalised; ``message`` is Chinese and names the fix."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class PhoneNumber:
    """A mainland number in canonical E.164 form, such as ``+8613900000001``."""

    e164: str
    kind: PhoneKind
    # Area code with its trunk prefix (such as "021"); empty for a mobile number.
    area_code: str

    @property
    def national(self) -> str:
        """The form people write: ``13900000001`` or ``021-55501234``."""
        digits = self.e164[3:]
        if self.kind is PhoneKind.MOBILE:
            return digits
        return f"{self.area_code}-{digits[len(self.area_code) - 1:]}"

    @property
    def masked(self) -> str:
        """Masked for display: a mobile keeps 3 + 4 digits, a landline its area code and last 2."""
        if self.kind is PhoneKind.MOBILE:
            return mask_phone(self.e164[3:])
        return mask_phone("0" + self.e164[3:])


def _area_code_length(national: str) -> int:
    """Return the length of the area code of a national number that starts with its trunk 0."""
    return 3 if national[1] in "12" else 4


def normalise_phone(raw: str, *, default_area_code: str | None = None) -> PhoneNumber:
    """Return the canonical form of a caller number, or raise PhoneNumberError.

    A landline without an area code (7 or 8 digits) needs ``default_area_code``, the
    node's own area code with its trunk prefix, such as "021".
    """
    text = _SEPARATORS_RE.sub("", raw or "")
    if not text:
        raise PhoneNumberError("号码为空，请填写手机号或带区号的固定电话")

    # Country code: +86, 0086 or a bare 86 that leaves a plausible national number.
    if text.startswith("+"):
        if not text.startswith("+86"):
            raise PhoneNumberError("只支持中国大陆号码（+86），请核对国家代码")
        text = text[3:]
    elif text.startswith("0086"):
        text = text[4:]
    elif text.startswith("86") and len(text) in (11, 12, 13) and not _MOBILE_RE.match(text):
        text = text[2:]

    if not text.isdigit():
        raise PhoneNumberError("号码只能包含数字、空格、短横线、括号和开头的 +86，请删除其他字符")
    if len(text) < 7:
        raise PhoneNumberError(f"号码只有 {len(text)} 位：手机号应为 11 位，固定电话应为区号加 7 或 8 位，请核对")

    # Mobile numbers, also when the network put a trunk 0 in front.
    if text.startswith("01") and _MOBILE_RE.match(text[1:]):
        text = text[1:]
    if _MOBILE_RE.match(text):
        return PhoneNumber("+86" + text, PhoneKind.MOBILE, "")

    # Landlines: restore the trunk prefix if the country code replaced it.
    if len(text) in (7, 8) and not text.startswith("0"):
        if default_area_code is None:
            raise PhoneNumberError("固定电话缺少区号，请写成“区号-号码”，例如 021-55501234")
        text = default_area_code + text
    elif not text.startswith("0"):
        text = "0" + text

    # 010 is the only area code starting 01.
    if len(text) < 3 or text[1] == "0" or (text[1] == "1" and text[2] != "0"):
        raise PhoneNumberError(f"区号 {text[:4]} 无效：区号为 010、02X 或 0 加三位数字（例如 0571），请核对")

    area_length = _area_code_length(text)
    subscriber = text[area_length:]
    if len(subscriber) not in (7, 8) or subscriber[0] in "01":
        raise PhoneNumberError(
            f"区号 {text[:area_length]} 之后应为 7 或 8 位本地号码（不以 0 或 1 开头），请核对位数"
        )
    return PhoneNumber("+86" + text[1:], PhoneKind.LANDLINE, text[:area_length])
