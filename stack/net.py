"""Stack tooling: free loopback ports, socket inspection with ``ss`` and child-process cleanup.

Used by the Asterisk and SIPp runners. Every helper works on 127.0.0.1 only, because tests
and the demo never listen on another address.
"""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"

# Ranges below Linux's default ephemeral range (32768-60999), so an outgoing connection
# of another process cannot take a port between our probe and the real bind.
_RANGE_LOW = 10_000
_RANGE_HIGH = 32_000

# Ports handed out by this process, so two callers in one test session never get the same
# port even before either has bound it.
_handed_out: set[int] = set()


def _can_bind(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def free_port(*, udp: bool = True, tcp: bool = True) -> int:
    """Return a loopback port that is free for the requested protocols right now.

    The port is not held, so another process could still take it before the caller binds.
    Picking below the ephemeral range and never handing a port out twice keeps that window
    small.
    """

    return free_port_range(1, udp=udp, tcp=tcp)


def free_port_range(count: int, *, udp: bool = True, tcp: bool = False) -> int:
    """Return the first port of ``count`` consecutive loopback ports that are all free.

    The default checks UDP only, which suits an RTP range.
    """

    if count < 1:
        raise ValueError(f"port count must be at least 1, got {count}")

    for _ in range(200):
        first = random.randrange(_RANGE_LOW, _RANGE_HIGH - count)

        # An even first port keeps RTP and RTCP pairs aligned.
        first -= first % 2
        candidates = range(first, first + count)
        if any(port in _handed_out for port in candidates):
            continue

        if udp and not all(_can_bind(port, socket.SOCK_DGRAM) for port in candidates):
            continue
        if tcp and not all(_can_bind(port, socket.SOCK_STREAM) for port in candidates):
            continue

        _handed_out.update(candidates)
        return first

    raise RuntimeError(f"no {count} consecutive free loopback ports found between {_RANGE_LOW} and {_RANGE_HIGH}")


@dataclass(frozen=True, slots=True)
class SocketEntry:
    """One socket reported by ``ss``: protocol, state, both ends and the owning process ids."""

    protocol: str
    state: str
    local_address: str
    local_port: int
    peer_address: str
    pids: tuple[int, ...]


_ADDRESS_PORT = re.compile(r"^(?P<address>.*):(?P<port>\d+|\*)$")
_PID = re.compile(r"pid=(\d+)")


def _split_endpoint(text: str) -> tuple[str, int]:
    match = _ADDRESS_PORT.match(text)
    if match is None:
        return text, 0

    address = match["address"].strip("[]")
    port = 0 if match["port"] == "*" else int(match["port"])
    return address, port


def list_sockets() -> list[SocketEntry]:
    """Return every TCP, UDP and raw IPv4/IPv6 socket of this machine's network namespace.

    Runs ``ss -Htuwanp``. Owning processes are shown only for processes this user may
    inspect, which for root is every process.
    """

    output = subprocess.run(
        ["ss", "-H", "-t", "-u", "-w", "-a", "-n", "-p"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout

    entries: list[SocketEntry] = []
    for line in output.splitlines():
        fields = line.split()
        if len(fields) < 6:
            continue

        protocol, state = fields[0], fields[1]
        local_address, local_port = _split_endpoint(fields[4])
        peer_address, _ = _split_endpoint(fields[5])
        pids = tuple(int(pid) for pid in _PID.findall(" ".join(fields[6:])))
        entries.append(SocketEntry(protocol, state, local_address, local_port, peer_address, pids))

    return entries


def sockets_of_process(pid: int) -> list[SocketEntry]:
    """Return the TCP, UDP and raw sockets held by process ``pid``."""

    return [entry for entry in list_sockets() if pid in entry.pids]


def listening_ports(ports: set[int]) -> list[SocketEntry]:
    """Return the listening or bound sockets, of any process, whose local port is in ``ports``."""

    bound_states = {"LISTEN", "UNCONN"}
    return [entry for entry in list_sockets() if entry.state in bound_states and entry.local_port in ports]


def pids_with_argument(argument: str) -> list[int]:
    """Return the ids of live processes that have ``argument`` as one of their arguments."""

    wanted = argument.encode()
    found: list[int] = []
    for pid in _iter_pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue

        if wanted in arguments:
            found.append(pid)

    return found


def _iter_pids() -> Iterator[int]:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            yield int(entry)


def stop_process_group(process: subprocess.Popen[bytes], *, name: str, grace_s: float = 5.0) -> None:
    """Stop a child started with ``start_new_session=True`` and everything in its group.

    Sends SIGTERM to the group, waits ``grace_s`` seconds, then sends SIGKILL. The group is
    signalled even when the leader has already exited, because a grandchild may remain.
    """

    pgid = process.pid

    if process.poll() is None:
        _signal_group(pgid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("process_group_kill", name=name, pid=pgid, grace_s=grace_s)

    _signal_group(pgid, signal.SIGKILL)
    process.wait(timeout=grace_s)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def wait_until(predicate: Callable[[], bool], *, timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout_s`` passes; return its last value."""

    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
