"""CLI: ``hotline acd`` shows a node's agent roster and explains routing decisions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.table import Table

from acd.decisions import describe_decision
from acd.pool import PAUSE_REASONS, STATE_LABELS, AgentState
from acd.roster import RosterError, load_roster
from hotline.commands.console import operator_console
from hotline.config import ConfigError, NodeConfig, load_node_config
from storage.acd_store import AcdStore, acd_path
from storage.errors import StorageError
from tickets.model import CHINA_TZ

_TIER_LABELS = {"ministry": "部", "province": "省", "city": "市", "county": "县"}
_STATE_BY_VALUE = {state.value: STATE_LABELS[state] for state in AgentState}


class _CommandFailed(click.ClickException):
    """An operator-facing failure printed as one Chinese line."""

    def show(self, file=None) -> None:
        click.echo(f"错误：{self.format_message()}", err=True)


def _config(path: Path) -> NodeConfig:
    try:
        return load_node_config(path)
    except ConfigError as exc:
        raise _CommandFailed(str(exc)) from None


@click.group(help="坐席名单、坐席状态记录和来电分配原因。")
def acd() -> None:
    pass


@acd.command(help="列出节点坐席名单及技能、语言、能力和培训。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
def agents(config_path: Path) -> None:
    config = _config(config_path)
    if config.telephony is None:
        raise _CommandFailed(f"配置文件 {config_path} 没有 telephony 段，此节点不接电话，没有坐席名单")
    try:
        roster = load_roster(config.telephony.roster)
    except RosterError as exc:
        raise _CommandFailed(str(exc)) from None

    table = Table(title=f"坐席名单（{config.telephony.roster}，共 {len(roster)} 名）")
    for column in ("工号", "姓名", "话机", "层级/地区", "技能（熟练度）", "语言", "能力", "培训"):
        table.add_column(column)
    for agent in roster:
        skills = "、".join(f"{skill}:{agent.level(skill)}" for skill in sorted(agent.skills))
        where = "/".join(filter(None, (_TIER_LABELS.get(agent.tier or "", ""), agent.region_code or ""))) or "—"
        table.add_row(
            agent.agent_id, agent.name, agent.endpoint, where, skills,
            "、".join(sorted(agent.languages)) or "—",
            "视频" if "video" in agent.capabilities else "—",
            "老年人服务" if "elderly_care" in agent.training else "—",
        )
    operator_console().print(table)


async def _read_decisions(database: Path, call_id: str):
    path = acd_path(database)
    if not path.is_file():
        raise _CommandFailed(f"找不到坐席记录库 {path}：节点还没有接过电话，或 --config 指错了节点")
    async with await AcdStore.open(path) as store:
        return await store.decisions_for(call_id)


@acd.command(help="说明某个来电为什么分给了某名坐席（或为什么没分到）。")
@click.argument("call_id")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
def explain(call_id: str, config_path: Path) -> None:
    config = _config(config_path)
    try:
        decisions = asyncio.run(_read_decisions(config.database, call_id))
    except StorageError as exc:
        raise _CommandFailed(f"读取坐席记录库失败：{exc}") from None
    if not decisions:
        raise _CommandFailed(f"没有来电 {call_id} 的分配记录：请核对来电编号（见工单或通话记录）")

    click.echo(f"来电 {call_id} 共 {len(decisions)} 次分配决定：")
    for decision in decisions:
        click.echo("")
        click.echo("\n".join(describe_decision(decision)))


async def _read_events(database: Path, agent_id: str, limit: int):
    path = acd_path(database)
    if not path.is_file():
        raise _CommandFailed(f"找不到坐席记录库 {path}：节点还没有接过电话，或 --config 指错了节点")
    async with await AcdStore.open(path) as store:
        return await store.events_for(agent_id, limit=limit)


@acd.command(help="列出某名坐席最近的状态变化（北京时间）。")
@click.argument("agent_id")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="最多显示几条")
def events(agent_id: str, config_path: Path, limit: int) -> None:
    config = _config(config_path)
    try:
        rows = asyncio.run(_read_events(config.database, agent_id, limit))
    except StorageError as exc:
        raise _CommandFailed(f"读取坐席记录库失败：{exc}") from None
    if not rows:
        raise _CommandFailed(f"没有坐席 {agent_id} 的状态记录：请核对工号（hotline acd agents 可列出全部坐席）")

    table = Table(title=f"坐席 {agent_id} 的状态变化")
    for column in ("时间", "从", "到", "原因", "来电", "暂停原因"):
        table.add_column(column)
    for event in rows:
        table.add_row(
            event.at.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S"),
            _STATE_BY_VALUE.get(event.previous, event.previous), _STATE_BY_VALUE.get(event.state, event.state),
            event.reason, event.call_id or "—", PAUSE_REASONS.get(event.pause_reason or "", "—"),
        )
    operator_console().print(table)
