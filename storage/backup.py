"""Storage: online backups of a node's SQLite files, and checked restores of them.

A backup is a folder ``<node id>-<UTC time>`` holding a copy of each database, the
attachment files of the ticket database, and ``manifest.json`` (node, time, and for each
file its schema version, size and SHA-256). Each copy is taken with SQLite's backup API
from a connection of its own, so the node keeps running and writing meanwhile: WAL mode
lets the copy read one consistent snapshot while writers carry on. The copy is switched
to rollback-journal mode so that it is one self-contained file, checked with
``PRAGMA integrity_check``, synced to disk and only then renamed into place.

Attachment files are copied after the ticket database. Each file is written and synced
before the event naming it commits, so every attachment the copied database refers to
already exists when the folder is copied; later files are copied too and do no harm.

A restore first checks the whole backup (hashes, integrity, schema versions no newer than
this software's), then replaces each database. The daily ticket numbers already used in
the replaced ticket database are carried into the restored one, because tickets opened
after the backup may have reached the parent tier and their ids must not be issued again.
The file it replaces is kept next to it as
``<name>.before-restore-<UTC time>`` together with its WAL, so the restore can be undone
by hand. Whether the node is running is the caller's check (the node's locks), made
before ``restore_backup`` and held until it returns.

Messages of ``BackupError`` are Chinese: the CLI shows them to operators as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import structlog

from storage.acd_store import ACD_LATEST_VERSION
from storage.schema import LATEST_VERSION

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
ATTACHMENTS_SUFFIX = ".attachments"

# The SQLite files of a node that a backup contains, with the newest schema version this software supports.
TICKETS = "tickets"
ACD = "acd"
LATEST_SCHEMA: dict[str, int] = {TICKETS: LATEST_VERSION, ACD: ACD_LATEST_VERSION}
KIND_LABELS: dict[str, str] = {TICKETS: "工单数据库", ACD: "坐席数据库"}

_BUSY_TIMEOUT_MS = 10_000
_HASH_CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup or restore that cannot be done; the Chinese message names the file and the fix."""


@dataclass(frozen=True, slots=True)
class BackedUpFile:
    """One database in a backup, as recorded in its manifest."""

    kind: str
    file_name: str
    schema_version: int
    size: int
    sha256: str
    attachments: int = 0


@dataclass(frozen=True, slots=True)
class BackupManifest:
    folder: Path
    node_id: str
    created_at: datetime
    files: tuple[BackedUpFile, ...]


@dataclass(frozen=True, slots=True)
class RestoredFile:
    """One database put back by a restore.

    ``numbers_carried`` is about the ticket database only: True when the daily ticket
    numbers of the replaced file were carried over, False when that file could not be
    read, None when there was no file to replace or the database is not the ticket one.
    """

    kind: str
    target: Path
    kept_as: Path | None
    schema_version: int
    attachments_copied: int
    numbers_carried: bool | None = None


def _utc_stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def _fsync_file(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _fsync_folder(folder: Path) -> None:
    _fsync_file(folder)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_copy(path: Path) -> int:
    """Run ``integrity_check`` on a copied database and return its schema version; raise BackupError."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
            (version,) = connection.execute("PRAGMA user_version").fetchone()
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} 不是可用的 SQLite 数据库（{exc}），请换一份备份") from exc
    if problems != ["ok"]:
        raise BackupError(f"{path} 完整性检查未通过：{'；'.join(problems[:5])}。请换一份备份")
    return version


def _attachment_files(folder: Path) -> Iterator[Path]:
    """Yield stored attachment files (``<2 hex>/<64 hex>``), skipping half-written ``.incoming-`` files."""
    if not folder.is_dir():
        return
    for subfolder in sorted(folder.iterdir()):
        if subfolder.is_dir() and len(subfolder.name) == 2:
            yield from sorted(path for path in subfolder.iterdir() if path.is_file() and len(path.name) == 64)


def _copy_attachments(source: Path, target: Path) -> int:
    """Copy attachment files missing from ``target``; return how many were copied."""
    copied = 0
    for path in _attachment_files(source):
        destination = target / path.parent.name / path.name
        if destination.is_file() and destination.stat().st_size == path.stat().st_size:
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial = destination.with_name(f".incoming-{path.name}")
        shutil.copyfile(path, partial)
        _fsync_file(partial)
        os.replace(partial, destination)
        copied += 1
    if copied:
        for folder in {target, *(path.parent for path in _attachment_files(target))}:
            _fsync_folder(folder)
    return copied


def _read_ticket_numbers(database: Path) -> list[tuple[str, str, int]] | None:
    """Return the daily ticket numbers used so far in a ticket database, or None when it cannot be read."""
    try:
        connection = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            return list(connection.execute("SELECT region_code, day, last_value FROM ticket_sequences"))
        finally:
            connection.close()
    except sqlite3.DatabaseError as exc:
        log.warning("ticket numbers of the replaced database not readable", path=str(database), error=str(exc))
        return None


def _carry_ticket_numbers(database: Path, numbers: list[tuple[str, str, int]]) -> None:
    """Raise the restored file's daily ticket numbers to those already used, so no ticket id is issued twice."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany(
            "INSERT INTO ticket_sequences (region_code, day, last_value) VALUES (?, ?, ?) "
            "ON CONFLICT (region_code, day) DO UPDATE SET last_value = max(last_value, excluded.last_value)",
            numbers,
        )
        connection.execute("COMMIT")
    finally:
        connection.close()


