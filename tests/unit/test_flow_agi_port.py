"""AgiCallPort's transfer and recording commands, as byte exchanges with a fake Asterisk."""

from __future__ import annotations

from typing import Any

import pytest

from hwd_bridge.agi_call_port import AgiCallPort
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from ivr.ports import DialResult, DialStatus, RecordingResult
from tests.field_cases.test_fastagi_field_cases import FakeAsterisk, prompt_path, serve, wait_for_calls_to_finish

__all__ = ["serve"]


class StepClock:
    """A monotonic clock that moves ``step`` seconds on every read."""

    def __init__(self, step: float):
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def _run(serve: Any, operation, exchange) -> list[Any]:
    results: list[Any] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        port = AgiCallPort(channel, prompt_path, clock=StepClock(20.0))
        results.append(await operation(port))

    server = await serve({"ivr/main": handler})
    peer = await FakeAsterisk.start_call(server.port)
    await exchange(peer)
    await peer.close()
    await wait_for_calls_to_finish(server)
    return results


async def test_transfer_dials_number_at_trunk(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "Dial" "PJSIP/12349@city-trunk,30,g"\n', b"200 result=0\n")
        await peer.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (ANSWER)\n")
        await peer.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=1 (15)\n")

    results = await _run(serve, lambda port: port.transfer_outside("12349", "city-trunk", ring_timeout_s=30), exchange)

    assert results == [DialResult(DialStatus.ANSWERED, answered=True, talk_seconds=15.0)]


async def test_transfer_busy_trunk(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "Dial" "PJSIP/02155501234@carrier,20,g"\n', b"200 result=0\n")
        await peer.expect(b'GET VARIABLE "DIALSTATUS"\n', b"200 result=1 (CONGESTION)\n")
        await peer.expect(b'GET VARIABLE "ANSWEREDTIME"\n', b"200 result=0\n")

    results = await _run(serve, lambda port: port.transfer_outside("02155501234", "carrier", ring_timeout_s=20),
                         exchange)

    assert results == [DialResult(DialStatus.CONGESTION, answered=False)]


@pytest.mark.parametrize(("number", "trunk"), [("12349,r", "city"), ("12349", "city&PJSIP/x"), ("", "city")])
async def test_transfer_rejects_dial_injection(number: str, trunk: str) -> None:
    port = AgiCallPort(None, prompt_path)  # type: ignore[arg-type]

    with pytest.raises(ValueError):
        await port.transfer_outside(number, trunk, ring_timeout_s=20)


async def test_record_message_until_silence(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "Record" "hotline-messages/msg-1700000000-7.wav,5,60,k"\n', b"200 result=0\n")
        await peer.expect(b'GET VARIABLE "RECORD_STATUS"\n', b"200 result=1 (SILENCE)\n")

    results = await _run(serve, lambda port: port.record_message("msg-1700000000.7", max_seconds=60, silence_s=5),
                         exchange)

    # The clock moves 20 s between the two reads; 5 s of closing silence are not speech.
    assert results == [RecordingResult("hotline-messages/msg-1700000000-7.wav", 15.0)]


async def test_record_message_error_has_no_duration(serve: Any) -> None:
    async def exchange(peer: FakeAsterisk) -> None:
        await peer.expect(b'EXEC "Record" "hotline-messages/x.wav,5,60,k"\n', b"200 result=-1\n")
        await peer.expect(b'GET VARIABLE "RECORD_STATUS"\n', b"200 result=1 (ERROR)\n")

    results = await _run(serve, lambda port: port.record_message("x", max_seconds=60, silence_s=5), exchange)

    assert results == [RecordingResult("hotline-messages/x.wav", 0.0)]
