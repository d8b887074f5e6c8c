"""Unit tests of the sans-I/O AMI framer, message type and action encoder."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from hwd_bridge.ami_errors import AmiProtocolError
from hwd_bridge.ami_protocol import AmiFramer, AmiMessage, encode_action

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


def feed_all(framer: AmiFramer, chunks: list[bytes]) -> list[AmiMessage]:
    messages: list[AmiMessage] = []
    for chunk in chunks:
        messages.extend(framer.feed(chunk))
    return messages


def byte_by_byte(data: bytes) -> list[bytes]:
    return [data[i:i + 1] for i in range(len(data))]


class TestAmiMessage:
    def test_repeated_headers_kept_in_order(self) -> None:
        """get() returns the first value and get_all() every value of a repeated header."""
        message = AmiMessage(
            headers=(("Event", "VarSet"), ("ChanVariable", "A=1"), ("chanvariable", "B=2"))
        )

        assert message.get("ChanVariable") == "A=1"
        assert message.get_all("CHANVARIABLE") == ("A=1", "B=2")
        assert message.get_all("Missing") == ()
        assert message.get("Missing") is None

    def test_kind_and_name(self) -> None:
        """kind and name come from the first header."""
        response = AmiMessage(headers=(("Response", "Success"), ("ActionID", "a-1")))
        event = AmiMessage(headers=(("Event", "Hangup"), ("Uniqueid", "1700000000.42")))
        other = AmiMessage(headers=(("Foo", "bar"),))

        assert response.kind == "response"
        assert response.name == "Success"
        assert response.action_id == "a-1"
        assert event.kind == "event"
        assert event.is_event("hangup")
        assert event.action_id is None
        assert other.kind == "unknown"

    def test_event_list_markers(self) -> None:
        """A list starts only with EventList: start and ends with EventList: Complete or ...Complete."""
        start = AmiMessage(headers=(("Response", "Success"), ("EventList", "start")))
        will_follow = AmiMessage(headers=(("Response", "Success"), ("Message", "Channels will follow")))
        complete = AmiMessage(headers=(("Event", "CoreShowChannelsComplete"), ("EventList", "Complete")))
        old_complete = AmiMessage(headers=(("Event", "QueueStatusComplete"),))
        item = AmiMessage(headers=(("Event", "CoreShowChannel"),))

        assert start.starts_event_list
        assert not will_follow.starts_event_list
        assert complete.completes_event_list
        assert old_complete.completes_event_list
        assert not item.completes_event_list


class TestAmiFramerBanner:
    def test_banner_then_message(self) -> None:
        """The banner line is consumed and exposed; the message after it is framed."""
        framer = AmiFramer()

        messages = framer.feed(BANNER + b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n")

        assert framer.banner == "Asterisk Call Manager/11.0.0"
        assert framer.protocol_version == "11.0.0"
        assert [m.name for m in messages] == ["FullyBooted"]

    def test_banner_split_across_reads(self) -> None:
        """A banner arriving byte by byte is recognised once its line ends."""
        framer = AmiFramer()

        messages = feed_all(framer, byte_by_byte(BANNER + b"Response: Success\r\n\r\n"))

        assert framer.banner == "Asterisk Call Manager/11.0.0"
        assert len(messages) == 1

    def test_wrong_first_line_rejected(self) -> None:
        """A peer that is not AMI (here an HTTP server) is rejected with the line it sent."""
        framer = AmiFramer()

        with pytest.raises(AmiProtocolError, match="HTTP/1.1 400"):
            framer.feed(b"HTTP/1.1 400 Bad Request\r\n")

    def test_endless_first_line_rejected(self) -> None:
        """Bytes without a newline where the banner belongs are rejected after a short limit."""
        framer = AmiFramer()

        with pytest.raises(AmiProtocolError, match="without a line end"):
            framer.feed(b"x" * 1000)


class TestAmiFramerTerminators:
    def test_crlf_then_bare_lf_ends_message(self) -> None:
        """A message ended by CRLF plus a bare LF does not swallow the next event (A03)."""
        framer = AmiFramer(expect_banner=False)
        data = (
            b"Event: CoreShowChannelMapComplete\r\nActionID: x\r\nListItems: 1\r\n\n"
            b"Event: Hangup\r\nChannel: PJSIP/agent1-00000001\r\nUniqueid: 1700000000.42\r\n\r\n"
        )

        messages = framer.feed(data)

        assert [m.name for m in messages] == ["CoreShowChannelMapComplete", "Hangup"]
        assert messages[0].get("ListItems") == "1"
        assert messages[1].get("Uniqueid") == "1700000000.42"

    @pytest.mark.parametrize(
        "data",
        [
            b"Event: A\r\nX: 1\r\n\r\nEvent: B\r\nX: 2\r\n\r\n",
            b"Event: A\nX: 1\n\nEvent: B\nX: 2\n\n",
            b"Event: A\r\nX: 1\n\r\nEvent: B\nX: 2\r\n\n",
            b"Event: A\r\nX: 1\r\n\r\n\r\n\nEvent: B\r\nX: 2\r\n\r\n",
        ],
        ids=["crlf", "lf", "mixed", "extra-blank-lines"],
    )
    def test_any_line_end_mix(self, data: bytes) -> None:
        """CRLF, LF and extra blank lines all frame the same two messages, in any chunking."""
        for chunks in ([data], byte_by_byte(data)):
            framer = AmiFramer(expect_banner=False)

            messages = feed_all(framer, chunks)

            assert [(m.name, m.get("X")) for m in messages] == [("A", "1"), ("B", "2")]

    def test_incomplete_message_waits(self) -> None:
        """A message without its blank line yet is kept until the rest arrives."""
        framer = AmiFramer(expect_banner=False)

        assert framer.feed(b"Event: Hangup\r\nUniqueid: 1.2\r\n") == []
        assert framer.feed(b"\r") == []
        assert [m.name for m in framer.feed(b"\n")] == ["Hangup"]

    def test_value_spacing_preserved(self) -> None:
        """Only the single space after the colon is removed; empty values stay empty."""
        framer = AmiFramer(expect_banner=False)

        (message,) = framer.feed(b"Event: X\r\nA:  two spaces\r\nB:\r\nC: \r\nD: a: b\r\n\r\n")

        assert message.get("A") == " two spaces"
        assert message.get("B") == ""
        assert message.get("C") == ""
        assert message.get("D") == "a: b"

    def test_line_without_colon_kept(self) -> None:
        """A line without a colon is kept in extra_lines instead of being dropped."""
        framer = AmiFramer(expect_banner=False)

        (message,) = framer.feed(b"Response: Follows\r\nfree text line\r\n\r\n")

        assert message.extra_lines == ("free text line",)


class TestAmiFramerDecoding:
    def test_utf8_split_across_reads(self) -> None:
        """A character split after its first byte decodes whole once the message ends (A04)."""
        framer = AmiFramer(expect_banner=False)
        data = "Event: Newchannel\r\nCallerIDName: 张三\r\n\r\n".encode()
        split_at = data.index("张".encode()) + 1

        with capture_logs() as logs:
            messages = feed_all(framer, [data[:split_at], data[split_at:]])

        assert messages[0].get("CallerIDName") == "张三"
        assert not messages[0].had_invalid_utf8
        assert logs == []

    def test_invalid_utf8_replaced_with_one_warning(self) -> None:
        """Invalid bytes become U+FFFD, with one warning per bad message and none for good ones (A04)."""
        framer = AmiFramer(expect_banner=False)
        data = (
            b"Event: Newchannel\r\nCallerIDName: \xe5\xbc\r\nConnectedLineName: \xff\xfe\r\n\r\n"
            b"Event: Hangup\r\nCallerIDName: ok\r\n\r\n"
        )

        with capture_logs() as logs:
            bad, good = framer.feed(data)

        assert bad.get("CallerIDName") == "\ufffd"
        assert bad.get("ConnectedLineName") == "\ufffd\ufffd"
        assert bad.had_invalid_utf8
        assert not good.had_invalid_utf8
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert len(warnings) == 1
        assert warnings[0]["event"] == "ami_invalid_utf8_replaced"
        assert warnings[0]["ami_name"] == "Newchannel"


class TestAmiFramerSizeLimit:
    def test_unterminated_message_over_limit(self) -> None:
        """A message that grows past max_message_bytes without a blank line raises a clear error."""
        framer = AmiFramer(expect_banner=False, max_message_bytes=1024)
        framer.feed(b"Event: X\r\n")

        with pytest.raises(AmiProtocolError, match="more than 1024 bytes"):
            framer.feed(b"Output: " + b"y" * 2000 + b"\r\n")

    def test_complete_message_over_limit(self) -> None:
        """A complete message above the limit in one read is rejected as well."""
        framer = AmiFramer(expect_banner=False, max_message_bytes=64)

        with pytest.raises(AmiProtocolError, match="max_message_bytes"):
            framer.feed(b"Event: X\r\nOutput: " + b"y" * 100 + b"\r\n\r\n")

    def test_message_at_limit_accepted(self) -> None:
        """Many messages that are each below the limit pass, even when one read holds them all."""
        framer = AmiFramer(expect_banner=False, max_message_bytes=64)

        messages = framer.feed(b"Event: Ping\r\nX: 1\r\n\r\n" * 100)

        assert len(messages) == 100


class TestEncodeAction:
    def test_basic_action(self) -> None:
        """Action and ActionID come first, lines end in CRLF, a blank line ends the action."""
        data = encode_action("QueueAdd", "a-1", {"Queue": "q1", "Paused": True, "Penalty": 2})

        assert data == (
            b"Action: QueueAdd\r\nActionID: a-1\r\nQueue: q1\r\nPaused: true\r\nPenalty: 2\r\n\r\n"
        )

    def test_repeated_headers_from_list_values(self) -> None:
        """A list value in a mapping becomes one header line per item (A02)."""
        data = encode_action("Originate", "a-2", {"Variable": ["A=1", "B=2"]})

        assert data.count(b"Variable: ") == 2
        assert b"Variable: A=1\r\nVariable: B=2\r\n" in data

    def test_repeated_headers_from_pairs(self) -> None:
        """Pairs keep order and repeats."""
        data = encode_action("Originate", "a-3", [("Variable", "A=1"), ("Async", True), ("Variable", "B=2")])

        assert data.endswith(b"Variable: A=1\r\nAsync: true\r\nVariable: B=2\r\n\r\n")

    def test_utf8_values(self) -> None:
        """Values are encoded as UTF-8."""
        data = encode_action("Setvar", "a-4", {"Value": "张三"})

        assert "Value: 张三".encode() in data

    @pytest.mark.parametrize("bad", ["a\r\nAction: Hangup", "a\nb", "a\rb", "a\0b"])
    def test_line_break_in_value_rejected(self, bad: str) -> None:
        """CR, LF or NUL in a value raises an error naming the header and the value."""
        with pytest.raises(ValueError) as caught:
            encode_action("Setvar", "a-5", {"Variable": bad})

        assert "'Variable'" in str(caught.value)
        assert repr(bad) in str(caught.value)

    def test_secret_not_shown_in_error(self) -> None:
        """An invalid Secret value is reported without its content."""
        with pytest.raises(ValueError) as caught:
            encode_action("Login", "a-6", {"Username": "hotline", "Secret": "s3cr\net"})

        assert "s3cr" not in str(caught.value)
        assert "'Secret'" in str(caught.value)

    @pytest.mark.parametrize("name", ["", "Bad:Name", " Lead", "Line\nBreak"])
    def test_invalid_header_name_rejected(self, name: str) -> None:
        """Empty names, colons, surrounding spaces and line breaks in names are rejected."""
        with pytest.raises(ValueError):
            encode_action("Ping", "a-7", [(name, "x")])

    def test_action_id_header_rejected(self) -> None:
        """ActionID passed as a header would duplicate the one the encoder writes."""
        with pytest.raises(ValueError, match="ActionID"):
            encode_action("Ping", "a-8", {"ActionID": "other"})

    def test_unsupported_value_type_rejected(self) -> None:
        """A value that is not str, int or bool raises TypeError naming the header."""
        with pytest.raises(TypeError, match="'Timeout'"):
            encode_action("Originate", "a-9", {"Timeout": 1.5})  # type: ignore[dict-item]

    def test_round_trip_through_framer(self) -> None:
        """An encoded action frames back into the same headers."""
        data = encode_action("Originate", "a-10", [("Variable", "A=1"), ("Variable", "B=张")])
        framer = AmiFramer(expect_banner=False)

        (message,) = framer.feed(data)

        assert message.headers == (
            ("Action", "Originate"),
            ("ActionID", "a-10"),
            ("Variable", "A=1"),
            ("Variable", "B=张"),
        )
