"""CLI: ``hotline acd`` shows a node's agent roster, explains routing decisions and changes agents' states.

``login``, ``logout``, ``pause`` and ``unpause`` cannot reach the running controller's
memory. They queue the command in the node's ACD store (table ``agent_command``); the
controller takes it within about a second, applies it like a phone feature code and
writes the result back, which the command prints.
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from acd.agent_commands import AgentAction, AgentCommand
from acd.decisions import describe_decision
from acd.erlang import agents_needed
from acd.pool import PAUSE_REASONS, STATE_LABELS, AgentProfile, AgentState
from acd.roster import RosterError, load_roster
from acd.simulator import ServiceTarget, SimulationResult, TrafficError, load_traffic, simulate
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


@click.group(help="坐席名单、坐席登录/退出/暂停、坐席状态记录和来电分配原因。")
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


# Chinese names of the reasons the pool records with each state change. A reason reads
# "kind", "kind:detail" or either with "/source" (phone or cli) appended.
_REASON_LABELS = {
    "reserved": "分配来电", "device_ringing": "话机振铃", "device_in_use": "话机接通", "connected": "已接通",
    "reservation_cancelled": "取消预留", "reservation_expired": "预留超时自动释放", "wrap_up_done": "话后整理结束",
    "login": "登录", "logout": "退出", "pause": "暂停", "unpause": "示闲", "release": "释放",
}
_RELEASE_LABELS = {
    "dial_returned": "转接结束", "queue_callback": "排队回电结束", "hangup": "来电挂机",
}
_SOURCE_LABELS = {"phone": "话机功能码", "cli": "命令行"}


def event_reason_label(reason: str) -> str:
    """Return the Chinese wording of a state event's reason; unknown parts are shown as stored."""
    text, _, source = reason.partition("/")
    kind, _, detail = text.partition(":")
    label = _REASON_LABELS.get(kind, kind)
    if detail:
        details = PAUSE_REASONS if kind == "pause" else _RELEASE_LABELS
        label += f"（{details.get(detail, detail)}）"
    if source:
        label += f"，来自{_SOURCE_LABELS.get(source, source)}"
    return label


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
            event_reason_label(event.reason), event.call_id or "—", PAUSE_REASONS.get(event.pause_reason or "", "—"),
        )
    operator_console().print(table)


# --- agent commands for a running node ------------------------------------------------------

# A node that published no status for this long is taken as not running.
NODE_STALE_S = 5.0
# How long the CLI waits for the running node to apply a command.
COMMAND_WAIT_S = 5.0
_COMMAND_POLL_S = 0.1
# Command statuses before the controller has written a result.
_OPEN_STATUSES = ("pending", "taken")
# Pause reasons an operator may give on the CLI; ``login`` and ``no_answer`` are set by
# the system.
CLI_PAUSE_REASONS = tuple(code for code in PAUSE_REASONS if code not in ("login", "no_answer"))


