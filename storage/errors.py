"""Storage: exceptions raised by the SQLite store instead of raw sqlite3 errors."""

from __future__ import annotations

import errno
import sqlite3


class StorageError(Exception):
    """A storage operation failed; the message names the operation and the ids involved."""


class StorageBusy(StorageError):
    """The database stayed locked by another writer for longer than the busy timeout."""


class StorageFull(StorageError):
    """The disk or file system holding the database has no room left (``SQLITE_FULL`` or ``ENOSPC``).

    The failed transaction is rolled back, so nothing of that write is stored and
    everything committed before stays intact. Writing works again once space is freed.
    """


class SchemaTooNew(StorageError):
    """The database was written by a newer version of this software."""


class TicketNotFound(StorageError):
    """No ticket with the requested id exists on this node."""

    def __init__(self, ticket_id: str) -> None:
        super().__init__(f"ticket {ticket_id} not found")
        self.ticket_id = ticket_id


class CallNotFound(StorageError):
    """No call record with the requested call id exists on this node."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"call record {call_id} not found")
        self.call_id = call_id


class TicketConflict(StorageError):
    """A write contradicts what is stored, such as a different event under an existing sequence."""


class TicketIdExhausted(StorageError):
    """All 9999 daily ticket numbers of a region and day are used."""


class AttachmentNotFound(StorageError):
    """No attachment with the requested SHA-256 is stored, or its file is missing."""

    def __init__(self, sha256: str, detail: str = "not stored") -> None:
        super().__init__(f"attachment {sha256}: {detail}")
        self.sha256 = sha256


class AttachmentError(StorageError):
    """An attachment could not be read from its source or written to the attachment folder."""


# errno values of a write that found no room: a full file system, or a full disk quota.
_NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_storage_full(exc: BaseException) -> bool:
    """Return whether ``exc``, or an exception it was raised from, reports a full disk.

    Matches ``StorageFull``, an ``sqlite3.Error`` whose primary result code is
    ``SQLITE_FULL`` (SQLite's unix VFS reports ``ENOSPC`` that way), and an ``OSError``
    with ``ENOSPC`` or ``EDQUOT``. A ``StorageError`` that wraps the sqlite3 error in
    ``__cause__`` matches too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFull):
            return True
        if isinstance(current, sqlite3.Error):
            code = getattr(current, "sqlite_errorcode", None)
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                return True
        if isinstance(current, OSError) and current.errno in _NO_SPACE_ERRNOS:
            return True
        current = current.__cause__ or current.__context__
    return False


def storage_error_from_sqlite(exc: sqlite3.Error, message: str) -> StorageError:
    """Return the ``StorageError`` subclass for an sqlite3 error, with ``message`` as its text.

    ``SQLITE_FULL`` becomes ``StorageFull`` and a locked or busy database ``StorageBusy``;
    everything else is a plain ``StorageError``. The caller raises the result ``from exc``.
    """
    if is_storage_full(exc):
        return StorageFull(message)
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageBusy(message)
    return StorageError(message)
