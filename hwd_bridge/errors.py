"""FastAGI adapter: the exceptions raised by the AGI protocol layer, channel and server.

Every exception here derives from ``AgiError`` and stays inside ``hwd_bridge``. The
``AgiCallPort`` maps them to the domain's ``CallEnded`` and ``CallPortError``. AMI errors
live in ``hwd_bridge.ami_errors``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwd_bridge.agi_protocol import AgiReply


class AgiError(Exception):
    """Base class of every FastAGI adapter error."""


class AgiProtocolError(AgiError):
    """The peer sent bytes that are not AGI: a malformed or over-long environment or reply line,
    or a reply code that no AGI command produces."""


class AgiEnvironmentIncomplete(AgiProtocolError):
    """The connection closed before the AGI environment ended with its blank line."""

    def __init__(self, message: str, *, bytes_received: int) -> None:
        super().__init__(message)
        self.bytes_received = bytes_received


class AgiArgumentError(AgiError, ValueError):
    """A command or argument cannot be sent: it contains CR, LF or NUL, or the line is too long.

    Raised before any byte is written, so the channel stays usable.
    """


class AgiChannelBusy(AgiError, RuntimeError):
    """A second command was started on a channel while one was still waiting for its reply.

    AGI carries one command and then one reply, so concurrent use is a programming error.
    """


class AgiCommandError(AgiError):
    """Base class of the errors that are the outcome of one sent command."""

    def __init__(self, message: str, *, command: str, reply: AgiReply | None = None) -> None:
        super().__init__(message)
        self.command = command
        self.reply = reply


class AgiHangup(AgiCommandError):
    """The caller's channel is gone: a ``HANGUP`` notice, a hang-up result or end of stream.

    Once raised, the channel is marked ended and every later command raises this again
    without writing to the socket.
    """


class AgiDeadChannel(AgiHangup):
    """Asterisk answered ``511``: the command is not permitted on a dead channel."""


class AgiCommandFailed(AgiCommandError):
    """Asterisk answered ``200 result=-1`` to a command for which -1 means failure."""


class AgiInvalidCommand(AgiCommandError):
    """Asterisk answered ``510``: it does not know the command."""


class AgiUsageError(AgiCommandError):
    """Asterisk answered ``520``: the command's arguments do not match its usage."""


class AgiCommandTimeout(AgiCommandError, TimeoutError):
    """A command got no complete reply in time.

    The reply may still arrive later and would then be read as the reply to the next
    command, so the channel refuses every later command.
    """

    def __init__(self, message: str, *, command: str, timeout_s: float) -> None:
        super().__init__(message, command=command)
        self.timeout_s = timeout_s
