"""FastAGI adapter, sans-I/O: parse the AGI environment and replies, encode AGI commands.

No asyncio here. ``AgiEnvironmentParser.feed`` takes the bytes Asterisk sends first and
returns an ``AgiEnvironment`` once the blank line arrives. ``encode_command`` returns the
bytes of one command line. ``AgiReplyReader.feed_line`` turns reply lines into ``AgiReply``
objects and ``HANGUP`` notices, and ``check_reply`` maps a reply code to an exception.

Wire format, as written by res_agi.c in Asterisk 22:

- Environment: lines ``agi_<name>: <value>\\n`` (the value may be empty), ended by ``\\n``.
  A FastAGI request adds ``agi_network: yes`` and, when the URL has a path,
  ``agi_network_script: ivr/main?lang=zh``. Each dialplan argument becomes ``agi_arg_N``.
- Commands: one line per command. Asterisk splits it on spaces and tabs, a ``"`` toggles
  quoting and a ``\\`` makes the next character literal. It reads at most 2047 bytes of a line,
  and the rest of a longer line would run as a second command.
- Replies: ``200 result=<value>[ (<data>)][ endpos=<n>]``, ``510 Invalid or unknown
  command``, ``511 Command Not Permitted on a dead channel or intercept routine``, a
  single ``520 Invalid command syntax.  Proper usage not available.`` line, or a block
  that starts ``520-Invalid command syntax.  Proper usage follows:`` and ends with the line
  ``520 End of proper usage.``. Older versions send ``100 result=0 Trying...`` before the
  final reply of some commands.
- Asynchronous notice: ``HANGUP\\n`` when the channel hangs up (unless ``AGISIGHUP=no``) and
  again when the AGI ends. It is never the reply to the pending command.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final
from urllib.parse import parse_qsl

from hotline.privacy import mask_text
from hwd_bridge.errors import (
    AgiArgumentError,
    AgiCommandFailed,
    AgiDeadChannel,
    AgiHangup,
    AgiInvalidCommand,
    AgiProtocolError,
    AgiUsageError,
)

DEFAULT_MAX_ENVIRONMENT_BYTES: Final = 16 * 1024

# Asterisk reads a command into a 2048-byte buffer with fgets, so at most 2047 bytes
# including the newline arrive as one command.
MAX_COMMAND_BYTES: Final = 2047

# A 520 usage block is one command's help text. The cap only stops a peer that never
# sends the closing '520 ' line.
DEFAULT_MAX_USAGE_BYTES: Final = 64 * 1024

HANGUP_LINE: Final = "HANGUP"

_ENV_KEY_RE = re.compile(r"^agi_[a-z0-9_]+$")
_ARG_KEY_RE = re.compile(r"^agi_arg_([1-9][0-9]*)$")
_COMMAND_NAME_RE = re.compile(r"^[A-Z]+(?: [A-Z]+)*$")
_CODE_RE = re.compile(r"^(?P<code>[0-9]{3})(?P<sep>[ -]|$)(?P<text>.*)$")

# "result=<value>", an optional "(<data>)" and optional "key=value" fields such as endpos.
# The data group is greedy, so a variable value that itself contains ")" stays whole.
_RESULT_RE = re.compile(
    r"^result=(?P<result>\S*)(?: \((?P<data>.*)\))?(?P<fields>(?: [a-z_]+=\S*)*)$"
)
_FIELD_RE = re.compile(r"([a-z_]+)=(\S*)")


# --- Environment ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiEnvironment:
    """The ``agi_*`` variables Asterisk sends when a FastAGI call starts.

    ``network_script`` is the path part of ``agi_network_script`` (the route) and is None
    when the AGI URL had no path. ``script_params`` holds its parsed query string. ``args``
    holds ``agi_arg_1`` … ``agi_arg_N`` in order, empty ones included. ``raw`` keeps every
    variable as received. It contains the caller number in clear, so it must never be logged.
    """

    channel: str
    uniqueid: str
    linkedid: str | None
    callerid_raw: str
    calleridname_raw: str
    extension: str
    context: str
    network_script: str | None
    script_params: MappingProxyType[str, str]
    args: tuple[str, ...]
    raw: MappingProxyType[str, str]

    @classmethod
    def from_variables(cls, variables: dict[str, str]) -> AgiEnvironment:
        """Build the environment from parsed ``agi_*`` variables, raising if a required one is missing."""
        for required in ("agi_channel", "agi_uniqueid"):
            if not variables.get(required):
                raise AgiProtocolError(f"invalid AGI environment: {required} is missing or empty")

        script_path, script_params = _split_network_script(variables.get("agi_network_script", ""))

        return cls(
            channel=variables["agi_channel"],
            uniqueid=variables["agi_uniqueid"],
            linkedid=variables.get("agi_linkedid") or None,
            callerid_raw=variables.get("agi_callerid", ""),
            calleridname_raw=variables.get("agi_calleridname", ""),
            extension=variables.get("agi_extension", ""),
            context=variables.get("agi_context", ""),
            network_script=script_path,
            script_params=MappingProxyType(script_params),
            args=_collect_args(variables),
            raw=MappingProxyType(dict(variables)),
        )


def _split_network_script(value: str) -> tuple[str | None, dict[str, str]]:
    path, _, query = value.partition("?")
    path = path.strip("/")

    # NOTE: a parameter given twice keeps its last value.
    params = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    return (path or None), params


def _collect_args(variables: dict[str, str]) -> tuple[str, ...]:
    numbered: dict[int, str] = {}
    for key, value in variables.items():
        match = _ARG_KEY_RE.match(key)
        if match:
            numbered[int(match.group(1))] = value

    expected = list(range(1, len(numbered) + 1))
    if sorted(numbered) != expected:
        raise AgiProtocolError(
            f"invalid AGI environment: agi_arg_N numbers {sorted(numbered)} are not 1..{len(numbered)}"
        )
    return tuple(numbered[index] for index in expected)


class AgiEnvironmentParser:
    """Incremental parser of the AGI environment block.

    ``feed`` accepts the bytes in any chunking and returns the environment once the
    blank line arrives. Bytes after that line are kept in ``remainder``. It raises
    ``AgiProtocolError`` as soon as a line is malformed or the block exceeds
    ``max_bytes``, so a peer that is not Asterisk is rejected without reading further.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_ENVIRONMENT_BYTES) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes_received = 0
        self.remainder = b""
        self._pending = b""
        self._variables: dict[str, str] = {}
        self._environment: AgiEnvironment | None = None

    @property
    def complete(self) -> bool:
        return self._environment is not None

    def feed(self, data: bytes) -> AgiEnvironment | None:
        """Consume ``data`` and return the environment once its blank line has arrived, else None."""
        if self._environment is not None:
            self.remainder += data
            return self._environment

        self.bytes_received += len(data)
        buffer = self._pending + data

        while True:
            line_end = buffer.find(b"\n")
            if line_end < 0:
                break

            line = buffer[:line_end]
            buffer = buffer[line_end + 1 :]
            consumed = self.bytes_received - len(buffer)
            if consumed > self.max_bytes:
                raise self._too_long()

            if line in (b"", b"\r"):
                self._environment = AgiEnvironment.from_variables(self._variables)
                self.remainder = buffer
                self._pending = b""
                return self._environment

            self._add_line(line)

        # An unterminated line that already exceeds the cap cannot become valid.
        if self.bytes_received > self.max_bytes:
            raise self._too_long()
        self._pending = buffer
        return None

    def _add_line(self, line: bytes) -> None:
        text = line.rstrip(b"\r").decode("utf-8", errors="replace")
        key, colon, value = text.partition(":")

        if not colon or not _ENV_KEY_RE.match(key):
            shown = mask_text(repr(text[:60]))
            raise AgiProtocolError(f"invalid AGI environment line {shown}: expected 'agi_<name>: <value>'")
        if key in self._variables:
            raise AgiProtocolError(f"invalid AGI environment: {key} appears twice")

        # Asterisk writes "<key>: <value>", so exactly one space follows the colon.
        self._variables[key] = value[1:] if value.startswith(" ") else value

    def _too_long(self) -> AgiProtocolError:
        return AgiProtocolError(
            f"AGI environment exceeds {self.max_bytes} bytes without its closing blank line"
        )


