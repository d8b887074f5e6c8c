"""CLI: ``hotline acd`` shows a node's agent roster, explains routing decisions and changes agents' states.

``login``, ``logout``, ``pause`` and ``unpause`` cannot reach the running controller's
memory. They queue the command in the node's ACD store (table ``agent_command``); the
controller takes it within about a second, applies it like a phone feature code and
writes the result back, which the command prints.
"""

from __future__ import annotations

import asyncio
import difflib
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import click
from rich.cells import cell_len
from rich.table import Table

from acd.agent_commands import AgentAction, AgentCommand
from acd.decisions import describe_decision
from acd.erlang import Staffing, agents_needed
from acd.pool import (
    ELDERLY_CARE_TRAINING,
    PAUSE_REASONS,
    SIGN_LANGUAGE_NEED,
    SIGN_LANGUAGE_SKILL,
    STATE_LABELS,
    VIDEO_CAPABILITY,
    AgentProfile,
    AgentState,
)
from acd.roster import RosterAgent, RosterError, load_roster, load_roster_rows
from acd.simulator import (
    DEFAULT_WARMUP_FRACTION,
    MIN_STABLE_CALLS,
    ServiceTarget,
    SimulationResult,
    SkillTraffic,
    TrafficError,
    TrafficPlan,
    can_take,
    hours_for_calls,
    load_traffic,
    overloaded_skills,
    simulate,
    sparse_skills,
)
from hotline.commands.console import operator_console
from hotline.config import ConfigError, NodeConfig, load_node_config
from ivr.flow import Flow, FlowError, flow_skills, load_flow
from storage.acd_store import AcdStore, acd_path
from storage.errors import CallNotFound, StorageError
from storage.ticket_store import TicketStore
from tickets.call_record import CallRecord
from tickets.model import CHINA_TZ, TicketCategory

_TIER_LABELS = {"ministry": "部", "province": "省", "city": "市", "county": "县"}
_STATE_BY_VALUE = {state.value: STATE_LABELS[state] for state in AgentState}


def skill_label(skill: str) -> str:
    """Return ``skill`` followed by its Chinese name where one exists, e.g. ``dibao（低保）``.

    Skills named after an assistance category take the category's name; sign_language
    takes the name of the need it serves.
    """
    try:
        label: str | None = TicketCategory(skill).label
    except ValueError:
        label = SIGN_LANGUAGE_NEED if skill == SIGN_LANGUAGE_SKILL else None
    return f"{skill}（{label}）" if label else skill


def skill_cell(skill: str) -> str:
    """Return a table cell for ``skill``: the code, with its Chinese name on a second line where one exists.

    Two lines keep the skill column of the whatif tables as narrow as the longest code.
    """
    label = skill_label(skill)
    return label.replace("（", "\n（", 1) if label != skill else skill


# "技能 dibao" and "不具备技能 dibao" in the pool's decision texts; the name gets its label.
_SKILL_IN_TEXT = re.compile(r"(?<=技能 )([a-z][a-z0-9_]{0,31})(?![a-z0-9_（])")


def label_skills_in(text: str) -> str:
    """Add the Chinese label after each skill code that follows “技能 ” in ``text``."""
    return _SKILL_IN_TEXT.sub(lambda match: skill_label(match.group(1)), text)


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


async def _read_call(config: NodeConfig, call_id: str) -> CallRecord | None:
    """Return the node's call record of ``call_id``, or None when the node has none."""
    if not config.database.is_file():
        return None
    async with await TicketStore.open(config.database, config.node_id, config.region_code) as store:
        try:
            return await store.get_call(call_id)
        except CallNotFound:
            return None


def unqueued_call_lines(record: CallRecord) -> list[str]:
    """Return Chinese lines for a call that has a call record but no routing decision."""
    started = record.started_at.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M:%S")
    head = f"来电 {record.call_id}（{started} 开始）"
    if record.outcome is not None and not record.outcome.reached_queue:
        lines = [f"{head}有通话记录，但没有进入坐席排队，所以没有分配决定。",
                 f"  结果：{record.outcome.label}"]
    elif record.outcome is None:
        lines = [f"{head}有通话记录，但还没有结果，坐席记录库中也没有它的分配决定：",
                 "  通话可能还在进行，没有进入坐席排队。通话结束后再查。"]
    else:
        lines = [f"{head}的通话记录显示进过坐席排队（结果：{record.outcome.label}），",
                 "  但坐席记录库中没有它的分配决定：请确认 --config 指的是接这通来电的节点。"]
    if record.path:
        lines.append(f"  最后到达的流程节点：{record.path[-1]}（共经过 {len(record.path)} 个节点）")
    if record.ticket_id:
        lines.append(f"  工单：{record.ticket_id}")
    return lines


