"""FastAGI field cases F01–F08 as byte exchanges between a fake Asterisk and the real server.

Each test starts ``FastAgiServer`` on 127.0.0.1 with a free port, connects a scripted peer
that writes the bytes Asterisk 22 writes, and checks the bytes the server sends back, the
handler's outcome and the log lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import structlog

from hwd_bridge.agi_call_port import AgiCallPort, call_from_agi_environment
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.fastagi_server import FastAgiServer
from ivr.ports import CallEnded, DialResult, DialStatus, DigitInput, DigitOutcome, PlaybackResult

CALLER_NUMBER = "+8610555010"
DEAD_CHANNEL = b"511 Command Not Permitted on a dead channel or intercept routine\n"


def agi_environment(
    script: str | None = "ivr/main?lang=zh",
    *,
    uniqueid: str = "1700000000.1",
    callerid: str = CALLER_NUMBER,
    calleridname: str = "unknown",
    args: tuple[str, ...] = (),
) -> bytes:
    """The environment block res_agi.c writes for AGI(agi://127.0.0.1/<script>,<args>)."""
    lines = ["agi_network: yes"]
    if script is not None:
        lines.append(f"agi_network_script: {script}")
    lines += [
        f"agi_request: agi://127.0.0.1/{script or ''}",
        f"agi_channel: PJSIP/anonymous-{uniqueid.split('.')[-1].zfill(8)}",
        "agi_language: zh",
        "agi_type: PJSIP",
        f"agi_uniqueid: {uniqueid}",
        "agi_version: 22.10.1",
        f"agi_callerid: {callerid}",
        f"agi_calleridname: {calleridname}",
        "agi_callingpres: 0",
        "agi_callingani2: 0",
        "agi_callington: 0",
        "agi_callingtns: 0",
        "agi_dnid: 12349",
        "agi_rdnis: unknown",
        "agi_context: hotline",
        "agi_extension: 12349",
        "agi_priority: 2",
        "agi_enhanced: 0.0",
        "agi_accountcode: ",
        "agi_threadid: 140000000000001",
    ]
    lines += [f"agi_arg_{index}: {value}" for index, value in enumerate(args, start=1)]
    return ("\n".join(lines) + "\n\n").encode()


class FakeAsterisk:
    """One FastAGI connection as Asterisk opens it, driven step by step by the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> FakeAsterisk:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    @classmethod
    async def start_call(cls, port: int, **environment: Any) -> FakeAsterisk:
        peer = await cls.connect(port)
        await peer.send(agi_environment(**environment))
        return peer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def expect(self, command: bytes, reply: bytes | None = None) -> None:
        line = await asyncio.wait_for(self.reader.readline(), 3)
        assert line == command
        if reply is not None:
            await self.send(reply)

    async def expect_closed(self) -> None:
        """Wait for the server to close the connection, and check it sent nothing more."""
        rest = await asyncio.wait_for(self.reader.read(), 3)
        assert rest == b""

    def finish_sending(self) -> None:
        """Send FIN, as Asterisk does when the AGI ends."""
        self.writer.write_eof()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except ConnectionError:
            pass


Handler = Callable[[AgiEnvironment, AgiChannel], Awaitable[None]]


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[FastAgiServer]]]:
    servers: list[FastAgiServer] = []

    async def start(routes: dict[str, Handler], **options: Any) -> FastAgiServer:
        server = FastAgiServer(routes, **options)
        await server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        await server.stop(grace_s=1)


async def wait_for_calls_to_finish(server: FastAgiServer) -> None:
    async with asyncio.timeout(3):
        while server.live_calls:
            await asyncio.sleep(0.01)


def prompt_path(prompt_id: str) -> str:
    return f"hotline/zh/{prompt_id}"


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == name]


def warnings_and_errors(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["log_level"] in ("warning", "error", "critical")]


class TestCallerHangsUpMidDialogue:
    """F01: HANGUP is an asynchronous notice; the call ends once and nothing is retried."""

    @staticmethod
    def recording_handler(outcomes: list[str]) -> Handler:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            await port.answer()
            try:
                await port.play_prompt("welcome")
                await port.play_prompt("menu")
                outcomes.append("played")
            except CallEnded:
                outcomes.append("ended")
                # A second operation after the end raises again without touching the socket.
                with pytest.raises(CallEnded):
                    await port.play_prompt("goodbye")
                outcomes.append("ended-again")

        return handler

    async def test_hangup_between_commands_then_511(self, serve: Any) -> None:
        outcomes: list[str] = []
        server = await serve({"ivr/main": self.recording_handler(outcomes)})

        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port)
            await peer.expect(b"ANSWER\n", b"200 result=0\n")
            await peer.send(b"HANGUP\n")
            await peer.expect(b'STREAM FILE "hotline/zh/welcome" ""\n', DEAD_CHANNEL)
            await peer.expect_closed()
            await wait_for_calls_to_finish(server)
            await peer.close()

        assert outcomes == ["ended", "ended-again"]
        finished = events(logs, "call finished")
        assert len(finished) == 1
        assert finished[0]["outcome"] == "caller_hangup"
        assert finished[0]["end_reason"] == "hangup_notice"
        assert warnings_and_errors(logs) == []

    async def test_stream_file_minus_one_with_endpos_then_hangup(self, serve: Any) -> None:
        """Playback cut after 11840 samples is a hang-up: no CHANNEL STATUS, no retry."""
        outcomes: list[str] = []
        server = await serve({"ivr/main": self.recording_handler(outcomes)})

        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b"ANSWER\n", b"200 result=0\n")
        await peer.expect(b'STREAM FILE "hotline/zh/welcome" ""\n', b"200 result=-1 endpos=11840\nHANGUP\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert outcomes == ["ended", "ended-again"]

    async def test_hangup_then_eof_without_reply(self, serve: Any) -> None:
        outcomes: list[str] = []
        server = await serve({"ivr/main": self.recording_handler(outcomes)})

        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port)
            await peer.expect(b"ANSWER\n", b"200 result=0\n")
            await peer.expect(b'STREAM FILE "hotline/zh/welcome" ""\n', b"HANGUP\n")
            await peer.close()
            await wait_for_calls_to_finish(server)

        assert outcomes == ["ended", "ended-again"]
        finished = events(logs, "call finished")
        assert [entry["outcome"] for entry in finished] == ["caller_hangup"]

    async def test_second_hangup_at_agi_end(self, serve: Any) -> None:
        """The HANGUP Asterisk writes when the AGI ends is never read as a reply."""
        outcomes: list[str] = []
        server = await serve({"ivr/main": self.recording_handler(outcomes)})

        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port)
            await peer.expect(b"ANSWER\n", b"200 result=0\n")
            await peer.expect(b'STREAM FILE "hotline/zh/welcome" ""\n', b"HANGUP\n" + DEAD_CHANNEL + b"HANGUP\n")
            await peer.expect_closed()
            await wait_for_calls_to_finish(server)
            await peer.close()

        assert outcomes == ["ended", "ended-again"]
        assert len(events(logs, "call finished")) == 1
        assert warnings_and_errors(logs) == []


class TestGetDataReplyShapes:
    """F02: the five GET DATA replies give five distinct outcomes."""

    @pytest.mark.parametrize(
        ("reply", "digits", "outcome"),
        [
            (b"200 result=1234\n", "1234", DigitOutcome.COMPLETE),
            (b"200 result= (timeout)\n", "", DigitOutcome.TIMEOUT),
            (b"200 result=12 (timeout)\n", "12", DigitOutcome.PARTIAL_TIMEOUT),
            (b"200 result=\n", "", DigitOutcome.TERMINATOR_ONLY),
            (b"200 result=*12\n", "*12", DigitOutcome.COMPLETE),
            (b"200 result=*\n", "*", DigitOutcome.COMPLETE),
        ],
        ids=["complete", "timeout", "partial-timeout", "hash-only", "star-kept", "star-only"],
    )
    async def test_digit_outcomes(self, serve: Any, reply: bytes, digits: str, outcome: DigitOutcome) -> None:
        collected: list[DigitInput] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            collected.append(await port.collect_digits("menu", max_digits=4, timeout_ms=5000))

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'GET DATA "hotline/zh/menu" "5000" "4"\n', reply)
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert collected == [DigitInput(digits=digits, outcome=outcome)]

    async def test_minus_one_is_hangup(self, serve: Any) -> None:
        results: list[str] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            try:
                await port.collect_digits("menu", max_digits=4, timeout_ms=5000)
            except CallEnded:
                results.append("ended")
            with pytest.raises(CallEnded):
                await port.play_prompt("goodbye")

        server = await serve({"ivr/main": handler})
        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port)
            await peer.expect(b'GET DATA "hotline/zh/menu" "5000" "4"\n', b"200 result=-1\n")
            await peer.expect_closed()
            await wait_for_calls_to_finish(server)
            await peer.close()

        assert results == ["ended"]
        assert [entry["outcome"] for entry in events(logs, "call finished")] == ["caller_hangup"]


class TestMissingCallerId:
    """F03: caller-ID sentinels become "no caller ID"; the raw value is kept, never logged."""

    @pytest.mark.parametrize("raw", ["unknown", "<unknown>", "", "anonymous", "Anonymous"])
    async def test_sentinels_mean_no_number(self, serve: Any, raw: str) -> None:
        calls = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            calls.append(call_from_agi_environment(env))

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port, callerid=raw)
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        (call,) = calls
        assert call.caller.number is None
        assert "no_caller_id" in call.caller.flags
        assert call.caller.raw == raw

    async def test_plus_is_preserved_and_number_masked_in_logs(self, serve: Any) -> None:
        calls = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            calls.append(call_from_agi_environment(env))

        server = await serve({"ivr/main": handler})
        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(
                server.port, callerid=CALLER_NUMBER, calleridname='"Zhang, \\"San\\""'
            )
            await peer.expect_closed()
            await wait_for_calls_to_finish(server)
            await peer.close()

        (call,) = calls
        assert call.caller.number == CALLER_NUMBER
        assert call.call_id == "1700000000.1"
        assert call.dialed == "12349"
        assert call.route == "ivr/main"
        assert "10555010" not in repr(logs)
        assert events(logs, "call started")[0]["caller"].endswith("10")


class TestEscapingAndUsageBlocks:
    """F04: arguments are escaped, bad ones rejected, and a 520 block never shifts replies."""

    async def test_quotes_are_escaped(self, serve: Any) -> None:
        values: list[str | None] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await channel.set_variable("NOTE", 'he said "help"')
            values.append(await channel.get_variable("X"))

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'SET VARIABLE "NOTE" "he said \\"help\\""\n', b"200 result=1\n")
        await peer.expect(b'GET VARIABLE "X"\n', b"200 result=1 (value)\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert values == ["value"]

    async def test_usage_block_does_not_shift_next_reply(self, serve: Any) -> None:
        seen: list[Any] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            try:
                await port.set_call_variable("NOTE", "x")
            except Exception as exc:  # noqa: BLE001 - the test records the exception type
                seen.append(type(exc).__name__)
            seen.append(await channel.get_variable("X"))

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(
            b'SET VARIABLE "NOTE" "x"\n',
            b"520-Invalid command syntax.  Proper usage follows:\n"
            b" Usage: SET VARIABLE <variablename> <value>\n"
            b"\tSets a variable to the current channel.\n"
            b"520 End of proper usage.\n",
        )
        await peer.expect(b'GET VARIABLE "X"\n', b"200 result=1 (value)\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert seen == ["CallPortError", "value"]

    async def test_single_line_520(self, serve: Any) -> None:
        seen: list[Any] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            try:
                await channel.verbose("x")
            except Exception as exc:  # noqa: BLE001 - the test records the exception type
                seen.append(type(exc).__name__)
            seen.append(await channel.get_variable("X"))

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'VERBOSE "x" "1"\n', b"520 Invalid command syntax.  Proper usage not available.\n")
        await peer.expect(b'GET VARIABLE "X"\n', b"200 result=0\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert seen == ["AgiUsageError", None]

    @pytest.mark.parametrize("value", ["line\nbreak", "carriage\rreturn", "nul\0byte", "x" * 3000])
    async def test_bad_argument_sends_nothing(self, serve: Any, value: str) -> None:
        """A rejected argument writes no byte, and the channel stays usable."""
        seen: list[Any] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            try:
                await port.set_call_variable("NOTE", value)
            except Exception as exc:  # noqa: BLE001 - the test records the exception type
                seen.append(type(exc).__name__)
            seen.append(await channel.get_variable("X"))

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'GET VARIABLE "X"\n', b"200 result=1 (ok)\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert seen == ["CallPortError", "ok"]


class TestScriptPathAndArguments:
    """F05: route on the path, parse the query, keep empty arguments, reject a missing route."""

    async def test_path_query_and_arguments(self, serve: Any) -> None:
        envs: list[AgiEnvironment] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            envs.append(env)

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(
            server.port, script="ivr/main?lang=zh&flow=12349", args=("ticket-42", "", "two words")
        )
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        (env,) = envs
        assert env.network_script == "ivr/main"
        assert dict(env.script_params) == {"lang": "zh", "flow": "12349"}
        assert env.args == ("ticket-42", "", "two words")
        call = call_from_agi_environment(env)
        assert call.params == {"lang": "zh", "flow": "12349"}
        assert call.args == ("ticket-42", "", "two words")

    @pytest.mark.parametrize("script", [None, "ivr/other?lang=zh"], ids=["no-script", "unknown-script"])
    async def test_missing_route_sets_failure_variable(self, serve: Any, script: str | None) -> None:
        called: list[str] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            called.append("handler")

        server = await serve({"ivr/main": handler})
        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port, script=script)
            await peer.expect(b'SET VARIABLE "HOTLINE_FAILURE" "no_route"\n', b"200 result=1\n")
            await peer.expect_closed()
            await wait_for_calls_to_finish(server)
            await peer.close()

        assert called == []
        assert len(events(logs, "no route for AGI script")) == 1
        assert events(logs, "call finished")[0]["outcome"] == "no_route"


@pytest.mark.timeout(10)
class TestHandshakeClose:
    """F06: connections closing during the handshake close quietly and never stall the loop."""

    @staticmethod
    async def run_beside_normal_call(server: FastAgiServer, bad_connection: Callable[[], Awaitable[None]]) -> int:
        """Run ``bad_connection`` while a normal call completes; return the ticker's ticks."""
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        async def normal_call() -> None:
            peer = await FakeAsterisk.start_call(server.port, uniqueid="1700000000.2")
            await peer.expect(b"ANSWER\n")
            await asyncio.sleep(0.1)
            await peer.send(b"200 result=0\n")
            await peer.expect(b'STREAM FILE "hotline/zh/welcome" ""\n', b"200 result=0 endpos=8000\n")
            await peer.expect_closed()
            await peer.close()

        ticking = asyncio.create_task(ticker())
        try:
            async with asyncio.timeout(5):
                await asyncio.gather(normal_call(), bad_connection())
                await wait_for_calls_to_finish(server)
        finally:
            ticking.cancel()
        return ticks

    @staticmethod
    def normal_handler(finished: list[str]) -> Handler:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            await port.answer()
            await port.play_prompt("welcome")
            finished.append(env.uniqueid)

        return handler

    @pytest.mark.parametrize("variant", ["no-bytes", "partial-environment", "full-environment"])
    async def test_close_during_handshake(self, serve: Any, variant: str) -> None:
        finished: list[str] = []
        server = await serve({"ivr/main": self.normal_handler(finished)})

        async def bad_connection() -> None:
            peer = await FakeAsterisk.connect(server.port)
            if variant == "partial-environment":
                await peer.send(agi_environment()[:150])
            elif variant == "full-environment":
                await peer.send(agi_environment(uniqueid="1700000000.3"))
            peer.finish_sending()
            if variant == "full-environment":
                # The handler's first command goes out; its reply read meets end of stream.
                await peer.expect(b"ANSWER\n")
            await peer.expect_closed()
            await peer.close()

        with structlog.testing.capture_logs() as logs:
            ticks = await self.run_beside_normal_call(server, bad_connection)

        assert finished == ["1700000000.2"]
        assert ticks >= 10
        problems = warnings_and_errors(logs)
        assert len(problems) == 1
        assert problems[0]["log_level"] == "warning"
        assert "exc_info" not in problems[0]
        if variant == "full-environment":
            assert problems[0]["event"] == "call finished"
            assert problems[0]["outcome"] == "closed_before_first_reply"
        else:
            assert problems[0]["event"] == "AGI environment incomplete"

    async def test_handshake_timeout(self, serve: Any) -> None:
        finished: list[str] = []
        server = await serve({"ivr/main": self.normal_handler(finished)}, header_timeout_s=0.3)

        async def silent_connection() -> None:
            peer = await FakeAsterisk.connect(server.port)
            await peer.send(agi_environment()[:100])
            await peer.expect_closed()
            await peer.close()

        with structlog.testing.capture_logs() as logs:
            await self.run_beside_normal_call(server, silent_connection)

        assert finished == ["1700000000.2"]
        assert [entry["event"] for entry in warnings_and_errors(logs)] == ["AGI environment timed out"]

    async def test_environment_size_cap(self, serve: Any) -> None:
        finished: list[str] = []
        server = await serve({"ivr/main": self.normal_handler(finished)}, max_environment_bytes=4096)

        async def flooding_connection() -> None:
            peer = await FakeAsterisk.connect(server.port)
            try:
                for index in range(1, 200):
                    await peer.send(b"agi_arg_%d: %s\n" % (index, b"x" * 100))
            except ConnectionError:
                pass
            await asyncio.wait_for(peer.reader.read(), 3)
            await peer.close()

        with structlog.testing.capture_logs() as logs:
            await self.run_beside_normal_call(server, flooding_connection)

        assert finished == ["1700000000.2"]
        assert [entry["event"] for entry in warnings_and_errors(logs)] == ["AGI environment invalid"]


class TestHangupDuringDial:
    """F07: a caller hang-up during Dial ends the call under every AGISIGHUP/AGIEXITONHANGUP setting."""

    @pytest.mark.parametrize(
        ("after_dial", "close"),
        [
            (b"200 result=-1\nHANGUP\n", False),  # AGISIGHUP default
            (b"200 result=-1\n", False),  # AGISIGHUP=no
            (b"200 result=-1\nHANGUP\nHANGUP\n", True),  # AGIEXITONHANGUP=yes
            (b"HANGUP\n200 result=-1\n", False),  # notice before the reply
            (b"HANGUP\n", True),  # end of stream with no Dial reply
            (b"", True),  # AGISIGHUP=no and AGIEXITONHANGUP=yes: only end of stream
        ],
        ids=["sighup-default", "sighup-no", "exit-on-hangup", "notice-first", "hangup-then-eof", "eof-only"],
    )
    async def test_handler_finishes_and_cleanup_runs(self, serve: Any, after_dial: bytes, close: bool) -> None:
        steps: list[str] = []
        dial_results: list[DialResult] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path)
            await port.answer()
            try:
                dial_results.append(await port.connect_agent("agent1", ring_timeout_s=20))
            except CallEnded:
                steps.append("call-ended")
            finally:
                # Stand-ins for the ticket write and the sync enqueue, which must run regardless.
                await asyncio.sleep(0)
                steps.append("ticket-written")
                await asyncio.sleep(0)
                steps.append("sync-enqueued")

        server = await serve({"ivr/main": handler})
        tasks_before = asyncio.all_tasks()
        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port)
            await peer.expect(b"ANSWER\n", b"200 result=0\n")
            await peer.expect(b'EXEC "Dial" "PJSIP/agent1,20,g"\n', after_dial)
            if close:
                await peer.close()
            else:
                # The port asks how the Dial ended; the agent was still ringing.
                await peer.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (CANCEL)\n")
                await peer.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=0\n")
                await peer.send(b"HANGUP\n")
                await peer.expect_closed()
                await peer.close()
            await wait_for_calls_to_finish(server)

        assert dial_results == []
        assert steps == ["call-ended", "ticket-written", "sync-enqueued"]
        assert server.live_calls == 0
        assert asyncio.all_tasks() <= tasks_before
        assert [entry["outcome"] for entry in events(logs, "call finished")] == ["caller_hangup"]
        assert [entry for entry in logs if entry["log_level"] == "error"] == []


    async def test_hangup_after_answer_reports_talk_time(self, serve: Any) -> None:
        """A caller who hangs up after talking still counts as answered (Dial result, then dead-channel reads)."""
        outcomes: list[Any] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path, clock=iter([0.0, 60.0]).__next__)
            outcomes.append(await port.connect_agent("agent1", ring_timeout_s=20))
            try:
                await port.play_prompt("goodbye")
            except CallEnded:
                outcomes.append("call-ended")

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'EXEC "Dial" "PJSIP/agent1,20,g"\n', b"HANGUP\n200 result=-1\n")
        await peer.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (ANSWER)\n")
        await peer.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=1 (42)\n")
        await peer.expect_closed()
        await peer.close()
        await wait_for_calls_to_finish(server)

        assert outcomes == [DialResult(DialStatus.ANSWERED, answered=True, talk_seconds=42.0), "call-ended"]


