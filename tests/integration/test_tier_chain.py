"""Integration: the four-tier chain county → city → province → ministry over three real mosquitto brokers.

The county is a test node (its ticket store and its publishers, no telephony); city,
province and ministry are ``hotline.nodes.ParentNode`` instances from a ``NodeConfig``.
Each parent node runs its own broker on a free loopback port.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from hotline.commands.tickets import tickets as tickets_cli
from hotline.config import MqttBroker, NodeConfig, ParentLink
from hotline.nodes import ParentNode
from stack.mosquitto import MosquittoBroker
from storage import TicketStore
from tickets.model import TicketCategory, TicketState
from tier_sync import NodeAlreadyRunning, PublisherSettings, SessionSettings
from tier_sync.escalation import ESCALATE_TO_KEY
from tier_sync.instructions import issue_instruction
from tier_sync.uplinks import Uplink, Uplinks

pytestmark = pytest.mark.integration

COUNTY, CITY, PROVINCE, MINISTRY = "county-330106", "city-330100", "province-330000", "ministry"
REGIONS = {COUNTY: "330106", CITY: "330100", PROVINCE: "330000", MINISTRY: "000000"}
TIERS = {CITY: "city", PROVINCE: "province", MINISTRY: "ministry"}
PARENTS = {COUNTY: CITY, CITY: PROVINCE, PROVINCE: MINISTRY}

# Each node's clock starts at its own pinned moment and then runs with real time, so that
# outbox timestamps still move forward. The city's starts an hour after the county's.
COUNTY_START = datetime(2026, 12, 4, 1, 0, tzinfo=timezone.utc)
NODE_STARTS = {
    COUNTY: COUNTY_START, CITY: COUNTY_START + timedelta(hours=1),
    PROVINCE: COUNTY_START + timedelta(hours=2), MINISTRY: COUNTY_START + timedelta(hours=3),
}

FAST_SESSION = SessionSettings(keepalive_s=5, connect_timeout_s=3, backoff_initial_s=0.2, backoff_max_s=1.0)
COUNTY_PUBLISHER = PublisherSettings(session=FAST_SESSION, publish_timeout_s=3.0, ack_timeout_s=5.0,
                                     poll_interval_s=0.1, takeover_backoff_s=1.0)
WAIT_S = 20.0


def running_clock(start: datetime) -> Callable[[], datetime]:
    origin = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - origin)


async def eventually(check: Callable[[], Awaitable[bool]], description: str, timeout: float = WAIT_S) -> None:
    """Poll ``check`` until it returns True; fail naming ``description`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {description}")
        await asyncio.sleep(0.1)


@dataclass
class Chain:
    """Brokers and configs of city, province and ministry, and the county's store."""

    tmp_path: Path
    brokers: dict[str, MosquittoBroker]
    configs: dict[str, NodeConfig]
    county: TicketStore

    def node(self, node_id: str) -> ParentNode:
        return ParentNode(self.configs[node_id], clock=running_clock(NODE_STARTS[node_id]))

    def uplink(self, node_id: str) -> Uplink:
        broker = self.brokers[node_id]
        return Uplink(node_id, broker.host, broker.port, 262144)

    def county_uplinks(self) -> Uplinks:
        return Uplinks(self.county, self.uplink(CITY), [self.uplink(PROVINCE), self.uplink(MINISTRY)],
                       settings=COUNTY_PUBLISHER)

    def write_config(self, node_id: str) -> Path:
        """Write ``node_id``'s config as YAML, for the CLI."""
        config = self.configs[node_id]
        path = self.tmp_path / f"{node_id}.yaml"
        lines = [f"node_id: {node_id}", f"tier: {config.tier}", f"region_code: '{config.region_code}'",
                 f"database: {config.database}", "broker:", f"  port: {config.broker.port}"]  # type: ignore[union-attr]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path


@pytest.fixture
def brokers(tmp_path: Path) -> Iterator[dict[str, MosquittoBroker]]:
    started: dict[str, MosquittoBroker] = {}
    try:
        for node_id in (CITY, PROVINCE, MINISTRY):
            started[node_id] = MosquittoBroker(work_dir=tmp_path / f"broker-{node_id}").start()
        yield started
    finally:
        for broker in started.values():
            broker.stop()


@pytest.fixture
async def chain(tmp_path: Path, brokers: dict[str, MosquittoBroker]) -> AsyncIterator[Chain]:
    configs: dict[str, NodeConfig] = {}
    for node_id in (CITY, PROVINCE, MINISTRY):
        parent = PARENTS.get(node_id)
        configs[node_id] = NodeConfig(
            node_id=node_id, tier=TIERS[node_id], region_code=REGIONS[node_id], database=tmp_path / f"{node_id}.db",
            broker=MqttBroker(port=brokers[node_id].port),
            parent=ParentLink(node_id=parent, broker=MqttBroker(port=brokers[parent].port)) if parent else None,
        )
    async with await TicketStore.open(tmp_path / "county.db", COUNTY, REGIONS[COUNTY],
                                      clock=running_clock(COUNTY_START)) as county:
        yield Chain(tmp_path, brokers, configs, county)


@pytest.fixture
async def nodes(chain: Chain) -> AsyncIterator[dict[str, ParentNode]]:
    started: dict[str, ParentNode] = {}
    try:
        for node_id in (MINISTRY, PROVINCE, CITY):
            started[node_id] = chain.node(node_id)
            await started[node_id].start()
        yield started
    finally:
        for node in started.values():
            await node.stop()


async def open_ticket(store: TicketStore, call_id: str, at: datetime) -> str:
    ticket = await store.open_ticket(call_id, TicketCategory.ERTONG, "139****0001", at, "agent-1001",
                                     {"flow_id": "main"})
    return ticket.ticket_id


async def has_ticket(store: TicketStore, ticket_id: str, last_seq: int = 1) -> bool:
    return any(ticket.ticket_id == ticket_id and ticket.last_seq >= last_seq for ticket in await store.list_tickets())


async def linked(store: TicketStore, ticket_id: str, kind: str) -> str | None:
    for link in await store.list_links(ticket_id):
        if link.ticket_id == ticket_id and link.kind == kind:
            return link.linked_ticket_id
    return None


class TestEscalation:
    async def test_escalated_ticket_linked_at_city_and_province(
        self, chain: Chain, nodes: dict[str, ParentNode]
    ) -> None:
        """提级 from the county opens a city ticket, whose 提级 opens a province ticket; ids and clocks stay separate."""
        county, city, province, ministry = chain.county, nodes[CITY], nodes[PROVINCE], nodes[MINISTRY]
        uplinks = chain.county_uplinks()
        await uplinks.start()
        try:
            # Step 1: the county opens a ticket and escalates it to the city.
            county_id = await open_ticket(county, "1700000100.1", COUNTY_START + timedelta(minutes=5))
            await county.apply_action(county_id, "escalate", "agent-1001", note="需市级审批",
                                      payload={ESCALATE_TO_KEY: CITY})
            uplinks.notify()

            async def county_linked() -> bool:
                return await linked(county, county_id, "escalation_linked") is not None

            await eventually(county_linked, "the county ticket to record the city's ticket id")
            city_id = await linked(county, county_id, "escalation_linked")
            assert city_id is not None

            # Step 2: the city ticket is the city's own, linked back, with its own clock.
            city_ticket = await city.store.get_ticket(city_id)
            county_ticket = await county.get_ticket(county_id)
            assert city_ticket.origin_node == CITY
            assert city_id.startswith("330100-20261204-")
            assert county_id.startswith("330106-20261204-")
            assert city_ticket.state is TicketState.NEW
            assert county_ticket.state is TicketState.ESCALATED
            assert city_ticket.created_at >= NODE_STARTS[CITY]
            assert county_ticket.created_at == COUNTY_START + timedelta(minutes=5)
            assert await linked(city.store, city_id, "escalated_from") == county_id
            created = (await city.store.list_events(city_id))[0]
            assert created.payload["escalated_from_ticket_id"] == county_id

            # Step 3: the city escalates its ticket to the province in turn.
            await city.store.apply_action(city_id, "escalate", "city-duty-01", note="需省级跨市协调",
                                          payload={ESCALATE_TO_KEY: PROVINCE})
            assert city.uplinks is not None
            city.uplinks.notify()

            async def city_linked() -> bool:
                return await linked(city.store, city_id, "escalation_linked") is not None

            await eventually(city_linked, "the city ticket to record the province's ticket id")
            province_id = await linked(city.store, city_id, "escalation_linked")
            assert province_id is not None and province_id.startswith("330000-20261204-")
            province_ticket = await province.store.get_ticket(province_id)
            assert province_ticket.origin_node == PROVINCE
            assert province_ticket.created_at >= NODE_STARTS[PROVINCE]

            # Step 4: the province contains all three, linked both ways, and so does the ministry.
            for store in (province.store, ministry.store):
                for ticket_id in (county_id, city_id):
                    await eventually(lambda s=store, t=ticket_id: has_ticket(s, t, 2), f"{ticket_id} at {store.node_id}")

                async def links_arrived(s: TicketStore = store) -> bool:
                    return (await linked(s, county_id, "escalation_linked") == city_id
                            and await linked(s, city_id, "escalation_linked") == province_id)

                await eventually(links_arrived, f"both escalation links at {store.node_id}")
            await eventually(lambda: has_ticket(ministry.store, province_id), "the province ticket at the ministry")
            assert {ticket.region_code for ticket in await province.store.list_tickets()} == {"330106", "330100", "330000"}

            # Step 5: every hop acknowledged, so no outbox row is left.
            await uplinks.chain.wait_drained(WAIT_S)
            for node in (city, province):
                assert node.uplinks is not None
                await node.uplinks.chain.wait_drained(WAIT_S)
            assert await city.store.pending_instructions() == []
            assert await province.store.pending_instructions() == []
        finally:
            await uplinks.stop()

        # Step 6: the operator sees the links in `hotline tickets show` at the province.
        arguments = ["show", "--config", str(chain.write_config(PROVINCE)), city_id]
        try:
            result = await asyncio.to_thread(CliRunner().invoke, tickets_cli, arguments)
        finally:
            # The CLI configures logging towards the runner's temporary stderr.
            structlog.reset_defaults()
        assert result.exit_code == 0, result.output
        assert f"本工单提级后的上级工单为 {province_id}" in result.output
        assert f"工单 {county_id} 提级后的上级工单为本工单" in result.output


class TestEmergencyDirect:
    async def test_emergency_reaches_province_and_ministry_without_city(self, chain: Chain) -> None:
        """With the city node down, an emergency ticket still reaches the province and the ministry directly;
        the copies that arrive later through the chain are duplicates, not new events."""
        county = chain.county
        province, ministry = chain.node(PROVINCE), chain.node(MINISTRY)
        await ministry.start()
        await province.start()
        uplinks = chain.county_uplinks()
        await uplinks.start()
        city: ParentNode | None = None
        try:
            # Step 1: an ordinary ticket and an emergency ticket while the city node is stopped.
            ordinary_id = await open_ticket(county, "1700000200.1", COUNTY_START)
            emergency_id = await open_ticket(county, "1700000200.2", COUNTY_START + timedelta(minutes=1))
            await county.append_event(emergency_id, "emergency_alert", "ivr", {"need": "child_unreachable"},
                                      occurred_at=COUNTY_START + timedelta(minutes=2))
            uplinks.notify()

            for node in (province, ministry):
                await eventually(lambda s=node.store: has_ticket(s, emergency_id, 2),
                                 f"the emergency ticket at {node.config.node_id}")
                assert [event.kind for event in await node.store.list_events(emergency_id)] == [
                    "created", "emergency_alert"]
            for direct in uplinks.direct:
                await direct.wait_drained(WAIT_S)
            assert not await has_ticket(province.store, ordinary_id)
            # The three chain rows (one ordinary event, two emergency events) wait for the city.
            assert await county.count_pending_outbox() == 3

            # Step 2: the city comes up; the chain delivers everything, the emergency events again.
            city = chain.node(CITY)
            await city.start()
            await uplinks.chain.wait_drained(WAIT_S)
            for node in (province, ministry):
                await eventually(lambda s=node.store: has_ticket(s, ordinary_id), f"the ordinary ticket at "
                                 f"{node.config.node_id}")

            async def chain_copies_seen() -> bool:
                return province.receiver.duplicates >= 2 and ministry.receiver.duplicates >= 2

            await eventually(chain_copies_seen, "the chain copies of the emergency events as duplicates")
            assert len(await province.store.list_events(emergency_id)) == 2
            assert len(await ministry.store.list_events(emergency_id)) == 2
            assert province.receiver.rejected == 0
            assert ministry.receiver.rejected == 0
            assert await county.count_pending_outbox() == 0
        finally:
            await uplinks.stop()
            for node in (city, province, ministry):
                if node is not None:
                    await node.stop()


class TestInstructions:
    async def test_city_instructions_applied_at_county(self, chain: Chain, nodes: dict[str, ParentNode]) -> None:
        """督办 and 政策通知 from the city become county ticket events; an impossible 派单 is rejected and kept."""
        county, city = chain.county, nodes[CITY]
        uplinks = chain.county_uplinks()
        await uplinks.start()
        try:
            ticket_id = await open_ticket(county, "1700000300.1", COUNTY_START)
            await county.apply_action(ticket_id, "dispatch", "agent-1001", note="转街道民政办")
            uplinks.notify()
            await eventually(lambda: has_ticket(city.store, ticket_id, 2), "the county ticket at the city")

            # Step 1: three instructions; 派单 does not apply to a dispatched ticket.
            supervise = await issue_instruction(city.store, COUNTY, ticket_id, "supervise", "city-duty-01",
                                                office="杭州市民政局", note="请今日内反馈进展")
            notice = await issue_instruction(city.store, COUNTY, ticket_id, "policy_notice", "city-duty-01",
                                             note="临时救助标准自 12 月起上调")
            assign = await issue_instruction(city.store, COUNTY, ticket_id, "assign", "city-duty-01",
                                             office="西湖区民政局")
            city.receiver.notify()

            async def all_answered() -> bool:
                return await city.store.pending_instructions() == []

            await eventually(all_answered, "the county's answers to all three instructions")

            # Step 2: the county's trail, which also reached the city.
            events = await county.list_events(ticket_id)
            applied = {event.payload.get("instruction_id"): event for event in events}
            assert applied[supervise.instruction_id].kind == "supervised"
            assert applied[supervise.instruction_id].office == "杭州市民政局"
            assert applied[notice.instruction_id].kind == "policy_notice"
            assert assign.instruction_id not in applied
            await eventually(lambda: has_ticket(city.store, ticket_id, len(events)), "the county's events at the city")

            # Step 3: the rejected one is dead-lettered at the city with the county's reason.
            (dead,) = await city.store.list_dead_letters()
            assert dead.event_id == city.store.instruction_key(assign.instruction_id, COUNTY)
            assert "不能执行「派单」" in (dead.dead_reason or "")
            assert city.receiver.instructions_acked == 2
            assert uplinks.instructions.rejected == 1
        finally:
            await uplinks.stop()


class TestSingleInstance:
    async def test_second_parent_node_stopped_by_lock(self, chain: Chain, nodes: dict[str, ParentNode]) -> None:
        """A second process for the same node fails at start; the stable client ids are the node's."""
        city = nodes[CITY]
        assert city.receiver.client_id == "hotline-city-330100-receiver"
        assert city.uplinks is not None
        assert city.uplinks.chain.client_id == "hotline-city-330100"

        second = chain.node(CITY)
        with pytest.raises(NodeAlreadyRunning):
            await second.start()
        assert city.receiver.connected
