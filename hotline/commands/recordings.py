"""CLI: ``hotline recordings purge`` deletes recorded agent calls older than the retention period."""

from __future__ import annotations

from pathlib import Path

import click

from hotline.config import ConfigError, load_node_config
from hotline.recordings import MAX_RETENTION_DAYS, purge_recordings, utc_now


class _CommandFailed(click.ClickException):
    """An operator-facing failure printed as one Chinese line."""

    def show(self, file=None) -> None:
        click.echo(f"错误：{self.format_message()}", err=True)


@click.group(help="坐席通话录音的保存期限管理。")
def recordings() -> None:
    pass


@recordings.command(help="删除录音目录中超过保存天数的通话录音（按文件最后写入时间计算）。"
                         "目录和天数可直接给出，也可从县级节点配置的 telephony.call_recordings_dir 和 "
                         "telephony.recording_retention_days 读取。")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="县级节点配置文件；未给出 --dir 或 --retention-days 时从中读取")
@click.option("--dir", "folder", type=click.Path(path_type=Path), default=None,
              help="通话录音目录（Asterisk 的 monitor 目录，如 <实例目录>/spool/monitor）")
@click.option("--retention-days", type=click.IntRange(1, MAX_RETENTION_DAYS), default=None,
              help=f"录音保存天数，1 到 {MAX_RETENTION_DAYS}")
@click.option("--dry-run", is_flag=True, help="只列出将被删除的录音，不删除")
def purge(config_path: Path | None, folder: Path | None, retention_days: int | None, dry_run: bool) -> None:
    if config_path is not None and (folder is None or retention_days is None):
        try:
            config = load_node_config(config_path)
        except ConfigError as exc:
            raise _CommandFailed(str(exc)) from None
        telephony = config.telephony
        folder = folder or (telephony.call_recordings_dir if telephony else None)
        retention_days = retention_days or (telephony.recording_retention_days if telephony else None)
    if folder is None:
        raise _CommandFailed("未指定录音目录：请给出 --dir，或在节点配置中设置 telephony.call_recordings_dir 并给出 --config")
    if retention_days is None:
        raise _CommandFailed("未指定保存天数：请给出 --retention-days，或在节点配置中设置 "
                             "telephony.recording_retention_days 并给出 --config")

    try:
        result = purge_recordings(folder, retention_days=retention_days, now=utc_now(), dry_run=dry_run)
    except FileNotFoundError:
        raise _CommandFailed(f"录音目录 {folder} 不存在，请检查 --dir 参数或节点配置") from None
    except OSError as exc:
        raise _CommandFailed(f"删除录音失败：{exc}。请检查目录权限后重试") from None

    verb = "将删除" if dry_run else "已删除"
    for path in result.deleted:
        click.echo(f"{verb}：{path}")
    megabytes = result.freed_bytes / 1_000_000
    click.echo(f"{verb} {len(result.deleted)} 个超过 {retention_days} 天的录音（{megabytes:.1f} MB），"
               f"保留 {result.kept} 个。")
