"""CLI: ``hotline sla`` shows the phase clocks of a node's open tickets and the working-day calendar."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click
from rich.table import Table

from hotline.commands.console import FitColumn, fit_table, operator_console
from hotline.config import ConfigError, load_node_config
from hotline.logging import configure_logging
from storage.errors import StorageError
from storage.ticket_store import TicketStore
from tickets.calendar import (
    CalendarConfigError,
    CalendarDay,
    DayKind,
    WorkingCalendar,
    load_calendar_overrides,
    weekday_label,
)
from tickets.model import CHINA_TZ, Ticket, TicketEvent, TicketState, Tier
from tickets.sla import (
    CASE_KINDS,
    ClockStatus,
    PhaseClock,
    SlaPolicy,
    TicketClocks,
    compute_clocks,
    load_sla_policy,
    ticket_tier,
)

DEFAULT_RULES = Path("config/sla.yaml")
# The rules table of the checkout this module runs from, suggested when DEFAULT_RULES is not found.
CHECKOUT_RULES = Path(__file__).resolve().parents[2] / DEFAULT_RULES

# Tickets in these states have no running clock left.
_FINISHED_STATES = frozenset({TicketState.CLOSED, TicketState.CANCELLED, TicketState.MERGED})


def _local(moment: datetime | None) -> str:
    if moment is None:
        return "—"
    return moment.astimezone(CHINA_TZ).strftime("%Y-%m-%d %H:%M")


def _duration(amount: timedelta) -> str:
    minutes = int(amount.total_seconds() // 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} 小时 {minutes} 分" if hours else f"{minutes} 分"


def _parse_at(value: str | None) -> datetime:
    if value is None:
        return datetime.now(timezone.utc)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"时间“{value}”格式不对，请写 ISO 8601，例如 2026-12-04T09:30+08:00") from None
    if moment.tzinfo is None:
        # An operator types Beijing time.
        moment = moment.replace(tzinfo=CHINA_TZ)
    return moment.astimezone(timezone.utc)


class MissingFile(Exception):
    """A rules or calendar file that does not exist; the message names the path and the fix."""


def _load_policy_and_calendar(rules_path: Path) -> tuple[SlaPolicy, WorkingCalendar]:
    # A missing file has no line to point at, so it gets its own message instead of "path:1".
    if not rules_path.is_file():
        example = CHECKOUT_RULES if CHECKOUT_RULES.is_file() else Path("/path/to/checkout") / DEFAULT_RULES
        raise MissingFile(
            f"找不到时限规则表 {rules_path}（完整路径 {rules_path.absolute()}）。\n"
            f"请在代码仓库根目录运行，或用 --rules 指定规则表的路径，例如 --rules {example}"
        )
    policy = load_sla_policy(rules_path)
    if policy.calendar_overrides and not Path(policy.calendar_overrides).is_file():
        raise MissingFile(
            f"找不到日历调整文件 {policy.calendar_overrides}：它由时限规则表 {rules_path} 的 calendar_overrides "
            f"指定（相对于规则表所在目录），请补上该文件或改正这一项"
        )
    overrides = load_calendar_overrides(policy.calendar_overrides) if policy.calendar_overrides else None
    return policy, WorkingCalendar.default(overrides, policy.working_hours)


async def _read_open_tickets(config_path: Path, limit: int) -> tuple[str, Tier, list[tuple[Ticket, list[TicketEvent]]]]:
    config = load_node_config(config_path)
    tier = Tier(config.tier)
    async with await TicketStore.open(config.database, config.node_id, config.region_code, tier=tier) as store:
        tickets = await store.list_tickets(limit=limit)
        open_tickets = []
        for ticket in tickets:
            if ticket.state in _FINISHED_STATES:
                continue
            open_tickets.append((ticket, await store.list_events(ticket.ticket_id)))
    return config.node_id, tier, open_tickets


def _status_text(clock: PhaseClock) -> str:
    if clock.is_open_breach:
        return "[red]已超时（督办）[/red]"
    if clock.warn:
        share = clock.used_share or 0.0
        return f"[yellow]预警：已用 {share:.0%}[/yellow]"
    return clock.status.label


def _notes(clock: PhaseClock) -> str:
    notes = []
    if clock.provisional:
        years = sorted({day.year for day in clock.provisional_days})
        notes.append(f"到期时间暂定（{'、'.join(map(str, years))} 年无节假日数据）")
    if clock.paused:
        notes.append(f"挂起 {_duration(clock.paused)}")
    for extension in clock.extensions:
        notes.append(f"已批准延期 {extension.amount} {extension.unit.label}")
    return "；".join(notes)


def _clock_table(node_id: str, now: datetime, results: list[tuple[Ticket, TicketClocks]], width: int) -> Table:
    # Ids and times stay whole; the start time, elapsed time and ticket state go first in a narrow console.
    columns = [
        FitColumn("工单号", whole=True), FitColumn("类别", min_width=8), FitColumn("当前状态", whole=True, drop_rank=3),
        FitColumn("阶段", min_width=4), FitColumn("时限", min_width=6), FitColumn("开始", whole=True, drop_rank=2),
        FitColumn("到期", whole=True), FitColumn("已用", min_width=6, drop_rank=1), FitColumn("状态", min_width=8),
        FitColumn("说明", min_width=8),
    ]
    rows = []
    for ticket, clocks in results:
        category = ticket.category.label
        if clocks.case_kind in CASE_KINDS:
            category += f"（{CASE_KINDS[clocks.case_kind]}）"
        for clock in clocks.clocks:
            if clock.status in (ClockStatus.NOT_STARTED, ClockStatus.STOPPED):
                continue
            rows.append([
                ticket.ticket_id, category, ticket.state.label, clock.phase.label, str(clock.rule.limit),
                _local(clock.started_at), _local(clock.due_at), _duration(clock.elapsed),
                _status_text(clock), _notes(clock),
            ])
    return fit_table(f"节点 {node_id} 未归档工单的时限（截至北京时间 {_local(now)}）", columns, rows, width)


@click.group(help="工单时限（SLA）：各阶段计时、预警、超时督办和工作日日历。")
def sla() -> None:
    # Only warnings and errors go to stderr, so stdout contains only the operator's output.
    configure_logging("WARNING")


@sla.command("check", help="列出本节点未归档工单的各阶段时限，标出即将超时的预警和已超时的督办候选。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件。")
@click.option("--at", "at_text", default=None, help="按哪个时刻计算，ISO 8601；不带时区时按北京时间。默认为现在。")
@click.option("--rules", "rules_path", default=DEFAULT_RULES, show_default=True, type=click.Path(path_type=Path),
              help="时限规则表（YAML）；不在代码仓库根目录运行时，请用此项指定路径。")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 100000), help="最多检查多少张工单。")
def check_command(config_path: Path, at_text: str | None, rules_path: Path, limit: int) -> None:
    now = _parse_at(at_text)
    try:
        policy, calendar = _load_policy_and_calendar(rules_path)
        node_id, tier, open_tickets = asyncio.run(_read_open_tickets(config_path, limit))
    except MissingFile as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except CalendarConfigError as exc:
        click.echo(f"时限规则或日历文件有误，请修改后重试：\n{exc}", err=True)
        sys.exit(2)
    except (ConfigError, StorageError) as exc:
        click.echo(f"无法读取工单：{exc}", err=True)
        sys.exit(2)

    results = [
        (ticket, compute_clocks(ticket.ticket_id, ticket.category, ticket_tier(events, tier), events, now, policy, calendar))
        for ticket, events in open_tickets
    ]
    console = operator_console()
    console.print(_clock_table(node_id, now, results, console.width))

    breached = [(ticket, clock) for ticket, clocks in results for clock in clocks.breached]
    warned = [(ticket, clock) for ticket, clocks in results for clock in clocks.warned]
    provisional = any(clock.provisional for _, clocks in results for clock in clocks.clocks)
    click.echo(f"共 {len(results)} 张未归档工单；{len(warned)} 个阶段预警，{len(breached)} 个阶段已超时（督办候选）。")
    for ticket, clock in breached:
        click.echo(f"督办候选：工单 {ticket.ticket_id} 的{clock.phase.label}阶段应于 {_local(clock.due_at)} 前完成，已超时。")
    if provisional:
        click.echo(
            "注意：部分到期时间是暂定的，因为相关年份没有节假日数据。请升级 chinesecalendar 软件包，"
            "或按国务院办公厅通知在日历调整文件中补录该年。"
        )


def _day_row(info: CalendarDay, package_source: str) -> tuple[str, ...]:
    source = "软件包" if info.source == package_source else info.source
    return (info.day.isoformat(), weekday_label(info.day), info.kind.label, info.holiday_name or "", source)


@sla.command("calendar", help="显示某年的工作日数据来源、覆盖范围、节假日、调休上班日和本地调整。")
@click.argument("year", metavar="年份", type=click.IntRange(1900, 2200))
@click.option("--rules", "rules_path", default=DEFAULT_RULES, show_default=True, type=click.Path(path_type=Path),
              help="时限规则表（YAML），从中读取上班时段和日历调整文件。")
def calendar_command(year: int, rules_path: Path) -> None:
    try:
        policy, calendar = _load_policy_and_calendar(rules_path)
    except MissingFile as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    except CalendarConfigError as exc:
        click.echo(f"时限规则或日历文件有误，请修改后重试：\n{exc}", err=True)
        sys.exit(2)

    data = calendar.data
    click.echo(f"节假日数据来源：{data.source}，覆盖 {data.first_year}—{data.last_year} 年。")
    click.echo(f"日历调整文件：{calendar.overrides.path or '未配置'}；上班时段：{calendar.hours}（北京时间）。")
    if data.first_year <= year <= data.last_year:
        click.echo(f"{year} 年：软件包已收录国务院办公厅的节假日安排。")
    elif year in calendar.overrides.years:
        click.echo(f"{year} 年：软件包未收录，由日历调整文件补录（依据：{calendar.overrides.years[year].source}）。")
    else:
        click.echo(
            f"{year} 年：没有节假日数据，按周一至周五上班推定，据此算出的到期时间都标为“暂定”。"
            "请升级 chinesecalendar 软件包，或在日历调整文件的 years 和 days 两节按通知补录该年。"
        )

    days = calendar.days_of_year(year)
    special = [info for info in days if info.kind not in (DayKind.WORKDAY, DayKind.WEEKEND)]
    if special:
        table = Table(title=f"{year} 年的节假日、调休上班日和本地调整（共 {len(special)} 天）")
        # "软件包" in the source column is the package named in the first output line.
        for column in ("日期", "星期", "类型", "名称", "来源"):
            table.add_column(column)
        for info in special:
            table.add_row(*_day_row(info, data.source))
        operator_console().print(table)

    working = sum(1 for info in days if info.is_working)
    guessed = "（暂定）" if any(info.provisional for info in days) else ""
    click.echo(f"{year} 年共 {working} 个工作日、{len(days) - working} 个休息日{guessed}。")
