"""Storage layer: the only code that issues SQL."""

from storage.errors import (
    AttachmentError,
    AttachmentNotFound,
    CallNotFound,
    SchemaTooNew,
    StorageBusy,
    StorageError,
    StorageFull,
    TicketConflict,
    TicketIdExhausted,
    TicketNotFound,
)
from storage.rows import OutboxRow
from storage.ticket_store import TicketStore

__all__ = [
    "AttachmentError",
    "AttachmentNotFound",
    "CallNotFound",
    "OutboxRow",
    "SchemaTooNew",
    "StorageBusy",
    "StorageError",
    "StorageFull",
    "TicketConflict",
    "TicketIdExhausted",
    "TicketNotFound",
    "TicketStore",
]
