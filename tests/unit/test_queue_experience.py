"""Flow runner queue experience: position and wait announcements, hold music, the callback key.

The pool is a real ``AgentPool``. A test that needs the announcement timer to fire runs
with ``FastPool``, which shortens the reserve timeout of the caller under test only.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acd.pool import AcdSettings, AgentPool, AgentProfile, DeviceState, ReleaseOutcome
from acd.queue_estimate import HandleTimes
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow import FlowError, parse_flow
from ivr.ports import CallEnded, DialResult, PlaybackResult
from speech.catalog import load_catalog
from tests.fakes.call_port import ScriptedCaller
from tickets.call_record import CallOutcome

ROOT = Path(__file__).resolve().parents[2]
CATALOG = set(load_catalog(ROOT / "prompts" / "zh-CN.yaml"))
CALL_ID = "1700000000.7"
CALLER_NUMBER = "13900000017"

FLOW_TEMPLATE = """\
flow: "queue-experience"
title: 排队体验
start: queue
settings:
  fallback_prompt: prompt_fallback
nodes:
  queue:
    type: queue
    skill: dibao
    prompt: transfer_agent
    wait_prompt: queue_wait
    max_wait_s: 60
    announce_every_s: 20
{extra}
    next: goodbye
    on_no_agent: no_agent
  goodbye:
    type: hangup
    prompt: goodbye
  no_agent:
    type: hangup
    prompt: no_agent