def backup_database(source: Path, target: Path) -> tuple[int, int]:
    """Copy a live database to ``target`` with the backup API; return (schema version, size).

    Blocking; run it in a worker thread from async code.
    """
    if not source.is_file():
        raise BackupError(f"数据库文件 {source} 不存在，请检查节点配置中的 database 路径")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)

    # Step 1: one consistent snapshot of the source, read while the node keeps writing.
    try:
        origin = sqlite3.connect(source, timeout=_BUSY_TIMEOUT_MS / 1000)
        try:
            copy = sqlite3.connect(partial)
            try:
                origin.backup(copy)
                copy.execute("PRAGMA journal_mode = DELETE")
            finally:
                copy.close()
        finally:
            origin.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"备份 {source} 失败：{exc}。请检查磁盘空间和文件权限后重试") from exc

    # Step 2: check the copy, then make it durable under its final name.
    try:
        version = _check_copy(partial)
        _fsync_file(partial)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, target)
    _fsync_folder(target.parent)
    return version, target.stat().st_size


def create_backup(node_id: str, databases: dict[str, Path], destination: Path, *,
                  now: datetime | None = None) -> BackupManifest:
    """Back up the node's databases (kind → path; missing optional files are skipped) into a new folder.

    The ticket database must exist; its attachment folder is copied with it.
    """
    now = now or datetime.now(timezone.utc)
    if not databases.get(TICKETS, Path()).is_file():
        raise BackupError(f"工单数据库 {databases.get(TICKETS)} 不存在，请检查节点配置中的 database 路径")
    folder = destination / f"{node_id}-{_utc_stamp(now)}"
    try:
        folder.mkdir(parents=True)
    except FileExistsError:
        raise BackupError(f"备份目录 {folder} 已存在，请稍后再试或换一个目标目录") from None
    except OSError as exc:
        raise BackupError(f"无法创建备份目录 {folder}：{exc}") from exc

    files = []
    try:
        for kind, source in databases.items():
            if kind not in LATEST_SCHEMA:
                raise ValueError(f"unknown database kind {kind!r}; expected one of {sorted(LATEST_SCHEMA)}")
            if kind != TICKETS and not source.is_file():
                continue
            file_name = f"{kind}.sqlite3"
            version, size = backup_database(source, folder / file_name)
            attachments = 0
            if kind == TICKETS:
                attachments = _copy_attachments(source.with_name(source.name + ATTACHMENTS_SUFFIX),
                                                folder / (file_name + ATTACHMENTS_SUFFIX))
            files.append(BackedUpFile(kind, file_name, version, size, _sha256(folder / file_name), attachments))
            log.info("database backed up", node_id=node_id, kind=kind, source=str(source), schema_version=version,
                     size=size, attachments=attachments)

        manifest = BackupManifest(folder, node_id, now, tuple(files))
        _write_manifest(manifest)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return manifest


