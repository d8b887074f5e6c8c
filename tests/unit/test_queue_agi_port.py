"""AgiCallPort's hold music, key polling and call recording, as byte exchanges with a fake Asterisk."""

from __future__ import annotations

from typing import Any

import pytest

from hwd_bridge.agi_call_port import AgiCallPort
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from ivr.ports import CallEnded
from tests.field_cases.test_fastagi_field_cases import FakeAsterisk, prompt_path, serve, wait_for_calls_to_finish

__all__ = ["serve"]


async def _run(serve: Any, operation, exchange) -> list[Any]:
    results: list[Any] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        port = AgiCallPort(channel, prompt_path)
        try:
            results.append(await operation(port))
        except CallEnded as exc:
            results.append(exc)

    server = await serve({"ivr/main": handler})
    peer = await FakeAsterisk.start_call(server.port)
    await exchange(peer)
    await peer.close()
    await wait_for_calls_to_finish(server)
    return results


async def test_hold_music_start_and_stop(serve: Any) -> None:
    async def operation(port: AgiCallPort) -> str:
        await port.start_hold_music("default")
        await port.stop_hold_music()
        return "done"

    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "StartMusicOnHold" "default"\n', b"200 result=0\n")
        await peer.expect(b'EXEC "StopMusicOnHold" ""\n', b"200 result=0\n")

    assert await _run(serve, operation, exchange) == ["done"]


async def test_hold_music_failure_on_live_call_continues(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "StartMusicOnHold" "default"\n', b"200 result=-1\n")
        await peer.expect(b"CHANNEL STATUS\n", b"200 result=6\n")

    assert await _run(serve, lambda port: port.start_hold_music("default"), exchange) == [None]


async def test_hold_music_on_dead_channel_ends_call(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "StartMusicOnHold" "default"\n', b"200 result=-1\n")
        await peer.expect(b"CHANNEL STATUS\n", b"200 result=0\n")

    results = await _run(serve, lambda port: port.start_hold_music("default"), exchange)

    assert len(results) == 1
    assert isinstance(results[0], CallEnded)


async def test_hold_music_class_checked() -> None:
    port = AgiCallPort(None, prompt_path)  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="music-on-hold class"):
        await port.start_hold_music("default,x")


@pytest.mark.parametrize(("reply", "expected"), [(b"200 result=0\n", None), (b"200 result=50\n", "2")])
async def test_wait_for_key_results(serve: Any, reply: bytes, expected: str | None) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'WAIT FOR DIGIT "500"\n', reply)

    assert await _run(serve, lambda port: port.wait_for_key(500), exchange) == [expected]


async def test_wait_for_key_hangup(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'WAIT FOR DIGIT "500"\n', b"200 result=-1\n")

    results = await _run(serve, lambda port: port.wait_for_key(500), exchange)

    assert isinstance(results[0], CallEnded)


async def test_call_recording_runs_mixmonitor(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "MixMonitor" "hotline-calls/call-1700000000-1.wav,b"\n', b"200 result=0\n")

    results = await _run(serve, lambda port: port.start_call_recording("call-1700000000.1"), exchange)

    assert results == ["hotline-calls/call-1700000000-1.wav"]
