"""CLI: ``hotline flows`` commands for admins who edit call flows."""

from __future__ import annotations

import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.table import Table

from hotline.commands.console import operator_console
from hotline.config import ConfigError, load_node_config
from ivr.diagram import DiagramError, render_flow
from ivr.flow import FlowError, load_flow
from ivr.flow_registry import ActivationResult, FlowRegistry, FlowRegistryError
from speech.catalog import CatalogError, load_catalog

CHINA = ZoneInfo("Asia/Shanghai")
ACTION_LABELS = {"activate": "生效", "rollback": "回滚"}


class _CommandFailed(click.ClickException):
    """An operator error: printed in Chinese on stderr, exit status 1."""

    def show(self, file=None) -> None:
        click.echo(f"错误：{self.format_message()}", err=True)


@click.group(help="检查、生效、回滚和绘制呼叫流程（YAML）。")
def flows() -> None:
    pass


@flows.command("check", help="检查流程文件的格式和跳转关系；有错时逐条列出“文件:行:列: 问题”。")
@click.argument("files", metavar="流程文件...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--catalog", type=click.Path(path_type=Path), default=Path("prompts/zh-CN.yaml"),
              show_default=True, help="提示音目录文件，用来核对流程里用到的提示音。")
@click.option("--audio-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="提示音音频目录（如 prompts/audio/zh-CN）；给出时还核对每个提示音都有音频文件。")
def check(files: tuple[Path, ...], catalog: Path, audio_dir: Path | None) -> None:
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
            flow = load_flow(path, prompt_ids=prompt_ids, audio_dir=audio_dir)
        except FlowError as exc:
            failed += 1
            for issue in exc.issues:
                click.echo(str(issue), err=True)
            click.echo(f"{path}: 共 {len(exc.issues)} 处问题，流程未通过检查。", err=True)
            continue
        click.echo(f"{path}: 通过检查（流程 {flow.flow_id}，{len(flow.nodes)} 个节点，版本 {flow.version[:12]}）")

    sys.exit(1 if failed else 0)


def _open_registry(config_path: Path) -> tuple[FlowRegistry, Path]:
    """Open the version store of the county node that ``config_path`` configures."""
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        raise _CommandFailed(str(exc)) from exc
    if config.telephony is None:
        raise _CommandFailed(f"配置文件 {config_path} 不是县级节点的配置（没有 telephony 一节），只有县级节点有呼叫流程")

    try:
        catalog = load_catalog(config.telephony.prompt_catalog)
    except CatalogError as exc:
        raise _CommandFailed(f"提示音目录无法读取：{exc}") from exc
    return FlowRegistry.for_database(config.database, prompt_ids=set(catalog)), config.telephony.flow


def _echo_result(result: ActivationResult) -> None:
    if result.status == "rejected":
        for issue in result.issues:
            click.echo(str(issue), err=True)
        click.echo(f"版本 {result.version[:12]} 未通过检查（共 {len(result.issues)} 处问题），没有生效；"
                   "正在运行的版本保持不变。请改正后重试。", err=True)
        sys.exit(1)

    activation = result.activation
    assert activation is not None
    if result.status == "unchanged":
        click.echo(f"版本 {result.version[:12]} 已经是当前生效的版本，无需改动。")
        return
    previous = f"（上一个版本 {activation.previous[:12]}）" if activation.previous else ""
    click.echo(f"已生效：版本 {activation.version[:12]}，第 {activation.seq} 次变更，"
               f"{_local(activation.activated_at)}（北京时间）{previous}。运行中的节点将在 1 秒内对新来电使用此版本。")


def _local(moment) -> str:
    return moment.astimezone(CHINA).strftime("%Y-%m-%d %H:%M:%S")


@flows.command("reload", help="检查节点配置中的流程文件，通过后立即生效；未通过时正在运行的版本不变。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="县级节点配置文件。")
@click.option("--operator", default=None, help="操作人（记入版本历史）。")
@click.option("--reason", default=None, help="变更原因（记入版本历史）。")
def reload(config_path: Path, operator: str | None, reason: str | None) -> None:
    registry, flow_path = _open_registry(config_path)
    try:
        result = registry.activate_from_file(flow_path, operator=operator, reason=reason)
    except FileNotFoundError as exc:
        raise _CommandFailed(f"找不到流程文件 {flow_path}，请检查配置中的 telephony.flow") from exc
    except FlowRegistryError as exc:
        raise _CommandFailed(str(exc)) from exc
    _echo_result(result)


@flows.command("rollback", help="让版本库中的一个旧版本重新生效；不写 --to 时回到上一个版本。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="县级节点配置文件。")
@click.option("--to", "to", default=None, help="要恢复的版本号（完整哈希或至少 4 位前缀，见 hotline flows versions）。")
@click.option("--operator", default=None, help="操作人（记入版本历史）。")
@click.option("--reason", default=None, help="回滚原因（记入版本历史）。")
def rollback(config_path: Path, to: str | None, operator: str | None, reason: str | None) -> None:
    registry, _ = _open_registry(config_path)
    try:
        result = registry.rollback(to, operator=operator, reason=reason)
    except FlowRegistryError as exc:
        raise _CommandFailed(str(exc)) from exc
    _echo_result(result)
    if result.activated:
        click.echo("注意：流程文件本身没有改动；下次修改并保存流程文件时，修改后的内容会自动生效。")


@flows.command("versions", help="列出流程版本的生效历史，最新的在最上面。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="县级节点配置文件。")
def versions(config_path: Path) -> None:
    registry, _ = _open_registry(config_path)
    try:
        history = registry.history()
        stored = {item.version: item for item in registry.versions()}
    except FlowRegistryError as exc:
        raise _CommandFailed(str(exc)) from exc
    if not history:
        click.echo(f"版本库 {registry.store_dir} 里还没有生效过的流程。运行 hotline flows reload 或启动节点后会自动记录。")
        return

    current = stored.get(history[-1].version)
    title = f"流程 {current.flow_id} 的版本历史" if current else "流程版本历史"
    table = Table(title=title, caption=f"版本库 {registry.store_dir}")
    table.add_column("序号", no_wrap=True)
    table.add_column("版本", no_wrap=True, min_width=12)
    table.add_column("生效时间（北京时间）", no_wrap=True)
    table.add_column("操作", no_wrap=True)
    table.add_column("操作人", no_wrap=True)
    table.add_column("原因", overflow="fold")
    active_seq = history[-1].seq
    for record in reversed(history):
        marker = "（当前）" if record.seq == active_seq else ""
        table.add_row(f"{record.seq}{marker}", record.version[:12], _local(record.activated_at), ACTION_LABELS.get(record.action, record.action),
                      record.operator or "", record.reason or "")
    operator_console().print(table)


@flows.command("draw", help="把流程画成 SVG 和 PNG 图（节点写提示音开头，连线写按键和含义）。")
@click.argument("file", metavar="流程文件", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("."), show_default=True,
              help="输出目录，生成 flow-<流程编号>.svg 和 .png。")
@click.option("--catalog", type=click.Path(path_type=Path), default=Path("prompts/zh-CN.yaml"),
              show_default=True, help="提示音目录文件，节点上显示提示音文字。")
def draw(file: Path, out_dir: Path, catalog: Path) -> None:
    prompt_texts: dict[str, str] = {}
    if catalog.exists():
        prompt_texts = {prompt.prompt_id: prompt.text for prompt in load_catalog(catalog).prompts}
    else:
        click.echo(f"提示：找不到提示音目录 {catalog}，图上只显示提示音编号。", err=True)

    if not file.exists():
        raise _CommandFailed(f"找不到流程文件 {file}，请检查路径")
    try:
        flow = load_flow(file, prompt_ids=set(prompt_texts) or None)
    except FlowError as exc:
        for issue in exc.issues:
            click.echo(str(issue), err=True)
        raise _CommandFailed(f"{file}: 共 {len(exc.issues)} 处问题，请先改正再画图") from exc

    try:
        written = render_flow(flow, out_dir, prompt_texts=prompt_texts)
    except DiagramError as exc:
        raise _CommandFailed(str(exc)) from exc
    for path in written:
        click.echo(f"已生成 {path}")
