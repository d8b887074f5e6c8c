"""Application: the long-running node processes, wiring adapters, domain and storage together.

A county node takes calls: FastAGI server, AMI client, flow runner, agent pool, ticket
store and the outbox publisher towards its parent. A node above the county (city,
province) receives its children's ticket events from its own broker and stores them.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from acd.pool import VIDEO_CAPABILITY, AcdSettings, AgentPool, AgentProfile
from acd.roster import load_roster
from acd.settings import load_acd_settings
from hotline.brokers import client_security
from hotline.config import ConfigError, FastAgiListen, NodeConfig, ParentLink, Telephony
from hotline.agent_desk import AGENT_FEATURE_ROUTE, AgentDesk
from hotline.queue_callbacks import AmiCallbackOriginator, QueueCallbackDialer
from hotline.ticket_desk import TicketDesk
from hwd_bridge.agi_call_port import AgiCallPort, call_from_agi_environment
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.ami_client import AmiClient
from hwd_bridge.ami_device_state import endpoint_state_from_ami_event
from hwd_bridge.ami_endpoint_media import endpoint_allows_video
from hwd_bridge.ami_errors import AmiError
from hwd_bridge.ami_protocol import AmiMessage
from hwd_bridge.fastagi_server import HOTLINE_DONE_VARIABLE, FastAgiServer
from ivr.engine import FlowRunner
from ivr.flow import Flow, flow_skills
from ivr.flow_registry import FlowRegistry, FlowWatcher
from profiles.config import load_profiles_config
from profiles.keys import KeyFileError, load_keys
from speech.catalog import load_catalog
from speech.vosk_recognizer import VoskRecognizer, open_recognizer
from storage.acd_store import AcdStore, AcdStoreRecorder, acd_path
from storage.errors import StorageError
from storage.profile_store import ProfileStore
from storage.ticket_store import TicketStore
from tickets.calendar import WorkingCalendar, load_calendar_overrides
from tier_sync.mqtt_session import SessionSettings
from tier_sync.outbox_publisher import OutboxPublisher, PublisherSettings
from tier_sync.tier_receiver import ReceiverSettings, TierReceiver
from tier_sync.uplinks import Uplink, Uplinks

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

    def __init__(self, config: NodeConfig, *, flow_poll_interval_s: float = FLOW_POLL_INTERVAL_S,
                 profiles_config: Path | None = None, call_recordings_dir: Path | None = None,
                 callback_trunk: str | None = None):
        """``call_recordings_dir`` is the switch's monitor folder as this process sees it: recorded
        agent calls found there are attached to their tickets. ``callback_trunk`` is the PJSIP
        endpoint that reaches citizens: with it, callers who chose a callback in the queue keep
        their place and are called back through it when their turn comes."""
        if config.telephony is None or config.parent is None:
            raise ValueError("a county node needs telephony and parent settings")
        self.config = config
        self._telephony: Telephony = config.telephony
        self._store: TicketStore | None = None
        self._publisher: OutboxPublisher | None = None
        self._direct_publishers: list[OutboxPublisher] = []
        self._ami: AmiClient | None = None
        self._server: FastAgiServer | None = None
        self._flows: FlowRegistry | None = None
        self._flow_watcher: FlowWatcher | None = None
        self._flow_poll_interval_s = flow_poll_interval_s
        self._pool: AgentPool | None = None
        # (agent id, endpoint) of the roster agents listed with a video phone.
        self._video_agents: list[tuple[str, str]] = []
        self._acd_store: AcdStore | None = None
        self._acd_recorder: AcdStoreRecorder | None = None
        self._runner: FlowRunner | None = None
        self._desk: TicketDesk | None = None
        # The profile store's own config file; without it callers are all unknown and call
        # records keep numbers in clear at this node.
        self._profiles_config = profiles_config if profiles_config is not None else self._telephony.profiles
        self._profiles: ProfileStore | None = None
        self._recognizer: VoskRecognizer | None = None
        self._agent_desk: AgentDesk | None = None
        self._call_recordings_dir = (call_recordings_dir if call_recordings_dir is not None
                                     else self._telephony.call_recordings_dir)
        self._callback_trunk = callback_trunk if callback_trunk is not None else self._telephony.callback_trunk
        self._queue_callbacks: QueueCallbackDialer | None = None
        # Whether this process calls back the places stored by an earlier run. Two
        # controllers sharing the database must not both do it.
        self._serves_stored_places = True

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
        self._video_agents = [(agent.agent_id, agent.endpoint) for agent in roster
                              if VIDEO_CAPABILITY in agent.capabilities]
        # The roster and pool live as long as the node, so full collections need not walk them
        # (without this, single routing decisions stall up to 0.24 s at 50,000 agents).
        gc.collect()
        gc.freeze()
        _warn_unstaffed_skills(flow, roster)
        self._agent_desk = AgentDesk(self._pool, self._acd_store, self.config.node_id,
                                     agent_names={agent.agent_id: agent.name for agent in roster},
                                     prompt_path=self._prompt_path)

        self._store = await TicketStore.open(self.config.database, self.config.node_id, self.config.region_code)
        self._publisher = OutboxPublisher(
            self._store, parent.broker.host, parent.broker.port, self.config.node_id, parent.node_id,
            settings=_publisher_settings(parent, self.config.node_id),
        )
        await self._start_publisher(self._publisher)
        # Emergency tickets also go straight to each configured ancestor (province, ministry).
        self._direct_publishers = [
            OutboxPublisher(self._store, link.broker.host, link.broker.port, self.config.node_id, link.node_id,
                            settings=_publisher_settings(link, self.config.node_id), direct=True)
            for link in self.config.direct_upstream
        ]
        for publisher in self._direct_publishers:
            await self._start_publisher(publisher)
        default_area_code = await self._open_profiles()
        self._desk = TicketDesk(self._store, on_written=self.notify_publishers, profiles=self._profiles,
                                default_area_code=default_area_code, call_recordings_dir=self._call_recordings_dir,
                                parent_node_id=parent.node_id)
        overrides = load_calendar_overrides(telephony.calendar_overrides) if telephony.calendar_overrides else None
        speech = telephony.speech
        # A missing or unloadable model is logged and leaves the menus on keys only.
        self._recognizer = await open_recognizer(speech.model_path) if speech is not None else None
        self._runner = FlowRunner(self._pool, self._desk, calendar=WorkingCalendar.default(overrides),
                                  callers=self._desk if self._profiles is not None else None,
                                  recognizer=self._recognizer, answer_path=self._answer_path)

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
        if self._callback_trunk is not None:
            self._queue_callbacks = QueueCallbackDialer(
                self._pool, AmiCallbackOriginator(self._ami, self._callback_trunk), self._desk.queue_callback_finished,
                places=self._desk)
            if self._serves_stored_places:
                await self._restore_kept_places()

        listen = self._fastagi_listen()
        routes = {HOTLINE_ROUTE: self._handle_call, AGENT_FEATURE_ROUTE: self._agent_desk.handle_feature_code}
        self._server = FastAgiServer(routes, host=listen.host,
                                     port=listen.port, completion_variable=HOTLINE_DONE_VARIABLE)
        await self._server.start()
        await self._agent_desk.start()
        self._flow_watcher.start()
        log.info("county node ready", node_id=self.config.node_id, region=self.config.region_code,
                 flow=flow.flow_id, flow_version=flow.version[:12], agents=len(self._pool.agent_ids),
                 port=self._server.port)

    async def _restore_kept_places(self) -> None:
        """Serve the queue places that callers kept before this controller started.

        A read failure must not stop the node taking calls: the tickets' callback requests
        stay on the agents' callback list.
        """
        assert self._queue_callbacks is not None and self._desk is not None
        try:
            restored = self._queue_callbacks.restore(await self._desk.kept_places())
        except StorageError as exc:
            log.error("queue callback places not restored", error=str(exc))
            return
        if restored:
            log.info("queue callback places restored", count=restored)

    async def _take_over_stored_places(self) -> None:
        """Make this process the one that serves the node's stored queue places, and serve them."""
        self._serves_stored_places = True
        if self._queue_callbacks is not None:
            await self._restore_kept_places()

    async def stop(self) -> None:
        """Stop taking calls, let live calls finish briefly, then close sync and storage."""
        if self._flow_watcher is not None:
            await self._flow_watcher.stop()
        if self._server is not None:
            await self._server.stop(grace_s=5)
        if self._queue_callbacks is not None:
            await self._queue_callbacks.stop()
        if self._ami is not None:
            await self._ami.stop()
        if self._agent_desk is not None:
            await self._agent_desk.stop()
        if self._acd_recorder is not None:
            await self._acd_recorder.flush()
        if self._acd_store is not None:
            await self._acd_store.close()
        for publisher in self._direct_publishers:
            await publisher.stop()
        if self._publisher is not None:
            await self._publisher.stop()
        if self._store is not None:
            await self._store.close()
        if self._profiles is not None:
            await self._profiles.close()
        if self._recognizer is not None:
            await self._recognizer.stop()
        log.info("county node stopped", node_id=self.config.node_id)

    async def _open_profiles(self) -> str | None:
        """Open the profile store when configured; return its default area code for caller numbers."""
        if self._profiles_config is None:
            log.warning("no profile store configured: callers are not matched and numbers are stored in clear")
            return None
        try:
            config = load_profiles_config(self._profiles_config)
            keys = load_keys(config.encryption_key_file, config.lookup_key_file)
        except (ConfigError, KeyFileError) as exc:
            raise NodeStartError(f"档案库无法使用：{exc}") from exc
        self._profiles = await ProfileStore.open(config.database, keys)
        return config.default_area_code

    async def _handle_call(self, env: AgiEnvironment, channel: AgiChannel) -> None:
        assert self._runner is not None and self._flows is not None and self._desk is not None
        call = call_from_agi_environment(env)
        speech = self._telephony.speech
        port = AgiCallPort(channel, self._prompt_path, answer_dir=speech.answer_dir if speech is not None else None)
        # Read once: the call finishes on the flow version it started with, even if an edit
        # or a rollback is activated meanwhile.
        flow = self._flows.current()

        session = await self._runner.run(flow, call, port)

        # The caller may be gone; the records are written regardless, and shielded so a
        # server shutdown cannot cut a ticket write in half.
        await asyncio.shield(self._desk.finish_call(session))
        if self._queue_callbacks is not None:
            self._queue_callbacks.keep(session)
        if self._agent_desk is not None:
            await asyncio.shield(self._agent_desk.record_call(session))

    async def _start_publisher(self, publisher: OutboxPublisher) -> None:
        """Start the upward sync; raises NodeAlreadyRunning when another process of the node publishes."""
        await publisher.start()

    def notify_publishers(self) -> None:
        """Wake the chain publisher and the direct ones, right after a ticket event was written."""
        for publisher in (self._publisher, *self._direct_publishers):
            if publisher is not None:
                publisher.notify()

    def _fastagi_listen(self) -> FastAgiListen:
        """Return the address this node's FastAGI server listens on."""
        return self._telephony.fastagi

    def _answer_path(self, switch_file: str) -> Path:
        """Map a recorded answer's path on the switch to the same file as this process sees it."""
        speech = self._telephony.speech
        if speech is None:
            return Path(switch_file)
        return speech.answer_local_dir / Path(switch_file).name

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
        await self._check_video_phones(client)

    async def _check_video_phones(self, client: AmiClient) -> None:
        """Match each video-phone agent of the roster against the codecs its endpoint allows on the switch."""
        assert self._pool is not None
        for agent_id, endpoint in self._video_agents:
            allows_video = await endpoint_allows_video(client, endpoint)
            if allows_video is None:
                continue
            self._pool.set_video_phone(agent_id, allows_video)
            if not allows_video:
                log.warning("roster lists a video phone but its endpoint allows no video codec; "
                            "the agent takes no sign-language call", agent_id=agent_id, endpoint=endpoint)


