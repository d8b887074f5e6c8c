"""Storage: citizen profiles in their own SQLite file, with personal fields encrypted at rest.

Name, ID number, address detail and the details document (phones, statuses, need tags,
contact, help history) are stored as AES-256-GCM ciphertexts. The ID number and every
phone number are also stored as HMAC-SHA256 hashes under a separate key, and lookups and
deduplication use those hashes only. Keys come from files outside the database (see
profiles.keys).

Concurrency and durability follow the ticket store: WAL mode, one writer connection
under an asyncio lock with ``BEGIN IMMEDIATE`` for every write, one read-only connection,
``synchronous=FULL``.

Every full-profile read writes an entry to the append-only ``profile_access_log`` in the
same call, before the data is returned, also when access is denied.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiosqlite
import structlog

from profiles.access import (
    AccessDenied,
    Operator,
    OperatorRole,
    OperatorTier,
    can_read,
    expected_tier,
)
from profiles.codec import details_to_json, phone_list, profile_from_parts
from profiles.keys import ProfileKeys
from profiles.model import Profile, ProfileSummary, summarise
from profiles.phone import PhoneNumber
from regions.divisions import DivisionTable, default_division_table
from storage.errors import StorageBusy, StorageError
from storage.profile_schema import PROFILE_LATEST_VERSION, PROFILE_MIGRATIONS
from storage.sqlite import begin_immediate, rollback_shielded
from storage.sqlite import connect as sqlite_connect
from storage.sqlite import migrate as sqlite_migrate

log = structlog.get_logger(__name__)

CHINA = ZoneInfo("Asia/Shanghai")
DEFAULT_BUSY_TIMEOUT_MS = 10_000
DEFAULT_BATCH_SIZE = 500
MIN_REASON_LENGTH = 4

# Columns encrypted per profile, in the order they are read and written.
_ENCRYPTED_COLUMNS = ("name_ct", "id_number_ct", "address_ct", "details_ct")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OperatorNotFound(StorageError):
    """No operator account with the requested name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"operator {name} not found")
        self.name = name


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int


@dataclass(frozen=True)
class FullProfile:
    """A decrypted profile handed to an authorised operator, with its keyed hashes."""

    profile_ref: str
    profile: Profile
    phone_refs: tuple[str, ...]


@dataclass(frozen=True)
class FullRead:
    """Result of a full-profile read: the profiles granted and how many were outside the account's region."""

    granted: tuple[FullProfile, ...]
    denied: int


@dataclass(frozen=True)
class AccessLogEntry:
    entry_id: int
    occurred_at: datetime
    operator: str
    action: str
    reason: str
    profile_ref: str | None
    outcome: str


