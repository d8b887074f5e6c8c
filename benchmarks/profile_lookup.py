"""Benchmark: profile lookup by caller number at 1,000,000 profiles, against a raw indexed SELECT.

Run from the repository root::

    .venv/bin/python benchmarks/profile_lookup.py --profiles 1000000 --lookups 5000

It builds a profile database of synthetic profiles in a temporary folder (or ``--workdir``),
then times two things on the same file:

- ``ProfileStore.lookup_by_phone``: normalised number → HMAC → indexed join over aiosqlite →
  AES-GCM decryption of name, ID number, address and details → masked summary;
- a raw ``sqlite3`` SELECT of the same join by a precomputed phone hash, with no decryption.

It prints p50, p99 and max for both and their ratio, with the machine, versions and date.
Three quarters of the lookups hit a stored number and one quarter miss.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotline.logging import configure_logging
from profiles.keys import generate_key_files, load_keys
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_mobile_for_index, synthetic_profiles
from storage.profile_store import ProfileStore

RAW_SQL = """
SELECT p.* FROM profile_phones AS ph JOIN profiles AS p ON p.profile_uid = ph.profile_uid
WHERE ph.phone_hash = ? ORDER BY p.created_at, p.profile_uid
"""
CHUNK = 50_000


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _describe(label: str, samples_ms: list[float]) -> tuple[float, float]:
    p50, p99 = _percentile(samples_ms, 0.50), _percentile(samples_ms, 0.99)
    print(f"{label:<28} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   max {max(samples_ms):7.3f} ms   "
          f"mean {statistics.fmean(samples_ms):7.3f} ms")
    return p50, p99


async def _build(database: Path, keys_folder: Path, count: int) -> None:
    keys = load_keys(keys_folder / "encryption.json", keys_folder / "lookup.json")
    started = time.perf_counter()
    async with await ProfileStore.open(database, keys) as store:
        source = synthetic_profiles(count)
        written = 0
        while batch := list(islice(source, CHUNK)):
            await store.upsert_profiles(batch)
            written += len(batch)
            print(f"  built {written:>9,} profiles ({time.perf_counter() - started:6.1f} s)", file=sys.stderr)


async def _time_store(database: Path, keys_folder: Path, numbers: list[str]) -> list[float]:
    keys = load_keys(keys_folder / "encryption.json", keys_folder / "lookup.json")
    samples = []
    async with await ProfileStore.open(database, keys) as store:
        for raw in numbers[:200]:  # Warm-up: page cache and aiosqlite thread.
            await store.lookup_by_phone(normalise_phone(raw))
        for raw in numbers:
            started = time.perf_counter()
            await store.lookup_by_phone(normalise_phone(raw))
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def _time_raw(database: Path, keys_folder: Path, numbers: list[str]) -> list[float]:
    keys = load_keys(keys_folder / "encryption.json", keys_folder / "lookup.json")
    hashes = [keys.lookup_hash(normalise_phone(raw).e164) for raw in numbers]
    connection = sqlite3.connect(database)
    for phone_hash in hashes[:200]:
        connection.execute(RAW_SQL, (phone_hash,)).fetchall()
    samples = []
    for phone_hash in hashes:
        started = time.perf_counter()
        connection.execute(RAW_SQL, (phone_hash,)).fetchall()
        samples.append((time.perf_counter() - started) * 1000)
    connection.close()
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1_000_000, help="number of synthetic profiles")
    parser.add_argument("--lookups", type=int, default=5_000, help="number of timed lookups")
    parser.add_argument("--workdir", type=Path, help="folder to keep the database in (default: a temporary one)")
    args = parser.parse_args()
    configure_logging("WARNING")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="profile-bench-"))
    database_folder, keys_folder = workdir / "db", workdir / "keys"
    database_folder.mkdir(parents=True, exist_ok=True)
    keys_folder.mkdir(parents=True, exist_ok=True)
    database = database_folder / "profiles.sqlite3"
    if not (keys_folder / "encryption.json").exists():
        generate_key_files(keys_folder / "encryption.json", keys_folder / "lookup.json", now=datetime.now(UTC))

    print(f"date {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {_cpu_model()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; {platform.platform()}")
    if not database.exists():
        asyncio.run(_build(database, keys_folder, args.profiles))
    print(f"database {database}: {database.stat().st_size / 2**20:,.0f} MiB for {args.profiles:,} profiles")

    rng = random.Random(7)
    numbers = []
    for _ in range(args.lookups):
        if rng.random() < 0.75:
            numbers.append("+86" + synthetic_mobile_for_index(rng.randrange(args.profiles)))
        else:
            numbers.append(synthetic_mobile_for_index(args.profiles + rng.randrange(10_000_000)))

    store_p50, store_p99 = _describe("ProfileStore.lookup_by_phone", asyncio.run(_time_store(database, keys_folder, numbers)))
    raw_p50, raw_p99 = _describe("raw sqlite3 SELECT", _time_raw(database, keys_folder, numbers))
    print(f"ratio store/raw: p50 {store_p50 / raw_p50:.1f}x, p99 {store_p99 / raw_p99:.1f}x; "
          f"target p99 <= 50 ms: {'met' if store_p99 <= 50 else 'NOT met'}")


if __name__ == "__main__":
    main()