@acd.command(help="说明某个来电为什么分给了某名坐席（或为什么没分到）。")
@click.argument("call_id", metavar="来电编号")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
def explain(call_id: str, config_path: Path) -> None:
    config = _config(config_path)
    try:
        decisions = asyncio.run(_read_decisions(config.database, call_id))
        record = None if decisions else asyncio.run(_read_call(config, call_id))
    except StorageError as exc:
        raise _CommandFailed(f"读取节点数据库失败：{exc}") from None
    if not decisions and record is None:
        raise _CommandFailed(f"没有来电 {call_id} 的分配记录，也没有它的通话记录：请核对来电编号（见工单或通话记录）")
    if not decisions:
        assert record is not None
        for line in unqueued_call_lines(record):
            click.echo(line)
        return

    click.echo(f"来电 {call_id} 共 {len(decisions)} 次分配决定：")
    for decision in decisions:
        click.echo("")
        click.echo("\n".join(label_skills_in(line) for line in describe_decision(decision)))


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
@click.argument("agent_id", metavar="坐席工号")
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
@click.argument("agent_id", metavar="坐席工号")
@_CONFIG_OPTION
def login(agent_id: str, config_path: Path) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.LOGIN))


@acd.command(help="让坐席退出；坐席正在处理来电时拒绝。节点须在运行。")
@click.argument("agent_id", metavar="坐席工号")
@_CONFIG_OPTION
def logout(agent_id: str, config_path: Path) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.LOGOUT))


@acd.command(help="暂停坐席，暂停期间不分配来电。节点须在运行。")
@click.argument("agent_id", metavar="坐席工号")
@_CONFIG_OPTION
@click.option("--reason", default="supervisor", show_default=True, type=click.Choice(CLI_PAUSE_REASONS),
              help="暂停原因：" + "，".join(f"{code}={PAUSE_REASONS[code]}" for code in CLI_PAUSE_REASONS))
def pause(agent_id: str, config_path: Path, reason: str) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.PAUSE, reason))


@acd.command(help="取消坐席的暂停（示闲），之后开始分配来电。节点须在运行。")
@click.argument("agent_id", metavar="坐席工号")
@_CONFIG_OPTION
def unpause(agent_id: str, config_path: Path) -> None:
    _run_agent_command(config_path, agent_id, AgentCommand(AgentAction.READY))


# --- capacity planning ----------------------------------------------------------------------


def _pct(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.1%}"


def _seconds(value: float) -> str:
    return "—" if math.isnan(value) else ("无穷" if math.isinf(value) else f"{value:.1f}")


def _recommended_roster(needed: dict[str, int]) -> list[AgentProfile]:
    """One dedicated agent per required seat, as Erlang C assumes for each skill.

    Sign-language agents get a video phone, which their calls require.
    """
    return [
        AgentProfile(f"r-{skill}-{number}", f"建议坐席 {skill} {number}", f"r-{skill}-{number}", frozenset({skill}),
                     capabilities=frozenset({VIDEO_CAPABILITY}) if skill == SIGN_LANGUAGE_SKILL else frozenset())
        for skill, count in needed.items() for number in range(1, count + 1)
    ]


