"""Storage: agent state events and routing decisions in their own SQLite file.

The file sits next to the node database (``<database>.acd.sqlite3``, see ``acd_path``) and
has its own ``PRAGMA user_version`` migrations. WAL mode, one writer connection, every
write in ``BEGIN IMMEDIATE``. ``AcdStoreRecorder`` is the pool's non-blocking recorder:
it buffers records and writes them in the background.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import datetime
from pathlib import Path

import aiosqlite
import structlog

from acd.decisions import AgentEvent, RoutingDecision
from storage.errors import SchemaTooNew, StorageError

log = structlog.get_logger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 10_000

ACD_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE agent_event (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        previous TEXT NOT NULL,
        state TEXT NOT NULL,
        reason TEXT NOT NULL,
        call_id TEXT,
        pause_reason TEXT
    );
    CREATE INDEX agent_event_agent ON agent_event (agent_id, id);
    CREATE TABLE routing_decision (
        id INTEGER PRIMARY KEY,
        call_id TEXT NOT NULL,
        decided_at TEXT NOT NULL,
        rule TEXT NOT NULL,
        chosen_agent TEXT,
        body TEXT NOT NULL
    );
    CREATE INDEX routing_decision_call ON routing_decision (call_id, id);
    """,
)
ACD_LATEST_VERSION = len(ACD_MIGRATIONS)


def acd_path(database: str | Path) -> Path:
    """Return the ACD store's file for a node database."""
    database = Path(database)
    return database.with_name(database.name + ".acd.sqlite3")


class AcdStore:
    def __init__(self, connection: aiosqlite.Connection, path: Path):
        self._db = connection
        self._path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> AcdStore:
        path = Path(path)
        try:
            connection = await aiosqlite.connect(path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open ACD store {path}: {exc}") from exc
        try:
            await connection.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            await connection.execute("PRAGMA journal_mode = WAL")
            await connection.execute("PRAGMA synchronous = NORMAL")
            await cls._migrate(connection, path)
        except (sqlite3.Error, StorageError):
            await connection.close()
            raise
        return cls(connection, path)

    @staticmethod
    async def _migrate(connection: aiosqlite.Connection, path: Path) -> None:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            async with connection.execute("PRAGMA user_version") as cursor:
                (version,) = await cursor.fetchone()
            if version > ACD_LATEST_VERSION:
                raise SchemaTooNew(f"ACD store {path} has schema {version}, newer than {ACD_LATEST_VERSION}")
            for target in range(version + 1, ACD_LATEST_VERSION + 1):
                for statement in ACD_MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        await connection.execute(statement)
                await connection.execute(f"PRAGMA user_version = {target}")
            await connection.execute("COMMIT")
        except BaseException:
            await connection.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> AcdStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def write(self, events: list[AgentEvent], decisions: list[RoutingDecision]) -> None:
        """Write a batch of events and decisions in one transaction."""
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(
                    "INSERT INTO agent_event (at, agent_id, previous, state, reason, call_id, pause_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(e.at.isoformat(), e.agent_id, e.previous, e.state, e.reason, e.call_id, e.pause_reason)
                     for e in events],
                )
                await self._db.executemany(
                    "INSERT INTO routing_decision (call_id, decided_at, rule, chosen_agent, body) VALUES (?, ?, ?, ?, ?)",
                    [(d.call_id, d.decided_at.isoformat(), d.rule, d.chosen_agent,
                      json.dumps(d.to_dict(), ensure_ascii=False)) for d in decisions],
                )
                await self._db.execute("COMMIT")
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise

    async def decisions_for(self, call_id: str) -> list[RoutingDecision]:
        async with self._db.execute(
            "SELECT body FROM routing_decision WHERE call_id = ? ORDER BY id", (call_id,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [RoutingDecision.from_dict(json.loads(body)) for (body,) in rows]

    async def events_for(self, agent_id: str, *, limit: int = 50) -> list[AgentEvent]:
        async with self._db.execute(
            "SELECT at, agent_id, previous, state, reason, call_id, pause_reason FROM agent_event"
            " WHERE agent_id = ? ORDER BY id DESC LIMIT ?", (agent_id, limit),
        ) as cursor:
            rows = await cursor.fetchall()
        return [AgentEvent(datetime.fromisoformat(r[0]), *r[1:]) for r in reversed(rows)]


class AcdStoreRecorder:
    """The pool's recorder: keeps records in memory and writes them from a background task."""

    def __init__(self, store: AcdStore):
        self._store = store
        self._events: list[AgentEvent] = []
        self._decisions: list[RoutingDecision] = []
        self._task: asyncio.Task[None] | None = None

    def agent_event(self, event: AgentEvent) -> None:
        self._events.append(event)
        self._schedule()

    def decision(self, decision: RoutingDecision) -> None:
        self._decisions.append(decision)
        self._schedule()

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            try:
                self._task = asyncio.get_running_loop().create_task(self.flush())
            except RuntimeError:
                return  # no loop: ``flush`` must be awaited by the owner

    async def flush(self) -> None:
        """Write everything buffered so far; a failed batch is kept for the next attempt."""
        while self._events or self._decisions:
            events, decisions = self._events, self._decisions
            self._events, self._decisions = [], []
            try:
                await self._store.write(events, decisions)
            except (sqlite3.Error, StorageError) as exc:
                log.warning("acd records not written", events=len(events), decisions=len(decisions), error=str(exc))
                self._events[:0] = events
                self._decisions[:0] = decisions
                return
