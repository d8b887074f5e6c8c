"""Domain ports: what a flow needs from a live call, declared here and implemented by adapters.

The flow engine only sees these types. The FastAGI adapter in ``hwd_bridge`` implements
``CallPort``, and tests use small fakes of it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ivr.overflow import OverflowHandoff


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

    async def transfer_outside(self, number: str, trunk: str, *, ring_timeout_s: int,
                               handoff: OverflowHandoff | None = None) -> DialResult:
        """Dial ``number`` through the switch's trunk ``trunk`` and bridge the caller to it.

        With ``handoff`` (an emergency overflow to the tier above) the call's ticket id,
        need tags and priority go along in the call setup.
        """
        ...

    async def start_hold_music(self, music_class: str) -> None:
        """Start the switch's music-on-hold class ``music_class`` on the call; it plays until stopped.

        Playing a prompt or dialing replaces the music.
        """
        ...

    async def stop_hold_music(self) -> None:
        """Stop music on hold; harmless when none plays."""
        ...

    async def wait_for_key(self, timeout_ms: int) -> str | None:
        """Wait up to ``timeout_ms`` for one key and return it, or None when none was pressed.

        Music on hold keeps playing meanwhile.
        """
        ...

    async def start_call_recording(self, name: str) -> str:
        """Start recording the call's conversation into a file named after ``name``; return the file name.

        Only the time the caller is connected to someone is recorded, and the recording
        ends with the call.
        """
        ...


class WorkCalendar(Protocol):
    """Working days of the hotline's office, in Asia/Shanghai dates."""

    def is_working_day(self, day: date) -> bool: ...


@dataclass(frozen=True, slots=True)
class OpenTicket:
    """A known caller's most recent ticket that is not closed, merged or cancelled."""

    ticket_id: str
    skill: str | None
    agent_id: str | None


@dataclass(frozen=True, slots=True)
class CallerProfile:
    """The facts about a caller matched to a citizen profile that the flow and the ACD may use.

    ``profile_ref`` is the profile's keyed hash, the only handle on the person. Need tags
    are sensitive (disability, health): they steer the flow and the ACD and are never logged.
    """

    profile_ref: str
    need_tags: frozenset[str] = frozenset()
    preferred_agent: str | None = None
    open_ticket: OpenTicket | None = None


class CallerDirectory(Protocol):
    """Port to the citizen profiles for the flow: a lookup at call start and the agent's screen.

    Implementations never raise for a storage fault: the call goes on as for an unknown
    caller, and they log the fault with the call id.
    """

    async def find_caller(self, call_id: str, caller_number: str | None) -> CallerProfile | None:
        """Return the profile of the caller with this number, or None for an unknown or unmatched caller."""
        ...

    async def agent_ringing(self, call_id: str, agent_id: str, caller: CallerProfile) -> None:
        """Put the known caller's masked summary on the ringing agent's screen."""
        ...
