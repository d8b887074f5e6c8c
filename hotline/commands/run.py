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
from hotline.config import TIER_LABELS, ConfigError, NodeConfig, load_node_config
from hotline.disk_space import DEFAULT_MIN_FREE_MB, DiskSpaceLow, check_free_space
from hotline.logging import configure_logging
from hotline.nodes import NodeStartError, ParentNode
from hotline.standby import FailoverCountyNode
from hwd_bridge.ami_errors import AmiAuthenticationError
from ivr.flow import FlowError
from ivr.flow_registry import FlowRegistryError
from tickets.calendar import CalendarConfigError
from speech.catalog import CatalogError
from storage.errors import StorageError, is_storage_full
from tier_sync.node_lock import NodeAlreadyRunning

log = structlog.get_logger(__name__)


_MB = 1024 * 1024


def _build_node(config: NodeConfig, config_path: Path, *, standby: bool,
                min_free_mb: int) -> FailoverCountyNode | ParentNode:
    """Return the node to run; raise ``ConfigError`` for a standby the config does not allow."""
    if config.tier != "county":
        if standby:
            raise ConfigError(f"配置文件 {config_path}：只有县级节点可以运行备用控制器（--standby），"
                              f"{TIER_LABELS[config.tier]}节点请去掉 --standby")
        return ParentNode(config)

    assert config.telephony is not None
    if standby and config.telephony.standby_fastagi is None:
        raise ConfigError(f"配置文件 {config_path}：以 --standby 运行备用控制器需要 telephony.standby_fastagi"
                          f"（备用控制器的 FastAGI 端口，须与 Asterisk 拨号方案中的备用地址一致），请补上这一项")
    return FailoverCountyNode(config, standby=standby, min_free_bytes=min_free_mb * _MB)


async def _run_node(config_path: Path, ready_file: Path | None, *, standby: bool, min_free_mb: int) -> None:
    config = load_node_config(config_path, require_files=True)
    node = _build_node(config, config_path, standby=standby, min_free_mb=min_free_mb)
    # Reject start-up on a disk without room for the next tickets.
    space = check_free_space(config.database, min_free_mb * _MB)
    log.info("database disk space checked", folder=str(space.folder), free_bytes=space.free_bytes,
             min_free_bytes=min_free_mb * _MB)

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
        role = "（备用控制器）" if standby else ""
        click.echo(f"{TIER_LABELS[config.tier]}节点 {config.node_id}{role} 已启动，按 Ctrl-C 停止。", err=True)
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
@click.option("--standby", is_flag=True, default=False,
              help="作为县级节点的备用控制器运行：监听 telephony.standby_fastagi，主控制器不可用时接听新来电，"
                   "并在主控制器停止后接管向上级上报。")
@click.option("--min-free-mb", type=click.IntRange(min=0), default=DEFAULT_MIN_FREE_MB, show_default=True,
              help="数据库所在分区至少需要的可用空间（MB）：低于此值时拒绝启动，运行中的来电转入故障提示音。")
def run(config_path: Path, ready_file: Path | None, log_level: str, json_logs: bool, standby: bool,
        min_free_mb: int) -> None:
    configure_logging(log_level, json=json_logs)
    try:
        asyncio.run(_run_node(config_path, ready_file, standby=standby, min_free_mb=min_free_mb))
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
    except DiskSpaceLow as exc:
        click.echo(f"启动失败：{exc}", err=True)
        sys.exit(5)
    except StorageError as exc:
        if is_storage_full(exc):
            click.echo(f"启动失败：数据库所在磁盘已满（{exc}）。请清理数据库所在分区上的文件或扩容后再启动。", err=True)
            sys.exit(5)
        click.echo(f"启动失败：数据库错误：{exc}", err=True)
        sys.exit(4)
