"""Profile store: encryption at rest, keyed-hash lookup, upsert, audited reads, region access and key rotation."""

from __future__ import annotations

import os
import sqlite3
import stat
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from profiles.access import AccessDenied, Operator, OperatorRole, OperatorTier
from profiles.keys import KeyFileError, add_active_key, generate_key_files, load_keys
from profiles.model import (
    Address,
    AssistanceStatus,
    Contact,
    NeedTag,
    Profile,
    StatusPeriod,
    upward_payload,
)
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_id_for_index, synthetic_profiles
from storage.errors import StorageError
from storage.profile_store import ProfileStore

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)


@pytest.fixture
def key_paths(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "keys"
    folder.mkdir()
    encryption, lookup = folder / "encryption.json", folder / "lookup.json"
    generate_key_files(encryption, lookup, now=NOW)
    return encryption, lookup


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    folder = tmp_path / "db"
    folder.mkdir()
    return folder / "profiles.sqlite3"


def _profile(index: int = 1, **changes: object) -> Profile:
    profile = Profile(
        name="王小明",
        id_number=synthetic_id_for_index(index),
        phones=(normalise_phone(f"139{index:08d}"), normalise_phone("021-55501234")),
        address=Address("310115", "张江路88号3栋1201室"),
        statuses=(StatusPeriod(AssistanceStatus.DIBAO, date(2023, 1, 1), date(2024, 6, 30)),
                  StatusPeriod(AssistanceStatus.TEKUN, date(2024, 7, 1))),
        need_tags=frozenset({NeedTag.SLOW_SPEECH, NeedTag.HEARING}),
        contact=Contact("王芳", "女儿", normalise_phone("13900000099")),
        preferred_agent="agent-07",
    )
    return replace(profile, **changes)  # type: ignore[arg-type]


async def _open(db_path: Path, key_paths: tuple[Path, Path]) -> ProfileStore:
    return await ProfileStore.open(db_path, load_keys(*key_paths), clock=lambda: NOW)


def test_key_files_are_private(key_paths: tuple[Path, Path]) -> None:
    for path in key_paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_key_file_readable_by_others_rejected(key_paths: tuple[Path, Path]) -> None:
    os.chmod(key_paths[0], 0o644)
    with pytest.raises(KeyFileError) as caught:
        load_keys(*key_paths)
    assert "chmod 600" in str(caught.value)


def test_keygen_never_overwrites(key_paths: tuple[Path, Path]) -> None:
    with pytest.raises(KeyFileError):
        generate_key_files(*key_paths, now=NOW)


async def test_lookup_any_presentation(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles([_profile()])
        for raw in ("13900000001", "+8613900000001", "008613900000001", "013900000001"):
            summaries = await store.lookup_by_phone(normalise_phone(raw))
            assert len(summaries) == 1
        summary = summaries[0]

    assert summary.name_masked == "王**"
    assert summary.id_number_masked == "1" + "*" * 15 + synthetic_id_for_index(1)[-2:]
    assert summary.phones_masked == ("139****0001", "021******34")
    assert summary.address_masked == "上海市浦东新区"
    assert summary.need_tags == frozenset({NeedTag.SLOW_SPEECH, NeedTag.HEARING})
    assert summary.active_statuses == (AssistanceStatus.TEKUN,)
    assert summary.preferred_agent == "agent-07"


async def test_agent_summary_keeps_last_four(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles([_profile()])
        (summary,) = await store.lookup_by_phone(normalise_phone("13900000001"), for_agent=True)
    assert summary.id_number_masked.endswith(synthetic_id_for_index(1)[-4:])
    assert summary.id_number_masked.count("*") == 13


async def test_shared_landline_finds_both(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles([_profile(1), _profile(2, name="李四")])
        summaries = await store.lookup_by_phone(normalise_phone("+862155501234"))
    assert len(summaries) == 2


async def test_unknown_number_finds_nothing(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles([_profile()])
        assert await store.lookup_by_phone(normalise_phone("13900000777")) == []


async def test_personal_data_not_in_file(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles([_profile()])

    raw = b"".join(path.read_bytes() for path in db_path.parent.iterdir())
    for clear in (synthetic_id_for_index(1), "13900000001", "王小明", "张江路", "特困", "听力障碍", "女儿"):
        assert clear.encode() not in raw, clear


async def test_reimport_updates_not_duplicates(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        first = await store.upsert_profiles([_profile()])
        second = await store.upsert_profiles([_profile(phones=(normalise_phone("13900000555"),))])
        assert (first.inserted, first.updated) == (1, 0)
        assert (second.inserted, second.updated) == (0, 1)
        assert await store.count_profiles() == 1
        assert await store.lookup_by_phone(normalise_phone("13900000001")) == []
        assert len(await store.lookup_by_phone(normalise_phone("13900000555"))) == 1


async def test_failed_upsert_writes_nothing(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    bad = _profile(2, address=Address("3101", "x"))
    async with await _open(db_path, key_paths) as store:
        with pytest.raises(StorageError):
            await store.upsert_profiles([_profile(1)] + list(synthetic_profiles(1200))[3:] + [bad], batch_size=100)
        assert await store.count_profiles() == 0


async def test_ciphertext_bound_to_row(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles([_profile(1), _profile(2, name="李四")])

    # Swap the name ciphertexts of two rows: AES-GCM associated data makes both fail.
    connection = sqlite3.connect(db_path)
    rows = connection.execute("SELECT profile_uid, name_ct FROM profiles ORDER BY profile_uid").fetchall()
    connection.execute("UPDATE profiles SET name_ct = ? WHERE profile_uid = ?", (rows[1][1], rows[0][0]))
    connection.commit()
    connection.close()

    from profiles.keys import DecryptionFailed
    async with await _open(db_path, key_paths) as store:
        with pytest.raises(DecryptionFailed):
            await store.lookup_by_phone(normalise_phone("+862155501234"))


async def _with_operators(store: ProfileStore) -> None:
    await store.add_operator(Operator("county-pd", OperatorTier.COUNTY, "310115", OperatorRole.AGENT))
    await store.add_operator(Operator("county-xh", OperatorTier.COUNTY, "310104", OperatorRole.AGENT))
    await store.add_operator(Operator("shanghai", OperatorTier.PROVINCE, "310000", OperatorRole.SUPERVISOR))
    await store.add_operator(Operator("zhejiang", OperatorTier.PROVINCE, "330000", OperatorRole.SUPERVISOR))
    await store.add_operator(Operator("hangzhou", OperatorTier.CITY, "330100", OperatorRole.AGENT))


@pytest.mark.parametrize(
    ("operator", "visible"),
    [("county-pd", True), ("county-xh", False), ("shanghai", True), ("zhejiang", False), ("hangzhou", False)],
)
async def test_region_access_rules(db_path: Path, key_paths: tuple[Path, Path], operator: str, visible: bool) -> None:
    async with await _open(db_path, key_paths) as store:
        await _with_operators(store)
        await store.upsert_profiles([_profile()])
        read = await store.read_full_by_phone(normalise_phone("13900000001"), operator_name=operator,
                                              reason="核实来电人身份")
        log = await store.access_log()
    assert len(read.granted) == (1 if visible else 0)
    assert read.denied == (0 if visible else 1)
    assert log[0].outcome == ("granted" if visible else "denied")
    assert log[0].operator == operator
    assert log[0].reason == "核实来电人身份"
    if visible:
        assert log[0].profile_ref == read.granted[0].profile_ref
    else:
        assert log[0].profile_ref is not None


async def test_city_account_sees_its_counties(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await _with_operators(store)
        await store.upsert_profiles([_profile(address=Address("330106", "文三路1号"))])
        read = await store.read_full_by_phone(normalise_phone("13900000001"), operator_name="hangzhou",
                                              reason="回访核实情况")
    assert read.granted[0].profile.address.detail == "文三路1号"
    assert read.granted[0].profile.contact == Contact("王芳", "女儿", normalise_phone("13900000099"))


async def test_full_read_requires_reason(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await _with_operators(store)
        await store.upsert_profiles([_profile()])
        with pytest.raises(AccessDenied):
            await store.read_full_by_phone(normalise_phone("13900000001"), operator_name="shanghai", reason=" ")
        with pytest.raises(AccessDenied):
            await store.read_full_by_phone(normalise_phone("13900000001"), operator_name="nobody",
                                           reason="核实来电人身份")
        log = await store.access_log()
    assert [entry.outcome for entry in log] == ["denied", "denied"]
    assert [entry.operator for entry in log] == ["nobody", "shanghai"]


async def test_access_log_is_append_only(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await _with_operators(store)
        await store.read_full_by_phone(normalise_phone("13900000001"), operator_name="shanghai", reason="核实来电人身份")

    connection = sqlite3.connect(db_path)
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("UPDATE profile_access_log SET reason = 'x'")
    with pytest.raises(sqlite3.IntegrityError):
        connection.execute("DELETE FROM profile_access_log")
    assert connection.execute("SELECT outcome FROM profile_access_log").fetchall() == [("not_found",)]
    connection.close()


async def test_operator_tier_must_match_region(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        with pytest.raises(ValueError):
            await store.add_operator(Operator("x", OperatorTier.COUNTY, "310000", OperatorRole.AGENT))


async def test_key_rotation_resumes(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    profiles = list(synthetic_profiles(250))
    async with await _open(db_path, key_paths) as store:
        await store.upsert_profiles(profiles)
        old_key = store.active_key_id

    new_key = add_active_key(key_paths[0], now=NOW)
    keys = load_keys(*key_paths)
    assert keys.active_key_id == new_key
    assert old_key in keys.encryption_keys

    # One batch, then "interrupted": the next store continues with the rows left.
    async with await ProfileStore.open(db_path, keys, clock=lambda: NOW) as store:
        assert await store.reencrypt_batch(100) == 100
        assert await store.key_ids_in_use() == {old_key: 150, new_key: 100}
    async with await ProfileStore.open(db_path, keys, clock=lambda: NOW) as store:
        while await store.reencrypt_batch(100):
            pass
        assert await store.key_ids_in_use() == {new_key: 250}

    # Without the old key every row still decrypts.
    only_new = replace(keys, encryption_keys={new_key: keys.encryption_keys[new_key]})
    async with await ProfileStore.open(db_path, only_new, clock=lambda: NOW) as store:
        for index in (0, 124, 249):
            (summary,) = await store.lookup_by_phone(profiles[index].phones[0])
            assert summary.profile_ref == store.profile_ref(profiles[index].id_number)


async def test_upward_payload_masked(db_path: Path, key_paths: tuple[Path, Path]) -> None:
    async with await _open(db_path, key_paths) as store:
        await _with_operators(store)
        await store.upsert_profiles([_profile()])
        read = await store.read_full_by_phone(normalise_phone("13900000001"), operator_name="shanghai",
                                              reason="上报市级工单")
        item = read.granted[0]
        payload = upward_payload(item.profile, profile_ref=item.profile_ref, phone_refs=item.phone_refs,
                                 county_label=store.county_label("310115"))

    text = repr(payload)
    assert synthetic_id_for_index(1) not in text
    assert "13900000001" not in text
    assert "王小明" not in text
    assert "张江路" not in text
    assert "特困" not in text
    assert "听力障碍" not in text
    assert payload["profile_ref"] == item.profile_ref
    assert payload["phones_masked"] == ["139****0001", "021******34"]
    assert len(payload["phone_refs"]) == 2  # type: ignore[arg-type]
