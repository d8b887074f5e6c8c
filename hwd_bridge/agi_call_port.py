"""FastAGI adapter: implement the domain's ``CallPort`` over one ``AgiChannel``.

``AgiCallPort`` translates flow operations into AGI commands and AGI outcomes into domain
results. ``AgiHangup`` (including ``AgiDeadChannel``) becomes ``CallEnded``, and every other
``AgiError`` becomes ``CallPortError``. ``call_from_agi_environment`` is the only place
that turns ``agi_*`` variables into a domain ``Call``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Final, TypeVar

import structlog

from hwd_bridge.agi_channel import AgiChannel, EndReason, StreamFileResult
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.errors import AgiError, AgiHangup
from ivr.call import Call, CallerId
from ivr.ports import (
    CallEnded,
    CallPortError,
    DialResult,
    DialStatus,
    DigitInput,
    DigitOutcome,
    PlaybackResult,
    RecordingResult,
)

log = structlog.get_logger(__name__)

_T = TypeVar("_T")

# A PJSIP endpoint name. Commas, '&' and '|' would add Dial options or extra targets.
_ENDPOINT_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")

# A number dialled out through a trunk, and a trunk (PJSIP endpoint) name.
_NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")

# A recording name: no path separators and no '.', which Record reads as the format.
_RECORDING_NAME_RE = re.compile(r"[^A-Za-z0-9_\-]")

# Record's RECORD_STATUS values (Asterisk 22 app_record.c) that mean nothing was kept.
_RECORD_FAILED = frozenset({"ERROR", ""})

# An answered Dial lasts as long as the conversation, so its reply may take this long.
DEFAULT_MAX_TALK_S: Final = 4 * 3600.0

# DIALSTATUS values set by app_dial in Asterisk 22.
_DIAL_STATUSES: Final = {
    "ANSWER": DialStatus.ANSWERED,
    "NOANSWER": DialStatus.NO_ANSWER,
    "BUSY": DialStatus.BUSY,
    "CONGESTION": DialStatus.CONGESTION,
    "CHANUNAVAIL": DialStatus.UNAVAILABLE,
    "CANCEL": DialStatus.CANCELLED,
}


class AgiCallPort:
    """``CallPort`` over an ``AgiChannel``.

    ``prompt_path`` maps a prompt id to the file Asterisk plays, without extension (for
    example ``"welcome"`` to ``"hotline/zh/welcome"``). When a prompt cannot be played the
    port logs a warning with the file name, plays ``fallback_prompt_id`` if given and
    returns ``PlaybackResult(played=False)``, so the flow continues.
    """

    def __init__(
        self,
        channel: AgiChannel,
        prompt_path: Callable[[str], str],
        *,
        fallback_prompt_id: str | None = None,
        max_talk_s: float = DEFAULT_MAX_TALK_S,
        recording_dir: str = "hotline-messages",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._channel = channel
        self._prompt_path = prompt_path
        self._fallback_prompt_id = fallback_prompt_id
        self._max_talk_s = max_talk_s
        self._recording_dir = recording_dir
        self._clock = clock

    async def answer(self) -> None:
        await self._call(self._channel.answer())

    async def play_prompt(self, prompt_id: str, *, interrupt_keys: str = "") -> PlaybackResult:
        path = self._prompt_path(prompt_id)
        result = await self._call(self._channel.stream_file(path, interrupt_keys))
        if result.played:
            return PlaybackResult(played=True, digit=result.digit, offset_samples=result.endpos)

        log.warning("prompt failed to play", prompt_id=prompt_id, file=path)
        fallback = await self._play_fallback(prompt_id, interrupt_keys)
        digit = fallback.digit if fallback is not None else None
        return PlaybackResult(played=False, digit=digit)

    async def collect_digits(self, prompt_id: str, *, max_digits: int, timeout_ms: int) -> DigitInput:
        # NOTE: GET DATA does not report whether its prompt played, so prompt_played is
        # always True here even when Asterisk could not open the file.
        path = self._prompt_path(prompt_id)
        result = await self._call(self._channel.get_data(path, timeout_ms, max_digits))

        if result.timed_out:
            outcome = DigitOutcome.PARTIAL_TIMEOUT if result.digits else DigitOutcome.TIMEOUT
        elif result.digits:
            outcome = DigitOutcome.COMPLETE
        else:
            outcome = DigitOutcome.TERMINATOR_ONLY
        return DigitInput(digits=result.digits, outcome=outcome)

    async def connect_agent(self, endpoint: str, *, ring_timeout_s: int) -> DialResult:
        """Dial ``PJSIP/<endpoint>`` for ``ring_timeout_s`` and return how the dial ended.

        Dial returns -1 when the caller hangs up. After an answered call that still returns
        the answered result (and the next command raises ``CallEnded``); while the agent
        rings it raises ``CallEnded``.
        """
        if not _ENDPOINT_RE.match(endpoint):
            raise ValueError(f"invalid agent endpoint {endpoint!r}: use letters, digits, '.', '_' and '-'")
        return await self._dial(f"PJSIP/{endpoint}", endpoint, ring_timeout_s)

    async def transfer_outside(self, number: str, trunk: str, *, ring_timeout_s: int) -> DialResult:
        """Dial ``PJSIP/<number>@<trunk>``: the trunk is a PJSIP endpoint toward the other tier or carrier.

        The result is read the same way as for an agent.
        """
        if not _NUMBER_RE.match(number):
            raise ValueError(f"invalid transfer number {number!r}: use digits with an optional leading '+'")
        if not _ENDPOINT_RE.match(trunk):
            raise ValueError(f"invalid trunk {trunk!r}: use letters, digits, '.', '_' and '-'")
        return await self._dial(f"PJSIP/{number}@{trunk}", trunk, ring_timeout_s)

    async def record_message(self, name: str, *, max_seconds: int, silence_s: int) -> RecordingResult:
        """Record after a beep with the Record application, until silence, ``#`` or ``max_seconds``.

        The file is ``<recording_dir>/<name>.wav`` under Asterisk's sounds folder, and
        the returned ``file_name`` is that path. The option ``k`` keeps the file when
        the caller hangs up during the recording.
        """
        safe_name = _RECORDING_NAME_RE.sub("-", name)
        file_name = f"{self._recording_dir}/{safe_name}.wav"
        started = self._clock()
        await self._call(self._channel.exec("Record", f"{file_name},{silence_s},{max_seconds},k",
                                            timeout_s=max_seconds + 30))
        elapsed = self._clock() - started
        status = await self._call(self._channel.get_variable("RECORD_STATUS")) or ""

        if status in _RECORD_FAILED:
            log.warning("recording failed", file=file_name, record_status=status)
            return RecordingResult(file_name=file_name, duration_s=0.0)

        # NOTE: Record does not report the length it kept; this is the time Record ran,
        # less the closing silence when silence ended it, so it is an estimate.
        spoken = elapsed - silence_s if status == "SILENCE" else elapsed
        log.info("recording finished", file=file_name, record_status=status, seconds=round(spoken, 1))
        return RecordingResult(file_name=file_name, duration_s=max(min(spoken, float(max_seconds)), 0.0))

    async def _dial(self, target: str, endpoint: str, ring_timeout_s: int) -> DialResult:
        if ring_timeout_s <= 0:
            raise ValueError(f"ring_timeout_s must be positive, got {ring_timeout_s}")

        # Step 1: dial. The reply comes when the far end did not answer or the call ended.
        timeout_s = ring_timeout_s + self._max_talk_s
        result = await self._call(
            self._channel.exec("Dial", f"{target},{ring_timeout_s}", timeout_s=timeout_s)
        )
        if result < 0:
            # The caller hung up, while the agent rang or after they talked. The AGI still
            # runs on the dead channel, so DIALSTATUS tells which.
            self._channel.mark_ended(EndReason.HANGUP_RESULT)
            answered = await self._dial_outcome_after_hangup(endpoint)
            if answered is not None:
                return answered
            log.info("caller hung up during Dial", endpoint=endpoint, dial_result=result)
            raise CallEnded(f"caller hung up while ringing {endpoint}")

        # Step 2: read how the dial ended.
        status_text = await self._call(self._channel.get_variable("DIALSTATUS"))
        answered_text = await self._call(self._channel.get_variable("ANSWEREDTIME"))
        status = _DIAL_STATUSES.get(status_text or "", DialStatus.FAILED)
        talk_seconds = _parse_seconds(answered_text)

        log.info("Dial finished", endpoint=endpoint, dial_status=status_text, talk_seconds=talk_seconds)
        return DialResult(status=status, answered=status is DialStatus.ANSWERED, talk_seconds=talk_seconds)

    async def _dial_outcome_after_hangup(self, endpoint: str) -> DialResult | None:
        """Return the answered Dial's result when the caller hung up after talking, else None."""
        try:
            status_text = await self._channel.get_variable_after_hangup("DIALSTATUS")
            answered_text = await self._channel.get_variable_after_hangup("ANSWEREDTIME")
        except AgiError as exc:
            log.debug("Dial outcome unreadable after hang-up", endpoint=endpoint, error=str(exc))
            return None

        if status_text != "ANSWER":
            return None
        talk_seconds = _parse_seconds(answered_text)
        log.info("caller hung up after talking to agent", endpoint=endpoint, talk_seconds=talk_seconds)
        return DialResult(status=DialStatus.ANSWERED, answered=True, talk_seconds=talk_seconds)

    async def set_call_variable(self, name: str, value: str) -> None:
        await self._call(self._channel.set_variable(name, value))

    async def hang_up(self) -> None:
        await self._call(self._channel.hangup())

    async def _play_fallback(self, failed_prompt_id: str, interrupt_keys: str) -> StreamFileResult | None:
        fallback_id = self._fallback_prompt_id
        if fallback_id is None or fallback_id == failed_prompt_id:
            return None

        path = self._prompt_path(fallback_id)
        result = await self._call(self._channel.stream_file(path, interrupt_keys))
        if not result.played:
            log.warning("fallback prompt failed to play", prompt_id=fallback_id, file=path)
            return None
        return result

    async def _call(self, operation: Awaitable[_T]) -> _T:
        try:
            return await operation
        except AgiHangup as exc:
            raise CallEnded(str(exc)) from exc
        except AgiError as exc:
            raise CallPortError(str(exc)) from exc


def call_from_agi_environment(env: AgiEnvironment, *, now: datetime | None = None) -> Call:
    """Build the domain ``Call`` from the AGI environment.

    ``agi_callerid`` sentinels such as ``unknown``, ``<unknown>``, empty and ``anonymous``
    become a caller without a number (``CallerId.from_raw``); a leading ``+`` is kept.
    ``started_at`` is ``now`` or the current UTC time.
    """
    return Call(
        call_id=env.uniqueid,
        caller=CallerId.from_raw(env.callerid_raw),
        dialed=env.extension,
        channel=env.channel,
        started_at=now if now is not None else datetime.now(UTC),
        route=env.network_script or "",
        params=dict(env.script_params),
        args=env.args,
    )


def _parse_seconds(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(float(value), 0.0)
    except ValueError:
        return 0.0
