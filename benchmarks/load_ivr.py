"""Benchmark: the FastAGI controller against the same IVR in pure Asterisk dialplan, under SIPp load.

Run from the repository root inside a private network namespace, as ``make`` does::

    unshare --net -- sh -c 'ip link set lo up && exec "$@"' x .venv/bin/python benchmarks/load_ivr.py --quick
    unshare --net -- sh -c 'ip link set lo up && exec "$@"' x .venv/bin/python benchmarks/load_ivr.py

One run starts mosquitto (the county's parent broker), one Asterisk 22 instance with the
test extensions and a county node (benchmarks/load_controller.py, the ``CountyNode`` of
``hotline run``) running benchmarks/flows/load-ivr.yaml. Both sides play the same three
tone prompts (1.0 s, 1.5 s, 1.0 s) that this script writes:

- dialplan: SIPp dials ``baseline`` (Answer, prompt, one-digit Read, prompt, Sets, Hangup);
- controller: SIPp dials ``12349``, which the dialplan hands to the county node over FastAGI.

Each SIPp caller presses 1 as an RFC 2833 event during the menu prompt and waits for the
far end's BYE. A call fails when it is not answered, does not end with Asterisk's BYE, ends
in the fallback branch (cause 41), or lasts long enough that the key must have been lost.

Steps, repeated ``--repeats`` times:

1. the controller only, with calls held about 8 s and SIPp ``-l 500``, where its RSS is sampled;
2. per side, a ladder of call rates, where a side stops climbing after its first step with
   0.5 % failures or more;
3. per side, 100 concurrent calls (SIPp ``-l 100``), where the FastAGI round trip is measured;
4. once at the end, the controller only at the 100-call load, with py-spy attached to name the top costs.

CPU is utime + stime from /proc/<pid>/stat over each step. The FastAGI round trip is the
time from writing an AGI command to reading its whole reply, recorded in the controller
for commands without media (STREAM FILE, GET DATA and EXEC are left out because their
reply waits for playback or input). The results go to stdout and, as JSON, to ``--output``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import wave
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hotline.logging import configure_logging
from stack import net
from stack.asterisk import AsteriskInstance, ensure_root
from stack.mosquitto import MosquittoBroker
from stack.sipp import SIPP_BINARY, Dtmf, Pause, build_caller_scenario, parse_caller_log

REPO_ROOT = Path(__file__).resolve().parent.parent
FLOW_FILE = REPO_ROOT / "benchmarks" / "flows" / "load-ivr.yaml"
CATALOG_FILE = REPO_ROOT / "benchmarks" / "flows" / "load-ivr-prompts.yaml"
CONTROLLER_SCRIPT = REPO_ROOT / "benchmarks" / "load_controller.py"
PY_SPY = Path(sys.executable).parent / "py-spy"

PROMPT_SECONDS = {"bench_welcome": 1.0, "bench_menu": 1.5, "bench_goodbye": 1.0}
TONE_HZ = 425  # the Chinese dial-tone frequency, though any audible tone would do
# Answer() and AGI ANSWER in Asterisk 22 wait up to 500 ms for the caller's first media
# frame, and SIPp sends none before its key, so the welcome prompt starts 0.5 s after the 200 OK.
ANSWER_WAIT_MS = 500
MENU_STARTS_MS = ANSWER_WAIT_MS + int(PROMPT_SECONDS["bench_welcome"] * 1000)
MENU_ENDS_MS = MENU_STARTS_MS + int(PROMPT_SECONDS["bench_menu"] * 1000)
# The caller presses its key in the middle of the menu prompt on both sides. A key pressed
# during the welcome prompt is lost, because neither Playback() nor the flow's play node
# listens for keys.
KEY_AT_MS = (MENU_STARTS_MS + MENU_ENDS_MS) // 2
# The Read in the baseline extension and the flow's menu both wait 5 s after the menu
# prompt, so a key pressed 3.5 s after the prompt ends still counts and keeps the call open longer.
HOLD_KEY_AT_MS = MENU_ENDS_MS + 3500
# A lost key adds the 5 s input timeout. A call longer than its expected length plus this
# margin is counted as failed.
LATE_MARGIN_MS = 2500
CALLER_NUMBER = "13900000001"
FALLBACK_CAUSE = 41

FAILURE_LIMIT = 0.005
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# AGI commands whose reply waits for playback, input, media or a dialplan application.
# ANSWER is one of them because of the wait for the first media frame (ANSWER_WAIT_MS).
MEDIA_COMMANDS = frozenset({"ANSWER", "STREAM FILE", "GET DATA", "EXEC", "WAIT FOR DIGIT", "GET OPTION", "RECORD FILE"})
SIDES = {"dialplan": "baseline", "controller": "12349"}


@dataclass(frozen=True, slots=True)
class Settings:
    """Parameters of one benchmark run."""

    rates: tuple[int, ...]
    step_s: float
    repeats: int
    concurrent_calls: int
    held_calls: int
    held_rate: int
    profile: bool


QUICK = Settings(rates=(10, 30), step_s=8.0, repeats=2, concurrent_calls=100, held_calls=200, held_rate=60, profile=True)
FULL = Settings(rates=(20, 40, 80, 120, 160, 200, 250, 300, 400), step_s=20.0, repeats=2, concurrent_calls=100, held_calls=500,
                held_rate=90, profile=True)


@dataclass(frozen=True, slots=True)
class Percentiles:
    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


@dataclass(frozen=True, slots=True)
class StepResult:
    """Measurements of one SIPp run against one side."""

    kind: str  # "rate", "concurrent", "held" or "profile"
    side: str
    repeat: int
    rate_per_s: int
    limit: int | None
    calls: int
    succeeded: int
    failures: dict[str, int]
    failure_fraction: float
    peak_concurrent: int
    mean_duration_s: float
    wall_s: float
    asterisk_cpu_ms: float
    controller_cpu_ms: float
    sipp_cpu_ms: float
    cpu_per_call_ms: float
    asterisk_rss_max_mb: float
    controller_rss_before_mb: float
    controller_rss_max_mb: float
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    round_trip: Percentiles | None
    round_trip_by_command: dict[str, Percentiles] = field(default_factory=dict)


# -- machine and process readings ---------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    """Return utime + stime of ``pid`` and its threads in seconds (children not included)."""
    if pid is None:
        return 0.0
    text = Path(f"/proc/{pid}/stat").read_text()
    # Field 2 (comm) may contain spaces, so split after its closing parenthesis.
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S


def rss_mb(pid: int | None) -> float:
    """Return the resident set size of ``pid`` in MiB, 0 when it has gone."""
    if pid is None:
        return 0.0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        return 0.0
    return 0.0


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return round(one, 2), round(five, 2), round(fifteen, 2)


def machine_description(asterisk: AsteriskInstance) -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    sipp_version = subprocess.run([SIPP_BINARY, "-v"], capture_output=True, text=True, check=False).stdout
    version_line = next((line.strip() for line in sipp_version.splitlines() if "SIPp v" in line), "unknown")
    return {
        "cpu": f"{model}, {os.cpu_count()} cores",
        "memory": f"{memory_kib / 1024 / 1024:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asterisk": asterisk.cli("core show version").strip().splitlines()[-1],
        "sipp": version_line,
    }


def percentiles(samples: Sequence[float]) -> Percentiles | None:
    if not samples:
        return None
    ordered = sorted(samples)

    def rank(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]

    return Percentiles(len(ordered), round(rank(0.50), 3), round(rank(0.99), 3), round(ordered[-1], 3))


# -- the stack ----------------------------------------------------------------------------


def write_prompts(folder: Path) -> Path:
    """Write the benchmark prompts as 8 kHz mono 16-bit tones and return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    rate = 8000
    for prompt_id, seconds in PROMPT_SECONDS.items():
        frames = b"".join(
            struct.pack("<h", int(3000 * math.sin(2 * math.pi * TONE_HZ * index / rate)))
            for index in range(int(seconds * rate))
        )
        with wave.open(str(folder / f"{prompt_id}.wav"), "wb") as audio:
            audio.setnchannels(1)
            audio.setsampwidth(2)
            audio.setframerate(rate)
            audio.writeframes(frames)
    return folder


