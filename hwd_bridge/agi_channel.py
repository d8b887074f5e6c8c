"""FastAGI adapter: AGI commands on one connection, one at a time, each with its own timeout.

``AgiChannel`` wraps the ``StreamReader``/``StreamWriter`` of one FastAGI connection. It
sends a command, reads lines until that command's reply is complete, and turns hang-ups
into ``AgiHangup``:

- A ``HANGUP`` line is an asynchronous notice. It marks the call ended but is never taken
  as the reply, so the pending command still gets its own reply (or end of stream).
- End of stream, a reset connection and a ``511`` reply also mark the call ended.
- The call is marked ended once. Every later command raises ``AgiHangup`` without
  writing, and the lines Asterisk still sends (a second ``HANGUP``) are never read.
- A timed-out or cancelled command leaves a reply that may still arrive, so the channel
  refuses every later command rather than pair that reply with the wrong command.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from hotline.privacy import mask_text
from hwd_bridge.agi_protocol import (
    HANGUP_NOTICE,
    AgiReply,
    AgiReplyReader,
    check_reply,
    encode_command,
)
from hwd_bridge.errors import (
    AgiChannelBusy,
    AgiCommandTimeout,
    AgiDeadChannel,
    AgiHangup,
    AgiProtocolError,
)

log = structlog.get_logger(__name__)

DEFAULT_COMMAND_TIMEOUT_S: Final = 10.0

# AGI has no way to ask a prompt's length, so STREAM FILE and GET DATA allow this much
# playback time on top of their digit timeouts.
DEFAULT_MAX_PROMPT_S: Final = 120.0

# Extra time for Asterisk to open the file and send the reply after the media ends.
_REPLY_MARGIN_S: Final = 5.0

# CHANNEL STATUS values (AST_STATE_*) of a channel that is still there: 4 ringing,
# 5 remote end ringing, 6 up.
_LIVE_CHANNEL_STATES: Final = frozenset({4, 5, 6})

# Commands whose result is what the caller keyed in, which the trace masks.
_DIGIT_COMMANDS: Final = frozenset({"GET DATA", "STREAM FILE", "WAIT FOR DIGIT", "GET OPTION"})

_VARIABLE_NAME_RE = re.compile(r"^[A-Za-z0-9_()\-.:]+$")

# Receives (command name, seconds from sending the command to its complete reply) for every
# command that got a reply. None, the default, skips the clock reads.
RoundTripObserver = Callable[[str, float], None]
_round_trip_observer: RoundTripObserver | None = None


def set_round_trip_observer(observer: RoundTripObserver | None) -> None:
    """Install ``observer`` for the AGI round trips of every channel in this process, or remove it with None.

    Only the load benchmark (benchmarks/load_controller.py) installs one.
    """
    global _round_trip_observer
    _round_trip_observer = observer


class EndReason(enum.Enum):
    """Why a channel stopped accepting commands."""

    HANGUP_NOTICE = "hangup_notice"
    END_OF_STREAM = "end_of_stream"
    DEAD_CHANNEL = "dead_channel"
    HANGUP_RESULT = "hangup_result"
    LOCAL_HANGUP = "local_hangup"


@dataclass(frozen=True, slots=True)
class StreamFileResult:
    """Outcome of STREAM FILE on a live channel.

    ``played`` is False when Asterisk answered ``result=-1`` but the channel is still up,
    which means the file is missing or in a format Asterisk refuses. ``digit`` is the key
    that interrupted playback. ``endpos`` is the sample offset where playback stopped.
    """

    played: bool
    digit: str | None
    endpos: int


@dataclass(frozen=True, slots=True)
class GetDataResult:
    """Keys collected by GET DATA: ``digits`` as sent by Asterisk, ``timed_out`` when the
    reply carried ``(timeout)``."""

    digits: str
    timed_out: bool


class AgiChannel:
    """AGI commands on one FastAGI connection.

    Only one command may wait for its reply at a time, and a second raises ``AgiChannelBusy``.
    Methods raise ``AgiHangup`` (or its subclass ``AgiDeadChannel``) once the caller is
    gone, ``AgiCommandTimeout`` when a reply is late, and the other ``AgiError`` types when
    Asterisk rejects a command.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        call_id: str = "",
        command_timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S,
        max_prompt_s: float = DEFAULT_MAX_PROMPT_S,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._call_id = call_id
        self._command_timeout_s = command_timeout_s
        self._max_prompt_s = max_prompt_s
        self._reply_reader = AgiReplyReader()
        self._in_flight: str | None = None
        self._end_reason: EndReason | None = None
        self._unusable_reason: str | None = None
        self.replies_received = 0

    @property
    def ended(self) -> bool:
        """True once the call is known to be over. Later commands raise without writing."""
        return self._end_reason is not None

    @property
    def end_reason(self) -> EndReason | None:
        return self._end_reason

    @property
    def usable(self) -> bool:
        return self._end_reason is None and self._unusable_reason is None

    def mark_ended(self, reason: EndReason) -> None:
        """Mark the call ended. Only the first call has an effect.

        Callers use it when a command's result, such as Dial returning -1, shows that the
        caller hung up before any ``HANGUP`` notice was read.
        """
        if self._end_reason is not None:
            return
        self._end_reason = reason
        log.debug("agi channel ended", call_id=self._call_id, reason=reason.value)

    # --- Commands ---------------------------------------------------------------------------

    async def answer(self) -> None:
        await self.run_command("ANSWER")

    async def stream_file(
        self, path: str, escape_digits: str = "", *, max_prompt_s: float | None = None
    ) -> StreamFileResult:
        """Play ``path`` (no extension) until it ends or one of ``escape_digits`` is pressed.

        ``200 result=-1`` is ambiguous: Asterisk sends it both when the caller hangs up
        during playback and when it cannot open the file. A non-zero ``endpos`` or a
        ``HANGUP`` notice means a hang-up. Otherwise CHANNEL STATUS decides: a channel that
        is still ringing or up means the prompt failed, which is returned as
        ``played=False``. With ``AGISIGHUP=no`` a hang-up at the very start of playback
        can look like a failed prompt, and the next command then raises ``AgiDeadChannel``.
        """
        prompt_s = self._max_prompt_s if max_prompt_s is None else max_prompt_s
        reply = await self.run_command(
            "STREAM FILE", path, escape_digits, timeout_s=prompt_s + _REPLY_MARGIN_S, minus_one_is_failure=False
        )
        endpos = reply.endpos or 0

        if reply.result != "-1":
            code = reply.result_int
            if code is None or code < 0:
                raise AgiProtocolError(f"invalid STREAM FILE result {reply.result!r}")
            digit = chr(code) if code > 0 else None
            return StreamFileResult(played=True, digit=digit, endpos=endpos)

        if self.ended or endpos > 0:
            self.mark_ended(EndReason.HANGUP_RESULT)
            raise AgiHangup("caller hung up during STREAM FILE", command="STREAM FILE", reply=reply)

        state = await self.channel_status()
        if state not in _LIVE_CHANNEL_STATES:
            self.mark_ended(EndReason.HANGUP_RESULT)
            raise AgiHangup(f"channel state {state} after STREAM FILE failed", command="STREAM FILE", reply=reply)
        return StreamFileResult(played=False, digit=None, endpos=0)

    async def get_data(
        self, path: str, timeout_ms: int, max_digits: int, *, max_prompt_s: float | None = None
    ) -> GetDataResult:
        """Play ``path`` and collect up to ``max_digits`` keys, where ``#`` ends input early.

        Asterisk answers in one of five shapes: ``200 result=1234`` (keys, ended by max
        digits or ``#``), ``200 result= (timeout)`` (no key), ``200 result=12 (timeout)``
        (some keys, then silence), ``200 result=`` (only ``#``) and ``200 result=-1``
        (hang-up, raised as ``AgiHangup``). ``timeout_ms`` applies before the first key and
        between keys.
        """
        if timeout_ms <= 0 or max_digits <= 0:
            raise ValueError(f"timeout_ms and max_digits must be positive, got {timeout_ms} and {max_digits}")

        prompt_s = self._max_prompt_s if max_prompt_s is None else max_prompt_s
        budget_s = prompt_s + (timeout_ms / 1000) * max_digits + _REPLY_MARGIN_S
        reply = await self.run_command(
            "GET DATA", path, timeout_ms, max_digits, timeout_s=budget_s, minus_one_is_failure=False
        )

        if reply.result == "-1":
            self.mark_ended(EndReason.HANGUP_RESULT)
            raise AgiHangup("caller hung up during GET DATA", command="GET DATA", reply=reply)
        return GetDataResult(digits=reply.result or "", timed_out=reply.data == "timeout")

    async def get_variable(self, name: str) -> str | None:
        """Return the channel variable's value, or None when it is not set."""
        _check_variable_name(name)
        reply = await self.run_command("GET VARIABLE", name)
        if reply.result == "1":
            return reply.data if reply.data is not None else ""
        return None

    async def get_variable_after_hangup(self, name: str) -> str | None:
        """Read a channel variable once the caller has hung up but the AGI still runs.

        Asterisk runs GET VARIABLE on a dead channel (it is one of the commands res_agi
        marks dead-safe), which is how the outcome of a Dial the caller ended is learnt.
        Raises ``AgiHangup`` when the connection itself is gone.
        """
        _check_variable_name(name)
        reply = await self.run_command("GET VARIABLE", name, allow_after_hangup=True)
        if reply.result == "1":
            return reply.data if reply.data is not None else ""
        return None

    async def set_variable(self, name: str, value: str) -> None:
        _check_variable_name(name)
        await self.run_command("SET VARIABLE", name, value)

    async def exec(self, application: str, arguments: str = "", *, timeout_s: float | None = None) -> int:
        """Run a dialplan application and return its result, which the caller interprets.

        Dial returns -1 when the caller hangs up. ``-2`` (application not found) raises
        ``AgiProtocolError`` here, because it is a configuration fault.
        """
        reply = await self.run_command(
            "EXEC", application, arguments, timeout_s=timeout_s, minus_one_is_failure=False
        )
        result = reply.result_int
        if result is None:
            raise AgiProtocolError(f"invalid EXEC {application} result {reply.result!r}")
        if result == -2:
            raise AgiProtocolError(f"Asterisk has no application {application!r} (EXEC returned -2)")
        return result

    async def channel_status(self) -> int:
        """Return the channel's AST_STATE_* number (6 is up)."""
        reply = await self.run_command("CHANNEL STATUS", minus_one_is_failure=False)
        result = reply.result_int
        if result is None:
            raise AgiProtocolError(f"invalid CHANNEL STATUS result {reply.result!r}")
        return result

    async def verbose(self, message: str, level: int = 1) -> None:
        await self.run_command("VERBOSE", message, level)

    async def hangup(self) -> None:
        """Hang up the caller's channel. The channel accepts no command afterwards."""
        await self.run_command("HANGUP")
        self.mark_ended(EndReason.LOCAL_HANGUP)

    # --- One command and its reply ---------------------------------------------------------

    async def run_command(
        self,
        name: str,
        *args: str | int,
        timeout_s: float | None = None,
        minus_one_is_failure: bool = True,
        allow_after_hangup: bool = False,
    ) -> AgiReply:
        """Send one command and return its checked reply (see ``check_reply``).

        ``allow_after_hangup`` sends the command after a ``HANGUP`` notice or a hang-up
        result, for the few commands Asterisk accepts on a dead channel.
        """
        line = encode_command(name, *args)
        self._check_can_send(name, allow_after_hangup=allow_after_hangup)
        limit_s = self._command_timeout_s if timeout_s is None else timeout_s

        self._in_flight = name
        completed = False
        observer = _round_trip_observer
        try:
            self._trace_command(name, args)
            sent_at = time.perf_counter() if observer is not None else 0.0
            await self._write(name, line)
            async with asyncio.timeout(limit_s):
                reply = await self._read_reply(name)
            completed = True
            if observer is not None:
                observer(name, time.perf_counter() - sent_at)
        except TimeoutError:
            self._unusable_reason = f"{name} timed out after {limit_s:g} s"
            raise AgiCommandTimeout(
                f"AGI command {name} got no reply within {limit_s:g} s", command=name, timeout_s=limit_s
            ) from None
        finally:
            self._in_flight = None
            if not completed and self._unusable_reason is None and not self.ended:
                # Cancelled or failed mid-reply: the rest of the reply may still arrive.
                self._unusable_reason = f"{name} was interrupted before its reply"

        self.replies_received += 1
        self._trace_reply(name, reply)
        try:
            return check_reply(reply, name, minus_one_is_failure=minus_one_is_failure)
        except AgiDeadChannel:
            self.mark_ended(EndReason.DEAD_CHANNEL)
            raise
        except AgiHangup:
            self.mark_ended(EndReason.HANGUP_RESULT)
            raise

    def _check_can_send(self, name: str, *, allow_after_hangup: bool = False) -> None:
        if self._in_flight is not None:
            raise AgiChannelBusy(
                f"AGI command {name} started while {self._in_flight} still waits for its reply; "
                "send one command at a time"
            )
        dead_but_connected = self._end_reason in (EndReason.HANGUP_NOTICE, EndReason.HANGUP_RESULT)
        if self._end_reason is not None and not (allow_after_hangup and dead_but_connected):
            raise AgiHangup(
                f"AGI command {name} not sent: the call already ended ({self._end_reason.value})", command=name
            )
        if self._unusable_reason is not None:
            raise AgiProtocolError(f"AGI command {name} not sent: {self._unusable_reason}")

    async def _write(self, name: str, line: bytes) -> None:
        if self._writer.is_closing():
            self.mark_ended(EndReason.END_OF_STREAM)
            raise AgiHangup(f"AGI command {name} not sent: the connection is closed", command=name)
        try:
            self._writer.write(line)
            await self._writer.drain()
        except ConnectionError as exc:
            self.mark_ended(EndReason.END_OF_STREAM)
            raise AgiHangup(f"connection lost while sending {name}: {exc}", command=name) from exc

    async def _read_reply(self, name: str) -> AgiReply:
        while True:
            try:
                line = await self._reader.readline()
            except ConnectionError as exc:
                self.mark_ended(EndReason.END_OF_STREAM)
                raise AgiHangup(f"connection lost while waiting for the reply to {name}: {exc}", command=name) from exc
            except ValueError as exc:
                # StreamReader raises ValueError when a line exceeds its limit.
                raise AgiProtocolError(f"reply line to {name} is too long: {exc}") from exc

            if not line.endswith(b"\n"):
                # A line cut short by end of stream is dropped with the connection.
                self.mark_ended(EndReason.END_OF_STREAM)
                raise AgiHangup(f"connection closed while waiting for the reply to {name}", command=name)

            event = self._reply_reader.feed_line(line)
            if event is HANGUP_NOTICE:
                log.debug("agi trace", call_id=self._call_id, direction="<", command=name, line="HANGUP")
                self.mark_ended(EndReason.HANGUP_NOTICE)
                continue
            if isinstance(event, AgiReply):
                return event

    # --- Trace ------------------------------------------------------------------------------

    def _trace_command(self, name: str, args: Sequence[str | int]) -> None:
        # Masking every argument costs more than the command itself, so skip it when the
        # trace would be dropped anyway.
        if not log.is_enabled_for(logging.DEBUG):
            return
        if name == "SET VARIABLE" and len(args) == 2:
            shown: list[str] = [str(args[0]), f"<{len(str(args[1]))} chars>"]
        else:
            shown = [mask_text(str(arg)) for arg in args]
        log.debug("agi trace", call_id=self._call_id, direction=">", command=name, args=shown)

    def _trace_reply(self, name: str, reply: AgiReply) -> None:
        result = reply.result
        if result and name in _DIGIT_COMMANDS and result != "-1":
            result = "*" * len(result)
        log.debug(
            "agi trace",
            call_id=self._call_id,
            direction="<",
            command=name,
            code=reply.code,
            result=result,
            data_len=None if reply.data is None else len(reply.data),
            endpos=reply.endpos,
        )


def _check_variable_name(name: str) -> None:
    if not _VARIABLE_NAME_RE.match(name):
        raise ValueError(f"invalid channel variable name {name!r}: use letters, digits and _")

