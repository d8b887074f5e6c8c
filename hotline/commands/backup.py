"""CLI: ``hotline backup`` takes an online backup of a node's databases; ``hotline restore`` checks and restores one."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from hotline.config import ConfigError, NodeConfig, load_node_config
from storage.acd_store import acd_path
from storage.backup import ACD, KIND_LABELS, TICKETS, BackupError, BackupManifest, restore_backup, verify_backup
from storage.backup import create_backup as create_backup_folder
from tier_sync.node_lock import NodeAlreadyRunning, NodeLock

# Every running node holds at least one of these sync locks on its database for as long as it runs.
NODE_LOCK_ROLES = ("publisher", "receiver")


def _load(config_path: Path) -> NodeConfig:
    try:
        return load_node_config(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _databases(config: NodeConfig) -> dict[str, Path]:
    return {TICKETS: config.database, ACD: acd_path(config.database)}


def _describe(manifest: BackupManifest) -> None:
    click.echo(f"备份目录：{manifest.folder}")
    click.echo(f"节点：{manifest.node_id}；备份时间（UTC）：{manifest.created_at:%Y-%m-%d %H:%M:%S}")
    for item in manifest.files:
        extra = f"，附件 {item.attachments} 个" if item.kind == TICKETS else ""
        click.echo(f"  {KIND_LABELS[item.kind]} {item.file_name}：结构版本 {item.schema_version}，"
                   f"{item.size:,} 字节{extra}，完整性检查通过")


@click.command(help="在线备份节点的数据库和工单附件；节点运行时也可以备份。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
@click.option("--to", "destination", required=True, type=click.Path(path_type=Path),
              help="存放备份的目录，每次备份在其中新建一个子目录")
def backup(config_path: Path, destination: Path) -> None:
    config = _load(config_path)
    try:
        manifest = create_backup_folder(config.node_id, _databases(config), destination)
    except BackupError as exc:
        click.echo(f"备份失败：{exc}", err=True)
        sys.exit(1)
    _describe(manifest)
    click.echo(f"备份完成。恢复时运行：hotline restore --config {config_path} {manifest.folder}")


@click.command(help="检查一份备份并恢复到节点；节点必须先停止。")
@click.option("--config", "config_path", required=True, type=click.Path(path_type=Path), help="节点配置文件")
@click.option("--check-only", is_flag=True, help="只检查备份（校验值、完整性、结构版本），不恢复")
@click.argument("backup_folder", metavar="备份目录", type=click.Path(path_type=Path))
def restore(config_path: Path, check_only: bool, backup_folder: Path) -> None:
    config = _load(config_path)
    if check_only:
        try:
            _describe(verify_backup(backup_folder))
        except BackupError as exc:
            click.echo(f"备份检查未通过：{exc}", err=True)
            sys.exit(1)
        click.echo("备份检查通过，可以恢复。")
        return

    # The node's own locks: held, they mean it runs; taken here, they keep it from starting meanwhile.
    locks = [NodeLock(config.database, role, config.node_id) for role in NODE_LOCK_ROLES]
    held: list[NodeLock] = []
    try:
        for lock in locks:
            try:
                lock.acquire()
            except NodeAlreadyRunning:
                click.echo(
                    f"不能恢复：节点 {config.node_id} 正在运行（锁文件 {lock.path} 被占用）。"
                    "请先停止该节点（停止 hotline run 进程），再执行 hotline restore。",
                    err=True,
                )
                sys.exit(1)
            held.append(lock)

        try:
            restored = restore_backup(backup_folder, config.node_id, _databases(config))
        except BackupError as exc:
            click.echo(f"未恢复：{exc}", err=True)
            sys.exit(1)
    finally:
        for lock in held:
            lock.release()

    for item in restored:
        kept = f"；原文件保留为 {item.kept_as}" if item.kept_as else ""
        attachments = f"；补回附件 {item.attachments_copied} 个" if item.kind == TICKETS else ""
        click.echo(f"已恢复{KIND_LABELS[item.kind]} {item.target}（结构版本 {item.schema_version}）{attachments}{kept}")
        if item.numbers_carried is False:
            click.echo(
                f"注意：原工单数据库 {item.kept_as} 无法读取，备份之后用过的工单编号没有带过来，"
                "新工单可能与已上报上级的工单重号，上级会拒收这些工单。请用 hotline tickets list 核对并联系上级。",
                err=True,
            )
    click.echo("恢复完成。节点下次启动时会把较旧的数据库结构自动升级。")
