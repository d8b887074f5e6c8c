"""Unit tests of the sans-I/O FastAGI protocol: environment parser, encoder, reply reader."""

from __future__ import annotations

import pytest

from hwd_bridge.agi_protocol import (
    HANGUP_NOTICE,
    MAX_COMMAND_BYTES,
    AgiEnvironmentParser,
    AgiReply,
    AgiReplyReader,
    check_reply,
    encode_command,
    parse_reply_line,
)
from hwd_bridge.errors import (
    AgiArgumentError,
    AgiCommandFailed,
    AgiDeadChannel,
    AgiHangup,
    AgiInvalidCommand,
    AgiProtocolError,
    AgiUsageError,
)

# An environment as res_agi.c in Asterisk 22 writes it for
# AGI(agi://127.0.0.1/ivr/main?lang=zh&flow=12349,ticket-42,,"two words").
ENVIRONMENT = (
    b"agi_network: yes\n"
    b"agi_network_script: ivr/main?lang=zh&flow=12349\n"
    b"agi_request: agi://127.0.0.1/ivr/main?lang=zh&flow=12349\n"
    b"agi_channel: PJSIP/anonymous-00000001\n"
    b"agi_language: zh\n"
    b"agi_type: PJSIP\n"
    b"agi_uniqueid: 1700000000.1\n"
    b"agi_version: 22.10.1\n"
    b"agi_callerid: +8610555010\n"
    b"agi_calleridname: \"Zhang, San\"\n"
    b"agi_callingpres: 0\n"
    b"agi_callingani2: 0\n"
    b"agi_callington: 0\n"
    b"agi_callingtns: 0\n"
    b"agi_dnid: 12349\n"
    b"agi_rdnis: unknown\n"
    b"agi_context: hotline\n"
    b"agi_extension: 12349\n"
    b"agi_priority: 2\n"
    b"agi_enhanced: 0.0\n"
    b"agi_accountcode: \n"
    b"agi_threadid: 140000000000001\n"
    b"agi_arg_1: ticket-42\n"
    b"agi_arg_2: \n"
    b"agi_arg_3: two words\n"
    b"\n"
)


class TestAgiEnvironmentParser:
    def test_parses_full_environment(self) -> None:
        """All documented fields come out of one feed of a real-shaped environment."""
        env = AgiEnvironmentParser().feed(ENVIRONMENT)

        assert env is not None
        assert env.channel == "PJSIP/anonymous-00000001"
        assert env.uniqueid == "1700000000.1"
        assert env.linkedid is None
        assert env.callerid_raw == "+8610555010"
        assert env.calleridname_raw == '"Zhang, San"'
        assert env.extension == "12349"
        assert env.context == "hotline"
        assert env.network_script == "ivr/main"
        assert dict(env.script_params) == {"lang": "zh", "flow": "12349"}
        assert env.args == ("ticket-42", "", "two words")
        assert env.raw["agi_accountcode"] == ""

    def test_accepts_any_chunking(self) -> None:
        """Feeding one byte at a time gives the same environment, and only at the blank line."""
        parser = AgiEnvironmentParser()
        results = [parser.feed(ENVIRONMENT[i : i + 1]) for i in range(len(ENVIRONMENT))]

        assert all(result is None for result in results[:-1])
        assert results[-1] is not None
        assert results[-1].args == ("ticket-42", "", "two words")

    def test_keeps_bytes_after_blank_line(self) -> None:
        """A HANGUP sent right after the environment stays in the remainder."""
        parser = AgiEnvironmentParser()
        env = parser.feed(ENVIRONMENT + b"HANGUP\n")

        assert env is not None
        assert parser.remainder == b"HANGUP\n"

    def test_linkedid_when_present(self) -> None:
        data = ENVIRONMENT.replace(b"agi_version", b"agi_linkedid: 1700000000.0\nagi_version")
        env = AgiEnvironmentParser().feed(data)

        assert env is not None
        assert env.linkedid == "1700000000.0"

    def test_no_script_gives_none(self) -> None:
        """A request URL without a path has no agi_network_script line."""
        data = ENVIRONMENT.replace(b"agi_network_script: ivr/main?lang=zh&flow=12349\n", b"")
        env = AgiEnvironmentParser().feed(data)

        assert env is not None
        assert env.network_script is None
        assert dict(env.script_params) == {}

    def test_query_is_percent_decoded(self) -> None:
        data = ENVIRONMENT.replace(b"lang=zh&flow=12349\n", b"note=a%20b&empty=\n", 1)
        env = AgiEnvironmentParser().feed(data)

        assert env is not None
        assert dict(env.script_params) == {"note": "a b", "empty": ""}

    def test_accepts_crlf_lines(self) -> None:
        env = AgiEnvironmentParser().feed(ENVIRONMENT.replace(b"\n", b"\r\n"))

        assert env is not None
        assert env.args == ("ticket-42", "", "two words")

    @pytest.mark.parametrize(
        "data",
        [
            b"GET / HTTP/1.1\n\n",
            b"agi_channel PJSIP/x\n\n",
            b"AGI_CHANNEL: PJSIP/x\n\n",
            b"agi_channel: a\nagi_channel: b\n\n",
        ],
        ids=["http", "no-colon", "upper-case-key", "duplicate-key"],
    )
    def test_rejects_malformed_line(self, data: bytes) -> None:
        with pytest.raises(AgiProtocolError):
            AgiEnvironmentParser().feed(data)

    def test_rejects_missing_uniqueid(self) -> None:
        with pytest.raises(AgiProtocolError, match="agi_uniqueid"):
            AgiEnvironmentParser().feed(b"agi_channel: PJSIP/x\n\n")

    def test_rejects_gap_in_args(self) -> None:
        data = ENVIRONMENT.replace(b"agi_arg_2: \n", b"")
        with pytest.raises(AgiProtocolError, match="agi_arg_N"):
            AgiEnvironmentParser().feed(data)

    def test_rejects_over_long_environment(self) -> None:
        """The cap applies to complete lines and to an unterminated one."""
        parser = AgiEnvironmentParser(max_bytes=1024)
        with pytest.raises(AgiProtocolError, match="1024 bytes"):
            parser.feed(b"agi_arg_1: " + b"x" * 2000 + b"\n")

        unterminated = AgiEnvironmentParser(max_bytes=1024)
        with pytest.raises(AgiProtocolError, match="1024 bytes"):
            unterminated.feed(b"agi_arg_1: " + b"x" * 2000)

    def test_many_short_lines_hit_the_cap(self) -> None:
        parser = AgiEnvironmentParser(max_bytes=1024)
        lines = b"".join(b"agi_arg_%d: x\n" % index for index in range(1, 200))
        with pytest.raises(AgiProtocolError):
            parser.feed(lines)


