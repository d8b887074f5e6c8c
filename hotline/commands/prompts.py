"""CLI: ``hotline prompts`` commands that render and check the Mandarin prompt audio."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from hotline.hold_music import write_hold_tone
from speech.build import (
    BuildLockTimeout,
    PromptOutcome,
    PromptStatus,
    build_prompts,
    check_prompts,
)
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


@prompts.command("build", help=(
    "为提示音目录中缺失或文本已修改的提示音合成音频，并写入清单 manifest.json。"
    "录音目录中以提示音编号命名的人工录音（如 welcome.wav）通过检查后替换合成的提示音。"
))
@click.option("--catalog", type=click.Path(path_type=Path), default=DEFAULT_CATALOG, show_default=True,
              help="提示音目录文件（YAML），相对于当前目录。")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_OUT_DIR,
              show_default=True, help="音频输出目录，相对于当前目录。")
@click.option("--recorded", "recorded_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="人工录音目录；默认是提示音目录文件旁的 recorded/（如 prompts/recorded）。")
@click.option("--force", is_flag=True, help="忽略清单，重新合成全部提示音。")
def build(catalog: Path, out_dir: Path, recorded_dir: Path | None, force: bool) -> None:
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
            report = build_prompts(catalog, out_dir, force=force, on_start=on_start, on_progress=on_progress,
                                   recorded_dir=recorded_dir)
        except (CatalogError, BuildLockTimeout) as error:
            progress.stop()
            click.echo(str(error), err=True)
            sys.exit(2)

    # The queue's music on hold lives beside the prompts, in the folder the switch copies.
    write_hold_tone(out_dir)

    for outcome in report.failed:
        click.echo(outcome.message, err=True)
    for rejection in report.rejected_recordings:
        click.echo(rejection.message, err=True)
    click.echo(report.summary_zh())
    # A rejected recording leaves a playable synthesised prompt, but the operator must fix it.
    sys.exit(0 if report.ok and not report.rejected_recordings else 1)


@prompts.command("check", help="检查每条提示音的音频文件能否由 Asterisk 播放，且与目录中的文本一致。")
@click.option("--catalog", type=click.Path(path_type=Path), default=DEFAULT_CATALOG, show_default=True,
              help="提示音目录文件（YAML），相对于当前目录。")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_OUT_DIR,
              show_default=True, help="音频目录，相对于当前目录。")
@click.option("--recorded", "recorded_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="人工录音目录；默认是提示音目录文件旁的 recorded/（如 prompts/recorded）。")
def check(catalog: Path, out_dir: Path, recorded_dir: Path | None) -> None:
    try:
        report = check_prompts(catalog, out_dir, recorded_dir=recorded_dir)
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
