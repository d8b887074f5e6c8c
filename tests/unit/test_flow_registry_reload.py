"""Hot reload: the file watcher, a running call keeping its flow, and the pointer shared with the CLI."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import structlog

from acd.pool import AcdSettings, AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow_registry import FlowRegistry, FlowWatcher
from ivr.ports import DigitInput
from tests.fakes.call_port import ScriptedCaller
from tests.unit.test_flow_registry import BAD_FLOW, BASE_FLOW, PROMPT_IDS, edited_flow, replaced

# The 12349 flow with key 1 filed as a policy question instead of 低保.
REROUTED_FLOW = replaced(
    BASE_FLOW,
    '"1": {label: 低保, category: dibao, skill: dibao, next: chose_dibao}',
    '"1": {label: 政策咨询, category: zhengce, skill: zhengce, next: chose_dibao}',
)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class HoldingCaller(ScriptedCaller):
    """A scripted caller that waits at the first menu until the test releases it."""

    def __init__(self, keys):
        super().__init__(keys=keys)
        self.in_menu = asyncio.Event()
        self.release = asyncio.Event()

    async def collect_digits(self, prompt_id: str, *, max_digits: int, timeout_ms: int) -> DigitInput:
        self.in_menu.set()
        await self.release.wait()
        return await super().collect_digits(prompt_id, max_digits=max_digits, timeout_ms=timeout_ms)


class NoHooks:
    async def category_chosen(self, session):
        pass

    async def agent_answered(self, session):
        pass


def _call(call_id: str) -> Call:
    return Call(call_id=call_id, caller=CallerId.from_raw("13900000001"), dialed="12349", channel="PJSIP/x-1",
                started_at=datetime(2026, 12, 5, 2, 0, tzinfo=UTC), route="ivr/12349")


async def _pool() -> AgentPool:
    # No wrap-up: the second call finds the agent free as soon as the first has ended.
    pool = AgentPool([AgentProfile("agent1", "agent1", "agent1", frozenset({"dibao", "zhengce", "general"}))],
                     settings=AcdSettings(wrap_up_s=0))
    await pool.device_state_changed("agent1", DeviceState.NOT_IN_USE)
    return pool


async def test_running_call_keeps_its_flow(tmp_path):
    registry = FlowRegistry(tmp_path / "store", prompt_ids=PROMPT_IDS)
    flow_file = tmp_path / "12349.yaml"
    flow_file.write_text(BASE_FLOW, encoding="utf-8")
    old = registry.start_from_file(flow_file)
    runner = FlowRunner(await _pool(), NoHooks())

    # A call starts on the old flow and waits in the menu while an edit goes live.
    caller = HoldingCaller(keys=["1", None])
    running = asyncio.create_task(runner.run(registry.current(), _call("1764900000.1"), caller))
    try:
        await asyncio.wait_for(caller.in_menu.wait(), 5)
        flow_file.write_text(REROUTED_FLOW, encoding="utf-8")
        activated = registry.activate_from_file(flow_file)
    finally:
        caller.release.set()
    first = await asyncio.wait_for(running, 5)

    second = await runner.run(registry.current(), _call("1764900000.2"), ScriptedCaller(keys=["1", None]))

    assert activated.status == "activated"
    assert registry.current().version == sha(REROUTED_FLOW)
    assert first.flow_version == old.version
    assert first.category == "dibao"
    assert first.skill == "dibao"
    assert second.flow_version == sha(REROUTED_FLOW)
    assert second.category == "zhengce"
    assert second.skill == "zhengce"


def _watched(tmp_path: Path, interval_s: float = 1.0) -> tuple[FlowRegistry, Path, FlowWatcher]:
    registry = FlowRegistry(tmp_path / "store", prompt_ids=PROMPT_IDS)
    flow_file = tmp_path / "12349.yaml"
    flow_file.write_text(BASE_FLOW, encoding="utf-8")
    registry.start_from_file(flow_file)
    return registry, flow_file, FlowWatcher(registry, flow_file, interval_s=interval_s)


def test_watcher_activates_edit_after_two_equal_reads(tmp_path):
    registry, flow_file, watcher = _watched(tmp_path)
    assert watcher.check() is None

    flow_file.write_text(edited_flow("二版"), encoding="utf-8")
    first_poll = watcher.check()
    second_poll = watcher.check()

    assert first_poll is None
    assert second_poll.status == "activated"
    assert registry.current().title == "二版"
    assert registry.active().reason == "文件已修改，自动生效"
    assert registry.active().source == str(flow_file.resolve())
    assert watcher.check() is None


def test_watcher_rejects_bad_edit_once(tmp_path):
    registry, flow_file, watcher = _watched(tmp_path)
    good = registry.current().version

    flow_file.write_text(BAD_FLOW, encoding="utf-8")
    watcher.check()
    with structlog.testing.capture_logs() as logs:
        rejected = watcher.check()
        later = [watcher.check() for _ in range(3)]

    assert rejected.status == "rejected"
    assert any("chose_dibaoo" in issue.message for issue in rejected.issues)
    assert later == [None, None, None]
    assert registry.current().version == good
    assert [entry["event"] for entry in logs].count("flow edit rejected") == 1

    # Fixing the file activates the fix.
    flow_file.write_text(edited_flow("修正版"), encoding="utf-8")
    watcher.check()
    assert watcher.check().status == "activated"
    assert registry.current().title == "修正版"


def test_watcher_survives_missing_file(tmp_path):
    registry, flow_file, watcher = _watched(tmp_path)
    good = registry.current().version
    flow_file.unlink()

    with structlog.testing.capture_logs() as logs:
        results = [watcher.check() for _ in range(3)]

    assert results == [None, None, None]
    assert registry.current().version == good
    assert [entry["event"] for entry in logs].count("flow file unreadable; keeping the active version") == 1


def test_watcher_follows_rollback_done_elsewhere(tmp_path):
    registry, flow_file, watcher = _watched(tmp_path)
    first = registry.current().version
    flow_file.write_text(edited_flow("二版"), encoding="utf-8")
    watcher.check()
    watcher.check()

    FlowRegistry(tmp_path / "store", prompt_ids=PROMPT_IDS).rollback()
    watcher.check()

    assert registry.current().version == first
    # The file still contains the second version, but it is not activated again until edited.
    watcher.check()
    assert registry.current().version == first


async def _wait_for(predicate, timeout_s: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_watcher_task_picks_up_saved_file(tmp_path):
    registry, flow_file, watcher = _watched(tmp_path, interval_s=0.02)
    watcher.start()
    try:
        # Save the way many editors do: write a new file, then rename it over the old one.
        temp = tmp_path / ".12349.yaml.swp"
        temp.write_text(edited_flow("热加载"), encoding="utf-8")
        temp.replace(flow_file)
        picked_up = await _wait_for(lambda: registry.current().title == "热加载", 5)

        FlowRegistry(tmp_path / "store", prompt_ids=PROMPT_IDS).rollback(operator="值班长")
        rolled_back = await _wait_for(lambda: registry.current().title == "12349民政服务热线主流程", 5)
    finally:
        await watcher.stop()

    assert picked_up
    assert rolled_back
    assert [record.action for record in registry.history()] == ["activate", "activate", "rollback"]
