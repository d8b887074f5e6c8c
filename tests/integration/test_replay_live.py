"""Live replay: the call-script library as real SIPp calls on a demo stack."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from replay.live import ReplayStack
from replay.offline import compare
from replay.scripts import load_script, script_files

pytestmark = pytest.mark.integration

LIBRARY = Path(__file__).resolve().parents[1] / "replay"
# Calls at once; the demo stack has two agents, so more calls only wait in the queue.
PARALLEL = 4


@pytest.mark.timeout(900)
def test_library_passes_on_real_calls(tmp_path: Path) -> None:
    scripts = [load_script(path) for path in script_files([LIBRARY])]
    started = time.monotonic()

    with ReplayStack(tmp_path) as stack:
        results = asyncio.run(stack.run(scripts, parallel=PARALLEL))

    failures = {}
    for script, (sipp, actual) in zip(scripts, results, strict=True):
        problems = ["no call record"] if actual is None else compare(script.expect, actual)
        if sipp is None or not sipp.completed:
            problems.append("SIPp call did not complete")
        if problems:
            failures[script.source] = problems
    assert failures == {}, f"{len(failures)} scripts failed in {time.monotonic() - started:.0f} s: {failures}"
