"""Field case S01: concurrent read-then-write from two processes while a third dumps the database.

Run as a script, this file is one of the worker processes (``writer`` or ``dumper``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if __name__ == "__main__":
    sys.path.insert(0, str(REPO_ROOT))

from storage import StorageBusy, TicketStore  # noqa: E402
from tickets.model import TicketCategory  # noqa: E402

NODE = "county-330106"
REGION = "330106"
ITERATIONS = 500


async def run_writer(db_path: str, ticket_id: str, worker: str) -> None:
    """Read the ticket, then append an event to it, ITERATIONS times with random jitter."""
    rng = random.Random(worker)
    lock_errors = 0
    async with await TicketStore.open(db_path, NODE, REGION) as store:
        for index in range(ITERATIONS):
            ticket = await store.get_ticket(ticket_id)
            await asyncio.sleep(rng.uniform(0, 0.002))
            try:
                await store.append_event(ticket_id, "note_added", worker, {"index": index, "seen_seq": ticket.last_seq})
            except StorageBusy:
                lock_errors += 1
    print(json.dumps({"worker": worker, "lock_errors": lock_errors}), flush=True)


def run_dumper(db_path: str, stop_file: str) -> None:
    """Dump the whole database over and over, as a backup job would, until ``stop_file`` exists."""
    dumps = 0
    while not os.path.exists(stop_file):
        connection = sqlite3.connect(db_path, timeout=10)
        for _ in connection.iterdump():
            pass
        connection.close()
        dumps += 1
    print(json.dumps({"dumps": dumps}), flush=True)


def spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)


async def test_two_writer_processes_no_lock_errors(tmp_path: Path) -> None:
    """Two processes each read then write 500 times with jitter while a third dumps: zero "database is locked" (S01)."""
    db_path = str(tmp_path / "county.db")
    stop_file = str(tmp_path / "stop")
    async with await TicketStore.open(db_path, NODE, REGION) as store:
        ticket = await store.open_ticket(None, TicketCategory.ZHENGCE, "无号码",
                                         datetime(2026, 12, 4, 1, 0, tzinfo=timezone.utc), "ivr", {})

    dumper = spawn("dumper", db_path, stop_file)
    writers = [spawn("writer", db_path, ticket.ticket_id, name) for name in ("agent-a", "agent-b")]
    started = time.monotonic()
    outputs = [process.communicate(timeout=240) for process in writers]
    Path(stop_file).touch()
    dump_out, dump_err = dumper.communicate(timeout=60)
    elapsed = time.monotonic() - started

    for process, (stdout, stderr) in zip(writers, outputs):
        assert process.returncode == 0, stderr[-3000:]
        assert "database is locked" not in stderr
        assert json.loads(stdout.strip().splitlines()[-1])["lock_errors"] == 0
    assert dumper.returncode == 0, dump_err[-3000:]
    assert json.loads(dump_out.strip().splitlines()[-1])["dumps"] >= 1

    async with await TicketStore.open(db_path, NODE, REGION) as store:
        events = await store.list_events(ticket.ticket_id)
        assert [event.seq for event in events] == list(range(1, 2 * ITERATIONS + 2))
        assert (await store.get_ticket(ticket.ticket_id)).last_seq == 2 * ITERATIONS + 1
        assert await store.count_pending_outbox() == 2 * ITERATIONS + 1
        assert await store.check_integrity() == "ok"
    assert elapsed < 200


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        asyncio.run(run_writer(sys.argv[2], sys.argv[3], sys.argv[4]))
    elif sys.argv[1] == "dumper":
        run_dumper(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(f"unknown role {sys.argv[1]!r}; expected writer or dumper")
