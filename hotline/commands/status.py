"""CLI: ``hotline status``, the supervisor's live view of a county node's queue and agents.

It reads what the running controller publishes to the node's ACD store every second
(agents by state, waiting calls) and today's queue results from the same store, so it
works from any shell on the node's host without reaching the controller itself.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
from rich import box
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from acd.pool import PAUSE_REASONS, STATE_LABELS, AgentState
from acd.status import (
    AcdStatus,
    DailyFigures,
    QueueCallResult,
    agents_by_state,
    china_day_bounds,
    daily_figures,
    skill_queues,
)
from hotline.commands.acd import NODE_STALE_S, _CommandFailed
from hotline.commands.console import operator_console
from hotline.config import ConfigError, load_node_config
from storage.acd_store import AcdStore, acd_path
from storage.errors import StorageError
from tickets.model import CHINA_TZ

REFRESH_S = 1.0
# Exit code of ``status --once`` when the controller's status is stale or missing, so a monitor can alarm.
STALE_EXIT_CODE = 3


def _table(title: str, *columns: str) -> Table:
    # Tables without outer borders keep the whole view within a 24-line terminal.
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
    for column in columns:
        table.add_column(column)
    return table


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def _local(moment: datetime) -> str:
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")


def render_status(status: AcdStatus | None, results: list[QueueCallResult], now: datetime) -> Group:
    """Build the Chinese status view for ``now`` (UTC) from the published status and today's results."""
    parts: list[object] = []
    if status is None:
        parts.append(Text("节点控制程序还没有发布过坐席状态：请确认节点已用 hotline run 启动。", style="bold red"))
    else:
        age_s = max((now - status.published_at).total_seconds(), 0.0)
        parts.append(Text(f"节点 {status.node_id}　北京时间 {_local(now)}　状态发布于 {_local(status.published_at)[11:]}"))
        if age_s > NODE_STALE_S:
            parts.append(Text(f"警告：控制程序已 {age_s:.0f} 秒没有发布状态，可能已停止；下面是最后一次发布的内容。",
                              style="bold red"))
        parts.append(_queue_table(status, now))
        parts.append(_agent_table(status))
    parts.append(_figures_table(daily_figures(results, now)))
    return Group(*parts)


def _queue_table(status: AcdStatus, now: datetime) -> Table:
    table = _table("排队来电（按技能组）", "技能组", "排队数", "最长等待（秒）")
    queues = skill_queues(status, now)
    for queue in queues:
        table.add_row(queue.skill, str(queue.waiting), f"{queue.longest_wait_s:.0f}")
    if not queues:
        table.add_row("（无）", "0", "—")
    return table


def _agent_table(status: AcdStatus) -> Table:
    table = _table(f"坐席状态（共 {len(status.agents)} 名）", "状态", "人数", "坐席")
    counts = agents_by_state(status)
    for state in AgentState:
        members = []
        for agent in status.agents:
            if agent.state is not state:
                continue
            detail = agent.agent_id
            if state is AgentState.PAUSED and agent.pause_reason:
                detail += f"（{PAUSE_REASONS.get(agent.pause_reason, agent.pause_reason)}）"
            elif agent.call_id:
                detail += f"（来电 {agent.call_id}）"
            members.append(detail)
        table.add_row(STATE_LABELS[state], str(counts[state]), "、".join(members) or "—")
    return table


def _figures_table(figures: DailyFigures) -> Table:
    table = _table(
        f"今日（{figures.day.isoformat()}，北京时间）", "进入排队", "接通", "放弃",
        f"{figures.short_abandon_s:g}秒内放弃", "无坐席", "接通率", f"{figures.threshold_s:g}秒服务水平", "放弃率",
    )
    table.add_row(
        str(figures.offered), str(figures.answered), str(figures.abandoned), str(figures.abandoned_short),
        str(figures.no_agent), _percent(figures.answer_rate), _percent(figures.service_level),
        _percent(figures.abandon_rate),
    )
    return table


async def _read(store: AcdStore, now: datetime) -> tuple[AcdStatus | None, list[QueueCallResult]]:
    _, start, end = china_day_bounds(now)
    return await store.read_status(), await store.queue_calls_between(start, end)


def is_stale(status: AcdStatus | None, now: datetime) -> bool:
    """Return True when the controller never published a status or its last one is older than NODE_STALE_S."""
    return status is None or (now - status.published_at).total_seconds() > NODE_STALE_S


async def _show(path: Path, once: bool, clock: Callable[[], datetime]) -> bool:
    """Print the view once, or refresh it until interrupted; return True when the printed status was stale."""
    async with await AcdStore.open(path) as store:
        now = clock()
        published, results = await _read(store, now)
        view = render_status(published, results, now)
        console = operator_console()
        if once:
            console.print(view)
            return is_stale(published, now)

        with Live(view, console=console, auto_refresh=False) as live:
            while True:
                started = time.monotonic()
                now = clock()
                live.update(render_status(*await _read(store, now), now), refresh=True)
                await asyncio.sleep(max(REFRESH_S - (time.monotonic() - started), 0.05))


@click.command(
    help="班长看板：各技能组排队数和最长等待、各状态坐席，以及今日接通率、15 秒服务水平和放弃率，每秒刷新。"
    f"退出码：0 正常；1 配置或坐席记录库无法使用；{STALE_EXIT_CODE} 仅用于 --once，"
    f"表示控制程序从未发布状态或已超过 {NODE_STALE_S:g} 秒没有发布（可能已停止）。",
)
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
@click.option("--once", is_flag=True,
              help=f"只输出一次就退出（供脚本使用），状态过时或缺失时退出码为 {STALE_EXIT_CODE}；不加时每秒刷新，按 Ctrl-C 退出")
def status(config_path: Path, once: bool) -> None:
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        raise _CommandFailed(str(exc)) from None
    if config.telephony is None:
        raise _CommandFailed(f"配置文件 {config_path} 没有 telephony 段，此节点不接电话，没有排队和坐席")

    path = acd_path(config.database)
    if not path.is_file():
        raise _CommandFailed(f"找不到坐席记录库 {path}：节点从未启动过，或 --config 指错了节点")
    try:
        stale = asyncio.run(_show(path, once, lambda: datetime.now(UTC)))
    except KeyboardInterrupt:
        return
    except StorageError as exc:
        raise _CommandFailed(f"读取坐席记录库失败：{exc}") from None
    if once and stale:
        sys.exit(STALE_EXIT_CODE)
