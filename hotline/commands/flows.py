"""CLI: ``hotline flows`` commands for admins who edit call flows."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ivr.flow import FlowError, load_flow
from speech.catalog import load_catalog


@click.group(help="检查和管理呼叫流程（YAML）。")
def flows() -> None:
    pass


@flows.command("check", help="检查流程文件的格式和跳转关系；有错时逐条列出“文件:行:列: 问题”。")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--catalog", type=click.Path(path_type=Path), default=Path("prompts/zh-CN.yaml"),
              show_default=True, help="提示音目录文件，用来核对流程里用到的提示音。")
def check(files: tuple[Path, ...], catalog: Path) -> None:
    prompt_ids = set(load_catalog(catalog)) if catalog.exists() else None
    if prompt_ids is None:
        click.echo(f"提示：找不到提示音目录 {catalog}，本次不核对提示音。", err=True)

    failed = 0
    for path in files:
        if not path.exists():
            click.echo(f"{path}: 文件不存在，请检查路径", err=True)
            failed += 1
            continue
        try:
            flow = load_flow(path, prompt_ids=prompt_ids)
        except FlowError as exc:
            failed += 1
            for issue in exc.issues:
                click.echo(str(issue), err=True)
            click.echo(f"{path}: 共 {len(exc.issues)} 处问题，流程未通过检查。", err=True)
            continue
        click.echo(f"{path}: 通过检查（流程 {flow.flow_id}，{len(flow.nodes)} 个节点，版本 {flow.version[:12]}）")

    sys.exit(1 if failed else 0)
