"""Unit tests for ``hotline tickets transition``, ``show`` and ``actions`` through click's CliRunner."""

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
from tickets.envelope import decode_envelope
from tickets.model import TicketCategory, TicketState

AT = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
COUNTY = "county-330106"


def write_config(folder: Path, node_id: str, tier: str, region_code: str) -> Path:
    database = folder / f"{node_id}.db"
    if tier == "county":
        extra = (
            "parent:\n  node_id: city-330100\n  broker: {port: 18830}\n"
            "telephony:\n"
            "  fastagi: {port: 0}\n"
            f"  ami: {{port: 5038, username: hotline, secret_file: {folder / 'ami.secret'}}}\n"
            "  flow: flows/main.yaml\n  prompt_catalog: prompts/catalog.yaml\n"
            "  prompt_sound_dir: /var/lib/asterisk/sounds/hotline\n  roster: roster.yaml\n"
        )
    else:
        extra = "broker: {port: 18830}\n"
    path = folder / f"{node_id}.yaml"
    path.write_text(
        f"node_id: {node_id}\ntier: {tier}\nregion_code: '{region_code}'\ndatabase: {database}\n{extra}",
        encoding="utf-8",
    )
    return path


async def open_tickets(database: Path, count: int) -> list[str]:
    async with await TicketStore.open(database, COUNTY, "330106") as store:
        tickets = [await store.open_ticket(None, TicketCategory.LINSHI, "139****0001", AT, "ivr", {})
                   for _ in range(count)]
    return [ticket.ticket_id for ticket in tickets]


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Undo the CLI's logging configuration, which points at the runner's temporary stderr."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def county(tmp_path: Path) -> tuple[Path, list[str]]:
    config = write_config(tmp_path, COUNTY, "county", "330106")
    ticket_ids = asyncio.run(open_tickets(tmp_path / f"{COUNTY}.db", 2))
    return config, ticket_ids


def run(*args: str) -> Result:
    # rich sizes tables from COLUMNS when stdout is not a terminal.
    return CliRunner(env={"COLUMNS": "250"}).invoke(main, list(args))


def transition(config: Path, ticket_id: str, action: str, *options: str) -> Result:
    return run("tickets", "transition", "--config", str(config), ticket_id, action, "--operator", "agent-1001",
               *options)


async def stored_state(config: Path, ticket_id: str) -> tuple[TicketState, int]:
    async with await TicketStore.open(config.parent / f"{COUNTY}.db", COUNTY, "330106") as store:
        ticket = await store.get_ticket(ticket_id)
    return ticket.state, ticket.last_seq


