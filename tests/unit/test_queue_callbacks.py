"""Queue callbacks: a kept place is served in queue order, the agent rings first, outcomes are recorded."""

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import pytest
import structlog

from acd.pool import AcdSettings, AgentPool, AgentProfile, AgentState, DeviceState, ReleaseOutcome
from hotline.queue_callbacks import CallbackResult, CallbackSettings, KeptPlace, QueueCallbackDialer
from ivr.call import Call, CallerId
from ivr.engine import CallSession, QueuePlace
from storage.errors import StorageError

NUMBER = "13900000061"


class Originator:
    """Records each callback and returns scripted results."""

    def __init__(self, *results: CallbackResult):
        self.results = list(results)
        self.calls: list[tuple[str, str, str]] = []

    async def call_back(self, agent_endpoint, number, *, call_id, ring_timeout_s):
        self.calls.append((agent_endpoint, number, call_id))
        await asyncio.sleep(0)
        return self.results.pop(0) if self.results else CallbackResult.CONNECTED


class Recorder:
    def __init__(self):
        self.outcomes: list[dict[str, object]] = []

    async def __call__(self, session, payload):
        self.outcomes.append(payload)


def _session(call_id: str, waiting_since: float, number: str | None = NUMBER) -> CallSession:
    call = Call(call_id=call_id, caller=CallerId.from_raw(number or "anonymous"), dialed="12349",
                channel="PJSIP/caller-1", started_at=datetime(2026, 12, 5, 2, 0, tzinfo=UTC), route="ivr/12349")
    session = CallSession(call=call, flow_id="f", flow_version="v")
    session.callback_number = number
    session.queue_place = QueuePlace(skill="dibao", waiting_since=waiting_since, priority=0, needs=frozenset(),
                                     preferred_agent=None)
    return session


async def _pool() -> AgentPool:
    pool = AgentPool([AgentProfile("a1", "a1", "a1", frozenset({"dibao"}))], settings=AcdSettings(wrap_up_s=0))
    await pool.device_state_changed("a1", DeviceState.NOT_IN_USE)
    return pool


async def test_kept_place_called_back_when_agent_free():
    pool = await _pool()
    originator, recorder = Originator(), Recorder()
    dialer = QueueCallbackDialer(pool, originator, recorder)

    task = dialer.keep(_session("c1", waiting_since=0.0))
    result = await task

    assert result is CallbackResult.CONNECTED
    assert originator.calls == [("a1", NUMBER, "c1")]
    assert recorder.outcomes == [{"call_id": "c1", "result": "connected", "agent_id": "a1",
                                  "number_masked": "139****0061"}]
    assert pool.agent_state("a1") is AgentState.AVAILABLE
    assert pool.waiting_calls() == []


async def test_kept_place_goes_before_later_caller():
    pool = await _pool()
    busy = await pool.reserve("talking", "dibao", timeout_s=1)
    originator = Originator()
    dialer = QueueCallbackDialer(pool, originator, Recorder())

    # A live caller queued after the callback caller's original arrival.
    later = asyncio.ensure_future(pool.reserve("later", "dibao", timeout_s=5))
    await asyncio.sleep(0)
    task = dialer.keep(_session("early", waiting_since=time.monotonic() - 300))
    await asyncio.sleep(0)
    assert [call.call_id for call in pool.waiting_calls()] == ["early-callback", "later"]

    await pool.release(busy, reason="test", outcome=ReleaseOutcome.ANSWERED)
    assert await task is CallbackResult.CONNECTED
    assert originator.calls[0][2] == "early"
    # The agent is free again after the callback, so the later caller gets it next.
    reservation = await later
    assert reservation is not None
    assert reservation.agent_id == "a1"


async def test_agent_no_answer_pauses_agent():
    pool = await _pool()
    recorder = Recorder()
    dialer = QueueCallbackDialer(pool, Originator(CallbackResult.AGENT_NO_ANSWER), recorder)

    assert await dialer.keep(_session("c1", waiting_since=0.0)) is CallbackResult.AGENT_NO_ANSWER
    assert recorder.outcomes[0]["result"] == "agent_no_answer"
    assert pool.agent_state("a1") is AgentState.PAUSED