class TestEncodeCommand:
    def test_quotes_every_argument(self) -> None:
        assert encode_command("STREAM FILE", "zh/welcome", "") == b'STREAM FILE "zh/welcome" ""\n'

    def test_command_without_arguments(self) -> None:
        assert encode_command("ANSWER") == b"ANSWER\n"

    def test_escapes_quote_and_backslash(self) -> None:
        """A value with quotes reaches Asterisk as one argument (F04)."""
        line = encode_command("SET VARIABLE", "NOTE", 'he said "help" \\ ok')
        assert line == b'SET VARIABLE "NOTE" "he said \\"help\\" \\\\ ok"\n'

    def test_integers_become_text(self) -> None:
        assert encode_command("GET DATA", "menu", 5000, 4) == b'GET DATA "menu" "5000" "4"\n'

    def test_utf8_arguments(self) -> None:
        assert encode_command("VERBOSE", "张三", 1) == 'VERBOSE "张三" "1"\n'.encode()

    @pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\0b"], ids=["CR", "LF", "NUL"])
    def test_rejects_line_breaks_and_nul(self, value: str) -> None:
        with pytest.raises(AgiArgumentError) as raised:
            encode_command("SET VARIABLE", "NOTE", value)

        message = str(raised.value)
        assert repr(value) in message
        assert "SET VARIABLE" in message

    def test_error_masks_phone_numbers(self) -> None:
        with pytest.raises(AgiArgumentError) as raised:
            encode_command("SET VARIABLE", "NOTE", "13800138000\n")
        assert "13800138000" not in str(raised.value)

    def test_rejects_line_over_limit(self) -> None:
        fits = "x" * (MAX_COMMAND_BYTES - len(b'VERBOSE ""\n'))
        assert len(encode_command("VERBOSE", fits)) == MAX_COMMAND_BYTES

        with pytest.raises(AgiArgumentError, match="2048|2047"):
            encode_command("VERBOSE", fits + "x")

    def test_rejects_invalid_name(self) -> None:
        with pytest.raises(AgiArgumentError):
            encode_command("answer\n")