# Short column headers keep both tables within a 100-column terminal; the legend lines
# below each table spell them out, each line under 100 columns too.
ERLANG_LEGEND = (
    "列说明：来电/时＝每小时来电数；处理秒＝平均处理时长，不含话后整理；",
    "　　话务量＝爱尔兰数，即来电/时 ×（处理秒＋话后整理秒）÷ 3600；",
    "　　最少坐席＝达到目标的最少坐席数，服务水平、平均等待秒、占用率是按这个人数预计的值；",
    "　　现有坐席＝名单中能接该技能来电的坐席数（手语来电还要求话机有 video 能力）。",
)
SIMULATION_LEGEND = (
    f"列说明：来电＝统计期内到达的来电，不含开头 {DEFAULT_WARMUP_FRACTION:.0%} 的预热时段；",
    "　　平均等待秒、最长等待秒＝接起的来电从到达到分到坐席的秒数；需等待比例＝接起的来电中排过队的比例；",
    "　　服务水平＝目标秒数内接起的来电占全部来电的比例，放弃的来电算未达标。",
    "　　模拟停止来电时仍在排队的来电继续等到接起或挂机为止，这段等待也计入平均等待和最长等待。",
)


@dataclass(frozen=True, slots=True)
class ErlangRow:
    """Erlang C minimum of one skill next to the agents the roster has for it."""

    traffic: SkillTraffic
    figures: Staffing
    needed: int
    on_roster: int


def erlang_rows(plan: TrafficPlan, target: ServiceTarget, roster: list[AgentProfile]) -> list[ErlangRow]:
    """Compute the Erlang C minimum per skill; wrap-up counts as handle time."""
    rows: list[ErlangRow] = []
    for traffic in plan.skills:
        try:
            figures = agents_needed(traffic.calls_per_hour, traffic.handle_s + plan.wrap_up_s,
                                    target.seconds, target.share)
        except ValueError:
            raise _CommandFailed(f"技能 {traffic.skill} 的话务量太大，1 万名坐席也达不到目标，"
                                 f"请核对 calls_per_hour 和 handle_s") from None
        needed = figures.agents if traffic.calls_per_hour > 0 else 0
        on_roster = sum(1 for agent in roster if can_take(agent, traffic.skill))
        rows.append(ErlangRow(traffic, figures, needed, on_roster))
    return rows


def erlang_table(rows: list[ErlangRow]) -> Table:
    """Build the Erlang C table; headers are short so that it fits 100 columns (see ``ERLANG_LEGEND``)."""
    table = Table(title="按 Erlang C 计算的每个技能最少坐席数（假定坐席只接该技能）")
    for column in ("技能", "来电/时", "处理秒", "话务量", "最少坐席", "服务水平", "平均等待秒", "占用率", "现有坐席"):
        table.add_column(column, no_wrap=column != "技能")
    for row in rows:
        figures = row.figures
        table.add_row(skill_cell(row.traffic.skill), f"{row.traffic.calls_per_hour:g}", f"{row.traffic.handle_s:g}",
                      f"{figures.load:.2f}", str(row.needed), _pct(figures.service_level), _seconds(figures.asa_s),
                      _pct(figures.occupancy), str(row.on_roster))
    return table


def simulation_table(title: str, result: SimulationResult) -> Table:
    """Build the table of one simulation run (see ``SIMULATION_LEGEND``)."""
    table = Table(title=title)
    for column in ("技能", "来电", "接起", "平均等待秒", "最长等待秒", "需等待比例", "服务水平", "放弃率"):
        table.add_column(column, no_wrap=column != "技能")
    for row in (*result.skills, result.total):
        table.add_row(skill_cell(row.skill), str(row.offered), str(row.answered), _seconds(row.asa_s), _seconds(row.max_wait_s),
                      _pct(row.wait_probability), _pct(row.service_level), _pct(row.abandon_rate))
    return table


def _print_simulation(title: str, result: SimulationResult) -> None:
    operator_console().print(simulation_table(title, result))
    click.echo(f"坐席 {result.agents} 名，占用率（通话和话后整理占坐席时间的比例）{_pct(result.occupancy)}")


