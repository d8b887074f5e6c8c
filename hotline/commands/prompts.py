"""CLI: ``hotline prompts`` commands that render and check the Mandarin prompt audio."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from speech.build import BuildLockTimeout, PromptOutcome, PromptStatus, build_prompts, check_prompts
from speech.catalog import CatalogError

DEFAULT_CATALOG = Path("prompts/zh-CN.yaml")
DEFAULT_OUT_DIR = Path("prompts/audio/zh-CN")

_STATUS_WORDS = {
    PromptStatus.BUILT: "已生成",
    PromptStatus.UP_TO_DATE: "已是最新",
    PromptStatus.FAILED: "失败",
}


@click.group(help="生成和检查普通话提示音（Asterisk 可播放的 8 kHz 单声道 16 位 WAV）。")
def prompts() -> None:
    pass


@prompts.command("build", help="为提示音目录中缺失或文本已修改的提示音合成音频，并写入清单 manifest.json。")
@click.option("--catalog", type=click.Path(path_type=Path), default=DEFAULT_CATALOG, show_default=True,
              help="提示音目录文件（YAML），相对于当前目录。")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_OUT_DIR,
              show_default=True, help="音频输出目录，相对于当前目录。")
@click.option("--force", is_flag=True, help="忽略清单，重新合成全部提示音。")
def build(catalog: Path, out_dir: Path, force: bool) -> None:
    console = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=False,
    ) as progress:
        task = progress.add_task("生成提示音", total=None)

        def on_start(total: int) -> None:
            progress.update(task, total=total)

        def on_progress(outcome: PromptOutcome) -> None:
            progress.update(task, advance=1, description=f"{outcome.prompt_id}：{_STATUS_WORDS[outcome.status]}")

        try:
            report = build_prompts(catalog, out_dir, force=force, on_start=on_start, on_progress=on_progress)
        except (CatalogError, BuildLockTimeout) as error:
            progress.stop()
            click.echo(str(error), err=True)
            sys.exit(2)

    for outcome in report.failed:
        click.echo(outcome.message, err=True)
    click.echo(report.summary_zh())
    sys.exit(0 if report.ok else 1)


@prompts.command("check", help="检查每条提示音的音频文件能否由 Asterisk 播放，且与目录中的文本一致。")
@click.option("--catalog", type=click.Path(path_type=Path), default=DEFAULT_CATALOG, show_default=True,
              help="提示音目录文件（YAML），相对于当前目录。")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_OUT_DIR,
              show_default=True, help="音频目录，相对于当前目录。")
def check(catalog: Path, out_dir: Path) -> None:
    try:
        report = check_prompts(catalog, out_dir)
    except CatalogError as error:
        click.echo(str(error), err=True)
        sys.exit(2)

    for problem in report.problems:
        click.echo(f"{problem.prompt_id}：{problem.message}", err=True)
    if report.ok:
        click.echo(f"提示音检查通过：{report.checked} 条全部可播放且与文本一致（{out_dir}）。")
        sys.exit(0)
    click.echo(f"提示音检查未通过：{report.checked} 条中有 {len(report.problems)} 条有问题，修复后请重新运行本命令。")
    sys.exit(1)
