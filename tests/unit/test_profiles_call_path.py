"""Caller profiles on the call path: lookup at call start, menu skip, ACD hints, agent screen, sealed numbers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from acd.pool import AcdSettings, AgentPool, AgentProfile, DeviceState
from hotline.cli import main as cli_main
from hotline.ticket_desk import TicketDesk
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow import FlowError, load_flow
from ivr.ports import DialStatus
from profiles.config import load_profiles_config
from profiles.access import Operator, OperatorRole, OperatorTier
from profiles.keys import generate_key_files, load_keys
from profiles.model import Address, NeedTag, Profile
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_id_for_index
from storage.profile_store import ProfileStore
from storage.ticket_store import TicketStore
from tests.fakes.call_port import ScriptedCaller
from tickets.call_record import CallOutcome
from tickets.envelope import build_envelope

FLOW_PATH = Path(__file__).resolve().parents[2] / "flows" / "12349.yaml"
FLOW = load_flow(FLOW_PATH)
NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
KNOWN_NUMBER = "13900000041"
SHARED_LANDLINE = "02155501234"


@dataclass
class Stack:
    tickets: TicketStore
    profiles: ProfileStore
    desk: TicketDesk
    config_file: Path


@contextlib.asynccontextmanager
async def open_stack(tmp_path: Path) -> AsyncIterator[Stack]:
    keys_folder = tmp_path / "keys"
    keys_folder.mkdir()
    db_folder = tmp_path / "db"
    db_folder.mkdir()
    encryption, lookup = keys_folder / "encryption.json", keys_folder / "lookup.json"
    generate_key_files(encryption, lookup, now=NOW)
    config_file = tmp_path / "profiles.yaml"
    config_file.write_text(f"database: {db_folder / 'profiles.sqlite3'}\nencryption_key_file: {encryption}\n"
                           f"lookup_key_file: {lookup}\n", encoding="utf-8")

    profiles = await ProfileStore.open(db_folder / "profiles.sqlite3", load_keys(encryption, lookup),
                                       clock=lambda: NOW)
    await profiles.upsert_profiles([
        Profile(name="赵一", id_number=synthetic_id_for_index(41, "330106"),
                phones=(normalise_phone(KNOWN_NUMBER),), address=Address("330106", "文三路1号"),
                need_tags=frozenset({NeedTag.SLOW_SPEECH}), preferred_agent="agent2"),
        Profile(name="钱二", id_number=synthetic_id_for_index(42, "330106"),
                phones=(normalise_phone(SHARED_LANDLINE),), address=Address("330106", "文三路2号")),
        Profile(name="孙三", id_number=synthetic_id_for_index(43, "330106"),
                phones=(normalise_phone(SHARED_LANDLINE),), address=Address("330106", "文三路2号")),
    ])
    tickets = await TicketStore.open(db_folder / "county.db", "county-330106", "330106")
    try:
        yield Stack(tickets, profiles, TicketDesk(tickets, profiles=profiles), config_file)
    finally:
        await tickets.close()
        await profiles.close()


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    async with open_stack(tmp_path) as opened:
        yield opened


def _call(call_id: str, number: str = KNOWN_NUMBER) -> Call:
    return Call(call_id=call_id, caller=CallerId.from_raw(number), dialed="12349", channel="PJSIP/x-1",
                started_at=NOW, route="ivr/12349")


async def _pool(*agents: tuple[str, set[str]]) -> AgentPool:
    # No wrap-up, so an agent is free again for the caller's second call.
    pool = AgentPool([AgentProfile(agent_id, agent_id, agent_id, frozenset(skills)) for agent_id, skills in agents],
                     settings=AcdSettings(wrap_up_s=0))
    for agent_id, _ in agents:
        await pool.device_state_changed(agent_id, DeviceState.NOT_IN_USE)
    return pool


async def _first_call(stack: Stack, pool: AgentPool) -> str:
    """Place a call from the known caller that picks 低保 and reaches an agent; return its ticket id."""
    runner = FlowRunner(pool, stack.desk, callers=stack.desk)
    session = await runner.run(FLOW, _call("1700000000.1"), ScriptedCaller(keys=["1"]))
    await stack.desk.finish_call(session)
    assert session.ticket_id is not None
    return session.ticket_id


async def test_known_caller_needs_and_preferred_agent(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}), ("agent2", {"dibao", "general"}))
    runner = FlowRunner(pool, stack.desk, callers=stack.desk)

    session = await runner.run(FLOW, _call("1700000000.1"), ScriptedCaller(keys=["1"]))

    assert session.caller_profile is not None
    assert "需语速放缓" in session.needs
    assert session.preferred_agent == "agent2"
    # Both agents are free and equally skilled: the preferred one wins.
    assert session.agent_id == "agent2"
    assert session.path == ["welcome", "main_menu", "chose_dibao", "to_agent", "survey", "finished"]


async def test_open_ticket_skips_menu(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}), ("agent3", {"dibao", "general"}))
    first_ticket = await _first_call(stack, pool)
    first_agent = (await stack.profiles.recent_tickets(
        (await stack.profiles.lookup_by_phone(normalise_phone(KNOWN_NUMBER)))[0].profile_ref))[0].agent_id

    caller = ScriptedCaller(keys=[])
    session = await FlowRunner(pool, stack.desk, callers=stack.desk).run(FLOW, _call("1700000000.2"), caller)

    assert session.path == ["returning_welcome", "returning_agent", "survey", "finished"]
    assert session.skill == "dibao"
    assert session.preferred_agent == first_agent
    assert session.agent_id == first_agent
    assert session.fields["related_ticket_id"] == first_ticket
    assert "main_menu" not in caller.played


async def test_closed_ticket_gets_menu(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}))
    first_ticket = await _first_call(stack, pool)
    await stack.tickets.apply_action(first_ticket, "cancel", "supervisor", reason="caller_withdrew")

    session = await FlowRunner(pool, stack.desk, callers=stack.desk).run(
        FLOW, _call("1700000000.2"), ScriptedCaller(keys=["1"]))

    assert session.caller_profile is not None
    assert session.caller_profile.open_ticket is None
    assert session.path[:2] == ["welcome", "main_menu"]


async def test_shared_landline_is_unknown(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}))

    session = await FlowRunner(pool, stack.desk, callers=stack.desk).run(
        FLOW, _call("1700000000.3", SHARED_LANDLINE), ScriptedCaller(keys=["1"]))

    assert session.caller_profile is None
    assert session.path[:2] == ["welcome", "main_menu"]


async def test_unknown_caller_unchanged(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}))

    session = await FlowRunner(pool, stack.desk, callers=stack.desk).run(
        FLOW, _call("1700000000.4", "13900000077"), ScriptedCaller(keys=["1"]))

    assert session.caller_profile is None
    assert session.needs == set()
    assert session.path == ["welcome", "main_menu", "chose_dibao", "to_agent", "survey", "finished"]


async def test_returning_without_agents_gets_menu(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}))
    await _first_call(stack, pool)
    await pool.set_logged_in("agent1", False)
    empty = await _pool(("agent9", {"zhengce"}))

    session = await FlowRunner(empty, stack.desk, callers=stack.desk).run(
        FLOW, _call("1700000000.5"), ScriptedCaller(keys=["HANGUP"]))

    assert session.path[:3] == ["returning_welcome", "returning_agent", "main_menu"]


async def test_agent_screen_shows_masked_summary(stack: Stack):
    pool = await _pool(("agent2", {"dibao", "general"}))
    await _first_call(stack, pool)

    shown = await stack.profiles.agent_screen("agent2")

    assert shown is not None
    assert shown.call_id == "1700000000.1"
    id_number = synthetic_id_for_index(41, "330106")
    assert shown.summary.id_number_masked == id_number[0] + "*" * 13 + id_number[-4:]
    assert shown.summary.name_masked == "赵*"
    assert shown.summary.phones_masked == ("139****0041",)
    assert await stack.profiles.agent_screen("agent1") is None


def test_screen_command_prints_masked(tmp_path: Path):
    async def place_call() -> Stack:
        async with open_stack(tmp_path) as stack:
            await _first_call(stack, await _pool(("agent2", {"dibao", "general"})))
            return stack

    stack = asyncio.run(place_call())
    result = CliRunner().invoke(cli_main, ["profiles", "screen", "agent2", "--config", str(stack.config_file)])

    assert result.exit_code == 0, result.output
    assert "139****0041" in result.output
    assert KNOWN_NUMBER not in result.output
    assert synthetic_id_for_index(41, "330106") not in result.output
    missing = CliRunner().invoke(cli_main, ["profiles", "screen", "agent7", "--config", str(stack.config_file)])
    assert missing.exit_code == 1


async def test_call_record_number_sealed(stack: Stack):
    pool = await _pool(("agent1", {"dibao", "general"}))
    await _first_call(stack, pool)

    record = await stack.tickets.get_call("1700000000.1")

    assert record.caller_sealed
    assert KNOWN_NUMBER not in record.caller_raw
    opened = stack.profiles.unseal_number(record.caller_raw, call_id="1700000000.1", purpose="caller")
    assert opened == KNOWN_NUMBER
    assert record.caller_masked == "139****0041"


async def test_callback_number_sealed_and_hashed(stack: Stack):
    pool = await _pool(("agent1", {"zhengce"}))
    caller = ScriptedCaller(keys=["9", "2", "13900000056", "1"])

    session = await FlowRunner(pool, stack.desk, callers=stack.desk).run(
        FLOW, _call("1700000000.6", "13900000077"), caller)
    await stack.desk.finish_call(session)

    assert session.outcome is not CallOutcome.ANSWERED
    assert session.ticket_id is not None
    events = await stack.tickets.list_events(session.ticket_id)
    request = next(event for event in events if event.kind == "callback_requested")
    assert "13900000056" not in str(request.payload)
    assert request.payload["number_masked"] == "139****0056"
    assert request.payload["number_ref"] == stack.profiles.number_ref("13900000056")
    sealed = str(request.payload["number_sealed"])
    assert stack.profiles.unseal_number(sealed, call_id="1700000000.6", purpose="callback") == "13900000056"
    opening = events[0].payload
    assert opening["caller_ref"] == stack.profiles.number_ref("13900000077")
    ticket = await stack.tickets.get_ticket(session.ticket_id)
    for event in events:
        upward = build_envelope(replace(ticket, last_seq=event.seq), event)
        assert "13900000077" not in str(upward.payload)
        assert "13900000056" not in str(upward.payload)


def test_callback_number_command_audited(tmp_path: Path):
    async def request_callback() -> tuple[Stack, str | None]:
        async with open_stack(tmp_path) as stack:
            session = await FlowRunner(await _pool(("agent1", {"zhengce"})), stack.desk, callers=stack.desk).run(
                FLOW, _call("1700000000.6", "13900000077"), ScriptedCaller(keys=["9", "2", "13900000056", "1"]))
            await stack.desk.finish_call(session)
            await stack.profiles.add_operator(Operator("li-si", OperatorTier.COUNTY, "330106", OperatorRole.AGENT))
            return stack, session.ticket_id

    stack, ticket_id = asyncio.run(request_callback())
    node_config = tmp_path / "county.yaml"
    node_config.write_text(
        f"node_id: county-330106\ntier: county\nregion_code: '330106'\ndatabase: {stack.tickets.path}\n"
        "parent: {node_id: city-330100, broker: {host: 127.0.0.1, port: 1883}}\n"
        "telephony:\n  fastagi: {port: 4573}\n  ami: {port: 5038, username: hotline, secret_file: ami.secret}\n"
        "  flow: flow.yaml\n  prompt_catalog: catalog.yaml\n  prompt_sound_dir: /hotline\n  roster: roster.yaml\n",
        encoding="utf-8")
    arguments = ["profiles", "callback-number", str(ticket_id), "--config", str(stack.config_file),
                 "--node-config", str(node_config), "--operator", "li-si"]

    refused = CliRunner().invoke(cli_main, [*arguments, "--reason", "回"])
    granted = CliRunner().invoke(cli_main, [*arguments, "--reason", "按约定回拨来电人"])

    assert refused.exit_code == 1, refused.output
    assert "13900000056" not in refused.output
    assert granted.exit_code == 0, granted.output
    assert "13900000056" in granted.output
    outcomes = [(entry.action, entry.outcome) for entry in asyncio.run(_access_log(stack.config_file))]
    assert outcomes == [("callback_number", "granted"), ("callback_number", "denied")]


def test_call_start_condition_validated(tmp_path: Path):
    text = FLOW_PATH.read_text(encoding="utf-8").replace("next: returning_welcome", "next: nowhere")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text, encoding="utf-8")

    with pytest.raises(FlowError) as caught:
        load_flow(broken)

    assert any("nowhere" in issue.message and "call_start" not in issue.message or issue.line > 0
               for issue in caught.value.issues)
    assert "nowhere" in str(caught.value)


def test_empty_call_start_condition_rejected(tmp_path: Path):
    text = FLOW_PATH.read_text(encoding="utf-8").replace("when: {caller: open_ticket}", "when: {}")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text, encoding="utf-8")

    with pytest.raises(FlowError) as caught:
        load_flow(broken)

    assert "caller" in str(caught.value)


async def _access_log(config_file: Path) -> list:
    config = load_profiles_config(config_file)
    keys = load_keys(config.encryption_key_file, config.lookup_key_file)
    async with await ProfileStore.open(config.database, keys) as store:
        return await store.access_log()