class TestTransition:
    def test_dispatch_prints_new_state(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "dispatch", "--office", "拱墅区民政局")
        assert result.exit_code == 0, result.output
        assert f"工单 {ticket_id}：受理 → 派单" in result.stdout
        assert "第 2 号事件" in result.stdout
        assert "操作人 agent-1001" in result.stdout
        assert asyncio.run(stored_state(config, ticket_id)) == (TicketState.DISPATCHED, 2)

    def test_return_with_reason_and_note(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        assert transition(config, ticket_id, "dispatch").exit_code == 0
        result = transition(config, ticket_id, "return", "--reason", "wrong_region", "--note", "应由西湖区办理")
        assert result.exit_code == 0, result.output
        assert "派单 → 退回" in result.stdout

    def test_overlay_keeps_state(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "remind", "--note", "来电人再次来电")
        assert result.exit_code == 0, result.output
        assert "已记录催办，状态仍为「受理」" in result.stdout
        assert asyncio.run(stored_state(config, ticket_id)) == (TicketState.NEW, 2)

    def test_action_not_allowed(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "close")
        assert result.exit_code == 1
        assert result.stdout == ""
        assert f"工单 {ticket_id} 当前状态为「受理」，不能执行「归档」" in result.stderr
        assert "dispatch（派单）" in result.stderr
        assert asyncio.run(stored_state(config, ticket_id)) == (TicketState.NEW, 1)

    def test_missing_reason(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "cancel")
        assert result.exit_code == 1
        assert "「撤销」必须提供原因代码（--reason）" in result.stderr
        assert "caller_withdrew = 来电人撤回诉求" in result.stderr

    def test_invalid_reason(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "cancel", "--reason", "whatever")
        assert result.exit_code == 1
        assert "原因代码 'whatever' 无效" in result.stderr

    def test_unknown_action(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "approve")
        assert result.exit_code == 1
        assert "未知操作 'approve'" in result.stderr

    def test_unknown_ticket(self, county: tuple[Path, list[str]]) -> None:
        config, _ = county
        result = transition(config, "330106-20261204-0099", "dispatch")
        assert result.exit_code == 1
        assert "找不到工单 330106-20261204-0099" in result.stderr

    def test_merge_into_missing_target(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = transition(config, ticket_id, "merge", "--target", "330106-20261204-0077")
        assert result.exit_code == 1
        assert "找不到工单 330106-20261204-0077" in result.stderr

    def test_merge_and_show_link(self, county: tuple[Path, list[str]]) -> None:
        config, (duplicate, original) = county
        result = transition(config, duplicate, "merge", "--target", original)
        assert result.exit_code == 0, result.output
        assert "受理 → 并单" in result.stdout

        shown = run("tickets", "show", "--config", str(config), original)
        assert shown.exit_code == 0, shown.output
        assert f"关联：工单 {duplicate} 并入本工单" in shown.stdout
        assert "重复工单并入" in shown.stdout

    def test_blank_operator(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        result = run("tickets", "transition", "--config", str(config), ticket_id, "dispatch", "--operator", " ")
        assert result.exit_code == 1
        assert "--operator 不能为空" in result.stderr

    def test_missing_config(self, tmp_path: Path) -> None:
        result = transition(tmp_path / "none.yaml", "330106-20261204-0001", "dispatch")
        assert result.exit_code == 2
        assert "找不到配置文件" in result.stderr

    def test_copy_at_parent_cannot_be_changed(self, county: tuple[Path, list[str]], tmp_path: Path) -> None:
        _, (ticket_id, _) = county
        city_config = write_config(tmp_path, "city-330100", "city", "330100")

        async def copy_to_city() -> None:
            async with await TicketStore.open(tmp_path / f"{COUNTY}.db", COUNTY, "330106") as store:
                rows = await store.pending_outbox()
            async with await TicketStore.open(tmp_path / "city-330100.db", "city-330100", "330100") as city:
                for row in rows:
                    await city.apply_remote_event(decode_envelope(row.envelope))

        asyncio.run(copy_to_city())
        result = transition(city_config, ticket_id, "dispatch")
        assert result.exit_code == 1
        assert "不是本节点受理的" in result.stderr

        shown = run("tickets", "show", "--config", str(city_config), ticket_id)
        assert shown.exit_code == 0, shown.output
        assert f"本工单由节点 {COUNTY} 受理" in shown.stdout


class TestShow:
    def test_trail_with_chinese_labels(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        for action, options in [
            ("dispatch", ()), ("return", ("--reason", "not_our_duty", "--note", "应由养老服务科办理")),
            ("redispatch", ()), ("accept", ("--office", "养老服务科")), ("start", ()),
            ("resolve", ("--note", "已安排上门评估")),
        ]:
            assert transition(config, ticket_id, action, *options).exit_code == 0

        result = run("tickets", "show", "--config", str(config), ticket_id)
        assert result.exit_code == 0, result.output
        output = result.stdout
        assert f"工单 {ticket_id}（临时救助，当前状态：办结）" in output
        for fragment in ("受理", "派单", "受理 → 派单", "派单 → 退回", "退回 → 派单", "签收 → 办理中",
                         "办理中 → 办结", "不属于本单位职责", "应由养老服务科办理", "县级 养老服务科",
                         "已安排上门评估", "2026-12-04 10:00:00"):
            assert fragment in output, fragment
        assert "可执行的操作：start_callback（开始回访）" in output

    def test_terminal_state(self, county: tuple[Path, list[str]]) -> None:
        config, (ticket_id, _) = county
        assert transition(config, ticket_id, "cancel", "--reason", "caller_withdrew").exit_code == 0
        result = run("tickets", "show", "--config", str(config), ticket_id)
        assert "「撤销」是终结状态" in result.stdout
        assert "来电人撤回诉求" in result.stdout

    def test_unknown_ticket(self, county: tuple[Path, list[str]]) -> None:
        config, _ = county
        result = run("tickets", "show", "--config", str(config), "330106-20261204-0099")
        assert result.exit_code == 1
        assert "找不到工单 330106-20261204-0099" in result.stderr

    def test_list_still_works(self, county: tuple[Path, list[str]]) -> None:
        config, (first, second) = county
        result = run("tickets", "list", "--config", str(config))
        assert result.exit_code == 0, result.output
        assert first in result.stdout
        assert second in result.stdout
        assert "共 2 张" in result.stdout


class TestActions:
    def test_lists_actions_and_reason_codes(self) -> None:
        result = run("tickets", "actions")
        assert result.exit_code == 0, result.output
        for fragment in ("answer_directly", "直接答复", "状态不变", "not_our_duty", "不属于本单位职责",
                         "caller_withdrew", "关联工单号（--target）"):
            assert fragment in result.stdout, fragment
