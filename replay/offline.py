"""Offline replay: runs a call script through the flow engine with a simulated caller and clock.

``ReplayPort`` is a ``CallPort`` whose time is simulated: a prompt lasts as long as its
built audio (or ``DEFAULT_PROMPT_S`` when no audio is built), a key reaches the prompt
whose listening window contains the key's time, and the caller hangs up at the script's
hang-up time. Agents are always free and answer at once. Nothing here needs Asterisk.
"""

from __future__ import annotations

import wave
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from acd.pool import AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import CallSession, FlowRunner
from ivr.flow import DEFAULT_SKILL, Flow, flow_skills
from ivr.overflow import OverflowHandoff
from ivr.ports import (
    CallEnded,
    DialResult,
    DialStatus,
    DigitInput,
    DigitOutcome,
    PlaybackResult,
    RecordingResult,
)
from replay.scripts import ANY, CallScript, Expectation, TimedKey
from tickets.call_record import CallOutcome

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT_AUDIO_DIR = REPO_ROOT / "prompts" / "audio" / "zh-CN"
# Length assumed for a prompt without built audio.
DEFAULT_PROMPT_S = 3.0
RING_MS = 1000
AGENT_TALK_MS = 3000
MESSAGE_S = 5.0
OFFLINE_TICKET = "offline"
OFFLINE_START = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # 10:00 on a Tuesday in Beijing


def prompt_lengths(audio_dir: Path = PROMPT_AUDIO_DIR) -> dict[str, float]:
    """Return the length in seconds of every built prompt in ``audio_dir``."""
    lengths: dict[str, float] = {}
    for path in sorted(audio_dir.glob("*.wav")) if audio_dir.is_dir() else []:
        with wave.open(str(path), "rb") as audio:
            lengths[path.stem] = audio.getnframes() / audio.getframerate()
    return lengths


class ReplayPort:
    """A caller who presses keys at given times and may hang up, on a simulated clock."""

    def __init__(self, keys: tuple[TimedKey, ...], hangup_ms: int | None, lengths: Mapping[str, float]):
        self._keys = list(keys)
        self._hangup_ms = hangup_ms
        self._lengths = lengths
        self.now_ms = 0.0
        self.ended = False
        self.dropped: list[TimedKey] = []

    def seconds(self) -> float:
        return self.now_ms / 1000

    def _check(self) -> None:
        if self.ended:
            raise CallEnded()

    def _advance_to(self, moment_ms: float) -> None:
        """Move the clock on; the caller's hang-up ends the call on the way."""
        if self._hangup_ms is not None and moment_ms >= self._hangup_ms:
            self.now_ms = max(self.now_ms, self._hangup_ms)
            self.ended = True
            raise CallEnded()
        self.now_ms = max(self.now_ms, moment_ms)

    def _prompt_ms(self, prompt_id: str) -> float:
        return self._lengths.get(prompt_id, DEFAULT_PROMPT_S) * 1000

    def _drop_keys_before(self, moment_ms: float) -> None:
        # A key pressed while no prompt listens (during a plain announcement) is lost.
        # NOTE: this mirrors AGI STREAM FILE without escape digits on Asterisk 22; the
        # library's two_keys_fast script checks it on live calls.
        while self._keys and self._keys[0].at_ms < moment_ms:
            self.dropped.append(self._keys.pop(0))

    async def answer(self) -> None:
        self._check()

    async def play_prompt(self, prompt_id: str, *, interrupt_keys: str = "") -> PlaybackResult:
        self._check()
        self._drop_keys_before(self.now_ms)
        self._advance_to(self.now_ms + self._prompt_ms(prompt_id))
        return PlaybackResult(played=True)

    async def collect_digits(self, prompt_id: str, *, max_digits: int, timeout_ms: int) -> DigitInput:
        self._check()
        self._drop_keys_before(self.now_ms)
        deadline = self.now_ms + self._prompt_ms(prompt_id) + timeout_ms
        digits = ""
        while self._keys and self._keys[0].at_ms < deadline and len(digits) < max_digits:
            key = self._keys.pop(0)
            self._advance_to(key.at_ms)
            if key.key == "#":
                return DigitInput(digits, DigitOutcome.PARTIAL_TIMEOUT if digits else DigitOutcome.TERMINATOR_ONLY)
            digits += key.key
            # Between digits the switch waits the prompt's timeout again.
            deadline = key.at_ms + timeout_ms
        if len(digits) >= max_digits:
            return DigitInput(digits, DigitOutcome.COMPLETE)
        self._advance_to(deadline)
        return DigitInput(digits, DigitOutcome.PARTIAL_TIMEOUT if digits else DigitOutcome.TIMEOUT)

    async def _talk(self) -> DialResult:
        self._check()
        self._advance_to(self.now_ms + RING_MS)
        begin = self.now_ms
        try:
            self._advance_to(self.now_ms + AGENT_TALK_MS)
        except CallEnded:
            # The caller hung up while talking: the call was answered all the same.
            return DialResult(DialStatus.ANSWERED, answered=True, talk_seconds=(self.now_ms - begin) / 1000)
        return DialResult(DialStatus.ANSWERED, answered=True, talk_seconds=AGENT_TALK_MS / 1000)

    async def connect_agent(self, endpoint: str, *, ring_timeout_s: int) -> DialResult:
        return await self._talk()

    async def transfer_outside(self, number: str, trunk: str, *, ring_timeout_s: int,
                               handoff: OverflowHandoff | None = None) -> DialResult:
        return await self._talk()

    async def record_message(self, name: str, *, max_seconds: int, silence_s: int) -> RecordingResult:
        self._check()
        seconds = min(MESSAGE_S, max_seconds)
        self._advance_to(self.now_ms + seconds * 1000)
        return RecordingResult(file_name=f"{name}.wav", duration_s=seconds)

    async def start_hold_music(self, music_class: str) -> None:
        self._check()

    async def stop_hold_music(self) -> None:
        self._check()

    async def wait_for_key(self, timeout_ms: int) -> str | None:
        """Return the caller's next key if it comes within ``timeout_ms``; music does not drop keys."""
        self._check()
        deadline = self.now_ms + timeout_ms
        if self._keys and self._keys[0].at_ms < deadline:
            key = self._keys.pop(0)
            self._advance_to(max(key.at_ms, self.now_ms))
            return key.key
        self._advance_to(deadline)
        return None

    async def start_call_recording(self, name: str) -> str:
        self._check()
        return f"{name}.wav"

    async def set_call_variable(self, name: str, value: str) -> None:
        self._check()

    async def hang_up(self) -> None:
        self.ended = True