# --- Commands -------------------------------------------------------------------------------


def encode_command(name: str, *args: str | int) -> bytes:
    """Encode one AGI command line, quoting every argument.

    ``name`` is the command's words in upper case (``"STREAM FILE"``). Each argument is
    wrapped in double quotes with ``\\`` and ``"`` escaped by a backslash, so spaces,
    quotes and empty values reach Asterisk as one argument each. Raise ``AgiArgumentError``
    for a CR, LF or NUL in any argument and for a line longer than ``MAX_COMMAND_BYTES``.
    """
    if not _COMMAND_NAME_RE.match(name):
        raise AgiArgumentError(f"invalid AGI command name {name!r}: expected upper-case words such as 'GET DATA'")

    parts = [name]
    for arg in args:
        text = str(arg)
        _check_argument(name, text)
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        parts.append(f'"{escaped}"')

    line = (" ".join(parts) + "\n").encode("utf-8")
    if len(line) > MAX_COMMAND_BYTES:
        raise AgiArgumentError(
            f"AGI command {name} is {len(line)} bytes long; Asterisk reads at most "
            f"{MAX_COMMAND_BYTES} bytes per command, so shorten its arguments"
        )
    return line


def _check_argument(name: str, text: str) -> None:
    for forbidden, label in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if forbidden in text:
            shown = mask_text(repr(text[:60]))
            raise AgiArgumentError(
                f"invalid argument {shown} for AGI command {name}: it contains {label}, "
                "which would end the command line early. Remove line breaks and NUL bytes"
            )