def _write_manifest(manifest: BackupManifest) -> None:
    content = {
        "format": MANIFEST_FORMAT,
        "node_id": manifest.node_id,
        "created_at": manifest.created_at.astimezone(timezone.utc).isoformat(),
        "files": [
            {"kind": item.kind, "file": item.file_name, "schema_version": item.schema_version,
             "size": item.size, "sha256": item.sha256, "attachments": item.attachments}
            for item in manifest.files
        ],
    }
    path = manifest.folder / MANIFEST_NAME
    path.write_text(json.dumps(content, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    _fsync_file(path)
    _fsync_folder(manifest.folder)


def read_manifest(folder: Path) -> BackupManifest:
    path = folder / MANIFEST_NAME
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
        if content.get("format") != MANIFEST_FORMAT:
            raise BackupError(f"{path} 的格式版本 {content.get('format')} 不受支持，请用同一版本的软件恢复")
        files = tuple(
            BackedUpFile(item["kind"], item["file"], int(item["schema_version"]), int(item["size"]),
                         item["sha256"], int(item.get("attachments", 0)))
            for item in content["files"]
        )
        return BackupManifest(folder, content["node_id"], datetime.fromisoformat(content["created_at"]), files)
    except FileNotFoundError:
        raise BackupError(f"{folder} 中没有 {MANIFEST_NAME}，不是 hotline backup 生成的备份目录") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupError(f"{path} 无法解析（{exc}），备份可能已损坏，请换一份备份") from exc


def verify_backup(folder: Path) -> BackupManifest:
    """Check every file of a backup: present, same SHA-256, intact, schema known to this software."""
    manifest = read_manifest(folder)
    if not any(item.kind == TICKETS for item in manifest.files):
        raise BackupError(f"备份 {folder} 中没有工单数据库，无法恢复")
    for item in manifest.files:
        path = folder / item.file_name
        label = KIND_LABELS.get(item.kind, item.kind)
        if item.kind not in LATEST_SCHEMA or Path(item.file_name).name != item.file_name:
            raise BackupError(
                f"备份 {folder} 含有本软件不认识的文件 {item.file_name}（类型 {item.kind}），请用同一版本的软件恢复"
            )
        if not path.is_file():
            raise BackupError(f"备份中的{label} {path} 不见了，请换一份完整的备份")
        if _sha256(path) != item.sha256:
            raise BackupError(f"备份中的{label} {path} 与清单记录的校验值不符，文件已被改动或损坏，请换一份备份")
        version = _check_copy(path)
        latest = LATEST_SCHEMA[item.kind]
        if version > latest:
            raise BackupError(
                f"备份中的{label} {path} 数据库结构版本为 {version}，比本软件支持的 {latest} 新；"
                "请先把软件升级到做备份时的版本再恢复"
            )
    return manifest


def restore_backup(folder: Path, node_id: str, targets: dict[str, Path], *,
                   now: datetime | None = None) -> list[RestoredFile]:
    """Verify a backup of node ``node_id`` and put its databases at ``targets`` (kind → path).

    The node must be stopped, which the caller checks and keeps true meanwhile.
    """
    now = now or datetime.now(timezone.utc)
    manifest = verify_backup(folder)
    if manifest.node_id != node_id:
        raise BackupError(
            f"备份 {folder} 属于节点 {manifest.node_id}，不是本配置的节点 {node_id}；请选择本节点的备份"
        )
    missing = [item.kind for item in manifest.files if item.kind not in targets]
    if missing:
        raise ValueError(f"no target path for database kinds {missing}")

    restored = []
    for item in manifest.files:
        target = targets[item.kind]
        target.parent.mkdir(parents=True, exist_ok=True)

        # Step 1: the backup's copy next to the target. Ticket ids issued after the backup may
        # already be at the parent tier, so the copy continues from the numbers used so far.
        partial = target.with_name(f".{target.name}.restoring")
        shutil.copyfile(folder / item.file_name, partial)
        numbers_carried = None
        if item.kind == TICKETS and target.exists():
            numbers = _read_ticket_numbers(target)
            numbers_carried = numbers is not None
            if numbers:
                _carry_ticket_numbers(partial, numbers)
        _fsync_file(partial)

        # Step 2: keep the current file with its WAL, then put the copy in its place.
        kept_as = None
        if target.exists():
            kept_as = target.with_name(f"{target.name}.before-restore-{_utc_stamp(now)}")
            for suffix in ("-wal", "-shm", ""):
                current = Path(f"{target}{suffix}")
                if current.exists():
                    os.replace(current, Path(f"{kept_as}{suffix}"))
        os.replace(partial, target)
        _fsync_folder(target.parent)

        # Step 3: attachment files the restored tickets refer to.
        copied = 0
        if item.kind == TICKETS:
            copied = _copy_attachments(folder / (item.file_name + ATTACHMENTS_SUFFIX),
                                       target.with_name(target.name + ATTACHMENTS_SUFFIX))
        restored.append(RestoredFile(item.kind, target, kept_as, item.schema_version, copied, numbers_carried))
        log.info("database restored", node_id=node_id, kind=item.kind, target=str(target),
                 kept_as=str(kept_as) if kept_as else None, schema_version=item.schema_version,
                 attachments_copied=copied)
    return restored