class ControllerProcess:
    """benchmarks/load_controller.py in its own process group."""

    def __init__(self, config: Path, work_dir: Path, *, cprofile: Path | None = None) -> None:
        self.ready_file = work_dir / "controller.ready"
        self.samples_dir = work_dir / "round-trips"
        self.log_path = work_dir / "controller.log"
        self._config = config
        self._cprofile = cprofile
        self._process: subprocess.Popen[bytes] | None = None
        self._flushes = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self, timeout_s: float = 60.0) -> None:
        command = [sys.executable, str(CONTROLLER_SCRIPT), "--config", str(self._config),
                   "--ready-file", str(self.ready_file), "--samples-dir", str(self.samples_dir)]
        if self._cprofile is not None:
            command += ["--cprofile", str(self._cprofile)]
        with self.log_path.open("ab") as output:
            self._process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                             start_new_session=True)

        if not net.wait_until(self.ready_file.exists, timeout_s=timeout_s, interval_s=0.1):
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the controller did not become ready within {timeout_s:.0f} s. The end of {self.log_path}: {tail}")

    def round_trips(self, timeout_s: float = 10.0) -> dict[str, list[float]]:
        """Return the round trips recorded since the previous call, in ms by command name."""
        assert self._process is not None
        path = self.samples_dir / f"round-trips-{self._flushes}.json"
        self._process.send_signal(signal.SIGUSR1)
        if not net.wait_until(path.exists, timeout_s=timeout_s):
            raise RuntimeError(f"the controller wrote no round-trip file {path} within {timeout_s:.0f} s")
        self._flushes += 1
        return json.loads(path.read_text(encoding="utf-8"))

    def stop(self) -> None:
        if self._process is not None:
            net.stop_process_group(self._process, name="load-controller", grace_s=15.0)