# --- Replies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AgiReply:
    """One complete reply to an AGI command.

    ``result`` is the text after ``result=`` (it may be empty, as in ``200 result=``) and
    is None for replies without it (510, 511, 520). ``data`` is the text in parentheses,
    such as ``timeout`` or a variable's value. ``fields`` holds ``key=value`` pairs that
    follow, such as ``endpos``. ``text`` is the message of a non-200 reply, including the
    usage lines of a 520 block. ``raw`` is every line of the reply as received.
    """

    code: int
    result: str | None = None
    data: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    text: str = ""
    raw: str = ""

    @property
    def endpos(self) -> int | None:
        value = self.fields.get("endpos")
        if value is None or not value.lstrip("-").isdigit():
            return None
        return int(value)

    @property
    def result_int(self) -> int | None:
        if self.result is None or not self.result.lstrip("-").isdigit():
            return None
        return int(self.result)


@dataclass(frozen=True, slots=True)
class HangupNotice:
    """An asynchronous ``HANGUP`` line: the channel hung up. It answers no command."""


HANGUP_NOTICE: Final = HangupNotice()


def parse_reply_line(line: str) -> AgiReply:
    """Parse one complete single-line reply such as ``200 result=1 (dtmf) endpos=8000``."""
    match = _CODE_RE.match(line)
    if match is None:
        raise AgiProtocolError(f"invalid AGI reply line {mask_text(repr(line[:80]))}: expected a 3-digit code")

    code = int(match.group("code"))
    text = match.group("text")
    if code != 200:
        return AgiReply(code=code, text=text, raw=line)

    result = _RESULT_RE.match(text)
    if result is None:
        return AgiReply(code=code, text=text, raw=line)

    fields = dict(_FIELD_RE.findall(result.group("fields")))
    return AgiReply(
        code=code,
        result=result.group("result"),
        data=result.group("data"),
        fields=fields,
        text=text,
        raw=line,
    )


