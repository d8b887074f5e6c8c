"""Stack tooling: real SIPp processes as citizens calling the hotline and as agents answering it.

``SippCaller`` generates a UAC scenario that dials one extension with PCMU and RFC 4733
(RFC 2833) digits, runs a script of pauses and key presses, and reports per call who hung
up and with which Q.850 cause. ``SippAgent`` registers an agent endpoint with digest
authentication and answers calls on a SIPp UAS until stopped. Everything binds 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import enum
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from xml.sax.saxutils import escape

import structlog

from stack import net
from stack.rtp_events import EVENT_CODES, write_event_pcap, write_voice_pcap

log = structlog.get_logger(__name__)

SIPP_BINARY = "sipp"
# Each key press is a 160 ms event; the pause after it lets the event end before the next.
_DTMF_STEP_MS = 200
_CALLER_NUMBER = re.compile(r"^\+?[0-9*#]{1,32}$")
_SIP_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
ANONYMOUS = "anonymous"

# SIPp exit codes (SIPp 3.6 manual, "Exit codes").
_EXIT_ALL_CALLS_SUCCEEDED = 0
_EXIT_SOME_CALLS_FAILED = 1


class SippError(Exception):
    """A SIPp process could not be started, failed, or did not finish in time."""


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``ms`` milliseconds; a BYE from the far end ends the wait and the call."""

    ms: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    """Press one key (0-9, * or #) as an RFC 4733 telephone-event."""

    digit: str

    def __post_init__(self) -> None:
        if self.digit not in EVENT_CODES:
            raise ValueError(f"invalid DTMF digit {self.digit!r}: use 0-9, * or #")


@dataclass(frozen=True, slots=True)
class Voice:
    """Send ``ms`` milliseconds of a steady tone, as a caller speaking a message would.

    A caller sends at most one tone, after its last key press: see
    ``stack.rtp_events.voice_packets``.
    """

    ms: int


CallerStep = Pause | Dtmf | Voice


def dial_keys(keys: str, *, gap_ms: int = 0) -> tuple[CallerStep, ...]:
    """Return steps pressing each key of ``keys`` with ``gap_ms`` of silence after each."""

    steps: list[CallerStep] = []
    for key in keys:
        steps.append(Dtmf(key))
        if gap_ms:
            steps.append(Pause(gap_ms))
    return tuple(steps)


class EndedBy(enum.Enum):
    CALLER = "caller"  # SIPp sent the BYE
    REMOTE = "remote"  # Asterisk sent the BYE


@dataclass(frozen=True, slots=True)
class CallerResult:
    """Outcome of one SIPp call.

    ``completed`` means the scenario ran to its end. ``cause`` is the Q.850 cause from the
    Reason header of Asterisk's BYE, None when the caller hung up or no header came.
    """

    call_id: str
    answered: bool
    completed: bool
    ended_by: EndedBy | None
    cause: int | None


_LOG_LINE = re.compile(r"^(?P<event>START|ANSWERED|END) (?P<call_id>\S+)(?: by=(?P<by>\w+) cause=(?P<cause>\d*))?")


def parse_caller_log(text: str) -> list[CallerResult]:
    """Build per-call results from the lines the caller scenario's log actions wrote."""

    order: list[str] = []
    answered: set[str] = set()
    ended: dict[str, tuple[EndedBy, int | None]] = {}

    for line in text.splitlines():
        match = _LOG_LINE.match(line.strip())
        if match is None:
            continue

        call_id = match["call_id"]
        if match["event"] == "START":
            order.append(call_id)
        elif match["event"] == "ANSWERED":
            answered.add(call_id)
        else:
            cause = int(match["cause"]) if match["cause"] else None
            ended[call_id] = (EndedBy(match["by"]), cause)

    results = []
    for call_id in order:
        ended_by, cause = ended.get(call_id, (None, None))
        results.append(CallerResult(call_id, call_id in answered, call_id in ended, ended_by, cause))
    return results


