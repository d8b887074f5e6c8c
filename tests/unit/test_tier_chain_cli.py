"""Unit tests for ``hotline tickets transition … escalate`` without a target and ``hotline tickets instruct``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result

from hotline.cli import main
from storage.ticket_store import TicketStore
from tickets.envelope import decode_envelope, decode_instruction
from tickets.model import TicketCategory

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
COUNTY, CITY = "county-330106", "city-330100"
COUNTY_EXTRA = (
    "parent:\n  node_id: city-330100\n  broker: {port: 18830}\n"
    "telephony:\n"
    "  fastagi: {port: 0}\n"
    "  ami: {port: 5038, username: hotline, secret_file: ami.secret}\n"
    "  flow: flows/main.yaml\n  prompt_catalog: prompts/catalog.yaml\n"
    "  prompt_sound_dir: /var/lib/asterisk/sounds/hotline\n  roster: roster.yaml\n"
)


def write_config(folder: Path, node_id: str, tier: str, region_code: str, extra: str) -> Path:
    path = folder / f"{node_id}.yaml"
    path.write_text(f"node_id: {node_id}\ntier: {tier}\nregion_code: '{region_code}'\n"
                    f"database: {folder / f'{node_id}.db'}\n{extra}", encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Undo the CLI's logging configuration, which points at the runner's temporary stderr."""
    yield
    structlog.reset_defaults()


def run(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "250"}).invoke(main, list(args))


async def open_ticket(database: Path) -> str:
    async with await TicketStore.open(database, COUNTY, "330106") as store:
        ticket = await store.open_ticket(None, TicketCategory.ERTONG, "139****0001", AT, "ivr", {})
    return ticket.ticket_id


async def copy_to_city(county_database: Path, city_database: Path) -> None:
    async with await TicketStore.open(county_database, COUNTY, "330106") as county, \
            await TicketStore.open(city_database, CITY, "330100") as city:
        for row in await county.pending_channel_outbox(None):
            await city.apply_remote_event(decode_envelope(row.envelope))


def test_escalate_without_target_names_parent(tmp_path: Path) -> None:
    config = write_config(tmp_path, COUNTY, "county", "330106", COUNTY_EXTRA)
    ticket_id = asyncio.run(open_ticket(tmp_path / f"{COUNTY}.db"))

    result = run("tickets", "transition", "--config", str(config), ticket_id, "escalate", "--operator", "a1",
                 "--note", "需市级审批")
    assert result.exit_code == 0, result.output
    assert f"上级节点 {CITY} 收到后会新建关联工单" in result.output

    async def last_payload() -> dict[str, object]:
        async with await TicketStore.open(tmp_path / f"{COUNTY}.db", COUNTY, "330106") as store:
            return (await store.list_events(ticket_id))[-1].payload

    assert asyncio.run(last_payload()) == {"escalate_to_node_id": CITY}


def test_instruct_queues_instruction(tmp_path: Path) -> None:
    city_config = write_config(tmp_path, CITY, "city", "330100", "broker: {port: 18830}\n")
    ticket_id = asyncio.run(open_ticket(tmp_path / f"{COUNTY}.db"))
    asyncio.run(copy_to_city(tmp_path / f"{COUNTY}.db", tmp_path / f"{CITY}.db"))

    result = run("tickets", "instruct", "--config", str(city_config), ticket_id, "--to", COUNTY,
                 "--kind", "supervise", "--operator", "c01", "--office", "杭州市民政局", "--note", "请今日内反馈")
    assert result.exit_code == 0, result.output
    assert "「督办」指令" in result.output

    async def queued() -> list[bytes]:
        async with await TicketStore.open(tmp_path / f"{CITY}.db", CITY, "330100") as store:
            return [row.envelope for row in await store.pending_instructions()]

    (raw,) = asyncio.run(queued())
    instruction = decode_instruction(raw)
    assert (instruction.kind, instruction.ticket_id, instruction.child_node) == ("supervise", ticket_id, COUNTY)
    assert instruction.office == "杭州市民政局"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--to", "county-330108", "--kind", "supervise", "--note", "x"], "请把 --to 改为 county-330106"),
        (["--to", COUNTY, "--kind", "supervise"], "必须填写说明（--note）"),
        (["--to", COUNTY, "--kind", "assign"], "必须填写承办部门（--office）"),
    ],
    ids=["wrong child", "no note", "no office"],
)
def test_instruct_mistakes_rejected(tmp_path: Path, options: list[str], message: str) -> None:
    city_config = write_config(tmp_path, CITY, "city", "330100", "broker: {port: 18830}\n")
    ticket_id = asyncio.run(open_ticket(tmp_path / f"{COUNTY}.db"))
    asyncio.run(copy_to_city(tmp_path / f"{COUNTY}.db", tmp_path / f"{CITY}.db"))

    result = run("tickets", "instruct", "--config", str(city_config), ticket_id, "--operator", "c01", *options)
    assert result.exit_code == 1
    assert message in result.output


def test_instruct_unknown_ticket(tmp_path: Path) -> None:
    city_config = write_config(tmp_path, CITY, "city", "330100", "broker: {port: 18830}\n")
    result = run("tickets", "instruct", "--config", str(city_config), "330106-20261204-0042", "--to", COUNTY,
                 "--kind", "supervise", "--operator", "c01", "--note", "x")
    assert result.exit_code == 1
    assert "本节点没有工单 330106-20261204-0042" in result.output