@dataclass
class Stack:
    asterisk: AsteriskInstance
    controller: ControllerProcess
    work_dir: Path


@contextmanager
def running_stack(work_dir: Path, *, cprofile: Path | None = None) -> Iterator[Stack]:
    """Start mosquitto, Asterisk and the controller, and stop all three on exit, also after an error or Ctrl-C."""
    with ExitStack() as cleanup:
        prompts = write_prompts(work_dir / "prompts")

        broker = MosquittoBroker(port=0, work_dir=work_dir / "broker")
        cleanup.callback(broker.stop)
        broker.start()

        fastagi_port = net.free_port()
        # Asterisk takes two RTP ports per call, so 4000 ports carry 2000 concurrent calls.
        asterisk = AsteriskInstance.with_free_ports(
            f"bench{os.getpid()}", root=ensure_root(), fastagi_port=fastagi_port, rtp_port_count=4000,
            prompt_dir=prompts, baseline_sounds=tuple(PROMPT_SECONDS), test_extensions=True,
        )
        cleanup.callback(asterisk.stop, remove_files=True)
        asterisk.start()

        secret_file = work_dir / "ami-secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(asterisk.ami.secret, encoding="utf-8")
        roster = work_dir / "roster.yaml"
        roster.write_text("- {id: agent1, name: 坐席一, endpoint: agent1, skills: [general]}\n", encoding="utf-8")
        config = work_dir / "county.yaml"
        config.write_text(f"""\
node_id: county-330106
tier: county
region_code: "330106"
database: {work_dir / 'county.sqlite3'}
parent:
  node_id: city-330100
  broker: {{port: {broker.port}}}
telephony:
  fastagi: {{port: {fastagi_port}}}
  ami: {{port: {asterisk.ami.port}, username: {asterisk.ami.username}, secret_file: {secret_file}}}
  flow: {FLOW_FILE}
  prompt_catalog: {CATALOG_FILE}
  prompt_sound_dir: {asterisk.instance_dir / 'sounds'}
  roster: {roster}
""", encoding="utf-8")

        controller = ControllerProcess(config, work_dir, cprofile=cprofile)
        cleanup.callback(controller.stop)
        controller.start()
        yield Stack(asterisk, controller, work_dir)


