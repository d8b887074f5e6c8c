"""Fault drill: the county database's disk fills up while calls come in, then space is freed.

The county database lives on a small tmpfs mounted in a private mount namespace, which a
holder process made with ``unshare --mount`` keeps alive. The county controller and the
test's database reads join it with ``nsenter``, and the test writes its filler file
through ``/proc/<holder>/root``. After a
normal call the test fills the tmpfs to the last byte. A call placed then must end in
the dialplan's fallback notice (Q.850 cause 41), not silence, and the controller must
print the Chinese low-space and SQLITE_FULL messages naming the folder. Once the filler
is deleted, the next call completes, the fallback call's callback ticket is written on
retry, the database passes ``PRAGMA integrity_check``, nothing committed before is lost and
everything reaches the city. Parameters: one fill-and-free cycle in `make test`; with
HOTLINE_SOAK=1 (`make soak`) three cycles. The tmpfs is 16 MB and the controller's
free-space threshold 2 MB in both.
"""

import asyncio
import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotline.demo import CITY, COUNTY, REPO_ROOT, DemoStack, standard_calls
from hotline.privacy import mask_phone
from stack.asterisk import FALLBACK_HANGUP_CAUSE
from stack.sipp import EndedBy
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome

pytestmark = pytest.mark.integration

CYCLES = 3 if os.environ.get("HOTLINE_SOAK") == "1" else 1
TMPFS_SIZE = "16m"
MIN_FREE_MB = 2
# The controller retries a failed fallback ticket every 5 s; allow a few attempts.
RETRY_WAIT_S = 20.0
SYNC_WAIT_S = 60.0


class PrivateTmpfs:
    """A tmpfs on ``mount_dir`` that only processes in a private mount namespace see."""

    def __init__(self, mount_dir: Path, size: str) -> None:
        mount_dir.mkdir(parents=True)
        self.mount_dir = mount_dir
        self._holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
             f'mount -t tmpfs -o size={size} tmpfs "{mount_dir}" && echo mounted && exec sleep 3600'],
            stdout=subprocess.PIPE,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().strip()
        if line != b"mounted":
            self.close()
            raise RuntimeError(f"mounting a tmpfs in a private mount namespace failed (output {line!r})")

    @property
    def view(self) -> Path:
        """The mounted folder as this process reaches it, through the holder's root."""
        return Path(f"/proc/{self._holder.pid}/root") / self.mount_dir.relative_to("/")

    @property
    def command_prefix(self) -> list[str]:
        return ["nsenter", f"--target={self._holder.pid}", "--mount", f"--wd={REPO_ROOT}", "--"]

    def fill(self, name: str) -> int:
        """Write a file until the tmpfs has no byte left; return the bytes written."""
        written = 0
        chunk = b"\0" * 4096
        with (self.view / name).open("wb", buffering=0) as filler:
            while True:
                try:
                    written += filler.write(chunk)
                except OSError as error:
                    if error.errno != errno.ENOSPC:
                        raise
                    break
        # Fill the last partial block too.
        with (self.view / name).open("ab", buffering=0) as filler:
            for size in (1024, 256, 64, 16, 1):
                while True:
                    try:
                        written += filler.write(b"\0" * size)
                    except OSError as error:
                        if error.errno != errno.ENOSPC:
                            raise
                        break
        return written

    def close(self) -> None:
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait(timeout=10)


@pytest.fixture
def tmpfs(tmp_path):
    disk = PrivateTmpfs(tmp_path / "county-disk", TMPFS_SIZE)
    yield disk
    disk.close()


# Reads the county database inside the private mount namespace and prints it as JSON.
# SQLite resolves symbolic links in a database path, so a path through /proc/<pid>/root
# would open the empty folder under the tmpfs instead of the tmpfs itself.
_READ_COUNTY = """
import asyncio, json, sys
from storage.ticket_store import TicketStore

async def main():
    async with await TicketStore.open(sys.argv[1], sys.argv[2], sys.argv[3]) as store:
        calls = [[c.call_id, c.outcome.value if c.outcome else None, c.caller_masked, c.ticket_id]
                 for c in await store.list_calls(limit=1000)]
        tickets = {t.ticket_id: t.last_seq for t in await store.list_tickets()}
        print("RESULT", json.dumps({"calls": calls, "tickets": tickets, "pending": await store.count_pending_outbox(),
                          "integrity": await store.check_integrity()}))

asyncio.run(main())
"""