async def _send_command(database: Path, agent_id: str, command: AgentCommand) -> tuple[str, str]:
    """Queue ``command`` for the running controller and wait for its result.

    The controller takes queued commands from the ACD store within about a second. A
    command it has not taken after ``COMMAND_WAIT_S`` is withdrawn, so it can never apply
    later by surprise.
    """
    path = acd_path(database)
    if not path.is_file():
        raise _CommandFailed(f"找不到坐席记录库 {path}：节点从未启动过，或 --config 指错了节点")

    async with await AcdStore.open(path) as store:
        status = await store.read_status()
        now = datetime.now(UTC)
        if status is None or (now - status.published_at).total_seconds() > NODE_STALE_S:
            last = status.published_at.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S") if status else "从未"
            raise _CommandFailed(
                f"节点没有在运行（坐席状态最后发布于 {last}），命令未执行：请先用 hotline run 启动节点再操作"
            )

        command_id = await store.enqueue_command(agent_id, command, now)
        deadline = time.monotonic() + COMMAND_WAIT_S
        while time.monotonic() < deadline:
            result, message = await store.command_result(command_id)
            if result not in _OPEN_STATUSES:
                return result, message or ""
            await asyncio.sleep(_COMMAND_POLL_S)

        withdrawn = await store.withdraw_command(
            command_id, f"节点 {COMMAND_WAIT_S:.0f} 秒内没有处理，命令已撤回", datetime.now(UTC)
        )
        if withdrawn:
            raise _CommandFailed(f"节点 {COMMAND_WAIT_S:.0f} 秒内没有处理命令，已撤回，坐席状态未变：请检查节点日志后重试")

        # The controller took the command just before the withdrawal; its result follows shortly.
        while True:
            result, message = await store.command_result(command_id)
            if result not in _OPEN_STATUSES:
                return result, message or ""
            if time.monotonic() > deadline + COMMAND_WAIT_S:
                raise _CommandFailed(f"节点已接收命令，但 {2 * COMMAND_WAIT_S:.0f} 秒内没有给出结果：请用 hotline acd events {agent_id} 查看坐席状态")
            await asyncio.sleep(_COMMAND_POLL_S)


def _run_agent_command(config_path: Path, agent_id: str, command: AgentCommand) -> None:
    config = _config(config_path)
    try:
        result, message = asyncio.run(_send_command(config.database, agent_id, command))
    except StorageError as exc:
        raise _CommandFailed(f"读取坐席记录库失败：{exc}") from None
    if result != "done":
        raise _CommandFailed(message)
    click.echo(message)


_CONFIG_OPTION = click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
                              help="运行中节点的配置文件")


@acd.command(help="让坐席登录（登录后处于“登录待就绪”暂停，示闲后才接电话）。节点须在运行。")
@click.argument("agent_id")
@_CONFIG_OPTION
def login(agent_id: str, config_path: Path) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.LOGIN))


@acd.command(help="让坐席退出；坐席正在处理来电时拒绝。节点须在运行。")
@click.argument("agent_id")
@_CONFIG_OPTION
def logout(agent_id: str, config_path: Path) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.LOGOUT))


@acd.command(help="暂停坐席，暂停期间不分配来电。节点须在运行。")
@click.argument("agent_id")
@_CONFIG_OPTION
@click.option("--reason", default="supervisor", show_default=True, type=click.Choice(CLI_PAUSE_REASONS),
              help="暂停原因：" + "，".join(f"{code}={PAUSE_REASONS[code]}" for code in CLI_PAUSE_REASONS))
def pause(agent_id: str, config_path: Path, reason: str) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.PAUSE, reason))


@acd.command(help="取消坐席的暂停（示闲），之后开始分配来电。节点须在运行。")
@click.argument("agent_id")
@_CONFIG_OPTION
def unpause(agent_id: str, config_path: Path) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.READY))


# --- capacity planning ----------------------------------------------------------------------


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else ("无穷" if math.isinf(value) else f"{value:.1f}")


def _recommended_roster(needed: dict[str, int]) -> list[AgentProfile]:
    """One dedicated agent per required seat, as Erlang C assumes for each skill."""
    return [
        AgentProfile(f"r-{skill}-{number}", f"建议坐席 {skill} {number}", f"r-{skill}-{number}", frozenset({skill}))
        for skill, count in needed.items() for number in range(1, count + 1)
    ]


def _print_simulation(title: str, result: SimulationResult) -> None:
    table = Table(title=title)
    for column in ("技能", "来电", "接起", "平均等待（秒）", "需等待的比例", "服务水平", "放弃率"):
        table.add_column(column)
    for row in (*result.skills, result.total):
        table.add_row(row.skill, str(row.offered), str(row.answered), _seconds(row.asa_s),
                      _pct(row.wait_probability), _pct(row.service_level), _pct(row.abandon_rate))
    operator_console().print(table)
    click.echo(f"坐席 {result.agents} 名，占用率（通话和话后整理占坐席时间的比例）{_pct(result.occupancy)}")