def overload_warnings(roster: list[AgentProfile], plan: TrafficPlan, result: SimulationResult,
                      needed: dict[str, int]) -> list[str]:
    """Return Chinese warning lines for each skill whose load reaches its agents on ``roster``, and for the total."""
    by_skill = {row.skill: row for row in result.skills}
    patience = {traffic.skill: traffic.patience_s for traffic in plan.skills}
    lines: list[str] = []
    for overload in overloaded_skills(roster, plan.skills, plan.wrap_up_s):
        row = by_skill[overload.skill]
        lines.append(f"注意：技能 {skill_label(overload.skill)} 的话务量 {overload.load:.2f} 爱尔兰（含话后整理），"
                     f"不少于名单中能接的 {overload.agents} 名坐席。")
        if patience[overload.skill] is None:
            lines.append("　　来电人不挂机时队列会一直变长，平均等待只反映模拟时长，换一个 --hours 就会变。")
        else:
            lines.append(f"　　接不过来的来电大多在排队中挂机（平均耐心 {patience[overload.skill]:g} 秒），请主要看放弃率。")
        lines.append(f"　　模拟停止来电时该技能仍有 {row.waiting_at_end} 个来电在排队，模拟继续到它们接起或挂机为止，")
        lines.append(f"　　这段等待计入平均等待（最长等待 {_seconds(row.max_wait_s)} 秒）。"
                     f"这些坐席会的其他技能也因此排长队。")
        lines.append(f"　　请给该技能至少 {needed.get(overload.skill, 0)} 名坐席（第一张表的最少坐席）。")

    total_load = sum(t.calls_per_hour * (t.handle_s + plan.wrap_up_s) / 3600.0
                     for t in plan.skills if any(can_take(agent, t.skill) for agent in roster))
    if roster and total_load >= len(roster):
        lines.append(f"注意：各技能话务量合计 {total_load:.2f} 爱尔兰（含话后整理），不少于名单中的全部 "
                     f"{len(roster)} 名坐席。")
        lines.append("　　即使坐席会多个技能也接不完，排队会一直变长：请增加坐席。")
    return lines


def wrap_items(items: list[str], indent: str, width: int = 100) -> list[str]:
    """Join ``items`` with “、” into lines of at most ``width`` terminal cells, each line starting with ``indent``."""
    lines: list[str] = []
    line = ""
    for item in items:
        candidate = f"{line}、{item}" if line else item
        if line and cell_len(indent + candidate) > width:
            lines.append(indent + line)
            candidate = item
        line = candidate
    if line:
        lines.append(indent + line)
    return lines


def sample_warning(results: list[SimulationResult], plan: TrafficPlan, hours: float) -> list[str]:
    """Return Chinese warning lines naming the skills with too few counted calls, and the hours that would do."""
    sparse = sparse_skills(results, plan.skills)
    if not sparse:
        return []
    names = [f"{skill_label(skill)} {count} 个" for skill, count in sparse.items()]
    enough = hours_for_calls(plan.skills, list(sparse))
    if enough <= hours:
        # The run was long enough on average but drew fewer calls: scale up by what it measured.
        enough = math.ceil(hours * MIN_STABLE_CALLS / max(min(sparse.values()), 1))
    return [
        f"注意：模拟 {hours:g} 小时中，以下技能统计到的来电少于 {MIN_STABLE_CALLS} 个：",
        *wrap_items(names, "　　"),
        "　　这些技能的等待、需等待比例、服务水平和放弃率随机波动很大，不能据此定人数",
        f"　　（{MIN_STABLE_CALLS} 个来电时，比例的标准误最大约 2.5 个百分点）。",
        f"　　请用 --hours {enough} 或更长重新运行：按话务量文件，这样每个技能约有 {MIN_STABLE_CALLS} 个来电。",
    ]


def _target_text(target: ServiceTarget) -> str:
    return f"{target.share:.0%}/{target.seconds:g} 秒"


def verdict_lines(name: str, result: SimulationResult, target: ServiceTarget,
                  sparse: dict[str, int] | None = None) -> list[str]:
    """Return Chinese lines saying, per skill and overall, whether ``result`` meets ``target``.

    A skill meets the target when its simulated service level is at least the target share.
    Skills without calls in the window are not judged. Skills in ``sparse`` had too few calls
    for a firm verdict, so their lines are marked as a reference only.
    """
    sparse = sparse or {}
    judged = [row for row in (*result.skills, result.total) if row.offered > 0]
    missed = [row for row in judged if row.service_level < target.share]
    if not judged:
        return [f"{name}：统计期内没有来电，无法判断是否达标"]
    heading = (f"{name}：{'未达标' if missed else '达标'}（目标 {_target_text(target)}，"
               f"{len(missed)} 项未达标，共 {len(judged)} 项）")
    lines = [heading]
    for row in judged:
        verdict = "未达标" if any(row is item for item in missed) else "达标"
        label = "全部来电" if row is result.total else skill_label(row.skill)
        line = f"  {verdict}：{label} 服务水平 {_pct(row.service_level)}，目标 {_target_text(target)}"
        if row.skill in sparse:
            line += f"（只有 {row.offered} 个来电，仅供参考）"
        lines.append(line)
    return lines


