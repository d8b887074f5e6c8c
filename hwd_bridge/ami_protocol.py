"""AMI adapter, sans-I/O: frame AMI bytes into messages and encode actions into bytes.

No asyncio here. ``AmiFramer.feed`` takes the bytes read from the socket in any chunking and
returns whole ``AmiMessage`` objects; ``encode_action`` returns the bytes of one action.

Wire format (checked against Asterisk 22.10.1): the server first sends one
banner line ``Asterisk Call Manager/<version>``. After that every message is a block of
``Name: value`` lines ended by a blank line. Asterisk itself writes CRLF line ends, but
some messages end with CRLF followed by a bare LF, so both ``\\r\\n`` and ``\\n`` are
accepted as line ends and a blank line of either kind ends a message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Union

import structlog

from hwd_bridge.ami_errors import AmiProtocolError

log = structlog.get_logger(__name__)

BANNER_PREFIX = "Asterisk Call Manager/"

DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024

# A banner is one short line; anything longer before the first newline is not AMI.
MAX_BANNER_BYTES = 256

# A line end (LF, optionally preceded by CR) followed by an empty line (LF or CRLF).
_MESSAGE_END_RE = re.compile(rb"\n\r?\n")

# Header names whose values are never shown in error messages.
_SECRET_HEADERS = frozenset({"secret", "key"})

MessageKind = Literal["response", "event", "unknown"]

HeaderValue = Union[str, int, bool]
HeadersArg = Union[
    Mapping[str, Union[HeaderValue, Sequence[HeaderValue]]],
    Iterable[tuple[str, HeaderValue]],
    None,
]


@dataclass(frozen=True, slots=True)
class AmiMessage:
    """One AMI response or event, with its headers in wire order.

    Header names are matched without regard to case, because Asterisk spells the same
    header differently in different messages (``Uniqueid``, ``UniqueID``). Repeated headers
    such as ``Variable``, ``ChanVariable`` or ``Output`` are all kept.
    """

    headers: tuple[tuple[str, str], ...]

    # Lines without a colon, kept in order so nothing the peer sent is lost.
    extra_lines: tuple[str, ...] = ()

    # True when invalid UTF-8 was replaced with U+FFFD while decoding this message.
    had_invalid_utf8: bool = False

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of header ``name``, or ``default`` when it is absent."""
        wanted = name.lower()
        for header_name, value in self.headers:
            if header_name.lower() == wanted:
                return value
        return default

    def get_all(self, name: str) -> tuple[str, ...]:
        """Return every value of header ``name`` in wire order (empty when absent)."""
        wanted = name.lower()
        return tuple(value for header_name, value in self.headers if header_name.lower() == wanted)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    @property
    def kind(self) -> MessageKind:
        """``response`` or ``event``, taken from the first header as Asterisk writes it."""
        if not self.headers:
            return "unknown"
        first_name = self.headers[0][0].lower()
        if first_name == "response":
            return "response"
        if first_name == "event":
            return "event"
        return "unknown"

    @property
    def name(self) -> str:
        """The event name, or the response status (``Success``, ``Error``, ``Goodbye``)."""
        if not self.headers:
            return ""
        return self.headers[0][1]

    @property
    def action_id(self) -> str | None:
        return self.get("ActionID")

    def is_event(self, name: str) -> bool:
        """Return True when this is the event ``name`` (compared without regard to case)."""
        return self.kind == "event" and self.name.lower() == name.lower()

    @property
    def starts_event_list(self) -> bool:
        """True for a response that announces an event list with ``EventList: start``."""
        event_list = self.get("EventList")
        return self.kind == "response" and event_list is not None and event_list.lower() == "start"

    @property
    def completes_event_list(self) -> bool:
        """True for the event that ends an event list.

        Asterisk 22 marks it with ``EventList: Complete``; a few older list actions only
        name the event ``...Complete``, so both are accepted.
        """
        if self.kind != "event":
            return False
        event_list = self.get("EventList")
        if event_list is not None and event_list.lower() == "complete":
            return True
        return self.name.endswith("Complete")


