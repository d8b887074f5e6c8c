"""Domain: Erlang B and Erlang C, the M/M/c queue behind staffing estimates.

Notation: ``servers`` agents, offered ``load`` in Erlangs (arrival rate times mean handle
time), exponential handle times, callers who never hang up while waiting.

Formulas (Kleinrock, *Queueing Systems* vol. 1, 1975, section 3.5, M/M/m):

- Erlang B by the recursion B(0) = 1, B(n) = A·B(n-1) / (n + A·B(n-1)), which avoids
  factorials and stays stable for hundreds of agents.
- Erlang C (probability that a call waits) from Erlang B:
  C = B / (1 - ρ·(1 - B)) with ρ = A / servers.
- Mean wait of all calls (ASA): C · handle / (servers - A).
- Service level (share answered within t seconds): 1 - C · exp(-(servers - A) · t / handle).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def erlang_b(servers: int, load: float) -> float:
    """Return the blocking probability of ``servers`` lines offered ``load`` Erlangs."""
    if servers < 0 or load < 0:
        raise ValueError(f"servers ({servers}) and load ({load}) must be >= 0")
    blocking = 1.0
    for n in range(1, servers + 1):
        blocking = load * blocking / (n + load * blocking)
    return blocking


def erlang_c(servers: int, load: float) -> float:
    """Return the probability that a call waits; 1.0 when the queue is unstable (load >= servers)."""
    if servers <= 0 or load >= servers:
        return 1.0
    if load == 0:
        return 0.0
    blocking = erlang_b(servers, load)
    rho = load / servers
    return blocking / (1.0 - rho * (1.0 - blocking))


def average_speed_of_answer(servers: int, load: float, handle_s: float) -> float:
    """Return the mean wait in seconds over all calls; ``math.inf`` when load >= servers."""
    if servers <= 0 or load >= servers:
        return math.inf
    return erlang_c(servers, load) * handle_s / (servers - load)


def service_level(servers: int, load: float, handle_s: float, target_s: float) -> float:
    """Return the share of calls answered within ``target_s`` seconds (0 when load >= servers)."""
    if servers <= 0 or load >= servers:
        return 0.0
    return 1.0 - erlang_c(servers, load) * math.exp(-(servers - load) * target_s / handle_s)


@dataclass(frozen=True, slots=True)
class Staffing:
    """Erlang C figures for one agent count."""

    agents: int
    load: float
    wait_probability: float
    asa_s: float
    service_level: float
    occupancy: float


def staffing(servers: int, calls_per_hour: float, handle_s: float, target_s: float) -> Staffing:
    """Return the Erlang C figures for ``servers`` agents answering ``calls_per_hour``."""
    load = calls_per_hour * handle_s / 3600.0
    return Staffing(
        agents=servers, load=load, wait_probability=erlang_c(servers, load),
        asa_s=average_speed_of_answer(servers, load, handle_s),
        service_level=service_level(servers, load, handle_s, target_s),
        occupancy=min(load / servers, 1.0) if servers > 0 else 1.0,
    )


def agents_needed(calls_per_hour: float, handle_s: float, target_s: float, level: float,
                  *, limit: int = 10_000) -> Staffing:
    """Return the smallest staffing whose service level reaches ``level`` (0-1).

    Raises ValueError when even ``limit`` agents do not reach it.
    """
    if not 0 < level < 1:
        raise ValueError(f"service level target {level} must lie strictly between 0 and 1")
    if calls_per_hour < 0 or handle_s <= 0 or target_s < 0:
        raise ValueError("calls_per_hour must be >= 0, handle_s > 0 and target_s >= 0")
    load = calls_per_hour * handle_s / 3600.0
    servers = max(1, math.floor(load) + 1)
    while servers <= limit:
        figures = staffing(servers, calls_per_hour, handle_s, target_s)
        if figures.service_level >= level:
            return figures
        servers += 1
    raise ValueError(f"{limit} agents do not reach the service level {level:.0%} for {load:.1f} Erlangs")
