"""Hot reload on a running county node: a saved edit, a CLI rollback and a bad edit, seen by real calls.

A `hotline run` county process takes SIPp calls through Asterisk 22 while the test edits its
flow file and runs `hotline flows rollback`. Each call record names the flow version the call
ran, so the records show which version was live when each call arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotline.demo import COUNTY, REPO_ROOT, prompt_seconds
from stack.sipp import EndedBy, SippCaller
from storage.ticket_store import TicketStore
from tests.integration.county_stack import Phone, county_stack

pytestmark = pytest.mark.integration

BASE_FLOW = (REPO_ROOT / "flows" / "12349.yaml").read_text(encoding="utf-8")
EDITED_FLOW = BASE_FLOW.replace("title: 12349民政服务热线主流程", "title: 12349主流程（热加载测试）")
BAD_FLOW = BASE_FLOW.replace("next: chose_dibao}", "next: chose_dibaoo}")
assert EDITED_FLOW != BASE_FLOW, "flows/12349.yaml changed its title; update this test's edit"
assert BAD_FLOW != BASE_FLOW, "flows/12349.yaml no longer jumps to chose_dibao; update this test's bad edit"
# The node polls once a second and activates an edit after two equal reads.
RELOAD_TIMEOUT_S = 10.0


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def wait_until(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


async def _flow_versions(database: Path) -> list[str | None]:
    async with await TicketStore.open(database, COUNTY["node_id"], COUNTY["region_code"]) as store:
        calls = await store.list_calls(limit=100)
    return [record.flow_version for record in sorted(calls, key=lambda record: record.started_at)]


def test_running_node_follows_edits_and_rollback(tmp_path):
    with county_stack(tmp_path, BASE_FLOW, [Phone("agent1", ("general",))]) as stack:
        asterisk, county, flow_file, config = stack.asterisk, stack.county, stack.flow_file, stack.config
        hang_up_in_menu_ms = int((prompt_seconds("welcome") + 2.0) * 1000)

        def place_call(number: str) -> None:
            caller = SippCaller(target_port=asterisk.sip_port, caller_number=number, steps=(),
                                hangup_after_ms=hang_up_in_menu_ms, wait_bye_timeout_ms=30_000)
            results = caller.run(timeout_s=60)
            assert results and results[0].completed, f"SIPp call from {number} did not complete"

        active_version = stack.active_version

        # 1. The node starts on the file named in its config.
        assert active_version() == sha(BASE_FLOW)
        place_call("13900000011")

        # 2. A saved edit goes live without a restart.
        flow_file.write_text(EDITED_FLOW, encoding="utf-8")
        assert wait_until(lambda: active_version() == sha(EDITED_FLOW), RELOAD_TIMEOUT_S), county.log_tail()
        place_call("13900000012")

        # 3. A rollback from the CLI reaches the running node through the shared store.
        rollback = subprocess.run(
            [sys.executable, "-m", "hotline", "flows", "rollback", "--config", str(config), "--operator", "值班长"],
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60, check=False,
        )
        assert rollback.returncode == 0, rollback.stderr
        assert f"已生效：版本 {sha(BASE_FLOW)[:12]}" in rollback.stdout
        assert wait_until(lambda: '"flow version loaded"' in county.log_path.read_text(encoding="utf-8"),
                          RELOAD_TIMEOUT_S), county.log_tail()
        place_call("13900000013")

        # 4. A bad edit is logged and rejected; the rolled-back version keeps taking calls.
        flow_file.write_text(BAD_FLOW, encoding="utf-8")
        assert wait_until(lambda: '"flow edit rejected"' in county.log_path.read_text(encoding="utf-8"),
                          RELOAD_TIMEOUT_S), county.log_tail()
        place_call("13900000014")

    versions = asyncio.run(_flow_versions(stack.database))
    assert versions == [sha(BASE_FLOW), sha(EDITED_FLOW), sha(BASE_FLOW), sha(BASE_FLOW)]
    assert active_version() == sha(BASE_FLOW)

    rejected = [json.loads(line) for line in county.log_path.read_text(encoding="utf-8").splitlines()
                if '"flow edit rejected"' in line]
    assert len(rejected) == 1
    assert "chose_dibaoo" in rejected[0]["issues"][0]


# Twenty callers wait in the main menu while the edit is saved. They hang up on their own
# well after the node has activated the edit, so each of them spans the reload.
CONCURRENT_CALLS = 20


def test_reload_during_concurrent_calls_drops_none(tmp_path):
    with county_stack(tmp_path, BASE_FLOW, [Phone("agent1", ("general",))]) as stack:
        # Long enough for the calls to outlive the edit's activation by several seconds.
        hold_ms = int((prompt_seconds("welcome") + 10.0) * 1000)
        callers = SippCaller(target_port=stack.asterisk.sip_port, caller_number="13900000021", steps=(),
                             hangup_after_ms=hold_ms, wait_bye_timeout_ms=30_000,
                             calls=CONCURRENT_CALLS, rate_per_s=CONCURRENT_CALLS, max_concurrent=CONCURRENT_CALLS)
        callers.start()
        try:
            # Every call has been offered within a second at this rate; give the dialplan time to reach FastAGI.
            time.sleep(2.0)
            stack.flow_file.write_text(EDITED_FLOW, encoding="utf-8")
            assert wait_until(lambda: stack.active_version() == sha(EDITED_FLOW), RELOAD_TIMEOUT_S), \
                stack.county.log_tail()
            activated_at = time.monotonic()

            results = callers.wait(timeout_s=120)
            finished_at = time.monotonic()
        finally:
            callers.close()

        after = SippCaller(target_port=stack.asterisk.sip_port, caller_number="13900000022", steps=(),
                           hangup_after_ms=int((prompt_seconds("welcome") + 2.0) * 1000),
                           wait_bye_timeout_ms=30_000).run(timeout_s=60)

    # The reload landed while the calls were still up, and each call ended when its caller hung up.
    assert finished_at - activated_at > 2.0
    assert len(results) == CONCURRENT_CALLS
    assert [r.call_id for r in results if not (r.completed and r.ended_by is EndedBy.CALLER)] == []
    assert after and after[0].completed

    versions = asyncio.run(_flow_versions(stack.database))
    assert versions == [sha(BASE_FLOW)] * CONCURRENT_CALLS + [sha(EDITED_FLOW)]