class TestUnplayablePrompt:
    """F08: result -1 with endpos 0, no HANGUP and the channel up is a failed prompt, not a hang-up."""

    @staticmethod
    def flow_handler(results: list[Any], fallback: str | None) -> Handler:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path, fallback_prompt_id=fallback)
            results.append(await port.play_prompt("welcome", interrupt_keys="#"))
            results.append(await port.collect_digits("menu", max_digits=1, timeout_ms=5000))

        return handler

    async def test_failed_prompt_plays_fallback_and_flow_continues(self, serve: Any) -> None:
        results: list[Any] = []
        server = await serve({"ivr/main": self.flow_handler(results, "sorry")})

        with structlog.testing.capture_logs() as logs:
            peer = await FakeAsterisk.start_call(server.port)
            await peer.expect(b'STREAM FILE "hotline/zh/welcome" "#"\n', b"200 result=-1 endpos=0\n")
            await peer.expect(b"CHANNEL STATUS\n", b"200 result=6\n")
            await peer.expect(b'STREAM FILE "hotline/zh/sorry" "#"\n', b"200 result=0 endpos=16000\n")
            await peer.expect(b'GET DATA "hotline/zh/menu" "5000" "1"\n', b"200 result=1\n")
            await peer.expect_closed()
            await wait_for_calls_to_finish(server)
            await peer.close()

        assert results == [
            PlaybackResult(played=False),
            DigitInput(digits="1", outcome=DigitOutcome.COMPLETE),
        ]
        failed = events(logs, "prompt failed to play")
        assert len(failed) == 1
        assert failed[0]["file"] == "hotline/zh/welcome"
        assert failed[0]["log_level"] == "warning"
        assert events(logs, "call finished")[0]["outcome"] == "completed"

    async def test_failed_prompt_without_fallback(self, serve: Any) -> None:
        results: list[Any] = []
        server = await serve({"ivr/main": self.flow_handler(results, None)})

        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'STREAM FILE "hotline/zh/welcome" "#"\n', b"200 result=-1 endpos=0\n")
        await peer.expect(b"CHANNEL STATUS\n", b"200 result=6\n")
        await peer.expect(b'GET DATA "hotline/zh/menu" "5000" "1"\n', b"200 result= (timeout)\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert results == [PlaybackResult(played=False), DigitInput(digits="", outcome=DigitOutcome.TIMEOUT)]

    async def test_hangup_seen_while_checking_status(self, serve: Any) -> None:
        """The same reply followed by a HANGUP is a hang-up after all."""
        results: list[Any] = []

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            port = AgiCallPort(channel, prompt_path, fallback_prompt_id="sorry")
            try:
                await port.play_prompt("welcome")
            except CallEnded:
                results.append("ended")

        server = await serve({"ivr/main": handler})
        peer = await FakeAsterisk.start_call(server.port)
        await peer.expect(b'STREAM FILE "hotline/zh/welcome" ""\n', b"200 result=-1 endpos=0\n")
        await peer.expect(b"CHANNEL STATUS\n", b"HANGUP\n200 result=6\n")
        await peer.expect_closed()
        await wait_for_calls_to_finish(server)
        await peer.close()

        assert results == ["ended"]
