"""CLI: ``hotline acd`` shows a node's agent roster, explains routing decisions and changes agents' states.

``login``, ``logout``, ``pause`` and ``unpause`` cannot reach the running controller's
memory. They queue the command in the node's ACD store (table ``agent_command``); the
controller takes it within about a second, applies it like a phone feature code and
writes the result back, which the command prints.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.table import Table

from acd.agent_commands import AgentAction, AgentCommand
from acd.decisions import describe_decision
from acd.erlang import Staffing, agents_needed
from acd.pool import (
    ELDERLY_CARE_TRAINING,
    PAUSE_REASONS,
    SIGN_LANGUAGE_SKILL,
    STATE_LABELS,
    VIDEO_CAPABILITY,
    AgentProfile,
    AgentState,
)
from acd.roster import RosterError, load_roster
from acd.simulator import (
    DEFAULT_WARMUP_FRACTION,
    MIN_STABLE_CALLS,
    ServiceTarget,
    SimulationResult,
    SkillTraffic,
    TrafficError,
    TrafficPlan,
    hours_for_calls,
    load_traffic,
    overloaded_skills,
    simulate,
    sparse_skills,
)
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


# Short column headers keep both tables within a 100-column terminal; the legend lines
# below each table spell them out, each line under 100 columns too.
ERLANG_LEGEND = (
    "列说明：来电/时＝每小时来电数；处理秒＝平均处理时长，不含话后整理；",
    "　　话务量＝爱尔兰数，即来电/时 ×（处理秒＋话后整理秒）÷ 3600；",
    "　　最少坐席＝达到目标的最少坐席数，服务水平、平均等待秒、占用率是按这个人数预计的值；",
    "　　现有坐席＝名单中具备该技能的坐席数。",
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
        on_roster = sum(1 for agent in roster if traffic.skill in agent.skills)
        rows.append(ErlangRow(traffic, figures, needed, on_roster))
    return rows


def erlang_table(rows: list[ErlangRow]) -> Table:
    """Build the Erlang C table; headers are short so that it fits 100 columns (see ``ERLANG_LEGEND``)."""
    table = Table(title="按 Erlang C 计算的每个技能最少坐席数（假定坐席只接该技能）")
    for column in ("技能", "来电/时", "处理秒", "话务量", "最少坐席", "服务水平", "平均等待秒", "占用率", "现有坐席"):
        table.add_column(column, no_wrap=column != "技能")
    for row in rows:
        figures = row.figures
        table.add_row(row.traffic.skill, f"{row.traffic.calls_per_hour:g}", f"{row.traffic.handle_s:g}",
                      f"{figures.load:.2f}", str(row.needed), _pct(figures.service_level), _seconds(figures.asa_s),
                      _pct(figures.occupancy), str(row.on_roster))
    return table


def simulation_table(title: str, result: SimulationResult) -> Table:
    """Build the table of one simulation run (see ``SIMULATION_LEGEND``)."""
    table = Table(title=title)
    for column in ("技能", "来电", "接起", "平均等待秒", "最长等待秒", "需等待比例", "服务水平", "放弃率"):
        table.add_column(column, no_wrap=column != "技能")
    for row in (*result.skills, result.total):
        table.add_row(row.skill, str(row.offered), str(row.answered), _seconds(row.asa_s), _seconds(row.max_wait_s),
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
        lines.append(f"注意：技能 {overload.skill} 的话务量 {overload.load:.2f} 爱尔兰（含话后整理），"
                     f"不少于名单中具备该技能的 {overload.agents} 名坐席。")
        if patience[overload.skill] is None:
            lines.append("　　来电人不挂机时队列会一直变长，平均等待只反映模拟时长，换一个 --hours 就会变。")
        else:
            lines.append(f"　　接不过来的来电大多在排队中挂机（平均耐心 {patience[overload.skill]:g} 秒），请主要看放弃率。")
        lines.append(f"　　模拟停止来电时该技能仍有 {row.waiting_at_end} 个来电在排队，模拟继续到它们接起或挂机为止，")
        lines.append(f"　　这段等待计入平均等待（最长等待 {_seconds(row.max_wait_s)} 秒）。"
                     f"这些坐席会的其他技能也因此排长队。")
        lines.append(f"　　请给该技能至少 {needed.get(overload.skill, 0)} 名坐席（第一张表的最少坐席）。")

    staffed = {skill for agent in roster for skill in agent.skills}
    total_load = sum(t.calls_per_hour * (t.handle_s + plan.wrap_up_s) / 3600.0
                     for t in plan.skills if t.skill in staffed)
    if roster and total_load >= len(roster):
        lines.append(f"注意：各技能话务量合计 {total_load:.2f} 爱尔兰（含话后整理），不少于名单中的全部 "
                     f"{len(roster)} 名坐席。")
        lines.append("　　即使坐席会多个技能也接不完，排队会一直变长：请增加坐席。")
    return lines


def sample_warning(results: list[SimulationResult], plan: TrafficPlan, hours: float) -> list[str]:
    """Return Chinese warning lines naming the skills with too few counted calls, and the hours that would do."""
    sparse = sparse_skills(results, plan.skills)
    if not sparse:
        return []
    names = "、".join(f"{skill}（{count} 个）" for skill, count in sparse.items())
    enough = hours_for_calls(plan.skills, list(sparse))
    if enough <= hours:
        # The run was long enough on average but drew fewer calls: scale up by what it measured.
        enough = math.ceil(hours * MIN_STABLE_CALLS / max(min(sparse.values()), 1))
    return [
        f"注意：模拟 {hours:g} 小时中，技能 {names}统计到的来电少于 {MIN_STABLE_CALLS} 个。",
        "　　这些技能的等待、需等待比例、服务水平和放弃率随机波动很大，不能据此定人数",
        f"　　（{MIN_STABLE_CALLS} 个来电时，比例的标准误最大约 2.5 个百分点）。",
        f"　　请用 --hours {enough} 或更长重新运行：按话务量文件，这样每个技能约有 {MIN_STABLE_CALLS} 个来电。",
    ]


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

    # Erlang C minimum per skill.
    click.echo(f"服务水平目标：{target.label()}；话后整理 {plan.wrap_up_s:g} 秒；模拟 {hours:g} 小时，随机种子 {seed}")
    rows = erlang_rows(plan, target, roster)
    needed = {row.traffic.skill: row.needed for row in rows}
    console = operator_console()
    console.print(erlang_table(rows))
    for line in ERLANG_LEGEND:
        click.echo(line)

    missing = [t.skill for t in plan.skills if t.calls_per_hour > 0 and not any(t.skill in a.skills for a in roster)]
    if missing:
        click.echo(f"注意：名单中没有坐席具备技能 {'、'.join(missing)}，这些来电在现有名单下无人接听，"
                   f"模拟表中计为放弃。")
        click.echo(f"　　请在名单 {roster_path} 中给坐席加上该技能。")
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


# --- roster check ---------------------------------------------------------------------------


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
        table.add_row(skill, str(len(holders)), spread, "、".join(agent.agent_id for agent in holders))
    return table


def need_lines(roster: list[AgentProfile]) -> list[str]:
    """Return Chinese lines on who can take calls with special needs, and warnings on half-set ones."""
    sign = [a for a in roster if SIGN_LANGUAGE_SKILL in a.skills and VIDEO_CAPABILITY in a.capabilities]
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


def traffic_problems(roster: list[AgentProfile], traffic_path: Path) -> tuple[list[str], list[str]]:
    """Return (errors, notes) from matching a traffic file's skills against ``roster``."""
    try:
        plan = load_traffic(traffic_path)
    except TrafficError as exc:
        return [str(exc)], []
    staffed = {skill for agent in roster for skill in agent.skills}
    errors = [f"话务量文件 {traffic_path}：技能 {traffic.skill}（每小时 {traffic.calls_per_hour:g} 个来电）"
              f"名单中没有坐席具备，这些来电无人接听：请在名单中给至少一名坐席加上技能 {traffic.skill}"
              for traffic in plan.skills if traffic.skill not in staffed]
    listed = {traffic.skill for traffic in plan.skills}
    unlisted = sorted(staffed - listed)
    if not unlisted:
        return errors, []
    return errors, [f"名单中的技能 {'、'.join(unlisted)} 不在话务量文件 {traffic_path} 中，容量测算不会模拟这些技能的来电"]