"""

EVERYTHING = """\
    announce_position: true
    hold_music: default
    callback: {key: "2", prompt: queue_callback_offer, done_prompt: queue_callback_done, next: goodbye}"""


def _flow(extra: str):
    return parse_flow(FLOW_TEMPLATE.format(extra=extra).encode(), source="queue.yaml", prompt_ids=CATALOG)


class Hooks:
    def __init__(self):
        self.events: list[tuple[str, object]] = []

    async def category_chosen(self, session):
        self.events.append(("category", session.category))

    async def agent_answered(self, session):
        self.events.append(("agent", session.agent_id))

    async def callback_requested(self, session):
        self.events.append(("callback", session.callback_number))


@dataclass
class QueueCaller(ScriptedCaller):
    """A scripted caller that also hears hold music and presses keys while it plays.

    ``wait_keys`` answers successive ``wait_for_key`` calls (``"HANGUP"`` ends the call);
    ``on_poll`` runs before each answer with the number of polls so far. ``actions``
    lists prompts, music changes, polls and dials in the order they happened.
    """

    wait_keys: list[str | None] = field(default_factory=list)
    on_poll: Callable[[int], object] | None = None
    actions: list[str] = field(default_factory=list)
    polls: int = 0

    async def play_prompt(self, prompt_id: str, *, interrupt_keys: str = "") -> PlaybackResult:
        result = await super().play_prompt(prompt_id, interrupt_keys=interrupt_keys)
        self.actions.append(f"play:{prompt_id}")
        return result

    async def connect_agent(self, endpoint: str, *, ring_timeout_s: int) -> DialResult:
        self.actions.append(f"dial:{endpoint}")
        return await super().connect_agent(endpoint, ring_timeout_s=ring_timeout_s)

    async def start_hold_music(self, music_class: str) -> None:
        self._check()
        self.actions.append(f"moh_start:{music_class}")

    async def stop_hold_music(self) -> None:
        self._check()
        self.actions.append("moh_stop")

    async def wait_for_key(self, timeout_ms: int) -> str | None:
        self._check()
        self.polls += 1
        self.actions.append("wait")
        if self.on_poll is not None:
            outcome = self.on_poll(self.polls)
            if asyncio.iscoroutine(outcome):
                await outcome
        await asyncio.sleep(0.005)
        key = self.wait_keys.pop(0) if self.wait_keys else None
        if key == "HANGUP":
            self.ended = True
            raise CallEnded()
        return key


class FastPool(AgentPool):
    """A real pool whose reserve timeout for ``CALL_ID`` is cut to 50 ms, so announcements come quickly."""

    async def reserve(self, call_id, skill, *, timeout_s, **options):
        if call_id == CALL_ID:
            timeout_s = min(timeout_s, 0.05)
        return await super().reserve(call_id, skill, timeout_s=timeout_s, **options)


def _call(number: str | None = CALLER_NUMBER) -> Call:
    return Call(call_id=CALL_ID, caller=CallerId.from_raw(number or "anonymous"), dialed="12349",
                channel="PJSIP/caller-1", started_at=datetime(2026, 12, 5, 2, 0, tzinfo=UTC), route="ivr/12349")


async def _busy_pool(pool_class=AgentPool):
    """Return a pool with one dibao agent, reserved for another call, and that reservation."""
    pool = pool_class([AgentProfile("a1", "a1", "a1", frozenset({"dibao"}))], settings=AcdSettings(wrap_up_s=0))
    await pool.device_state_changed("a1", DeviceState.NOT_IN_USE)
    busy = await pool.reserve("other-call", "dibao", timeout_s=1)
    assert busy is not None
    return pool, busy


class Clock:
    def __init__(self):
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


async def test_callback_key_keeps_place():
    pool, _busy = await _busy_pool()
    hooks = Hooks()
    caller = QueueCaller(keys=[], wait_keys=[None, None, "2"])
    clock = Clock()

    session = await FlowRunner(pool, hooks, clock=clock).run(_flow(EVERYTHING), _call(), caller)

    assert session.outcome is CallOutcome.NO_AGENT
    assert session.path == ["queue", "goodbye"]
    assert hooks.events == [("callback", CALLER_NUMBER)]
    assert session.callback_number == CALLER_NUMBER
    assert session.callback_is_caller_number
    assert session.queue_place is not None
    assert session.queue_place.skill == "dibao"
    assert session.queue_place.waiting_since == 5000.0
    assert caller.dialed == []
    assert pool.waiting_calls() == []
    assert caller.actions[caller.actions.index("moh_start:default"):] == [
        "moh_start:default", "wait", "wait", "wait", "moh_stop", "play:queue_callback_done", "play:goodbye",
    ]


async def test_entry_announcement_reads_place_and_wait():
    pool, _busy = await _busy_pool()
    caller = QueueCaller(keys=[], wait_keys=["2"])
    runner = FlowRunner(pool, Hooks(), handle_times=HandleTimes(default_s=180.0))

    await runner.run(_flow(EVERYTHING), _call(), caller)

    # One agent, nobody ahead, 180 s handle time: (0 + 0.5) * 180 s = 90 s, read as 两分钟.
    assert caller.actions[:10] == [
        "play:transfer_agent",
        "play:queue_position_intro", "play:word_di", "play:num_1", "play:unit_wei",
        "play:wait_minutes_intro", "play:num_liang", "play:unit_minutes",
        "play:queue_callback_offer",
        "moh_start:default",
    ]


async def test_agent_freed_stops_music_before_dial():
    pool, busy = await _busy_pool()

    async def free_agent(polls: int) -> None:
        if polls == 3:
            await pool.release(busy, reason="test", outcome=ReleaseOutcome.ANSWERED)

    caller = QueueCaller(keys=[], on_poll=free_agent)
    runner = FlowRunner(pool, Hooks())

    session = await runner.run(_flow(EVERYTHING), _call(), caller)

    assert session.outcome is CallOutcome.ANSWERED
    assert session.agent_id == "a1"
    after_music = caller.actions[caller.actions.index("moh_start:default"):]
    assert after_music[:4] == ["moh_start:default", "wait", "wait", "wait"]
    assert after_music[-3:] == ["moh_stop", "dial:a1", "play:goodbye"]
    # The fake reports 12 s of talk; the pool has no wrap-up.
    assert runner.handle_times.average("dibao") == pytest.approx(12.0)


async def test_key_pressed_as_agent_frees_goes_to_agent():
    pool, busy = await _busy_pool()

    async def free_agent(polls: int) -> None:
        await pool.release(busy, reason="test", outcome=ReleaseOutcome.ANSWERED)

    caller = QueueCaller(keys=[], wait_keys=["2"], on_poll=free_agent)

    session = await FlowRunner(pool, Hooks()).run(_flow(EVERYTHING), _call(), caller)

    assert session.outcome is CallOutcome.ANSWERED
    assert session.queue_place is None
    assert caller.dialed == ["a1"]


async def test_hangup_during_hold_music_abandons():
    pool, _busy = await _busy_pool()
    caller = QueueCaller(keys=[], wait_keys=[None, "HANGUP"])

    session = await FlowRunner(pool, Hooks()).run(_flow(EVERYTHING), _call(), caller)

    assert session.outcome is CallOutcome.ABANDONED_IN_QUEUE
    assert session.queue_place is None
    assert caller.actions[-1] == "wait"
    assert pool.waiting_calls() == []


async def test_withheld_number_gets_no_callback_offer():
    pool, busy = await _busy_pool()

    async def free_agent_soon() -> None:
        await asyncio.sleep(0.05)
        await pool.release(busy, reason="test", outcome=ReleaseOutcome.ANSWERED)

    caller = QueueCaller(keys=[], wait_keys=["2", "2"])
    freeing = asyncio.ensure_future(free_agent_soon())

    session = await FlowRunner(pool, Hooks()).run(_flow(EVERYTHING), _call(number=None), caller)
    await freeing

    assert session.outcome is CallOutcome.ANSWERED
    assert "queue_callback_offer" not in caller.played
    # Without a callback offer nobody listens for keys; the music plays until the agent is free.
    assert caller.polls == 0


async def test_free_agent_skips_entry_announcement():
    pool = AgentPool([AgentProfile("a1", "a1", "a1", frozenset({"dibao"}))])
    await pool.device_state_changed("a1", DeviceState.NOT_IN_USE)
    caller = QueueCaller(keys=[])

    session = await FlowRunner(pool, Hooks()).run(_flow(EVERYTHING), _call(), caller)

    assert session.outcome is CallOutcome.ANSWERED
    assert "queue_position_intro" not in caller.played
    assert "queue_callback_offer" not in caller.played
    assert "moh_start:default" not in caller.actions


async def test_later_announcement_counts_callers_ahead():
    pool, _busy = await _busy_pool(FastPool)
    # Two callers queued earlier, who wait through the whole test.
    earlier = [asyncio.ensure_future(pool.reserve(call_id, "dibao", timeout_s=30)) for call_id in ("e1", "e2")]
    await asyncio.sleep(0)

    class HangUpAfterWaitPrompt(QueueCaller):
        async def play_prompt(self, prompt_id, *, interrupt_keys=""):
            result = await super().play_prompt(prompt_id, interrupt_keys=interrupt_keys)
            if prompt_id == "queue_wait":
                self.ended = True
            return result

    caller = HangUpAfterWaitPrompt(keys=[])
    runner = FlowRunner(pool, Hooks(), handle_times=HandleTimes(default_s=240.0))
    try:
        session = await runner.run(_flow("    announce_position: true"), _call(), caller)
    finally:
        for waiting in earlier:
            waiting.cancel()
        await asyncio.wait(earlier)

    # Two callers ahead, one agent, 240 s: (2 + 0.5) * 240 s = 600 s, read as 十分钟.
    position = ["queue_ahead_intro", "num_liang", "queue_ahead_callers", "wait_minutes_intro", "num_shi",
                "unit_minutes"]
    assert caller.played == ["transfer_agent", *position, *position, "queue_wait"]
    assert session.outcome is CallOutcome.ABANDONED_IN_QUEUE


async def test_plain_queue_plays_wait_prompt_only():
    pool, _busy = await _busy_pool(FastPool)

    class HangUpAfterWaitPrompt(ScriptedCaller):
        async def play_prompt(self, prompt_id, *, interrupt_keys=""):
            result = await super().play_prompt(prompt_id, interrupt_keys=interrupt_keys)
            if prompt_id == "queue_wait":
                self.ended = True
            return result

    caller = HangUpAfterWaitPrompt(keys=[])

    session = await FlowRunner(pool, Hooks()).run(_flow(""), _call(), caller)

    assert caller.played == ["transfer_agent", "queue_wait"]
    assert session.outcome is CallOutcome.ABANDONED_IN_QUEUE


def test_callback_target_must_exist():
    extra = "    callback: {key: \"2\", prompt: queue_callback_offer, done_prompt: queue_callback_done, next: nowhere}"

    with pytest.raises(FlowError) as raised:
        _flow(extra)

    assert any("nowhere" in issue.message for issue in raised.value.issues)


def test_callback_prompts_must_be_in_catalog():
    extra = "    callback: {key: \"2\", prompt: no_such_prompt, done_prompt: queue_callback_done, next: goodbye}"

    with pytest.raises(FlowError) as raised:
        _flow(extra)

    assert any("no_such_prompt" in issue.message for issue in raised.value.issues)


def test_hold_music_class_is_checked():
    with pytest.raises(FlowError):
        _flow("    hold_music: \"Bad,Class\"")
