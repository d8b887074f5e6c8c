"""Storage: exceptions raised by the SQLite store instead of raw sqlite3 errors."""

from __future__ import annotations


class StorageError(Exception):
    """A storage operation failed; the message names the operation and the ids involved."""


class StorageBusy(StorageError):
    """The database stayed locked by another writer for longer than the busy timeout."""


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