class TestParseReplyLine:
    @pytest.mark.parametrize(
        ("line", "result", "data", "endpos"),
        [
            ("200 result=0", "0", None, None),
            ("200 result=1234", "1234", None, None),
            ("200 result= (timeout)", "", "timeout", None),
            ("200 result=12 (timeout)", "12", "timeout", None),
            ("200 result=", "", None, None),
            ("200 result=-1", "-1", None, None),
            ("200 result=-1 endpos=0", "-1", None, 0),
            ("200 result=0 endpos=11840", "0", None, 11840),
            ("200 result=35 endpos=4000", "35", None, 4000),
            ("200 result=1 (dtmf) endpos=1600", "1", "dtmf", 1600),
            ("200 result=1 (value with (parens))", "1", "value with (parens)", None),
            ("200 result=1 (张三)", "1", "张三", None),
        ],
    )
    def test_parses_200_shapes(self, line: str, result: str, data: str | None, endpos: int | None) -> None:
        reply = parse_reply_line(line)

        assert reply.code == 200
        assert reply.result == result
        assert reply.data == data
        assert reply.endpos == endpos
        assert reply.raw == line

    def test_rejects_garbage(self) -> None:
        with pytest.raises(AgiProtocolError):
            parse_reply_line("hello")


class TestAgiReplyReader:
    def test_hangup_is_a_notice(self) -> None:
        reader = AgiReplyReader()

        assert reader.feed_line(b"HANGUP\n") is HANGUP_NOTICE
        reply = reader.feed_line(b"200 result=0\n")
        assert isinstance(reply, AgiReply)
        assert reply.result == "0"

    def test_trying_is_a_continuation(self) -> None:
        reader = AgiReplyReader()

        assert reader.feed_line(b"100 result=0 Trying...\n") is None
        reply = reader.feed_line(b"200 result=0\n")
        assert isinstance(reply, AgiReply)
        assert reply.code == 200

    def test_usage_block_is_one_reply(self) -> None:
        """A 520- block is consumed up to its 520 line, so the next reply is not shifted (F04)."""
        reader = AgiReplyReader()
        lines = [
            b"520-Invalid command syntax.  Proper usage follows:\n",
            b" Usage: SET VARIABLE <variablename> <value>\n",
            b"200 result=1 looks like a reply but is usage text\n",
            b"HANGUP\n",
            b"520 End of proper usage.\n",
        ]
        events = [reader.feed_line(line) for line in lines]

        assert events[:-1] == [None, None, None, None]
        block = events[-1]
        assert isinstance(block, AgiReply)
        assert block.code == 520
        assert "Usage: SET VARIABLE" in block.text
        assert not reader.in_usage_block

        following = reader.feed_line(b"200 result=1 (value)\n")
        assert isinstance(following, AgiReply)
        assert following.data == "value"

    def test_single_line_520(self) -> None:
        reply = AgiReplyReader().feed_line(b"520 Invalid command syntax.  Proper usage not available.\n")

        assert isinstance(reply, AgiReply)
        assert reply.code == 520

    def test_usage_block_size_cap(self) -> None:
        reader = AgiReplyReader(max_usage_bytes=200)
        reader.feed_line(b"520-Invalid command syntax.  Proper usage follows:\n")
        with pytest.raises(AgiProtocolError):
            for _ in range(20):
                reader.feed_line(b"x" * 50 + b"\n")

    def test_blank_line_is_skipped(self) -> None:
        assert AgiReplyReader().feed_line(b"\n") is None


class TestCheckReply:
    def test_success_passes_through(self) -> None:
        reply = parse_reply_line("200 result=1")
        assert check_reply(reply, "ANSWER") is reply

    def test_minus_one_is_failure(self) -> None:
        with pytest.raises(AgiCommandFailed):
            check_reply(parse_reply_line("200 result=-1"), "ANSWER")

    def test_minus_one_allowed(self) -> None:
        reply = parse_reply_line("200 result=-1 endpos=0")
        assert check_reply(reply, "STREAM FILE", minus_one_is_failure=False) is reply

    def test_hangup_data(self) -> None:
        with pytest.raises(AgiHangup):
            check_reply(parse_reply_line("200 result=-1 (hangup) endpos=0"), "RECORD FILE")

    @pytest.mark.parametrize(
        ("line", "error"),
        [
            ("510 Invalid or unknown command", AgiInvalidCommand),
            ("511 Command Not Permitted on a dead channel or intercept routine", AgiDeadChannel),
            ("520 Invalid command syntax.  Proper usage not available.", AgiUsageError),
            ("530 Something new", AgiProtocolError),
            ("200 Success", AgiProtocolError),
        ],
    )
    def test_error_codes(self, line: str, error: type[Exception]) -> None:
        with pytest.raises(error):
            check_reply(parse_reply_line(line), "STREAM FILE")

    def test_dead_channel_is_a_hangup(self) -> None:
        assert issubclass(AgiDeadChannel, AgiHangup)