def missing_skill_lines(roster: list[AgentProfile], plan: TrafficPlan, roster_path: Path) -> list[str]:
    """Return Chinese warning lines for skills with traffic that no agent on ``roster`` can take."""
    lines: list[str] = []
    for traffic in plan.skills:
        if traffic.calls_per_hour == 0 or any(can_take(agent, traffic.skill) for agent in roster):
            continue
        holders = [agent.agent_id for agent in roster if traffic.skill in agent.skills]
        if holders:
            lines.append(f"注意：{skill_label(traffic.skill)} 的来电在现有名单下无人接听，模拟表中计为放弃：")
            lines.append(f"　　坐席 {'、'.join(holders)} 有该技能，但 capabilities 没有 {VIDEO_CAPABILITY}，"
                         f"手语来电要求视频话机。")
        else:
            lines.append(f"注意：名单中没有坐席具备技能 {skill_label(traffic.skill)}，这些来电在现有名单下无人接听，"
                         f"模拟表中计为放弃。")
        lines.append(f"　　请在名单 {roster_path} 中改正。")
    return lines


@acd.command(help="容量测算：按 Erlang C 算每个技能至少要几名坐席，并模拟现有名单和建议名单的接通情况。")
@click.argument("roster_path", metavar="名单文件", type=click.Path(path_type=Path))
@click.argument("traffic_path", metavar="话务量文件", type=click.Path(path_type=Path))
@click.option("--target", "target_text", default=None,
              help="服务水平目标“百分比/秒数”，例如 80/15；不写时用话务量文件里的 service_level，再没有就用 80/15")
@click.option("--hours", default=40.0, show_default=True, type=click.FloatRange(min=0.1), help="模拟的小时数")
@click.option("--seed", default=12349, show_default=True, type=int, help="随机种子，同一种子结果相同")
def whatif(roster_path: Path, traffic_path: Path, target_text: str | None, hours: float, seed: int) -> None:
    # Both files are read before stopping, so one run reports the mistakes of both.
    roster, roster_failure = _load_or_report(load_roster, roster_path, f"坐席名单 {roster_path}")
    plan, traffic_failure = _load_or_report(load_traffic, traffic_path, f"话务量文件 {traffic_path}")
    if roster is None or plan is None:
        for line in (*roster_failure, *traffic_failure):
            click.echo(line, err=True)
        failed = [label for label, lines in ((f"坐席名单 {roster_path}", roster_failure),
                                             (f"话务量文件 {traffic_path}", traffic_failure)) if lines]
        click.echo(f"没有测算：{'；'.join(f'{label} 有误' for label in failed)}，改正后再运行", err=True)
        sys.exit(1)
    try:
        target = ServiceTarget.parse(target_text) if target_text else plan.target or ServiceTarget(0.80, 15.0)
    except TrafficError as exc:
        raise _CommandFailed(f"--target：{exc}") from None

    # Erlang C minimum per skill.
    click.echo(f"服务水平目标：{target.label()}；话后整理 {plan.wrap_up_s:g} 秒；模拟 {hours:g} 小时，随机种子 {seed}")
    rows = erlang_rows(plan, target, roster)
    needed = {row.traffic.skill: row.needed for row in rows}
    console = operator_console()
    console.print(erlang_table(rows))
    for line in ERLANG_LEGEND:
        click.echo(line)

    for line in missing_skill_lines(roster, plan, roster_path):
        click.echo(line)
    if not any(t.patience_s for t in plan.skills):
        click.echo("话务量文件没有 patience_s（平均耐心时长），模拟中来电一直等到接起，放弃率为 0")

    # Both simulations run before printing, so the sample-size warning can name both tables.
    current = simulate(roster, plan.skills, hours=hours, target_s=target.seconds, seed=seed, wrap_up_s=plan.wrap_up_s)
    recommended = _recommended_roster(needed)
    suggested = simulate(recommended, plan.skills, hours=hours, target_s=target.seconds, seed=seed,
                         wrap_up_s=plan.wrap_up_s)

    click.echo("")
    _print_simulation(f"现有名单 {roster_path} 的模拟结果", current)
    for line in overload_warnings(roster, plan, current, needed):
        click.echo(line)
    click.echo("")
    _print_simulation(f"建议名单（每个技能按最少坐席数专人接听，共 {len(recommended)} 名）的模拟结果", suggested)
    for line in (*SIMULATION_LEGEND, *sample_warning([current, suggested], plan, hours)):
        click.echo(line)
    click.echo("说明：Erlang C 假定来电不挂机、坐席只接一个技能；有放弃、多技能坐席时以模拟结果为准。")

    # Verdict of both simulations against the target.
    sparse = sparse_skills([current, suggested], plan.skills)
    click.echo("")
    click.echo("结论（按模拟的服务水平）：")
    for line in (*verdict_lines("现有名单", current, target, sparse),
                 *verdict_lines("建议名单", suggested, target, sparse)):
        click.echo(line)


