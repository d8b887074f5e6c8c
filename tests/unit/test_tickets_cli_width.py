"""``hotline tickets list`` and ``show`` in narrow consoles, filters and order of ``list``.

Tickets carry realistic synthetic ids (330106-20261205-0001, call ids like 1796457879.10). The
tables are printed by rich consoles 100 and 80 columns wide. Every id and time must appear whole,
no line may be wider than the console, and no cell may be cut with "…".
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner, Result
from rich.console import Console

from hotline.cli import main
from hotline.commands.console import PIPE_WIDTH, output_width
from hotline.commands.tickets import ListFilter, TicketPage, _show, render_ticket_list
from storage.ticket_store import TicketStore
from tests.unit.test_ticket_lifecycle_cli import write_config
from tickets.model import TicketCategory, TicketState

COUNTY = "county-330106"
CITY = "city-330100"
# 2026-12-04 09:00 Beijing time; ticket n is opened n hours later.
START = datetime(2026, 12, 4, 1, 0, tzinfo=UTC)
CATEGORIES = [TicketCategory.DIBAO, TicketCategory.LIULANG, TicketCategory.LINSHI, TicketCategory.DIBAO,
              TicketCategory.YANGLAO]


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


async def _seed(database: Path) -> list[str]:
    """Open five tickets as the ticket desk does after an answered call, then move some along."""
    ids = []
    async with await TicketStore.open(database, COUNTY, "330106") as store:
        for number, category in enumerate(CATEGORIES, start=1):
            opened = START + timedelta(hours=number * 7)
            call_id = f"17964578{number:02d}.{number + 9}"
            ticket = await store.open_ticket(call_id, category, f"139****00{number:02d}", opened, "ivr", {
                "call_id": call_id, "channel": "phone", "skill": category.value, "opened_because": "category_chosen",
                "flow_id": "12349", "flow_version": "3f2a9c41d0e8b7a6",
            })
            await store.append_event(ticket.ticket_id, "agent_answered", "ivr", {
                "call_id": call_id, "agent_id": "agent-1001", "answered_at": (opened + timedelta(seconds=14)).isoformat(),
            }, occurred_at=opened + timedelta(seconds=14))
            await store.append_event(ticket.ticket_id, "voice_message", "ivr", {
                "file_name": f"voicemail-{call_id}.wav", "duration_seconds": 18.5,
            }, occurred_at=opened + timedelta(seconds=201))
            await store.add_attachment(ticket.ticket_id, f"RIFF {call_id}".encode(), "audio/x-wav", "agent-1001",
                                       occurred_at=opened + timedelta(seconds=240))
            ids.append(ticket.ticket_id)
        dispatched_at = START + timedelta(days=2)
        await store.apply_action(ids[1], "dispatch", "agent-1001", occurred_at=dispatched_at,
                                 note="请救助站当天上门，来电人说明了所在街道和桥洞的位置")
        await store.apply_action(ids[3], "dispatch", "agent-1001", occurred_at=dispatched_at)
    return ids


@pytest.fixture
def county(tmp_path: Path) -> tuple[Path, list[str]]:
    config = write_config(tmp_path, COUNTY, "county", "330106")
    return config, asyncio.run(_seed(tmp_path / f"{COUNTY}.db"))


def run(columns: int, *args: str) -> Result:
    return CliRunner(env={"COLUMNS": str(columns)}).invoke(main, list(args))


def _assert_fits(output: str, width: int, whole: list[str]) -> None:
    console = Console(width=width)
    for line in output.splitlines():
        assert console.measure(line).maximum <= width, line
    assert "…" not in output
    for text in whole:
        assert text in output, text


@pytest.mark.parametrize("width", [100, 80])
def test_list_ids_whole(county: tuple[Path, list[str]], width: int) -> None:
    config, ids = county
    result = run(width, "tickets", "list", "--config", str(config))
    assert result.exit_code == 0, result.output
    _assert_fits(result.stdout, width, [*ids, "2026-12-04 16:00:00", "2026-12-05 20:00:00"])


@pytest.mark.parametrize("width", [100, 80])
def test_show_ids_whole(county: tuple[Path, list[str]], width: int) -> None:
    config, ids = county
    result = run(width, "tickets", "show", "--config", str(config), ids[1])
    assert result.exit_code == 0, result.output
    _assert_fits(result.stdout, width, [ids[1], "1796457802.11", "agent-1001", "2026-12-04 23:00:14",
                                        "voicemail-1796457802.11.wav", "audio/x-wav", "accept（签收）",
                                        "supervise（督办）", "来电者选择了业务类别"])


@pytest.mark.parametrize("width", [100, 80])
def test_parent_list_keeps_origin(tmp_path: Path, width: int) -> None:
    ids = asyncio.run(_seed(tmp_path / "county.db"))
    page = TicketPage(CITY, [], 0, ListFilter())

    async def read() -> TicketPage:
        async with await TicketStore.open(tmp_path / "county.db", COUNTY, "330106") as store:
            return TicketPage(CITY, await store.list_tickets(newest_first=True), await store.count_tickets(), page.filters)

    console = Console(width=width, file=io.StringIO())
    console.print(render_ticket_list(asyncio.run(read()), width))
    output = console.file.getvalue()
    _assert_fits(output, width, [*ids, COUNTY])


def test_list_newest_first_with_total(county: tuple[Path, list[str]]) -> None:
    config, ids = county
    result = run(250, "tickets", "list", "--config", str(config), "--limit", "2")
    assert result.exit_code == 0, result.output
    assert "显示最近 2 张，共 5 张" in result.stdout
    assert result.stdout.index(ids[4]) < result.stdout.index(ids[3])
    for older in ids[:3]:
        assert older not in result.stdout


def test_list_filter_by_state(county: tuple[Path, list[str]]) -> None:
    config, ids = county
    for value in ("派单", "dispatched", "DISPATCHED", "派单,办理中"):
        result = run(250, "tickets", "list", "--config", str(config), "--state", value)
        assert result.exit_code == 0, result.output
        assert [ticket for ticket in ids if ticket in result.stdout] == [ids[1], ids[3]], value
        assert "符合条件的共 2 张" in result.stdout


def test_list_repeated_state(county: tuple[Path, list[str]]) -> None:
    config, ids = county
    result = run(250, "tickets", "list", "--config", str(config), "--state", "受理", "--state", "dispatched")
    assert result.exit_code == 0, result.output
    assert "共 5 张" in result.stdout
    for ticket_id in ids:
        assert ticket_id in result.stdout


def test_list_unknown_state(county: tuple[Path, list[str]]) -> None:
    config, _ = county
    result = run(80, "tickets", "list", "--config", str(config), "--state", "已派单")
    assert result.exit_code == 2
    assert "状态“已派单”不认识" in result.stderr
    assert "派单 dispatched" in result.stderr
    assert "Error" not in result.stderr
    assert max(Console(width=300).measure(line).maximum for line in result.stderr.splitlines()) <= 80


def test_list_filter_by_category(county: tuple[Path, list[str]]) -> None:
    config, ids = county
    for value in ("低保", "dibao"):
        result = run(250, "tickets", "list", "--config", str(config), "--category", value)
        assert result.exit_code == 0, result.output
        assert [ticket for ticket in ids if ticket in result.stdout] == [ids[0], ids[3]], value
    bad = run(250, "tickets", "list", "--config", str(config), "--category", "救助")
    assert bad.exit_code == 2
    assert "类别“救助”不认识" in bad.stderr
    assert "低保 dibao" in bad.stderr


def test_list_filter_since_beijing_date(county: tuple[Path, list[str]]) -> None:
    # Ticket 3 opens at 2026-12-05 06:00 Beijing time (12-04 22:00 UTC), so a UTC date would drop it.
    config, ids = county
    result = run(250, "tickets", "list", "--config", str(config), "--since", "2026-12-05")
    assert result.exit_code == 0, result.output
    assert [ticket for ticket in ids if ticket in result.stdout] == ids[2:]
    assert "2026-12-05 起受理" in result.stdout
    bad = run(250, "tickets", "list", "--config", str(config), "--since", "12/05")
    assert bad.exit_code == 2
    assert "日期“12/05”格式不对" in bad.stderr


def test_list_filter_combined_empty(county: tuple[Path, list[str]]) -> None:
    config, _ = county
    result = run(250, "tickets", "list", "--config", str(config), "--state", "办结", "--category", "低保")
    assert result.exit_code == 0, result.output
    assert "符合条件的共 0 张" in result.stdout


def test_show_keeps_value_whole(county: tuple[Path, list[str]]) -> None:
    # At 80 columns the voice message item is wider than the detail column, so its value moves to its own line.
    config, ids = county
    output = asyncio.run(_show(config, ids[1], 80))
    console = Console(width=80, file=io.StringIO())
    for item in output:
        console.print(item)
    lines = console.file.getvalue().splitlines()
    assert any(line.rstrip().endswith("voicemail-1796457802.11.wav") for line in lines)


class TestOutputWidth:
    def test_columns_respected(self) -> None:
        assert output_width({"COLUMNS": "100"}) == 100

    def test_default_without_columns(self) -> None:
        assert output_width({}) == PIPE_WIDTH

    @pytest.mark.parametrize("value", ["", "0", "-5", "wide", "100x"])
    def test_invalid_columns_ignored(self, value: str) -> None:
        assert output_width({"COLUMNS": value}) == PIPE_WIDTH

    def test_piped_command_uses_columns(self, county: tuple[Path, list[str]]) -> None:
        config, ids = county
        result = run(100, "tickets", "show", "--config", str(config), ids[1])
        widest = max(Console(width=300).measure(line).maximum for line in result.stdout.splitlines())
        assert widest <= 100
        assert widest > 80


async def test_store_newest_first_by_time(tmp_path: Path) -> None:
    # The second id is created with an earlier time, so time order and reverse id order differ,
    # as at a parent node where ids from several regions arrive.
    async with await TicketStore.open(tmp_path / "a.db", COUNTY, "330106") as store:
        late = await store.open_ticket(None, TicketCategory.LINSHI, "139****0001", START + timedelta(hours=1), "ivr")
        early = await store.open_ticket(None, TicketCategory.DIBAO, "139****0002", START, "ivr")
        latest = await store.open_ticket(None, TicketCategory.OTHER, "139****0003", START + timedelta(hours=3), "ivr")
        await store.apply_action(late.ticket_id, "dispatch", "agent-1001", occurred_at=START + timedelta(hours=2))

        newest = await store.list_tickets(newest_first=True)
        by_id = await store.list_tickets()
        dispatched = await store.list_tickets(states=[TicketState.DISPATCHED])
        none = await store.list_tickets(states=[])
        since = await store.count_tickets(created_since=START + timedelta(hours=1))
        after = await store.count_tickets(created_since=START + timedelta(hours=1, seconds=1))
        dibao = await store.count_tickets(category=TicketCategory.DIBAO)

    assert early.ticket_id > late.ticket_id
    assert [ticket.ticket_id for ticket in newest] == [latest.ticket_id, late.ticket_id, early.ticket_id]
    assert [ticket.ticket_id for ticket in by_id] == [late.ticket_id, early.ticket_id, latest.ticket_id]
    assert [ticket.ticket_id for ticket in dispatched] == [late.ticket_id]
    assert none == []
    assert since == 2
    assert after == 1
    assert dibao == 1
