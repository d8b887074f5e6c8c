"""Unit tests of FastAgiServer: routing, failure handling, log context and shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import structlog

from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.fastagi_server import FastAgiServer

ENVIRONMENT = (
    "agi_network: yes\n"
    "agi_network_script: {script}\n"
    "agi_request: agi://127.0.0.1/{script}\n"
    "agi_channel: PJSIP/anonymous-{uniqueid}\n"
    "agi_uniqueid: {uniqueid}\n"
    "agi_callerid: 13800138000\n"
    "agi_extension: 12349\n"
    "agi_context: hotline\n"
    "\n"
)


async def start_call(port: int, script: str = "ivr/main", uniqueid: str = "1700000000.5") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(ENVIRONMENT.format(script=script, uniqueid=uniqueid).encode())
    await writer.drain()
    return reader, writer


async def expect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, command: bytes, reply: bytes | None) -> None:
    assert await asyncio.wait_for(reader.readline(), 3) == command
    if reply is not None:
        writer.write(reply)
        await writer.drain()


async def expect_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    assert await asyncio.wait_for(reader.read(), 3) == b""
    writer.close()
    await writer.wait_closed()


async def wait_idle(server: FastAgiServer) -> None:
    async with asyncio.timeout(3):
        while server.live_calls:
            await asyncio.sleep(0.01)


class TestFastAgiServer:
    async def test_unexpected_exception_logged_once(self) -> None:
        """A handler bug is logged once with the call id and sends the call to the failure path."""

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            raise KeyError("missing-node")

        async with FastAgiServer({"ivr/main": handler}) as server:
            with structlog.testing.capture_logs() as logs:
                reader, writer = await start_call(server.port)
                await expect(reader, writer, b'SET VARIABLE "HOTLINE_FAILURE" "handler_error"\n', b"200 result=1\n")
                await expect_closed(reader, writer)
                await wait_idle(server)

        errors = [entry for entry in logs if entry["log_level"] == "error"]
        assert len(errors) == 1
        assert errors[0]["event"] == "AGI handler raised an unexpected exception"
        assert errors[0]["call_id"] == "1700000000.5"
        assert errors[0]["exc_info"] is True
        finished = [entry for entry in logs if entry["event"] == "call finished"]
        assert finished[0]["outcome"] == "handler_error"

    async def test_agi_error_sets_failure(self) -> None:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await channel.answer()

        async with FastAgiServer({"ivr/main": handler}) as server:
            with structlog.testing.capture_logs() as logs:
                reader, writer = await start_call(server.port)
                await expect(reader, writer, b"ANSWER\n", b"510 Invalid or unknown command\n")
                await expect(reader, writer, b'SET VARIABLE "HOTLINE_FAILURE" "agi_error"\n', b"200 result=1\n")
                await expect_closed(reader, writer)
                await wait_idle(server)

        failed = [entry for entry in logs if entry["event"] == "AGI call failed"]
        assert failed[0]["error_type"] == "AgiInvalidCommand"
        assert [entry for entry in logs if entry["log_level"] == "error"] == []

    async def test_timeout_skips_failure_variable(self) -> None:
        """After a command timed out the channel is unusable, so no failure variable is sent."""

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await channel.answer()

        async with FastAgiServer({"ivr/main": handler}, command_timeout_s=0.2) as server:
            with structlog.testing.capture_logs() as logs:
                reader, writer = await start_call(server.port)
                await expect(reader, writer, b"ANSWER\n", None)
                await expect_closed(reader, writer)
                await wait_idle(server)

        failed = [entry for entry in logs if entry["event"] == "AGI call failed"]
        assert failed[0]["error_type"] == "AgiCommandTimeout"

    async def test_context_bound_per_call(self) -> None:
        """Each call task sees its own ids in the log context; the server's context stays clean."""
        seen: dict[str, dict[str, Any]] = {}
        both_inside = asyncio.Barrier(2)

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await both_inside.wait()
            seen[env.uniqueid] = structlog.contextvars.get_contextvars()

        async with FastAgiServer({"ivr/main": handler}) as server:
            first = await start_call(server.port, uniqueid="1700000000.6")
            second = await start_call(server.port, uniqueid="1700000000.7")
            await expect_closed(*first)
            await expect_closed(*second)
            await wait_idle(server)

        assert seen["1700000000.6"]["call_id"] == "1700000000.6"
        assert seen["1700000000.7"]["call_id"] == "1700000000.7"
        assert seen["1700000000.7"]["channel"] == "PJSIP/anonymous-1700000000.7"
        assert seen["1700000000.7"]["agi_script"] == "ivr/main"
        assert "call_id" not in structlog.contextvars.get_contextvars()

    async def test_stop_cancels_after_grace(self) -> None:
        """stop() waits for the grace period, then cancels; the handler's cleanup still runs."""
        cleanup: list[str] = []
        entered = asyncio.Event()

        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            entered.set()
            try:
                await asyncio.sleep(60)
            finally:
                cleanup.append("done")

        server = FastAgiServer({"ivr/main": handler})
        await server.start()
        with structlog.testing.capture_logs() as logs:
            reader, writer = await start_call(server.port)
            await asyncio.wait_for(entered.wait(), 3)
            await server.stop(grace_s=0.1)
            await expect_closed(reader, writer)

        assert cleanup == ["done"]
        assert server.live_calls == 0
        cut = [entry for entry in logs if entry["event"] == "FastAGI calls cancelled at shutdown"]
        assert cut[0]["count"] == 1
        finished = [entry for entry in logs if entry["event"] == "call finished"]
        assert finished[0]["outcome"] == "cancelled"

    async def test_stop_waits_for_finishing_call(self) -> None:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await channel.answer()

        server = FastAgiServer({"ivr/main": handler})
        await server.start()
        with structlog.testing.capture_logs() as logs:
            reader, writer = await start_call(server.port)
            assert await reader.readline() == b"ANSWER\n"
            stopping = asyncio.create_task(server.stop(grace_s=3))
            await asyncio.sleep(0.05)
            writer.write(b"200 result=0\n")
            await stopping
            await expect_closed(reader, writer)

        finished = [entry for entry in logs if entry["event"] == "call finished"]
        assert finished[0]["outcome"] == "completed"
        assert not [entry for entry in logs if entry["event"] == "FastAGI calls cancelled at shutdown"]

    async def test_refuses_connections_after_stop(self) -> None:
        server = FastAgiServer({})
        await server.start()
        port = server.port
        await server.stop()

        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)

    def test_port_before_start(self) -> None:
        with pytest.raises(RuntimeError):
            _ = FastAgiServer({}).port

    @pytest.mark.parametrize("path", ["", "/ivr/main", "ivr/main/", "ivr/main?lang=zh", " ivr"])
    def test_rejects_invalid_route(self, path: str) -> None:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            return None

        with pytest.raises(ValueError, match="route"):
            FastAgiServer({path: handler})