class OfflineHooks:
    """Marks the session as having a ticket wherever the ticket desk would open one."""

    async def _ticket(self, session: CallSession) -> None:
        session.ticket_id = session.ticket_id or OFFLINE_TICKET

    async def category_chosen(self, session: CallSession) -> None:
        await self._ticket(session)

    async def agent_answered(self, session: CallSession) -> None:
        await self._ticket(session)

    async def emergency_raised(self, session: CallSession) -> None:
        await self._ticket(session)

    async def message_recorded(self, session: CallSession) -> None:
        await self._ticket(session)

    async def callback_requested(self, session: CallSession) -> None:
        await self._ticket(session)

    async def survey_answered(self, session: CallSession) -> None:
        await self._ticket(session)

    async def overflow_dialling(self, session: CallSession) -> None:
        await self._ticket(session)

    async def overflow_escalated(self, session: CallSession) -> bool:
        await self._ticket(session)
        return True


@dataclass(frozen=True, slots=True)
class ActualCall:
    """The result of a call, offline or on a live stack, in the terms a script checks."""

    path: tuple[str, ...]
    category: str | None
    skill: str | None
    agent: str | None
    ticket: bool
    outcome: CallOutcome | None


async def always_free_pool(flow: Flow, roster: tuple[AgentProfile, ...] = ()) -> AgentPool:
    """Return a pool with ``roster`` plus one agent for every skill of the flow, all idle."""
    skills = frozenset(flow_skills(flow) | {DEFAULT_SKILL})
    agents = [*roster, AgentProfile("replay-agent", "回放坐席", "replay-agent", skills)]
    pool = AgentPool(agents)
    for agent in agents:
        await pool.device_state_changed(agent.endpoint, DeviceState.NOT_IN_USE)
    return pool


async def run_offline(
    flow: Flow, script: CallScript, *, lengths: Mapping[str, float], started_at: datetime = OFFLINE_START,
    roster: tuple[AgentProfile, ...] = (), keep_port: Callable[[ReplayPort], None] | None = None,
) -> ActualCall:
    """Run one script through ``flow`` and return what the engine did with the call.

    NOTE: the script's need tags are not applied, because a live node does not set need
    tags from caller profiles either. Only the flow's set nodes and the emergency key set them.
    """
    port = ReplayPort(script.keys, script.hangup_ms, lengths)
    pool = await always_free_pool(flow, roster)
    runner = FlowRunner(pool, OfflineHooks(), clock=port.seconds,
                        wall_clock=lambda: started_at + timedelta(milliseconds=port.now_ms))
    raw = script.caller or "anonymous"
    call = Call(call_id="replay-1", caller=CallerId.from_raw(raw), dialed="12349", channel="Replay/1",
                started_at=started_at, route="replay")
    session = await runner.run(flow, call, port)
    if keep_port is not None:
        keep_port(port)
    return ActualCall(tuple(session.path), session.category, session.skill, session.agent_id,
                      session.ticket_id is not None, session.outcome)


def _path_text(path: tuple[str, ...] | None) -> str:
    return " → ".join(path) if path else "（空）"


def compare(expect: Expectation, actual: ActualCall) -> list[str]:
    """Return one Chinese line per difference between the expectation and the call."""
    problems: list[str] = []
    if expect.path is not None and actual.path != expect.path:
        problems.append(f"路径：期望 {_path_text(expect.path)}\n      实际 {_path_text(actual.path)}")
    if expect.path_prefix is not None and actual.path[: len(expect.path_prefix)] != expect.path_prefix:
        problems.append(f"路径开头：期望 {_path_text(expect.path_prefix)} …\n          实际 {_path_text(actual.path)}")
    if "category" in expect.checks and actual.category != expect.category:
        problems.append(f"类别：期望 {expect.category or '无'}，实际 {actual.category or '无'}")
    if "skill" in expect.checks and actual.skill != expect.skill:
        problems.append(f"技能组：期望 {expect.skill or '无'}，实际 {actual.skill or '无'}")
    if expect.agent is not None:
        if expect.agent == ANY and actual.agent is None:
            problems.append("坐席：期望有坐席接听，实际没有坐席接听")
        elif expect.agent != ANY and actual.agent != expect.agent:
            problems.append(f"坐席：期望 {expect.agent}，实际 {actual.agent or '无'}")
    if expect.ticket is not None and actual.ticket != expect.ticket:
        problems.append(f"工单：期望{'生成' if expect.ticket else '不生成'}，实际{'生成了' if actual.ticket else '没有生成'}")
    if expect.outcome is not None and actual.outcome is not expect.outcome:
        got = actual.outcome.value if actual.outcome else "无"
        problems.append(f"结果：期望 {expect.outcome.value}，实际 {got}")
    return problems
