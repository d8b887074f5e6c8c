"""Domain: what an emergency call carries when it overflows to the tier above.

A county that has no eligible agent for an emergency within the queue's configured time
sends the call up, either over the SIP trunk between the two tiers' switches or as an
escalated callback ticket. On the trunk, the call's ticket id, need tags and priority ride
in the INVITE as ``X-Hotline-*`` headers, so the tier above needs no second round of
questions and keeps the link to the lower tier's ticket.

Header values stay within the characters SIP and the dialplan pass unchanged: need tags
are UTF-8 percent-encoded and joined with ``+``, and no value contains a comma, which
would split the AGI arguments the receiving dialplan builds from them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

# Header names on the trunk INVITE; the receiving switch's dialplan reads the same names.
TICKET_HEADER = "X-Hotline-Ticket"
NEEDS_HEADER = "X-Hotline-Needs"
PRIORITY_HEADER = "X-Hotline-Priority"

# First AGI argument of a call the receiving dialplan marks as an overflow from below.
OVERFLOW_ARG = "overflow"

# Value sent for "no need tags" and "no ticket": an empty header would be dropped.
NONE_VALUE = "-"

_TICKET_RE = re.compile(r"^[0-9]{6}-[0-9]{8}-[0-9]{4,6}$")
_ENCODED_NEEDS_RE = re.compile(r"^[A-Za-z0-9%._~+-]{1,400}$")
MAX_NEEDS = 8
MAX_NEED_LENGTH = 16


class HandoffError(ValueError):
    """An overflow header value that cannot be used; the message names the value and the fix."""


@dataclass(frozen=True, slots=True)
class OverflowHandoff:
    """Facts the lower tier has already collected about an overflowing call."""

    ticket_id: str | None
    needs: frozenset[str]
    priority: int

    def header_values(self) -> tuple[str, str, str]:
        """Return the ticket, needs and priority header values, in that order."""
        needs = "+".join(quote(need, safe="") for need in sorted(self.needs)) or NONE_VALUE
        return self.ticket_id or NONE_VALUE, needs, str(self.priority)


def parse_handoff(ticket: str, needs: str, priority: str) -> OverflowHandoff:
    """Parse the three header values a lower tier sent; raise ``HandoffError`` for a bad one."""
    ticket = ticket.strip()
    ticket_id: str | None = None
    if ticket and ticket != NONE_VALUE:
        if not _TICKET_RE.match(ticket):
            raise HandoffError(f"{TICKET_HEADER} 的值“{ticket[:40]}”不是工单号，应形如 330106-20261205-0001")
        ticket_id = ticket

    needs = needs.strip()
    tags: set[str] = set()
    if needs and needs != NONE_VALUE:
        if not _ENCODED_NEEDS_RE.match(needs):
            raise HandoffError(f"{NEEDS_HEADER} 的值“{needs[:40]}”含有不允许的字符，"
                               f"应为百分号编码的需求标签，用“+”分隔")
        for part in needs.split("+"):
            try:
                tag = unquote(part, errors="strict").strip()
            except UnicodeDecodeError:
                raise HandoffError(f"{NEEDS_HEADER} 中的“{part[:40]}”解码后不是 UTF-8 文字，"
                                   f"请按 UTF-8 做百分号编码") from None
            if not tag or len(tag) > MAX_NEED_LENGTH:
                raise HandoffError(f"{NEEDS_HEADER} 中的需求标签“{tag[:20]}”为空或超过 {MAX_NEED_LENGTH} 个字")
            tags.add(tag)
        if len(tags) > MAX_NEEDS:
            raise HandoffError(f"{NEEDS_HEADER} 含 {len(tags)} 个需求标签，最多 {MAX_NEEDS} 个")

    priority = priority.strip()
    if not priority.isdigit() or not 0 <= int(priority) <= 9:
        raise HandoffError(f"{PRIORITY_HEADER} 的值“{priority[:10]}”应为 0 到 9 的整数")
    return OverflowHandoff(ticket_id, frozenset(tags), int(priority))


def handoff_from_args(args: tuple[str, ...]) -> OverflowHandoff | None:
    """Return the handoff of a call whose AGI arguments start with ``overflow``, else None.

    Raises ``HandoffError`` when the call is marked as an overflow but a value is bad.
    """
    if not args or args[0] != OVERFLOW_ARG:
        return None
    values = list(args[1:4]) + [""] * (3 - len(args[1:4]))
    return parse_handoff(*values)
