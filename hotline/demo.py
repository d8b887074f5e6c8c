"""Demo and end-to-end harness: real Asterisk, SIPp, mosquitto and two node processes.

``DemoStack`` starts a city node with its own mosquitto, an Asterisk 22 instance, a
county node process and SIPp agent phones, all on loopback with free ports, and stops
everything it started, in reverse order, whatever happens. ``run_scripted_calls`` places
SIPp calls one after another and ``collect_report`` reads back what the county recorded
and what reached the city.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from hotline.privacy import mask_phone
from stack import net
from stack.asterisk import AgentEndpoint, AsteriskInstance, ensure_root
from stack.mosquitto import MosquittoBroker
from stack.rtp_events import write_voice_pcap
from stack.sipp import CallerResult, CallerStep, Dtmf, Pause, SippAgent, SippCaller
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome, CallRecord
from tickets.model import Ticket

log = structlog.get_logger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
PROMPT_AUDIO_DIR = REPO_ROOT / "prompts" / "audio" / "zh-CN"

COUNTY = {"node_id": "county-330106", "region_code": "330106"}
CITY = {"node_id": "city-330100", "region_code": "330100"}

# Synthetic roster: two agents whose skills split the menu, both able to take general calls.
AGENTS = (
    {"id": "agent1", "name": "坐席一", "endpoint": "agent1", "skills": ["dibao", "tekun", "linshi", "general"]},
    {"id": "agent2", "name": "坐席二", "endpoint": "agent2", "skills": ["ertong", "yanglao", "liulang", "zhengce", "general"]},
)

NODE_START_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 60.0


class DemoError(Exception):
    """The demo stack could not start or a component failed; the message is Chinese."""


def prompt_seconds(prompt_id: str) -> float:
    """Return the length of a built prompt, so caller scripts can key in at the right time."""
    with wave.open(str(PROMPT_AUDIO_DIR / f"{prompt_id}.wav"), "rb") as audio:
        return audio.getnframes() / audio.getframerate()


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One SIPp caller and what the hotline must do with the call."""

    label: str
    caller_number: str | None
    steps: tuple[CallerStep, ...]
    hangup_after_ms: int | None
    expected_outcome: CallOutcome
    expected_category: str | None
    expected_skill: str | None
    expects_ticket: bool

    @property
    def caller_masked(self) -> str:
        return mask_phone(self.caller_number)


def standard_calls() -> list[ScriptedCall]:
    """Return the demo's calls: three menu choices, an invalid key, a human, a hang-up in the menu."""
    welcome = prompt_seconds("welcome")
    first_key_ms = int((welcome + 1.5) * 1000)
    retry_ms = int((prompt_seconds("invalid_key") + 1.5) * 1000)
    # The caller of call 4 hangs up while talking: after the category and transfer prompts,
    # the recording notice, the ring and about one second of conversation.
    talk_hangup_ms = first_key_ms + int(
        (prompt_seconds("category_zhengce") + prompt_seconds("transfer_agent")
         + prompt_seconds("call_recording_notice") + 2.5) * 1000
    )

    def keys(*pairs: tuple[int, str]) -> tuple[CallerStep, ...]:
        steps: list[CallerStep] = []
        for pause_ms, key in pairs:
            steps += [Pause(pause_ms), Dtmf(key)]
        return tuple(steps)

    return [
        ScriptedCall("按1 低保", "13900000001", keys((first_key_ms, "1")), None,
                     CallOutcome.ANSWERED, "dibao", "dibao", True),
        ScriptedCall("按3 临时救助", "13900000002", keys((first_key_ms, "3")), None,
                     CallOutcome.ANSWERED, "linshi", "linshi", True),
        ScriptedCall("先按8（无效）再按5 养老服务", "02155501234", keys((first_key_ms, "8"), (retry_ms, "5")), None,
                     CallOutcome.ANSWERED, "yanglao", "yanglao", True),
        ScriptedCall("按7 政策咨询，通话中主动挂机", "13900000004", keys((first_key_ms, "7")), talk_hangup_ms,
                     CallOutcome.ANSWERED, "zhengce", "zhengce", True),
        ScriptedCall("按0 人工服务（未显示号码）", None, keys((first_key_ms, "0")), None,
                     CallOutcome.ANSWERED, None, "general", True),
        ScriptedCall("在菜单中挂机", "13900000006", (), first_key_ms + 2000,
                     CallOutcome.ABANDONED_IN_MENU, None, None, False),
    ]


