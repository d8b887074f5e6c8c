"""Storage: versioned schema migrations, applied in order and recorded in PRAGMA user_version."""

from __future__ import annotations

# Each entry upgrades the schema from version N-1 to N. Never edit a released entry;
# append a new one instead, because deployed databases have already applied the old ones.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # Version 1: calls, tickets, events, daily ticket numbers and the upward outbox.
    (
        """
        CREATE TABLE calls (
            call_id       TEXT PRIMARY KEY,
            caller_raw    TEXT NOT NULL,
            caller_masked TEXT NOT NULL,
            caller_flags  TEXT NOT NULL,
            dialed        TEXT NOT NULL,
            started_at    TEXT NOT NULL,
            answered_at   TEXT,
            ended_at      TEXT,
            flow_id       TEXT,
            flow_version  TEXT,
            path          TEXT NOT NULL,
            category      TEXT,
            skill         TEXT,
            agent_id      TEXT,
            outcome       TEXT,
            ticket_id     TEXT,
            recorded_at   TEXT NOT NULL
        )
        """,
        "CREATE INDEX calls_started_at ON calls (started_at)",
        """
        CREATE TABLE ticket_sequences (
            region_code TEXT NOT NULL,
            day         TEXT NOT NULL,
            last_value  INTEGER NOT NULL,
            PRIMARY KEY (region_code, day)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE tickets (
            ticket_id     TEXT PRIMARY KEY,
            origin_node   TEXT NOT NULL,
            region_code   TEXT NOT NULL,
            category      TEXT NOT NULL,
            state         TEXT NOT NULL,
            caller_masked TEXT NOT NULL,
            call_id       TEXT,
            created_at    TEXT NOT NULL,
            updated_at    TEXT NOT NULL,
            last_seq      INTEGER NOT NULL,
            received_at   TEXT
        )
        """,
        "CREATE INDEX tickets_call_id ON tickets (call_id)",
        """
        CREATE TABLE ticket_events (
            ticket_id   TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            actor       TEXT NOT NULL,
            tier        TEXT NOT NULL,
            office      TEXT,
            occurred_at TEXT NOT NULL,
            from_state  TEXT,
            to_state    TEXT,
            reason      TEXT,
            note        TEXT,
            payload     TEXT NOT NULL,
            origin_node TEXT NOT NULL,
            digest      TEXT NOT NULL,
            recorded_at TEXT NOT NULL,
            PRIMARY KEY (ticket_id, seq)
        ) WITHOUT ROWID
        """,
        """
        CREATE TABLE outbox (
            row_id      INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id    TEXT NOT NULL UNIQUE,
            ticket_id   TEXT NOT NULL,
            seq         INTEGER NOT NULL,
            envelope    BLOB NOT NULL,
            size        INTEGER NOT NULL,
            created_at  TEXT NOT NULL,
            sent_at     TEXT,
            attempts    INTEGER NOT NULL DEFAULT 0,
            acked_at    TEXT,
            dead_at     TEXT,
            dead_reason TEXT
        )
        """,
        "CREATE INDEX outbox_pending ON outbox (row_id) WHERE acked_at IS NULL AND dead_at IS NULL",
    ),
    # Version 2: links between tickets (并单, 提级), attachments stored by content hash, and
    # triggers that keep the event trail append-only.
    (
        """
        CREATE TABLE ticket_links (
            ticket_id        TEXT NOT NULL,
            kind             TEXT NOT NULL,
            linked_ticket_id TEXT NOT NULL,
            seq              INTEGER NOT NULL,
            created_at       TEXT NOT NULL,
            PRIMARY KEY (ticket_id, kind, linked_ticket_id)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX ticket_links_linked ON ticket_links (linked_ticket_id)",
        """
        CREATE TABLE attachments (
            sha256      TEXT PRIMARY KEY,
            size        INTEGER NOT NULL,
            media_type  TEXT NOT NULL,
            created_at  TEXT NOT NULL
        ) WITHOUT ROWID
        """,
        """
        CREATE TRIGGER ticket_events_no_update BEFORE UPDATE ON ticket_events
        BEGIN
            SELECT RAISE(ABORT, 'ticket_events is append-only: write a new event instead');
        END
        """,
        """
        CREATE TRIGGER ticket_events_no_delete BEFORE DELETE ON ticket_events
        BEGIN
            SELECT RAISE(ABORT, 'ticket_events is append-only: write a new event instead');
        END
        """,
    ),
    # Version 3: the caller's inputs (keys with timing, flow version) on each call, as JSON,
    # so a call can be replayed against another flow. Older rows keep NULL.
    (
        "ALTER TABLE calls ADD COLUMN inputs TEXT",
    ),
    # Version 4: queue places kept for callers who chose a callback, so a restarted
    # controller calls them back in their original queue order. Rows stay at this node:
    # they are not ticket events and never go upward. ``number_raw`` is stored like
    # calls.caller_raw (sealed when the node has a profile store).
    (
        """
        CREATE TABLE kept_callbacks (
            call_id         TEXT PRIMARY KEY,
            ticket_id       TEXT,
            skill           TEXT NOT NULL,
            priority        INTEGER NOT NULL,
            needs           TEXT NOT NULL,
            preferred_agent TEXT,
            queued_at       TEXT NOT NULL,
            expires_at      TEXT NOT NULL,
            number_raw      TEXT NOT NULL,
            recorded_at     TEXT NOT NULL
        ) WITHOUT ROWID
        """,
    ),
)

LATEST_VERSION = len(MIGRATIONS)
