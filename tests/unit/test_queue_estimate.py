"""Queue estimate: callers ahead, serving agents, moving-average handle time and expected wait."""

import pytest

from acd.pool import AgentSnapshot, AgentState, DeviceState, WaitingCall
from acd.queue_estimate import (
    HandleTimes,
    calls_ahead,
    estimate_queue,
    expected_wait_s,
    serving_agents,
)


def _agent(agent_id: str, state: AgentState, *skills: str) -> AgentSnapshot:
    return AgentSnapshot(agent_id, state, DeviceState.IN_USE, None, frozenset(skills))


WAITING = [
    WaitingCall("c1", "dibao", 300.0),
    WaitingCall("c2", "linshi", 200.0),
    WaitingCall("c3", "dibao", 100.0),
    WaitingCall("c4", "dibao", 10.0),
]


def test_calls_ahead_counts_same_skill_only():
    assert calls_ahead(WAITING, "c1", "dibao") == 0
    assert calls_ahead(WAITING, "c3", "dibao") == 1
    assert calls_ahead(WAITING, "c4", "dibao") == 2
    assert calls_ahead(WAITING, "c2", "linshi") == 0


def test_call_not_waiting_yet_is_behind_everyone():
    assert calls_ahead(WAITING, "new", "dibao") == 3
    assert calls_ahead([], "new", "dibao") == 0


def test_serving_agents_skip_paused_and_logged_out():
    agents = [
        _agent("a1", AgentState.ON_CALL, "dibao"),
        _agent("a2", AgentState.WRAP_UP, "dibao", "linshi"),
        _agent("a3", AgentState.PAUSED, "dibao"),
        _agent("a4", AgentState.LOGGED_OUT, "dibao"),
        _agent("a5", AgentState.AVAILABLE, "linshi"),
        _agent("a6", AgentState.RINGING, "dibao"),
    ]

    assert serving_agents(agents, "dibao") == 3
    assert serving_agents(agents, "linshi") == 2
    assert serving_agents(agents, "ertong") == 0


def test_handle_times_default_before_any_call():
    times = HandleTimes(default_s=240.0)

    assert times.average("dibao") == 240.0


def test_handle_times_moving_average_keeps_window():
    times = HandleTimes(window=3, default_s=240.0)
    for seconds in (100.0, 200.0, 300.0, 400.0):
        times.record("dibao", seconds)

    assert times.average("dibao") == pytest.approx(300.0)
    assert times.average("linshi") == 240.0


@pytest.mark.parametrize("bad", [{"window": 0}, {"default_s": 0.0}])
def test_handle_times_rejects_bad_settings(bad):
    with pytest.raises(ValueError):
        HandleTimes(**bad)


def test_handle_times_rejects_negative_time():
    with pytest.raises(ValueError, match="negative"):
        HandleTimes().record("dibao", -1.0)


@pytest.mark.parametrize(
    ("ahead", "serving", "handle_s", "expected"),
    [
        (0, 1, 120.0, 60.0),
        (2, 1, 240.0, 600.0),
        (3, 2, 200.0, 350.0),
        (0, 4, 180.0, 22.5),
    ],
)
def test_expected_wait_formula(ahead, serving, handle_s, expected):
    assert expected_wait_s(ahead=ahead, serving=serving, handle_time_s=handle_s) == pytest.approx(expected)


def test_expected_wait_without_agents_is_unknown():
    assert expected_wait_s(ahead=1, serving=0, handle_time_s=180.0) is None


def test_expected_wait_rejects_negative_ahead():
    with pytest.raises(ValueError):
        expected_wait_s(ahead=-1, serving=1, handle_time_s=180.0)


def test_estimate_queue_rounds_minutes_up():
    times = HandleTimes(default_s=100.0)
    agents = [_agent("a1", AgentState.ON_CALL, "dibao"), _agent("a2", AgentState.ON_CALL, "dibao")]

    estimate = estimate_queue(call_id="c4", skill="dibao", agents=agents, waiting=WAITING, handle_times=times)

    assert estimate.ahead == 2
    assert estimate.position == 3
    assert estimate.serving_agents == 2
    assert estimate.wait_s == pytest.approx(125.0)
    assert estimate.wait_minutes == 3


def test_estimate_queue_short_wait_is_one_minute():
    agents = [_agent("a1", AgentState.ON_CALL, "dibao")] * 4
    estimate = estimate_queue(call_id="c1", skill="dibao", agents=agents, waiting=WAITING,
                              handle_times=HandleTimes(default_s=60.0))

    assert estimate.wait_s == pytest.approx(7.5)
    assert estimate.wait_minutes == 1


def test_estimate_queue_without_agents_has_no_minutes():
    estimate = estimate_queue(call_id="c1", skill="dibao", agents=[], waiting=WAITING, handle_times=HandleTimes())

    assert estimate.wait_s is None
    assert estimate.wait_minutes is None
