"""Agent feature codes and commands: parsing, state checks, rejections and recorded events."""

from pathlib import Path

import pytest

from acd.agent_commands import (
    AGENT_PROMPTS,
    PROMPT_BUSY,
    PROMPT_LOGGED_IN,
    PROMPT_LOGGED_OUT,
    PROMPT_NOT_LOGGED_IN,
    PROMPT_NOT_ON_ROSTER,
    PROMPT_PAUSED,
    PROMPT_READY,
    AgentAction,
    AgentCommand,
    CommandSource,
    InvalidFeatureCode,
    apply_agent_command,
    parse_feature_code,
)
from acd.pool import AgentPool, AgentProfile, AgentState, DeviceState
from speech.catalog import load_catalog


def _pool() -> AgentPool:
    return AgentPool([AgentProfile("a1", "坐席一", "ep-a1", frozenset({"dibao"}))])


@pytest.mark.parametrize(("dialed", "expected"), [
    ("*21", AgentCommand(AgentAction.LOGIN)),
    ("*22", AgentCommand(AgentAction.LOGOUT)),
    ("*23", AgentCommand(AgentAction.PAUSE, "other")),
    ("*231", AgentCommand(AgentAction.PAUSE, "break")),
    ("*232", AgentCommand(AgentAction.PAUSE, "meal")),
    ("*235", AgentCommand(AgentAction.PAUSE, "paperwork")),
    ("*239", AgentCommand(AgentAction.PAUSE, "other")),
    ("*24", AgentCommand(AgentAction.READY)),
])
def test_feature_code_parsed(dialed, expected):
    assert parse_feature_code(dialed) == expected


@pytest.mark.parametrize("dialed", ["*25", "*20", "*237", "*2300", "*211", "21", "", "12349", "*23*"])
def test_invalid_feature_code_rejected(dialed):
    with pytest.raises(InvalidFeatureCode):
        parse_feature_code(dialed)


def test_pause_digit_error_names_digits():
    with pytest.raises(InvalidFeatureCode, match="1=小休"):
        parse_feature_code("*237")


def test_command_requires_known_pause_reason():
    with pytest.raises(ValueError):
        AgentCommand(AgentAction.PAUSE, "lunch")
    with pytest.raises(ValueError):
        AgentCommand(AgentAction.LOGIN, "break")


def test_agent_prompts_in_catalog():
    catalog = load_catalog(Path(__file__).resolve().parents[2] / "prompts" / "zh-CN.yaml")
    missing = [prompt for prompt in AGENT_PROMPTS if prompt not in catalog]
    assert missing == []


async def test_logout_then_login_waits_paused():
    pool = _pool()

    logged_out = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.LOGOUT), source=CommandSource.PHONE)
    logged_in = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.LOGIN), source=CommandSource.PHONE)

    assert logged_out.accepted
    assert logged_out.prompt_id == PROMPT_LOGGED_OUT
    assert logged_in.accepted
    assert logged_in.prompt_id == PROMPT_LOGGED_IN
    assert logged_in.state is AgentState.PAUSED
    assert pool.snapshot()[0].pause_reason == "login"


async def test_every_transition_is_event_with_source():
    pool = _pool()

    await apply_agent_command(pool, "a1", AgentCommand(AgentAction.PAUSE, "meal"), source=CommandSource.PHONE)
    await apply_agent_command(pool, "a1", AgentCommand(AgentAction.READY), source=CommandSource.CLI)
    await apply_agent_command(pool, "a1", AgentCommand(AgentAction.LOGOUT), source=CommandSource.CLI)

    events = pool.events()
    assert [e.reason for e in events] == ["pause:meal/phone", "unpause/cli", "logout/cli"]
    assert [e.state for e in events] == ["paused", "available", "logged_out"]
    assert events[0].pause_reason == "meal"
    assert all(e.at.tzinfo is not None for e in events)


async def test_pause_blocks_offer_until_ready():
    pool = _pool()
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)

    paused = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.PAUSE, "break"), source=CommandSource.PHONE)
    while_paused = await pool.reserve("c1", "dibao", timeout_s=0.05)
    ready = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.READY), source=CommandSource.PHONE)
    after_ready = await pool.reserve("c2", "dibao", timeout_s=0.05)

    assert paused.prompt_id == PROMPT_PAUSED
    assert while_paused is None
    assert ready.prompt_id == PROMPT_READY
    assert after_ready is not None
    assert after_ready.agent_id == "a1"


async def test_unknown_agent_rejected():
    result = await apply_agent_command(_pool(), "zz", AgentCommand(AgentAction.LOGIN), source=CommandSource.CLI)

    assert not result.accepted
    assert result.prompt_id == PROMPT_NOT_ON_ROSTER
    assert "zz" in result.message


async def test_pause_while_logged_out_rejected():
    pool = _pool()
    await pool.set_logged_in("a1", False)

    result = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.PAUSE, "break"), source=CommandSource.PHONE)

    assert not result.accepted
    assert result.prompt_id == PROMPT_NOT_LOGGED_IN
    assert pool.agent_state("a1") is AgentState.LOGGED_OUT


async def test_logout_during_call_rejected():
    pool = _pool()
    await pool.device_state_changed("ep-a1", DeviceState.NOT_IN_USE)
    reservation = await pool.reserve("c1", "dibao", timeout_s=0.05)
    assert reservation is not None

    result = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.LOGOUT), source=CommandSource.PHONE)

    assert not result.accepted
    assert result.prompt_id == PROMPT_BUSY
    assert pool.agent_state("a1") is AgentState.RESERVED


async def test_repeated_login_changes_nothing():
    pool = _pool()

    result = await apply_agent_command(pool, "a1", AgentCommand(AgentAction.LOGIN), source=CommandSource.PHONE)

    assert result.accepted
    assert result.state is AgentState.AVAILABLE
    assert pool.events() == []