@dataclass(slots=True)
class CallReport:
    script: ScriptedCall
    sipp: CallerResult | None
    record: CallRecord | None
    county_ticket: Ticket | None
    city_ticket: Ticket | None
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


class _NodeProcess:
    """One ``hotline run`` process with its own log file and process group.

    ``extra_args`` go to ``hotline run``; ``command_prefix`` runs the command through
    another program, such as ``nsenter`` into a private mount namespace.
    """

    def __init__(self, name: str, config: Path, work_dir: Path, *, extra_args: Sequence[str] = (),
                 command_prefix: Sequence[str] = ()):
        self.name = name
        self.config = config
        self.extra_args = tuple(extra_args)
        self.command_prefix = tuple(command_prefix)
        self.ready_file = work_dir / f"{name}.ready"
        self.log_path = work_dir / f"{name}.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        log_file = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "hotline", "run", "--config", str(self.config),
             "--ready-file", str(self.ready_file), "--json-logs", *self.extra_args],
            stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True,
        )
        log_file.close()

        deadline = time.monotonic() + NODE_START_TIMEOUT_S
        while not self.ready_file.exists():
            if self._process.poll() is not None:
                raise DemoError(f"节点 {self.name} 启动失败（退出码 {self._process.returncode}），日志：{self.log_path}\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DemoError(f"节点 {self.name} 在 {NODE_START_TIMEOUT_S:.0f} 秒内没有就绪，日志：{self.log_path}\n{self.log_tail()}")
            time.sleep(0.1)

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        """Kill the node with SIGKILL, as a crash would, and wait for it to be gone."""
        assert self._process is not None
        os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait(timeout=5)

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        os.killpg(self._process.pid, signal.SIGTERM)
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            log.warning("node did not stop on SIGTERM, killing", node=self.name, pid=self._process.pid)
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait(timeout=5)


def _write_yaml(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


class DemoStack:
    """Everything a county and a city need, started on loopback and stopped in reverse order.

    With ``standby`` a second county controller (``hotline run --standby``) shares the
    county database and takes the calls the primary cannot. ``county_database`` moves the
    county database (default ``work_dir/county.sqlite3``), ``county_args`` are extra
    ``hotline run`` options of both county controllers, and ``county_command_prefix`` runs
    them through another program.
    """

    def __init__(self, work_dir: Path, *, agent_talk_ms: int = 3000, standby: bool = False,
                 county_database: Path | None = None, county_args: Sequence[str] = (),
                 county_command_prefix: Sequence[str] = ()):
        self.work_dir = work_dir
        self.agent_talk_ms = agent_talk_ms
        self.with_standby = standby
        self.county_database = county_database or work_dir / "county.sqlite3"
        self.county_args = tuple(county_args)
        self.county_command_prefix = tuple(county_command_prefix)
        self.asterisk: AsteriskInstance | None = None
        self.city_broker: MosquittoBroker | None = None
        self.county: _NodeProcess | None = None
        self.standby: _NodeProcess | None = None
        self.county_config: Path | None = None
        self.city_config: Path | None = None
        self.agents: list[SippAgent] = []
        self._exit = ExitStack()

    def __enter__(self) -> DemoStack:
        try:
            self._start()
        except BaseException:
            self._exit.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._exit.close()

    def _start(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        if not (PROMPT_AUDIO_DIR / "welcome.wav").exists():
            raise DemoError(f"找不到提示音音频 {PROMPT_AUDIO_DIR}，请先运行 make prompts")
        root = ensure_root()

        # City tier: its broker, then its node.
        broker = MosquittoBroker(port=0, persistence_dir=self.work_dir / "city-broker", work_dir=self.work_dir / "city-broker")
        broker.start()
        self.city_broker = broker
        self._exit.callback(broker.cleanup)
        self._exit.callback(broker.stop)

        self.city_config = _write_yaml(self.work_dir / "city.yaml", f"""\
node_id: {CITY['node_id']}
tier: city
region_code: "{CITY['region_code']}"
database: {self.work_dir / 'city.sqlite3'}
broker:
  port: {broker.port}
""")
        city = _NodeProcess("city", self.city_config, self.work_dir)
        self._exit.callback(city.stop)
        city.start()

        # County tier: Asterisk with agent accounts, then the county node.
        passwords = {agent["id"]: secrets.token_urlsafe(12) for agent in AGENTS}
        fastagi_port = net.free_port()
        standby_port = net.free_port() if self.with_standby else None
        self.asterisk = AsteriskInstance.with_free_ports(
            f"demo{os.getpid()}", root=root, fastagi_port=fastagi_port, standby_fastagi_port=standby_port,
            agents=[AgentEndpoint(agent["endpoint"], agent["endpoint"], passwords[agent["id"]]) for agent in AGENTS],
            prompt_dir=PROMPT_AUDIO_DIR, fallback_prompt_id="system_error", test_extensions=False,
        )
        self._exit.callback(self.asterisk.stop, remove_files=True)
        self.asterisk.start()

        secret_file = self.work_dir / "ami-secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(self.asterisk.ami.secret, encoding="utf-8")
        roster = _write_yaml(self.work_dir / "roster.yaml", "".join(
            f"- {{id: {a['id']}, name: {a['name']}, endpoint: {a['endpoint']}, skills: [{', '.join(a['skills'])}]}}\n"
            for a in AGENTS
        ))
        # A short wrap-up keeps the demo's back-to-back calls quick; the default is 15 s.
        acd_settings = _write_yaml(self.work_dir / "acd.yaml", "wrap_up_s: 2\n")
        standby_line = f"  standby_fastagi: {{port: {standby_port}}}\n" if standby_port is not None else ""
        self.county_config = _write_yaml(self.work_dir / "county.yaml", f"""\
node_id: {COUNTY['node_id']}
tier: county
region_code: "{COUNTY['region_code']}"
database: {self.county_database}
parent:
  node_id: {CITY['node_id']}
  broker: {{port: {broker.port}}}
telephony:
  fastagi: {{port: {fastagi_port}}}
{standby_line}  ami: {{port: {self.asterisk.ami.port}, username: {self.asterisk.ami.username}, secret_file: {secret_file}}}
  flow: {REPO_ROOT / 'flows' / '12349.yaml'}
  prompt_catalog: {REPO_ROOT / 'prompts' / 'zh-CN.yaml'}
  prompt_sound_dir: {self.asterisk.instance_dir / 'sounds'}
  roster: {roster}
  calendar_overrides: {REPO_ROOT / 'config' / 'calendar-overrides.yaml'}
  acd_settings: {acd_settings}
  call_recordings_dir: {self.asterisk.host_dir / 'spool' / 'monitor'}
""")
        county = _NodeProcess("county", self.county_config, self.work_dir, extra_args=self.county_args,
                              command_prefix=self.county_command_prefix)
        self._exit.callback(county.stop)
        county.start()
        self.county = county

        if self.with_standby:
            standby = _NodeProcess("county-standby", self.county_config, self.work_dir,
                                   extra_args=("--standby", *self.county_args),
                                   command_prefix=self.county_command_prefix)
            self._exit.callback(standby.stop)
            standby.start()
            self.standby = standby

        # Agent phones register last, so the county receives their registrations over AMI. Each sends
        # a steady tone while it talks, so the call recordings the demo leaves have sound.
        voice = write_voice_pcap(self.work_dir / "agent-voice.pcap", self.agent_talk_ms, after_presses=0)
        for agent in AGENTS:
            phone = SippAgent(endpoint_id=agent["endpoint"], username=agent["endpoint"], password=passwords[agent["id"]],
                              registrar_port=self.asterisk.sip_port, talk_ms=self.agent_talk_ms, audio_pcap=voice,
                              work_dir=self.work_dir / f"sipp-{agent['id']}", keep_files=True)
            self._exit.callback(phone.stop)
            phone.start()
            self.agents.append(phone)

    def caller(self, script: ScriptedCall) -> SippCaller:
        """Return a SIPp caller for one scripted call, not yet started."""
        assert self.asterisk is not None
        return SippCaller(
            target_port=self.asterisk.sip_port, caller_number=script.caller_number, steps=script.steps,
            hangup_after_ms=script.hangup_after_ms, wait_bye_timeout_ms=150_000,
        )

    def place_call(self, script: ScriptedCall, *, timeout_s: float = 180.0) -> CallerResult | None:
        """Place one scripted SIPp call and wait until it has ended."""
        results = self.caller(script).run(timeout_s=timeout_s)
        return results[0] if results else None


async def _read_node(config_db: Path, node: dict[str, str]) -> tuple[list[CallRecord], dict[str, Ticket], int]:
    async with await TicketStore.open(config_db, node["node_id"], node["region_code"]) as store:
        calls = await store.list_calls(limit=1000)
        tickets = {ticket.ticket_id: ticket for ticket in await store.list_tickets()}
        pending = await store.count_pending_outbox()
    return calls, tickets, pending


async def wait_for_city(work_dir: Path, timeout_s: float = SYNC_TIMEOUT_S, *,
                        county_database: Path | None = None) -> None:
    """Wait until the county's outbox is empty and the city holds every county ticket event."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, county_tickets, pending = await _read_node(county_database or work_dir / "county.sqlite3", COUNTY)
        _, city_tickets, _ = await _read_node(work_dir / "city.sqlite3", CITY)
        behind = [t for t in county_tickets.values()
                  if t.ticket_id not in city_tickets or city_tickets[t.ticket_id].last_seq < t.last_seq]
        if pending == 0 and not behind:
            return
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.2)


async def collect_report(work_dir: Path, scripts: Sequence[ScriptedCall],
                         sipp_results: Sequence[CallerResult | None]) -> list[CallReport]:
    """Match each scripted call with what the county stored and what reached the city."""
    calls, county_tickets, _ = await _read_node(work_dir / "county.sqlite3", COUNTY)
    _, city_tickets, _ = await _read_node(work_dir / "city.sqlite3", CITY)
    by_caller = {record.caller_masked: record for record in sorted(calls, key=lambda r: r.started_at)}

    reports = []
    for script, sipp in zip(scripts, sipp_results, strict=True):
        record = by_caller.get(script.caller_masked)
        county_ticket = county_tickets.get(record.ticket_id) if record and record.ticket_id else None
        city_ticket = city_tickets.get(record.ticket_id) if record and record.ticket_id else None
        report = CallReport(script, sipp, record, county_ticket, city_ticket)
        _check(report)
        reports.append(report)
    return reports


def _check(report: CallReport) -> None:
    script, record = report.script, report.record
    if report.sipp is None or not report.sipp.completed:
        report.problems.append("SIPp 通话没有正常结束")
    if record is None:
        report.problems.append("县级没有这通电话的通话记录")
        return
    if record.outcome is not script.expected_outcome:
        report.problems.append(f"结果应为 {script.expected_outcome.value}，实际为 {record.outcome.value if record.outcome else '无'}")
    actual_category = record.category.value if record.category else None
    if actual_category != script.expected_category:
        report.problems.append(f"类别应为 {script.expected_category}，实际为 {actual_category}")
    if record.skill != script.expected_skill:
        report.problems.append(f"技能组应为 {script.expected_skill}，实际为 {record.skill}")
    if script.expects_ticket:
        if report.county_ticket is None:
            report.problems.append("县级没有生成工单")
        elif report.city_ticket is None:
            report.problems.append("工单没有到达市级")
        elif report.city_ticket.last_seq != report.county_ticket.last_seq:
            report.problems.append(f"市级只收到 {report.city_ticket.last_seq}/{report.county_ticket.last_seq} 个工单事件")
    elif record.ticket_id is not None:
        report.problems.append("不应生成工单，却生成了")


def default_work_dir() -> Path:
    return REPO_ROOT / "var" / "demo"


def fresh_work_dir(path: Path) -> Path:
    """Empty ``path`` (only a folder this harness made before) and return it."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
