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

``profile_meta`` names the lookup key that every hash is under. The store hashes with that
key, not with the key file's active one, so lookups keep working while a lookup-key
rotation is pending; ``rekey_lookup`` re-hashes every row in one transaction.

For the call path the store also keeps which tickets a known caller opened
(``profile_tickets``) and the masked summary last shown on each agent's screen
(``agent_screens``), and it seals the phone numbers kept in call records (see
profiles.sealing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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
from profiles.keys import KeyFileError, ProfileKeys
from profiles.model import AssistanceStatus, NeedTag, Profile, ProfileSummary, summarise
from profiles.sealing import number_ref, seal, unseal
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
class TicketLink:
    """A ticket opened for a call from a known caller, with the skill and agent it reached."""

    ticket_id: str
    skill: str | None
    agent_id: str | None
    opened_at: datetime


@dataclass(frozen=True)
class AgentScreen:
    """The masked summary of the known caller last put through to an agent."""

    agent_id: str
    call_id: str
    shown_at: datetime
    summary: ProfileSummary


@dataclass(frozen=True)
class LookupKeyState:
    """Which lookup key the stored hashes are under, and which one the key file makes active."""

    database_key_id: str
    active_key_id: str

    @property
    def rotation_pending(self) -> bool:
        return self.database_key_id != self.active_key_id


def summary_to_json(summary: ProfileSummary) -> str:
    return json.dumps({
        "profile_ref": summary.profile_ref,
        "name_masked": summary.name_masked,
        "id_number_masked": summary.id_number_masked,
        "phones_masked": list(summary.phones_masked),
        "address_masked": summary.address_masked,
        "region_code": summary.region_code,
        "need_tags": sorted(tag.value for tag in summary.need_tags),
        "active_statuses": [status.value for status in summary.active_statuses],
        "preferred_agent": summary.preferred_agent,
    }, ensure_ascii=False)


def summary_from_json(text: str) -> ProfileSummary:
    document = json.loads(text)
    return ProfileSummary(
        profile_ref=document["profile_ref"],
        name_masked=document["name_masked"],
        id_number_masked=document["id_number_masked"],
        phones_masked=tuple(document["phones_masked"]),
        address_masked=document["address_masked"],
        region_code=document["region_code"],
        need_tags=frozenset(NeedTag(tag) for tag in document["need_tags"]),
        active_statuses=tuple(AssistanceStatus(status) for status in document["active_statuses"]),
        preferred_agent=document["preferred_agent"],
    )


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
                 reader: aiosqlite.Connection, clock: Callable[[], datetime], lookup_key_id: str) -> None:
        self.path = path
        self._keys = keys
        self._lookup_key_id = lookup_key_id
        self._missing_key_reported = False
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
            lookup_key_id = await cls._adopt_lookup_key(writer, path, keys)
            reader = await cls._connect(path, busy_timeout_ms, read_only=True)
        except BaseException:
            await writer.close()
            raise

        store = cls(path, keys, divisions or default_division_table(), writer, reader, clock, lookup_key_id)
        log.info("profile store opened", path=str(path), schema_version=PROFILE_LATEST_VERSION,
                 lookup_key_id=lookup_key_id, elapsed_ms=round((time.monotonic() - started) * 1000))
        return store

    @staticmethod
    async def _adopt_lookup_key(writer: aiosqlite.Connection, path: Path, keys: ProfileKeys) -> str:
        """Return the lookup key id the stored hashes are under; a database without one takes the active key.

        Raises KeyFileError when the key file lacks the database's key.
        """
        await begin_immediate(writer, "read lookup key id")
        try:
            rows = list(await writer.execute_fetchall(
                "SELECT value FROM profile_meta WHERE name = 'lookup_key_id'"))
            if rows:
                key_id = str(rows[0][0])
            else:
                key_id = keys.active_lookup_key_id
                await writer.execute("INSERT INTO profile_meta (name, value) VALUES ('lookup_key_id', ?)", (key_id,))
        except BaseException:
            await rollback_shielded(writer)
            raise
        await writer.execute("COMMIT")
        if key_id not in keys.lookup_keys:
            raise KeyFileError(
                f"档案库 {path} 的查询散列使用查询密钥 {key_id}，但查询密钥文件中没有这个密钥；"
                "请换回包含该密钥的查询密钥文件（可从备份恢复）"
            )
        return key_id

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

    def _hash(self, canonical: str) -> bytes:
        return self._keys.lookup_hash(canonical, key_id=self._lookup_key_id)

    def profile_ref(self, id_number: str) -> str:
        """Return the keyed hash of an 18-character ID number in hex: the profile's handle outside the store."""
        return self._hash(id_number).hex()

    def phone_ref(self, phone: PhoneNumber) -> str:
        return self._hash(phone.e164).hex()

    # ------------------------------------------------------------------ sealed call data

    def seal_number(self, number: str, *, call_id: str, purpose: str) -> str:
        """Encrypt a phone number kept in a call record or ticket event (see profiles.sealing)."""
        return seal(self._keys, number, call_id=call_id, purpose=purpose)

    def unseal_number(self, sealed: str, *, call_id: str, purpose: str) -> str:
        """Decrypt a sealed number; raises SealedValueError or DecryptionFailed."""
        return unseal(self._keys, sealed, call_id=call_id, purpose=purpose)

    def number_ref(self, number: str) -> str:
        """Return the keyed hash of a caller or callback number in hex, the form that may leave the node."""
        return number_ref(self._keys, number, key_id=self._lookup_key_id)

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
        hashes = [self._hash(profile.id_number) for profile in batch]
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
            phone_rows.extend((self._hash(phone.e164), uid) for phone in phone_list(profile))

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

    async def _follow_lookup_key(self) -> None:
        """Switch to the lookup key named in the database when another process re-keyed it meanwhile."""
        rows = await self._fetch_all("read lookup key id", "SELECT value FROM profile_meta WHERE name = 'lookup_key_id'")
        key_id = str(rows[0][0]) if rows else self._lookup_key_id
        if key_id == self._lookup_key_id:
            return
        if key_id in self._keys.lookup_keys:
            log.info("lookup key changed by a rotation", old_key_id=self._lookup_key_id, key_id=key_id)
            self._lookup_key_id = key_id
        elif not self._missing_key_reported:
            # Lookups find nothing until this process reloads the key file (restart the node).
            self._missing_key_reported = True
            log.error("lookup key of the database is not in the loaded key file", key_id=key_id,
                      loaded_key_id=self._lookup_key_id)

    async def _rows_by_phone(self, phone: PhoneNumber) -> list[sqlite3.Row]:
        await self._follow_lookup_key()
        return await self._fetch_all(
            "look up profiles by phone",
            """
            SELECT p.* FROM profile_phones AS ph JOIN profiles AS p ON p.profile_uid = ph.profile_uid
            WHERE ph.phone_hash = ? ORDER BY p.created_at, p.profile_uid
            """,
            (self._hash(phone.e164),),
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

    async def authorise_call_data_read(self, *, operator_name: str, reason: str, action: str) -> Operator:
        """Check and audit an operator's request to open a sealed number (``action`` such as ``callback_number``).

        Raises AccessDenied for a missing reason or an unknown operator, after auditing the attempt.
        """
        reason = reason.strip()
        if len(reason) < MIN_REASON_LENGTH:
            await self._audit([(operator_name, action, reason, None, "denied")])
            raise AccessDenied(f"查看号码必须说明理由（至少 {MIN_REASON_LENGTH} 个字），例如“按约定回拨”")
        try:
            operator = await self.get_operator(operator_name)
        except OperatorNotFound:
            await self._audit([(operator_name, action, reason, None, "denied")])
            raise AccessDenied(f"操作员账号 {operator_name} 不存在；请先用 hotline profiles operators add 登记") from None
        await self._audit([(operator.name, action, reason, None, "granted")])
        log.info("call data read authorised", operator=operator.name, action=action)
        return operator

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

    # ------------------------------------------------------------------ lookup-key rotation

    def lookup_key_state(self) -> LookupKeyState:
        return LookupKeyState(self._lookup_key_id, self._keys.active_lookup_key_id)

    async def rekey_lookup(self, *, progress: Callable[[int], None] | None = None) -> int:
        """Re-hash every ID number and phone under the key file's active lookup key, in ONE transaction.

        Each row's ID number and phones are decrypted and hashed again; ``profile_meta``
        switches to the new key id in the same transaction, and ``profile_ref_history`` maps
        every old profile_ref to the new one. A crash before the commit leaves the old
        hashes, which the old key (still in the key file) keeps serving. Returns the number
        of profiles re-hashed; 0 when the database is already under the active key.
        ``progress`` is called with the number of profiles done after each 500.
        """
        target = self._keys.active_lookup_key_id
        if target == self._lookup_key_id:
            return 0

        started = time.monotonic()
        now = self._now_text()
        done = 0
        async with self._write_transaction("re-key lookup hashes") as db:
            rows = await db.execute_fetchall("SELECT * FROM profiles ORDER BY profile_uid")
            await db.execute("DELETE FROM profile_phones")
            for row in rows:
                profile = self._profile_from_row(row)
                new_hash = self._keys.lookup_hash(profile.id_number, key_id=target)
                await db.execute("UPDATE profiles SET id_hash = ? WHERE profile_uid = ?",
                                 (new_hash, row["profile_uid"]))
                await db.executemany(
                    "INSERT OR IGNORE INTO profile_phones (phone_hash, profile_uid) VALUES (?, ?)",
                    [(self._keys.lookup_hash(phone.e164, key_id=target), row["profile_uid"])
                     for phone in phone_list(profile)])
                await db.execute(
                    "INSERT OR REPLACE INTO profile_ref_history (old_ref, new_ref, lookup_key_id, rotated_at) "
                    "VALUES (?, ?, ?, ?)", (row["id_hash"].hex(), new_hash.hex(), target, now))
                done += 1
                if progress is not None and done % DEFAULT_BATCH_SIZE == 0:
                    progress(DEFAULT_BATCH_SIZE)
            await db.execute("UPDATE profile_meta SET value = ? WHERE name = 'lookup_key_id'", (target,))
        if progress is not None and done % DEFAULT_BATCH_SIZE:
            progress(done % DEFAULT_BATCH_SIZE)

        previous, self._lookup_key_id = self._lookup_key_id, target
        log.info("lookup hashes re-keyed", count=done, old_key_id=previous, key_id=target,
                 elapsed_ms=round((time.monotonic() - started) * 1000))
        return done

    async def current_profile_ref(self, profile_ref: str) -> str:
        """Follow lookup-key rotations from an old profile_ref (such as one in the access log) to today's."""
        seen = {profile_ref}
        while True:
            rows = await self._fetch_all("follow profile_ref", "SELECT new_ref FROM profile_ref_history WHERE old_ref = ?",
                                         (profile_ref,))
            if not rows or rows[0][0] in seen:
                return profile_ref
            profile_ref = rows[0][0]
            seen.add(profile_ref)

    # ------------------------------------------------------------------ call path: tickets and agent screens

    async def link_ticket(self, profile_ref: str, ticket_id: str, *, skill: str | None,
                          agent_id: str | None) -> bool:
        """Record (or update) a ticket opened for a call from this profile; False when the profile is gone."""
        async with self._write_transaction("link ticket to profile") as db:
            rows = await db.execute_fetchall(
                "SELECT profile_uid FROM profiles WHERE id_hash = ?", (bytes.fromhex(profile_ref),))
            if not rows:
                return False
            await db.execute(
                """
                INSERT INTO profile_tickets (ticket_id, profile_uid, skill, agent_id, opened_at) VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (ticket_id) DO UPDATE SET skill = coalesce(excluded.skill, skill),
                    agent_id = coalesce(excluded.agent_id, agent_id)
                """,
                (ticket_id, rows[0][0], skill, agent_id, self._now_text()),
            )
        return True

    async def recent_tickets(self, profile_ref: str, *, limit: int = 5) -> list[TicketLink]:
        """Return the tickets linked to this profile, newest first."""
        rows = await self._fetch_all(
            "list profile tickets",
            """
            SELECT t.* FROM profile_tickets AS t JOIN profiles AS p ON p.profile_uid = t.profile_uid
            WHERE p.id_hash = ? ORDER BY t.opened_at DESC, t.ticket_id DESC LIMIT ?
            """,
            (bytes.fromhex(profile_ref), limit),
        )
        return [TicketLink(row["ticket_id"], row["skill"], row["agent_id"], datetime.fromisoformat(row["opened_at"]))
                for row in rows]

    async def show_on_screen(self, agent_id: str, call_id: str, summary: ProfileSummary) -> None:
        """Store the masked summary of the caller now ringing ``agent_id``, replacing the previous one."""
        async with self._write_transaction("write agent screen") as db:
            await db.execute(
                """
                INSERT INTO agent_screens (agent_id, call_id, shown_at, summary) VALUES (?, ?, ?, ?)
                ON CONFLICT (agent_id) DO UPDATE SET call_id = excluded.call_id, shown_at = excluded.shown_at,
                    summary = excluded.summary
                """,
                (agent_id, call_id, self._now_text(), summary_to_json(summary)),
            )

    async def agent_screen(self, agent_id: str) -> AgentScreen | None:
        rows = await self._fetch_all("read agent screen", "SELECT * FROM agent_screens WHERE agent_id = ?", (agent_id,))
        if not rows:
            return None
        row = rows[0]
        return AgentScreen(row["agent_id"], row["call_id"], datetime.fromisoformat(row["shown_at"]),
                           summary_from_json(row["summary"]))
