"""Flow versions of one node: a store on disk, the active pointer, rollback and hot reload.

The store is a folder next to the node database (``<database>.flows/``)::

    versions/<sha256>.yaml   exact bytes of each flow version that was ever activated
    versions/<sha256>.json   metadata: hash, flow id, title, source path, saved_at (UTC)
    activations/<seq>.json   one record per activation: version, activated_at (UTC), action,
                             source, operator, reason, previous version
    active                   JSON copy of the activation record now in force
    lock                     fcntl lock taken by every writer

Writers hold the lock, write each file to a temporary name, fsync it and ``os.replace`` it,
so a reader (another process without the lock) sees either the old or the new file. An
activation is committed by replacing ``active``. An activation record whose ``seq`` is above
the active one belongs to a writer that crashed before that replace; readers ignore it and
the next writer overwrites it.

A version goes live only if it passes ``parse_flow`` with the node's prompt ids, so a bad
edit leaves the running version in place. Calls keep the ``Flow`` object they started with:
the node reads ``current()`` once per call.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import structlog

from ivr.flow import Flow, FlowError, FlowIssue, parse_flow

log = structlog.get_logger(__name__)

Action = Literal["activate", "rollback"]
ActivationStatus = Literal["activated", "unchanged", "rejected"]

ACTIVE_FILE = "active"
LOCK_FILE = "lock"
LOCK_TIMEOUT_S = 10.0
_LOCK_RETRY_S = 0.05
_TEMP_MARK = ".tmp-"
# A version may be named by a prefix of its SHA-256, as `hotline flows versions` prints it.
MIN_VERSION_PREFIX = 4


def utc_now() -> datetime:
    return datetime.now(UTC)


def store_dir_for_database(database: Path | str) -> Path:
    """Return the version store folder of the node whose SQLite file is ``database``."""
    return Path(f"{database}.flows")


class FlowRegistryError(Exception):
    """The version store cannot do what was asked; the message is Chinese and names the fix."""


class VersionNotFound(FlowRegistryError):
    """No stored version matches the requested hash or prefix."""


class NoActiveVersion(FlowRegistryError):
    """The store has no active version yet."""


class StoreLocked(FlowRegistryError):
    """Another process held the store lock for longer than ``LOCK_TIMEOUT_S``."""


class StoreCorrupt(FlowRegistryError):
    """A file in the store does not match its name or cannot be parsed."""


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """Metadata of one stored flow version; its bytes are in ``versions/<version>.yaml``."""

    version: str
    flow_id: str
    title: str
    source: str
    saved_at: datetime


@dataclass(frozen=True, slots=True)
class Activation:
    """One change of the active version, in the order ``seq`` gives."""

    seq: int
    version: str
    activated_at: datetime
    action: Action
    source: str
    operator: str | None
    reason: str | None
    previous: str | None


@dataclass(frozen=True, slots=True)
class ActivationResult:
    """Outcome of an activation or rollback request.

    ``version`` is the hash of the requested text. ``issues`` lists, in Chinese, why a
    rejected version cannot go live; the active version is then unchanged.
    """

    status: ActivationStatus
    version: str
    source: str
    activation: Activation | None = None
    issues: tuple[FlowIssue, ...] = ()

    @property
    def activated(self) -> bool:
        return self.status == "activated"


def _activation_to_json(activation: Activation) -> dict:
    record = asdict(activation)
    record["activated_at"] = activation.activated_at.isoformat()
    return record


def _activation_from_json(record: dict) -> Activation:
    return Activation(
        seq=int(record["seq"]),
        version=str(record["version"]),
        activated_at=datetime.fromisoformat(record["activated_at"]),
        action=record["action"],
        source=str(record["source"]),
        operator=record.get("operator"),
        reason=record.get("reason"),
        previous=record.get("previous"),
    )


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see either the old or the new bytes.

    The bytes go to a temporary file in the same folder, which is fsynced and then renamed
    over ``path``. The folder is fsynced too, so the rename survives a power cut.
    """
    temp = path.with_name(f"{path.name}{_TEMP_MARK}{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)

    os.replace(temp, path)
    _fsync_dir(path.parent)


class _StoreLock:
    """Exclusive ``flock`` on the store's lock file, waited for up to ``timeout_s``."""

    def __init__(self, path: Path, timeout_s: float, on_acquired: Callable[[], None]):
        self.path = path
        self.timeout_s = timeout_s
        self._on_acquired = on_acquired
        self._fd: int | None = None

    def __enter__(self) -> _StoreLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreLocked(
                        f"流程版本库 {self.path.parent} 被其他进程占用超过 {self.timeout_s:g} 秒，"
                        f"请稍后重试；如果没有其他 hotline 进程在运行，请检查锁文件 {self.path}"
                    ) from None
                time.sleep(_LOCK_RETRY_S)
        self._fd = fd
        self._on_acquired()
        return self

    def __exit__(self, *exc_info: object) -> None:
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


class FlowRegistry:
    """Version store and active flow of one node.

    Several processes may open the same store: the running node and the ``hotline flows``
    commands. Writers serialise on the lock file; ``refresh`` makes this process follow an
    activation that another process committed.
    """

    def __init__(
        self,
        store_dir: Path | str,
        *,
        prompt_ids: Iterable[str] | None,
        clock: Callable[[], datetime] = utc_now,
        lock_timeout_s: float = LOCK_TIMEOUT_S,
    ):
        self.store_dir = Path(store_dir)
        self._prompt_ids = frozenset(prompt_ids) if prompt_ids is not None else None
        self._clock = clock
        self._lock_timeout_s = lock_timeout_s
        self._versions_dir = self.store_dir / "versions"
        self._activations_dir = self.store_dir / "activations"
        self._current: Flow | None = None
        self._current_seq: int | None = None
        for folder in (self.store_dir, self._versions_dir, self._activations_dir):
            folder.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_database(cls, database: Path | str, **kwargs) -> FlowRegistry:
        return cls(store_dir_for_database(database), **kwargs)

    # Reading

    def current(self) -> Flow:
        """Return the active flow as this process last loaded it (see ``refresh``)."""
        if self._current is None:
            self.refresh()
        if self._current is None:
            raise NoActiveVersion(f"流程版本库 {self.store_dir} 里还没有生效的流程，请先运行 hotline flows reload")
        return self._current

    def active(self) -> Activation | None:
        """Return the activation record now in force on disk, or None for an empty store."""
        try:
            raw = (self.store_dir / ACTIVE_FILE).read_bytes()
        except FileNotFoundError:
            return None
        try:
            return _activation_from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupt(f"流程版本库的当前版本指针 {self.store_dir / ACTIVE_FILE} 已损坏（{exc}），"
                               "请用 hotline flows rollback --to 指定一个版本重新生效") from exc

    def history(self) -> list[Activation]:
        """Return committed activations, oldest first; the last one is the active one."""
        active = self.active()
        if active is None:
            return []

        return [record for record in self._activation_records() if record.seq <= active.seq]

    def _activation_records(self) -> list[Activation]:
        """Return every readable activation record, committed or not, ordered by ``seq``."""
        records: list[Activation] = []
        for path in self._activations_dir.glob("*.json"):
            try:
                records.append(_activation_from_json(json.loads(path.read_bytes())))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("flow activation record unreadable", path=str(path), error=str(exc))
        return sorted(records, key=lambda record: record.seq)

    def _active_for_write(self) -> Activation | None:
        """Return the active record, or the newest activation record when the pointer is corrupt.

        Only writers call this, with the lock held, so a corrupt pointer can be repaired by
        the next activation or rollback.
        """
        try:
            return self.active()
        except StoreCorrupt as exc:
            records = self._activation_records()
            log.error("flow pointer corrupt; continuing from the newest activation record", error=str(exc),
                      newest_seq=records[-1].seq if records else None)
            return records[-1] if records else None

    def versions(self) -> list[StoredVersion]:
        """Return every stored version, oldest first."""
        stored = []
        for path in self._versions_dir.glob("*.json"):
            try:
                stored.append(self._read_metadata(path))
            except StoreCorrupt as exc:
                log.warning("flow version metadata unreadable", path=str(path), error=str(exc))
        return sorted(stored, key=lambda item: item.saved_at)

    def resolve(self, version_or_prefix: str) -> str:
        """Return the full hash of the stored version that ``version_or_prefix`` names."""
        prefix = version_or_prefix.strip().lower()
        if len(prefix) < MIN_VERSION_PREFIX or any(char not in "0123456789abcdef" for char in prefix):
            raise VersionNotFound(f"版本号“{version_or_prefix}”无效：请写至少 {MIN_VERSION_PREFIX} 位十六进制字符，"
                                  "可用 hotline flows versions 查看已有版本")
        matches = sorted(path.stem for path in self._versions_dir.glob(f"{prefix}*.yaml") if _TEMP_MARK not in path.name)
        if not matches:
            raise VersionNotFound(f"版本库里没有以“{prefix}”开头的流程版本，可用 hotline flows versions 查看已有版本")
        if len(matches) > 1:
            shown = "、".join(match[:12] for match in matches)
            raise VersionNotFound(f"以“{prefix}”开头的版本有 {len(matches)} 个（{shown}），请多写几位")
        return matches[0]

    def load_version(self, version: str) -> Flow:
        """Parse a stored version with the node's prompt ids; raise ``FlowError`` if it no longer passes."""
        data = self._read_version_bytes(version)
        metadata = self._read_metadata(self._versions_dir / f"{version}.json")
        return parse_flow(data, source=metadata.source, prompt_ids=self._prompt_ids)

    def refresh(self) -> bool:
        """Load the version the on-disk pointer names if it changed; return True when it did.

        Raise ``FlowError`` when that version no longer passes the checks and
        ``FlowRegistryError`` when the store is unreadable; the loaded flow stays in force then.
        """
        active = self.active()
        if active is None or active.seq == self._current_seq:
            return False
        if self._current is not None and active.version == self._current.version:
            self._current_seq = active.seq
            return False

        flow = self.load_version(active.version)
        previous = self._current.version[:12] if self._current else None
        self._current, self._current_seq = flow, active.seq
        log.info("flow version loaded", flow=flow.flow_id, flow_version=flow.version[:12], previous=previous,
                 seq=active.seq, action=active.action)
        return True

    # Writing

    def activate_from_file(self, path: Path | str, *, operator: str | None = None,
                           reason: str | None = None) -> ActivationResult:
        """Activate the text of ``path`` if it passes the checks; otherwise keep the active version."""
        path = Path(path)
        return self.activate_bytes(path.read_bytes(), source=str(path.resolve()), operator=operator, reason=reason)

    def activate_bytes(self, data: bytes, *, source: str, operator: str | None = None,
                       reason: str | None = None) -> ActivationResult:
        version = hashlib.sha256(data).hexdigest()
        try:
            flow = parse_flow(data, source=source, prompt_ids=self._prompt_ids)
        except FlowError as exc:
            log.warning("flow edit rejected", flow_version=version[:12], source=source, issue_count=len(exc.issues),
                        issues=[str(issue) for issue in exc.issues])
            return ActivationResult("rejected", version, source, issues=tuple(exc.issues))

        with self._lock():
            self._save_version(version, data, flow, source)
            return self._commit(flow, "activate", source, operator, reason)

    def rollback(self, to: str | None = None, *, operator: str | None = None,
                 reason: str | None = None) -> ActivationResult:
        """Make a stored version active again: ``to`` (hash or prefix) or the one active before the current one."""
        with self._lock():
            active = self._active_for_write()
            if to is None:
                if active is None or active.previous is None:
                    raise VersionNotFound("没有上一个版本可以回滚，请用 --to 指定版本号（hotline flows versions 可查看）")
                version = active.previous
            else:
                version = self.resolve(to)

            source = self._read_metadata(self._versions_dir / f"{version}.json").source
            try:
                flow = self.load_version(version)
            except FlowError as exc:
                log.warning("flow rollback rejected", flow_version=version[:12], issue_count=len(exc.issues),
                            issues=[str(issue) for issue in exc.issues])
                return ActivationResult("rejected", version, source, issues=tuple(exc.issues))
            return self._commit(flow, "rollback", source, operator, reason)

    def start_from_file(self, path: Path | str) -> Flow:
        """Choose the flow a starting node runs, and return it.

        The file is activated unless it is unchanged since it was last activated from the
        same path, so a rollback done while the node was down stays in force. A file that
        fails the checks leaves the active version running. With no active version the
        ``FlowError`` is raised, because a node without a valid flow must not take calls.
        """
        path = Path(path)
        data = path.read_bytes()
        source = str(path.resolve())
        version = hashlib.sha256(data).hexdigest()

        last_from_file = self.last_activation_from(source)
        active = self.active()
        if active is not None and last_from_file is not None and last_from_file.version == version:
            try:
                self.refresh()
                flow = self.current()
                log.info("flow file unchanged since its last activation; keeping the active version",
                         flow=flow.flow_id, flow_version=flow.version[:12], action=active.action)
                return flow
            except FlowError as exc:
                log.error("active flow version no longer passes the checks; activating the file",
                          flow_version=active.version[:12], issues=[str(issue) for issue in exc.issues])

        result = self.activate_bytes(data, source=source)
        if result.status != "rejected":
            return self.current()

        if active is not None:
            self.refresh()
            flow = self.current()
            log.error("flow file rejected at start; running the last active version", source=source,
                      rejected_version=version[:12], flow_version=flow.version[:12],
                      issues=[str(issue) for issue in result.issues])
            return flow
        raise FlowError(list(result.issues))

    def last_activation_from(self, source: str) -> Activation | None:
        """Return the latest committed ``activate`` record whose source is ``source``."""
        for record in reversed(self.history()):
            if record.action == "activate" and record.source == source:
                return record
        return None

    # Internals

    def _lock(self) -> _StoreLock:
        return _StoreLock(self.store_dir / LOCK_FILE, self._lock_timeout_s, self._remove_stale_temp_files)

    def _remove_stale_temp_files(self) -> None:
        """Delete temporary files left by a writer that crashed; only called with the lock held."""
        for folder in (self.store_dir, self._versions_dir, self._activations_dir):
            for temp in folder.glob(f"*{_TEMP_MARK}*"):
                log.warning("removing temporary file left by an interrupted flow activation", path=str(temp))
                temp.unlink(missing_ok=True)

    def _save_version(self, version: str, data: bytes, flow: Flow, source: str) -> None:
        yaml_path = self._versions_dir / f"{version}.yaml"
        meta_path = self._versions_dir / f"{version}.json"
        if not yaml_path.exists() or hashlib.sha256(yaml_path.read_bytes()).hexdigest() != version:
            write_atomic(yaml_path, data)
        if not meta_path.exists():
            metadata = {"version": version, "flow_id": flow.flow_id, "title": flow.title, "source": source,
                        "saved_at": self._clock().isoformat()}
            write_atomic(meta_path, json.dumps(metadata, ensure_ascii=False, indent=2).encode())

    def _commit(self, flow: Flow, action: Action, source: str, operator: str | None,
                reason: str | None) -> ActivationResult:
        """Write the activation record and replace the pointer; the lock must be held."""
        active = self._active_for_write()
        if active is not None and active.version == flow.version:
            self._current, self._current_seq = flow, active.seq
            return ActivationResult("unchanged", flow.version, source, activation=active)

        record = Activation(
            seq=(active.seq + 1) if active else 1,
            version=flow.version,
            activated_at=self._clock(),
            action=action,
            source=source,
            operator=operator,
            reason=reason,
            previous=active.version if active else None,
        )
        encoded = json.dumps(_activation_to_json(record), ensure_ascii=False, indent=2).encode()
        write_atomic(self._activations_dir / f"{record.seq:08d}.json", encoded)
        write_atomic(self.store_dir / ACTIVE_FILE, encoded)

        self._current, self._current_seq = flow, record.seq
        log.info("flow version activated", flow=flow.flow_id, flow_version=flow.version[:12], seq=record.seq,
                 action=action, previous=record.previous[:12] if record.previous else None,
                 operator=operator, reason=reason)
        return ActivationResult("activated", flow.version, source, activation=record)

    def _read_version_bytes(self, version: str) -> bytes:
        path = self._versions_dir / f"{version}.yaml"
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise VersionNotFound(f"版本库里缺少流程版本文件 {path}，请用 hotline flows rollback --to 指定其他版本") from exc
        if hashlib.sha256(data).hexdigest() != version:
            raise StoreCorrupt(f"流程版本文件 {path} 的内容与文件名中的哈希不符，文件已被改动；"
                               "请不要手工修改版本库，改用 hotline flows rollback --to 指定其他版本")
        return data

    def _read_metadata(self, path: Path) -> StoredVersion:
        try:
            record = json.loads(path.read_bytes())
            return StoredVersion(
                version=str(record["version"]),
                flow_id=str(record["flow_id"]),
                title=str(record["title"]),
                source=str(record["source"]),
                saved_at=datetime.fromisoformat(record["saved_at"]),
            )
        except FileNotFoundError as exc:
            raise VersionNotFound(f"版本库里缺少流程版本说明 {path}，请用 hotline flows versions 查看可用版本") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreCorrupt(f"流程版本说明 {path} 已损坏（{exc}），请用 hotline flows rollback --to 指定其他版本") from exc


class FlowWatcher:
    """Polls the flow file and the store's pointer, and activates a saved edit of the file.

    Polling (one read and hash of a file of a few kilobytes per interval) was chosen over
    inotify-based watchers: it needs no extra package, sees editors that save by renaming a
    new file over the old one, works on network mounts where inotify is silent, and tests
    can drive it with ``check()``. A changed file is activated only when two polls in a row
    read the same bytes, so a file caught half-written is not reported as a bad edit.
    """

    def __init__(self, registry: FlowRegistry, flow_path: Path | str, *, interval_s: float = 1.0):
        self.registry = registry
        self.flow_path = Path(flow_path)
        self.interval_s = interval_s
        self._handled: str | None = None
        self._pending: str | None = None
        self._missing_logged = False
        self._last_pointer_error: str | None = None
        self._task: asyncio.Task[None] | None = None
        try:
            self._handled = hashlib.sha256(self.flow_path.read_bytes()).hexdigest()
        except FileNotFoundError:
            self._handled = None

    def check(self) -> ActivationResult | None:
        """Run one poll; return the activation result when the file was acted on."""
        result = self._check_file()
        self._follow_pointer()
        return result

    def _check_file(self) -> ActivationResult | None:
        try:
            data = self.flow_path.read_bytes()
        except OSError as exc:
            if not self._missing_logged:
                log.warning("flow file unreadable; keeping the active version", path=str(self.flow_path),
                            error=str(exc))
                self._missing_logged = True
            return None
        self._missing_logged = False

        version = hashlib.sha256(data).hexdigest()
        if version == self._handled:
            self._pending = None
            return None
        if version != self._pending:
            self._pending = version
            return None

        self._handled, self._pending = version, None
        try:
            return self.registry.activate_bytes(data, source=str(self.flow_path.resolve()), reason="文件已修改，自动生效")
        except (FlowRegistryError, OSError) as exc:
            # Leave the edit unhandled so the next poll tries it again.
            log.error("flow activation failed; will retry", path=str(self.flow_path), flow_version=version[:12],
                      error=str(exc))
            self._handled = None
            return None

    def _follow_pointer(self) -> None:
        try:
            self.registry.refresh()
            self._last_pointer_error = None
        except (FlowError, FlowRegistryError, OSError) as exc:
            # Log each distinct failure once, not once per poll.
            if str(exc) != self._last_pointer_error:
                log.error("active flow version cannot be loaded; calls keep the previous version", error=str(exc))
                self._last_pointer_error = str(exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"flow-watcher:{self.flow_path.name}")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    async def _run(self) -> None:
        log.info("flow watcher started", path=str(self.flow_path), interval_s=self.interval_s)
        while True:
            await asyncio.sleep(self.interval_s)
            # File reads, hashing and parsing run in a worker thread, so the event loop keeps serving calls.
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                # The boundary of a long-running loop: one bad poll must not end hot reload.
                log.exception("flow watcher poll failed", path=str(self.flow_path))
