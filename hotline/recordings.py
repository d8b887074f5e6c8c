"""Application: the retention period of recorded agent calls and the purge that enforces it.

The switch writes each recorded call (MixMonitor) as a WAV file under its monitor folder.
A recording older than the retention period, judged by the file's modification time
(when the switch finished writing it), is deleted by ``purge_recordings``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

RECORDING_SUFFIX = ".wav"
# Maximum retention the command accepts: ten years.
MAX_RETENTION_DAYS = 3660


@dataclass(frozen=True, slots=True)
class PurgeResult:
    """Recordings deleted (or, in a dry run, that would be), how many were kept and the bytes freed."""

    deleted: tuple[Path, ...]
    kept: int
    freed_bytes: int


def check_retention_days(days: int) -> None:
    """Raise ``ValueError`` with a Chinese message unless ``days`` is a sane retention period."""
    if not 1 <= days <= MAX_RETENTION_DAYS:
        raise ValueError(f"录音保存天数 {days} 无效：应为 1 到 {MAX_RETENTION_DAYS} 之间的整数")


def purge_recordings(folder: Path, *, retention_days: int, now: datetime, dry_run: bool = False) -> PurgeResult:
    """Delete the ``*.wav`` files under ``folder`` last modified more than ``retention_days`` before ``now``.

    Sub-folders are searched too. Raises ``ValueError`` for a bad retention or a naive
    ``now`` and ``FileNotFoundError`` when ``folder`` does not exist.
    """
    check_retention_days(retention_days)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if not folder.is_dir():
        raise FileNotFoundError(f"录音目录 {folder} 不存在")

    cutoff = (now - timedelta(days=retention_days)).timestamp()
    deleted: list[Path] = []
    kept = 0
    freed = 0
    for path in sorted(folder.rglob(f"*{RECORDING_SUFFIX}")):
        if not path.is_file():
            continue
        stat = path.stat()
        if stat.st_mtime >= cutoff:
            kept += 1
            continue
        if not dry_run:
            os.remove(path)
        deleted.append(path)
        freed += stat.st_size

    log.info("call recordings purged", folder=str(folder), retention_days=retention_days, deleted=len(deleted),
             kept=kept, freed_bytes=freed, dry_run=dry_run)
    return PurgeResult(tuple(deleted), kept, freed)


def utc_now() -> datetime:
    return datetime.now(UTC)
