"""Application: free-space checks for the disk that contains a node's database.

A county node rejects start-up when the file system of its database has less free space
than a threshold. While it runs, it checks again at the start of every call: below the
threshold, or after a write failed because the disk was full, the call goes to the
dialplan's fallback notice instead of a flow whose tickets could not be stored. The
operator reads a Chinese message naming the folder, the free space and the fix.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import structlog

from storage.errors import is_storage_full

log = structlog.get_logger(__name__)

# Free space a county node needs on its database's file system to start and to take calls.
# NOTE: 64 MB is an estimate: a day of a busy county (a few thousand calls with tickets)
# writes a few MB of SQLite pages and WAL; it is not measured on a deployed node.
DEFAULT_MIN_FREE_MB = 64

_MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class DiskSpace:
    """Free and total bytes, for unprivileged writers, of the file system that contains ``folder``."""

    folder: Path
    free_bytes: int
    total_bytes: int

    @property
    def free_mb(self) -> float:
        return self.free_bytes / _MB


def read_disk_space(database: Path) -> DiskSpace:
    """Return the space of the file system that contains ``database``.

    Neither the file nor its folder need exist yet: the nearest existing ancestor is measured.
    """
    folder = Path(database).resolve().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    stats = os.statvfs(folder)
    return DiskSpace(folder, stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


class DiskSpaceLow(Exception):
    """The database's file system has less free space than required; the message is Chinese."""

    def __init__(self, space: DiskSpace, min_free_bytes: int) -> None:
        super().__init__(low_space_message(space, min_free_bytes))
        self.space = space
        self.min_free_bytes = min_free_bytes


def low_space_message(space: DiskSpace, min_free_bytes: int) -> str:
    """Return the operator's Chinese message for too little free space, with the value and the fix."""
    return (
        f"数据库所在磁盘空间不足：目录 {space.folder} 所在分区只剩 {space.free_mb:.1f} MB 可用，"
        f"低于要求的 {min_free_bytes / _MB:.0f} MB。请清理该分区上的文件（如旧日志、备份）或扩容，"
        f"腾出空间后热线会自动恢复；也可用 hotline run --min-free-mb 调整阈值。"
    )


def disk_full_message(database: Path) -> str:
    """Return the operator's Chinese message for a write that failed because the disk was full."""
    folder = Path(database).resolve().parent
    return (
        f"数据库 {database} 写入失败：磁盘已满（SQLITE_FULL）。本次写入未保存，之前已保存的工单不受影响。"
        f"请立即清理目录 {folder} 所在分区上的文件或扩容；腾出空间后写入自动恢复。"
    )


def check_free_space(database: Path, min_free_bytes: int) -> DiskSpace:
    """Return the database's disk space, or raise ``DiskSpaceLow`` when it is below ``min_free_bytes``."""
    space = read_disk_space(database)
    if space.free_bytes < min_free_bytes:
        raise DiskSpaceLow(space, min_free_bytes)
    return space


class DiskGuard:
    """Decides per call whether the database has room, and reports low space and full-disk writes once.

    Messages go to the log and, in Chinese, to ``stderr`` only when the state changes (low,
    then recovered). The count of calls rejected meanwhile is logged with the recovery.
    """

    def __init__(
        self,
        database: Path,
        min_free_bytes: int,
        *,
        stderr: TextIO | None = None,
        space_reader: Callable[[Path], DiskSpace] = read_disk_space,
    ) -> None:
        self.database = Path(database)
        self.min_free_bytes = min_free_bytes
        self._stderr = stderr
        self._read_space = space_reader
        self._low = False
        self._write_failed = False
        self.calls_rejected = 0

    def call_allowed(self, call_id: str) -> bool:
        """Return whether a new call may run its flow, and report a change of state."""
        space = self._read_space(self.database)
        low = space.free_bytes < self.min_free_bytes

        if low:
            self.calls_rejected += 1
            if not self._low:
                self._low = True
                log.error("database disk space low; calls go to the fallback notice", call_id=call_id,
                          folder=str(space.folder), free_bytes=space.free_bytes, min_free_bytes=self.min_free_bytes)
                self._print(f"错误：{low_space_message(space, self.min_free_bytes)}来电暂时转入系统故障提示音。")
            return False

        if self._low or self._write_failed:
            log.info("database disk space recovered; calls run their flow again", call_id=call_id,
                     folder=str(space.folder), free_bytes=space.free_bytes, calls_rejected=self.calls_rejected)
            self._print(f"数据库所在磁盘空间已恢复（目录 {space.folder} 可用 {space.free_mb:.1f} MB），来电恢复正常流程。")
            self._low = False
            self._write_failed = False
            self.calls_rejected = 0
        return True

    def storage_failed(self, exc: BaseException, operation: str, **ids: object) -> bool:
        """Report ``exc`` when it is a full-disk error and return whether it was one."""
        if not is_storage_full(exc):
            return False

        if not self._write_failed:
            self._write_failed = True
            log.error("database write failed: disk full", operation=operation, database=str(self.database),
                      error=str(exc), **ids)
            self._print(f"错误：{disk_full_message(self.database)}")
        else:
            log.warning("database write failed: disk still full", operation=operation, error=str(exc), **ids)
        return True

    def storage_succeeded(self) -> None:
        """Note a successful write, so the next full-disk error is reported again."""
        if self._write_failed and not self._low:
            log.info("database writes succeed again", database=str(self.database))
            self._write_failed = False

    def _print(self, message: str) -> None:
        print(message, file=self._stderr if self._stderr is not None else sys.stderr, flush=True)
