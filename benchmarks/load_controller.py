"""Benchmark helper: a county node (CountyNode) in its own process, recording FastAGI round trips.

benchmarks/load_ivr.py starts it as::

    .venv/bin/python benchmarks/load_controller.py --config county.yaml --ready-file F --samples-dir D

It runs the same ``CountyNode`` that ``hotline run`` runs, with structlog at INFO as JSON
on stderr, and installs the AGI round-trip observer of ``hwd_bridge.agi_channel``. On
SIGUSR1 it writes the round trips recorded since the previous SIGUSR1 to the next file
``D/round-trips-<n>.json`` (command name to a list of milliseconds) and starts a new set.
SIGTERM or SIGINT stops the node. With ``--cprofile FILE`` the whole run is profiled with
cProfile and the statistics are written to FILE at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import signal
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotline.config import load_node_config
from hotline.logging import configure_logging
from hotline.nodes import CountyNode
from hwd_bridge.agi_channel import set_round_trip_observer


class RoundTripRecorder:
    """Round trips in milliseconds by AGI command name, written out and cleared on request."""

    def __init__(self, samples_dir: Path) -> None:
        self._samples_dir = samples_dir
        self._samples: defaultdict[str, list[float]] = defaultdict(list)
        self._files_written = 0

    def add(self, command: str, seconds: float) -> None:
        self._samples[command].append(seconds * 1000.0)

    def flush(self) -> None:
        """Write the samples so far to the next numbered file, then start a new set."""
        path = self._samples_dir / f"round-trips-{self._files_written}.json"
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps(self._samples), encoding="utf-8")
        # The rename makes the file appear complete, so the reader never sees half of it.
        partial.rename(path)
        self._files_written += 1
        self._samples = defaultdict(list)


async def _run(config_path: Path, ready_file: Path, recorder: RoundTripRecorder) -> None:
    config = load_node_config(config_path, require_files=True)
    node = CountyNode(config)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, recorder.flush)

    set_round_trip_observer(recorder.add)
    await node.start()
    try:
        ready_file.write_text("ready\n", encoding="utf-8")
        await stop.wait()
    finally:
        await node.stop()
        set_round_trip_observer(None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="county node configuration (YAML)")
    parser.add_argument("--ready-file", type=Path, required=True, help="file written once the node takes calls")
    parser.add_argument("--samples-dir", type=Path, required=True, help="folder for the round-trip files")
    parser.add_argument("--cprofile", type=Path, default=None, help="write cProfile statistics of the whole run here")
    arguments = parser.parse_args()

    configure_logging("INFO", json=True)
    arguments.samples_dir.mkdir(parents=True, exist_ok=True)
    recorder = RoundTripRecorder(arguments.samples_dir)
    coroutine = _run(arguments.config, arguments.ready_file, recorder)

    if arguments.cprofile is None:
        asyncio.run(coroutine)
        return

    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(coroutine)
    finally:
        profiler.disable()
        profiler.dump_stats(str(arguments.cprofile))


if __name__ == "__main__":
    main()
