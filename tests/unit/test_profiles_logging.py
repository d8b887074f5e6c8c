"""Profile operations log through hotline.logging without ID numbers or phone numbers, masked or not."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog

from hotline.logging import configure_logging, mask_personal_data
from hotline.privacy import ID_NUMBER_RE, MOBILE_RE
from profiles.access import AccessDenied, Operator, OperatorRole, OperatorTier
from profiles.keys import add_active_key, generate_key_files, load_keys
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_profiles
from storage.profile_store import ProfileStore

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, list[dict[str, Any]]]]:
    saved = structlog.get_config()
    stream = io.StringIO()
    configure_logging("DEBUG", stream=stream)

    # Record each event before the masking processor, so a value the masks would hide still fails the test.
    raw_events: list[dict[str, Any]] = []

    def record(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        raw_events.append(dict(event_dict))
        return event_dict

    processors = list(structlog.get_config()["processors"])
    processors.insert(processors.index(mask_personal_data), record)
    structlog.configure(processors=processors)
    yield stream, raw_events
    structlog.configure(**saved)


async def test_profile_operations_log_no_numbers(tmp_path: Path, captured: tuple[io.StringIO, list[dict[str, Any]]]) -> None:
    stream, raw_events = captured
    (tmp_path / "keys").mkdir()
    (tmp_path / "db").mkdir()
    encryption, lookup = tmp_path / "keys" / "e.json", tmp_path / "keys" / "l.json"
    generate_key_files(encryption, lookup, now=NOW)
    profiles = list(synthetic_profiles(40))

    async with await ProfileStore.open(tmp_path / "db" / "p.sqlite3", load_keys(encryption, lookup),
                                       clock=lambda: NOW) as store:
        await store.upsert_profiles(profiles)
        await store.upsert_profiles(profiles[:5])
        await store.add_operator(Operator("bj-lead", OperatorTier.PROVINCE, "110000", OperatorRole.SUPERVISOR))
        for profile in profiles[:8]:
            await store.lookup_by_phone(profile.phones[0], for_agent=True)
            await store.read_full_by_phone(profile.phones[0], operator_name="bj-lead", reason="核实来电人身份")
        with pytest.raises(AccessDenied):
            await store.read_full_by_phone(normalise_phone("13900000001"), operator_name="nobody",
                                           reason="核实来电人身份")

    add_active_key(encryption, now=NOW)
    async with await ProfileStore.open(tmp_path / "db" / "p.sqlite3", load_keys(encryption, lookup),
                                       clock=lambda: NOW) as store:
        while await store.reencrypt_batch(16):
            pass

    events = [event["event"] for event in raw_events]
    for expected in ("profiles upserted", "profile lookup", "full profile read", "operator saved",
                     "profiles re-encrypted", "profile store opened"):
        assert expected in events, expected

    secrets = {profile.id_number for profile in profiles} | {profile.name for profile in profiles}
    secrets |= {phone.e164 for profile in profiles for phone in profile.phones}
    secrets |= {phone.national for profile in profiles for phone in profile.phones}
    raw_text = repr(raw_events)
    assert not [value for value in secrets if value in raw_text]

    output = stream.getvalue()
    assert output.count("\n") >= len(raw_events)
    assert not ID_NUMBER_RE.findall(output)
    assert not MOBILE_RE.findall(output)
