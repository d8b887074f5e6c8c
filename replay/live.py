"""Live replay: call scripts placed as real SIPp calls on a demo stack (Asterisk, county, city).

``ReplayStack`` wraps ``hotline.demo.DemoStack``: it starts the same county and city nodes,
Asterisk and agent phones in its own work folder, places each script's call with SIPp and
reads back the call record the county wrote. Calls run one after another by default;
``parallel`` runs several at once when their masked caller numbers differ.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

import structlog

from hotline.demo import COUNTY, DemoStack
from replay.offline import ActualCall
from replay.scripts import CallScript
from stack.sipp import CallerResult, CallerStep, Dtmf, Pause, SippCaller
from storage.ticket_store import TicketStore
from tickets.call_record import CallRecord

log = structlog.get_logger(__name__)

# SIPp sends each key as a 160 ms event followed by 40 ms of silence.
DTMF_STEP_MS = 200
RECORD_WAIT_S = 15.0
CALL_TIMEOUT_S = 240.0


def sipp_steps(script: CallScript) -> tuple[tuple[CallerStep, ...], int | None]:
    """Return the SIPp steps of a script and the hang-up delay after the last step."""
    steps: list[CallerStep] = []
    elapsed = 0
    for key in script.keys:
        if key.at_ms > elapsed:
            steps.append(Pause(key.at_ms - elapsed))
            elapsed = key.at_ms
        steps.append(Dtmf(key.key))
        elapsed += DTMF_STEP_MS
    if script.hangup_ms is None:
        return tuple(steps), None
    return tuple(steps), max(0, script.hangup_ms - elapsed)


def actual_from_record(record: CallRecord) -> ActualCall:
    return ActualCall(record.path, record.category.value if record.category else None, record.skill,
                      record.agent_id, record.ticket_id is not None, record.outcome)


class ReplayStack:
    """A demo stack that places call scripts and returns what the county recorded for each."""

    def __init__(self, work_dir: Path):
        self.work_dir = work_dir
        self._demo = DemoStack(work_dir)
        self._seen: set[str] = set()

    def __enter__(self) -> Self:
        self._demo.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._demo.__exit__(*exc_info)

    async def _calls(self) -> list[CallRecord]:
        async with await TicketStore.open(self.work_dir / "county.sqlite3", COUNTY["node_id"],
                                          COUNTY["region_code"]) as store:
            return await store.list_calls(limit=100_000)

    async def _place(self, script: CallScript) -> CallerResult | None:
        assert self._demo.asterisk is not None
        steps, hangup_after_ms = sipp_steps(script)
        caller = SippCaller(target_port=self._demo.asterisk.sip_port, caller_number=script.caller, steps=steps,
                            hangup_after_ms=hangup_after_ms, wait_bye_timeout_ms=150_000)
        results = await caller.run_async(timeout_s=CALL_TIMEOUT_S)
        return results[0] if results else None

    async def _record_for(self, script: CallScript) -> CallRecord | None:
        """Wait for the county's new call record from the script's caller."""
        deadline = time.monotonic() + RECORD_WAIT_S
        while time.monotonic() < deadline:
            for record in await self._calls():
                if record.call_id not in self._seen and record.caller_masked == script.caller_masked:
                    self._seen.add(record.call_id)
                    return record
            await asyncio.sleep(0.2)
        return None

    async def run_one(self, script: CallScript) -> tuple[CallerResult | None, ActualCall | None]:
        sipp = await self._place(script)
        record = await self._record_for(script)
        return sipp, actual_from_record(record) if record else None

    async def run(self, scripts: Sequence[CallScript], *, parallel: int = 1
                  ) -> list[tuple[CallerResult | None, ActualCall | None]]:
        """Run every script; at most ``parallel`` calls at once, never two from the same masked caller."""
        self._seen.update(record.call_id for record in await self._calls())
        results: list[tuple[CallerResult | None, ActualCall | None] | None] = [None] * len(scripts)
        busy: set[str] = set()
        changed = asyncio.Condition()
        slots = asyncio.Semaphore(max(1, parallel))

        async def one(index: int, script: CallScript) -> None:
            async with slots:
                async with changed:
                    await changed.wait_for(lambda: script.caller_masked not in busy)
                    busy.add(script.caller_masked)
                try:
                    log.info("replay call", script=script.source)
                    results[index] = await self.run_one(script)
                finally:
                    async with changed:
                        busy.discard(script.caller_masked)
                        changed.notify_all()

        await asyncio.gather(*(one(index, script) for index, script in enumerate(scripts)))
        return [result if result is not None else (None, None) for result in results]
