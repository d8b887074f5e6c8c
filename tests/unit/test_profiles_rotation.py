"""Key rotation: new AES and lookup keys, re-encryption in batches, re-hashing in one transaction, crash safety."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hotline.cli import main as cli_main
from profiles.keys import add_lookup_key, generate_key_files, load_keys
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_mobile_for_index, synthetic_profiles
from storage.profile_store import ProfileStore

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=UTC)
HOTLINE = Path(sys.executable).with_name("hotline")


def _setup(tmp_path: Path, count: int) -> Path:
    """Create keys, a config file and a database with ``count`` synthetic profiles; return the config path."""
    keys_folder = tmp_path / "keys"
    keys_folder.mkdir()
    db_folder = tmp_path / "db"
    db_folder.mkdir()
    encryption, lookup = keys_folder / "encryption.json", keys_folder / "lookup.json"
    generate_key_files(encryption, lookup, now=NOW)
    config = tmp_path / "profiles.yaml"
    config.write_text(f"database: {db_folder / 'p.sqlite3'}\nencryption_key_file: {encryption}\n"
                      f"lookup_key_file: {lookup}\n", encoding="utf-8")

    async def fill() -> None:
        async with await ProfileStore.open(db_folder / "p.sqlite3", load_keys(encryption, lookup)) as store:
            await store.upsert_profiles(list(synthetic_profiles(count)))

    asyncio.run(fill())
    return config


def _paths(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "keys" / "encryption.json", tmp_path / "keys" / "lookup.json", tmp_path / "db" / "p.sqlite3"


async def _found_counts(tmp_path: Path, indexes: range) -> list[int]:
    """Open the store with the key files as they are now and count the profiles found per phone."""
    encryption, lookup, database = _paths(tmp_path)
    async with await ProfileStore.open(database, load_keys(encryption, lookup)) as store:
        return [len(await store.lookup_by_phone(normalise_phone(synthetic_mobile_for_index(index))))
                for index in indexes]


def _key_ids(database: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return dict(connection.execute("SELECT key_id, count(*) FROM profiles GROUP BY key_id").fetchall())


def _lookup_key_id(database: Path) -> str:
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
        return connection.execute("SELECT value FROM profile_meta WHERE name = 'lookup_key_id'").fetchone()[0]


def test_rotate_key_then_lookup(tmp_path: Path):
    config = _setup(tmp_path, 30)
    encryption, lookup, database = _paths(tmp_path)
    old_ref = asyncio.run(_refs(tmp_path))[0]

    result = CliRunner().invoke(cli_main, ["profiles", "rotate-key", "--config", str(config), "--batch-size", "7"])

    assert result.exit_code == 0, result.output
    assert "已重新加密 30 份档案，重算 30 份档案的查询散列" in result.output
    keys = load_keys(encryption, lookup)
    assert len(keys.encryption_keys) == 2
    assert len(keys.lookup_keys) == 2
    assert _key_ids(database) == {keys.active_key_id: 30}
    assert _lookup_key_id(database) == keys.active_lookup_key_id
    assert asyncio.run(_found_counts(tmp_path, range(30))) == [1] * 30
    new_ref = asyncio.run(_refs(tmp_path))[0]
    assert new_ref != old_ref
    assert asyncio.run(_follow(tmp_path, old_ref)) == new_ref


def test_retire_after_rotation_keeps_lookups(tmp_path: Path):
    config = _setup(tmp_path, 10)
    encryption, lookup, _ = _paths(tmp_path)
    CliRunner().invoke(cli_main, ["profiles", "rotate-key", "--config", str(config)])

    result = CliRunner().invoke(cli_main, ["profiles", "retire-keys", "--config", str(config)])

    assert result.exit_code == 0, result.output
    keys = load_keys(encryption, lookup)
    assert list(keys.encryption_keys) == [keys.active_key_id]
    assert list(keys.lookup_keys) == [keys.active_lookup_key_id]
    assert asyncio.run(_found_counts(tmp_path, range(10))) == [1] * 10


def test_new_rotation_refused_while_pending(tmp_path: Path):
    config = _setup(tmp_path, 5)
    _, lookup, _ = _paths(tmp_path)
    add_lookup_key(lookup, now=NOW)

    refused = CliRunner().invoke(cli_main, ["profiles", "rotate-key", "--config", str(config)])
    resumed = CliRunner().invoke(cli_main, ["profiles", "rotate-key", "--resume", "--config", str(config)])

    assert refused.exit_code == 1
    assert "--resume" in refused.output
    assert resumed.exit_code == 0, resumed.output
    assert "重算 5 份档案的查询散列" in resumed.output


def test_pending_lookup_key_keeps_old_hashes(tmp_path: Path):
    """Between adding the new lookup key and re-hashing, lookups use the key the database names."""
    _setup(tmp_path, 5)
    _, lookup, database = _paths(tmp_path)
    old_key = _lookup_key_id(database)
    add_lookup_key(lookup, now=NOW)

    assert asyncio.run(_found_counts(tmp_path, range(5))) == [1] * 5
    assert _lookup_key_id(database) == old_key


def test_interrupted_rehash_loses_nothing(tmp_path: Path):
    """An exception inside the re-hash transaction (after 500 rows) rolls it back whole; a rerun finishes."""
    _setup(tmp_path, 520)
    encryption, lookup, database = _paths(tmp_path)
    old_key = _lookup_key_id(database)
    add_lookup_key(lookup, now=NOW)

    def crash(count: int) -> None:
        raise RuntimeError(f"interrupted after {count}")

    async def rehash(progress) -> int:
        async with await ProfileStore.open(database, load_keys(encryption, lookup)) as store:
            return await store.rekey_lookup(progress=progress)

    with pytest.raises(RuntimeError):
        asyncio.run(rehash(crash))

    assert _lookup_key_id(database) == old_key
    assert asyncio.run(_found_counts(tmp_path, range(0, 520, 13))) == [1] * 40
    assert asyncio.run(rehash(None)) == 520
    assert _lookup_key_id(database) == load_keys(encryption, lookup).active_lookup_key_id
    assert asyncio.run(_found_counts(tmp_path, range(0, 520, 13))) == [1] * 40


def test_killed_rotation_resumes(tmp_path: Path):
    """SIGKILL the rotate-key process between re-encryption batches, then finish it with --resume."""
    config = _setup(tmp_path, 300)
    encryption, lookup, database = _paths(tmp_path)
    original_key = next(iter(_key_ids(database)))

    process = subprocess.Popen([str(HOTLINE), "profiles", "rotate-key", "--batch-size", "1", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            counts = _key_ids(database)
            if len(counts) == 2 and counts.get(original_key, 0) > 0:
                break
            time.sleep(0.01)
        else:
            pytest.fail(f"rotation never ran part way within 30 s: {_key_ids(database)}")
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=10)

    halfway = _key_ids(database)
    assert len(halfway) == 2
    assert sum(halfway.values()) == 300
    assert asyncio.run(_found_counts(tmp_path, range(0, 300, 7))) == [1] * 43

    resumed = CliRunner().invoke(cli_main, ["profiles", "rotate-key", "--resume", "--config", str(config)])

    assert resumed.exit_code == 0, resumed.output
    keys = load_keys(encryption, lookup)
    assert _key_ids(database) == {keys.active_key_id: 300}
    assert _lookup_key_id(database) == keys.active_lookup_key_id
    assert asyncio.run(_found_counts(tmp_path, range(300))) == [1] * 300


def test_legacy_lookup_key_file_reads_as_l0(tmp_path: Path):
    _setup(tmp_path, 1)
    encryption, lookup, _ = _paths(tmp_path)
    assert "keys" not in json.loads(lookup.read_text(encoding="utf-8"))

    keys = load_keys(encryption, lookup)

    assert keys.active_lookup_key_id == "l0"
    assert keys.lookup_keys == {"l0": keys.lookup_key}


async def _refs(tmp_path: Path) -> list[str]:
    encryption, lookup, database = _paths(tmp_path)
    async with await ProfileStore.open(database, load_keys(encryption, lookup)) as store:
        summaries = await store.lookup_by_phone(normalise_phone(synthetic_mobile_for_index(0)))
        return [summary.profile_ref for summary in summaries]


async def _follow(tmp_path: Path, profile_ref: str) -> str:
    encryption, lookup, database = _paths(tmp_path)
    async with await ProfileStore.open(database, load_keys(encryption, lookup)) as store:
        return await store.current_profile_ref(profile_ref)
