"""Application: the long-running node processes, wiring adapters, domain and storage together.

A county node takes calls: FastAGI server, AMI client, flow runner, agent pool, ticket
store and the outbox publisher towards its parent. A node above the county (city,
province) receives its children's ticket events from its own broker and stores them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import structlog

from acd.pool import AcdSettings, AgentPool, AgentProfile
from acd.roster import load_roster
from acd.settings import load_acd_settings
from hotline.config import NodeConfig, Telephony
from hotline.ticket_desk import TicketDesk
from hwd_bridge.agi_call_port import AgiCallPort, call_from_agi_environment
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.ami_client import AmiClient
from hwd_bridge.ami_device_state import endpoint_state_from_ami_event
from hwd_bridge.ami_errors import AmiError
from hwd_bridge.ami_protocol import AmiMessage
from hwd_bridge.fastagi_server import HOTLINE_DONE_VARIABLE, FastAgiServer
from ivr.engine import FlowRunner
from ivr.flow import Flow, flow_skills
from ivr.flow_registry import FlowRegistry, FlowWatcher
from speech.catalog import load_catalog
from storage.acd_store import AcdStore, AcdStoreRecorder, acd_path
from storage.ticket_store import TicketStore
from tickets.calendar import WorkingCalendar, load_calendar_overrides
from tier_sync.outbox_publisher import OutboxPublisher, PublisherSettings
from tier_sync.tier_receiver import TierReceiver

log = structlog.get_logger(__name__)

# The FastAGI route the dialplan's AGI() URL names for the hotline number.
HOTLINE_ROUTE = "ivr/12349"

AMI_READY_TIMEOUT_S = 60.0
AMI_RECONNECT_MAX_DELAY_S = 2.0


class NodeStartError(Exception):
    """A node could not start; the Chinese message names what to check."""


def _warn_unstaffed_skills(flow: Flow, roster: list[AgentProfile]) -> None:
    """Warn about skills the flow routes to that no agent in the roster has.

    Calls for such a skill always end in the no-agent branch, which is legal (a skill may
    be staffed later) but usually a typo in the flow or the roster.
    """
    staffed = {skill for agent in roster for skill in agent.skills}
    missing = sorted(flow_skills(flow) - staffed)
    if missing:
        log.warning("flow routes to skills no agent has", skills=missing, flow=flow.flow_id)
        print(f"警告：流程 {flow.flow_id} 会把来电分配到技能组 {'、'.join(missing)}，但坐席名单中没有任何坐席具备"
              f"这些技能，这些来电将一律转入“无空闲坐席”分支。请检查流程中的 skill 或坐席名单。", file=sys.stderr)

# How often the node re-reads its flow file and the version store's active pointer.
FLOW_POLL_INTERVAL_S = 1.0


class CountyNode:
    """A call-taking node. ``start`` returns once calls can be taken; ``stop`` undoes it."""

    def __init__(self, config: NodeConfig, *, flow_poll_interval_s: float = FLOW_POLL_INTERVAL_S):
        if config.telephony is None or config.parent is None:
            raise ValueError("a county node needs telephony and parent settings")
        self.config = config
        self._telephony: Telephony = config.telephony
        self._store: TicketStore | None = None
        self._publisher: OutboxPublisher | None = None
        self._ami: AmiClient | None = None
        self._server: FastAgiServer | None = None
        self._flows: FlowRegistry | None = None
        self._flow_watcher: FlowWatcher | None = None
        self._flow_poll_interval_s = flow_poll_interval_s
        self._pool: AgentPool | None = None
        self._acd_store: AcdStore | None = None
        self._acd_recorder: AcdStoreRecorder | None = None
        self._runner: FlowRunner | None = None
        self._desk: TicketDesk | None = None

    @property
    def fastagi_port(self) -> int:
        assert self._server is not None
        return self._server.port

    @property
    def flow(self) -> Flow:
        """The flow that new calls start on."""
        assert self._flows is not None
        return self._flows.current()

    async def start(self) -> None:
        telephony = self._telephony
        parent = self.config.parent
        assert parent is not None

        # Load and check everything a caller depends on before opening any port.
        catalog = load_catalog(telephony.prompt_catalog)
        # The flow comes from telephony.flow through the version store next to the database,
        # which keeps every activated version for rollback and is shared with `hotline flows`.
        self._flows = FlowRegistry.for_database(self.config.database, prompt_ids=set(catalog))
        flow = self._flows.start_from_file(telephony.flow)
        self._flow_watcher = FlowWatcher(self._flows, telephony.flow, interval_s=self._flow_poll_interval_s)
        roster = load_roster(telephony.roster)
        acd_settings = load_acd_settings(telephony.acd_settings) if telephony.acd_settings else AcdSettings()
        self._acd_store = await AcdStore.open(acd_path(self.config.database))
        self._acd_recorder = AcdStoreRecorder(self._acd_store)
        self._pool = AgentPool(roster, settings=acd_settings, recorder=self._acd_recorder)
        _warn_unstaffed_skills(flow, roster)

        self._store = await TicketStore.open(self.config.database, self.config.node_id, self.config.region_code)
        self._publisher = OutboxPublisher(
            self._store, parent.broker.host, parent.broker.port, self.config.node_id, parent.node_id,
            settings=PublisherSettings(max_packet_size=parent.broker.max_packet_size),
        )
        await self._publisher.start()
        self._desk = TicketDesk(self._store, on_written=self._publisher.notify)
        overrides = load_calendar_overrides(telephony.calendar_overrides) if telephony.calendar_overrides else None
        self._runner = FlowRunner(self._pool, self._desk, calendar=WorkingCalendar.default(overrides))

        # AMI first, so agent states are known before the first call arrives.
        secret = Path(telephony.ami.secret_file).read_text(encoding="utf-8").strip()
        # Asterisk runs on this host, so reconnect attempts are cheap; a 2 s cap brings AMI
        # back within a few seconds of an Asterisk restart.
        self._ami = AmiClient(telephony.ami.host, telephony.ami.port, telephony.ami.username, secret,
                              on_reconnected=self._resync_agents, reconnect_max_delay=AMI_RECONNECT_MAX_DELAY_S)
        self._ami.subscribe(self._on_device_state, event_names=["DeviceStateChange"])
        try:
            async with asyncio.timeout(AMI_READY_TIMEOUT_S):
                await self._ami.start()
        except TimeoutError:
            raise NodeStartError(
                f"{AMI_READY_TIMEOUT_S:.0f} 秒内无法登录 Asterisk 管理接口 {telephony.ami.host}:{telephony.ami.port}"
                f"（用户 {telephony.ami.username}）：请确认 Asterisk 已启动，且 manager.conf 中的端口和账号与"
                f"节点配置 telephony.ami 一致"
            ) from None
        await self._resync_agents(self._ami)

        self._server = FastAgiServer({HOTLINE_ROUTE: self._handle_call}, host=telephony.fastagi.host,
                                     port=telephony.fastagi.port, completion_variable=HOTLINE_DONE_VARIABLE)
        await self._server.start()
        self._flow_watcher.start()
        log.info("county node ready", node_id=self.config.node_id, region=self.config.region_code,
                 flow=flow.flow_id, flow_version=flow.version[:12], agents=len(self._pool.agent_ids),
                 port=self._server.port)

    async def stop(self) -> None:
        """Stop taking calls, let live calls finish briefly, then close sync and storage."""
        if self._flow_watcher is not None:
            await self._flow_watcher.stop()
        if self._server is not None:
            await self._server.stop(grace_s=5)
        if self._ami is not None:
            await self._ami.stop()
        if self._acd_recorder is not None:
            await self._acd_recorder.flush()
        if self._acd_store is not None:
            await self._acd_store.close()
        if self._publisher is not None:
            await self._publisher.stop()
        if self._store is not None:
            await self._store.close()
        log.info("county node stopped", node_id=self.config.node_id)

    async def _handle_call(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        assert self._runner is not None and self._flows is not None and self._desk is not None
        call = call_from_agi_environment(env)
        port = AgiCallPort(channel, self._prompt_path)
        # Read once: the call finishes on the flow version it started with, even if an edit
        # or a rollback is activated meanwhile.
        flow = self._flows.current()

        session = await self._runner.run(flow, call, port)

        # The caller may be gone; the records are written regardless, and shielded so a
        # server shutdown cannot cut a ticket write in half.
        await asyncio.shield(self._desk.finish_call(session))

    def _prompt_path(self, prompt_id: str) -> str:
        return f"{self._telephony.prompt_sound_dir}/{prompt_id}"

    async def _on_device_state(self, message: AmiMessage) -> None:
        assert self._pool is not None
        parsed = endpoint_state_from_ami_event(message)
        if parsed is not None:
            await self._pool.device_state_changed(*parsed)

    async def _resync_agents(self, client: AmiClient) -> None:
        """Read every device's state after (re)connecting, since events were missed meanwhile."""
        assert self._pool is not None
        try:
            result = await client.action("DeviceStateList", {})
        except AmiError as exc:
            log.warning("agent state resync failed", error=str(exc))
            return

        synced = 0
        for item in result.events:
            parsed = endpoint_state_from_ami_event(item)
            if parsed is not None and self._pool.endpoint_known(parsed[0]):
                await self._pool.device_state_changed(*parsed)
                synced += 1
        log.info("agent states resynced", count=synced)


class ParentNode:
    """A node above the county: stores what its children send up through its broker."""

    def __init__(self, config: NodeConfig):
        if config.broker is None:
            raise ValueError(f"node {config.node_id} receives from children and needs its own broker settings")
        self.config = config
        self._store: TicketStore | None = None
        self._receiver: TierReceiver | None = None

    async def start(self) -> None:
        broker = self.config.broker
        assert broker is not None
        self._store = await TicketStore.open(self.config.database, self.config.node_id, self.config.region_code)
        self._receiver = TierReceiver(self._store, broker.host, broker.port, self.config.node_id)
        await self._receiver.start()
        log.info("parent node ready", node_id=self.config.node_id, tier=self.config.tier,
                 region=self.config.region_code, broker_port=broker.port)

    async def stop(self) -> None:
        if self._receiver is not None:
            await self._receiver.stop()
        if self._store is not None:
            await self._store.close()
        log.info("parent node stopped", node_id=self.config.node_id)
