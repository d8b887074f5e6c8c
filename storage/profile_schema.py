"""Storage: migrations of the profile database, a SQLite file of its own beside the node's ticket database.

Profiles live in their own file so that the ticket database, which is backed up and
inspected more often, contains no citizen data beyond masked caller numbers.
"""

from __future__ import annotations

# Each entry upgrades the schema from version N-1 to N. Never edit a released entry;
# append a new one instead, because deployed databases have already applied the old ones.
PROFILE_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # Version 1: profiles, their phone hashes, operator accounts and the access log.
    (
        # Name, ID number, address detail and details (phones, statuses, tags, contact,
        # history) are AES-GCM ciphertexts under key ``key_id``. ``id_hash`` is the HMAC of
        # the 18-character ID number and deduplicates profiles. ``region_code`` stays in
        # clear because access is decided by it.
        """
        CREATE TABLE profiles (
            profile_uid     TEXT PRIMARY KEY,
            id_hash         BLOB NOT NULL UNIQUE,
            region_code     TEXT NOT NULL CHECK (length(region_code) = 6),
            key_id          TEXT NOT NULL,
            name_ct         BLOB NOT NULL,
            id_number_ct    BLOB NOT NULL,
            address_ct      BLOB NOT NULL,
            details_ct      BLOB NOT NULL,
            preferred_agent TEXT,
            created_at      TEXT NOT NULL,
            updated_at      TEXT NOT NULL
        )
        """,
        "CREATE INDEX profiles_key_id ON profiles (key_id)",
        "CREATE INDEX profiles_region_code ON profiles (region_code)",
        # HMAC of the canonical E.164 number. A shared landline maps to several profiles.
        """
        CREATE TABLE profile_phones (
            phone_hash  BLOB NOT NULL,
            profile_uid TEXT NOT NULL REFERENCES profiles (profile_uid) ON DELETE CASCADE,
            PRIMARY KEY (phone_hash, profile_uid)
        ) WITHOUT ROWID
        """,
        "CREATE INDEX profile_phones_profile_uid ON profile_phones (profile_uid)",
        """
        CREATE TABLE operators (
            name        TEXT PRIMARY KEY,
            tier        TEXT NOT NULL CHECK (tier IN ('county', 'city', 'province', 'ministry')),
            region_code TEXT NOT NULL CHECK (length(region_code) = 6),
            role        TEXT NOT NULL CHECK (role IN ('agent', 'supervisor')),
            created_at  TEXT NOT NULL
        )
        """,
        # Append-only: the triggers reject every UPDATE and DELETE.
        """
        CREATE TABLE profile_access_log (
            entry_id    INTEGER PRIMARY KEY AUTOINCREMENT,
            occurred_at TEXT NOT NULL,
            operator    TEXT NOT NULL,
            action      TEXT NOT NULL,
            reason      TEXT NOT NULL,
            profile_ref TEXT,
            outcome     TEXT NOT NULL CHECK (outcome IN ('granted', 'denied', 'not_found'))
        )
        """,
        """
        CREATE TRIGGER profile_access_log_no_update BEFORE UPDATE ON profile_access_log
        BEGIN SELECT RAISE(ABORT, 'profile_access_log is append-only'); END
        """,
        """
        CREATE TRIGGER profile_access_log_no_delete BEFORE DELETE ON profile_access_log
        BEGIN SELECT RAISE(ABORT, 'profile_access_log is append-only'); END
        """,
    ),
    # Version 2: the lookup key the hashes are under, ticket links and agent screens for the
    # call path, and the profile references replaced by lookup-key rotations.
    (
        # name -> value; "lookup_key_id" names the HMAC key of every id_hash and phone_hash.
        "CREATE TABLE profile_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # Tickets opened for calls from a known caller, so the next call finds the open one.
        # Keyed by profile_uid, which a lookup-key rotation does not change.
        """
        CREATE TABLE profile_tickets (
            ticket_id   TEXT PRIMARY KEY,
            profile_uid TEXT NOT NULL REFERENCES profiles (profile_uid) ON DELETE CASCADE,
            skill       TEXT,
            agent_id    TEXT,
            opened_at   TEXT NOT NULL
        )
        """,
        "CREATE INDEX profile_tickets_profile ON profile_tickets (profile_uid, opened_at)",
        # The masked summary (JSON) of the known caller last put through to each agent.
        """
        CREATE TABLE agent_screens (
            agent_id   TEXT PRIMARY KEY,
            call_id    TEXT NOT NULL,
            shown_at   TEXT NOT NULL,
            summary    TEXT NOT NULL
        )
        """,
        # Each rotation of the lookup key maps the old profile_ref (in the access log and in
        # tickets already sent upward) to the new one.
        """
        CREATE TABLE profile_ref_history (
            old_ref       TEXT PRIMARY KEY,
            new_ref       TEXT NOT NULL,
            lookup_key_id TEXT NOT NULL,
            rotated_at    TEXT NOT NULL
        )
        """,
    ),
)

PROFILE_LATEST_VERSION = len(PROFILE_MIGRATIONS)