def _read_county(tmpfs, database):
    result = subprocess.run(
        [*tmpfs.command_prefix, sys.executable, "-c", _READ_COUNTY, str(database), COUNTY["node_id"],
         COUNTY["region_code"]],
        capture_output=True, text=True, timeout=60, check=True,
    )
    # Log lines of the store share stdout with the result line.
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


async def _read_city(database):
    async with await TicketStore.open(database, CITY["node_id"], CITY["region_code"]) as store:
        return {t.ticket_id: t.last_seq for t in await store.list_tickets()}, await store.check_integrity()


def _wait_until(condition, timeout_s):
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.5)


def _failed_calls_with_ticket(county, caller_masked):
    return [call for call in county["calls"]
            if call[1] == CallOutcome.FAILED.value and call[2] == caller_masked and call[3] is not None]


def _synced(tmpfs, database, city_database):
    county = _read_county(tmpfs, database)
    city, _ = asyncio.run(_read_city(city_database))
    return county["pending"] == 0 and city == county["tickets"]


def test_disk_full_calls_get_fallback(tmp_path, tmpfs):
    calls = standard_calls()
    dibao, linshi = calls[0], calls[1]
    database = tmpfs.mount_dir / "county.sqlite3"
    linshi_masked = mask_phone(linshi.caller_number)

    with DemoStack(tmp_path / "stack", county_database=database, county_args=["--min-free-mb", str(MIN_FREE_MB)],
                   county_command_prefix=tmpfs.command_prefix) as stack:
        city_database = stack.work_dir / "city.sqlite3"
        before = stack.place_call(dibao)
        _wait_until(lambda: _synced(tmpfs, database, city_database), SYNC_WAIT_S)
        committed = _read_county(tmpfs, database)["tickets"]

        rejected, resumed = [], []
        for cycle in range(CYCLES):
            filled = tmpfs.fill("filler")
            assert filled > 0
            rejected.append(stack.place_call(linshi))

            (tmpfs.view / "filler").unlink()
            resumed.append(stack.place_call(dibao))
            _wait_until(lambda done=cycle: len(_failed_calls_with_ticket(_read_county(tmpfs, database), linshi_masked)) > done,
                        RETRY_WAIT_S)

        _wait_until(lambda: _synced(tmpfs, database, city_database), SYNC_WAIT_S)
        county = _read_county(tmpfs, database)
        city, city_check = asyncio.run(_read_city(city_database))
        county_log = stack.county.log_path.read_text(encoding="utf-8")
        assert stack.county.running

    assert before.completed
    for result in rejected:
        assert result.ended_by is EndedBy.REMOTE
        assert result.cause == FALLBACK_HANGUP_CAUSE
    for result in resumed:
        assert result.completed

    # The operator reads what failed, where, and the fix.
    assert "数据库所在磁盘空间不足" in county_log
    assert f"目录 {tmpfs.mount_dir}" in county_log
    assert "磁盘已满（SQLITE_FULL）" in county_log
    assert "请立即清理" in county_log
    assert "磁盘空间已恢复" in county_log

    # Nothing committed before the disk filled up is lost, and the file is sound.
    assert committed
    assert county["integrity"] == "ok"
    assert city_check == "ok"
    for ticket_id, last_seq in committed.items():
        assert county["tickets"][ticket_id] >= last_seq

    # Each rejected call has a callback ticket, written once space was back.
    assert len(_failed_calls_with_ticket(county, linshi_masked)) == CYCLES
    answered = [call for call in county["calls"] if call[1] == CallOutcome.ANSWERED.value]
    assert len(answered) == 1 + CYCLES
    # One ticket per answered call and one callback ticket per rejected call, all at the city.
    assert len(county["tickets"]) == 1 + 2 * CYCLES
    assert county["pending"] == 0
    assert city == county["tickets"]
