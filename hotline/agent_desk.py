"""Application: agents' feature codes over FastAGI, CLI agent commands and the supervisor status.

``AgentDesk`` runs inside the county controller, next to the agent pool it changes:

- ``handle_feature_code`` is the FastAGI handler of ``AGENT_FEATURE_ROUTE``. The switch's
  ``from-agents`` context sends the authenticated endpoint (``CHANNEL(endpoint)``) and the
  dialed code; the desk checks the endpoint against the channel name and the roster,
  applies the command and plays a Mandarin confirmation or the reason for a rejection.
- Every ``interval_s`` it takes the commands ``hotline acd login|logout|pause|unpause``
  queued in the ACD store, applies them, and publishes an ``AcdStatus`` for
  ``hotline status``.
- ``record_call`` stores how each queued call ended, for today's figures.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime

import structlog

from acd.agent_commands import (
    PROMPT_INVALID_CODE,
    PROMPT_NOT_ON_ROSTER,
    AgentCommand,
    CommandResult,
    CommandSource,
    InvalidFeatureCode,
    apply_agent_command,
    parse_feature_code,
    rejected,
)
from acd.pool import AgentPool
from acd.status import QueueCallResult, QueueOutcome, build_status
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from ivr.engine import CallSession
from storage.acd_store import AcdStore, PendingCommand
from storage.errors import StorageError
from tickets.call_record import CallOutcome

log = structlog.get_logger(__name__)

# The FastAGI route the dialplan's from-agents context names for feature codes.
AGENT_FEATURE_ROUTE = "acd/feature"
STATUS_INTERVAL_S = 1.0
# A CLI command older than this when the controller first sees it is not applied, because
# the CLI that queued it has already reported to the operator that the node did not respond.
COMMAND_MAX_AGE_S = 30.0

_QUEUE_OUTCOMES = {
    CallOutcome.ANSWERED: QueueOutcome.ANSWERED,
    CallOutcome.ABANDONED_IN_QUEUE: QueueOutcome.ABANDONED,
    CallOutcome.NO_AGENT: QueueOutcome.NO_AGENT,
}


def endpoint_from_channel_name(channel: str) -> str | None:
    """Return the endpoint of a PJSIP channel name such as ``PJSIP/agent1-0000000a``, else None."""
    technology, _, rest = channel.partition("/")
    endpoint, dash, sequence = rest.rpartition("-")
    if technology != "PJSIP" or not dash or not endpoint or not sequence:
        return None
    return endpoint


class AgentDesk:
    """Agent commands and supervisor status of one county controller."""

    def __init__(
        self,
        pool: AgentPool,
        store: AcdStore,
        node_id: str,
        *,
        agent_names: dict[str, str],
        prompt_path: Callable[[str], str],
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        interval_s: float = STATUS_INTERVAL_S,
        command_max_age_s: float = COMMAND_MAX_AGE_S,
    ):
        self._pool = pool
        self._store = store
        self._node_id = node_id
        self._agent_names = agent_names
        self._prompt_path = prompt_path
        self._wall_clock = wall_clock
        self._interval_s = interval_s
        self._command_max_age_s = command_max_age_s
        self._task: asyncio.Task[None] | None = None
        self._store_failing = False

    # --- feature codes ---------------------------------------------------------------------

    async def feature_code_result(self, claimed_endpoint: str, channel_name: str, dialed: str) -> CommandResult:
        """Identify the agent from the switch's endpoint and apply the dialed feature code.

        The endpoint the dialplan passes must match the channel name, so a request the
        switch did not authenticate as that endpoint is rejected.
        """
        from_channel = endpoint_from_channel_name(channel_name)
        if not claimed_endpoint or claimed_endpoint != from_channel:
            return rejected(
                PROMPT_NOT_ON_ROSTER,
                f"无法确认来电话机：拨号方案给出的端点“{claimed_endpoint or '（空）'}”与通道 {channel_name} 不符，"
                f"请检查 extensions.conf 的 from-agents 段",
            )

        agent = self._pool.agent_for_endpoint(claimed_endpoint)
        if agent is None:
            return rejected(
                PROMPT_NOT_ON_ROSTER,
                f"话机 {claimed_endpoint} 不在坐席名单中，不能登录或暂停：请在坐席名单中给坐席填上这部话机",
            )

        try:
            command = parse_feature_code(dialed)
        except InvalidFeatureCode as exc:
            return rejected(PROMPT_INVALID_CODE, str(exc), agent.agent_id)
        return await apply_agent_command(self._pool, agent.agent_id, command, source=CommandSource.PHONE)

    async def handle_feature_code(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        """FastAGI handler: ``agi_arg_1`` is ``CHANNEL(endpoint)``, ``agi_arg_2`` the dialed code."""
        claimed = env.args[0] if env.args else ""
        dialed = env.args[1] if len(env.args) > 1 else env.extension
        await channel.answer()

        result = await self.feature_code_result(claimed, env.channel, dialed)
        if result.accepted:
            log.info("agent feature code applied", agent_id=result.agent_id, endpoint=claimed, code=dialed,
                     state=result.state.value if result.state else None)
        else:
            log.warning("agent feature code rejected", agent_id=result.agent_id, endpoint=claimed, code=dialed,
                        prompt=result.prompt_id, reason=result.message)

        played = await channel.stream_file(self._prompt_path(result.prompt_id))
        if not played.played:
            log.warning("agent prompt not played", prompt=result.prompt_id, agent_id=result.agent_id)

    # --- queued calls ----------------------------------------------------------------------

    async def record_call(self, session: CallSession) -> None:
        """Store how a call that entered a queue ended, and stop counting it as waiting."""
        call_id = session.call.call_id
        self._pool.call_ended(call_id)
        if session.queue_entered_at is None or session.skill is None:
            return

        outcome = _QUEUE_OUTCOMES.get(session.outcome) if session.outcome is not None else None
        if outcome is None:
            # NOTE: a call that failed on the switch after entering the queue is left out of
            # today's figures. It counts neither as offered nor as abandoned.
            log.info("queue call not counted", call_id=call_id, outcome=session.outcome.value if session.outcome else None)
            return

        answered_at = session.answered_at if outcome is QueueOutcome.ANSWERED else None
        if outcome is QueueOutcome.ANSWERED and answered_at is None:
            log.warning("answered call without answer time not counted", call_id=call_id)
            return
        result = QueueCallResult(
            call_id=call_id, skill=session.skill, entered_at=session.queue_entered_at,
            ended_at=session.ended_at or self._wall_clock(), outcome=outcome, answered_at=answered_at,
            agent_id=session.agent_id if outcome is QueueOutcome.ANSWERED else None,
        )
        try:
            await self._store.record_queue_call(result)
        except (sqlite3.Error, StorageError) as exc:
            log.warning("queue call not recorded", call_id=call_id, error=str(exc))

    # --- CLI commands and status -----------------------------------------------------------

    async def apply_pending_commands(self) -> int:
        """Apply the CLI commands queued in the store, oldest first; return how many were taken."""
        applied_count = 0
        for pending in await self._store.pending_commands():
            now = self._wall_clock()
            age_s = (now - pending.requested_at).total_seconds()
            if age_s > self._command_max_age_s:
                message = f"命令在 {age_s:.0f} 秒后才被节点看到（超过 {self._command_max_age_s:.0f} 秒），未执行，请重新下达"
                await self._store.withdraw_command(pending.command_id, message, now)
                log.warning("agent command expired", command_id=pending.command_id, agent_id=pending.agent_id,
                            age_s=round(age_s, 1))
                continue
            if not await self._store.claim_command(pending.command_id):
                continue

            applied_count += 1
            result = await self._apply(pending)
            status = "done" if result.accepted else "rejected"
            await self._store.finish_command(pending.command_id, status, result.message, self._wall_clock())
        return applied_count

    async def _apply(self, pending: PendingCommand) -> CommandResult:
        command: AgentCommand = pending.command
        result = await apply_agent_command(self._pool, pending.agent_id, command, source=CommandSource.CLI)
        if result.accepted:
            log.info("agent command applied", command_id=pending.command_id, agent_id=pending.agent_id,
                     action=command.action.value, state=result.state.value if result.state else None)
        else:
            log.warning("agent command rejected", command_id=pending.command_id, agent_id=pending.agent_id,
                        action=command.action.value, reason=result.message)
        return result

    async def publish_status(self) -> None:
        """Write the pool's agents and waiting calls to the store for ``hotline status``."""
        status = build_status(self._node_id, self._wall_clock(), self._pool.snapshot(), self._agent_names,
                              self._pool.waiting_calls())
        await self._store.publish_status(status)

    async def start(self) -> None:
        await self.publish_status()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="agent-desk")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            # Only the desk's own task was cancelled; a cancellation of stop() goes on up.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.apply_pending_commands()
                await self.publish_status()
            except (sqlite3.Error, StorageError) as exc:
                # One warning per failing stretch, not one a second.
                if not self._store_failing:
                    log.warning("agent commands and status not written", error=str(exc))
                self._store_failing = True
                continue
            if self._store_failing:
                log.info("agent commands and status written again")
                self._store_failing = False
