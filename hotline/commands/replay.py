"""CLI: ``hotline replay`` runs call scripts and replays recorded calls against a candidate flow.

Exit codes: 0 when every script passed, 1 when a script failed or could not be read, 2 when
the configuration, the database or a flow file cannot be used.
"""

from __future__ import annotations

import asyncio
import time
from datetime import date, datetime
from datetime import time as day_time
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from hotline.config import ConfigError, load_node_config
from hotline.demo import DemoError, fresh_work_dir
from hotline.logging import configure_logging
from ivr.flow import Flow, FlowError, load_flow
from replay.offline import ActualCall, compare, prompt_lengths, run_offline
from replay.scripts import CallScript, ScriptError, load_script, script_files
from replay.what_if import render_what_if, what_if
from storage.errors import StorageError
from storage.ticket_store import TicketStore

CHINA = ZoneInfo("Asia/Shanghai")
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FLOW = REPO_ROOT / "flows" / "12349.yaml"


class _Usage(click.ClickException):
    """An operator error about the inputs: printed in Chinese, exit status 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"错误：{self.format_message()}", err=True)


def _flow(path: Path, what: str) -> Flow:
    try:
        return load_flow(path)
    except FlowError as exc:
        raise _Usage(f"{what} {path} 没有通过检查：\n{exc}\n请先用 hotline flows check {path} 修正") from exc
    except OSError as exc:
        raise _Usage(f"无法读取{what} {path}：{exc.strerror}，请检查路径") from exc


def _load_scripts(files: tuple[Path, ...]) -> tuple[list[CallScript], int]:
    scripts: list[CallScript] = []
    broken = 0
    for path in script_files(files):
        try:
            scripts.append(load_script(path))
        except ScriptError as exc:
            broken += 1
            for issue in exc.issues:
                click.echo(str(issue), err=True)
    return scripts, broken


def _report(script: CallScript, actual: ActualCall | None, *, call_ended: bool = True) -> bool:
    problems = ["这通电话没有留下通话记录"] if actual is None else compare(script.expect, actual)
    if not call_ended:
        problems.insert(0, "SIPp 通话没有正常结束")
    if not problems:
        click.echo(f"通过  {script.name}（{script.source}）")
        return True
    click.echo(f"失败  {script.name}（{script.source}）")
    for problem in problems:
        click.echo(f"    {problem}")
    return False


async def _offline(scripts: list[CallScript], flow: Flow) -> int:
    lengths = prompt_lengths()
    passed = 0
    for script in scripts:
        passed += _report(script, await run_offline(flow, script, lengths=lengths))
    return passed


async def _live(scripts: list[CallScript], work_dir: Path, parallel: int) -> int:
    from replay.live import ReplayStack

    passed = 0
    with ReplayStack(work_dir) as stack:
        results = await stack.run(scripts, parallel=parallel)
    for script, (sipp, actual) in zip(scripts, results, strict=True):
        passed += _report(script, actual, call_ended=sipp is not None and sipp.completed)
    return passed


def _since(value: str) -> datetime:
    try:
        day = date.fromisoformat(value)
    except ValueError as exc:
        raise _Usage(f"--since 的日期“{value}”格式不对，请写成 2026-12-01（北京时间）") from exc
    return datetime.combine(day, day_time(0, 0), tzinfo=CHINA).astimezone(ZoneInfo("UTC"))


async def _what_if(candidate_path: Path, since: datetime, config_path: Path, examples: int) -> None:
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        raise _Usage(str(exc)) from exc
    candidate = _flow(candidate_path, "候选流程")
    current = None
    if config.telephony is not None and config.telephony.flow.exists():
        current = _flow(config.telephony.flow, "现行流程")
    if not config.database.exists():
        raise _Usage(f"找不到数据库 {config.database}，请检查 {config_path} 里的 database")
    try:
        async with await TicketStore.open(config.database, config.node_id, config.region_code) as store:
            records = await store.list_calls(limit=1_000_000, since=since)
    except StorageError as exc:
        raise _Usage(f"无法读取数据库 {config.database}：{exc}") from exc
    report = await what_if(records, candidate, lengths=prompt_lengths(), current=current)
    click.echo(f"候选流程 {candidate_path}（版本 {candidate.version[:12]}），"
               f"{since.astimezone(CHINA):%Y-%m-%d} 起的通话：")
    for line in render_what_if(report, examples=examples):
        click.echo(line)


@click.command("replay", help="运行通话脚本（YAML）并逐个报告通过或失败；或用 --what-if 把已录通话在候选流程上离线重放。")
@click.argument("files", metavar="脚本文件...", nargs=-1, type=click.Path(path_type=Path))
@click.option("--offline", is_flag=True, help="不打真实电话，在流程引擎里离线运行脚本（坐席总是空闲）。")
@click.option("--flow", "flow_path", type=click.Path(path_type=Path), default=DEFAULT_FLOW, show_default=True,
              help="--offline 时使用的流程文件。")
@click.option("--work-dir", type=click.Path(path_type=Path, file_okay=False), default=REPO_ROOT / "var" / "replay",
              show_default=True, help="真实通话时演示环境（Asterisk、县级、市级）的工作目录，每次运行前清空。")
@click.option("--parallel", type=click.IntRange(1, 8), default=1, show_default=True,
              help="真实通话时同时进行的通话数；主叫号码相同的脚本不会同时进行。")
@click.option("--what-if", "what_if_flow", type=click.Path(path_type=Path), default=None,
              help="候选流程文件：把 --config 节点录下的通话在它上面离线重放，统计路径改变的通话。")
@click.option("--since", default=None, help="与 --what-if 一起用：只重放这一天（北京时间，如 2026-12-01）起的通话。")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="与 --what-if 一起用：县级节点的配置文件（如 var/demo/county.yaml）。")
@click.option("--examples", type=click.IntRange(0, 100), default=5, show_default=True, help="列出几通路径改变的通话。")
def replay(files: tuple[Path, ...], offline: bool, flow_path: Path, work_dir: Path, parallel: int,
           what_if_flow: Path | None, since: str | None, config_path: Path | None, examples: int) -> None:
    if offline or what_if_flow is not None:
        # An offline run plays emergencies and hang-ups on purpose; the engine's warnings
        # about them would bury the report.
        configure_logging("ERROR")

    if what_if_flow is not None:
        if config_path is None or since is None:
            raise _Usage("--what-if 需要同时给出 --config（节点配置文件）和 --since（起始日期，如 2026-12-01）")
        asyncio.run(_what_if(what_if_flow, _since(since), config_path, examples))
        return

    if not files:
        raise _Usage("请给出通话脚本文件或目录，例如 hotline replay tests/replay/")
    missing = [path for path in files if not path.exists()]
    if missing:
        raise _Usage("找不到脚本：" + "、".join(str(path) for path in missing) + "，请检查路径")
    scripts, broken = _load_scripts(files)

    started = time.monotonic()
    if offline:
        passed = asyncio.run(_offline(scripts, _flow(flow_path, "流程")))
        mode = f"离线（流程 {flow_path}）"
    else:
        try:
            passed = asyncio.run(_live(scripts, fresh_work_dir(work_dir), parallel))
        except DemoError as exc:
            raise _Usage(f"演示环境没有启动：{exc}") from exc
        mode = "真实通话（SIPp → Asterisk → 县级节点）"

    failed = len(scripts) - passed + broken
    click.echo(f"{mode}：共 {len(scripts) + broken} 个脚本，通过 {passed} 个，失败 {failed} 个，"
               f"用时 {time.monotonic() - started:.0f} 秒。")
    if failed:
        raise SystemExit(1)