class AmiFramer:
    """Incremental AMI parser: bytes in any chunking in, whole messages out.

    Framing works on bytes, and each message is decoded as UTF-8 only once it is complete,
    so a multi-byte character split across two TCP segments survives. Invalid UTF-8 is
    replaced with U+FFFD and logged with one warning per message.
    """

    def __init__(
        self,
        *,
        expect_banner: bool = True,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if max_message_bytes <= 0:
            raise ValueError(f"max_message_bytes must be positive, got {max_message_bytes}")

        self._buffer = b""
        self._awaiting_banner = expect_banner
        self._max_message_bytes = max_message_bytes
        self.banner: str | None = None

    @property
    def protocol_version(self) -> str | None:
        """The AMI version from the banner (``11.0.0`` on Asterisk 22.10.1), once it arrived."""
        if self.banner is None:
            return None
        return self.banner[len(BANNER_PREFIX):]

    def feed(self, data: bytes) -> list[AmiMessage]:
        """Add received bytes and return every message they complete, in order.

        Raises ``AmiProtocolError`` when the stream does not start with the AMI banner or a
        message grows past ``max_message_bytes`` without ending. The framer is unusable after
        that, and the connection should be closed.
        """
        self._buffer += data

        if self._awaiting_banner and not self._take_banner():
            return []

        messages: list[AmiMessage] = []
        start = 0
        for match in _MESSAGE_END_RE.finditer(self._buffer):
            # The first newline belongs to the last header line, the rest is the blank line.
            block = self._buffer[start:match.start()]
            start = match.end()
            self._check_size(len(block))

            message = _parse_block(block)
            if message is not None:
                messages.append(message)

        self._buffer = self._buffer[start:]
        self._check_size(len(self._buffer))
        return messages

    def _take_banner(self) -> bool:
        newline = self._buffer.find(b"\n")
        if newline < 0:
            if len(self._buffer) > MAX_BANNER_BYTES:
                raise AmiProtocolError(
                    f"peer sent {len(self._buffer)} bytes without a line end; "
                    f"expected the banner {BANNER_PREFIX!r}: is this port an AMI port?"
                )
            return False

        line = self._buffer[:newline].rstrip(b"\r").decode("utf-8", errors="replace")
        if not line.startswith(BANNER_PREFIX):
            raise AmiProtocolError(
                f"peer's first line {line[:80]!r} is not the AMI banner {BANNER_PREFIX!r}: "
                "check that the address points at Asterisk's manager port"
            )

        self.banner = line
        self._awaiting_banner = False
        self._buffer = self._buffer[newline + 1:]
        return True

    def _check_size(self, size: int) -> None:
        if size > self._max_message_bytes:
            raise AmiProtocolError(
                f"AMI message of more than {self._max_message_bytes} bytes without a blank "
                f"line ({size} bytes buffered): the stream is broken or the limit "
                "max_message_bytes is too small for this action's output"
            )


def _parse_block(block: bytes) -> AmiMessage | None:
    try:
        text = block.decode("utf-8")
        had_invalid_utf8 = False
    except UnicodeDecodeError as exc:
        text = block.decode("utf-8", errors="replace")
        had_invalid_utf8 = True
        first_bad_offset = exc.start

    headers: list[tuple[str, str]] = []
    extra_lines: list[str] = []
    for raw_line in text.split("\n"):
        line = raw_line.removesuffix("\r")
        if not line:
            # Only possible as leading blank lines left over from an extra terminator.
            continue

        name, colon, value = line.partition(":")
        if not colon:
            extra_lines.append(line)
            continue

        # Asterisk writes "Name: value"; only the one separator space is removed.
        headers.append((name, value.removeprefix(" ")))

    if not headers and not extra_lines:
        return None

    message = AmiMessage(
        headers=tuple(headers),
        extra_lines=tuple(extra_lines),
        had_invalid_utf8=had_invalid_utf8,
    )
    if had_invalid_utf8:
        # The content may hold a caller's name, so only its position and ids are logged.
        log.warning(
            "ami_invalid_utf8_replaced",
            ami_kind=message.kind,
            ami_name=message.name,
            action_id=message.action_id,
            first_bad_offset=first_bad_offset,
            size=len(block),
        )
    return message


def encode_action(name: str, action_id: str, headers: HeadersArg = None) -> bytes:
    """Encode one AMI action as CRLF lines ending in a blank line.

    ``headers`` is a mapping (a list or tuple value is sent as one line per item, so
    ``{"Variable": ["A=1", "B=2"]}`` gives two ``Variable:`` lines) or an iterable of
    ``(name, value)`` pairs, where a name may repeat. ``bool`` values become ``true`` or
    ``false``. Raises ``ValueError`` for a CR, LF or NUL in a name or value, because it
    would end the header early and inject another one.
    """
    pairs = [("Action", name), ("ActionID", action_id)]
    for header_name, value in _iter_headers(headers):
        if header_name.lower() in ("action", "actionid"):
            raise ValueError(
                f"header {header_name!r} is set by encode_action itself; pass it as an argument"
            )
        pairs.append((header_name, value))

    lines = []
    for header_name, value in pairs:
        _check_header(header_name, value)
        lines.append(f"{header_name}: {value}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8")


def _iter_headers(headers: HeadersArg) -> Iterable[tuple[str, str]]:
    if headers is None:
        return
    if isinstance(headers, Mapping):
        for header_name, value in headers.items():
            if isinstance(value, (list, tuple)):
                for item in value:
                    yield header_name, _format_value(header_name, item)
            else:
                yield header_name, _format_value(header_name, value)
        return
    for header_name, value in headers:
        yield header_name, _format_value(header_name, value)


def _format_value(header_name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int)):
        return str(value)
    raise TypeError(
        f"AMI header {header_name!r} has a value of type {type(value).__name__}; "
        "expected str, int or bool"
    )


def _check_header(header_name: str, value: str) -> None:
    if not header_name or ":" in header_name or header_name != header_name.strip():
        raise ValueError(f"invalid AMI header name {header_name!r}")

    for forbidden in ("\r", "\n", "\0"):
        if forbidden in header_name:
            raise ValueError(f"AMI header name {header_name!r} contains {forbidden!r}")
        if forbidden in value:
            shown = "(hidden)" if header_name.lower() in _SECRET_HEADERS else repr(value)
            raise ValueError(
                f"AMI header {header_name!r} has value {shown} containing {forbidden!r}, "
                "which would split the action; remove line breaks from the value"
            )
