"""A scripted CallPort for domain tests: the caller's keys and hang-up come from a list."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from ivr.overflow import OverflowHandoff
from ivr.ports import CallEnded, DialResult, DialStatus, DigitInput, DigitOutcome, PlaybackResult, RecordingResult


@dataclass
class ScriptedCaller:
    """Answers each ``collect_digits`` with the next entry of ``keys``.

    An entry is a digit string, ``None`` for silence, or ``"HANGUP"`` to end the call.
    ``dial_results`` maps an endpoint (or ``number@trunk`` for a transfer) to the statuses
    it returns on successive dials. ``record_seconds`` is how long the caller speaks when a
    message is recorded. ``timeouts`` lists the timeout of every ``collect_digits``.
    A caller whose script has run out stays silent at the prompts in ``silent_prompts``
    (the survey after the agent) instead of failing the test.
    """

    keys: list[str | None]
    dial_results: dict[str, list[DialStatus]] = field(default_factory=dict)
    broken_prompts: set[str] = field(default_factory=set)
    hang_up_on_prompt: str | None = None
    played: list[str] = field(default_factory=list)
    dialed: list[str] = field(default_factory=list)
    ended: bool = False
    answered: bool = False
    record_seconds: float = 7.5
    recorded: list[str] = field(default_factory=list)
    transfers: list[str] = field(default_factory=list)
    # The overflow handoff sent with each transfer (None for a plain transfer).
    handoffs: list[OverflowHandoff | None] = field(default_factory=list)
    timeouts: list[int] = field(default_factory=list)
    silent_prompts: frozenset[str] = frozenset({"survey"})
    # Music-on-hold classes started, and names of the recordings started.
    music: list[str] = field(default_factory=list)
    call_recordings: list[str] = field(default_factory=list)

    def _check(self) -> None:
        if self.ended:
            raise CallEnded()

    async def answer(self) -> None:
        self._check()
        self.answered = True

    async def play_prompt(self, prompt_id: str, *, interrupt_keys: str = "") -> PlaybackResult:
        self._check()
        if prompt_id == self.hang_up_on_prompt:
            self.ended = True
            raise CallEnded()
        if prompt_id in self.broken_prompts:
            return PlaybackResult(played=False)
        self.played.append(prompt_id)
        return PlaybackResult(played=True, offset_samples=8000)

    async def collect_digits(self, prompt_id: str, *, max_digits: int, timeout_ms: int) -> DigitInput:
        self._check()
        self.timeouts.append(timeout_ms)
        played = prompt_id not in self.broken_prompts
        if played:
            self.played.append(prompt_id)
        if not self.keys and prompt_id in self.silent_prompts:
            return DigitInput("", DigitOutcome.TIMEOUT, prompt_played=played)
        if not self.keys:
            raise AssertionError(f"caller script ran out of keys at prompt {prompt_id}")
        entry = self.keys.pop(0)
        if entry == "HANGUP":
            self.ended = True
            raise CallEnded()
        if entry is None:
            return DigitInput("", DigitOutcome.TIMEOUT, prompt_played=played)
        outcome = DigitOutcome.COMPLETE if len(entry) >= max_digits else DigitOutcome.PARTIAL_TIMEOUT
        return DigitInput(entry[:max_digits], outcome, prompt_played=played)

    async def connect_agent(self, endpoint: str, *, ring_timeout_s: int) -> DialResult:
        self._check()
        self.dialed.append(endpoint)
        return self._dial(endpoint)

    async def transfer_outside(self, number: str, trunk: str, *, ring_timeout_s: int,
                               handoff: OverflowHandoff | None = None) -> DialResult:
        self._check()
        self.transfers.append(f"{number}@{trunk}")
        self.handoffs.append(handoff)
        return self._dial(f"{number}@{trunk}")

    async def record_message(self, name: str, *, max_seconds: int, silence_s: int) -> RecordingResult:
        self._check()
        self.recorded.append(name)
        return RecordingResult(file_name=f"{name}.wav", duration_s=min(self.record_seconds, max_seconds))

    def _dial(self, endpoint: str) -> DialResult:
        statuses = self.dial_results.get(endpoint, [])
        status = statuses.pop(0) if statuses else DialStatus.ANSWERED
        if status is DialStatus.ANSWERED:
            return DialResult(status, answered=True, talk_seconds=12.0)
        return DialResult(status, answered=False)

    async def start_hold_music(self, music_class: str) -> None:
        self._check()
        self.music.append(music_class)

    async def stop_hold_music(self) -> None:
        self._check()

    async def wait_for_key(self, timeout_ms: int) -> str | None:
        """Let the wait pass without a key, in real time: queued callers in these scripts only listen."""
        self._check()
        await asyncio.sleep(timeout_ms / 1000)
        return None

    async def start_call_recording(self, name: str) -> str:
        self._check()
        self.call_recordings.append(name)
        return f"{name}.wav"

    async def set_call_variable(self, name: str, value: str) -> None:
        self._check()

    async def hang_up(self) -> None:
        self.ended = True