# -- one SIPp step ------------------------------------------------------------------------

_TICK = re.compile(r"^(START|ANSWERED|END) (\S+).* t=(\d+)\s*$")


def caller_scenario(key_at_ms: int, pcap_dir: Path) -> str:
    """Return the SIPp caller scenario of stack.sipp with SIPp's clock (ms) on every log line."""
    scenario = build_caller_scenario(
        caller_number=CALLER_NUMBER, steps=(Pause(key_at_ms), Dtmf("1")), hangup_after_ms=None,
        wait_bye_timeout_ms=15_000, pcap_dir=pcap_dir,
    )
    # The clock goes at the end of each log message, where the parser of stack.sipp ignores it.
    stamped = re.sub(r'(<log message="(?:START|ANSWERED|END) [^"]*)"', r'\1 t=[clock_tick]"', scenario)
    if stamped.count("t=[clock_tick]") != 4:
        raise RuntimeError("the caller scenario of stack.sipp changed shape; update caller_scenario()")
    return stamped


def expected_duration_ms(key_at_ms: int) -> float:
    """Return the call length when every step goes as planned: key, key press, goodbye prompt."""
    return key_at_ms + 200 + PROMPT_SECONDS["bench_goodbye"] * 1000


def classify_calls(log_text: str, key_at_ms: int) -> tuple[int, Counter[str], int, float]:
    """Return (calls, failures by reason, peak concurrent calls, mean answered duration in s)."""
    results = parse_caller_log(log_text)
    ticks: dict[str, dict[str, int]] = {}
    for line in log_text.splitlines():
        match = _TICK.match(line.strip())
        if match:
            ticks.setdefault(match[2], {})[match[1]] = int(match[3])

    late_after_ms = expected_duration_ms(key_at_ms) + LATE_MARGIN_MS
    failures: Counter[str] = Counter()
    durations = []
    for result in results:
        stamps = ticks.get(result.call_id, {})
        if not result.answered:
            failures["not_answered"] += 1
        elif not result.completed:
            failures["not_ended"] += 1
        elif result.ended_by is None or result.ended_by.value != "remote":
            failures["no_bye_from_asterisk"] += 1
        elif result.cause == FALLBACK_CAUSE:
            failures["fallback"] += 1
        elif "ANSWERED" in stamps and "END" in stamps and stamps["END"] - stamps["ANSWERED"] > late_after_ms:
            failures["late_or_key_lost"] += 1
        if "ANSWERED" in stamps and "END" in stamps:
            durations.append((stamps["END"] - stamps["ANSWERED"]) / 1000)

    # Peak concurrency comes from the call intervals. A call without END counts until the last tick.
    last_tick = max((tick for stamps in ticks.values() for tick in stamps.values()), default=0)
    edges = []
    for stamps in ticks.values():
        if "START" in stamps:
            edges += [(stamps["START"], 1), (stamps.get("END", last_tick), -1)]
    peak = current = 0
    for _, delta in sorted(edges, key=lambda edge: (edge[0], edge[1])):
        current += delta
        peak = max(peak, current)

    mean_duration = sum(durations) / len(durations) if durations else 0.0
    return len(results), failures, peak, mean_duration


