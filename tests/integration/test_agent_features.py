"""Agent feature codes and supervisor status on the real stack.

SIPp agent phones dial *23N and *24 through Asterisk 22 (digest-authenticated INVITEs into
the from-agents context) to the county controller over FastAGI; SIPp citizens then call
12349 and press 0 for an agent. A paused agent is not offered the call, the other agent
is; after *24 the agent gets the next call. The CLI pauses the second agent through the
ACD store, and ``hotline status --once`` shows the day's counts and the agents' states.
"""

import asyncio
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from acd.status import QueueCallResult, china_day_bounds
from hotline.demo import REPO_ROOT, DemoStack, ScriptedCall, prompt_seconds
from stack.sipp import Dtmf, Pause, build_endpoint_call_scenario, place_endpoint_call
from storage.acd_store import AcdStore, acd_path
from tickets.call_record import CallOutcome

pytestmark = pytest.mark.integration

FEATURE_CALL_TIMEOUT_S = 30.0
RECORD_TIMEOUT_S = 20.0


def dial_feature_code(stack: DemoStack, agent_index: int, code: str, work_dir: Path) -> None:
    """Dial ``code`` from a demo agent's endpoint with its credentials; wait until Asterisk hangs up."""
    assert stack.asterisk is not None
    phone = stack.agents[agent_index]
    log = place_endpoint_call(
        sip_port=stack.asterisk.sip_port, username=phone.username, password=phone.password,
        scenario=build_endpoint_call_scenario(endpoint_id=phone.endpoint_id, target=code),
        work_dir=work_dir, timeout_s=FEATURE_CALL_TIMEOUT_S,
    )
    assert "ENDED" in log


async def _read_acd(database: Path):
    async with await AcdStore.open(acd_path(database)) as store:
        _, start, end = china_day_bounds(datetime.now(UTC))
        return await store.read_status(), await store.queue_calls_between(start, end)


async def _agent_events(database: Path, agent_id: str):
    async with await AcdStore.open(acd_path(database)) as store:
        return await store.events_for(agent_id)


async def _decisions(database: Path, call_id: str):
    async with await AcdStore.open(acd_path(database)) as store:
        return await store.decisions_for(call_id)


def _queue_calls(database: Path) -> list[QueueCallResult]:
    _, calls = asyncio.run(_read_acd(database))
    return calls


def _agent_state(database: Path, agent_id: str) -> tuple[str, str | None]:
    status, _ = asyncio.run(_read_acd(database))
    assert status is not None
    agent = next(a for a in status.agents if a.agent_id == agent_id)
    return agent.state.value, agent.pause_reason


def _wait_for(predicate, timeout_s: float, description: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:.0f} s waiting for {description}"
        time.sleep(0.2)


def _general_call(caller_number: str) -> ScriptedCall:
    first_key_ms = int((prompt_seconds("welcome") + 1.5) * 1000)
    return ScriptedCall("按0 人工服务", caller_number, (Pause(first_key_ms), Dtmf("0")), None,
                        CallOutcome.ANSWERED, None, "general", True)


def _place_and_record(stack: DemoStack, database: Path, caller_number: str) -> QueueCallResult:
    before = len(_queue_calls(database))
    result = stack.place_call(_general_call(caller_number))
    assert result is not None
    assert result.completed
    _wait_for(lambda: len(_queue_calls(database)) > before, RECORD_TIMEOUT_S, "the queue call record")
    return _queue_calls(database)[-1]


def _hotline(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hotline", *arguments], capture_output=True, text=True,
                          cwd=REPO_ROOT, timeout=60)


def test_pause_code_keeps_calls_away(tmp_path):
    with DemoStack(tmp_path) as stack:
        database = tmp_path / "county.sqlite3"
        config = str(stack.county_config)

        # agent1 pauses from its phone (reason digit 1 = break); an invalid code changes nothing.
        dial_feature_code(stack, 0, "*231", tmp_path / "feature-pause")
        _wait_for(lambda: _agent_state(database, "agent1") == ("paused", "break"), 5, "agent1 paused")
        dial_feature_code(stack, 0, "*29", tmp_path / "feature-invalid")
        assert _agent_state(database, "agent1") == ("paused", "break")

        # Both agents have skill general; the paused agent1 is passed over.
        first = _place_and_record(stack, database, "13900000021")
        assert first.outcome.value == "answered"
        assert first.agent_id == "agent2"
        decisions = asyncio.run(_decisions(database, first.call_id))
        exclusions = {e.agent_id: e.reason for d in decisions for e in d.exclusions}
        assert exclusions.get("agent1") == "暂停（小休）"

        # agent1 is ready again from its phone; the supervisor pauses agent2 from the CLI.
        dial_feature_code(stack, 0, "*24", tmp_path / "feature-ready")
        _wait_for(lambda: _agent_state(database, "agent1")[0] == "available", 5, "agent1 available")
        paused = _hotline("acd", "pause", "agent2", "--reason", "meeting", "--config", config)
        assert paused.returncode == 0, paused.stderr
        assert "已暂停" in paused.stdout
        assert _agent_state(database, "agent2") == ("paused", "meeting")

        second = _place_and_record(stack, database, "13900000022")
        assert second.agent_id == "agent1"

        status = _hotline("status", "--config", config, "--once")
        agent1_events = asyncio.run(_agent_events(database, "agent1"))
        log_text = (tmp_path / "county.log").read_text(encoding="utf-8")

    assert status.returncode == 0, status.stderr
    assert "agent2（会议）" in status.stdout
    # offered 2, answered 2, abandoned 0 (0 within 5 s), no agent 0, answer rate, SL(15), abandon rate
    figures = re.search(r"^\s*2\s+2\s+0\s+0\s+0\s+100\.0%\s+100\.0%\s+0\.0%\s*$", status.stdout, re.MULTILINE)
    assert figures is not None, status.stdout

    reasons = [event.reason for event in agent1_events]
    assert "pause:break/phone" in reasons
    assert "unpause/phone" in reasons
    assert "agent feature code rejected" in log_text
