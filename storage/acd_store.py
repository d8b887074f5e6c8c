"""Storage: agent state events and routing decisions in their own SQLite file.

The file sits next to the node database (``<database>.acd.sqlite3``, see ``acd_path``) and
has its own ``PRAGMA user_version`` migrations. WAL mode, one writer connection, every
write in ``BEGIN IMMEDIATE``. ``AcdStoreRecorder`` is the pool's non-blocking recorder:
it buffers records and writes them in the background.

The store is also the channel between the CLI and the running controller: the controller
publishes its status every second (``acd_status``) and records each queued call's result
(``queue_call``), and takes the agent commands the CLI queues (``agent_command``: pending,
then taken, then done or rejected; or expired when nobody took it in time).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import aiosqlite
import structlog

from acd.agent_commands import AgentAction, AgentCommand
from acd.decisions import AgentEvent, RoutingDecision
from acd.status import AcdStatus, QueueCallResult, QueueOutcome
from storage.errors import SchemaTooNew, StorageError
from storage.sqlite import begin_immediate, rollback_shielded

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
    """
    CREATE TABLE acd_status (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        published_at TEXT NOT NULL,
        body TEXT NOT NULL
    );
    CREATE TABLE queue_call (
        call_id TEXT PRIMARY KEY,
        skill TEXT NOT NULL,
        entered_at TEXT NOT NULL,
        ended_at TEXT NOT NULL,
        outcome TEXT NOT NULL,
        answered_at TEXT,
        agent_id TEXT
    );
    CREATE INDEX queue_call_entered ON queue_call (entered_at);
    CREATE TABLE agent_command (
        id INTEGER PRIMARY KEY,
        requested_at TEXT NOT NULL,
        agent_id TEXT NOT NULL,
        action TEXT NOT NULL,
        pause_reason TEXT,
        status TEXT NOT NULL DEFAULT 'pending',
        message TEXT,
        done_at TEXT
    );
    CREATE INDEX agent_command_pending ON agent_command (status, id);
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


    # --- supervisor status and queue results --------------------------------------------

    async def publish_status(self, status: AcdStatus) -> None:
        """Replace the published status with ``status``."""
        body = json.dumps(status.to_dict(), ensure_ascii=False)
        await self._write_one(
            "publish status",
            "INSERT INTO acd_status (id, published_at, body) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET published_at = excluded.published_at, body = excluded.body",
            (status.published_at.isoformat(), body),
        )

    async def read_status(self) -> AcdStatus | None:
        """Return the last published status, or None when the controller never published one."""
        async with self._db.execute("SELECT body FROM acd_status WHERE id = 1") as cursor:
            row = await cursor.fetchone()
        return AcdStatus.from_dict(json.loads(row[0])) if row is not None else None

    async def record_queue_call(self, result: QueueCallResult) -> None:
        """Store how a queued call ended; a second record for the same call replaces the first."""
        await self._write_one(
            "record queue call",
            "INSERT OR REPLACE INTO queue_call (call_id, skill, entered_at, ended_at, outcome, answered_at, agent_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (result.call_id, result.skill, result.entered_at.isoformat(), result.ended_at.isoformat(),
             result.outcome.value, result.answered_at.isoformat() if result.answered_at else None, result.agent_id),
        )

    async def queue_calls_between(self, start: datetime, end: datetime) -> list[QueueCallResult]:
        """Return the queue calls that entered the queue in [start, end), both UTC."""
        async with self._db.execute(
            "SELECT call_id, skill, entered_at, ended_at, outcome, answered_at, agent_id FROM queue_call"
            " WHERE entered_at >= ? AND entered_at < ? ORDER BY entered_at", (start.isoformat(), end.isoformat()),
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            QueueCallResult(r[0], r[1], datetime.fromisoformat(r[2]), datetime.fromisoformat(r[3]), QueueOutcome(r[4]),
                            datetime.fromisoformat(r[5]) if r[5] else None, r[6])
            for r in rows
        ]

    # --- agent commands from the CLI ----------------------------------------------------------

    async def enqueue_command(self, agent_id: str, command: AgentCommand, requested_at: datetime) -> int:
        """Queue a command for the running controller and return its id."""
        async with self._lock:
            await begin_immediate(self._db, "enqueue agent command")
            try:
                cursor = await self._db.execute(
                    "INSERT INTO agent_command (requested_at, agent_id, action, pause_reason) VALUES (?, ?, ?, ?)",
                    (requested_at.isoformat(), agent_id, command.action.value, command.pause_reason),
                )
                command_id = cursor.lastrowid
                await self._db.execute("COMMIT")
            except BaseException:
                await rollback_shielded(self._db)
                raise
        assert command_id is not None
        return command_id

    async def pending_commands(self) -> list[PendingCommand]:
        """Return the commands not yet taken by the controller, oldest first."""
        async with self._db.execute(
            "SELECT id, requested_at, agent_id, action, pause_reason FROM agent_command"
            " WHERE status = 'pending' ORDER BY id"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            PendingCommand(r[0], datetime.fromisoformat(r[1]), r[2], AgentCommand(AgentAction(r[3]), r[4]))
            for r in rows
        ]

    async def claim_command(self, command_id: int) -> bool:
        """Mark a pending command as taken by the controller; False when it was withdrawn first."""
        changed = await self._write_one(
            "claim agent command",
            "UPDATE agent_command SET status = 'taken' WHERE id = ? AND status = 'pending'", (command_id,),
        )
        return changed == 1

    async def withdraw_command(self, command_id: int, message: str, at: datetime) -> bool:
        """Mark a pending command as expired; False when the controller already took it."""
        changed = await self._write_one(
            "withdraw agent command",
            "UPDATE agent_command SET status = 'expired', message = ?, done_at = ? WHERE id = ? AND status = 'pending'",
            (message, at.isoformat(), command_id),
        )
        return changed == 1

    async def finish_command(self, command_id: int, status: str, message: str, done_at: datetime) -> None:
        """Record the result of a taken command: ``status`` is ``done`` or ``rejected``."""
        if status not in COMMAND_FINAL_STATUSES:
            raise ValueError(f"invalid command status {status!r}: use one of {COMMAND_FINAL_STATUSES}")
        await self._write_one(
            "finish agent command",
            "UPDATE agent_command SET status = ?, message = ?, done_at = ? WHERE id = ? AND status = 'taken'",
            (status, message, done_at.isoformat(), command_id),
        )

    async def command_result(self, command_id: int) -> tuple[str, str | None]:
        """Return a command's status and result message."""
        async with self._db.execute("SELECT status, message FROM agent_command WHERE id = ?", (command_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise StorageError(f"agent command {command_id} not found in {self._path}")
        return row[0], row[1]

    async def _write_one(self, operation: str, sql: str, parameters: tuple[object, ...]) -> int:
        """Run one write statement in its own transaction and return the rows it changed."""
        async with self._lock:
            await begin_immediate(self._db, operation)
            try:
                cursor = await self._db.execute(sql, parameters)
                changed = cursor.rowcount
                await self._db.execute("COMMIT")
            except BaseException:
                await rollback_shielded(self._db)
                raise
        return changed


COMMAND_FINAL_STATUSES = ("done", "rejected")


@dataclass(frozen=True, slots=True)
class PendingCommand:
    command_id: int
    requested_at: datetime
    agent_id: str
    command: AgentCommand


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