# --- roster check ---------------------------------------------------------------------------

# The flow shipped with the node; ``hotline acd check`` compares roster skills with it by default.
SHIPPED_FLOW = Path(__file__).resolve().parents[2] / "flows" / "12349.yaml"
# Roster skills that qualify an agent for a need instead of naming a queue: a flow routes no
# call to them, so they are not compared with the flow's skills.
NEED_SKILLS = frozenset({SIGN_LANGUAGE_SKILL})


_Loaded = TypeVar("_Loaded")


def _load_or_report(load: Callable[[Path], _Loaded], path: Path,
                    file_label: str) -> tuple[_Loaded | None, list[str]]:
    """Load a roster or traffic file; return its content, or None and the Chinese lines reporting its mistakes."""
    try:
        return load(path), []
    except (RosterError, TrafficError) as exc:
        return None, _failure_lines(file_label, str(exc), exc.problems)


def _failure_lines(file_label: str, message: str, problems: tuple[str, ...]) -> list[str]:
    if not problems:
        return [f"错误：{message}"]
    return [f"{file_label} 有 {len(problems)} 处错误：", *(f"  - {problem}" for problem in problems)]


def _agent_count(agents: list[AgentProfile]) -> str:
    if not agents:
        return "0 名"
    return f"{len(agents)} 名：" + "、".join(f"{agent.agent_id}（{agent.name}）" for agent in agents)


def skills_table(roster: list[AgentProfile]) -> Table:
    """Build the table of skills: agents per skill and how many stand at each proficiency level."""
    table = Table(title="技能")
    for column in ("技能", "坐席数", "熟练度（等级:人数）", "坐席"):
        table.add_column(column, no_wrap=column in ("坐席数", "熟练度（等级:人数）"))
    for skill in sorted({skill for agent in roster for skill in agent.skills}):
        holders = [agent for agent in roster if skill in agent.skills]
        levels = Counter(agent.level(skill) for agent in holders)
        spread = " ".join(f"{level}:{levels[level]}" for level in sorted(levels, reverse=True))
        table.add_row(skill_label(skill), str(len(holders)), spread, "、".join(agent.agent_id for agent in holders))
    return table


