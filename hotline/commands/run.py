"""CLI: ``hotline run`` runs one node (county, city, province or ministry) until stopped."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from pathlib import Path

import click
import structlog

from acd.roster import RosterError
from acd.settings import AcdSettingsError
from hotline.config import TIER_LABELS, ConfigError, load_node_config
from hotline.logging import configure_logging
from hotline.nodes import CountyNode, NodeStartError, ParentNode
from hwd_bridge.ami_errors import AmiAuthenticationError
from ivr.flow import FlowError
from ivr.flow_registry import FlowRegistryError
from tickets.calendar import CalendarConfigError
from speech.catalog import CatalogError
from storage.errors import StorageError
from tier_sync.node_lock import NodeAlreadyRunning

log = structlog.get_logger(__name__)


async def _run_node(config_path: Path, ready_file: Path | None) -> None:
    config = load_node_config(config_path, require_files=True)
    node = CountyNode(config) if config.tier == "county" else ParentNode(config)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    # Start-up may wait for Asterisk or a broker; a stop signal must still end it at once.
    starting = asyncio.create_task(node.start())
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
            click.echo(f"节点 {config.node_id} 在启动过程中收到停止信号，已停止。", err=True)
            return
        starting.result()

        if ready_file is not None:
            ready_file.write_text("ready\n", encoding="utf-8")
        click.echo(f"{TIER_LABELS[config.tier]}节点 {config.node_id} 已启动，按 Ctrl-C 停止。", err=True)
        await stopping
    finally:
        stopping.cancel()
        await node.stop()


@click.command(help="运行一个热线节点（县级接听来电；市级及以上接收下级上报的工单），直到收到停止信号。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path),
              help="节点配置文件（YAML）。")
@click.option("--ready-file", type=click.Path(path_type=Path), default=None,
              help="节点就绪后写入此文件，供启动脚本等待。")
@click.option("--log-level", default="INFO", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False), help="日志级别。")
@click.option("--json-logs/--text-logs", default=False, help="日志输出为 JSON（每行一条）或可读文本。")
def run(config_path: Path, ready_file: Path | None, log_level: str, json_logs: bool) -> None:
    configure_logging(log_level, json=json_logs)
    try:
        asyncio.run(_run_node(config_path, ready_file))
    except (ConfigError, RosterError, CatalogError, AmiAuthenticationError, FlowRegistryError,
            CalendarConfigError, NodeStartError, AcdSettingsError) as exc:
        click.echo(f"启动失败：{exc}", err=True)
        sys.exit(2)
    except FlowError as exc:
        click.echo(f"启动失败：呼叫流程未通过检查：\n{exc}", err=True)
        sys.exit(2)
    except NodeAlreadyRunning as exc:
        click.echo(f"启动失败：{exc}", err=True)
        sys.exit(3)
    except StorageError as exc:
        click.echo(f"启动失败：数据库错误：{exc}", err=True)
        sys.exit(4)
