"""Domain ports: what a flow needs from a live call, declared here and implemented by adapters.

The flow engine only sees these types. The FastAGI adapter in ``hwd_bridge`` implements
``CallPort``, and tests use small fakes of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from typing import Protocol


class CallEnded(Exception):
    """The caller's channel is gone: the caller hung up or the switch dropped the call.

    Raised by any ``CallPort`` method once the call has ended. It is an outcome, not a
    fault, and it is raised at most once per call by a well-behaved port; later calls
    raise it again without touching the switch.
    """


class CallPortError(Exception):
    """A command on a live call failed for a reason other than the caller hanging up."""


@dataclass(frozen=True, slots=True)
class PlaybackResult:
    """Outcome of playing one prompt.

    ``played`` is False when the switch could not play the file (missing or in a format
    it refuses) while the call is still up. ``digit`` is the key that interrupted playback.
    """

    played: bool
    digit: str | None = None
    offset_samples: int = 0


class DigitOutcome(enum.Enum):
    COMPLETE = "complete"  # max digits reached
    PARTIAL_TIMEOUT = "partial_timeout"  # some digits, then silence
    TIMEOUT = "timeout"  # no digit at all
    TERMINATOR_ONLY = "terminator_only"  # only '#' was pressed


@dataclass(frozen=True, slots=True)
class DigitInput:
    """Keys a caller pressed in answer to one prompt; ``*`` is kept as a digit."""

    digits: str
    outcome: DigitOutcome
    prompt_played: bool = True


class DialStatus(enum.Enum):
    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    CONGESTION = "congestion"
    UNAVAILABLE = "unavailable"
    CANCELLED = "cancelled"  # the caller hung up while the agent was ringing or talking
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class DialResult:
    """Outcome of connecting the caller to one agent endpoint."""

    status: DialStatus
    answered: bool
    talk_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class RecordingResult:
    """A voice message recorded on the switch.

    ``file_name`` is the recording's file name as the switch stored it (no folder), and
    ``duration_s`` is how long the caller spoke, 0 when nothing was recorded.
    """

    file_name: str
    duration_s: float


class CallPort(Protocol):
    """Operations a flow performs on one live call.

    Every method raises ``CallEnded`` once the caller is gone and ``CallPortError``
    when the switch rejects a command for another reason.
    """

    async def answer(self) -> None: ...

    async def play_prompt(self, prompt_id: str, *, interrupt_keys: str = "") -> PlaybackResult: ...

    async def collect_digits(
        self, prompt_id: str, *, max_digits: int, timeout_ms: int
    ) -> DigitInput: ...

    async def connect_agent(self, endpoint: str, *, ring_timeout_s: int) -> DialResult: ...

    async def set_call_variable(self, name: str, value: str) -> None: ...

    async def hang_up(self) -> None: ...

    async def record_message(self, name: str, *, max_seconds: int, silence_s: int) -> RecordingResult:
        """Record the caller after a beep into a file named after ``name``, until silence, ``#`` or the limit."""
        ...

    async def transfer_outside(self, number: str, trunk: str, *, ring_timeout_s: int) -> DialResult:
        """Dial ``number`` through the switch's trunk ``trunk`` and bridge the caller to it."""
        ...


class WorkCalendar(Protocol):
    """Working days of the hotline's office, in Asia/Shanghai dates."""

    def is_working_day(self, day: date) -> bool: ...