class AgiReplyReader:
    """Turns reply lines into replies and hang-up notices, one line at a time.

    ``feed_line`` returns an ``AgiReply`` when a reply is complete, ``HANGUP_NOTICE`` for a
    ``HANGUP`` line, and None when more lines are needed: after a ``100`` continuation,
    inside a ``520-`` usage block, or for a stray blank line. A usage block is consumed up
    to its closing ``520 `` line, so it never shifts later replies.
    """

    def __init__(self, max_usage_bytes: int = DEFAULT_MAX_USAGE_BYTES) -> None:
        self.max_usage_bytes = max_usage_bytes
        self._usage_lines: list[str] | None = None
        self._usage_bytes = 0

    @property
    def in_usage_block(self) -> bool:
        return self._usage_lines is not None

    def feed_line(self, raw_line: bytes) -> AgiReply | HangupNotice | None:
        line = raw_line.rstrip(b"\n").rstrip(b"\r").decode("utf-8", errors="replace")

        if self._usage_lines is not None:
            return self._feed_usage_line(line, len(raw_line))

        if line == HANGUP_LINE:
            return HANGUP_NOTICE
        if not line:
            return None

        if line.startswith("520-"):
            self._usage_lines = [line]
            self._usage_bytes = len(raw_line)
            return None

        reply = parse_reply_line(line)
        if reply.code == 100:
            return None
        return reply

    def _feed_usage_line(self, line: str, size: int) -> AgiReply | None:
        assert self._usage_lines is not None
        self._usage_lines.append(line)
        self._usage_bytes += size
        if self._usage_bytes > self.max_usage_bytes:
            raise AgiProtocolError(
                f"AGI 520 usage block exceeds {self.max_usage_bytes} bytes without its closing '520 ' line"
            )

        if not line.startswith("520 "):
            return None

        lines = self._usage_lines
        self._usage_lines = None
        self._usage_bytes = 0
        usage = "\n".join(entry.removeprefix("520-") for entry in lines)
        return AgiReply(code=520, text=usage, raw="\n".join(lines))


def check_reply(reply: AgiReply, command: str, *, minus_one_is_failure: bool = True) -> AgiReply:
    """Return ``reply`` if it is a success, or raise the exception for its code.

    - ``200`` with data ``hangup`` raises ``AgiHangup``.
    - ``200 result=-1`` raises ``AgiCommandFailed`` unless ``minus_one_is_failure`` is
      False, for commands where -1 needs a closer look (STREAM FILE, GET DATA, EXEC).
    - ``510`` raises ``AgiInvalidCommand``, ``511`` ``AgiDeadChannel`` and ``520``
      ``AgiUsageError``. A ``200`` without ``result=`` and any other code raise
      ``AgiProtocolError``.
    """
    if reply.code == 200:
        if reply.result is None:
            raise AgiProtocolError(f"invalid AGI reply to {command}: 200 without result= ({reply.raw[:80]!r})")
        if reply.data == "hangup":
            raise AgiHangup(f"AGI command {command} ended because the channel hung up", command=command, reply=reply)
        if reply.result == "-1" and minus_one_is_failure:
            raise AgiCommandFailed(f"AGI command {command} failed with result -1", command=command, reply=reply)
        return reply

    if reply.code == 510:
        raise AgiInvalidCommand(f"Asterisk does not know the AGI command {command} (510)", command=command, reply=reply)
    if reply.code == 511:
        raise AgiDeadChannel(f"AGI command {command} rejected: the channel is dead (511)", command=command, reply=reply)
    if reply.code == 520:
        raise AgiUsageError(
            f"Asterisk rejected the arguments of AGI command {command} (520): {reply.text[:200]}",
            command=command,
            reply=reply,
        )
    raise AgiProtocolError(f"unexpected AGI reply code {reply.code} to {command}: {reply.raw[:80]!r}")
