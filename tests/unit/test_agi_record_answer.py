"""AgiCallPort.record_answer: RECORD FILE for the speech recogniser, as byte exchanges with a fake Asterisk."""

from __future__ import annotations

from typing import Any

import pytest

from hwd_bridge.agi_call_port import AgiCallPort
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from ivr.ports import CallEnded, CallPortError, RecordingResult
from ivr.recognizer import AnswerRecorder
from tests.field_cases.test_fastagi_field_cases import (
    FakeAsterisk,
    prompt_path,
    serve,
    wait_for_calls_to_finish,
)

__all__ = ["serve"]

ANSWER_DIR = "/var/spool/asterisk/hotline-answers"
COMMAND = b'RECORD FILE "/var/spool/asterisk/hotline-answers/c-7" "wav" "#" "4000" "BEEP" "s=1"\n'


async def _record(serve: Any, reply: bytes) -> list[Any]:
    outcomes: list[Any] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        port = AgiCallPort(channel, prompt_path, answer_dir=ANSWER_DIR)
        try:
            outcomes.append(await port.record_answer("c.7", max_seconds=4, silence_s=1))
        except (CallEnded, CallPortError) as error:
            outcomes.append(error)

    server = await serve({"ivr/main": handler})
    peer = await FakeAsterisk.start_call(server.port)
    await peer.expect(COMMAND, reply)
    await peer.close()
    await wait_for_calls_to_finish(server)
    return outcomes


async def test_silence_ends_recording(serve: Any) -> None:
    outcomes = await _record(serve, b"200 result=0 (timeout) endpos=12000\n")

    assert outcomes == [RecordingResult(f"{ANSWER_DIR}/c-7.wav", 1.5)]


async def test_hang_up_ends_call(serve: Any) -> None:
    outcomes = await _record(serve, b"200 result=-1 (hangup) endpos=800\n")

    assert len(outcomes) == 1
    assert isinstance(outcomes[0], CallEnded)


async def test_unwritable_folder_is_port_error(serve: Any) -> None:
    outcomes = await _record(serve, b"200 result=-1 (writefile)\n")

    assert len(outcomes) == 1
    assert isinstance(outcomes[0], CallPortError)


async def test_relative_answer_dir_rejected() -> None:
    port = AgiCallPort(None, prompt_path, answer_dir="hotline-answers")  # type: ignore[arg-type]

    with pytest.raises(ValueError, match="absolute answer_dir"):
        await port.record_answer("x", max_seconds=4)


def test_port_is_an_answer_recorder() -> None:
    assert isinstance(AgiCallPort(None, prompt_path), AnswerRecorder)  # type: ignore[arg-type]
