"""Domain: agents' own login, logout, pause and ready requests, from a phone feature code or the CLI.

Feature codes an agent dials from the softphone (the switch sends them to the controller):

====== ==================================================================
``*21`` log in; the agent then waits paused (``login``) until ``*24``
``*22`` log out
``*23`` pause with reason ``other``; ``*23`` followed by one digit picks the
        reason from ``PAUSE_DIGITS`` (``*231`` = break)
``*24`` ready: end the pause
====== ==================================================================

``apply_agent_command`` checks a request against the agent's state, applies it to the
pool and returns the prompt to play and a Chinese line for operators. A request that
cannot be applied returns ``accepted=False`` with the reason instead of raising.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from acd.pool import PAUSE_REASONS, AgentPool, AgentState

LOGIN_CODE = "*21"
LOGOUT_CODE = "*22"
PAUSE_CODE = "*23"
READY_CODE = "*24"

# Reason digit after *23 → pause reason code. ``login``, ``no_answer`` and ``supervisor``
# are set by the system or a supervisor, so an agent cannot dial them.
PAUSE_DIGITS: dict[str, str] = {
    "1": "break",
    "2": "meal",
    "3": "training",
    "4": "meeting",
    "5": "paperwork",
    "9": "other",
}
DEFAULT_PAUSE_REASON = "other"

# Prompt ids played to the agent; their texts are in prompts/zh-CN.yaml.
PROMPT_LOGGED_IN = "agent_logged_in"
PROMPT_LOGGED_OUT = "agent_logged_out"
PROMPT_PAUSED = "agent_paused"
PROMPT_READY = "agent_ready"
PROMPT_INVALID_CODE = "agent_code_invalid"
PROMPT_NOT_ON_ROSTER = "agent_not_on_roster"
PROMPT_NOT_LOGGED_IN = "agent_not_logged_in"
PROMPT_BUSY = "agent_busy"
AGENT_PROMPTS = (
    PROMPT_LOGGED_IN, PROMPT_LOGGED_OUT, PROMPT_PAUSED, PROMPT_READY,
    PROMPT_INVALID_CODE, PROMPT_NOT_ON_ROSTER, PROMPT_NOT_LOGGED_IN, PROMPT_BUSY,
)

_BUSY_STATES = frozenset({AgentState.RESERVED, AgentState.RINGING, AgentState.ON_CALL})


class AgentAction(enum.Enum):
    LOGIN = "login"
    LOGOUT = "logout"
    PAUSE = "pause"
    READY = "ready"


class CommandSource(enum.Enum):
    """Origin of a request, appended to the reason of the state event it causes."""

    PHONE = "phone"
    CLI = "cli"


@dataclass(frozen=True, slots=True)
class AgentCommand:
    """One request an agent (or an operator for the agent) makes about the agent's own state."""

    action: AgentAction
    pause_reason: str | None = None

    def __post_init__(self) -> None:
        if self.action is AgentAction.PAUSE:
            if self.pause_reason not in PAUSE_REASONS:
                raise ValueError(f"unknown pause reason {self.pause_reason!r}")
        elif self.pause_reason is not None:
            raise ValueError(f"pause_reason is only valid for a pause, not for {self.action.value}")


class InvalidFeatureCode(ValueError):
    """A dialed number that is not an agent feature code; the message is Chinese."""


def parse_feature_code(dialed: str) -> AgentCommand:
    """Turn the number an agent dialed into a command; raise ``InvalidFeatureCode`` otherwise."""
    code = dialed.strip()
    simple = {LOGIN_CODE: AgentAction.LOGIN, LOGOUT_CODE: AgentAction.LOGOUT, READY_CODE: AgentAction.READY}
    if code in simple:
        return AgentCommand(simple[code])

    if code == PAUSE_CODE:
        return AgentCommand(AgentAction.PAUSE, DEFAULT_PAUSE_REASON)
    if code.startswith(PAUSE_CODE) and len(code) == len(PAUSE_CODE) + 1:
        digit = code[-1]
        if digit in PAUSE_DIGITS:
            return AgentCommand(AgentAction.PAUSE, PAUSE_DIGITS[digit])
        known = "、".join(f"{d}={PAUSE_REASONS[r]}" for d, r in PAUSE_DIGITS.items())
        raise InvalidFeatureCode(f"暂停原因数字“{digit}”无效，*23 后可接：{known}")

    raise InvalidFeatureCode(
        f"功能码“{code or '（空）'}”无效：*21 登录，*22 退出，*23 暂停（可接原因数字），*24 示闲"
    )


@dataclass(frozen=True, slots=True)
class CommandResult:
    """Outcome of one request: whether it was applied, the prompt to play and a Chinese line."""

    accepted: bool
    agent_id: str | None
    prompt_id: str
    message: str
    state: AgentState | None = None


def rejected(prompt_id: str, message: str, agent_id: str | None = None) -> CommandResult:
    return CommandResult(False, agent_id, prompt_id, message)


async def apply_agent_command(
    pool: AgentPool, agent_id: str, command: AgentCommand, *, source: CommandSource
) -> CommandResult:
    """Check ``command`` against the agent's current state and apply it to ``pool``.

    Rejects an agent not on the roster, a pause or ready while logged out, and a logout
    while a call is reserved, ringing or connected to the agent. Repeating a request that
    is already in effect is accepted and changes nothing.
    """
    current = pool.agent_state(agent_id)
    if current is None:
        return rejected(PROMPT_NOT_ON_ROSTER, f"工号 {agent_id} 不在坐席名单中，请核对工号或先把坐席加入名单")

    suffix = f"/{source.value}"
    action = command.action
    if action is AgentAction.LOGIN:
        if current is not AgentState.LOGGED_OUT:
            return _done(pool, agent_id, PROMPT_LOGGED_IN, f"坐席 {agent_id} 已经登录，无需重复登录")
        await pool.set_logged_in(agent_id, True, source=suffix)
        return _done(pool, agent_id, PROMPT_LOGGED_IN, f"坐席 {agent_id} 已登录，处于“登录待就绪”暂停，示闲（*24）后开始接电话")

    if action is AgentAction.LOGOUT:
        if current is AgentState.LOGGED_OUT:
            return _done(pool, agent_id, PROMPT_LOGGED_OUT, f"坐席 {agent_id} 本来就未登录")
        if current in _BUSY_STATES:
            return rejected(PROMPT_BUSY, f"坐席 {agent_id} 正在处理来电（{current.value}），请通话结束后再退出", agent_id)
        await pool.set_logged_in(agent_id, False, source=suffix)
        return _done(pool, agent_id, PROMPT_LOGGED_OUT, f"坐席 {agent_id} 已退出")

    if current is AgentState.LOGGED_OUT:
        return rejected(PROMPT_NOT_LOGGED_IN, f"坐席 {agent_id} 未登录，请先登录（话机拨 *21）", agent_id)

    if action is AgentAction.PAUSE:
        assert command.pause_reason is not None
        await pool.set_paused(agent_id, True, reason=command.pause_reason, source=suffix)
        label = PAUSE_REASONS[command.pause_reason]
        return _done(pool, agent_id, PROMPT_PAUSED, f"坐席 {agent_id} 已暂停，原因：{label}")

    await pool.set_paused(agent_id, False, source=suffix)
    return _done(pool, agent_id, PROMPT_READY, f"坐席 {agent_id} 已示闲，可以接电话")


def _done(pool: AgentPool, agent_id: str, prompt_id: str, message: str) -> CommandResult:
    return CommandResult(True, agent_id, prompt_id, message, pool.agent_state(agent_id))
