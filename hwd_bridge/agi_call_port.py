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
from ivr.overflow import OverflowHandoff
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
# Dialplan subroutine (extensions.conf) that puts the overflow headers on the outgoing INVITE.
OVERFLOW_HEADERS_CONTEXT = "hotline-overflow-headers"
_HANDOFF_VALUE_RE = re.compile(r"^[A-Za-z0-9%._~+-]{1,400}$")

# A recording name: no path separators and no '.', which Record reads as the format.
_RECORDING_NAME_RE = re.compile(r"[^A-Za-z0-9_\-]")

# Record's RECORD_STATUS values (Asterisk 22 app_record.c) that mean nothing was kept.
_RECORD_FAILED = frozenset({"ERROR", ""})

# RECORD FILE writes the wav format at the channel's 8 kHz, so endpos counts 8 kHz samples.
_RECORD_SAMPLE_RATE_HZ: Final = 8000

# A music-on-hold class name from musiconhold.conf; a comma would add StartMusicOnHold arguments.
_MUSIC_CLASS_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")

# AST_STATE_* values of a channel that is still up: ringing (4, 5) or up (6).
_LIVE_CHANNEL_STATES: Final = frozenset({4, 5, 6})

# Time allowed beyond WAIT FOR DIGIT's own timeout for its reply to arrive.
_WAIT_REPLY_MARGIN_S: Final = 5.0

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
        answer_dir: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        call_recording_dir: str = "hotline-calls",
    ) -> None:
        self._channel = channel
        self._prompt_path = prompt_path
        self._fallback_prompt_id = fallback_prompt_id
        self._max_talk_s = max_talk_s
        self._recording_dir = recording_dir
        self._answer_dir = answer_dir
        self._clock = clock
        self._call_recording_dir = call_recording_dir

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

    async def transfer_outside(self, number: str, trunk: str, *, ring_timeout_s: int,
                               handoff: OverflowHandoff | None = None) -> DialResult:
        """Dial ``PJSIP/<number>@<trunk>``: the trunk is a PJSIP endpoint toward the other tier or carrier.

        With ``handoff``, Dial's pre-dial handler (option ``b``) runs the dialplan
        subroutine ``OVERFLOW_HEADERS_CONTEXT`` on the outgoing channel, which adds the
        ticket id, need tags and priority to the INVITE as ``X-Hotline-*`` headers. The
        result is read the same way as for an agent.
        """
        if not _NUMBER_RE.match(number):
            raise ValueError(f"invalid transfer number {number!r}: use digits with an optional leading '+'")
        if not _ENDPOINT_RE.match(trunk):
            raise ValueError(f"invalid trunk {trunk!r}: use letters, digits, '.', '_' and '-'")

        options = ""
        if handoff is not None:
            values = handoff.header_values()
            # Subroutine arguments are separated by '^' inside Dial's options; the values
            # are ticket ids, digits and percent-encoded text, which never contain '^', ',' or ')'.
            if any(not _HANDOFF_VALUE_RE.match(value) for value in values):
                raise ValueError(f"overflow header values {values!r} contain characters Dial cannot pass")
            options = f"b({OVERFLOW_HEADERS_CONTEXT}^s^1({'^'.join(values)}))"
        return await self._dial(f"PJSIP/{number}@{trunk}", trunk, ring_timeout_s, options)

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

    async def record_answer(self, name: str, *, max_seconds: int, silence_s: int = 1) -> RecordingResult:
        """Record a short spoken answer for the speech recogniser with RECORD FILE, after a beep.

        Recording stops after ``silence_s`` seconds of silence, on ``#`` or after
        ``max_seconds``. The file is ``<answer_dir>/<name>.wav`` (8 kHz mono 16-bit) and
        ``duration_s`` is its length from ``endpos``. ``answer_dir`` must be an absolute
        folder that exists on the switch: Asterisk 22's RECORD FILE neither creates folders
        nor finds relative ones, and answers ``200 result=-1 (writefile)``, which raises
        ``CallPortError``. A hang-up raises ``CallEnded``.
        """
        if max_seconds <= 0 or silence_s <= 0:
            raise ValueError(f"max_seconds and silence_s must be positive, got {max_seconds} and {silence_s}")
        if self._answer_dir is None or not self._answer_dir.startswith("/"):
            raise ValueError(f"record_answer needs an absolute answer_dir on the switch, got {self._answer_dir!r}")
        stem = f"{self._answer_dir}/{_RECORDING_NAME_RE.sub('-', name)}"
        reply = await self._call(self._channel.run_command(
            "RECORD FILE", stem, "wav", "#", max_seconds * 1000, "BEEP", f"s={silence_s}",
            timeout_s=max_seconds + 30,
        ))
        samples = max(reply.endpos or 0, 0)
        log.info("answer recorded", file=f"{stem}.wav", reason=reply.data, samples=samples)
        return RecordingResult(file_name=f"{stem}.wav", duration_s=samples / _RECORD_SAMPLE_RATE_HZ)

    async def _dial(self, target: str, endpoint: str, ring_timeout_s: int, options: str = "") -> DialResult:
        if ring_timeout_s <= 0:
            raise ValueError(f"ring_timeout_s must be positive, got {ring_timeout_s}")

        # Step 1: dial. The reply comes when the far end did not answer or the call ended.
        # Option g keeps the caller's channel up when the far end hangs up first, so the
        # flow goes on (a survey, a goodbye) instead of Asterisk hanging up on the caller.
        timeout_s = ring_timeout_s + self._max_talk_s
        started = self._clock()
        result = await self._call(
            self._channel.exec("Dial", f"{target},{ring_timeout_s},g{options}", timeout_s=timeout_s)
        )
        dial_seconds = self._clock() - started
        if result < 0:
            # The caller hung up, while the agent rang or after they talked. The AGI still
            # runs on the dead channel, so DIALSTATUS tells which.
            self._channel.mark_ended(EndReason.HANGUP_RESULT)
            answered = await self._dial_outcome_after_hangup(endpoint, dial_seconds)
            if answered is not None:
                return answered
            log.info("caller hung up during Dial", endpoint=endpoint, dial_result=result)
            raise CallEnded(f"caller hung up while ringing {endpoint}")

        # Step 2: read how the dial ended.
        status_text = await self._call(self._channel.get_variable("DIALSTATUS"))
        answered_text = await self._call(self._channel.get_variable("ANSWEREDTIME"))
        status = _DIAL_STATUSES.get(status_text or "", DialStatus.FAILED)
        talk_seconds = _talk_seconds(answered_text, dial_seconds)

        log.info("Dial finished", endpoint=endpoint, dial_status=status_text, talk_seconds=talk_seconds)
        return DialResult(status=status, answered=status is DialStatus.ANSWERED, talk_seconds=talk_seconds)

    async def _dial_outcome_after_hangup(self, endpoint: str, dial_seconds: float) -> DialResult | None:
        """Return the answered Dial's result when the caller hung up after talking, else None."""
        try:
            status_text = await self._channel.get_variable_after_hangup("DIALSTATUS")
            answered_text = await self._channel.get_variable_after_hangup("ANSWEREDTIME")
        except AgiError as exc:
            log.debug("Dial outcome unreadable after hang-up", endpoint=endpoint, error=str(exc))
            return None

        if status_text != "ANSWER":
            return None
        talk_seconds = _talk_seconds(answered_text, dial_seconds)
        log.info("caller hung up after talking to agent", endpoint=endpoint, talk_seconds=talk_seconds)
        return DialResult(status=DialStatus.ANSWERED, answered=True, talk_seconds=talk_seconds)

    async def start_hold_music(self, music_class: str) -> None:
        """Run ``StartMusicOnHold(<class>)``, which returns at once while the music keeps playing.

        A class missing from musiconhold.conf leaves the caller in silence; Asterisk logs a
        warning, and a failed result is logged here too, because the call can go on.
        """
        if not _MUSIC_CLASS_RE.match(music_class):
            raise ValueError(f"invalid music-on-hold class {music_class!r}: use lowercase letters, digits and '_'")
        await self._exec_optional("StartMusicOnHold", music_class)

    async def stop_hold_music(self) -> None:
        await self._exec_optional("StopMusicOnHold", "")

    async def _exec_optional(self, application: str, arguments: str) -> None:
        """Run an application the call can do without: a failed result on a live channel is only logged.

        EXEC returns -1 both for a hang-up and for some application failures, so CHANNEL
        STATUS decides which it was.
        """
        result = await self._call(self._channel.exec(application, arguments))
        if result >= 0:
            return
        state = await self._call(self._channel.channel_status())
        if state not in _LIVE_CHANNEL_STATES:
            self._channel.mark_ended(EndReason.HANGUP_RESULT)
            raise CallEnded(f"caller hung up during {application}")
        log.warning("application failed, call continues", application=application, arguments=arguments,
                    result=result)

    async def wait_for_key(self, timeout_ms: int) -> str | None:
        """Send ``WAIT FOR DIGIT <timeout_ms>``: result 0 is a timeout, -1 a hang-up, else the key's code."""
        if timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be positive, got {timeout_ms}")
        reply = await self._call(self._channel.run_command(
            "WAIT FOR DIGIT", timeout_ms, timeout_s=timeout_ms / 1000 + _WAIT_REPLY_MARGIN_S,
            minus_one_is_failure=False,
        ))
        code = reply.result_int
        if code is None:
            raise CallPortError(f"invalid WAIT FOR DIGIT result {reply.result!r}")
        if code < 0:
            self._channel.mark_ended(EndReason.HANGUP_RESULT)
            raise CallEnded("caller hung up during WAIT FOR DIGIT")
        return chr(code) if code > 0 else None

    async def start_call_recording(self, name: str) -> str:
        """Run ``MixMonitor(<call_recording_dir>/<name>.wav,b)`` and return that file name.

        A relative folder is under Asterisk's ``astspooldir/monitor``, and MixMonitor
        creates it. Option ``b`` records only while the channel is bridged, so the wait
        before the agent answers is not kept. The file is complete once the call ends.
        """
        file_name = f"{self._call_recording_dir}/{_RECORDING_NAME_RE.sub('-', name)}.wav"
        # A recording that cannot start must not cost the caller the agent: a failure on a
        # live channel is logged, and the ticket desk later logs the missing file.
        await self._exec_optional("MixMonitor", f"{file_name},b")
        log.info("call recording started", file=file_name)
        return file_name

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


def _talk_seconds(answered_text: str | None, dial_seconds: float) -> float:
    """Return the talk time of an answered Dial, never longer than the Dial itself lasted.

    After a bridge that the far end ended, Asterisk 22 has been seen to set ANSWEREDTIME
    to the time since the caller's own answer (93 s for a 3 s conversation), so the time
    Dial ran, measured here, caps it.
    """
    return round(min(_parse_seconds(answered_text), max(dial_seconds, 0.0)), 1)