@acd.command(short_help="不启动节点，检查坐席名单文件；可同时核对话务量文件的技能。",
             help="检查坐席名单文件（YAML 或 CSV，与节点 telephony.roster 同一读取方式），不需要运行节点。"
                  "名单和话务量都没有错误时退出码为 0，否则为 1。")
@click.argument("roster_path", metavar="ROSTER", type=click.Path(path_type=Path))
@click.option("--traffic", "traffic_path", default=None, type=click.Path(path_type=Path),
              help="话务量文件（hotline acd whatif 用的那个）：同时检查其中每个技能在名单中至少有一名坐席")
def check(roster_path: Path, traffic_path: Path | None) -> None:
    try:
        roster = load_roster(roster_path)
    except RosterError as exc:
        if exc.problems:
            click.echo(f"坐席名单 {roster_path} 有 {len(exc.problems)} 处错误：", err=True)
            for problem in exc.problems:
                click.echo(f"  - {problem}", err=True)
        else:
            click.echo(str(exc), err=True)
        click.echo(f"{roster_path}：名单未通过检查，改正后再运行 hotline acd check {roster_path}", err=True)
        sys.exit(1)

    click.echo(f"坐席名单 {roster_path}：共 {len(roster)} 名坐席")
    operator_console().print(skills_table(roster))
    click.echo("来电需求能力：")
    for line in need_lines(roster):
        click.echo(line)

    errors: list[str] = []
    if traffic_path is not None:
        errors, notes = traffic_problems(roster, traffic_path)
        for note in notes:
            click.echo(f"提示：{note}")
    if errors:
        for error in errors:
            click.echo(f"错误：{error}", err=True)
        click.echo(f"{roster_path}：共 {len(errors)} 处错误，名单未通过检查", err=True)
        sys.exit(1)
    click.echo(f"{roster_path}：通过检查" + (f"，话务量文件 {traffic_path} 中的每个技能都有坐席" if traffic_path else ""))
