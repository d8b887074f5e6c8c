"""CLI: ``hotline tickets`` shows a node's tickets and their events for operators."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.console import Console
from rich.table import Table

from hotline.config import ConfigError, load_node_config
from storage.errors import StorageError, TicketNotFound
from storage.ticket_store import TicketStore

CHINA = ZoneInfo("Asia/Shanghai")


def _local(moment) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


async def _list(config_path: Path, limit: int) -> Table:
    config = load_node_config(config_path)
    async with await TicketStore.open(config.database, config.node_id, config.region_code) as store:
        tickets = await store.list_tickets(limit=limit)

    table = Table(title=f"节点 {config.node_id} 的工单（共 {len(tickets)} 张）")
    for column in ("工单号", "来源节点", "类别", "状态", "来电号码", "受理时间（北京时间）", "事件数"):
        table.add_column(column)
    for ticket in tickets:
        table.add_row(ticket.ticket_id, ticket.origin_node, ticket.category.label, ticket.state.label,
                      ticket.caller_masked, _local(ticket.created_at), str(ticket.last_seq))
    return table


async def _show(config_path: Path, ticket_id: str) -> Table:
    config = load_node_config(config_path)
    async with await TicketStore.open(config.database, config.node_id, config.region_code) as store:
        ticket = await store.get_ticket(ticket_id)
        events = await store.list_events(ticket_id)

    table = Table(title=f"工单 {ticket.ticket_id}（{ticket.category.label}，{ticket.state.label}）")
    for column in ("序号", "时间（北京时间）", "事件", "操作人", "内容"):
        table.add_column(column)
    for event in events:
        details = "，".join(f"{key}={value}" for key, value in (event.payload or {}).items() if value not in (None, ""))
        table.add_row(str(event.seq), _local(event.occurred_at), event.kind, event.actor, details)
    return table


@click.group(help="查看本节点的工单。")
def tickets() -> None:
    pass


@tickets.command("list", help="列出本节点保存的工单（本节点受理的和下级上报的）。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件。")
@click.option("--limit", default=200, show_default=True, type=click.IntRange(1, 100000), help="最多列出多少张。")
def list_command(config_path: Path, limit: int) -> None:
    try:
        table = asyncio.run(_list(config_path, limit))
    except (ConfigError, StorageError) as exc:
        click.echo(f"无法读取工单：{exc}", err=True)
        sys.exit(2)
    Console().print(table)


@tickets.command("show", help="显示一张工单的全部事件。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件。")
@click.argument("ticket_id")
def show_command(config_path: Path, ticket_id: str) -> None:
    try:
        table = asyncio.run(_show(config_path, ticket_id))
    except TicketNotFound:
        click.echo(f"找不到工单 {ticket_id}，请用 hotline tickets list 查看已有的工单号。", err=True)
        sys.exit(1)
    except (ConfigError, StorageError) as exc:
        click.echo(f"无法读取工单：{exc}", err=True)
        sys.exit(2)
    Console().print(table)