async def test_place_expires_without_agent():
    pool = AgentPool([AgentProfile("a1", "a1", "a1", frozenset({"linshi"}))])
    recorder = Recorder()
    dialer = QueueCallbackDialer(pool, Originator(), recorder, settings=CallbackSettings(max_keep_s=0.05))

    assert await dialer.keep(_session("c1", waiting_since=0.0)) is CallbackResult.EXPIRED
    assert recorder.outcomes[0]["result"] == "expired"
    assert recorder.outcomes[0]["agent_id"] is None
    assert pool.waiting_calls() == []


async def test_session_without_place_is_not_kept():
    dialer = QueueCallbackDialer(await _pool(), Originator(), Recorder())
    session = _session("c1", waiting_since=0.0)
    session.queue_place = None

    assert dialer.keep(session) is None
    assert dialer.keep(_session("c2", waiting_since=0.0, number=None)) is None


async def test_stop_cancels_kept_places():
    pool = AgentPool([AgentProfile("a1", "a1", "a1", frozenset({"dibao"}))])
    await pool.set_paused("a1", True)
    dialer = QueueCallbackDialer(pool, Originator(), Recorder())
    dialer.keep(_session("c1", waiting_since=0.0))
    await asyncio.sleep(0)
    assert dialer.pending == 1

    await dialer.stop()

    assert dialer.pending == 0
    assert pool.waiting_calls() == []


def test_originator_rejects_bad_trunk():
    from hotline.queue_callbacks import AmiCallbackOriginator

    class NoAmi:
        def subscribe(self, handler, event_names=None):
            return None

    with pytest.raises(ValueError, match="trunk"):
        AmiCallbackOriginator(NoAmi(), "bad trunk,x")


# --- stored places ------------------------------------------------------------------------

NOW = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)


class Places:
    """An in-memory KeptPlaceStore that records every save and removal."""

    def __init__(self, *, fail_save: bool = False):
        self.saved: dict[str, KeptPlace] = {}
        self.log: list[tuple[str, str]] = []
        self.fail_save = fail_save

    async def save_kept_place(self, kept_place):
        if self.fail_save:
            raise StorageError("disk I/O error")
        self.saved[kept_place.call_id] = kept_place
        self.log.append(("save", kept_place.call_id))

    async def forget_kept_place(self, call_id):
        self.saved.pop(call_id, None)
        self.log.append(("forget", call_id))


def _kept(call_id: str, *, queued_s_ago: float, expires_in_s: float = 3600.0) -> KeptPlace:
    return KeptPlace(call_id=call_id, ticket_id=f"T-{call_id}", number=NUMBER, skill="dibao", priority=0,
                     needs=frozenset(), preferred_agent=None, queued_at=NOW - timedelta(seconds=queued_s_ago),
                     expires_at=NOW + timedelta(seconds=expires_in_s))


async def test_place_stored_then_removed_before_dial():
    pool = await _pool()
    places = Places()
    seen_at_dial: list[dict[str, KeptPlace]] = []

    class CheckingOriginator(Originator):
        async def call_back(self, agent_endpoint, number, *, call_id, ring_timeout_s):
            seen_at_dial.append(dict(places.saved))
            return await super().call_back(agent_endpoint, number, call_id=call_id, ring_timeout_s=ring_timeout_s)

    dialer = QueueCallbackDialer(pool, CheckingOriginator(), Recorder(), places=places, wall_clock=lambda: NOW)
    session = _session("c1", waiting_since=time.monotonic() - 120)
    session.ticket_id = "T-c1"

    assert await dialer.keep(session) is CallbackResult.CONNECTED
    assert places.log[0] == ("save", "c1")
    assert seen_at_dial == [{}]
    assert places.saved == {}


