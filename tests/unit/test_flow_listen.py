"""Menus with ``listen``: a spoken word counts as its key when a recogniser is configured.

The recogniser and the recording port here are small fakes of the domain's own
protocols; the real vosk worker and RECORD FILE are tested in
``tests/unit/test_vosk_recognizer.py`` and ``tests/integration/test_speech_answer.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acd.pool import AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow import FlowError, parse_flow
from ivr.ports import CallPortError, RecordingResult
from ivr.recognizer import Recognition, RecognizerTimeout, match_word
from tests.fakes.call_port import ScriptedCaller

# 2026-12-07 is a Monday; 02:00 UTC is 10:00 in Asia/Shanghai.
MONDAY_10 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)

FLOW_TEXT = """\
flow: listen-demo
title: 语音菜单示例
start: main_menu
handlers:
  human: {key: "0", skill: general, next: to_agent}
nodes:
  main_menu:
    type: menu
    prompt: main_menu
    max_attempts: 2
    no_input_prompt: no_input
    on_exhausted: to_agent
    listen:
      prompt: no_input
      words: {低保: "1", 临时救助: "3", 人工: "0"}
    choices:
      "1": {category: dibao, skill: dibao, next: dibao_done}
      "3": {category: linshi, skill: general, next: linshi_done}
      "0": {next: to_agent}
  dibao_done: {type: hangup, prompt: category_dibao}
  linshi_done: {type: hangup, prompt: category_linshi}
  to_agent: {type: hangup, prompt: goodbye}
"""


def flow(text: str = FLOW_TEXT):
    return parse_flow(text.encode("utf-8"), source="listen.yaml")


@dataclass
class RecordingCaller(ScriptedCaller):
    """A scripted caller whose port can also record spoken answers."""

    answers: list[float] = field(default_factory=list)
    recorded_answers: list[str] = field(default_factory=list)
    fail_recording: bool = False

    async def record_answer(self, name: str, *, max_seconds: int, silence_s: int = 1) -> RecordingResult:
        self._check()
        if self.fail_recording:
            raise CallPortError("RECORD FILE failed with result -1")
        self.recorded_answers.append(name)
        return RecordingResult(f"/answers/{name}.wav", self.answers.pop(0) if self.answers else 0.0)


@dataclass
class HeardWords:
    """A recogniser that hears the next text of ``texts`` in each recording."""

    texts: list[str]
    paths: list[Path] = field(default_factory=list)
    error: Exception | None = None

    async def recognize(self, recording: Path, words: Sequence[str]) -> Recognition:
        if self.error is not None:
            raise self.error
        self.paths.append(recording)
        text = self.texts.pop(0)
        return Recognition(text=text, word=match_word(text, words))


async def _run(port: ScriptedCaller, recognizer: HeardWords | None):
    pool = AgentPool([AgentProfile("agent1", "agent1", "agent1", frozenset({"general", "dibao"}))])
    await pool.device_state_changed("agent1", DeviceState.NOT_IN_USE)
    runner = FlowRunner(pool, _NoHooks(), wall_clock=lambda: MONDAY_10, clock=lambda: 1000.0,
                        recognizer=recognizer)
    call = Call(call_id="1700000000.8", caller=CallerId.from_raw("13900000001"), dialed="12349", channel="PJSIP/x-8",
                started_at=MONDAY_10, route="ivr/12349")
    return await runner.run(flow(), call, port)


class _NoHooks:
    async def category_chosen(self, session): ...

    async def agent_answered(self, session): ...

    async def emergency_raised(self, session): ...

    async def message_recorded(self, session): ...

    async def callback_requested(self, session): ...

    async def survey_answered(self, session): ...

    async def overflow_dialling(self, session): ...

    async def overflow_escalated(self, session):
        return True


class TestSpokenAnswer:
    async def test_word_takes_its_keys_path(self) -> None:
        port = RecordingCaller(keys=[None], answers=[1.2])
        recognizer = HeardWords(["临时 救助"])

        session = await _run(port, recognizer)

        assert session.path == ["main_menu", "linshi_done"]
        assert session.category == "linshi"
        assert port.recorded_answers == ["1700000000.8-main_menu"]
        assert recognizer.paths == [Path("/answers/1700000000.8-main_menu.wav")]
        assert port.played[:2] == ["main_menu", "no_input"]

    async def test_handler_word_reaches_human(self) -> None:
        session = await _run(RecordingCaller(keys=[None], answers=[0.8]), HeardWords(["人工"]))

        assert session.path == ["main_menu", "to_agent"]

    async def test_unknown_speech_is_no_input(self) -> None:
        port = RecordingCaller(keys=[None, "1"], answers=[1.0])

        session = await _run(port, HeardWords(["[unk]"]))

        assert session.path == ["main_menu", "dibao_done"]
        assert [key.outcome for key in session.keys] == ["no_input", "accepted"]

    async def test_key_pressed_skips_listening(self) -> None:
        port = RecordingCaller(keys=["1"])

        await _run(port, HeardWords([]))

        assert port.recorded_answers == []


class TestKeysOnly:
    async def test_no_recognizer_never_records(self) -> None:
        port = RecordingCaller(keys=[None, "3"], answers=[1.0])

        session = await _run(port, None)

        assert port.recorded_answers == []
        assert session.path == ["main_menu", "linshi_done"]

    async def test_port_without_recording_stays_keys_only(self) -> None:
        session = await _run(ScriptedCaller(keys=[None, "1"]), HeardWords(["低保"]))

        assert session.path == ["main_menu", "dibao_done"]

    async def test_recogniser_timeout_falls_back_to_keys(self) -> None:
        port = RecordingCaller(keys=[None, "1"], answers=[1.0, 1.0])

        session = await _run(port, HeardWords([], error=RecognizerTimeout("took longer than 10 s")))

        assert session.path == ["main_menu", "dibao_done"]

    async def test_recording_failure_falls_back_to_keys(self) -> None:
        port = RecordingCaller(keys=[None, "1"], fail_recording=True)

        session = await _run(port, HeardWords(["低保"]))

        assert session.path == ["main_menu", "dibao_done"]

    async def test_empty_recording_not_recognised(self) -> None:
        recognizer = HeardWords(["低保"])

        await _run(RecordingCaller(keys=[None, "1"], answers=[0.0]), recognizer)

        assert recognizer.paths == []


class TestValidation:
    def test_word_for_unknown_key_rejected_with_line(self) -> None:
        text = FLOW_TEXT.replace('人工: "0"', '人工: "5"')

        with pytest.raises(FlowError) as raised:
            flow(text)

        issue = str(raised.value)
        assert "listen.yaml:15:" in issue
        assert "词语“人工”对应的按键“5”不是本菜单的选项" in issue

    def test_empty_word_list_rejected(self) -> None:
        text = FLOW_TEXT.replace('words: {低保: "1", 临时救助: "3", 人工: "0"}', "words: {}")

        with pytest.raises(FlowError):
            flow(text)