@acd.command(help="容量测算：按 Erlang C 算每个技能至少要几名坐席，并模拟现有名单和建议名单的接通情况。")
@click.argument("roster_path", metavar="ROSTER", type=click.Path(path_type=Path))
@click.argument("traffic_path", metavar="TRAFFIC", type=click.Path(path_type=Path))
@click.option("--target", "target_text", default=None,
              help="服务水平目标“百分比/秒数”，例如 80/15；不写时用话务量文件里的 service_level，再没有就用 80/15")
@click.option("--hours", default=40.0, show_default=True, type=click.FloatRange(min=0.1), help="模拟的小时数")
@click.option("--seed", default=12349, show_default=True, type=int, help="随机种子，同一种子结果相同")
def whatif(roster_path: Path, traffic_path: Path, target_text: str | None, hours: float, seed: int) -> None:
    try:
        roster = load_roster(roster_path)
        plan = load_traffic(traffic_path)
        target = ServiceTarget.parse(target_text) if target_text else plan.target or ServiceTarget(0.80, 15.0)
    except (RosterError, TrafficError) as exc:
        raise _CommandFailed(str(exc)) from None

    click.echo(f"服务水平目标：{target.label()}；话后整理 {plan.wrap_up_s:g} 秒；模拟 {hours:g} 小时，随机种子 {seed}")
    table = Table(title="按 Erlang C 计算的每个技能最少坐席数（假定坐席只接该技能）")
    for column in ("技能", "每小时来电", "平均处理时长（秒）", "话务量（爱尔兰）", "最少坐席",
                   "预计服务水平", "预计平均等待（秒）", "预计占用率", "名单中具备该技能的坐席"):
        table.add_column(column)
    needed: dict[str, int] = {}
    for traffic in plan.skills:
        handle = traffic.handle_s + plan.wrap_up_s
        try:
            figures = agents_needed(traffic.calls_per_hour, handle, target.seconds, target.share)
        except ValueError:
            raise _CommandFailed(f"技能 {traffic.skill} 的话务量太大，1 万名坐席也达不到目标，请核对 calls_per_hour 和 handle_s") from None
        needed[traffic.skill] = figures.agents if traffic.calls_per_hour > 0 else 0
        on_roster = sum(1 for agent in roster if traffic.skill in agent.skills)
        table.add_row(traffic.skill, f"{traffic.calls_per_hour:g}", f"{traffic.handle_s:g}", f"{figures.load:.2f}",
                      str(needed[traffic.skill]), _pct(figures.service_level), _seconds(figures.asa_s),
                      _pct(figures.occupancy), str(on_roster))
    operator_console().print(table)

    missing = [t.skill for t in plan.skills if t.calls_per_hour > 0 and not any(t.skill in a.skills for a in roster)]
    if missing:
        click.echo(f"注意：名单中没有坐席具备技能 {'、'.join(missing)}，这些来电在现有名单下无人接听，"
                   f"请在名单 {roster_path} 中给坐席加上该技能")
    if not any(t.patience_s for t in plan.skills):
        click.echo("话务量文件没有 patience_s（平均耐心时长），模拟中来电一直等到接起，放弃率为 0")

    _print_simulation(f"现有名单 {roster_path} 的模拟结果",
                      simulate(roster, plan.skills, hours=hours, target_s=target.seconds, seed=seed,
                               wrap_up_s=plan.wrap_up_s))
    recommended = _recommended_roster(needed)
    _print_simulation(f"建议名单（每个技能按最少坐席数专人接听，共 {len(recommended)} 名）的模拟结果",
                      simulate(recommended, plan.skills, hours=hours, target_s=target.seconds, seed=seed,
                               wrap_up_s=plan.wrap_up_s))
    click.echo("说明：Erlang C 假定来电不挂机、坐席只接一个技能；有放弃、多技能坐席时以模拟结果为准。")