class TestCompletionVariable:
    """The completion variable lets the dialplan tell a finished flow from a dead controller."""

    async def test_set_after_normal_return(self) -> None:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await channel.answer()

        server = FastAgiServer({"ivr/main": handler}, completion_variable="HOTLINE_DONE")
        await server.start()
        try:
            reader, writer = await start_call(server.port)
            await expect(reader, writer, b"ANSWER\n", b"200 result=0\n")
            await expect(reader, writer, b'SET VARIABLE "HOTLINE_DONE" "1"\n', b"200 result=1\n")
            await expect_closed(reader, writer)
        finally:
            await server.stop()

    async def test_not_set_after_local_hangup(self) -> None:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            await channel.hangup()

        server = FastAgiServer({"ivr/main": handler}, completion_variable="HOTLINE_DONE")
        await server.start()
        try:
            reader, writer = await start_call(server.port)
            await expect(reader, writer, b"HANGUP\n", b"200 result=1\n")
            await expect_closed(reader, writer)
        finally:
            await server.stop()

    async def test_not_set_after_handler_error(self) -> None:
        async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
            raise RuntimeError("bug")

        server = FastAgiServer({"ivr/main": handler}, completion_variable="HOTLINE_DONE")
        await server.start()
        try:
            reader, writer = await start_call(server.port)
            await expect(reader, writer, b'SET VARIABLE "HOTLINE_FAILURE" "handler_error"\n', b"200 result=1\n")
            await expect_closed(reader, writer)
        finally:
            await server.stop()