# -- scenario text ----------------------------------------------------------------------

_SDP_PCMU = """v=0
o=- 53655765 2353687637 IN IP4 [media_ip]
s=-
c=IN IP4 [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-16
a=sendrecv
"""

_CAPTURE_CAUSE = (
    '<action><ereg regexp="cause=([0-9]+)" search_in="hdr" header="Reason:" check_it="false" assign_to="reason,cause"/></action>'
)

_REPLY_200 = """SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0
"""


def _cdata(text: str) -> str:
    return f"<![CDATA[\n{text}\n]]>"


def _log(message: str, *, next_label: str | None = None) -> str:
    next_attribute = f' next="{next_label}"' if next_label else ""
    return f'<nop{next_attribute}><action><log message="{message}"/></action></nop>'


def _wait_for_bye(timeout_ms: int, on_timeout: str) -> str:
    """Return a receive of the far end's BYE that gives up after ``timeout_ms`` and jumps on."""

    return (
        f'<recv request="BYE" timeout="{timeout_ms}" ontimeout="{on_timeout}" next="remote_bye">{_CAPTURE_CAUSE}</recv>'
        f'\n<label id="{on_timeout}"/>'
    )


def build_caller_scenario(
    *,
    caller_number: str | None,
    steps: Sequence[CallerStep],
    hangup_after_ms: int | None,
    wait_bye_timeout_ms: int,
    pcap_dir: Path,
) -> str:
    """Return the UAC scenario XML for one caller script.

    With ``hangup_after_ms`` the caller sends BYE that long after the last step unless the
    far end hangs up first. Without it the caller waits up to ``wait_bye_timeout_ms`` for
    the far end's BYE, then hangs up itself.
    """

    if caller_number is None or caller_number == ANONYMOUS:
        from_header = '"Anonymous" <sip:anonymous@anonymous.invalid>'
        contact_user = ANONYMOUS
    else:
        if not _CALLER_NUMBER.match(caller_number):
            raise ValueError(f"invalid caller number {caller_number!r}: use up to 32 digits, '*' or '#', optionally after '+'")
        from_header = f"<sip:{escape(caller_number)}@[local_ip]>"
        contact_user = escape(caller_number)
    from_line = f"From: {from_header};tag=[pid]SIPpTag00[call_number]"
    contact_line = f"Contact: <sip:{contact_user}@[local_ip]:[local_port]>"

    invite = f"""INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{from_line}
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
{contact_line}
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{_SDP_PCMU}"""

    ack = f"""ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{from_line}
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
{contact_line}
Max-Forwards: 70
Content-Length: 0
"""

    bye = f"""BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{from_line}
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
{contact_line}
Max-Forwards: 70
Content-Length: 0
"""

    parts = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>',
        '<scenario name="hotline caller">',
        _log("START [call_id]"),
        f'<send retrans="500">{_cdata(invite)}</send>',
        '<recv response="100" optional="true"/>',
        '<recv response="180" optional="true"/>',
        '<recv response="183" optional="true"/>',
        '<recv response="200" rtd="true" rrs="true"/>',
        f"<send>{_cdata(ack)}</send>",
        _log("ANSWERED [call_id]"),
    ]

    voices = [index for index, step in enumerate(steps) if isinstance(step, Voice)]
    if len(voices) > 1 or (voices and any(isinstance(step, Dtmf) for step in steps[voices[0]:])):
        raise ValueError("a caller sends at most one tone (Voice), after its last key press (Dtmf)")

    # Every wait is a BYE receive with a timeout, so a far-end hangup ends any step.
    presses = 0
    for index, step in enumerate(steps):
        if isinstance(step, Voice):
            pcap = write_voice_pcap(pcap_dir / f"voice{index}.pcap", step.ms, after_presses=presses)
            parts.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
            parts.append(_wait_for_bye(step.ms, f"step{index}"))
        elif isinstance(step, Dtmf):
            pcap = write_event_pcap(pcap_dir / f"press{presses}.pcap", step.digit, press_index=presses)
            presses += 1
            parts.append(f'<nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
            parts.append(_wait_for_bye(_DTMF_STEP_MS, f"step{index}"))
        elif step.ms > 0:
            parts.append(_wait_for_bye(step.ms, f"step{index}"))

    if hangup_after_ms is not None:
        parts.append(_wait_for_bye(max(hangup_after_ms, 1), "caller_bye"))
    else:
        parts.append(_wait_for_bye(wait_bye_timeout_ms, "caller_bye"))

    parts += [
        f'<send retrans="500">{_cdata(bye)}</send>',
        '<recv response="200" crlf="true"/>',
        _log("END [call_id] by=caller cause=", next_label="done"),
        '<label id="remote_bye"/>',
        f"<send>{_cdata(_REPLY_200)}</send>",
        _log("END [call_id] by=remote cause=[$cause] reason=[$reason]"),
        '<label id="done"/>',
        "</scenario>",
    ]
    return "\n".join(parts) + "\n"


def build_endpoint_call_scenario(*, endpoint_id: str, target: str, extra_headers: Sequence[str] = ()) -> str:
    """Return a UAC scenario for one call placed from an account on the switch.

    The first INVITE is challenged; the second carries the digest credentials (``-au`` and
    ``-ap``). The call then waits for the switch's BYE. The log gets ``ANSWERED <call id>``
    and ``ENDED <call id>``. ``extra_headers`` are whole header lines added to the INVITE.
    """
    for line in extra_headers:
        if "\n" in line or ":" not in line:
            raise ValueError(f"invalid SIP header line {line!r}")
    from_line = f"From: <sip:{endpoint_id}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]"
    headers = "".join(f"{line}\n" for line in extra_headers)

    def invite(cseq: int, authorization: str) -> str:
        return f"""INVITE sip:{target}@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
{from_line}
To: <sip:{target}@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: {cseq} INVITE
Contact: <sip:{endpoint_id}@[local_ip]:[local_port]>
{headers}{authorization}Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{_SDP_PCMU}"""

    def ack(cseq: int) -> str:
        return f"""ACK sip:{target}@[remote_ip]:[remote_port] SIP/2.0
[last_Via:]
{from_line}
[last_To:]
Call-ID: [call_id]
CSeq: {cseq} ACK
Max-Forwards: 70
Content-Length: 0
"""

    return "\n".join([
        '<?xml version="1.0" encoding="ISO-8859-1" ?>',
        '<scenario name="call from an account">',
        f'<send retrans="500">{_cdata(invite(1, ""))}</send>',
        '<recv response="100" optional="true"/>',
        '<recv response="401" auth="true"/>',
        f"<send>{_cdata(ack(1))}</send>",
        f'<send retrans="500">{_cdata(invite(2, "[authentication]" + chr(10)))}</send>',
        '<recv response="100" optional="true"/>',
        '<recv response="180" optional="true"/>',
        '<recv response="183" optional="true"/>',
        '<recv response="200" rtd="true"/>',
        f"<send>{_cdata(ack(2))}</send>",
        _log("ANSWERED [call_id]"),
        '<recv request="BYE"/>',
        f"<send>{_cdata(_REPLY_200)}</send>",
        _log("ENDED [call_id]"),
        "</scenario>",
    ]) + "\n"


def place_endpoint_call(*, sip_port: int, username: str, password: str, scenario: str, work_dir: Path,
                        timeout_s: float) -> str:
    """Run one call of ``scenario`` (see ``build_endpoint_call_scenario``) to the end; return SIPp's log.

    Raises ``SippError`` with SIPp's errors when the call did not complete.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    scenario_file = work_dir / "call.xml"
    scenario_file.write_text(scenario, encoding="iso-8859-1")
    log_file = work_dir / "call_logs.log"
    errors = work_dir / "call_errors.log"
    command = [
        SIPP_BINARY, f"{net.LOOPBACK}:{sip_port}",
        "-i", net.LOOPBACK, "-p", str(net.free_port(tcp=False)),
        "-mi", net.LOOPBACK, "-mp", str(net.free_port_range(4)),
        "-au", username, "-ap", password,
        "-m", "1", "-sf", str(scenario_file), "-nostdin",
        "-trace_logs", "-log_file", str(log_file),
        "-trace_err", "-error_file", str(errors),
    ]  # fmt: skip
    result = subprocess.run(command, cwd=work_dir, capture_output=True, timeout=timeout_s, check=False)
    if result.returncode != _EXIT_ALL_CALLS_SUCCEEDED:
        detail = errors.read_text(errors="replace")[-1500:] if errors.exists() else result.stderr.decode(errors="replace")
        raise SippError(f"call from {username} failed with SIPp exit code {result.returncode}: {detail}")
    return log_file.read_text(encoding="iso-8859-1")


def build_register_scenario(*, endpoint_id: str, contact_port: int, expires_s: int) -> str:
    """Return a UAC scenario that registers ``endpoint_id`` with a digest-authenticated REGISTER."""

    def register(cseq: int, authorization: str) -> str:
        return f"""REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{endpoint_id}@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:{endpoint_id}@[remote_ip]>
Call-ID: [call_id]
CSeq: {cseq} REGISTER
Contact: <sip:{endpoint_id}@[local_ip]:{contact_port}>
Expires: {expires_s}
Max-Forwards: 70
{authorization}Content-Length: 0
"""

    return "\n".join(
        [
            '<?xml version="1.0" encoding="ISO-8859-1" ?>',
            '<scenario name="hotline agent register">',
            f'<send retrans="500">{_cdata(register(1, ""))}</send>',
            '<recv response="401" auth="true"/>',
            f'<send retrans="500">{_cdata(register(2, "[authentication]" + chr(10)))}</send>',
            '<recv response="200"/>',
            "</scenario>",
        ]
    ) + "\n"


def build_agent_scenario(*, endpoint_id: str, ring_ms: int, talk_ms: int | None, audio_pcap: Path | None,
                         log_headers: tuple[str, ...] = ()) -> str:
    """Return the UAS scenario of an agent phone: ring, answer with PCMU, then wait for or send BYE.

    The phone replies to a CANCEL during ringing with 200, and to the INVITE with 487. Each header
    named in ``log_headers`` is written to the log as ``HEADER <call id> <name> <value>``
    for every INVITE (value empty when the INVITE lacks it).
    """
    for name in log_headers:
        if not _HEADER_NAME.match(name):
            raise ValueError(f"invalid SIP header name {name!r}")

    contact_line = f"Contact: <sip:{endpoint_id}@[local_ip]:[local_port]>"
    local_tag = "tag=[pid]SIPpTag01[call_number]"
    capture_invite = (
        "<action>"
        '<ereg regexp=".*" search_in="hdr" header="From:" assign_to="remote_from"/>'
        '<ereg regexp="sip:[^>;]*" search_in="hdr" header="Contact:" assign_to="remote_contact"/>'
        '<ereg regexp="[0-9]+" search_in="hdr" header="CSeq:" assign_to="invite_cseq"/>'
        + "".join(f'<ereg regexp="[^ ].*" search_in="hdr" header="{name}:" assign_to="header{index}"/>'
                  for index, name in enumerate(log_headers))
        + "</action>"
    )
    header_logs = "".join(f'<log message="HEADER [call_id] {name} [$header{index}]"/>'
                          for index, name in enumerate(log_headers))

    ringing = f"""SIP/2.0 180 Ringing
[last_Via:]
[last_From:]
[last_To:];{local_tag}
[last_Call-ID:]
[last_CSeq:]
{contact_line}
Content-Length: 0
"""

    answer = f"""SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];{local_tag}