def need_lines(roster: list[AgentProfile]) -> list[str]:
    """Return Chinese lines on who can take calls with special needs, and warnings on half-set ones."""
    sign = [a for a in roster if can_take(a, SIGN_LANGUAGE_SKILL)]
    lines = [f"  手语来电（技能 {SIGN_LANGUAGE_SKILL} 且话机有 {VIDEO_CAPABILITY} 能力）：{_agent_count(sign)}"]
    languages = sorted({language for agent in roster for language in agent.languages})
    if languages:
        spoken = "；".join(
            f"{language} {sum(language in a.languages for a in roster)} 名"
            f"（{'、'.join(a.agent_id for a in roster if language in a.languages)}）"
            for language in languages)
        lines.append(f"  语言和方言：{spoken}")
    else:
        lines.append("  语言和方言：名单没有写 languages，需要方言的来电没有坐席可接")
    trained = [a for a in roster if ELDERLY_CARE_TRAINING in a.training]
    lines.append(f"  老年人服务培训（{ELDERLY_CARE_TRAINING}，需语速放缓的来电优先分给他们）："
                 f"{_agent_count(trained)}")

    for agent in roster:
        if SIGN_LANGUAGE_SKILL in agent.skills and VIDEO_CAPABILITY not in agent.capabilities:
            lines.append(f"  注意：坐席 {agent.agent_id} 有技能 {SIGN_LANGUAGE_SKILL}，但 capabilities 没有 "
                         f"{VIDEO_CAPABILITY}，接不了手语来电：话机支持视频就在 capabilities 写 {VIDEO_CAPABILITY}")
    if sign:
        lines.append("  说明：节点启动后还会核对这些坐席的话机端点在交换机上是否开通了视频编解码，没有开通的不接手语来电")
    else:
        lines.append("  注意：名单中没有能接手语来电的坐席，手语来电会一直排队")
    return lines


def traffic_problems(roster: list[AgentProfile], plan: TrafficPlan, traffic_path: Path) -> tuple[list[str], list[str]]:
    """Return (errors, notes) from matching a traffic file's skills against ``roster``.

    A skill with traffic is an error when no agent can take its calls; for sign_language
    that takes the skill and a video phone.
    """
    errors: list[str] = []
    for traffic in plan.skills:
        if any(can_take(agent, traffic.skill) for agent in roster):
            continue
        head = f"话务量文件 {traffic_path}：技能 {skill_label(traffic.skill)} 每小时 {traffic.calls_per_hour:g} 个来电，"
        holders = [agent.agent_id for agent in roster if traffic.skill in agent.skills]
        if holders:
            errors.append(f"{head}名单中没有坐席能接：坐席 {'、'.join(holders)} 有该技能，但 capabilities 没有 "
                          f"{VIDEO_CAPABILITY}，手语来电要求视频话机：请给能接视频的坐席写上 {VIDEO_CAPABILITY}")
        else:
            errors.append(f"{head}名单中没有坐席具备，这些来电无人接听：请在名单中给至少一名坐席加上技能 "
                          f"{traffic.skill}")
    staffed = {skill for agent in roster for skill in agent.skills}
    unlisted = sorted(staffed - {traffic.skill for traffic in plan.skills})
    if not unlisted:
        return errors, []
    note = (f"名单中的技能 {'、'.join(map(skill_label, unlisted))} 不在话务量文件 {traffic_path} 中，"
            f"容量测算不会模拟这些技能的来电")
    return errors, [note]


