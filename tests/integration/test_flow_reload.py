"""Hot reload on a running county node: a saved edit, a CLI rollback and a bad edit, seen by real calls.

A `hotline run` county process takes SIPp calls through Asterisk 22 while the test edits its
flow file and runs `hotline flows rollback`. Each call record names the flow version the call
ran, so the records show which version was live when each call arrived.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hotline.demo import COUNTY, PROMPT_AUDIO_DIR, REPO_ROOT, _NodeProcess, prompt_seconds
from ivr.flow_registry import FlowRegistry
from speech.catalog import load_catalog
from stack import net
from stack.asterisk import AgentEndpoint, AsteriskInstance, ensure_root
from stack.mosquitto import MosquittoBroker
from stack.sipp import SippCaller
from storage.ticket_store import TicketStore

pytestmark = pytest.mark.integration

BASE_FLOW = (REPO_ROOT / "flows" / "12349.yaml").read_text(encoding="utf-8")
EDITED_FLOW = BASE_FLOW.replace("title: 12349民政服务热线主流程", "title: 12349主流程（热加载测试）")
BAD_FLOW = BASE_FLOW.replace("next: chose_dibao}", "next: chose_dibaoo}")
assert EDITED_FLOW != BASE_FLOW, "flows/12349.yaml changed its title; update this test's edit"
assert BAD_FLOW != BASE_FLOW, "flows/12349.yaml no longer jumps to chose_dibao; update this test's bad edit"
PROMPT_IDS = frozenset(load_catalog(REPO_ROOT / "prompts" / "zh-CN.yaml"))
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
    root = ensure_root()
    flow_file = tmp_path / "12349.yaml"
    flow_file.write_text(BASE_FLOW, encoding="utf-8")
    database = tmp_path / "county.sqlite3"

    broker = MosquittoBroker(port=0, work_dir=tmp_path / "broker")
    broker.start()
    password = secrets.token_urlsafe(12)
    fastagi_port = net.free_port()
    asterisk = AsteriskInstance.with_free_ports(
        f"reload{os.getpid()}", root=root, fastagi_port=fastagi_port,
        agents=[AgentEndpoint("agent1", "agent1", password)],
        prompt_dir=PROMPT_AUDIO_DIR, fallback_prompt_id="system_error", test_extensions=False,
    )
    county = None
    try:
        asterisk.start()
        secret_file = tmp_path / "ami-secret"
        secret_file.write_text(asterisk.ami.secret, encoding="utf-8")
        roster = tmp_path / "roster.yaml"
        roster.write_text("- {id: agent1, name: 坐席一, endpoint: agent1, skills: [general]}\n", encoding="utf-8")
        config = tmp_path / "county.yaml"
        config.write_text(f"""\
node_id: {COUNTY['node_id']}
tier: county
region_code: "{COUNTY['region_code']}"
database: {database}
parent:
  node_id: city-test
  broker: {{port: {broker.port}}}
telephony:
  fastagi: {{port: {fastagi_port}}}
  ami: {{port: {asterisk.ami.port}, username: {asterisk.ami.username}, secret_file: {secret_file}}}
  flow: {flow_file}
  prompt_catalog: {REPO_ROOT / 'prompts' / 'zh-CN.yaml'}
  prompt_sound_dir: {asterisk.instance_dir / 'sounds'}
  roster: {roster}
""", encoding="utf-8")
        county = _NodeProcess("county", config, tmp_path)
        county.start()
        store = FlowRegistry.for_database(database, prompt_ids=PROMPT_IDS)
        hang_up_in_menu_ms = int((prompt_seconds("welcome") + 2.0) * 1000)

        def place_call(number: str) -> None:
            caller = SippCaller(target_port=asterisk.sip_port, caller_number=number, steps=(),
                                hangup_after_ms=hang_up_in_menu_ms, wait_bye_timeout_ms=30_000)
            results = caller.run(timeout_s=60)
            assert results and results[0].completed, f"SIPp call from {number} did not complete"

        def active_version() -> str | None:
            active = store.active()
            return active.version if active else None

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
            capture_output=True, text=True, cwd=REPO_ROOT, timeout=60,
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
    finally:
        if county is not None:
            county.stop()
        asterisk.stop(remove_files=True)
        broker.stop()
        broker.cleanup()

    versions = asyncio.run(_flow_versions(database))
    assert versions == [sha(BASE_FLOW), sha(EDITED_FLOW), sha(BASE_FLOW), sha(BASE_FLOW)]
    assert active_version() == sha(BASE_FLOW)

    rejected = [json.loads(line) for line in county.log_path.read_text(encoding="utf-8").splitlines()
                if '"flow edit rejected"' in line]
    assert len(rejected) == 1
    assert "chose_dibaoo" in rejected[0]["issues"][0]
