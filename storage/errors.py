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