class ParentNode:
    """A node above the county: stores what its children send up through its broker.

    With a ``parent`` in its config (city, province) it also forwards everything up the
    chain, its own tickets included, takes its parent's instructions, and sends emergency
    tickets it opened to each ``direct_upstream`` ancestor.
    """

    def __init__(self, config: NodeConfig, *, clock: Callable[[], datetime] | None = None):
        if config.broker is None:
            raise ValueError(f"node {config.node_id} receives from children and needs its own broker settings")
        self.config = config
        # The store's clock stamps the tickets this node opens itself (提级) and so starts their SLA clocks.
        self._clock = clock
        self._store: TicketStore | None = None
        self._receiver: TierReceiver | None = None
        self._uplinks: Uplinks | None = None

    @property
    def store(self) -> TicketStore:
        assert self._store is not None
        return self._store

    @property
    def receiver(self) -> TierReceiver:
        assert self._receiver is not None
        return self._receiver

    @property
    def uplinks(self) -> Uplinks | None:
        return self._uplinks

    async def start(self) -> None:
        broker = self.config.broker
        assert broker is not None
        clock = {"clock": self._clock} if self._clock is not None else {}
        self._store = await TicketStore.open(self.config.database, self.config.node_id, self.config.region_code,
                                             **clock)
        parent = self.config.parent
        try:
            # Publishers first, so that a forwarded event can wake them as soon as it is queued.
            if parent is not None:
                node_id = self.config.node_id
                self._uplinks = Uplinks(
                    self._store, _uplink(parent, node_id),
                    [_uplink(link, node_id) for link in self.config.direct_upstream],
                )
                await self._uplinks.start()
            self._receiver = TierReceiver(
                self._store, broker.host, broker.port, self.config.node_id,
                settings=ReceiverSettings(session=SessionSettings(
                    security=client_security(broker, self.config.node_id))),
                forward=parent is not None, on_written=self._uplinks.notify if self._uplinks else None,
            )
            await self._receiver.start()
        except BaseException:
            await self.stop()
            raise
        log.info("parent node ready", node_id=self.config.node_id, tier=self.config.tier,
                 region=self.config.region_code, broker_port=broker.port,
                 parent=parent.node_id if parent else None,
                 direct_upstream=[link.node_id for link in self.config.direct_upstream])

    async def stop(self) -> None:
        if self._receiver is not None:
            await self._receiver.stop()
        if self._uplinks is not None:
            await self._uplinks.stop()
        if self._store is not None:
            await self._store.close()
        log.info("parent node stopped", node_id=self.config.node_id)


def _publisher_settings(link: ParentLink, node_id: str) -> PublisherSettings:
    """Publisher settings towards a node above, logging in to its broker as ``node_id`` when TLS is configured."""
    return PublisherSettings(max_packet_size=link.broker.max_packet_size,
                             session=SessionSettings(security=client_security(link.broker, node_id)))


def _uplink(link: ParentLink, node_id: str) -> Uplink:
    """Describe a link to a node above, logging in to its broker as ``node_id`` when TLS is configured."""
    session = SessionSettings(security=client_security(link.broker, node_id))
    return Uplink(link.node_id, link.broker.host, link.broker.port, link.broker.max_packet_size, session)
