"""Flow runner: a read-back is a sequence of fragments that a confirm or retry key can cut short."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from acd.pool import AgentPool, AgentProfile, DeviceState
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow import load_flow
from ivr.ports import PlaybackResult
from speech.catalog import load_catalog
from tests.fakes.call_port import ScriptedCaller

ROOT = Path(__file__).resolve().parents[2]
FLOW = load_flow(ROOT / "tests" / "flows_valid" / "every_node.yaml",
                 prompt_ids=set(load_catalog(ROOT / "prompts" / "zh-CN.yaml")))

# 2026-12-07 is a Monday; 02:00 UTC is 10:00 in Asia/Shanghai.
MONDAY_10 = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)
# A synthetic resident ID number with a valid check character.
ID_NUMBER = "33010619600101105X"


@dataclass
class KeyDuringPlayback(ScriptedCaller):
    """Presses ``key`` while the ``at_play``-th prompt of the call is playing, if that prompt allows it."""

    key: str = ""
    at_play: int = 0
    interrupt_keys_seen: list[str] | None = None

    async def play_prompt(self, prompt_id: str, *, interrupt_keys: str = "") -> PlaybackResult:
        result = await super().play_prompt(prompt_id, interrupt_keys=interrupt_keys)
        if self.interrupt_keys_seen is not None and prompt_id.startswith("digit_"):
            self.interrupt_keys_seen.append(interrupt_keys)
        if len(self.played) == self.at_play and self.key in interrupt_keys:
            return PlaybackResult(played=True, digit=self.key)
        return result


class NoClock:
    def __call__(self) -> float:
        return 1000.0


async def _run(port: ScriptedCaller):
    pool = AgentPool([AgentProfile("agent1", "agent1", "agent1", frozenset({"general", "dibao"}))])
    await pool.device_state_changed("agent1", DeviceState.NOT_IN_USE)

    runner = FlowRunner(pool, _NoHooks(), wall_clock=lambda: MONDAY_10, clock=NoClock())
    call = Call(call_id="1700000000.9", caller=CallerId.from_raw("13900000001"), dialed="12349", channel="PJSIP/x-9",
                started_at=MONDAY_10, route="ivr/12349")
    return await runner.run(FLOW, call, port)


class _NoHooks:
    async def category_chosen(self, session): ...

    async def agent_answered(self, session): ...

    async def emergency_raised(self, session): ...

    async def message_recorded(self, session): ...

    async def callback_requested(self, session): ...

    async def survey_answered(self, session): ...

    async def overflow_dialling(self, session): ...

    async def overflow_escalated(self, session):
        return True


async def test_confirm_key_during_read_back_skips_confirm_prompt():
    """Pressing 1 on the fifth digit accepts the entry without playing readback_confirm."""
    typed = ID_NUMBER.replace("X", "*")
    probe = KeyDuringPlayback(keys=["4", "1", typed, "1", None])
    await _run(probe)
    start = probe.played.index("readback_intro")

    port = KeyDuringPlayback(keys=["4", "1", typed, None], key="1", at_play=start + 1 + 5, interrupt_keys_seen=[])
    session = await _run(port)

    assert session.collected == {"id_number": ID_NUMBER}
    assert "readback_confirm" not in port.played
    assert len([prompt for prompt in port.played if prompt.startswith("digit_")]) == 5
    assert set(port.interrupt_keys_seen) == {"12"}


async def test_retry_key_during_read_back_asks_again():
    """Pressing 2 during the read-back drops the entry and asks for the number again."""
    typed = ID_NUMBER.replace("X", "*")
    probe = KeyDuringPlayback(keys=["4", "1", typed, "1", None])
    await _run(probe)
    start = probe.played.index("readback_intro")

    port = KeyDuringPlayback(keys=["4", "1", typed, typed, "1", None], key="2", at_play=start + 3)
    session = await _run(port)

    assert session.collected == {"id_number": ID_NUMBER}
    assert port.played.count("id_number_entry") == 2
    assert port.played.count("readback_intro") == 2
