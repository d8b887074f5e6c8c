"""Storage: calls, tickets and their events in SQLite, each event written with its outbox row before any MQTT publish.

Concurrency. The database runs in WAL mode with a busy timeout. Each store opens one
writer connection and one read-only connection. All writes of a process go through the
writer under one asyncio lock, and every write transaction starts with ``BEGIN IMMEDIATE``
so that the write lock is taken up front. A deferred transaction that reads and then
writes would have to upgrade its lock, and SQLite fails that upgrade at once with
"database is locked" whatever the busy timeout when another connection has written in
between. Several processes (the IVR and the sync worker) may open the same file.

Durability. ``PRAGMA synchronous=FULL``: every commit syncs the WAL to disk before it
returns, so a ticket whose id was read to a caller survives a power cut as well as a
process crash. The cost is one fsync per commit, which is small at hotline ticket rates.
The risk of the alternative, NORMAL, is that in WAL mode the last transactions before a
power loss or OS crash can roll back (a process crash alone loses nothing under either
level).

Group commit. New tickets, events received from children and outbox acks are written by
one writer task. Callers queue a job (a plain function of the sqlite3 connection) and
wait for its outcome. The writer task takes every job queued meanwhile, up to
``MAX_GROUP_SIZE``, and runs them in one hop into the connection's thread:
``BEGIN IMMEDIATE``, each job inside its own ``SAVEPOINT``, then one ``COMMIT``. A job
that raises rolls back to its savepoint only, so the other jobs' rows stay and commit.
Each caller gets its own result or exception, and a failed ``COMMIT`` reaches every
caller of the group as an exception. One fsync and one thread hop then serve many
writes, where the aiosqlite path costs one hop per statement. The other writes still
take the aiosqlite path; both paths share the writer connection and its lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import sqlite3
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, Literal

import aiosqlite
import structlog

from hotline.privacy import mask_text
from storage.errors import (
    AttachmentError,
    AttachmentNotFound,
    CallNotFound,
    StorageBusy,
    StorageError,
    TicketConflict,
    TicketIdExhausted,
    TicketNotFound,
    storage_error_from_sqlite,
)
from storage.rows import (
    Attachment,
    KeptCallback,
    OutboxRow,
    TicketLink,
    attachment_from_row,
    call_from_row,
    event_digest,
    event_from_row,
    kept_callback_from_row,
    link_from_row,
    outbox_from_row,
    row_from_call,
    row_from_event,
    row_from_kept_callback,
    row_from_ticket,
    text_from_time,
    ticket_from_row,
)
from storage.schema import LATEST_VERSION, MIGRATIONS
from storage.sqlite import begin_immediate, rollback_shielded
from storage.sqlite import connect as sqlite_connect
from storage.sqlite import migrate as sqlite_migrate
from tickets.call_record import CallRecord
from tickets.envelope import EventEnvelope, build_envelope, encode_envelope
from tickets.lifecycle import (
    ACTIONS,
    LIFECYCLE_EVENT_KINDS,
    LINK_EVENT_KINDS,
    PlannedAction,
    plan_action,
    rule_for_state_change,
)
from tickets.model import (
    MAX_DAILY_SEQUENCE,
    Ticket,
    TicketCategory,
    TicketEvent,
    TicketState,
    Tier,
    china_day,
    format_ticket_id,
    require_utc,
    tier_for_region_code,
    validate_node_id,
    validate_region_code,
)

log = structlog.get_logger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 10_000

ApplyResult = Literal["applied", "duplicate"]

# Event kinds that only apply_action and add_attachment write, because they need checks or stored content.
RESERVED_EVENT_KINDS = LIFECYCLE_EVENT_KINDS | {"attachment_added", "duplicate_merged"}

# Largest attachment accepted. One hour of call recording as 8 kHz mono 16-bit WAV is about 58 MB.
MAX_ATTACHMENT_BYTES = 100 * 1024 * 1024

MEDIA_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,62}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_COPY_CHUNK_BYTES = 1024 * 1024


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _fsync_folder(folder: Path) -> None:
    """Sync a folder so that a rename inside it survives a power cut."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _insert_sql(table: str, row: dict[str, Any]) -> str:
    columns = ", ".join(row)
    placeholders = ", ".join(f":{name}" for name in row)
    return f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"


# Most jobs one group commit takes; bounds how long the last caller of a group waits.
MAX_GROUP_SIZE = 128

_NEXT_SEQUENCE_SQL = (
    "INSERT INTO ticket_sequences (region_code, day, last_value) VALUES (?, ?, 1) "
    "ON CONFLICT (region_code, day) DO UPDATE SET last_value = last_value + 1 "
    "RETURNING last_value"
)
_OUTBOX_SQL = "INSERT INTO outbox (event_id, ticket_id, seq, envelope, size, created_at) VALUES (?, ?, ?, ?, ?, ?)"


@dataclasses.dataclass(slots=True)
class _WriteJob:
    """One caller's write waiting for the group-commit writer task."""

    operation: str
    ids: dict[str, Any]
    run: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


class _GroupAborted(Exception):
    """A job's error ended the whole transaction, so the earlier jobs of its group were lost too."""

    def __init__(self, index: int, cause: BaseException) -> None:
        super().__init__(f"group transaction rolled back by job {index}: {cause}")
        self.index = index
        self.cause = cause


def _commit_group(connection: sqlite3.Connection, runs: list[Callable[[sqlite3.Connection], Any]]) -> list[Any]:
    """Run jobs in one transaction, each in a savepoint, and commit; runs in the connection's thread.

    Returns one entry per job: its result, or the exception it raised (its writes undone).
    Raises ``_GroupAborted`` when a job's error ended the transaction, and the sqlite3
    error when BEGIN or COMMIT fails; nothing of the group is committed then.
    """
    if connection.in_transaction:
        # Left open by an aiosqlite-path write whose task was cancelled mid-transaction.
        connection.execute("ROLLBACK")
    connection.execute("BEGIN IMMEDIATE")
    outcomes: list[Any] = []
    try:
        for index, run in enumerate(runs):
            connection.execute("SAVEPOINT group_member")
            try:
                outcomes.append(run(connection))
            except Exception as exc:
                # Domain refusals and SQL errors alike belong to this job's caller alone.
                if not connection.in_transaction:
                    raise _GroupAborted(index, exc) from exc
                connection.execute("ROLLBACK TO group_member")
                outcomes.append(exc)
            connection.execute("RELEASE group_member")
        connection.execute("COMMIT")
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    return outcomes


