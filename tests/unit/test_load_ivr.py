"""Unit tests of the load benchmark's helpers and of the AGI round-trip observer it installs."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

# The benchmark scripts are standalone programs, not a package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import load_ivr

from hwd_bridge.agi_channel import AgiChannel, set_round_trip_observer
from stack.sipp import EndedBy, parse_caller_log

KEY_AT_MS = 2000
NORMAL_MS = int(load_ivr.expected_duration_ms(KEY_AT_MS))
LOST_KEY_MS = NORMAL_MS + 5000


def call_lines(call_id: str, start: int, duration_ms: int | None, *, end: str = "by=remote cause=16 reason=") -> list[str]:
    lines = [f"START {call_id} t={start}", f"ANSWERED {call_id} t={start + 20}"]
    if duration_ms is not None:
        lines.append(f"END {call_id} {end} t={start + 20 + duration_ms}")
    return lines


class TestClassifyCalls:
    def test_normal_calls_pass(self) -> None:
        log = call_lines("a", 0, NORMAL_MS) + call_lines("b", 100, NORMAL_MS)

        calls, failures, peak, mean = load_ivr.classify_calls("\n".join(log), KEY_AT_MS)

        assert calls == 2
        assert failures == {}
        assert peak == 2
        assert mean == pytest.approx(NORMAL_MS / 1000)

    def test_failure_reasons(self) -> None:
        log = (
            ["START n t=0"]
            + call_lines("open", 0, None)
            + call_lines("caller", 0, 15_000, end="by=caller cause=")
            + call_lines("fallback", 0, 3000, end="by=remote cause=41 reason=")
            + call_lines("lost", 0, LOST_KEY_MS)
        )

        calls, failures, _, _ = load_ivr.classify_calls("\n".join(log), KEY_AT_MS)

        assert calls == 5
        assert failures["not_answered"] == 1
        assert failures["not_ended"] == 1
        assert failures["no_bye_from_asterisk"] == 1
        assert failures["fallback"] == 1
        assert failures["late_or_key_lost"] == 1

    def test_peak_counts_overlap_only(self) -> None:
        log = call_lines("a", 0, 1000) + call_lines("b", 5000, 1000) + call_lines("c", 5500, 1000)

        _, _, peak, _ = load_ivr.classify_calls("\n".join(log), KEY_AT_MS)

        assert peak == 2


def test_scenario_stamps_every_log_line(tmp_path: Path) -> None:
    scenario = load_ivr.caller_scenario(KEY_AT_MS, tmp_path)

    assert scenario.count("t=[clock_tick]") == 4
    assert (tmp_path / "press0.pcap").exists()


def test_stamped_lines_still_parse() -> None:
    log = call_lines("a", 0, NORMAL_MS, end="by=remote cause=16 reason=Q.850;cause=16")

    results = parse_caller_log("\n".join(log))

    assert len(results) == 1
    assert results[0].answered
    assert results[0].ended_by is EndedBy.REMOTE
    assert results[0].cause == 16


def test_profile_summary_shares(tmp_path: Path) -> None:
    raw = tmp_path / "py-spy.raw"
    root = load_ivr.REPO_ROOT
    raw.write_text(
        f"main (load_controller.py:1);_run_call ({root}/hwd_bridge/fastagi_server.py:10);"
        f"parse_reply_line ({root}/hwd_bridge/agi_protocol.py:5) 3\n"
        f"main (load_controller.py:1);_parse_block ({root}/hwd_bridge/ami_protocol.py:7) 1\n",
        encoding="utf-8",
    )

    summary = load_ivr.summarise_profile(raw)

    assert summary["own"][0] == ("parse_reply_line (hwd_bridge/agi_protocol.py)", 75.0)
    assert ("_run_call (hwd_bridge/fastagi_server.py)", 75.0) in summary["total"]
    assert all("load_controller" not in name for name, _ in summary["total"])


async def test_round_trip_observer_gets_each_reply() -> None:
    ours, theirs = socket.socketpair()
    reader, writer = await asyncio.open_connection(sock=ours)
    peer_reader, peer_writer = await asyncio.open_connection(sock=theirs)
    channel = AgiChannel(reader, writer, call_id="1700000000.1", command_timeout_s=2.0)
    seen: list[tuple[str, float]] = []

    async def asterisk_replies(count: int) -> None:
        for _ in range(count):
            await peer_reader.readline()
            peer_writer.write(b"200 result=1 (on)\n")
            await peer_writer.drain()

    set_round_trip_observer(lambda command, seconds: seen.append((command, seconds)))
    try:
        await asyncio.gather(channel.get_variable("CHOICE"), asterisk_replies(1))
    finally:
        set_round_trip_observer(None)
    await asyncio.gather(channel.get_variable("CHOICE"), asterisk_replies(1))

    assert len(seen) == 1
    assert seen[0][0] == "GET VARIABLE"
    assert 0 <= seen[0][1] < 2.0

    writer.close()
    peer_writer.close()