def run_step(stack: Stack, *, kind: str, side: str, repeat: int, rate: int, calls: int, limit: int | None,
             key_at_ms: int, profile_to: Path | None = None) -> StepResult:
    """Place ``calls`` SIPp calls at ``rate`` per second against ``side`` and measure them."""
    step_dir = stack.work_dir / f"{kind}-{side}-{rate}-{limit}-{repeat}"
    step_dir.mkdir(parents=True)
    scenario_path = step_dir / "caller.xml"
    scenario_path.write_text(caller_scenario(key_at_ms, step_dir), encoding="iso-8859-1")
    log_path = step_dir / "caller_logs.log"
    command = [
        SIPP_BINARY, f"{net.LOOPBACK}:{stack.asterisk.sip_port}",
        "-sf", str(scenario_path), "-nostdin",
        "-i", net.LOOPBACK, "-p", str(net.free_port(tcp=False)),
        "-mi", net.LOOPBACK, "-mp", str(net.free_port_range(4)),
        "-s", SIDES[side], "-m", str(calls), "-r", str(rate),
        "-trace_logs", "-log_file", str(log_path),
        "-trace_err", "-error_file", str(step_dir / "caller_errors.log"),
    ]  # fmt: skip
    if limit is not None:
        command += ["-l", str(limit)]

    asterisk_pid, controller_pid = stack.asterisk.pid, stack.controller.pid
    load_before = load_average()
    asterisk_before, controller_before = cpu_seconds(asterisk_pid), cpu_seconds(controller_pid)
    controller_rss_before = rss_mb(controller_pid)
    started = time.monotonic()
    with (step_dir / "sipp.out").open("wb") as output:
        sipp = subprocess.Popen(command, cwd=step_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=output, start_new_session=True)
    # The calls need calls / rate seconds to start, then each ends within its 15 s BYE wait.
    deadline = started + calls / rate + 60.0
    try:
        asterisk_rss, controller_rss, sipp_cpu = _watch_step(sipp, asterisk_pid, controller_pid, deadline, profile_to)
    finally:
        if sipp.poll() is None:
            net.stop_process_group(sipp, name="sipp-load", grace_s=3.0)
        sipp.wait()
    wall = time.monotonic() - started
    asterisk_cpu = cpu_seconds(asterisk_pid) - asterisk_before
    controller_cpu = cpu_seconds(controller_pid) - controller_before
    load_after = load_average()

    round_trip = None
    by_command: dict[str, Percentiles] = {}
    if side == "controller":
        samples = stack.controller.round_trips()
        quick = [value for command_name, values in samples.items() if command_name not in MEDIA_COMMANDS for value in values]
        round_trip = percentiles(quick)
        by_command = {name: p for name, values in sorted(samples.items()) if (p := percentiles(values)) is not None}

    log_text = log_path.read_text(encoding="iso-8859-1") if log_path.exists() else ""
    placed, failures, peak, mean_duration = classify_calls(log_text, key_at_ms)
    missing = calls - placed
    if missing > 0:
        failures["not_started"] += missing
    failed = sum(failures.values())
    succeeded = calls - failed
    side_cpu = asterisk_cpu + (controller_cpu if side == "controller" else 0.0)

    return StepResult(
        kind=kind, side=side, repeat=repeat, rate_per_s=rate, limit=limit, calls=calls, succeeded=succeeded,
        failures=dict(failures), failure_fraction=round(failed / calls, 5), peak_concurrent=peak,
        mean_duration_s=round(mean_duration, 3), wall_s=round(wall, 1),
        asterisk_cpu_ms=round(asterisk_cpu * 1000, 1), controller_cpu_ms=round(controller_cpu * 1000, 1),
        sipp_cpu_ms=round(sipp_cpu * 1000, 1),
        cpu_per_call_ms=round(side_cpu * 1000 / max(succeeded, 1), 2),
        asterisk_rss_max_mb=round(asterisk_rss, 1), controller_rss_before_mb=round(controller_rss_before, 1),
        controller_rss_max_mb=round(controller_rss, 1),
        load_before=load_before, load_after=load_after, round_trip=round_trip, round_trip_by_command=by_command,
    )


