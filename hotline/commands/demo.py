"""CLI: ``hotline demo`` places scripted calls through the real stack and prints what happened."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path

import click
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

_OUTCOME_WORDS = {
    "answered": "已接通坐席",
    "abandoned_in_menu": "菜单中挂机",
    "abandoned_in_queue": "排队中挂机",
    "no_agent": "无空闲坐席",
    "completed": "流程结束",
    "failed": "失败",
}


_ENDED_BY_WORDS = {EndedBy.CALLER: "来电者", EndedBy.REMOTE: "热线"}


def _summary_table(reports: list[CallReport]) -> Table:
    table = Table(title="12349 演示通话结果", show_lines=True)
    for column in ("序号", "来电", "来电号码", "按键", "路径", "坐席", "结果", "挂机方", "工单号", "已到市级", "检查"):
        table.add_column(column)

    for number, report in enumerate(reports, start=1):
        record = report.record
        path = "→".join(record.path) if record else "—"
        outcome = _OUTCOME_WORDS.get(record.outcome.value, record.outcome.value) if record and record.outcome else "—"
        reached = "—" if not report.script.expects_ticket else ("是" if report.city_ticket else "否")
        verdict = "通过" if report.passed else "不通过：" + "；".join(report.problems)
        keys = "、".join(step.digit for step in report.script.steps if isinstance(step, Dtmf)) or "—"
        ended_by = _ENDED_BY_WORDS.get(report.sipp.ended_by) if report.sipp and report.sipp.ended_by else "—"
        table.add_row(str(number), report.script.label, report.script.caller_masked, keys, path,
                      (record.agent_id or "—") if record else "—", outcome, ended_by,
                      (record.ticket_id or "—") if record else "—", reached, verdict)
    return table


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
    except KeyboardInterrupt:
        console.print("演示被中断，已停止所有启动的进程。")
        sys.exit(130)
    except (DemoError, AsteriskError, BrokerError, SippError) as exc:
        console.print(f"[red]演示失败[/]：{exc}")
        console.print(f"日志和数据在 {work_dir}")
        sys.exit(1)

    console.print(_summary_table(reports))
    failed = [report for report in reports if not report.passed]
    elapsed = time.monotonic() - started
    if failed:
        console.print(f"[red]{len(failed)} 通来电与预期不符[/]，日志和数据在 {work_dir}（用时 {elapsed:.0f} 秒）")
        sys.exit(1)
    tickets = sum(1 for report in reports if report.city_ticket)
    console.print(f"全部 {len(reports)} 通来电符合预期，{tickets} 张工单已到达市级（用时 {elapsed:.0f} 秒）。")
