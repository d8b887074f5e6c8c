"""What-if replay: the recorded inputs of past calls, run offline against a candidate flow.

Each call record that contains the caller's inputs becomes a call script (the same keys at
the same times, the same hang-up). The script runs through the candidate flow, and
through the flow that took the call when it is given, with agents always free. A call
whose candidate path differs from the recorded path counts as changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ivr.call import CallerId
from ivr.flow import Flow
from replay.offline import ActualCall, run_offline
from replay.scripts import CallScript, Expectation, TimedKey
from tickets.call_record import CallRecord

# Synthetic number given to calls whose stored number is sealed.
STAND_IN_NUMBER = "13900000000"

NO_INPUTS = "无按键记录"
DIGIT_ENTRY = "含号码或证件号输入，按键只存了位数，无法回放"


def script_from_record(record: CallRecord) -> CallScript | str:
    """Return the script that repeats the recorded call, or the reason it cannot be replayed."""
    inputs = record.inputs
    if inputs is None:
        return NO_INPUTS

    keys: list[TimedKey] = []
    for pressed in inputs.keys:
        if pressed.outcome == "no_input":
            continue
        if pressed.digits.startswith("<"):
            return DIGIT_ENTRY
        keys.extend(TimedKey(digit, pressed.at_ms) for digit in pressed.digits)

    # A sealed number cannot be read here; a stand-in mobile number keeps paths that depend
    # on the caller having a number (the callback offer) the same, without the real number.
    number = STAND_IN_NUMBER if record.caller_sealed else CallerId.from_raw(record.caller_raw).number
    hangup_ms = inputs.ended_ms if inputs.hung_up else None
    if hangup_ms is not None and keys and hangup_ms < keys[-1].at_ms:
        hangup_ms = keys[-1].at_ms
    return CallScript(
        name=record.call_id, source=f"calls/{record.call_id}", caller=number, needs=frozenset(),
        keys=tuple(keys), hangup_ms=hangup_ms, expect=Expectation(path=record.path),
    )


@dataclass(frozen=True, slots=True)
class ChangedCall:
    call_id: str
    caller_masked: str
    recorded_path: tuple[str, ...]
    candidate: ActualCall
    # True when the flow that took the call, replayed offline, does not repeat the recorded
    # path either: the difference may come from the replay rather than from the candidate.
    baseline_differs: bool


@dataclass(slots=True)
class WhatIfReport:
    total: int = 0
    replayed: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    changed: list[ChangedCall] = field(default_factory=list)
    baseline_mismatches: int = 0

    @property
    def unchanged(self) -> int:
        return self.replayed - len(self.changed)


async def what_if(
    records: Iterable[CallRecord], candidate: Flow, *, lengths: Mapping[str, float], current: Flow | None = None,
) -> WhatIfReport:
    """Replay every record through ``candidate`` (and ``current`` when given) and count changed paths."""
    report = WhatIfReport()
    for record in records:
        report.total += 1
        script = script_from_record(record)
        if isinstance(script, str):
            report.skipped[script] = report.skipped.get(script, 0) + 1
            continue

        report.replayed += 1
        outcome = await run_offline(candidate, script, lengths=lengths, started_at=record.started_at)
        baseline_differs = False
        if current is not None:
            baseline = await run_offline(current, script, lengths=lengths, started_at=record.started_at)
            baseline_differs = baseline.path != record.path
            report.baseline_mismatches += baseline_differs
        if outcome.path != record.path:
            report.changed.append(ChangedCall(record.call_id, record.caller_masked, record.path, outcome,
                                              baseline_differs))
    return report


def render_what_if(report: WhatIfReport, *, examples: int = 5) -> list[str]:
    """Return the report as Chinese lines for the tester."""
    summary = (f"共 {report.total} 通通话，回放 {report.replayed} 通，路径改变 {len(report.changed)} 通，"
               f"不变 {report.unchanged} 通。")
    lines = [summary]
    for reason, count in sorted(report.skipped.items()):
        lines.append(f"跳过 {count} 通：{reason}")
    if report.baseline_mismatches:
        lines.append(
            f"注意：{report.baseline_mismatches} 通按现行流程离线回放也与录下的路径不同，"
            "这些通话的差异可能来自回放本身（按键时间、坐席空闲情况）。"
        )
    for changed in report.changed[:examples]:
        flag = "（现行流程回放也不同）" if changed.baseline_differs else ""
        lines.append(f"- 通话 {changed.call_id}，主叫 {changed.caller_masked}{flag}")
        lines.append(f"    原路径：{' → '.join(changed.recorded_path) or '（空）'}")
        lines.append(f"    新路径：{' → '.join(changed.candidate.path) or '（空）'}")
    if len(report.changed) > examples:
        lines.append(f"……另有 {len(report.changed) - examples} 通未列出")
    return lines
