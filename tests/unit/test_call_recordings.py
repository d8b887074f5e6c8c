"""Recorded agent calls: the queue starts MixMonitor, the desk attaches the file, the purge enforces retention."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from acd.pool import AgentPool, AgentProfile, DeviceState
from hotline.cli import main
from hotline.recordings import purge_recordings
from hotline.ticket_desk import TicketDesk
from ivr.call import Call, CallerId
from ivr.engine import CallSession, FlowRunner
from ivr.ports import DialStatus
from storage import TicketStore
from ivr.flow import FlowError, parse_flow
from tests.unit.test_queue_experience import CATALOG, FLOW_TEMPLATE, Hooks, QueueCaller, _call
from tickets.call_record import CallOutcome

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


class RecordingCaller(QueueCaller):
    async def start_call_recording(self, name: str) -> str:
        self._check()
        self.actions.append(f"record:{name}")
        return f"hotline-calls/{name}.wav"


def _recorded_flow():
    extra = "    recording_notice: call_recording_notice\n    retry_prompt: agent_failed"
    return parse_flow(FLOW_TEMPLATE.format(extra=extra).encode(), source="queue.yaml", prompt_ids=CATALOG)


async def test_queue_plays_notice_and_records_once():
    pool = AgentPool([AgentProfile(a, a, a, frozenset({"dibao"})) for a in ("a1", "a2")])
    for agent_id in ("a1", "a2"):
        await pool.device_state_changed(agent_id, DeviceState.NOT_IN_USE)
    caller = RecordingCaller(keys=[], dial_results={"a1": [DialStatus.NO_ANSWER]})

    session = await FlowRunner(pool, Hooks()).run(_recorded_flow(), _call(), caller)

    assert session.outcome is CallOutcome.ANSWERED
    assert session.call_recording_file == "hotline-calls/call-1700000000.7.wav"
    assert caller.actions[:2] == ["play:transfer_agent", "play:call_recording_notice"]
    # One recording for the whole call, started before the first dial; a retry keeps it.
    assert [a for a in caller.actions if a.startswith(("record:", "dial:"))] == [
        "record:call-1700000000.7", "dial:a1", "dial:a2",
    ]


def test_notice_prompt_checked_against_catalog():
    with pytest.raises(FlowError):
        parse_flow(FLOW_TEMPLATE.format(extra="    recording_notice: no_such_notice").encode(),
                   source="queue.yaml", prompt_ids=CATALOG)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TicketStore]:
    async with await TicketStore.open(tmp_path / "county.db", "county-330106", "330106") as opened:
        yield opened


def _answered_session(recording: str | None) -> CallSession:
    call = Call(call_id="1700000000.8", caller=CallerId.from_raw("13900000008"), dialed="12349",
                channel="PJSIP/x-8", started_at=datetime(2026, 12, 7, 2, 0, tzinfo=UTC), route="ivr/12349")
    session = CallSession(call=call, flow_id="12349", flow_version="v1", path=["queue"])
    session.outcome = CallOutcome.ANSWERED
    session.agent_id = "a1"
    session.call_recording_file = recording
    session.ended_at = datetime(2026, 12, 7, 2, 5, tzinfo=UTC)
    return session


async def test_desk_attaches_recording_by_hash(store: TicketStore, tmp_path: Path):
    monitor = tmp_path / "monitor"
    (monitor / "hotline-calls").mkdir(parents=True)
    audio = b"RIFF-synthetic-recording" + bytes(200)
    (monitor / "hotline-calls" / "call-1.wav").write_bytes(audio)
    desk = TicketDesk(store, call_recordings_dir=monitor)
    session = _answered_session("hotline-calls/call-1.wav")
    await desk.agent_answered(session)

    await desk.finish_call(session)

    events = await store.list_events(session.ticket_id)
    attached = [event for event in events if event.kind == "attachment_added"]
    assert len(attached) == 1
    digest = hashlib.sha256(audio).hexdigest()
    assert attached[0].payload["attachment_id"] == digest
    assert attached[0].payload["media_type"] == "audio/wav"
    assert attached[0].note == "通话录音"
    assert (await store.attachment_path(digest)).read_bytes() == audio


async def test_desk_marks_recording_without_audio(store: TicketStore, tmp_path: Path):
    monitor = tmp_path / "monitor"
    (monitor / "hotline-calls").mkdir(parents=True)
    (monitor / "hotline-calls" / "call-1.wav").write_bytes(b"RIFF" + bytes(40))
    desk = TicketDesk(store, call_recordings_dir=monitor)
    session = _answered_session("hotline-calls/call-1.wav")
    await desk.agent_answered(session)

    await desk.finish_call(session)

    events = await store.list_events(session.ticket_id)
    attached = [event for event in events if event.kind == "attachment_added"]
    assert attached[0].note.startswith("通话录音（无声音")


async def test_desk_logs_missing_recording(store: TicketStore, tmp_path: Path, monkeypatch):
    monkeypatch.setattr("hotline.ticket_desk.CALL_RECORDING_WAIT_STEP_S", 0.001)
    desk = TicketDesk(store, call_recordings_dir=tmp_path)
    session = _answered_session("hotline-calls/missing.wav")
    await desk.agent_answered(session)

    await desk.finish_call(session)

    kinds = [event.kind for event in await store.list_events(session.ticket_id)]
    assert "attachment_added" not in kinds
    assert "call_ended" in kinds


async def test_desk_without_folder_attaches_nothing(store: TicketStore):
    desk = TicketDesk(store)
    session = _answered_session("hotline-calls/call-1.wav")
    await desk.agent_answered(session)

    await desk.finish_call(session)

    kinds = [event.kind for event in await store.list_events(session.ticket_id)]
    assert "attachment_added" not in kinds


def _recording(folder: Path, name: str, age_days: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * 100)
    stamp = (NOW - timedelta(days=age_days)).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_purge_deletes_only_expired(tmp_path: Path):
    old = _recording(tmp_path, "hotline-calls/old.wav", 31)
    fresh = _recording(tmp_path, "hotline-calls/fresh.wav", 29)
    other = _recording(tmp_path, "notes.txt", 400)

    result = purge_recordings(tmp_path, retention_days=30, now=NOW)

    assert result.deleted == (old,)
    assert result.kept == 1
    assert result.freed_bytes == 100
    assert not old.exists()
    assert fresh.exists()
    assert other.exists()


def test_purge_dry_run_keeps_files(tmp_path: Path):
    old = _recording(tmp_path, "old.wav", 100)

    result = purge_recordings(tmp_path, retention_days=30, now=NOW, dry_run=True)

    assert result.deleted == (old,)
    assert old.exists()


@pytest.mark.parametrize("days", [0, 3661])
def test_purge_rejects_bad_retention(tmp_path: Path, days: int):
    with pytest.raises(ValueError, match="录音保存天数"):
        purge_recordings(tmp_path, retention_days=days, now=NOW)


def test_purge_rejects_missing_folder(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        purge_recordings(tmp_path / "absent", retention_days=30, now=NOW)


def test_purge_command_reports_in_chinese(tmp_path: Path):
    # The command judges ages by the real clock: one file ten thousand days old, one just written.
    old = _recording(tmp_path, "old.wav", 10_000)
    (tmp_path / "new.wav").write_bytes(b"x")

    result = CliRunner().invoke(main, ["recordings", "purge", "--dir", str(tmp_path), "--retention-days", "180"])

    assert result.exit_code == 0, result.output
    assert f"已删除：{old}" in result.output
    assert "已删除 1 个超过 180 天的录音" in result.output
    assert "保留 1 个" in result.output
    assert not old.exists()


def test_purge_command_missing_folder(tmp_path: Path):
    result = CliRunner().invoke(main, ["recordings", "purge", "--dir", str(tmp_path / "absent"),
                                       "--retention-days", "30"])

    assert result.exit_code != 0
    assert "录音目录" in result.output
    assert "--dir" in result.output


def test_purge_command_reads_node_config(tmp_path: Path):
    """Without --dir and --retention-days the folder and the period come from the node's telephony section."""
    folder = tmp_path / "monitor"
    folder.mkdir()
    old = _recording(folder, "old.wav", 10_000)
    for name in ("flow.yaml", "catalog.yaml", "roster.yaml", "ami-secret"):
        (tmp_path / name).write_text("", encoding="utf-8")
    config = tmp_path / "county.yaml"
    config.write_text(f"""\
node_id: county-330106
tier: county
region_code: "330106"
database: {tmp_path / 'county.sqlite3'}
parent: {{node_id: city-330100, broker: {{port: 1883}}}}
telephony:
  fastagi: {{port: 4573}}
  ami: {{port: 5038, username: hotline, secret_file: {tmp_path / 'ami-secret'}}}
  flow: {tmp_path / 'flow.yaml'}
  prompt_catalog: {tmp_path / 'catalog.yaml'}
  prompt_sound_dir: /var/lib/sounds
  roster: {tmp_path / 'roster.yaml'}
  call_recordings_dir: {folder}
  recording_retention_days: 90
""", encoding="utf-8")

    result = CliRunner().invoke(main, ["recordings", "purge", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "已删除 1 个超过 90 天的录音" in result.output
    assert not old.exists()


def test_purge_command_without_folder_names_the_fix():
    result = CliRunner().invoke(main, ["recordings", "purge", "--retention-days", "30"])

    assert result.exit_code != 0
    assert "telephony.call_recordings_dir" in result.output
