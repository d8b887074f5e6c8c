"""Domain: one inbound call as the flow engine sees it, free of any Asterisk vocabulary."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

# Values that switches and carriers put in the caller-ID field when there is no number.
# FastAGI writes "unknown", AMI writes "<unknown>" or leaves the header empty, and
# privacy-restricted calls arrive as "anonymous" or "restricted".
_NO_NUMBER_SENTINELS = frozenset(
    {"", "unknown", "<unknown>", "anonymous", "restricted", "private", "unavailable", "null"}
)

# A caller number may carry a leading "+" and digits only, once quotes and separators are gone.
_NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")
_SEPARATORS_RE = re.compile(r"[\s\-().]")


@dataclass(frozen=True, slots=True)
class CallerId:
    """Caller number as presented by the network.

    ``number`` is None when the network gave no usable number, in which case
    ``flags`` says why. ``raw`` keeps the value exactly as received, so it can be
    audited later, and must never be logged because it may be a real number.
    """

    raw: str
    number: str | None
    flags: frozenset[str] = frozenset()

    @classmethod
    def from_raw(cls, raw: str | None) -> CallerId:
        """Build a caller ID from a raw header value such as ``+8610555010`` or ``unknown``."""
        text = (raw or "").strip()
        unquoted = text.strip('"').strip()

        if unquoted.lower() in _NO_NUMBER_SENTINELS:
            return cls(raw=text, number=None, flags=frozenset({"no_caller_id"}))

        # "Name" <number> as Asterisk prints a full caller ID.
        if "<" in unquoted and unquoted.endswith(">"):
            unquoted = unquoted[unquoted.rindex("<") + 1 : -1].strip()
            if unquoted.lower() in _NO_NUMBER_SENTINELS:
                return cls(raw=text, number=None, flags=frozenset({"no_caller_id"}))

        candidate = _SEPARATORS_RE.sub("", unquoted)
        if not _NUMBER_RE.match(candidate):
            return cls(raw=text, number=None, flags=frozenset({"no_caller_id", "malformed"}))

        return cls(raw=text, number=candidate)

    @property
    def present(self) -> bool:
        return self.number is not None


@dataclass(frozen=True, slots=True)
class Call:
    """One inbound call handed to a flow.

    ``call_id`` is the switch's unique id for the caller's channel. ``params`` holds
    parameters from the request route (for example ``lang`` or ``flow``) and ``args``
    holds positional arguments, with empty ones kept in order.
    """

    call_id: str
    caller: CallerId
    dialed: str
    channel: str
    started_at: datetime
    route: str
    params: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