def _watch_step(sipp: subprocess.Popen[bytes], asterisk_pid: int | None, controller_pid: int | None, deadline: float,
                profile_to: Path | None) -> tuple[float, float, float]:
    """Sample RSS until SIPp exits or ``deadline`` passes, and return (Asterisk MiB, controller MiB, SIPp CPU s)."""
    profiler = None
    if profile_to is not None:
        # --nonblocking reads the controller's memory without pausing it. --gil keeps only
        # samples of the thread holding the GIL, which drops threads waiting in epoll or on
        # a queue, so the shares are shares of the controller's Python work.
        profiler = subprocess.Popen([str(PY_SPY), "record", "--pid", str(controller_pid), "--format", "raw",
                                     "--rate", "200", "--nonblocking", "--gil", "--output", str(profile_to)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    asterisk_rss = controller_rss = sipp_cpu = 0.0
    try:
        while sipp.poll() is None and time.monotonic() < deadline:
            asterisk_rss = max(asterisk_rss, rss_mb(asterisk_pid))
            controller_rss = max(controller_rss, rss_mb(controller_pid))
            try:
                sipp_cpu = cpu_seconds(sipp.pid)
            except FileNotFoundError:
                break
            time.sleep(0.25)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)
            profiler.wait(timeout=30)
    return asterisk_rss, controller_rss, sipp_cpu


# -- profile ------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")
_PROJECT_FRAME = re.compile(r"\((hwd_bridge|ivr|acd|tickets|storage|tier_sync|hotline|aiosqlite|structlog|aiomqtt)/")


def summarise_profile(path: Path, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """Return the top functions by own and by total share of py-spy's busy samples."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack_text, _, count_text = line.rpartition(" ")
        if not stack_text or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        names = []
        for frame in stack_text.split(";"):
            match = _FRAME.match(frame)
            if match is None:
                names.append(frame)
                continue
            file_name = match["file"]
            for marker in ("/site-packages/", "/lib/python3.11/", str(REPO_ROOT) + "/"):
                if marker in file_name:
                    file_name = file_name.split(marker, 1)[1]
            names.append(f"{match['function']} ({file_name})")
        own[names[-1]] += count
        for name in set(names):
            total[name] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * count / samples, 1)) for name, count in counter.most_common(top)]

    # Every busy sample passes through the event loop and the script's entry frames, so the
    # total shares list only the project's own code and its libraries.
    own_code = Counter({name: count for name, count in total.items() if _PROJECT_FRAME.search(name)})
    return {"samples": [("busy samples", float(samples))], "own": shares(own), "total": shares(own_code)} if samples else {}


# -- the run ------------------------------------------------------------------------------


def calls_for(rate: int, seconds: float) -> int:
    return max(int(rate * seconds), 10)


def run_benchmark(stack: Stack, settings: Settings) -> tuple[list[StepResult], dict[str, list[tuple[str, float]]]]:
    results: list[StepResult] = []

    def report(result: StepResult) -> None:
        results.append(result)
        print(format_step(result), flush=True)

    for repeat in range(1, settings.repeats + 1):
        # 1. Controller memory with ``held_calls`` calls held open. It runs first because
        # CPython keeps the memory it once used, so a later step would report the ladder's peak.
        report(run_step(stack, kind="held", side="controller", repeat=repeat, rate=settings.held_rate,
                        calls=settings.held_calls * 2, limit=settings.held_calls, key_at_ms=HOLD_KEY_AT_MS))

        # 2. Rate ladder: each side climbs until a step fails 0.5 % of its calls or more.
        for side in SIDES:
            for rate in settings.rates:
                result = run_step(stack, kind="rate", side=side, repeat=repeat, rate=rate,
                                  calls=calls_for(rate, settings.step_s), limit=None, key_at_ms=KEY_AT_MS)
                report(result)
                if result.failure_fraction >= FAILURE_LIMIT:
                    break

        # 3. Exactly ``concurrent_calls`` calls open at a time on each side.
        limit = settings.concurrent_calls
        for side in SIDES:
            rate = limit  # SIPp opens calls this fast, and -l holds them at the limit
            report(run_step(stack, kind="concurrent", side=side, repeat=repeat, rate=rate,
                            calls=calls_for(40, settings.step_s), limit=limit, key_at_ms=KEY_AT_MS))

    profile: dict[str, list[tuple[str, float]]] = {}
    if settings.profile and PY_SPY.exists():
        profile_path = stack.work_dir / "py-spy.raw"
        report(run_step(stack, kind="profile", side="controller", repeat=1, rate=settings.concurrent_calls,
                        calls=calls_for(40, settings.step_s), limit=settings.concurrent_calls, key_at_ms=KEY_AT_MS,
                        profile_to=profile_path))
        if profile_path.exists():
            profile = summarise_profile(profile_path)
    elif settings.profile:
        print(f"py-spy not found at {PY_SPY}; install it with `.venv/bin/pip install py-spy` for the profile step")
    return results, profile


# -- output -------------------------------------------------------------------------------


def format_step(result: StepResult) -> str:
    limit = f" -l {result.limit}" if result.limit else ""
    round_trip = f" rt p99 {result.round_trip.p99_ms:.2f} ms" if result.round_trip else ""
    failures = ",".join(f"{reason}={count}" for reason, count in result.failures.items()) or "none"
    return (f"{result.kind:<10} {result.side:<10} #{result.repeat} {result.rate_per_s:>3}/s{limit:<7} "
            f"calls {result.calls:>5} ok {result.succeeded:>5} fail {100 * result.failure_fraction:5.2f}% ({failures}) "
            f"peak {result.peak_concurrent:>4} cpu/call {result.cpu_per_call_ms:6.2f} ms "
            f"(ast {result.asterisk_cpu_ms:.0f} ctl {result.controller_cpu_ms:.0f} sipp {result.sipp_cpu_ms:.0f} ms) "
            f"rss ctl {result.controller_rss_before_mb:.1f}->{result.controller_rss_max_mb:.1f} MiB{round_trip} load {result.load_before[0]:.2f}->{result.load_after[0]:.2f}")


def summarise(results: Sequence[StepResult]) -> dict[str, object]:
    """Return the figures the targets name, per repeat, with ratios to the dialplan side."""
    summary: dict[str, object] = {}
    repeats = sorted({result.repeat for result in results if result.kind == "rate"})
    for repeat in repeats:
        passing = {side: [r for r in results if r.kind == "rate" and r.repeat == repeat and r.side == side
                          and r.failure_fraction < FAILURE_LIMIT] for side in SIDES}
        concurrent = {side: next((r for r in results if r.kind == "concurrent" and r.repeat == repeat and r.side == side), None)
                      for side in SIDES}
        held = next((r for r in results if r.kind == "held" and r.repeat == repeat), None)

        max_concurrent = {side: max((r.peak_concurrent for r in passing[side]), default=0) for side in SIDES}
        max_rate = {side: max((r.rate_per_s for r in passing[side]), default=0) for side in SIDES}
        # CPU per call at each rate both sides passed, then the median ratio over those rates.
        ratios = []
        for controller_step in passing["controller"]:
            dialplan_step = next((r for r in passing["dialplan"] if r.rate_per_s == controller_step.rate_per_s), None)
            if dialplan_step is not None and dialplan_step.cpu_per_call_ms > 0:
                ratios.append(controller_step.cpu_per_call_ms / dialplan_step.cpu_per_call_ms)
        ratios.sort()
        at_100 = {side: step.cpu_per_call_ms if step else None for side, step in concurrent.items()}
        dialplan_at_100 = concurrent["dialplan"]
        summary[f"repeat {repeat}"] = {
            "cpu_per_call_ms_at_100_concurrent": at_100,
            "cpu_ratio_at_100_concurrent": round(at_100["controller"] / at_100["dialplan"], 2)
            if at_100["controller"] and at_100["dialplan"] else None,
            "cpu_ratio_median_over_rates": round(ratios[len(ratios) // 2], 2) if ratios else None,
            "max_concurrent_below_0.5pct": max_concurrent,
            "concurrency_ratio": round(max_concurrent["controller"] / max_concurrent["dialplan"], 2)
            if max_concurrent["dialplan"] else None,
            "max_rate_below_0.5pct": max_rate,
            # The controller's AMI client parses the events of calls it does not handle too.
            "controller_cpu_per_dialplan_call_ms": round(dialplan_at_100.controller_cpu_ms / dialplan_at_100.succeeded, 2)
            if dialplan_at_100 and dialplan_at_100.succeeded else None,
            "round_trip_p99_ms_at_100_concurrent": concurrent["controller"].round_trip.p99_ms
            if concurrent["controller"] and concurrent["controller"].round_trip else None,
            "controller_rss_mb_held": held.controller_rss_max_mb if held else None,
            "controller_rss_mb_before_held": held.controller_rss_before_mb if held else None,
            "held_peak_concurrent": held.peak_concurrent if held else None,
            "held_failure_fraction": held.failure_fraction if held else None,
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run: rates 10 and 30/s, 8 s steps, 200 held calls")
    parser.add_argument("--rates", type=lambda text: tuple(int(part) for part in text.split(",")), default=None,
                        help="comma-separated call rates per second for the ladder")
    parser.add_argument("--step-s", type=float, default=None, help="seconds of calls per ladder step")
    parser.add_argument("--repeats", type=int, default=None, help="how many times to run the steps")
    parser.add_argument("--held-calls", type=int, default=None, help="concurrent calls for the memory step")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy step")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results (default var/bench/...)")
    parser.add_argument("--cprofile", type=Path, default=None,
                        help="also profile the controller with cProfile for the whole run and write the statistics here; "
                             "its CPU figures then include the profiler's overhead")
    parser.add_argument("--keep", action="store_true", help="keep the work folder with SIPp and controller logs")
    arguments = parser.parse_args()

    base = QUICK if arguments.quick else FULL
    settings = Settings(
        rates=arguments.rates or base.rates,
        step_s=arguments.step_s or base.step_s,
        repeats=arguments.repeats or base.repeats,
        concurrent_calls=base.concurrent_calls,
        held_calls=arguments.held_calls or base.held_calls,
        held_rate=base.held_rate,
        profile=base.profile and not arguments.no_profile,
    )
    configure_logging("WARNING")
    # SIGTERM ends the run like Ctrl-C, so every process it started is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    # Asterisk opens several sockets per call and inherits this limit.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    started = datetime.now(UTC)
    work_dir = Path(tempfile.mkdtemp(prefix="hotline-load-ivr-"))
    print(f"load_ivr: {started:%Y-%m-%d %H:%M} UTC, work folder {work_dir}, settings {settings}", flush=True)
    try:
        with running_stack(work_dir, cprofile=arguments.cprofile) as stack:
            machine = machine_description(stack.asterisk)
            print(json.dumps(machine, ensure_ascii=False), flush=True)
            results, profile = run_benchmark(stack, settings)
    finally:
        if not arguments.keep:
            shutil.rmtree(work_dir, ignore_errors=True)

    summary = summarise(results)
    finished = datetime.now(UTC)
    print(json.dumps(summary, indent=2), flush=True)
    if profile:
        print("controller profile (py-spy, share of busy samples):")
        for label in ("own", "total"):
            for name, share in profile[label]:
                print(f"  {label:<5} {share:5.1f}%  {name}")

    output = arguments.output or REPO_ROOT / "var" / "bench" / f"load-ivr-{started:%Y%m%dT%H%M}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({
        "started": started.isoformat(), "finished": finished.isoformat(), "command": " ".join(sys.argv),
        "settings": asdict(settings), "machine": machine, "summary": summary, "profile": profile,
        "steps": [asdict(result) for result in results],
    }, indent=2, ensure_ascii=False), encoding="utf-8")
    print(f"results written to {output}")


if __name__ == "__main__":
    main()