class TicketStore:
    """Calls, tickets, ticket events and the upward outbox of one node, in one SQLite file.

    Use ``await TicketStore.open(...)`` or ``async with await TicketStore.open(...)``.
    """

    def __init__(
        self,
        path: Path,
        node_id: str,
        region_code: str,
        tier: Tier,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Callable[[], datetime],
    ) -> None:
        self.path = path
        self.node_id = node_id
        self.region_code = region_code
        self.tier = tier
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._closed = False
        self._jobs: list[_WriteJob] = []
        self._writer_task: asyncio.Task[None] | None = None
        # Commits made by the group-commit writer task, for tests and benchmarks.
        self.group_commits = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | Path,
        node_id: str,
        region_code: str,
        *,
        tier: Tier | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> TicketStore:
        """Open (and create or migrate) the database of node ``node_id``."""
        validate_node_id(node_id)
        validate_region_code(region_code)
        path = Path(path)
        started = time.monotonic()

        writer = await cls._connect(path, busy_timeout_ms, read_only=False)
        try:
            await cls._migrate(writer, path)
            reader = await cls._connect(path, busy_timeout_ms, read_only=True)
        except BaseException:
            await writer.close()
            raise

        store = cls(path, node_id, region_code, tier or tier_for_region_code(region_code), writer, reader, clock)
        log.info(
            "ticket store opened",
            path=str(path),
            node_id=node_id,
            schema_version=LATEST_VERSION,
            elapsed_ms=round((time.monotonic() - started) * 1000),
        )
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer_task is not None:
            # Queued jobs still run: their callers are waiting for the outcome.
            await asyncio.wait({self._writer_task})
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()
        log.info("ticket store closed", path=str(self.path), node_id=self.node_id)

    async def __aenter__(self) -> TicketStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @staticmethod
    async def _connect(path: Path, busy_timeout_ms: int, *, read_only: bool) -> aiosqlite.Connection:
        return await sqlite_connect(path, busy_timeout_ms, read_only=read_only)

    @staticmethod
    async def _migrate(writer: aiosqlite.Connection, path: Path) -> None:
        await sqlite_migrate(writer, path, MIGRATIONS, label="database")

    # ------------------------------------------------------------------ transaction helpers

    @contextlib.asynccontextmanager
    async def _write_transaction(self, operation: str, **ids: Any) -> AsyncIterator[aiosqlite.Connection]:
        """Run one write transaction under ``BEGIN IMMEDIATE``; commit on success, roll back on error."""
        async with self._write_lock, self._translate_errors(operation, **ids):
            await begin_immediate(self._writer, operation)
            try:
                yield self._writer
            except BaseException:
                await rollback_shielded(self._writer)
                raise
            await self._writer.execute("COMMIT")

    async def _run_grouped(self, operation: str, run: Callable[[sqlite3.Connection], Any], **ids: Any) -> Any:
        """Queue ``run`` for the group-commit writer task and return its result once committed.

        ``run`` gets the writer's sqlite3 connection inside an open transaction and must
        not commit, roll back or await. Its exception is raised here, translated like any
        storage error; a failed commit raises ``StorageError`` for every job of the group.
        A caller cancelled before its group starts writes nothing.
        """
        if self._closed:
            raise StorageError(f"{operation} failed: ticket store {self.path} is closed {ids}")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._jobs.append(_WriteJob(operation, ids, run, future))
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._write_groups(), name=f"ticket-writer-{self.node_id}")
        async with self._translate_errors(operation, **ids):
            return await future

    async def _write_groups(self) -> None:
        """The writer task: commit queued jobs in groups until the queue is empty."""
        while self._jobs:
            async with self._write_lock:
                group = [job for job in self._jobs[:MAX_GROUP_SIZE] if not job.future.done()]
                del self._jobs[:MAX_GROUP_SIZE]
                if not group:
                    continue
                try:
                    # NOTE: Connection._execute is aiosqlite's own "run this in the connection's
                    # thread" (unchanged from 0.17 to 0.22) and has no public equivalent.
                    runs = [job.run for job in group]
                    outcomes = await self._writer._execute(_commit_group, self._writer._conn, runs)
                except _GroupAborted as exc:
                    self._fail_group(group, exc)
                    continue
                except (sqlite3.Error, ValueError) as exc:
                    # ValueError: aiosqlite's "no active connection" after a failed close.
                    self._fail_group(group, exc)
                    continue
                except BaseException as exc:
                    # Cancelled with the event loop: no later group will run for the queued callers either.
                    queued, self._jobs = self._jobs, []
                    self._fail_group(group + queued, StorageError(f"ticket writer stopped: {exc!r}"))
                    raise

            self.group_commits += 1
            log.debug("write group committed", node_id=self.node_id, jobs=len(group))
            for job, outcome in zip(group, outcomes, strict=True):
                if job.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    job.future.set_exception(outcome)
                else:
                    job.future.set_result(outcome)

    def _fail_group(self, group: list[_WriteJob], error: BaseException) -> None:
        """Tell every caller of a group that nothing of it was committed."""
        log.error("write group rolled back", node_id=self.node_id, jobs=len(group), error=str(error))
        for index, job in enumerate(group):
            if job.future.done():
                continue
            if isinstance(error, _GroupAborted) and index == error.index:
                job.future.set_exception(error.cause)
            elif isinstance(error, sqlite3.Error):
                # A fresh copy per caller, translated there (a locked database becomes StorageBusy).
                job.future.set_exception(type(error)(*error.args))
            else:
                job.future.set_exception(
                    StorageError(f"{job.operation} was rolled back with its write group: {error}")
                )

    @contextlib.asynccontextmanager
    async def _translate_errors(self, operation: str, **ids: Any) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            error = storage_error_from_sqlite(exc, f"{operation} failed on {self.path}: {exc} {ids}")
            if type(error) is StorageError and ("locked" in str(exc) or "busy" in str(exc)):
                error = StorageBusy(f"{operation} failed: database {self.path} is locked ({exc}) {ids}")
            raise error from exc

    async def _fetch_all(self, operation: str, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        async with self._translate_errors(operation):
            return list(await self._reader.execute_fetchall(sql, params))

    def now(self) -> datetime:
        """Return the current time from the store's clock, the one used for outbox timestamps."""
        return self._clock()

    # ------------------------------------------------------------------ calls

    async def record_call(self, record: CallRecord) -> None:
        """Insert or replace the call record with ``record.call_id``."""
        row = row_from_call(record, self._clock())
        updates = ", ".join(f"{name} = excluded.{name}" for name in row if name != "call_id")
        sql = _insert_sql("calls", row) + f" ON CONFLICT (call_id) DO UPDATE SET {updates}"

        async with self._write_transaction("record call", call_id=record.call_id) as db:
            await db.execute(sql, row)
        log.debug("call recorded", call_id=record.call_id, outcome=row["outcome"], ticket_id=record.ticket_id)

    async def get_call(self, call_id: str) -> CallRecord:
        rows = await self._fetch_all("get call", "SELECT * FROM calls WHERE call_id = ?", (call_id,))
        if not rows:
            raise CallNotFound(call_id)
        return call_from_row(rows[0])

    async def list_calls(self, limit: int = 100, *, since: datetime | None = None) -> list[CallRecord]:
        """Return call records started at or after ``since``, oldest first."""
        since_text = text_from_time(require_utc(since, "since")) if since else ""
        rows = await self._fetch_all(
            "list calls",
            "SELECT * FROM calls WHERE started_at >= ? ORDER BY started_at, call_id LIMIT ?",
            (since_text, limit),
        )
        return [call_from_row(row) for row in rows]

    # ------------------------------------------------------------------ kept callback places

    async def keep_callback(self, kept_place: KeptCallback) -> None:
        """Store (or replace) the kept queue place of call ``kept_place.call_id``."""
        row = row_from_kept_callback(kept_place, self._clock())
        async with self._write_transaction("keep callback place", call_id=kept_place.call_id) as db:
            await db.execute("INSERT OR REPLACE" + _insert_sql("kept_callbacks", row).removeprefix("INSERT"), row)

    async def forget_callback(self, call_id: str) -> None:
        """Delete the kept queue place of ``call_id``; a place already gone is not an error."""
        async with self._write_transaction("forget callback place", call_id=call_id) as db:
            await db.execute("DELETE FROM kept_callbacks WHERE call_id = ?", (call_id,))

    async def list_kept_callbacks(self) -> list[KeptCallback]:
        """Return every kept queue place, oldest queue entry first, expired ones included."""
        rows = await self._fetch_all("list kept callback places",
                                     "SELECT * FROM kept_callbacks ORDER BY queued_at, call_id")
        return [kept_callback_from_row(row) for row in rows]

    # ------------------------------------------------------------------ tickets (owning node)

    async def open_ticket(
        self,
        call_id: str | None,
        category: TicketCategory,
        caller_masked: str,
        created_at: datetime,
        actor: str,
        payload: dict[str, Any] | None = None,
        *,
        office: str | None = None,
        note: str | None = None,
    ) -> Ticket:
        """Allocate a ticket id and write the ticket, its "created" event and its outbox row in one transaction."""
        created_at = require_utc(created_at, "created_at")
        if mask_text(caller_masked) != caller_masked:
            raise ValueError("caller_masked contains an unmasked phone or ID number; pass the masked form")
        category = TicketCategory(category)
        day = china_day(created_at)

        def write(db: sqlite3.Connection) -> Ticket:
            # Step 1: the next number of this region and Asia/Shanghai day.
            (sequence,) = db.execute(_NEXT_SEQUENCE_SQL, (self.region_code, day.isoformat())).fetchone()
            if sequence > MAX_DAILY_SEQUENCE:
                raise TicketIdExhausted(
                    f"region {self.region_code} has used all {MAX_DAILY_SEQUENCE} ticket numbers of {day}"
                )
            ticket_id = format_ticket_id(self.region_code, day, sequence)

            # Step 2: the ticket and its first event.
            ticket = Ticket(
                ticket_id=ticket_id,
                origin_node=self.node_id,
                region_code=self.region_code,
                category=category,
                state=TicketState.NEW,
                caller_masked=caller_masked,
                call_id=call_id,
                created_at=created_at,
                updated_at=created_at,
                last_seq=1,
            )
            event = TicketEvent(
                ticket_id=ticket_id,
                seq=1,
                kind="created",
                actor=actor,
                tier=self.tier,
                office=office,
                occurred_at=created_at,
                from_state=None,
                to_state=TicketState.NEW,
                note=note,
                payload=dict(payload or {}),
            )
            db.execute(_insert_sql("tickets", row_from_ticket(ticket)), row_from_ticket(ticket))
            db.execute(*self._event_statement(event, self.node_id))

            # Step 3: link the call record, if any, and queue the event for the parent tier.
            if call_id is not None:
                db.execute(
                    "UPDATE calls SET ticket_id = ? WHERE call_id = ? AND ticket_id IS NULL", (ticket_id, call_id)
                )
            db.execute(*self._outbox_statement(ticket, event))
            return ticket

        ticket = await self._run_grouped("open ticket", write, call_id=call_id)
        log.info("ticket opened", ticket_id=ticket.ticket_id, call_id=call_id, category=category.value)
        return ticket

    async def apply_action(
        self,
        ticket_id: str,
        action: str,
        actor: str,
        *,
        reason: str | None = None,
        note: str | None = None,
        office: str | None = None,
        target_ticket_id: str | None = None,
        occurred_at: datetime | None = None,
        payload: dict[str, Any] | None = None,
    ) -> TicketEvent:
        """Apply a lifecycle action (``tickets.lifecycle.ACTIONS``) to a ticket owned by this node.

        The check, the event, its outbox row and the ticket's new state are written in one
        ``BEGIN IMMEDIATE`` transaction, so of two concurrent actions that are each valid
        alone only the first can pass. A merge also appends a "duplicate_merged" event to
        the target ticket and records the link, as does an escalation.

        Raises ``TransitionRejected`` (Chinese message) when the lifecycle does not allow
        the action, ``TicketNotFound`` for a missing ticket or merge target, and
        ``TicketConflict`` for a ticket owned by another node.
        """
        occurred_at = require_utc(occurred_at or self._clock(), "occurred_at")

        async with self._write_transaction("apply action", ticket_id=ticket_id, action=action) as db:
            ticket = await self._load_owned_ticket(db, ticket_id)
            planned = await self._apply_planned_action(
                db, ticket, action, actor, occurred_at,
                reason=reason, note=note, office=office, target_ticket_id=target_ticket_id, payload=payload,
            )

        self._log_action(planned)
        return planned.event

    async def append_event(
        self,
        ticket_id: str,
        kind: str,
        actor: str,
        payload: dict[str, Any] | None = None,
        to_state: TicketState | None = None,
        reason: str | None = None,
        note: str | None = None,
        *,
        office: str | None = None,
        occurred_at: datetime | None = None,
    ) -> TicketEvent:
        """Write the next event of a ticket owned by this node, with its outbox row, in one transaction.

        Without ``to_state`` the event is informational ("agent_answered", "call_ended") and
        leaves the state alone; kinds that the lifecycle writes are rejected on this path.
        With ``to_state`` the change goes through the same lifecycle check as
        ``apply_action``: the one action leading there from the current state must exist
        and ``kind`` must be that action's event kind.
        """
        occurred_at = require_utc(occurred_at or self._clock(), "occurred_at")
        if to_state is None and kind in RESERVED_EVENT_KINDS:
            raise ValueError(
                f"event kind {kind!r} changes the lifecycle or needs stored content; "
                "use apply_action or add_attachment instead of append_event"
            )

        async with self._write_transaction("append event", ticket_id=ticket_id) as db:
            ticket = await self._load_owned_ticket(db, ticket_id)

            # A state change is an action of the lifecycle table, checked like apply_action.
            if to_state is not None:
                rule = rule_for_state_change(ticket_id, ticket.state, to_state)
                if kind != rule.event_kind:
                    raise ValueError(
                        f"ticket {ticket_id}: a change from {ticket.state.value} to {to_state.value} is action "
                        f"{rule.name!r} with event kind {rule.event_kind!r}, not {kind!r}"
                    )
                planned = await self._apply_planned_action(
                    db, ticket, rule.name, actor, occurred_at,
                    reason=reason, note=note, office=office, target_ticket_id=None, payload=payload,
                )
                event = planned.event
            else:
                event = await self._append_informational(
                    db, ticket, kind, actor, occurred_at, payload=payload, reason=reason, note=note, office=office,
                )

        if to_state is not None:
            self._log_action(planned)
        else:
            log.debug("ticket event appended", ticket_id=ticket_id, seq=event.seq, kind=kind)
        return event

    async def _apply_planned_action(
        self,
        db: aiosqlite.Connection,
        ticket: Ticket,
        action: str,
        actor: str,
        occurred_at: datetime,
        *,
        reason: str | None,
        note: str | None,
        office: str | None,
        target_ticket_id: str | None,
        payload: dict[str, Any] | None,
    ) -> PlannedAction:
        """Validate and write one lifecycle action inside the caller's write transaction."""
        # Step 1: a merge target lives on this node and its state matters, so load it.
        rule = ACTIONS.get(action)
        target: Ticket | str | None = target_ticket_id
        if rule is not None and rule.target_is_local and target_ticket_id:
            target = await self._load_ticket(db, target_ticket_id.strip())

        # Step 2: the lifecycle decides; nothing is written when it rejects.
        planned = plan_action(
            ticket, action, actor, self.tier, occurred_at,
            reason=reason, note=note, office=office, target=target, payload=payload,
        )

        # Step 3: the ticket's new state, its event and the outbox row.
        await self._write_ticket_progress(db, planned.ticket)
        await self._insert_event(db, planned.event, self.node_id)
        await self._insert_outbox(db, planned.ticket, planned.event)

        # Step 4: links to the other ticket; a merge target also records what was merged into it.
        linked_id = planned.event.payload.get("target_ticket_id")
        if linked_id is not None:
            await self._insert_link(db, ticket.ticket_id, planned.rule.event_kind, linked_id, planned.event.seq)
        if isinstance(target, Ticket):
            await self._append_informational(
                db, target, "duplicate_merged", actor, occurred_at,
                payload={"source_ticket_id": ticket.ticket_id}, office=office,
            )
        return planned

    async def _append_informational(
        self,
        db: aiosqlite.Connection,
        ticket: Ticket,
        kind: str,
        actor: str,
        occurred_at: datetime,
        *,
        payload: dict[str, Any] | None = None,
        reason: str | None = None,
        note: str | None = None,
        office: str | None = None,
    ) -> TicketEvent:
        """Write an event that keeps the ticket's state, with its outbox row, inside the caller's transaction."""
        event = TicketEvent(
            ticket_id=ticket.ticket_id,
            seq=ticket.last_seq + 1,
            kind=kind,
            actor=actor,
            tier=self.tier,
            office=office,
            occurred_at=occurred_at,
            from_state=ticket.state,
            to_state=None,
            reason=reason,
            note=note,
            payload=dict(payload or {}),
        )
        updated = dataclasses.replace(ticket, updated_at=max(occurred_at, ticket.updated_at), last_seq=event.seq)
        await self._write_ticket_progress(db, updated)
        await self._insert_event(db, event, self.node_id)
        await self._insert_outbox(db, updated, event)
        return event

    async def _write_ticket_progress(self, db: aiosqlite.Connection, ticket: Ticket) -> None:
        await db.execute(
            "UPDATE tickets SET state = ?, updated_at = ?, last_seq = ? WHERE ticket_id = ?",
            (ticket.state.value, text_from_time(ticket.updated_at), ticket.last_seq, ticket.ticket_id),
        )

    async def _insert_link(self, db: aiosqlite.Connection, ticket_id: str, kind: str, linked_id: str, seq: int) -> None:
        await db.execute(*self._link_statement(ticket_id, kind, linked_id, seq))

    def _link_statement(self, ticket_id: str, kind: str, linked_id: str, seq: int) -> tuple[str, tuple[Any, ...]]:
        return (
            "INSERT INTO ticket_links (ticket_id, kind, linked_ticket_id, seq, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (ticket_id, kind, linked_ticket_id) DO NOTHING",
            (ticket_id, kind, linked_id, seq, text_from_time(self._clock())),
        )

    def _log_action(self, planned: PlannedAction) -> None:
        event = planned.event
        log.info(
            "ticket action applied", ticket_id=event.ticket_id, seq=event.seq, action=planned.rule.name,
            from_state=event.from_state.value if event.from_state else None,
            to_state=planned.ticket.state.value, reason=event.reason,
        )

    async def _load_owned_ticket(self, db: aiosqlite.Connection, ticket_id: str) -> Ticket:
        ticket = await self._load_ticket(db, ticket_id)
        if ticket.origin_node != self.node_id:
            raise TicketConflict(
                f"ticket {ticket_id} belongs to node {ticket.origin_node}; only that node appends its events"
            )
        return ticket

    async def _load_ticket(self, db: aiosqlite.Connection, ticket_id: str) -> Ticket:
        async with db.execute("SELECT * FROM tickets WHERE ticket_id = ?", (ticket_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise TicketNotFound(ticket_id)
        return ticket_from_row(row)

    async def _insert_event(self, db: aiosqlite.Connection, event: TicketEvent, origin_node: str) -> None:
        await db.execute(*self._event_statement(event, origin_node))

    async def _insert_outbox(self, db: aiosqlite.Connection, ticket: Ticket, event: TicketEvent) -> None:
        await db.execute(*self._outbox_statement(ticket, event))

    def _event_statement(self, event: TicketEvent, origin_node: str) -> tuple[str, dict[str, Any]]:
        row = row_from_event(event, origin_node, self._clock())
        return _insert_sql("ticket_events", row), row

    def _outbox_statement(self, ticket: Ticket, event: TicketEvent) -> tuple[str, tuple[Any, ...]]:
        envelope = encode_envelope(build_envelope(ticket, event))
        return _OUTBOX_SQL, (
            event.event_id, event.ticket_id, event.seq, envelope, len(envelope), text_from_time(self._clock()),
        )

    # ------------------------------------------------------------------ attachments

    @property
    def attachment_dir(self) -> Path:
        """Folder of attachment files, next to the database: ``<database name>.attachments``."""
        return self.path.parent / f"{self.path.name}.attachments"

    async def add_attachment(
        self,
        ticket_id: str,
        content: str | Path | bytes,
        media_type: str,
        actor: str,
        *,
        note: str | None = None,
        office: str | None = None,
        occurred_at: datetime | None = None,
    ) -> str:
        """Store a photo or recording for a ticket by the SHA-256 of its content and return that hash.

        ``content`` is the bytes themselves or the path of a file to copy. Identical content
        is stored once, however many tickets it is added to. The file is written first
        (temporary file, fsync, rename, fsync of the folder), then the attachment row and an
        "attachment_added" event with the hash go into one transaction, so a committed event
        always has its file. A failed transaction can leave an unreferenced file behind,
        which a later add of the same content reuses.
        """
        occurred_at = require_utc(occurred_at or self._clock(), "occurred_at")
        if not isinstance(media_type, str) or not MEDIA_TYPE_RE.match(media_type):
            raise ValueError(f"invalid media type {media_type!r}: expected type/subtype in lower case, e.g. image/jpeg")

        # Step 1: the file, named by its hash.
        sha256, size = await asyncio.to_thread(self._store_attachment_file, content)

        # Step 2: the attachment row (kept from the first add) and the ticket's event.
        async with self._write_transaction("add attachment", ticket_id=ticket_id, sha256=sha256) as db:
            ticket = await self._load_owned_ticket(db, ticket_id)
            await db.execute(
                "INSERT INTO attachments (sha256, size, media_type, created_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (sha256) DO NOTHING",
                (sha256, size, media_type, text_from_time(self._clock())),
            )
            # The payload key ends in "_id" so that upward masking leaves the hex digest intact.
            event = await self._append_informational(
                db, ticket, "attachment_added", actor, occurred_at,
                payload={"attachment_id": sha256, "size_bytes": size, "media_type": media_type},
                note=note, office=office,
            )

        log.info("attachment added", ticket_id=ticket_id, seq=event.seq, sha256=sha256, size_bytes=size)
        return sha256

    async def get_attachment(self, sha256: str) -> Attachment:
        rows = await self._fetch_all("get attachment", "SELECT * FROM attachments WHERE sha256 = ?", (sha256,))
        if not rows:
            raise AttachmentNotFound(sha256)
        return attachment_from_row(rows[0])

    async def attachment_path(self, sha256: str) -> Path:
        """Return the file of a stored attachment; raise AttachmentNotFound when the row or the file is missing."""
        attachment = await self.get_attachment(sha256)
        path = self._attachment_file(attachment.sha256)
        if not path.is_file():
            raise AttachmentNotFound(sha256, f"file {path} is missing")
        return path

    def _attachment_file(self, sha256: str) -> Path:
        if not SHA256_RE.match(sha256):
            raise ValueError(f"invalid attachment hash {sha256!r}: expected 64 lower-case hex digits")
        return self.attachment_dir / sha256[:2] / sha256

    def _store_attachment_file(self, content: str | Path | bytes) -> tuple[str, int]:
        """Copy ``content`` into the attachment folder under its hash; blocking, run in a worker thread."""
        if isinstance(content, bytes):
            return self._copy_into_store(io.BytesIO(content), "bytes")

        source = Path(content)
        try:
            with source.open("rb") as stream:
                return self._copy_into_store(stream, str(source))
        except FileNotFoundError as exc:
            raise AttachmentError(f"attachment source {source} does not exist") from exc
        except IsADirectoryError as exc:
            raise AttachmentError(f"attachment source {source} is a folder, not a file") from exc

    def _copy_into_store(self, stream: BinaryIO, source_name: str) -> tuple[str, int]:
        folder = self.attachment_dir
        try:
            folder.mkdir(exist_ok=True)
            handle, temp_name = tempfile.mkstemp(prefix=".incoming-", dir=folder)
        except OSError as exc:
            raise AttachmentError(f"cannot write to attachment folder {folder}: {exc}") from exc

        temp_path = Path(temp_name)
        try:
            # Copy and hash in one pass; the name is known only at the end.
            digest = hashlib.sha256()
            size = 0
            with os.fdopen(handle, "wb") as target:
                while chunk := stream.read(_COPY_CHUNK_BYTES):
                    size += len(chunk)
                    if size > MAX_ATTACHMENT_BYTES:
                        raise AttachmentError(
                            f"attachment {source_name} is larger than {MAX_ATTACHMENT_BYTES} bytes"
                        )
                    digest.update(chunk)
                    target.write(chunk)
                target.flush()
                os.fsync(target.fileno())
            sha256 = digest.hexdigest()

            # Identical content is already stored: keep the existing file.
            final = self._attachment_file(sha256)
            if final.is_file() and final.stat().st_size == size:
                temp_path.unlink()
                return sha256, size

            final.parent.mkdir(exist_ok=True)
            os.replace(temp_path, final)
            _fsync_folder(final.parent)
            _fsync_folder(folder)
            return sha256, size
        except OSError as exc:
            temp_path.unlink(missing_ok=True)
            raise AttachmentError(f"cannot store attachment {source_name} in {folder}: {exc}") from exc
        except BaseException:
            temp_path.unlink(missing_ok=True)
            raise

    # ------------------------------------------------------------------ links

    async def list_links(self, ticket_id: str) -> list[TicketLink]:
        """Return the links from and to a ticket (并单, 提级), in the order they were written."""
        rows = await self._fetch_all(
            "list links",
            "SELECT * FROM ticket_links WHERE ticket_id = ? OR linked_ticket_id = ? ORDER BY created_at, seq",
            (ticket_id, ticket_id),
        )
        return [link_from_row(row) for row in rows]

    # ------------------------------------------------------------------ reads

    async def get_ticket(self, ticket_id: str) -> Ticket:
        rows = await self._fetch_all("get ticket", "SELECT * FROM tickets WHERE ticket_id = ?", (ticket_id,))
        if not rows:
            raise TicketNotFound(ticket_id)
        return ticket_from_row(rows[0])

    async def list_tickets(
        self,
        *,
        origin_node: str | None = None,
        limit: int = 1000,
        newest_first: bool = False,
        states: Iterable[TicketState] | None = None,
        category: TicketCategory | None = None,
        created_since: datetime | None = None,
    ) -> list[Ticket]:
        """Return tickets in id order, or newest first by creation time, optionally filtered.

        The filters keep tickets opened by ``origin_node``, in one of ``states``, of ``category``
        or created at or after ``created_since`` (UTC); ``count_tickets`` takes the same filters.
        """
        where, params = _ticket_filter(origin_node, states, category, created_since)
        order = "created_at DESC, ticket_id DESC" if newest_first else "ticket_id"
        sql = f"SELECT * FROM tickets{where} ORDER BY {order} LIMIT ?"
        rows = await self._fetch_all("list tickets", sql, (*params, limit))
        return [ticket_from_row(row) for row in rows]

    async def count_tickets(
        self,
        *,
        origin_node: str | None = None,
        states: Iterable[TicketState] | None = None,
        category: TicketCategory | None = None,
        created_since: datetime | None = None,
    ) -> int:
        """Return how many tickets match the filters of ``list_tickets``, with no limit."""
        where, params = _ticket_filter(origin_node, states, category, created_since)
        rows = await self._fetch_all("count tickets", f"SELECT COUNT(*) FROM tickets{where}", params)
        return int(rows[0][0])

    async def find_ticket_by_call(self, call_id: str) -> Ticket | None:
        """Return this node's ticket opened for call ``call_id``, or None when the call opened none."""
        rows = await self._fetch_all(
            "find ticket by call",
            "SELECT * FROM tickets WHERE call_id = ? AND origin_node = ? ORDER BY ticket_id LIMIT 1",
            (call_id, self.node_id),
        )
        return ticket_from_row(rows[0]) if rows else None

    async def list_events(self, ticket_id: str) -> list[TicketEvent]:
        """Return the stored events of a ticket in sequence order (gaps possible at a parent)."""
        rows = await self._fetch_all(
            "list events", "SELECT * FROM ticket_events WHERE ticket_id = ? ORDER BY seq", (ticket_id,)
        )
        return [event_from_row(row) for row in rows]

    async def check_integrity(self) -> str:
        """Run ``PRAGMA integrity_check`` and return its first line ("ok" when healthy)."""
        rows = await self._fetch_all("integrity check", "PRAGMA integrity_check")
        return rows[0][0]

    # ------------------------------------------------------------------ outbox

    async def pending_outbox(self, limit: int = 100, *, sent_before: datetime | None = None) -> list[OutboxRow]:
        """Return un-acknowledged, live outbox rows in write order.

        With ``sent_before``, only rows never sent or last sent before that moment are returned.
        """
        if sent_before is None:
            sql = "SELECT * FROM outbox WHERE acked_at IS NULL AND dead_at IS NULL ORDER BY row_id LIMIT ?"
            params: tuple[Any, ...] = (limit,)
        else:
            sql = (
                "SELECT * FROM outbox WHERE acked_at IS NULL AND dead_at IS NULL "
                "AND (sent_at IS NULL OR sent_at < ?) ORDER BY row_id LIMIT ?"
            )
            params = (text_from_time(require_utc(sent_before, "sent_before")), limit)
        return [outbox_from_row(row) for row in await self._fetch_all("read outbox", sql, params)]

    async def find_outbox_row(self, event_id: str) -> OutboxRow | None:
        rows = await self._fetch_all("find outbox row", "SELECT * FROM outbox WHERE event_id = ?", (event_id,))
        return outbox_from_row(rows[0]) if rows else None

    async def count_pending_outbox(self) -> int:
        rows = await self._fetch_all(
            "count outbox", "SELECT count(*) FROM outbox WHERE acked_at IS NULL AND dead_at IS NULL"
        )
        return rows[0][0]

    async def list_dead_letters(self, limit: int = 100) -> list[OutboxRow]:
        rows = await self._fetch_all(
            "read dead letters", "SELECT * FROM outbox WHERE dead_at IS NOT NULL ORDER BY row_id LIMIT ?", (limit,)
        )
        return [outbox_from_row(row) for row in rows]

    async def mark_outbox_sent(self, row_ids: Iterable[int]) -> None:
        """Record that the broker confirmed (PUBACK) these rows; they stay pending until the parent's ack."""
        ids = list(row_ids)
        if not ids:
            return
        now = text_from_time(self._clock())

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE row_id = ?",
                [(now, row_id) for row_id in ids],
            )

        await self._run_grouped("mark outbox sent", write, row_ids=ids)

    async def mark_outbox_acked(self, ticket_id: str, seq: int) -> bool:
        """Clear the outbox row of an event the parent acknowledged; return False if none was pending."""
        def write(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE outbox SET acked_at = ? WHERE ticket_id = ? AND seq = ? AND acked_at IS NULL",
                (text_from_time(self._clock()), ticket_id, seq),
            ).rowcount

        return await self._run_grouped("mark outbox acked", write, ticket_id=ticket_id, seq=seq) > 0

    async def dead_letter(self, row_id: int, reason: str) -> None:
        """Take a row out of the publish queue for good, keeping it and the reason for an operator."""
        async with self._write_transaction("dead-letter outbox row", row_id=row_id) as db:
            cursor = await db.execute(
                "UPDATE outbox SET dead_at = ?, dead_reason = ? WHERE row_id = ? AND dead_at IS NULL",
                (text_from_time(self._clock()), reason, row_id),
            )
            changed = cursor.rowcount
            await cursor.close()
        if changed == 0:
            raise StorageError(f"outbox row {row_id} not found or already dead-lettered")

    # ------------------------------------------------------------------ parent tier

    async def apply_remote_event(self, envelope: EventEnvelope) -> ApplyResult:
        """Store a child's event and ticket snapshot; idempotent by (ticket id, seq), any arrival order.

        Raises TicketConflict when the same (ticket id, seq) already holds different content,
        when the ticket belongs to another node, or when the event claims to come from this node.
        """
        ticket = envelope.ticket
        event = envelope.event
        if envelope.origin_node == self.node_id:
            raise TicketConflict(f"event {envelope.event_id} claims to come from this node {self.node_id}")

        def write(db: sqlite3.Connection) -> ApplyResult:
            # Step 1: a stored copy of the same event makes this a duplicate, or a conflict if it differs.
            existing = db.execute(
                "SELECT digest FROM ticket_events WHERE ticket_id = ? AND seq = ?", (event.ticket_id, event.seq)
            ).fetchone()
            if existing is not None:
                if existing["digest"] != event_digest(event):
                    raise TicketConflict(f"event {envelope.event_id} is already stored with different content")
                return "duplicate"

            # Step 2: create the ticket, or move its snapshot forward when this event is the newest.
            stored_row = db.execute("SELECT * FROM tickets WHERE ticket_id = ?", (ticket.ticket_id,)).fetchone()
            if stored_row is None:
                row = row_from_ticket(ticket) | {"received_at": text_from_time(self._clock())}
                db.execute(_insert_sql("tickets", row), row)
            else:
                stored = ticket_from_row(stored_row)
                if stored.origin_node != envelope.origin_node:
                    raise TicketConflict(
                        f"ticket {ticket.ticket_id} belongs to node {stored.origin_node}, "
                        f"not to {envelope.origin_node}"
                    )
                if ticket.last_seq > stored.last_seq:
                    db.execute(
                        "UPDATE tickets SET category = ?, state = ?, caller_masked = ?, updated_at = ?, "
                        "last_seq = ? WHERE ticket_id = ?",
                        (ticket.category.value, ticket.state.value, ticket.caller_masked,
                         text_from_time(ticket.updated_at), ticket.last_seq, ticket.ticket_id),
                    )

            # Step 3: the event itself, and the link it records for a merge or an escalation.
            db.execute(*self._event_statement(event, envelope.origin_node))
            linked_id = event.payload.get("target_ticket_id")
            if event.kind in LINK_EVENT_KINDS and isinstance(linked_id, str):
                db.execute(*self._link_statement(event.ticket_id, event.kind, linked_id, event.seq))
            return "applied"

        result: ApplyResult = await self._run_grouped(
            "apply remote event", write, ticket_id=ticket.ticket_id, seq=event.seq
        )
        if result == "duplicate":
            return result
        log.info(
            "remote event applied", ticket_id=ticket.ticket_id, seq=event.seq,
            event_id=envelope.event_id, origin_node=envelope.origin_node,
        )
        return "applied"

    # ------------------------------------------------------------------ tier chain: outbox channels
    #
    # The outbox carries three channels, distinguished by the key in its ``event_id`` column:
    #   "<ticket id>#<seq>"              upward to the parent: own events and forwarded ones
    #   "<ticket id>#<seq>@<node>"       an emergency copy sent straight to the ancestor <node>
    #   "down:<instruction id>@<child>"  an instruction to the child node <child>
    # Node ids and instruction ids contain none of GLOB's "*", "?" and "[", so the GLOB
    # patterns below match them literally ("_" would be a wildcard under LIKE).

    @staticmethod
    def emergency_copy_key(event_id: str, destination_node: str) -> str:
        return f"{event_id}@{validate_node_id(destination_node)}"

    @staticmethod
    def instruction_key(instruction_id: str, child_node: str) -> str:
        return f"down:{instruction_id}@{validate_node_id(child_node)}"

    async def pending_channel_outbox(
        self, destination_node: str | None, limit: int = 100, *, sent_before: datetime | None = None
    ) -> list[OutboxRow]:
        """Return live, unacknowledged rows of one channel in write order.

        ``destination_node`` None selects the upward channel, a node id the emergency copies
        for that node. With ``sent_before``, only rows never sent or last sent before it.
        """
        if destination_node is None:
            channel, params = "event_id NOT GLOB '*@*'", []
        else:
            channel = "event_id GLOB ? AND event_id NOT GLOB 'down:*'"
            params = [f"*@{validate_node_id(destination_node)}"]
        return await self._pending_rows("read outbox channel", channel, params, limit, sent_before)

    async def pending_instructions(self, limit: int = 100, *, sent_before: datetime | None = None) -> list[OutboxRow]:
        """Return live, unacknowledged instructions to child nodes in write order."""
        return await self._pending_rows("read instruction outbox", "event_id GLOB 'down:*'", [], limit, sent_before)

    async def _pending_rows(
        self, operation: str, channel: str, params: list[Any], limit: int, sent_before: datetime | None
    ) -> list[OutboxRow]:
        sql = f"SELECT * FROM outbox WHERE acked_at IS NULL AND dead_at IS NULL AND {channel}"
        if sent_before is not None:
            sql += " AND (sent_at IS NULL OR sent_at < ?)"
            params = [*params, text_from_time(require_utc(sent_before, "sent_before"))]
        sql += " ORDER BY row_id LIMIT ?"
        return [outbox_from_row(row) for row in await self._fetch_all(operation, sql, [*params, limit])]

    async def queue_outbox_row(self, key: str, ticket_id: str, seq: int, envelope: bytes) -> bool:
        """Add an outbox row under ``key`` unless one exists; return whether it was added.

        Used for events a tier forwards up the chain and for instructions to children; a
        re-delivered event therefore queues its forward copy once.
        """
        async with self._write_transaction("queue outbox row", key=key) as db:
            cursor = await db.execute(
                "INSERT INTO outbox (event_id, ticket_id, seq, envelope, size, created_at) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (event_id) DO NOTHING",
                (key, ticket_id, seq, envelope, len(envelope), text_from_time(self._clock())),
            )
            added = cursor.rowcount
            await cursor.close()
        return added > 0

    async def mark_outbox_key_acked(self, key: str) -> bool:
        """Clear the one outbox row stored under ``key``; return False if it was not pending.

        Acks arrive many at a time, so the clears join the group commit.
        """
        def write(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE outbox SET acked_at = ? WHERE event_id = ? AND acked_at IS NULL",
                (text_from_time(self._clock()), key),
            ).rowcount

        return await self._run_grouped("mark outbox row acked", write, key=key) > 0

    async def queue_emergency_copies(self, destination_node: str, after_row_id: int) -> tuple[int, int]:
        """Copy the upward rows of this node's emergency tickets into the channel of ``destination_node``.

        A ticket is an emergency once one of its events is an "emergency_alert"; all its
        events are copied, including those written before the alert. Only tickets with an
        upward row after ``after_row_id`` are looked at. Returns the number of rows added
        and the row id to pass next time. Copies that exist already are left alone, so
        passing 0 after a restart is safe.
        """
        destination = validate_node_id(destination_node)
        async with self._write_transaction("queue emergency copies", destination=destination) as db:
            cursor = await db.execute(
                "INSERT OR IGNORE INTO outbox (event_id, ticket_id, seq, envelope, size, created_at) "
                "SELECT o.event_id || '@' || :destination, o.ticket_id, o.seq, o.envelope, o.size, :now "
                "FROM outbox o WHERE o.event_id NOT GLOB '*@*' AND o.ticket_id IN ("
                "  SELECT n.ticket_id FROM outbox n WHERE n.row_id > :after AND n.event_id NOT GLOB '*@*' "
                "  AND EXISTS (SELECT 1 FROM ticket_events e WHERE e.ticket_id = n.ticket_id "
                "              AND e.kind = 'emergency_alert' AND e.origin_node = :node)"
                ") ORDER BY o.row_id",
                {"destination": destination, "now": text_from_time(self._clock()), "after": after_row_id,
                 "node": self.node_id},
            )
            added = cursor.rowcount
            await cursor.close()
            async with db.execute("SELECT coalesce(max(row_id), 0) FROM outbox") as cursor:
                (last_row_id,) = await cursor.fetchone()
        if added > 0:
            log.info("emergency copies queued", destination=destination, rows=added)
        return added, last_row_id

    # ------------------------------------------------------------------ tier chain: 提级 and instructions

    async def find_escalated_ticket(self, source_ticket_id: str) -> Ticket | None:
        """Return the ticket this node opened for the 提级 of ``source_ticket_id``, if any.

        NOTE: the lookup reads the "created" events' payloads without an index; escalations
        are rare, but the cost grows with the number of tickets the node ever opened.
        """
        rows = await self._fetch_all(
            "find escalated ticket",
            "SELECT ticket_id FROM ticket_events WHERE seq = 1 AND kind = 'created' AND origin_node = ? "
            "AND json_extract(payload, '$.escalated_from_ticket_id') = ? ORDER BY ticket_id LIMIT 1",
            (self.node_id, source_ticket_id),
        )
        return await self.get_ticket(rows[0]["ticket_id"]) if rows else None

    async def open_escalated_ticket(
        self, source: Ticket, escalation_event_id: str, actor: str, created_at: datetime, note: str | None = None
    ) -> tuple[Ticket, bool]:
        """Open this node's own ticket for a child's 提级 of ``source``, once; return it and whether it is new.

        The new ticket takes its id from this node's region code and starts its own clocks
        at ``created_at``. Its "created" event names the source ticket, which makes a
        repeated call find it instead of opening a second one, and an "escalated_from" link
        points back at the source.
        """
        ticket = await self.find_escalated_ticket(source.ticket_id)
        opened = ticket is None
        if ticket is None:
            ticket = await self.open_ticket(
                None, source.category, source.caller_masked, created_at, actor,
                {"escalated_from_ticket_id": source.ticket_id, "escalated_from_node_id": source.origin_node,
                 "escalation_event_id": escalation_event_id},
                note=note,
            )

        async with self._write_transaction("link escalated ticket", ticket_id=ticket.ticket_id) as db:
            await self._insert_link(db, ticket.ticket_id, "escalated_from", source.ticket_id, 1)
        return ticket, opened

    async def record_escalation_link(
        self,
        ticket_id: str,
        higher_ticket_id: str,
        actor: str,
        *,
        payload: dict[str, Any] | None = None,
        occurred_at: datetime | None = None,
    ) -> TicketEvent | None:
        """Record on an own ticket the id of the ticket the higher tier opened for its 提级.

        Writes an "escalation_linked" event (which travels up like any other) and the link,
        in one transaction. Returns None, writing nothing, when the link is already stored.
        """
        occurred_at = require_utc(occurred_at or self._clock(), "occurred_at")
        kind = "escalation_linked"
        async with self._write_transaction("record escalation link", ticket_id=ticket_id) as db:
            ticket = await self._load_owned_ticket(db, ticket_id)
            async with db.execute(
                "SELECT 1 FROM ticket_links WHERE ticket_id = ? AND kind = ? AND linked_ticket_id = ?",
                (ticket_id, kind, higher_ticket_id),
            ) as cursor:
                if await cursor.fetchone() is not None:
                    return None
            event = await self._append_informational(
                db, ticket, kind, actor, occurred_at,
                payload={**(payload or {}), "target_ticket_id": higher_ticket_id},
            )
            await self._insert_link(db, ticket_id, kind, higher_ticket_id, event.seq)
        log.info("escalation linked", ticket_id=ticket_id, higher_ticket_id=higher_ticket_id, seq=event.seq)
        return event

    async def find_instruction_event(self, ticket_id: str, instruction_id: str) -> int | None:
        """Return the sequence of the event that applied an instruction to a ticket, or None."""
        rows = await self._fetch_all(
            "find instruction event",
            "SELECT seq FROM ticket_events WHERE ticket_id = ? "
            "AND json_extract(payload, '$.instruction_id') = ? ORDER BY seq LIMIT 1",
            (ticket_id, instruction_id),
        )
        return rows[0]["seq"] if rows else None


def _ticket_filter(
    origin_node: str | None,
    states: Iterable[TicketState] | None,
    category: TicketCategory | None,
    created_since: datetime | None,
) -> tuple[str, tuple[Any, ...]]:
    """Build the WHERE clause and parameters shared by ``list_tickets`` and ``count_tickets``."""
    conditions: list[str] = []
    params: list[Any] = []
    if origin_node is not None:
        conditions.append("origin_node = ?")
        params.append(origin_node)
    if states is not None:
        values = sorted({TicketState(state).value for state in states})
        conditions.append(f"state IN ({', '.join('?' for _ in values)})" if values else "0")
        params.extend(values)
    if category is not None:
        conditions.append("category = ?")
        params.append(TicketCategory(category).value)
    if created_since is not None:
        # created_at is fixed-width ISO UTC text, so text order is time order.
        conditions.append("created_at >= ?")
        params.append(text_from_time(require_utc(created_since, "created_since")))
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return where, tuple(params)