async def test_stored_place_has_queue_times():
    pool = AgentPool([AgentProfile("a1", "a1", "a1", frozenset({"linshi"}))])
    places = Places()
    dialer = QueueCallbackDialer(pool, Originator(), Recorder(), places=places, wall_clock=lambda: NOW,
                                 settings=CallbackSettings(max_keep_s=600))
    session = _session("c1", waiting_since=time.monotonic() - 120)
    session.ticket_id = "T-c1"
    session.queue_place = QueuePlace(skill="dibao", waiting_since=session.queue_place.waiting_since, priority=3,
                                     needs=frozenset({"slow_speech"}), preferred_agent="a1")

    task = dialer.keep(session)
    await asyncio.sleep(0.01)
    kept_place = places.saved["c1"]
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert abs((NOW - kept_place.queued_at).total_seconds() - 120) < 1
    assert kept_place.expires_at == NOW + timedelta(seconds=600)
    assert (kept_place.ticket_id, kept_place.number, kept_place.priority) == ("T-c1", NUMBER, 3)
    assert (kept_place.needs, kept_place.preferred_agent) == (frozenset({"slow_speech"}), "a1")


async def test_restored_place_keeps_queue_order():
    pool = await _pool()
    busy = await pool.reserve("talking", "dibao", timeout_s=1)
    originator, recorder, places = Originator(), Recorder(), Places()
    dialer = QueueCallbackDialer(pool, originator, recorder, places=places, wall_clock=lambda: NOW)

    # A caller queued after the restart, but later than the stored place's original entry.
    later = asyncio.ensure_future(pool.reserve("later", "dibao", timeout_s=5))
    await asyncio.sleep(0)
    assert dialer.restore([_kept("early", queued_s_ago=300)]) == 1
    await asyncio.sleep(0)
    assert [call.call_id for call in pool.waiting_calls()] == ["early-callback", "later"]

    await pool.release(busy, reason="test", outcome=ReleaseOutcome.ANSWERED)
    await asyncio.sleep(0.01)
    assert originator.calls == [("a1", NUMBER, "early")]
    assert recorder.outcomes[0]["result"] == "connected"
    # A restored place is not stored again, only removed.
    assert ("save", "early") not in places.log
    assert ("forget", "early") in places.log
    later.cancel()


async def test_expired_restored_place_recorded():
    pool = await _pool()
    originator, recorder, places = Originator(), Recorder(), Places()
    dialer = QueueCallbackDialer(pool, originator, recorder, places=places, wall_clock=lambda: NOW)

    dialer.restore([_kept("old", queued_s_ago=20_000, expires_in_s=-60)])
    await asyncio.sleep(0.01)

    assert originator.calls == []
    assert recorder.outcomes == [{"call_id": "old", "result": "expired", "agent_id": None,
                                  "number_masked": "139****0061"}]
    assert places.log == [("forget", "old")]
    assert pool.waiting_calls() == []


async def test_store_failure_still_calls_back():
    pool = await _pool()
    originator = Originator()
    dialer = QueueCallbackDialer(pool, originator, Recorder(), places=Places(fail_save=True))

    with structlog.testing.capture_logs() as logs:
        result = await dialer.keep(_session("c1", waiting_since=0.0))

    assert result is CallbackResult.CONNECTED
    assert originator.calls == [("a1", NUMBER, "c1")]
    errors = [entry for entry in logs if entry["event"] == "queue callback place not stored"]
    assert errors[0]["call_id"] == "c1"


async def test_restore_skips_place_already_served():
    pool = AgentPool([AgentProfile("a1", "a1", "a1", frozenset({"linshi"}))])
    dialer = QueueCallbackDialer(pool, Originator(), Recorder(), places=Places(), wall_clock=lambda: NOW)
    session = _session("c1", waiting_since=time.monotonic())
    task = dialer.keep(session)

    assert dialer.restore([_kept("c1", queued_s_ago=5), _kept("c2", queued_s_ago=5)]) == 1
    assert dialer.pending == 2
    await dialer.stop()
    assert task.cancelled()