def flow_problems(agents: list[RosterAgent], flow: Flow, flow_path: Path) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) from matching roster skills with the skills ``flow`` routes calls to.

    A roster skill no flow node routes to is a warning naming its row, with the closest
    flow skill as a suggestion: most often it is a typo. A flow skill no agent has is an error.
    """
    routed = flow_skills(flow)
    known = sorted(routed | NEED_SKILLS)
    warnings: list[str] = []
    for agent in agents:
        for skill in sorted(agent.profile.skills - routed - NEED_SKILLS):
            line = (f"{agent.where}（坐席 {agent.profile.agent_id}）：技能“{skill}”不在流程 {flow_path} 中，"
                    f"没有来电会按它分给坐席")
            close = difflib.get_close_matches(skill, known, n=1, cutoff=0.6)
            warnings.append(line + (f"：是不是 {skill_label(close[0])}？" if close else ""))
    staffed = {skill for agent in agents for skill in agent.profile.skills}
    errors = [f"流程 {flow_path} 会把来电分给技能 {skill_label(skill)}，名单中没有坐席具备，这些来电无人接听："
              f"请给至少一名坐席加上技能 {skill}"
              for skill in sorted(routed - staffed)]
    return errors, warnings


def _load_flow_for_check(flow_path: Path | None, no_flow: bool) -> tuple[Flow | None, Path | None, list[str]]:
    """Return the flow to compare the roster with, its path and the lines reporting a flow that does not load."""
    if no_flow:
        return None, None, []
    path = flow_path if flow_path is not None else SHIPPED_FLOW
    if flow_path is None and not path.is_file():
        return None, None, []
    try:
        return load_flow(path), path, []
    except FileNotFoundError:
        return None, path, [f"错误：找不到流程文件 {path}，请检查 --flow 的路径"]
    except FlowError as exc:
        return None, path, [f"流程文件 {path} 有 {len(exc.issues)} 处错误（hotline flows check 可单独检查）：",
                            *(f"  - {issue}" for issue in exc.issues)]


@acd.command(short_help="不启动节点，检查坐席名单文件；可同时核对话务量文件和流程的技能。",
             help="检查坐席名单文件（YAML 或 CSV，与节点 telephony.roster 同一读取方式），不需要运行节点。"
                  "并核对名单的技能与流程（默认为仓库自带的 flows/12349.yaml）。"
                  "名单、话务量文件和流程都没有错误时退出码为 0，否则为 1；提示不影响退出码。")
@click.argument("roster_path", metavar="名单文件", type=click.Path(path_type=Path))
@click.option("--traffic", "traffic_path", default=None, type=click.Path(path_type=Path),
              help="话务量文件（hotline acd whatif 用的那个）：同时检查它，并核对其中每个技能在名单中至少有一名坐席")
@click.option("--flow", "flow_path", default=None, type=click.Path(path_type=Path),
              help="流程文件：核对名单的每个技能都有流程节点排队，流程排队的每个技能都有坐席。"
                   "不写时用仓库自带的 flows/12349.yaml")
@click.option("--no-flow", is_flag=True, help="不核对流程的技能")
def check(roster_path: Path, traffic_path: Path | None, flow_path: Path | None, no_flow: bool) -> None:
    # Step 1: read each file and report its own mistakes, all of them, before any comparison.
    failed: list[str] = []
    agents: list[RosterAgent] | None = None
    try:
        agents = load_roster_rows(roster_path)
    except RosterError as exc:
        for line in _failure_lines(f"坐席名单 {roster_path}", str(exc), exc.problems):
            click.echo(line, err=True)
        failed.append(f"坐席名单 {roster_path}")
    plan: TrafficPlan | None = None
    if traffic_path is not None:
        try:
            plan = load_traffic(traffic_path)
        except TrafficError as exc:
            for line in _failure_lines(f"话务量文件 {traffic_path}", str(exc), exc.problems):
                click.echo(line, err=True)
            failed.append(f"话务量文件 {traffic_path}")
    flow, used_flow, flow_failure = _load_flow_for_check(flow_path, no_flow)
    for line in flow_failure:
        click.echo(line, err=True)
    if flow_failure:
        failed.append(f"流程文件 {used_flow}")

    # Step 2: describe the roster.
    errors: list[str] = []
    if agents is not None:
        roster = [agent.profile for agent in agents]
        click.echo(f"坐席名单 {roster_path}：共 {len(roster)} 名坐席")
        operator_console().print(skills_table(roster))
        click.echo("来电需求能力：")
        for line in need_lines(roster):
            click.echo(line)

        # Step 3: compare the roster with the traffic file and the flow.
        if plan is not None and traffic_path is not None:
            traffic_errors, notes = traffic_problems(roster, plan, traffic_path)
            errors.extend(traffic_errors)
            for note in notes:
                click.echo(f"提示：{note}")
        if flow is not None and used_flow is not None:
            flow_errors, warnings = flow_problems(agents, flow, used_flow)
            errors.extend(flow_errors)
            for warning in warnings:
                click.echo(f"注意：{warning}")
    for error in errors:
        click.echo(f"错误：{error}", err=True)

    if failed or errors:
        parts = [f"{file_label} 有误" for file_label in failed]
        if errors:
            parts.append(f"名单与{'话务量文件、流程' if plan and flow else '话务量文件' if plan else '流程'}"
                         f"不一致 {len(errors)} 处")
        click.echo(f"未通过检查：{'；'.join(parts)}。改正后再运行 hotline acd check", err=True)
        sys.exit(1)
    checked = [f"话务量文件 {traffic_path} 中的每个技能都有坐席" if traffic_path else "",
               f"流程 {used_flow} 的每个技能都有坐席" if flow is not None else ""]
    click.echo(f"{roster_path}：通过检查" + "".join(f"，{text}" for text in checked if text))
