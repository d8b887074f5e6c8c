"""Agent desk: the feature-code endpoint checks, CLI commands through the store, queue results, status view."""

from datetime import UTC, datetime, timedelta

from rich.console import Console

from acd.agent_commands import PROMPT_INVALID_CODE, PROMPT_NOT_ON_ROSTER, PROMPT_PAUSED, AgentAction, AgentCommand
from acd.pool import AgentPool, AgentProfile, AgentState
from acd.status import QueueOutcome, china_day_bounds
from hotline.agent_desk import AgentDesk, endpoint_from_channel_name
from hotline.commands.status import render_status
from ivr.call import Call, CallerId
from ivr.engine import CallSession
from storage.acd_store import AcdStore
from tickets.call_record import CallOutcome

# 2026-03-10 10:00 in Beijing.
NOW = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


def _pool() -> AgentPool:
    return AgentPool([
        AgentProfile("a1", "坐席一", "agent1", frozenset({"dibao"})),
        AgentProfile("a2", "坐席二", "agent2", frozenset({"dibao"})),
    ])


def _desk(pool: AgentPool, store: AcdStore, clock=lambda: NOW) -> AgentDesk:
    return AgentDesk(pool, store, "county-1", agent_names={"a1": "坐席一", "a2": "坐席二"},
                     prompt_path=lambda prompt: f"/sounds/{prompt}", wall_clock=clock)


def test_endpoint_from_channel_name():
    assert endpoint_from_channel_name("PJSIP/agent1-0000000a") == "agent1"
    assert endpoint_from_channel_name("PJSIP/agent-one-0000000a") == "agent-one"
    assert endpoint_from_channel_name("SIP/agent1-0000000a") is None
    assert endpoint_from_channel_name("PJSIP/agent1") is None
    assert endpoint_from_channel_name("Local/x@y-00000001;1") is None


async def test_feature_code_from_roster_phone(tmp_path):
    pool = _pool()
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        result = await _desk(pool, store).feature_code_result("agent1", "PJSIP/agent1-00000003", "*232")

    assert result.accepted
    assert result.agent_id == "a1"
    assert result.prompt_id == PROMPT_PAUSED
    assert pool.agent_state("a1") is AgentState.PAUSED
    assert pool.events()[-1].reason == "pause:meal/phone"


async def test_feature_code_from_unknown_phone_rejected(tmp_path):
    pool = _pool()
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        result = await _desk(pool, store).feature_code_result("agent9", "PJSIP/agent9-00000003", "*21")

    assert not result.accepted
    assert result.prompt_id == PROMPT_NOT_ON_ROSTER
    assert "agent9" in result.message
    assert pool.events() == []


async def test_feature_code_endpoint_mismatch_rejected(tmp_path):
    pool = _pool()
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        desk = _desk(pool, store)
        mismatch = await desk.feature_code_result("agent1", "PJSIP/agent2-00000003", "*231")
        missing = await desk.feature_code_result("", "PJSIP/agent1-00000003", "*231")

    assert not mismatch.accepted
    assert mismatch.prompt_id == PROMPT_NOT_ON_ROSTER
    assert not missing.accepted
    assert pool.agent_state("a1") is AgentState.AVAILABLE


async def test_invalid_feature_code_rejected(tmp_path):
    pool = _pool()
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        result = await _desk(pool, store).feature_code_result("agent1", "PJSIP/agent1-00000003", "*29")

    assert not result.accepted
    assert result.agent_id == "a1"
    assert result.prompt_id == PROMPT_INVALID_CODE


async def test_cli_commands_applied_from_store(tmp_path):
    pool = _pool()
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        desk = _desk(pool, store)
        pause = await store.enqueue_command("a2", AgentCommand(AgentAction.PAUSE, "supervisor"), NOW)
        unknown = await store.enqueue_command("zz", AgentCommand(AgentAction.LOGOUT), NOW)
        stale = await store.enqueue_command("a1", AgentCommand(AgentAction.LOGOUT), NOW - timedelta(seconds=31))

        applied_count = await desk.apply_pending_commands()

        assert applied_count == 2
        assert (await store.command_result(pause))[0] == "done"
        assert (await store.command_result(unknown))[0] == "rejected"
        assert (await store.command_result(stale))[0] == "expired"
    assert pool.agent_state("a2") is AgentState.PAUSED
    assert pool.agent_state("a1") is AgentState.AVAILABLE
    assert pool.events()[-1].reason == "pause:supervisor/cli"


def _session(call_id: str, outcome: CallOutcome, *, entered: datetime | None, wait_s: float = 0.0) -> CallSession:
    call = Call(call_id, CallerId.from_raw("13900000001"), "12349", "PJSIP/anonymous-00000001", NOW, "ivr/12349")
    session = CallSession(call=call, flow_id="12349", flow_version="v1", skill="dibao", outcome=outcome,
                          queue_entered_at=entered, ended_at=NOW)
    if outcome is CallOutcome.ANSWERED:
        assert entered is not None
        session.answered_at = entered + timedelta(seconds=wait_s)
        session.agent_id = "a1"
    return session


async def test_record_call_keeps_queue_calls(tmp_path):
    pool = _pool()
    entered = NOW - timedelta(minutes=2)
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        desk = _desk(pool, store)
        await desk.record_call(_session("c1", CallOutcome.ANSWERED, entered=entered, wait_s=8))
        await desk.record_call(_session("c2", CallOutcome.ABANDONED_IN_QUEUE, entered=entered))
        await desk.record_call(_session("c3", CallOutcome.ABANDONED_IN_MENU, entered=None))
        await desk.record_call(_session("c4", CallOutcome.FAILED, entered=entered))
        _, start, end = china_day_bounds(NOW)
        stored = await store.queue_calls_between(start, end)

    assert [(r.call_id, r.outcome) for r in stored] == [("c1", QueueOutcome.ANSWERED), ("c2", QueueOutcome.ABANDONED)]
    assert stored[0].wait_s == 8


def _render(view) -> str:
    console = Console(width=200, record=True)
    console.print(view)
    return console.export_text()


async def test_status_view_pinned_clock(tmp_path):
    pool = _pool()
    entered = NOW - timedelta(minutes=2)
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        desk = _desk(pool, store)
        await pool.set_paused("a2", True, reason="meal")
        await desk.record_call(_session("c1", CallOutcome.ANSWERED, entered=entered, wait_s=8))
        await desk.record_call(_session("c2", CallOutcome.ANSWERED, entered=entered, wait_s=20))
        await desk.publish_status()
        status = await store.read_status()
        _, start, end = china_day_bounds(NOW)
        results = await store.queue_calls_between(start, end)

    text = _render(render_status(status, results, NOW + timedelta(seconds=1)))

    assert "节点 county-1" in text
    assert "今日（2026-03-10，北京时间）" in text
    assert "a2（用餐）" in text
    assert "100.0%" in text  # answer rate
    assert "50.0%" in text  # SL(15): one of two within 15 s
    assert "警告" not in text


async def test_status_view_warns_when_stale(tmp_path):
    async with await AcdStore.open(tmp_path / "acd.sqlite3") as store:
        await _desk(_pool(), store).publish_status()
        status = await store.read_status()

    text = _render(render_status(status, [], NOW + timedelta(seconds=30)))

    assert "已 30 秒没有发布状态" in text


def test_status_view_without_status():
    text = _render(render_status(None, [], NOW))

    assert "还没有发布过坐席状态" in text
