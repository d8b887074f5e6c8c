"""Storage: opening and migrating the node's SQLite files the same way for every store.

Every connection runs in autocommit mode (transactions are explicit), with a busy
timeout, ``synchronous=FULL`` and foreign keys on; the writer also switches the file to
WAL. Migrations are numbered lists of statements applied under ``BEGIN IMMEDIATE``, with
``PRAGMA user_version`` recording the last one applied.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite
import structlog

from storage.errors import SchemaTooNew, StorageError

log = structlog.get_logger(__name__)


async def connect(path: Path, busy_timeout_ms: int, *, read_only: bool) -> aiosqlite.Connection:
    """Open one connection to ``path``; raise ``StorageError`` naming the file on failure."""
    # A missing folder is the usual cause of a failed connect, so it is reported before aiosqlite runs.
    # NOTE: when aiosqlite 0.22 fails to connect it stops its worker thread without awaiting it, and
    # the thread raises "Event loop is closed" if the loop ends first.
    if not path.parent.is_dir():
        raise StorageError(f"cannot open database {path}: folder {path.parent} does not exist")
    try:
        connection = await aiosqlite.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc

    try:
        connection.row_factory = sqlite3.Row
        await connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if read_only:
            await connection.execute("PRAGMA query_only = ON")
        else:
            async with connection.execute("PRAGMA journal_mode = WAL") as cursor:
                (mode,) = await cursor.fetchone()
            if mode.lower() != "wal":
                raise StorageError(f"database {path} refused WAL mode (journal_mode is {mode})")
        await connection.execute("PRAGMA synchronous = FULL")
        await connection.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        await connection.close()
        raise StorageError(f"cannot configure database {path}: {exc}") from exc
    except BaseException:
        await connection.close()
        raise
    return connection


async def migrate(writer: aiosqlite.Connection, path: Path, migrations: Sequence[Sequence[str]], *,
                  label: str = "database") -> None:
    """Apply every migration newer than the file's ``user_version``, one transaction each.

    Raises ``SchemaTooNew`` for a file written by newer software and ``StorageError`` when
    a migration fails; a failed migration leaves the file at the previous version.
    """
    latest = len(migrations)
    for target_version, statements in enumerate(migrations, start=1):
        try:
            await writer.execute("BEGIN IMMEDIATE")
            try:
                # Read inside the transaction: another process may have migrated meanwhile.
                async with writer.execute("PRAGMA user_version") as cursor:
                    (current,) = await cursor.fetchone()
                if current > latest:
                    raise SchemaTooNew(
                        f"{label} {path} has schema version {current}, newer than the "
                        f"{latest} this software supports; upgrade the software"
                    )
                if current >= target_version:
                    await writer.execute("ROLLBACK")
                    continue

                for statement in statements:
                    await writer.execute(statement)
                await writer.execute(f"PRAGMA user_version = {target_version}")
                await writer.execute("COMMIT")
                log.info(f"{label} migrated", path=str(path), schema_version=target_version)
            except BaseException:
                if writer.in_transaction:
                    await writer.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StorageError(f"migration of {path} to schema version {target_version} failed: {exc}") from exc


async def begin_immediate(writer: aiosqlite.Connection, operation: str) -> None:
    """Start a write transaction, first rolling back one a cancelled caller left open.

    A task cancelled while its BEGIN or COMMIT waited in aiosqlite's queue never runs its
    rollback, and every later BEGIN would fail with "cannot start a transaction within a
    transaction", wedging the store until restart.
    """
    if writer.in_transaction:
        log.warning("rolling back a transaction left open by a cancelled write", operation=operation)
        await writer.execute("ROLLBACK")
    try:
        await writer.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "within a transaction" not in str(exc):
            raise
        log.warning("rolling back a transaction left open by a cancelled write", operation=operation)
        await writer.execute("ROLLBACK")
        await writer.execute("BEGIN IMMEDIATE")


async def rollback_shielded(writer: aiosqlite.Connection) -> None:
    """Roll back the open transaction even when the calling task is being cancelled."""
    if writer.in_transaction:
        await asyncio.shield(writer.execute("ROLLBACK"))