class ProfileStore:
    def __init__(self, path: Path, keys: ProfileKeys, divisions: DivisionTable, writer: aiosqlite.Connection,
                 reader: aiosqlite.Connection, clock: Callable[[], datetime]) -> None:
        self.path = path
        self._keys = keys
        self._divisions = divisions
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._closed = False

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str | Path,
        keys: ProfileKeys,
        *,
        divisions: DivisionTable | None = None,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        clock: Callable[[], datetime] = _utc_now,
    ) -> ProfileStore:
        """Open (and create or migrate) a profile database."""
        path = Path(path)
        started = time.monotonic()
        writer = await cls._connect(path, busy_timeout_ms, read_only=False)
        try:
            await cls._migrate(writer, path)
            reader = await cls._connect(path, busy_timeout_ms, read_only=True)
        except BaseException:
            await writer.close()
            raise

        store = cls(path, keys, divisions or default_division_table(), writer, reader, clock)
        log.info("profile store opened", path=str(path), schema_version=PROFILE_LATEST_VERSION,
                 elapsed_ms=round((time.monotonic() - started) * 1000))
        return store

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._write_lock:
            await self._reader.close()
            await self._writer.close()
        log.info("profile store closed", path=str(self.path))

    async def __aenter__(self) -> ProfileStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @staticmethod
    async def _connect(path: Path, busy_timeout_ms: int, *, read_only: bool) -> aiosqlite.Connection:
        return await sqlite_connect(path, busy_timeout_ms, read_only=read_only)

    @staticmethod
    async def _migrate(writer: aiosqlite.Connection, path: Path) -> None:
        await sqlite_migrate(writer, path, PROFILE_MIGRATIONS, label="profile database")

    # ------------------------------------------------------------------ helpers

    @contextlib.asynccontextmanager
    async def _write_transaction(self, operation: str) -> AsyncIterator[aiosqlite.Connection]:
        """Run one write transaction under ``BEGIN IMMEDIATE``; commit on success, roll back on error."""
        async with self._write_lock, self._translate_errors(operation):
            await begin_immediate(self._writer, operation)
            try:
                yield self._writer
            except BaseException:
                await rollback_shielded(self._writer)
                raise
            await self._writer.execute("COMMIT")

    @contextlib.asynccontextmanager
    async def _translate_errors(self, operation: str) -> AsyncIterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StorageBusy(f"{operation} failed: database {self.path} is locked ({exc})") from exc
            raise StorageError(f"{operation} failed on {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise StorageError(f"{operation} failed on {self.path}: {exc}") from exc

    async def _fetch_all(self, operation: str, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        async with self._translate_errors(operation):
            return list(await self._reader.execute_fetchall(sql, params))

    def _today(self) -> date:
        return self._clock().astimezone(CHINA).date()

    def _now_text(self) -> str:
        return self._clock().astimezone(UTC).isoformat(timespec="microseconds")

    @property
    def active_key_id(self) -> str:
        return self._keys.active_key_id

    def profile_ref(self, id_number: str) -> str:
        """Return the keyed hash of an 18-character ID number in hex: the profile's handle outside the store."""
        return self._keys.lookup_hash(id_number).hex()

    def phone_ref(self, phone: PhoneNumber) -> str:
        return self._keys.lookup_hash(phone.e164).hex()

    def county_label(self, region_code: str) -> str:
        """Return the division names from province down to the county, such as 上海市浦东新区."""
        names: list[str] = []
        code: str | None = region_code
        while code is not None:
            division = self._divisions.get(code)
            if division is None:
                break
            if not division.placeholder and (not names or names[0] != division.name):
                names.insert(0, division.name)
            code = division.parent_code
        return "".join(names) or region_code

    def _encrypt_row(self, profile: Profile, profile_uid: str, key_id: str) -> list[bytes]:
        plaintexts = (profile.name.encode(), profile.id_number.encode(), profile.address.detail.encode(),
                      details_to_json(profile))
        return [self._keys.encrypt(plaintext, profile_uid=profile_uid, column=column, key_id=key_id)
                for plaintext, column in zip(plaintexts, _ENCRYPTED_COLUMNS)]

    def _decrypt(self, row: sqlite3.Row, column: str) -> bytes:
        return self._keys.decrypt(row[column], profile_uid=row["profile_uid"], column=column, key_id=row["key_id"])

    def _profile_from_row(self, row: sqlite3.Row) -> Profile:
        return profile_from_parts(
            name=self._decrypt(row, "name_ct").decode(),
            id_number=self._decrypt(row, "id_number_ct").decode(),
            region_code=row["region_code"],
            address_detail=self._decrypt(row, "address_ct").decode(),
            details=self._decrypt(row, "details_ct"),
            preferred_agent=row["preferred_agent"],
        )

    # ------------------------------------------------------------------ profiles

    async def upsert_profiles(
        self,
        profiles: Sequence[Profile],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
    ) -> UpsertResult:
        """Insert or update profiles in ONE transaction: a profile whose ID number is stored is updated.

        On any error the whole transaction rolls back, so nothing is half-imported.
        ``progress`` is called with the number of profiles written after each batch.
        """
        # The same ID number twice in one call: the later profile wins, as a later import would.
        profiles = list({profile.id_number: profile for profile in profiles}.values())
        inserted = updated = 0
        now = self._now_text()
        key_id = self._keys.active_key_id
        started = time.monotonic()
        async with self._write_transaction("upsert profiles") as db:
            for offset in range(0, len(profiles), batch_size):
                batch = profiles[offset:offset + batch_size]
                new, changed = await self._upsert_batch(db, batch, key_id, now)
                inserted += new
                updated += changed
                if progress is not None:
                    progress(len(batch))

        log.info("profiles upserted", inserted=inserted, updated=updated,
                 elapsed_ms=round((time.monotonic() - started) * 1000))
        return UpsertResult(inserted, updated)

    async def _upsert_batch(self, db: aiosqlite.Connection, batch: Sequence[Profile], key_id: str,
                            now: str) -> tuple[int, int]:
        hashes = [self._keys.lookup_hash(profile.id_number) for profile in batch]
        placeholders = ",".join("?" * len(hashes))
        rows = await db.execute_fetchall(
            f"SELECT id_hash, profile_uid FROM profiles WHERE id_hash IN ({placeholders})", hashes)
        uids: dict[bytes, str] = {row["id_hash"]: row["profile_uid"] for row in rows}
        existing = set(uids.values())

        profile_rows = []
        phone_rows: list[tuple[bytes, str]] = []
        for profile, id_hash in zip(batch, hashes):
            uid = uids.setdefault(id_hash, uuid.uuid4().hex)
            profile_rows.append((uid, id_hash, profile.address.region_code, key_id,
                                 *self._encrypt_row(profile, uid, key_id), profile.preferred_agent, now, now))
            phone_rows.extend((self._keys.lookup_hash(phone.e164), uid) for phone in phone_list(profile))

        await db.executemany(
            "DELETE FROM profile_phones WHERE profile_uid = ?", [(uid,) for uid in existing])
        await db.executemany(
            """
            INSERT INTO profiles (profile_uid, id_hash, region_code, key_id, name_ct, id_number_ct, address_ct,
                                  details_ct, preferred_agent, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (id_hash) DO UPDATE SET
                region_code = excluded.region_code, key_id = excluded.key_id, name_ct = excluded.name_ct,
                id_number_ct = excluded.id_number_ct, address_ct = excluded.address_ct,
                details_ct = excluded.details_ct, preferred_agent = excluded.preferred_agent,
                updated_at = excluded.updated_at
            """,
            profile_rows,
        )
        await db.executemany("INSERT OR IGNORE INTO profile_phones (phone_hash, profile_uid) VALUES (?, ?)",
                             phone_rows)
        distinct = len({uids[id_hash] for id_hash in hashes})
        updated = len(existing)
        return distinct - updated, updated

    async def count_profiles(self) -> int:
        rows = await self._fetch_all("count profiles", "SELECT count(*) FROM profiles")
        return int(rows[0][0])

    async def _rows_by_phone(self, phone: PhoneNumber) -> list[sqlite3.Row]:
        return await self._fetch_all(
            "look up profiles by phone",
            """
            SELECT p.* FROM profile_phones AS ph JOIN profiles AS p ON p.profile_uid = ph.profile_uid
            WHERE ph.phone_hash = ? ORDER BY p.created_at, p.profile_uid
            """,
            (self._keys.lookup_hash(phone.e164),),
        )

    async def lookup_by_phone(self, phone: PhoneNumber, *, for_agent: bool = False) -> list[ProfileSummary]:
        """Return the masked summaries of every profile with this number, for the call flow and the ACD.

        A shared landline can return several. ``for_agent`` keeps the last 4 of the ID number.
        """
        rows = await self._rows_by_phone(phone)
        today = self._today()
        summaries = []
        for row in rows:
            profile = self._profile_from_row(row)
            summaries.append(summarise(profile, profile_ref=row["id_hash"].hex(),
                                       county_label=self.county_label(profile.address.region_code),
                                       today=today, for_agent=for_agent))
        log.debug("profile lookup", found=len(summaries))
        return summaries

    # ------------------------------------------------------------------ operators and audited reads

    async def add_operator(self, operator: Operator) -> None:
        if operator.tier is not expected_tier(operator.region_code):
            raise ValueError(
                f"区划代码 {operator.region_code} 属于{expected_tier(operator.region_code).value}级，"
                f"与账号层级 {operator.tier.value} 不符"
            )
        async with self._write_transaction("add operator") as db:
            await db.execute(
                """
                INSERT INTO operators (name, tier, region_code, role, created_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (name) DO UPDATE SET tier = excluded.tier, region_code = excluded.region_code,
                    role = excluded.role
                """,
                (operator.name, operator.tier.value, operator.region_code, operator.role.value, self._now_text()),
            )
        log.info("operator saved", operator=operator.name, tier=operator.tier.value, role=operator.role.value)

    async def get_operator(self, name: str) -> Operator:
        rows = await self._fetch_all("get operator", "SELECT * FROM operators WHERE name = ?", (name,))
        if not rows:
            raise OperatorNotFound(name)
        row = rows[0]
        return Operator(row["name"], OperatorTier(row["tier"]), row["region_code"], OperatorRole(row["role"]))

    async def list_operators(self) -> list[Operator]:
        rows = await self._fetch_all("list operators", "SELECT * FROM operators ORDER BY name")
        return [Operator(row["name"], OperatorTier(row["tier"]), row["region_code"], OperatorRole(row["role"]))
                for row in rows]

    async def read_full_by_phone(self, phone: PhoneNumber, *, operator_name: str, reason: str) -> FullRead:
        """Decrypt the full profiles with this number for an operator, auditing every profile read or refused.

        Raises AccessDenied for a missing reason or an unknown operator, after auditing the attempt.
        """
        reason = reason.strip()
        if len(reason) < MIN_REASON_LENGTH:
            await self._audit([(operator_name, "show", reason, None, "denied")])
            raise AccessDenied(f"查看完整档案必须说明理由（至少 {MIN_REASON_LENGTH} 个字），例如“核实来电人身份”")
        try:
            operator = await self.get_operator(operator_name)
        except OperatorNotFound:
            await self._audit([(operator_name, "show", reason, None, "denied")])
            raise AccessDenied(f"操作员账号 {operator_name} 不存在；请先用 hotline profiles operators add 登记") from None

        rows = await self._rows_by_phone(phone)
        granted: list[FullProfile] = []
        entries = []
        for row in rows:
            profile_ref = row["id_hash"].hex()
            if not can_read(operator, row["region_code"]):
                entries.append((operator.name, "show", reason, profile_ref, "denied"))
                continue
            profile = self._profile_from_row(row)
            phone_refs = tuple(self.phone_ref(number) for number in profile.phones)
            granted.append(FullProfile(profile_ref, profile, phone_refs))
            entries.append((operator.name, "show", reason, profile_ref, "granted"))
        if not rows:
            entries.append((operator.name, "show", reason, None, "not_found"))

        # The audit entries are committed before any decrypted profile leaves the store.
        await self._audit(entries)
        denied = len(rows) - len(granted)
        log.info("full profile read", operator=operator.name, granted=len(granted), denied=denied)
        return FullRead(tuple(granted), denied)

    async def _audit(self, entries: list[tuple[str, str, str, str | None, str]]) -> None:
        now = self._now_text()
        async with self._write_transaction("write access log") as db:
            await db.executemany(
                """
                INSERT INTO profile_access_log (occurred_at, operator, action, reason, profile_ref, outcome)
                VALUES (?, ?, ?, ?, ?, ?)
                """,
                [(now, *entry) for entry in entries],
            )

    async def access_log(self, *, limit: int = 100) -> list[AccessLogEntry]:
        rows = await self._fetch_all(
            "list access log", "SELECT * FROM profile_access_log ORDER BY entry_id DESC LIMIT ?", (limit,))
        return [AccessLogEntry(row["entry_id"], datetime.fromisoformat(row["occurred_at"]), row["operator"],
                               row["action"], row["reason"], row["profile_ref"], row["outcome"]) for row in rows]

    # ------------------------------------------------------------------ key rotation

    async def key_ids_in_use(self) -> dict[str, int]:
        rows = await self._fetch_all("count rows by key", "SELECT key_id, count(*) FROM profiles GROUP BY key_id")
        return {row[0]: int(row[1]) for row in rows}

    async def reencrypt_batch(self, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
        """Re-encrypt up to ``batch_size`` rows not under the active key, in one transaction; return how many.

        A rotation calls this until it returns 0. Each committed batch stays done, so an
        interrupted rotation resumes where it stopped when called again.
        """
        # NOTE: another process that loaded the key file before the rotation added the new
        # key cannot decrypt rewritten rows (DecryptionFailed) until it reloads the key file.
        active = self._keys.active_key_id
        async with self._write_transaction("re-encrypt profiles") as db:
            rows = await db.execute_fetchall(
                "SELECT * FROM profiles WHERE key_id != ? LIMIT ?", (active, batch_size))
            updates = []
            for row in rows:
                plaintexts = [self._decrypt(row, column) for column in _ENCRYPTED_COLUMNS]
                ciphertexts = [self._keys.encrypt(text, profile_uid=row["profile_uid"], column=column, key_id=active)
                               for text, column in zip(plaintexts, _ENCRYPTED_COLUMNS)]
                updates.append((active, *ciphertexts, row["profile_uid"], row["key_id"]))
            await db.executemany(
                """
                UPDATE profiles SET key_id = ?, name_ct = ?, id_number_ct = ?, address_ct = ?, details_ct = ?
                WHERE profile_uid = ? AND key_id = ?
                """,
                updates,
            )
        if updates:
            log.info("profiles re-encrypted", count=len(updates), key_id=active)
        return len(updates)
