"""Unit tests of the AMI client's pure helpers: reply classification, Originate mapping, arguments."""

from __future__ import annotations

import pytest

from hwd_bridge.ami_client import (
    AmiClient,
    OriginateResult,
    ReconnectBackoff,
    is_already_there,
    is_not_there,
    originate_result_from_reason,
)
from hwd_bridge.ami_errors import AmiActionError, AmiNotConnected
from hwd_bridge.ami_protocol import AmiMessage


def response(status: str, message: str) -> AmiMessage:
    return AmiMessage(headers=(("Response", status), ("ActionID", "a-1"), ("Message", message)))


class TestReplyClassification:
    def test_already_there(self) -> None:
        """Only an Error reply ending in 'Already there' counts as an existing member."""
        already = response("Error", "Unable to add interface: Already there")

        assert is_already_there(already)
        assert is_already_there(AmiActionError("QueueAdd", already))
        assert not is_already_there(response("Success", "Added interface to queue"))
        assert not is_already_there(response("Error", "Unable to add interface to queue: No such queue"))

    def test_not_there(self) -> None:
        """QueueRemove's 'Not there' error is recognised."""
        assert is_not_there(response("Error", "Unable to remove interface: Not there"))
        assert not is_not_there(response("Error", "Unable to remove interface from queue: No such queue"))

    def test_action_error_message(self) -> None:
        """AmiActionError names the action, Asterisk's message and the ActionID."""
        error = AmiActionError("QueueAdd", response("Error", "Unable to add interface: Already there"))

        assert "QueueAdd" in str(error)
        assert "Already there" in str(error)
        assert "a-1" in str(error)


class TestOriginateReason:
    @pytest.mark.parametrize(
        ("reason", "expected"),
        [
            ("4", OriginateResult.ANSWERED),
            ("3", OriginateResult.NO_ANSWER),
            ("5", OriginateResult.BUSY),
            ("8", OriginateResult.CONGESTION),
            ("0", OriginateResult.FAILED),
            ("1", OriginateResult.FAILED),
            ("2", OriginateResult.FAILED),
            ("", OriginateResult.FAILED),
            ("x", OriginateResult.FAILED),
            (None, OriginateResult.FAILED),
        ],
    )
    def test_reason_codes(self, reason: str | None, expected: OriginateResult) -> None:
        """Asterisk's Reason codes map to results; unknown or missing codes are failures."""
        assert originate_result_from_reason(reason) is expected


class TestOriginateHeaders:
    def build(self, **overrides: object) -> list[tuple[str, object]]:
        arguments: dict[str, object] = {
            "context": "outbound",
            "exten": "100",
            "priority": 1,
            "application": None,
            "data": None,
            "caller_id": None,
            "ring_timeout_ms": 30_000,
            "variables": (),
            "account": None,
            "channel_id": None,
        }
        arguments.update(overrides)
        return AmiClient._originate_headers("PJSIP/agent1", **arguments)  # type: ignore[arg-type]

    def test_extension_target(self) -> None:
        """An extension target sends Context, Exten, Priority, Timeout and Async: true."""
        headers = self.build(variables=[("A", "1"), ("A", "2")])

        assert ("Async", True) in headers
        assert ("Exten", "100") in headers
        assert [value for name, value in headers if name == "Variable"] == ["A=1", "A=2"]

    @pytest.mark.parametrize(
        "overrides",
        [
            {"application": "Playback"},
            {"context": None, "exten": None},
            {"ring_timeout_ms": 0},
            {"variables": {"": "x"}},
            {"variables": {"A=B": "x"}},
        ],
        ids=["both-targets", "no-target", "zero-timeout", "empty-variable", "equals-in-name"],
    )
    def test_invalid_arguments_rejected(self, overrides: dict[str, object]) -> None:
        """Ambiguous targets, a zero ring timeout and bad variable names raise ValueError."""
        with pytest.raises(ValueError):
            self.build(**overrides)


class TestClientArguments:
    @pytest.mark.parametrize("option", ["connect_timeout", "action_timeout", "ping_interval", "event_queue_size"])
    def test_non_positive_option_rejected(self, option: str) -> None:
        """Zero timeouts, intervals and queue sizes are rejected at construction."""
        with pytest.raises(ValueError, match=option):
            AmiClient("127.0.0.1", 5038, "hotline", "secret", **{option: 0})

    def test_backoff_bounds_rejected(self) -> None:
        """A maximum delay below the minimum is rejected."""
        with pytest.raises(ValueError, match="reconnect delays"):
            ReconnectBackoff(2.0, 1.0)

    async def test_action_before_start_not_sent(self) -> None:
        """An action on a client that never started fails with AmiNotConnected after its timeout."""
        client = AmiClient("127.0.0.1", 5038, "hotline", "secret")

        with pytest.raises(AmiNotConnected):
            await client.action("Ping", timeout=0.05)

    @pytest.mark.parametrize("name", ["Login", "logoff", "Originate"])
    async def test_managed_actions_rejected(self, name: str) -> None:
        """Login, Logoff and Originate go through the client's own methods."""
        client = AmiClient("127.0.0.1", 5038, "hotline", "secret")

        with pytest.raises(ValueError, match="managed by AmiClient"):
            await client.action(name)
