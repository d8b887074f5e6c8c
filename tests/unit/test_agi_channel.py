"""Unit tests of AgiChannel and AgiCallPort against an in-process socket pair playing Asterisk."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import structlog

from hwd_bridge.agi_call_port import AgiCallPort
from hwd_bridge.agi_channel import AgiChannel, EndReason
from hwd_bridge.errors import (
    AgiChannelBusy,
    AgiCommandFailed,
    AgiCommandTimeout,
    AgiDeadChannel,
    AgiHangup,
    AgiProtocolError,
)
from ivr.ports import CallEnded, CallPortError, DialStatus


@dataclass
class Pair:
    channel: AgiChannel
    peer_reader: asyncio.StreamReader
    peer_writer: asyncio.StreamWriter

    async def expect(self, command: bytes, reply: bytes | None = None) -> None:
        line = await asyncio.wait_for(self.peer_reader.readline(), 2)
        assert line == command
        if reply is not None:
            self.peer_writer.write(reply)
            await self.peer_writer.drain()

    async def assert_nothing_sent(self) -> None:
        self.channel._writer.close()
        rest = await asyncio.wait_for(self.peer_reader.read(), 2)
        assert rest == b""


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    channel = AgiChannel(reader, writer, call_id="1700000000.9", command_timeout_s=1.0, max_prompt_s=1.0)

    yield Pair(channel, peer_reader, peer_writer)

    writer.close()
    peer_writer.close()
    for stream in (writer, peer_writer):
        try:
            await stream.wait_closed()
        except ConnectionError:
            pass


def prompt_path(prompt_id: str) -> str:
    return f"hotline/zh/{prompt_id}"


class TestAgiChannel:
    async def test_get_variable_unset_is_none(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.get_variable("NOTE"))
        await pair.expect(b'GET VARIABLE "NOTE"\n', b"200 result=0\n")

        assert await task is None

    async def test_get_variable_empty_and_set(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.get_variable("A"))
        await pair.expect(b'GET VARIABLE "A"\n', b"200 result=1 ()\n")
        assert await task == ""

        task = asyncio.create_task(pair.channel.get_variable("B"))
        await pair.expect(b'GET VARIABLE "B"\n', "200 result=1 (张三 (x))\n".encode())
        assert await task == "张三 (x)"

    async def test_rejects_concurrent_command(self, pair: Pair) -> None:
        first = asyncio.create_task(pair.channel.answer())
        await asyncio.sleep(0.05)

        with pytest.raises(AgiChannelBusy):
            await pair.channel.get_variable("X")

        await pair.expect(b"ANSWER\n", b"200 result=0\n")
        await first

    async def test_timeout_makes_channel_unusable(self, pair: Pair) -> None:
        """A late reply would be paired with the next command, so none is sent."""
        with pytest.raises(AgiCommandTimeout):
            await pair.channel.answer()
        assert not pair.channel.usable

        with pytest.raises(AgiProtocolError, match="timed out"):
            await pair.channel.get_variable("X")

        assert await pair.peer_reader.readline() == b"ANSWER\n"
        await pair.assert_nothing_sent()

    async def test_cancel_makes_channel_unusable(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.answer())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

        assert not pair.channel.usable

    async def test_answer_minus_one_fails(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.answer())
        await pair.expect(b"ANSWER\n", b"200 result=-1\n")

        with pytest.raises(AgiCommandFailed):
            await task
        assert pair.channel.usable

    async def test_ended_channel_writes_nothing(self, pair: Pair) -> None:
        """After a 511 every later command raises at once and nothing more is written."""
        task = asyncio.create_task(pair.channel.stream_file("hotline/zh/a"))
        await pair.expect(b'STREAM FILE "hotline/zh/a" ""\n', b"511 Command Not Permitted on a dead channel or intercept routine\n")
        with pytest.raises(AgiDeadChannel):
            await task
        assert pair.channel.end_reason is EndReason.DEAD_CHANNEL

        with pytest.raises(AgiHangup):
            await pair.channel.answer()
        await pair.assert_nothing_sent()

    async def test_mark_ended_keeps_first_reason(self, pair: Pair) -> None:
        pair.channel.mark_ended(EndReason.HANGUP_NOTICE)
        pair.channel.mark_ended(EndReason.END_OF_STREAM)

        assert pair.channel.end_reason is EndReason.HANGUP_NOTICE

    async def test_line_cut_by_eof_is_hangup(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.answer())
        await pair.expect(b"ANSWER\n", b"200 res")
        pair.peer_writer.close()

        with pytest.raises(AgiHangup):
            await task
        assert pair.channel.end_reason is EndReason.END_OF_STREAM

    async def test_stream_file_digit(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.stream_file("hotline/zh/menu", "12#"))
        await pair.expect(b'STREAM FILE "hotline/zh/menu" "12#"\n', b"200 result=35 endpos=4000\n")

        result = await task
        assert result.played
        assert result.digit == "#"
        assert result.endpos == 4000

    async def test_exec_missing_application(self, pair: Pair) -> None:
        task = asyncio.create_task(pair.channel.exec("NoSuchApp", ""))
        await pair.expect(b'EXEC "NoSuchApp" ""\n', b"200 result=-2\n")

        with pytest.raises(AgiProtocolError, match="NoSuchApp"):
            await task

    async def test_trace_masks_digits_and_values(self, pair: Pair) -> None:
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(pair.channel.get_data("hotline/zh/id", 3000, 4))
            await pair.expect(b'GET DATA "hotline/zh/id" "3000" "4"\n', b"200 result=1234\n")
            await task
            task = asyncio.create_task(pair.channel.set_variable("PHONE", "13800138000"))
            await pair.expect(b'SET VARIABLE "PHONE" "13800138000"\n', b"200 result=1\n")
            await task

        traces = [entry for entry in logs if entry["event"] == "agi trace"]
        assert [entry["direction"] for entry in traces] == [">", "<", ">", "<"]
        assert traces[1]["result"] == "****"
        assert "13800138000" not in repr(traces)


class TestAgiCallPort:
    async def test_dial_no_answer(self, pair: Pair) -> None:
        port = AgiCallPort(pair.channel, prompt_path)
        task = asyncio.create_task(port.connect_agent("agent1", ring_timeout_s=20))

        await pair.expect(b'EXEC "Dial" "PJSIP/agent1,20,g"\n', b"200 result=0\n")
        await pair.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (NOANSWER)\n")
        await pair.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=0\n")

        result = await task
        assert result.status is DialStatus.NO_ANSWER
        assert not result.answered
        assert result.talk_seconds == 0.0

    async def test_dial_answered_agent_hung_up(self, pair: Pair) -> None:
        port = AgiCallPort(pair.channel, prompt_path, clock=iter([0.0, 100.0]).__next__)
        task = asyncio.create_task(port.connect_agent("agent1", ring_timeout_s=20))

        await pair.expect(b'EXEC "Dial" "PJSIP/agent1,20,g"\n', b"200 result=0\n")
        await pair.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (ANSWER)\n")
        await pair.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=1 (95)\n")

        result = await task
        assert result.status is DialStatus.ANSWERED
        assert result.answered
        assert result.talk_seconds == 95.0

    async def test_dial_talk_time_capped_by_dial_duration(self, pair: Pair) -> None:
        """ANSWEREDTIME counted from the caller's answer (93 s) is cut to the 3.2 s Dial ran."""
        port = AgiCallPort(pair.channel, prompt_path, clock=iter([10.0, 13.2]).__next__)
        task = asyncio.create_task(port.connect_agent("agent1", ring_timeout_s=20))

        await pair.expect(b'EXEC "Dial" "PJSIP/agent1,20,g"\n', b"200 result=0\n")
        await pair.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (ANSWER)\n")
        await pair.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=1 (93)\n")

        result = await task
        assert result.talk_seconds == 3.2

    async def test_dial_rejects_injected_options(self, pair: Pair) -> None:
        port = AgiCallPort(pair.channel, prompt_path)

        with pytest.raises(ValueError):
            await port.connect_agent("agent1,60,tT", ring_timeout_s=20)
        await pair.assert_nothing_sent()

    async def test_other_agi_errors_become_call_port_error(self, pair: Pair) -> None:
        port = AgiCallPort(pair.channel, prompt_path)
        task = asyncio.create_task(port.answer())
        await pair.expect(b"ANSWER\n", b"510 Invalid or unknown command\n")

        with pytest.raises(CallPortError):
            await task

    async def test_hangup_becomes_call_ended(self, pair: Pair) -> None:
        port = AgiCallPort(pair.channel, prompt_path)
        task = asyncio.create_task(port.answer())
        await pair.expect(b"ANSWER\n", b"HANGUP\n200 result=0\n")
        await task

        with pytest.raises(CallEnded):
            await port.play_prompt("welcome")
        await pair.assert_nothing_sent()