[last_Call-ID:]
[last_CSeq:]
{contact_line}
Content-Type: application/sdp
Content-Length: [len]

{_SDP_PCMU}"""

    bye = f"""BYE [$remote_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:{endpoint_id}@[local_ip]:[local_port]>;{local_tag}
To:[$remote_from]
Call-ID: [call_id]
CSeq: 1 BYE
{contact_line}
Max-Forwards: 70
Content-Length: 0
"""

    request_terminated = f"""SIP/2.0 487 Request Terminated
[last_Via:]
[last_From:]
[last_To:];{local_tag}
[last_Call-ID:]
CSeq: [$invite_cseq] INVITE
Content-Length: 0
"""

    play_audio = f'<exec play_pcap_audio="{audio_pcap}"/>' if audio_pcap is not None else ""
    if talk_ms is None:
        wait_for_bye = '<recv request="BYE"/>'
    else:
        wait_for_bye = f'<recv request="BYE" timeout="{max(talk_ms, 1)}" ontimeout="agent_bye"/>'

    return "\n".join(
        [
            '<?xml version="1.0" encoding="ISO-8859-1" ?>',
            '<scenario name="hotline agent">',
            f'<recv request="INVITE" crlf="true">{capture_invite}</recv>',
            f"<nop><action>{header_logs}</action></nop>" if header_logs else "",
            f"<send>{_cdata(ringing)}</send>",
            f'<recv request="CANCEL" timeout="{max(ring_ms, 1)}" ontimeout="answer" next="cancelled"/>',
            '<label id="answer"/>',
            f'<send retrans="500">{_cdata(answer)}</send>',
            '<recv request="ACK" rtd="true" crlf="true"/>',
            f'<nop><action><log message="ANSWERED [call_id]"/>{play_audio}</action></nop>',
            wait_for_bye,
            f"<send>{_cdata(_REPLY_200)}</send>",
            _log("END [call_id] by=remote", next_label="done"),
            '<label id="agent_bye"/>',
            f'<send retrans="500">{_cdata(bye)}</send>',
            '<recv response="200"/>',
            _log("END [call_id] by=agent", next_label="done"),
            '<label id="cancelled"/>',
            f"<send>{_cdata(_REPLY_200)}</send>",
            f"<send>{_cdata(request_terminated)}</send>",
            '<recv request="ACK"/>',
            _log("CANCELLED [call_id]"),
            '<label id="done"/>',
            "</scenario>",
        ]
    ) + "\n"


# -- processes --------------------------------------------------------------------------


class _SippProcess:
    """One SIPp child in its own process group, with its scenario and trace files in ``work_dir``."""

    def __init__(self, name: str, work_dir: Path, scenario: str, arguments: list[str]) -> None:
        self.name = name
        self.work_dir = work_dir
        self.scenario_path = work_dir / f"{name}.xml"
        self.log_path = work_dir / f"{name}_logs.log"
        self.error_path = work_dir / f"{name}_errors.log"
        self.stat_path = work_dir / f"{name}_stat.csv"
        self.output_path = work_dir / f"{name}.out"
        self.scenario_path.write_text(scenario, encoding="iso-8859-1")

        self.command = [
            SIPP_BINARY,
            *arguments,
            "-sf", str(self.scenario_path),
            "-nostdin",
            "-trace_logs", "-log_file", str(self.log_path),
            "-trace_err", "-error_file", str(self.error_path),
            "-trace_stat", "-stf", str(self.stat_path), "-fd", "1",
        ]  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.work_dir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=output,
                start_new_session=True,
            )
        log.debug("sipp_started", name=self.name, pid=self.process.pid)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            self.stop()
            raise SippError(f"SIPp {self.name} did not finish within {timeout_s:.0f} s. {self.diagnosis()}") from error

    def stop(self) -> None:
        if self.process is not None:
            net.stop_process_group(self.process, name=f"sipp:{self.name}", grace_s=3.0)

    def read_log(self) -> str:
        return self.log_path.read_text(encoding="iso-8859-1") if self.log_path.exists() else ""

    def diagnosis(self) -> str:
        parts = []
        for path in (self.output_path, self.error_path):
            if path.exists() and path.stat().st_size:
                parts.append(f"{path.name}: {path.read_text(errors='replace')[-1500:]}")
        return " ".join(parts) or "SIPp wrote no errors."


def _make_work_dir(prefix: str, work_dir: Path | None) -> tuple[Path, bool]:
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        return work_dir, False
    return Path(tempfile.mkdtemp(prefix=prefix)), True


@dataclass
class SippCaller:
    """Citizens calling the switch: ``calls`` SIPp calls at ``rate_per_s``, each running ``steps``.

    ``caller_number`` goes into the From header; None or ``"anonymous"`` sends an anonymous
    From. Trace files stay in ``work_dir`` (a new temporary folder when None, removed by
    ``close()`` unless ``keep_files``).
    """

    target_port: int
    dialed: str = "12349"
    caller_number: str | None = "13800138000"
    steps: Sequence[CallerStep] = ()
    hangup_after_ms: int | None = None
    wait_bye_timeout_ms: int = 30_000
    calls: int = 1
    rate_per_s: float = 10.0
    max_concurrent: int | None = None
    work_dir: Path | None = None
    keep_files: bool = False
    _sipp: _SippProcess | None = field(default=None, init=False, repr=False)
    _owns_dir: bool = field(default=False, init=False, repr=False)

    def start(self) -> None:
        """Start SIPp; the calls run in the background until ``wait()``."""

        if self._sipp is not None:
            raise SippError("this SippCaller was already started")
        if not _SIP_USER.match(self.dialed):
            raise ValueError(f"invalid dialed extension {self.dialed!r}")

        self.work_dir, self._owns_dir = _make_work_dir("sipp-caller-", self.work_dir)
        scenario = build_caller_scenario(
            caller_number=self.caller_number,
            steps=self.steps,
            hangup_after_ms=self.hangup_after_ms,
            wait_bye_timeout_ms=self.wait_bye_timeout_ms,
            pcap_dir=self.work_dir,
        )

        arguments = [
            f"{net.LOOPBACK}:{self.target_port}",
            "-i", net.LOOPBACK,
            "-p", str(net.free_port(tcp=False)),
            "-mi", net.LOOPBACK,
            "-mp", str(net.free_port_range(4)),
            "-s", self.dialed,
            "-m", str(self.calls),
            "-r", f"{self.rate_per_s:g}",
        ]  # fmt: skip
        if self.max_concurrent is not None:
            arguments += ["-l", str(self.max_concurrent)]

        self._sipp = _SippProcess("caller", self.work_dir, scenario, arguments)
        self._sipp.start()

    def wait(self, timeout_s: float = 60.0) -> list[CallerResult]:
        """Wait for SIPp to finish all calls and return one result per started call."""

        if self._sipp is None:
            raise SippError("start() the SippCaller before waiting for it")

        exit_code = self._sipp.wait(timeout_s)
        if exit_code not in (_EXIT_ALL_CALLS_SUCCEEDED, _EXIT_SOME_CALLS_FAILED):
            raise SippError(f"SIPp caller exited with code {exit_code}. {self._sipp.diagnosis()}")

        results = parse_caller_log(self._sipp.read_log())
        if len(results) < self.calls:
            raise SippError(
                f"SIPp caller started {len(results)} of {self.calls} calls (exit code {exit_code}). {self._sipp.diagnosis()}"
            )

        failed = [result for result in results if not result.completed]
        if failed:
            log.warning("sipp_calls_failed", failed=len(failed), calls=len(results), diagnosis=self._sipp.diagnosis())
        return results

    def run(self, timeout_s: float = 60.0) -> list[CallerResult]:
        """Start the calls, wait for them and clean up; return one result per call."""

        try:
            self.start()
            return self.wait(timeout_s)
        finally:
            self.close()

    async def run_async(self, timeout_s: float = 60.0) -> list[CallerResult]:
        """Run ``run`` in a worker thread so the event loop keeps serving, e.g. a FastAGI server."""

        return await asyncio.to_thread(self.run, timeout_s)

    def diagnosis(self) -> str:
        """Return SIPp's error output, for assertion messages."""

        return self._sipp.diagnosis() if self._sipp is not None else "SIPp was not started."

    def close(self) -> None:
        """Stop SIPp if it still runs and remove the temporary work folder."""

        if self._sipp is not None:
            self._sipp.stop()
        if self._owns_dir and not self.keep_files and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)


