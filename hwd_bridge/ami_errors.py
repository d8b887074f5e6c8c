"""AMI adapter: the exceptions raised by the AMI protocol layer and client.

Every exception here derives from ``AmiError`` and stays inside ``hwd_bridge``; callers in
other layers map them to their own outcomes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hwd_bridge.ami_protocol import AmiMessage


class AmiError(Exception):
    """Base class of every AMI adapter error."""


class AmiProtocolError(AmiError):
    """The peer sent bytes that are not AMI: no banner, an over-long message or a bad line."""


class AmiConnectionError(AmiError):
    """Base class of the errors about the AMI connection itself."""


class AmiNotConnected(AmiConnectionError):
    """No AMI session was ready in time, so the action was not sent and may be retried."""


class AmiConnectionLost(AmiConnectionError):
    """The connection dropped after the action was sent, so its outcome is unknown.

    The client never re-sends such an action on the next connection: an Originate whose
    reply was lost may already be dialling.
    """


class AmiClientClosed(AmiNotConnected):
    """The client was stopped, or stopped itself after a fatal error."""


class AmiAuthenticationError(AmiError):
    """Asterisk rejected the AMI username or secret: a fatal configuration error.

    The client does not retry, because every retry would fail the same way and fill the
    PBX's security log. The message is meant for an operator and never contains the secret.
    """


class AmiTimeout(AmiError, TimeoutError):
    """An action got no reply, no complete event list or no final event in time."""

    def __init__(self, message: str, *, action: str, action_id: str, timeout_s: float) -> None:
        super().__init__(message)
        self.action = action
        self.action_id = action_id
        self.timeout_s = timeout_s


class AmiActionError(AmiError):
    """Asterisk answered an action with ``Response: Error``.

    ``response`` is the full reply, so a caller can test for benign errors such as
    ``Message: Unable to add interface: Already there``.
    """

    def __init__(self, action: str, response: AmiMessage) -> None:
        message = response.get("Message") or "(no Message header)"
        super().__init__(
            f"AMI action {action} failed: {message} (ActionID {response.action_id})"
        )
        self.action = action
        self.response = response
        self.message = message
