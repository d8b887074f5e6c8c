"""Domain: runs one call through a flow, node by node, over a ``CallPort``.

The runner knows nothing of Asterisk or SQLite. It asks the ``AgentPool`` for agents,
tells ``CallHooks`` when the caller picks a category or reaches an agent (the
controller opens tickets there), and returns a ``CallSession`` that records the path,
the keys, the agent and how the call ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

import structlog

from acd.pool import AgentPool
from ivr.call import Call
from ivr.flow import Flow, HangupNode, MenuNode, PlayNode, QueueNode
from ivr.ports import CallEnded, CallPort, CallPortError, DigitOutcome
from tickets.call_record import CallOutcome

log = structlog.get_logger(__name__)

# A call that visits this many nodes is in a loop. The validator rejects loops made only
# of play nodes, and this bound catches the rest.
MAX_NODE_VISITS = 200

DEFAULT_SKILL = "general"


@dataclass(frozen=True, slots=True)
class KeyPress:
    """Input to one menu prompt: the node, the keys pressed and how the input ended."""

    node: str
    digits: str
    outcome: str
    at_ms: int


@dataclass(slots=True)
class CallSession:
    """Record of one call so far, filled in by the runner as the call goes."""

    call: Call
    flow_id: str
    flow_version: str
    path: list[str] = field(default_factory=list)
    keys: list[KeyPress] = field(default_factory=list)
    category: str | None = None
    skill: str | None = None
    agent_id: str | None = None
    outcome: CallOutcome | None = None
    queue_entered_at: datetime | None = None
    answered_at: datetime | None = None
    ended_at: datetime | None = None
    talk_seconds: float = 0.0
    ticket_id: str | None = None
    prompt_failures: list[str] = field(default_factory=list)

    @property
    def last_node(self) -> str | None:
        return self.path[-1] if self.path else None


class CallHooks(Protocol):
    """Business events the controller acts on while a call runs."""

    async def category_chosen(self, session: CallSession) -> None: ...

    async def agent_answered(self, session: CallSession) -> None: ...


def utc_now() -> datetime:
    return datetime.now(UTC)


class _FlowLooped(Exception):
    pass


class FlowRunner:
    """Runs calls through flows; one instance serves every call of a node."""

    def __init__(
        self,
        pool: AgentPool,
        hooks: CallHooks,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utc_now,
    ):
        self._pool = pool
        self._hooks = hooks
        self._clock = clock
        self._wall_clock = wall_clock

    async def run(self, flow: Flow, call: Call, port: CallPort) -> CallSession:
        """Run ``call`` from the flow's start node until it hangs up or the flow ends."""
        session = CallSession(call=call, flow_id=flow.flow_id, flow_version=flow.version)
        started = self._clock()
        bound = structlog.contextvars.bind_contextvars(flow=flow.flow_id, flow_version=flow.version[:12])

        try:
            await port.answer()
            node_id: str | None = flow.start
            visits = 0
            while node_id is not None:
                visits += 1
                if visits > MAX_NODE_VISITS:
                    raise _FlowLooped(node_id)
                session.path.append(node_id)
                node_id = await self._run_node(flow, node_id, session, port, started)

        except CallEnded:
            if session.outcome is None:
                in_queue = session.queue_entered_at is not None
                session.outcome = CallOutcome.ABANDONED_IN_QUEUE if in_queue else CallOutcome.ABANDONED_IN_MENU
            log.info("caller hung up", call_id=call.call_id, node=session.last_node, outcome=session.outcome.value)

        except CallPortError as exc:
            session.outcome = CallOutcome.FAILED
            log.warning("call failed on the switch", call_id=call.call_id, node=session.last_node, error=str(exc))

        except _FlowLooped as exc:
            session.outcome = CallOutcome.FAILED
            log.error("flow visited too many nodes", call_id=call.call_id, node=str(exc), limit=MAX_NODE_VISITS)

        finally:
            session.ended_at = self._wall_clock()
            structlog.contextvars.unbind_contextvars(*bound)

        return session

    async def _run_node(
        self, flow: Flow, node_id: str, session: CallSession, port: CallPort, started: float
    ) -> str | None:
        node = flow.node(node_id)

        if isinstance(node, PlayNode):
            await self._play(flow, node.prompt, session, port)
            return node.next

        if isinstance(node, MenuNode):
            return await self._run_menu(flow, node_id, node, session, port, started)

        if isinstance(node, QueueNode):
            return await self._run_queue(flow, node, session, port)

        if isinstance(node, HangupNode):
            if node.prompt:
                await self._play(flow, node.prompt, session, port)
            if session.outcome is None:
                session.outcome = CallOutcome.COMPLETED
            await port.hang_up()
            return None

        raise AssertionError(f"unhandled node type {type(node).__name__}")

    async def _play(self, flow: Flow, prompt_id: str, session: CallSession, port: CallPort) -> str | None:
        """Play a prompt, or the flow's fallback prompt when the switch cannot play it."""
        result = await port.play_prompt(prompt_id)
        if result.played:
            return result.digit

        session.prompt_failures.append(prompt_id)
        log.warning("prompt failed, playing fallback", call_id=session.call.call_id, prompt=prompt_id,
                    fallback=flow.settings.fallback_prompt)
        fallback = flow.settings.fallback_prompt
        if fallback and fallback != prompt_id:
            await port.play_prompt(fallback)
        return None

    async def _run_menu(
        self, flow: Flow, node_id: str, node: MenuNode, session: CallSession, port: CallPort, started: float
    ) -> str:
        for attempt in range(1, node.max_attempts + 1):
            entry = await port.collect_digits(node.prompt, max_digits=1, timeout_ms=node.timeout_ms)
            if not entry.prompt_played:
                session.prompt_failures.append(node.prompt)

            at_ms = int((self._clock() - started) * 1000)
            key = entry.digits[:1]
            choice = node.choices.get(key) if key else None

            if choice is not None:
                session.keys.append(KeyPress(node_id, key, "accepted", at_ms))
                log.info("menu choice", call_id=session.call.call_id, node=node_id, key=key, attempt=attempt)
                if choice.skill:
                    session.skill = choice.skill
                if choice.category:
                    session.category = choice.category
                    await self._hooks.category_chosen(session)
                return choice.next

            no_input = entry.outcome in (DigitOutcome.TIMEOUT, DigitOutcome.TERMINATOR_ONLY) or not key
            session.keys.append(KeyPress(node_id, entry.digits, "no_input" if no_input else "invalid", at_ms))
            log.info("menu input rejected", call_id=session.call.call_id, node=node_id, attempt=attempt,
                     reason="no_input" if no_input else "invalid_key")

            if attempt < node.max_attempts:
                retry_prompt = node.no_input_prompt if no_input else node.invalid_prompt
                if retry_prompt:
                    await self._play(flow, retry_prompt, session, port)

        log.info("menu attempts exhausted", call_id=session.call.call_id, node=node_id, target=node.on_exhausted)
        return node.on_exhausted

    async def _run_queue(self, flow: Flow, node: QueueNode, session: CallSession, port: CallPort) -> str:
        call_id = session.call.call_id
        skill = node.skill or session.skill or DEFAULT_SKILL
        session.skill = skill
        session.queue_entered_at = self._wall_clock()

        if not self._pool.has_agent_for(skill):
            log.warning("no agent logged in for skill", call_id=call_id, skill=skill)
            session.outcome = CallOutcome.NO_AGENT
            return node.on_no_agent

        await self._play(flow, node.prompt, session, port)
        deadline = self._clock() + node.max_wait_s
        declined: set[str] = set()

        # NOTE: the caller hears silence between announcements because AGI runs one command
        # at a time; music on hold needs the switch to play it while the controller waits.
        while (remaining := deadline - self._clock()) > 0:
            reservation = await self._pool.reserve(
                call_id, skill, timeout_s=min(remaining, node.announce_every_s), exclude=declined
            )
            if reservation is None:
                if deadline - self._clock() > 0:
                    await self._play(flow, node.wait_prompt, session, port)
                continue

            try:
                result = await port.connect_agent(reservation.endpoint, ring_timeout_s=node.ring_timeout_s)
            finally:
                await self._pool.release(reservation, reason="dial_returned")

            if result.answered:
                session.agent_id = reservation.agent_id
                session.outcome = CallOutcome.ANSWERED
                session.talk_seconds = result.talk_seconds
                session.answered_at = self._wall_clock() - timedelta(seconds=result.talk_seconds)
                log.info("agent call ended", call_id=call_id, agent_id=reservation.agent_id,
                         talk_s=round(result.talk_seconds, 1))
                await self._hooks.agent_answered(session)
                return node.next

            declined.add(reservation.agent_id)
            log.info("agent did not answer", call_id=call_id, agent_id=reservation.agent_id, status=result.status.value)
            if node.retry_prompt:
                await self._play(flow, node.retry_prompt, session, port)
            if not self._pool.has_agent_for(skill):
                break
            if declined.issuperset(a.agent_id for a in self._pool.snapshot() if skill in a.skills):
                # Every agent with the skill has been tried once; give them another chance.
                declined.clear()

        session.outcome = CallOutcome.NO_AGENT
        log.info("no agent within queue limit", call_id=call_id, skill=skill, max_wait_s=node.max_wait_s)
        return node.on_no_agent