class SippAgent:
    """An agent phone: registers ``endpoint_id`` to Asterisk and answers calls until stopped.

    Each call rings ``ring_ms``, is answered with PCMU, optionally plays ``audio_pcap``,
    then waits for the far end's BYE or, with ``talk_ms``, hangs up after that long.
    With ``register=False`` it only answers, for endpoints with a static contact on
    ``contact_port``.
    """

    def __init__(
        self,
        *,
        endpoint_id: str,
        username: str,
        password: str,
        registrar_port: int,
        ring_ms: int = 200,
        talk_ms: int | None = None,
        audio_pcap: Path | None = None,
        register: bool = True,
        contact_port: int | None = None,
        expires_s: int = 3600,
        work_dir: Path | None = None,
        keep_files: bool = False,
        log_headers: tuple[str, ...] = (),
    ) -> None:
        if not _SIP_USER.match(endpoint_id):
            raise ValueError(f"invalid endpoint_id {endpoint_id!r}")

        self.endpoint_id = endpoint_id
        self.username = username
        self._password = password
        self.registrar_port = registrar_port
        self.ring_ms = ring_ms
        self.talk_ms = talk_ms
        self.audio_pcap = audio_pcap
        self.register = register
        self.contact_port = contact_port if contact_port is not None else net.free_port(tcp=False)
        self.expires_s = expires_s
        self.work_dir = work_dir
        self.keep_files = keep_files
        self.log_headers = log_headers
        self._owns_dir = False
        self._uas: _SippProcess | None = None

    @property
    def password(self) -> str:
        """The digest password, for a test that places a call from this agent's account."""
        return self._password

    @property
    def contact_uri(self) -> str:
        """SIP URI the agent answers on; use it as a static contact when not registering."""

        return f"sip:{self.endpoint_id}@{net.LOOPBACK}:{self.contact_port}"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start answering and, unless ``register=False``, register; raise ``SippError`` on failure."""

        if self._uas is not None:
            raise SippError(f"agent {self.endpoint_id} was already started")
        self.work_dir, self._owns_dir = _make_work_dir(f"sipp-agent-{self.endpoint_id}-", self.work_dir)

        scenario = build_agent_scenario(
            endpoint_id=self.endpoint_id, ring_ms=self.ring_ms, talk_ms=self.talk_ms, audio_pcap=self.audio_pcap,
            log_headers=self.log_headers,
        )
        arguments = [
            "-i", net.LOOPBACK,
            "-p", str(self.contact_port),
            "-mi", net.LOOPBACK,
            "-mp", str(net.free_port_range(4)),
            "-aa",
        ]  # fmt: skip
        self._uas = _SippProcess("agent", self.work_dir, scenario, arguments)
        self._uas.start()

        try:
            self._wait_uas_bound(timeout_s)
            if self.register:
                self._run_register(self.expires_s, timeout_s)
        except SippError:
            self.stop()
            raise
        log.info("sipp_agent_started", endpoint_id=self.endpoint_id, contact_port=self.contact_port)

    def _wait_uas_bound(self, timeout_s: float) -> None:
        assert self._uas is not None and self._uas.process is not None
        pid = self._uas.process.pid

        def bound() -> bool:
            return any(entry.local_port == self.contact_port for entry in net.sockets_of_process(pid))

        if not net.wait_until(bound, timeout_s=timeout_s):
            raise SippError(f"SIPp agent {self.endpoint_id} did not bind port {self.contact_port}. {self._uas.diagnosis()}")

    def refresh_registration(self, timeout_s: float = 10.0) -> None:
        """Register again, as a phone does when its registration expires or the switch restarts."""

        if self._uas is None:
            raise SippError(f"start() agent {self.endpoint_id} before registering it again")
        self._run_register(self.expires_s, timeout_s)
        log.info("sipp_agent_registered_again", endpoint_id=self.endpoint_id)

    def _run_register(self, expires_s: int, timeout_s: float) -> None:
        assert self.work_dir is not None
        name = "register" if expires_s else "unregister"
        scenario = build_register_scenario(endpoint_id=self.endpoint_id, contact_port=self.contact_port, expires_s=expires_s)
        arguments = [
            f"{net.LOOPBACK}:{self.registrar_port}",
            "-i", net.LOOPBACK,
            "-p", str(net.free_port(tcp=False)),
            "-au", self.username,
            "-ap", self._password,
            "-m", "1",
        ]  # fmt: skip
        register = _SippProcess(name, self.work_dir, scenario, arguments)
        register.start()
        exit_code = register.wait(timeout_s)
        register.stop()
        if exit_code != _EXIT_ALL_CALLS_SUCCEEDED:
            raise SippError(f"{name} of agent {self.endpoint_id} failed with SIPp exit code {exit_code}. {register.diagnosis()}")

    @property
    def answered_calls(self) -> int:
        """Number of calls this agent has answered so far."""

        if self._uas is None:
            return 0
        return sum(1 for line in self._uas.read_log().splitlines() if line.startswith("ANSWERED "))

    def received_headers(self) -> list[dict[str, str]]:
        """Return the ``log_headers`` of each INVITE received so far, oldest first."""
        if self._uas is None:
            return []
        calls: dict[str, dict[str, str]] = {}
        for line in self._uas.read_log().splitlines():
            if line.startswith("HEADER "):
                _, call_id, name, *value = line.split(" ", 3)
                calls.setdefault(call_id, {})[name] = value[0].strip() if value else ""
        return list(calls.values())

    def wait_answered(self, count: int, timeout_s: float) -> bool:
        """Wait until the agent has answered ``count`` calls; return False on timeout."""

        return net.wait_until(lambda: self.answered_calls >= count, timeout_s=timeout_s, interval_s=0.1)

    def diagnosis(self) -> str:
        """Return SIPp's error output, for assertion messages."""

        return self._uas.diagnosis() if self._uas is not None else "SIPp was not started."

    def stop(self) -> None:
        """Unregister (when registered and the switch still answers) and stop the UAS."""

        if self._uas is None:
            return

        if self.register and self._uas.process is not None and self._uas.process.poll() is None:
            try:
                self._run_register(0, timeout_s=2.0)
            except SippError as error:
                log.info("sipp_agent_unregister_failed", endpoint_id=self.endpoint_id, error=str(error)[:300])

        self._uas.stop()
        self._uas = None
        if self._owns_dir and not self.keep_files and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        log.info("sipp_agent_stopped", endpoint_id=self.endpoint_id)

    def __enter__(self) -> SippAgent:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.stop()

    async def start_async(self) -> None:
        """Run ``start`` in a worker thread."""

        await asyncio.to_thread(self.start)

    async def stop_async(self) -> None:
        """Run ``stop`` in a worker thread."""

        await asyncio.to_thread(self.stop)
