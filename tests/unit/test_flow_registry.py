"""Flow version store: activation, rejection, rollback, history, crash safety and locking."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path

import pytest
import structlog

import ivr.flow_registry as flow_registry
from ivr.flow import FlowError
from ivr.flow_registry import FlowRegistry, StoreCorrupt, StoreLocked, VersionNotFound
from speech.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
BASE_FLOW = (ROOT / "flows" / "12349.yaml").read_text(encoding="utf-8")
PROMPT_IDS = frozenset(load_catalog(ROOT / "prompts" / "zh-CN.yaml"))


def replaced(text: str, old: str, new: str) -> str:
    """Return ``text`` with ``old`` replaced, failing loudly if the flow no longer contains ``old``."""
    assert old in text, f"flows/12349.yaml no longer contains {old!r}; update this test's edit"
    return text.replace(old, new)


def edited_flow(title: str) -> str:
    """Return the 12349 flow with another title, which is a valid edit with a new hash."""
    return replaced(BASE_FLOW, "title: 12349民政服务热线主流程", f"title: {title}")


# A jump to a node that does not exist: the validator must reject it.
BAD_FLOW = replaced(BASE_FLOW, "next: chose_dibao}", "next: chose_dibaoo}")


class SteppingClock:
    """A UTC clock that advances one minute per reading, from a pinned start."""

    def __init__(self):
        self.now = datetime(2026, 12, 5, 1, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "county.db.flows"


@pytest.fixture
def registry(store: Path) -> FlowRegistry:
    return FlowRegistry(store, prompt_ids=PROMPT_IDS, clock=SteppingClock())


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_store_dir_next_to_database(tmp_path):
    registry = FlowRegistry.for_database(tmp_path / "county.db", prompt_ids=PROMPT_IDS)

    assert registry.store_dir == tmp_path / "county.db.flows"
    assert (tmp_path / "county.db.flows" / "versions").is_dir()


def test_activate_valid_edit(registry, store, tmp_path):
    flow_file = write(tmp_path / "12349.yaml", BASE_FLOW)
    first = registry.activate_from_file(flow_file, operator="王五", reason="首次上线")

    write(flow_file, edited_flow("主流程（春节版）"))
    second = registry.activate_from_file(flow_file)

    assert first.status == "activated"
    assert second.status == "activated"
    assert second.version == sha(edited_flow("主流程（春节版）"))
    assert registry.current().version == second.version
    assert registry.current().title == "主流程（春节版）"
    assert second.activation.previous == first.version
    assert second.activation.seq == 2

    # The store keeps the exact bytes of each version, named by their SHA-256.
    stored = (store / "versions" / f"{first.version}.yaml").read_bytes()
    assert stored == BASE_FLOW.encode()
    metadata = json.loads((store / "versions" / f"{first.version}.json").read_text(encoding="utf-8"))
    assert metadata["version"] == first.version
    assert metadata["source"] == str(flow_file.resolve())
    assert datetime.fromisoformat(metadata["saved_at"]).utcoffset() == timedelta(0)

    pointer = json.loads((store / "active").read_text(encoding="utf-8"))
    assert pointer["version"] == second.version
    assert pointer["seq"] == 2


def test_activation_records_operator_and_reason(registry, tmp_path):
    result = registry.activate_from_file(write(tmp_path / "f.yaml", BASE_FLOW), operator="王五", reason="首次上线")

    record = registry.history()[0]
    assert record == result.activation
    assert record.operator == "王五"
    assert record.reason == "首次上线"
    assert record.action == "activate"
    assert record.activated_at == datetime(2026, 12, 5, 1, 2, tzinfo=UTC)


def test_same_text_is_unchanged(registry, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    registry.activate_from_file(flow_file)

    again = registry.activate_from_file(flow_file)

    assert again.status == "unchanged"
    assert len(registry.history()) == 1


def test_bad_edit_leaves_old_version_active(registry, store, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    good = registry.activate_from_file(flow_file)

    write(flow_file, BAD_FLOW)
    with structlog.testing.capture_logs() as logs:
        bad = registry.activate_from_file(flow_file)

    assert bad.status == "rejected"
    assert not bad.activated
    assert bad.version == sha(BAD_FLOW)
    assert any("跳转目标“chose_dibaoo”不存在" in issue.message for issue in bad.issues)
    assert registry.current().version == good.version
    assert registry.active().version == good.version
    assert FlowRegistry(store, prompt_ids=PROMPT_IDS).current().version == good.version
    assert not (store / "versions" / f"{bad.version}.yaml").exists()

    rejected = [entry for entry in logs if entry["event"] == "flow edit rejected"]
    assert len(rejected) == 1
    assert rejected[0]["log_level"] == "warning"
    assert "chose_dibaoo" in rejected[0]["issues"][0]


def test_missing_prompt_is_rejected(registry, tmp_path):
    text = replaced(BASE_FLOW, "prompt: welcome\n", "prompt: welcome_new_year\n")

    result = registry.activate_from_file(write(tmp_path / "f.yaml", text))

    assert result.status == "rejected"
    assert any("welcome_new_year" in issue.message for issue in result.issues)


def test_rollback_to_previous(registry, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    first = registry.activate_from_file(flow_file)
    write(flow_file, edited_flow("新版"))
    registry.activate_from_file(flow_file)

    result = registry.rollback(operator="李四", reason="新版菜单有误")

    assert result.status == "activated"
    assert result.activation.action == "rollback"
    assert registry.current().version == first.version
    assert registry.active().version == first.version
    assert registry.active().operator == "李四"


def test_rollback_to_hash_prefix(registry, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    first = registry.activate_from_file(flow_file)
    for title in ("二版", "三版"):
        write(flow_file, edited_flow(title))
        registry.activate_from_file(flow_file)

    result = registry.rollback(to=first.version[:8])

    assert result.activation.version == first.version
    assert registry.current().title == "12349民政服务热线主流程"


def test_rollback_errors_in_chinese(registry, tmp_path):
    with pytest.raises(VersionNotFound, match="没有上一个版本"):
        registry.rollback()

    registry.activate_from_file(write(tmp_path / "f.yaml", BASE_FLOW))
    with pytest.raises(VersionNotFound, match="没有上一个版本"):
        registry.rollback()
    with pytest.raises(VersionNotFound, match="没有以“ffff0000”开头"):
        registry.rollback(to="ffff0000")
    with pytest.raises(VersionNotFound, match="至少 4 位十六进制"):
        registry.rollback(to="xyz")


def test_rollback_rejects_version_failing_today(store, tmp_path):
    old = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    first = old.activate_from_file(flow_file)
    write(flow_file, edited_flow("二版"))
    old.activate_from_file(flow_file)

    # The catalog lost the welcome prompt since the first version was stored.
    registry = FlowRegistry(store, prompt_ids=PROMPT_IDS - {"welcome"})
    result = registry.rollback(to=first.version)

    assert result.status == "rejected"
    assert any("welcome" in issue.message for issue in result.issues)
    assert registry.active().version != first.version


def test_rollback_detects_tampered_version(registry, store, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    first = registry.activate_from_file(flow_file)
    write(flow_file, edited_flow("二版"))
    registry.activate_from_file(flow_file)
    (store / "versions" / f"{first.version}.yaml").write_text(edited_flow("手工改过"), encoding="utf-8")

    with pytest.raises(StoreCorrupt, match="与文件名中的哈希不符"):
        registry.rollback()


def test_history_order(registry, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    versions = []
    for title in ("一版", "二版", "三版"):
        write(flow_file, edited_flow(title))
        versions.append(registry.activate_from_file(flow_file).version)
    registry.rollback(to=versions[0])

    history = registry.history()

    assert [record.seq for record in history] == [1, 2, 3, 4]
    assert [record.version for record in history] == [*versions, versions[0]]
    assert [record.action for record in history] == ["activate", "activate", "activate", "rollback"]
    assert [record.previous for record in history] == [None, versions[0], versions[1], versions[2]]
    times = [record.activated_at for record in history]
    assert times == sorted(times)
    assert [item.version for item in registry.versions()] == versions


def test_crash_between_temp_write_and_replace(registry, store, tmp_path, monkeypatch):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    first = registry.activate_from_file(flow_file)
    write(flow_file, edited_flow("二版"))

    real_replace = os.replace

    def crash_on_pointer(source, target):
        if Path(target).name == "active":
            raise OSError(5, "simulated crash before the pointer rename")
        real_replace(source, target)

    monkeypatch.setattr(flow_registry.os, "replace", crash_on_pointer)
    with pytest.raises(OSError, match="simulated crash"):
        registry.activate_from_file(flow_file)
    monkeypatch.setattr(flow_registry.os, "replace", real_replace)

    # The temporary pointer was written in full, but the old pointer is still the one in force.
    leftovers = list(store.glob("active.tmp-*"))
    assert len(leftovers) == 1
    reopened = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    assert reopened.active().version == first.version
    assert reopened.current().version == first.version
    assert [record.seq for record in reopened.history()] == [1]

    # The next writer removes the leftover and reuses the uncommitted sequence number.
    result = reopened.activate_from_file(flow_file)
    assert result.activation.seq == 2
    assert list(store.glob("*.tmp-*")) == []
    assert [record.version for record in reopened.history()] == [first.version, result.version]


def test_corrupt_pointer_repaired_by_rollback(registry, store, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    first = registry.activate_from_file(flow_file)
    write(flow_file, edited_flow("二版"))
    registry.activate_from_file(flow_file)
    (store / "active").write_text("{not json", encoding="utf-8")

    with pytest.raises(StoreCorrupt, match="已损坏"):
        registry.active()
    result = registry.rollback(to=first.version[:12])

    assert result.status == "activated"
    assert result.activation.seq == 3
    assert registry.active().version == first.version
    assert [record.seq for record in registry.history()] == [1, 2, 3]


def _activate_many(store: str, worker: int, rounds: int) -> list[str]:
    registry = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    statuses = []
    for round_number in range(rounds):
        text = edited_flow(f"进程{worker}第{round_number}版")
        statuses.append(registry.activate_bytes(text.encode(), source=f"worker-{worker}").status)
    return statuses


def test_concurrent_activations_keep_store_consistent(store):
    FlowRegistry(store, prompt_ids=PROMPT_IDS)
    workers, rounds = 3, 8

    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("fork")) as pool:
        results = list(pool.map(_activate_many, [str(store)] * workers, range(workers), [rounds] * workers))

    assert all(status == "activated" for statuses in results for status in statuses)
    registry = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    history = registry.history()
    assert [record.seq for record in history] == list(range(1, workers * rounds + 1))
    # Each activation saw the one committed before it: no writer read a stale pointer.
    for earlier, later in zip(history, history[1:]):
        assert later.previous == earlier.version
    assert registry.active() == history[-1]
    assert len(registry.versions()) == workers * rounds
    for record in history:
        assert registry.load_version(record.version).version == record.version
    assert list(store.rglob("*.tmp-*")) == []


def test_lock_held_too_long(store, tmp_path):
    registry = FlowRegistry(store, prompt_ids=PROMPT_IDS, lock_timeout_s=0.2)
    fd = os.open(store / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(StoreLocked, match="被其他进程占用"):
            registry.activate_from_file(write(tmp_path / "f.yaml", BASE_FLOW))
    finally:
        os.close(fd)
    assert registry.active() is None


def test_refresh_follows_other_process(store, tmp_path):
    node = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    cli = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    node.activate_from_file(flow_file)
    write(flow_file, edited_flow("二版"))

    cli.activate_from_file(flow_file)

    assert node.current().title == "12349民政服务热线主流程"
    assert node.refresh() is True
    assert node.current().title == "二版"
    assert node.refresh() is False


def test_start_activates_file(registry, tmp_path):
    flow = registry.start_from_file(write(tmp_path / "f.yaml", BASE_FLOW))

    assert flow.version == sha(BASE_FLOW)
    assert registry.active().version == flow.version


def test_start_keeps_rollback_when_file_unchanged(store, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    before = FlowRegistry(store, prompt_ids=PROMPT_IDS)
    first = before.start_from_file(flow_file)
    write(flow_file, edited_flow("二版"))
    before.activate_from_file(flow_file)
    before.rollback()

    after_restart = FlowRegistry(store, prompt_ids=PROMPT_IDS).start_from_file(flow_file)

    assert after_restart.version == first.version


def test_start_activates_file_edited_while_down(store, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    FlowRegistry(store, prompt_ids=PROMPT_IDS).start_from_file(flow_file)
    write(flow_file, edited_flow("停机时改的"))

    flow = FlowRegistry(store, prompt_ids=PROMPT_IDS).start_from_file(flow_file)

    assert flow.title == "停机时改的"


def test_start_with_bad_file_runs_last_active(store, tmp_path):
    flow_file = write(tmp_path / "f.yaml", BASE_FLOW)
    good = FlowRegistry(store, prompt_ids=PROMPT_IDS).start_from_file(flow_file)
    write(flow_file, BAD_FLOW)

    with structlog.testing.capture_logs() as logs:
        flow = FlowRegistry(store, prompt_ids=PROMPT_IDS).start_from_file(flow_file)

    assert flow.version == good.version
    assert any(entry["event"] == "flow file rejected at start; running the last active version" for entry in logs)


def test_start_with_bad_file_and_empty_store_fails(registry, tmp_path):
    with pytest.raises(FlowError) as raised:
        registry.start_from_file(write(tmp_path / "f.yaml", BAD_FLOW))

    assert any("chose_dibaoo" in issue.message for issue in raised.value.issues)
    assert registry.active() is None
