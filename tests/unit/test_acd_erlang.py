"""Erlang B and C against published table values and closed forms."""

from __future__ import annotations

import math

import pytest

from acd.erlang import (
    agents_needed,
    average_speed_of_answer,
    erlang_b,
    erlang_c,
    service_level,
    staffing,
)


def _erlang_c_by_factorials(servers: int, load: float) -> float:
    """The textbook sum form, an independent check of the recursion for small counts."""
    top = load**servers / math.factorial(servers) * servers / (servers - load)
    return top / (sum(load**k / math.factorial(k) for k in range(servers)) + top)


def test_erlang_b_table_value() -> None:
    # Erlang B tables: 10 lines offered 5 Erlangs block 1.84 % of calls.
    assert erlang_b(10, 5.0) == pytest.approx(0.01838, abs=5e-6)


def test_erlang_c_closed_forms() -> None:
    # M/M/1 waits with probability rho; M/M/2 at one Erlang waits with probability 1/3.
    assert erlang_c(1, 0.5) == pytest.approx(0.5)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


@pytest.mark.parametrize(("servers", "load"), [(3, 2.5), (10, 8.0), (25, 20.0)])
def test_erlang_c_matches_sum_form(servers: int, load: float) -> None:
    assert erlang_c(servers, load) == pytest.approx(_erlang_c_by_factorials(servers, load), rel=1e-12)


def test_worked_example_fourteen_agents() -> None:
    """100 calls per half hour, 3 min handle time, 80 % in 20 s: the widely published example."""
    figures = agents_needed(200, 180, 20, 0.80)

    assert figures.agents == 14
    assert figures.wait_probability == pytest.approx(0.1741, abs=5e-5)
    assert figures.service_level == pytest.approx(0.8884, abs=5e-5)
    assert figures.asa_s == pytest.approx(7.84, abs=0.01)


def test_one_agent_fewer_misses_the_target() -> None:
    assert staffing(13, 200, 180, 20).service_level < 0.80


def test_unstable_queue() -> None:
    assert erlang_c(8, 8.0) == 1.0
    assert average_speed_of_answer(8, 8.0, 180) == math.inf
    assert service_level(8, 9.0, 180, 20) == 0.0


def test_large_pool_stays_finite() -> None:
    assert 0.0 < erlang_c(1000, 980.0) < 1.0


def test_unreachable_target_is_reported() -> None:
    with pytest.raises(ValueError, match="do not reach"):
        agents_needed(3600, 3600, 0, 0.99, limit=5)
