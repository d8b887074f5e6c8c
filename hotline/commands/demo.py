"""CLI: ``hotline demo`` places scripted calls through the real stack and prints what happened."""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from hotline.commands.console import operator_console
from hotline.demo import (
    CallReport,
    DemoError,
    DemoStack,
    collect_report,
    default_work_dir,
    fresh_work_dir,
    standard_calls,
    wait_for_city,
)
from hotline.logging import configure_logging
from stack.asterisk import AsteriskError
from stack.mosquitto import BrokerError
from stack.sipp import Dtmf, EndedBy, SippError



_ENDED_BY_WORDS = {EndedBy.CALLER: "来电者", EndedBy.REMOTE: "热线"}


def _summary_table(reports: Sequence[CallReport]) -> Table:
    """Build the per-call result table, narrow enough for a 100-column terminal."""
    table = Table(title="12349 演示通话结果", show_lines=True)
    for column in ("序号", "来电", "按键", "路径", "坐席", "结果", "挂机方", "检查"):
        table.add_column(column, overflow="fold")

    for number, report in enumerate(reports, start=1):
        record = report.record
        # Spaces around the arrows let a long path wrap between flow nodes.
        path = " → ".join(record.path) if record else "—"
        outcome = record.outcome.label if record and record.outcome else "—"
        verdict = "通过" if report.passed else "不通过：" + "；".join(report.problems)
        keys = "、".join(step.digit for step in report.script.steps if isinstance(step, Dtmf)) or "—"
        ended_by = _ENDED_BY_WORDS.get(report.sipp.ended_by) if report.sipp and report.sipp.ended_by else "—"
        table.add_row(str(number), f"{report.script.label}\n{report.script.caller_masked}", keys, path,
                      (record.agent_id or "—") if record else "—", outcome, ended_by, verdict)
    return table


def _ids_table(reports: Sequence[CallReport]) -> Table:
    """Build the table of each call's id and its ticket id at the county and at the city."""
    table = Table(title="通话编号和工单号")
    table.add_column("序号")
    for column in ("通话编号", "县级工单号", "市级工单号"):
        table.add_column(column, no_wrap=True)

    for number, report in enumerate(reports, start=1):
        call_id = report.record.call_id if report.record else "县级无通话记录"
        county = report.county_ticket.ticket_id if report.county_ticket else "—"
        if report.city_ticket:
            city = report.city_ticket.ticket_id
        elif report.county_ticket:
            city = "未到达市级"
        else:
            city = "—"
        table.add_row(str(number), call_id, county, city)
    return table


@dataclass(frozen=True, slots=True)
class NextStep:
    """One command an operator can run on the data the demo left behind, and what it shows."""

    purpose: str
    command: str


def _shell_path(path: Path, cwd: Path) -> str:
    """Return ``path`` relative to ``cwd`` when it lies below it, quoted for a POSIX shell."""
    try:
        display_path = path.relative_to(cwd)
    except ValueError:
        display_path = path
    return shlex.quote(str(display_path))


def next_steps(reports: Sequence[CallReport], county_config: Path, city_config: Path, *,
               hotline_command: str, cwd: Path) -> list[NextStep]:
    """List commands that inspect the finished demo's tickets and agent decisions.

    The ticket and call ids come from ``reports``. A command is left out when no call
    produced what it needs: no ticket at the city, or no call answered by an agent.
    """
    county = _shell_path(county_config, cwd)
    city = _shell_path(city_config, cwd)
    steps = [NextStep("县级的全部工单", f"{hotline_command} tickets list --config {county}")]

    synced = next((report.city_ticket for report in reports if report.city_ticket), None)
    if synced is not None:
        steps.append(NextStep(f"工单 {synced.ticket_id} 上报到市级后的全部事件",
                              f"{hotline_command} tickets show {shlex.quote(synced.ticket_id)} --config {city}"))

    answered = next((report.record for report in reports if report.record and report.record.agent_id), None)
    if answered is not None:
        assert answered.agent_id is not None
        steps.append(NextStep(f"来电 {answered.call_id} 为什么分给了坐席 {answered.agent_id}",
                              f"{hotline_command} acd explain {shlex.quote(answered.call_id)} --config {county}"))
        steps.append(NextStep(f"坐席 {answered.agent_id} 在演示中的状态变化",
                              f"{hotline_command} acd events {shlex.quote(answered.agent_id)} --config {county}"))
    return steps


def _hotline_command(cwd: Path) -> str:
    """Return how the operator can start this CLI: the virtualenv's script, else ``hotline``."""
    script = Path(sys.executable).parent / "hotline"
    return _shell_path(script, cwd) if script.is_file() else "hotline"


def _print_next_steps(console: Console, steps: Sequence[NextStep], work_dir: Path) -> None:
    console.print(f"演示数据保留在 {work_dir}，下次演示前清空。接下来可以运行：", highlight=False)
    for step in steps:
        console.print(f"  # {step.purpose}", style="dim", highlight=False)
        # soft_wrap keeps a long command on one line, so it can be copied whole.
        console.print(f"  {step.command}", soft_wrap=True, highlight=False, markup=False)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@click.command(help="用真实的 Asterisk、SIPp 和 mosquitto 演示：县级接听脚本化来电、生成工单并上报市级。")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="演示数据目录（数据库、日志、配置）；默认 var/demo，每次运行前清空。")
def demo(work_dir: Path | None) -> None:
    configure_logging("WARNING")
    # Stop everything on Ctrl-C or SIGTERM, even when started from a shell that ignores SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    console = operator_console()
    work_dir = fresh_work_dir(work_dir or default_work_dir())
    scripts = standard_calls()
    started = time.monotonic()

    try:
        with DemoStack(work_dir) as stack:
            console.print(f"[bold]演示环境已启动[/]：Asterisk（SIP 端口 {stack.asterisk.sip_port}）、县级和市级节点、两名坐席。")
            results = []
            for number, script in enumerate(scripts, start=1):
                console.print(f"第 {number}/{len(scripts)} 通来电：{script.label} …")
                results.append(stack.place_call(script))
            asyncio.run(wait_for_city(work_dir))
            reports = asyncio.run(collect_report(work_dir, scripts, results))
            county_config, city_config = stack.county_config, stack.city_config
    except KeyboardInterrupt:
        console.print("演示被中断，已停止所有启动的进程。")
        sys.exit(130)
    except (DemoError, AsteriskError, BrokerError, SippError) as exc:
        console.print(f"[red]演示失败[/]：{exc}")
        console.print(f"日志和数据在 {work_dir}")
        sys.exit(1)

    console.print(_summary_table(reports))
    console.print(_ids_table(reports))
    failed = [report for report in reports if not report.passed]
    elapsed = time.monotonic() - started
    if failed:
        console.print(f"[red]{len(failed)} 通来电与预期不符[/]，日志和数据在 {work_dir}（用时 {elapsed:.0f} 秒）")
    else:
        tickets = sum(1 for report in reports if report.city_ticket)
        console.print(f"全部 {len(reports)} 通来电符合预期，{tickets} 张工单已到达市级（用时 {elapsed:.0f} 秒）。")

    console.print()
    cwd = Path.cwd()
    assert county_config is not None and city_config is not None
    steps = next_steps(reports, county_config, city_config, hotline_command=_hotline_command(cwd), cwd=cwd)
    _print_next_steps(console, steps, work_dir)
    if failed:
        sys.exit(1)
