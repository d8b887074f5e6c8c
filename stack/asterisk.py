"""Stack tooling: runs one Asterisk 22 instance from the shared Debian root, configured from templates, and stops it without leftovers.

Several instances can run at once from one root. Each gets its own folder
``<base_dir>/<name>`` inside the root (configuration, control socket, logs, astdb, prompt
copies) and its own loopback ports.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import subprocess
import time
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType

import structlog

from stack import net

log = structlog.get_logger(__name__)

REPO_DIR = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = REPO_DIR / "asterisk-conf" / "build-root.sh"
TEMPLATE_DIR = REPO_DIR / "asterisk-conf" / "templates"
DEFAULT_ROOT = Path(os.environ.get("HOTLINE_CACHE", "/var/cache/hotline")) / "asterisk-root"
ROOT_MARKER_NAME = ".hotline-asterisk-version"
DEFAULT_BASE_DIR = PurePosixPath("/var/lib/hotline")

AMI_USERNAME = "hotline"
# Core sound played by the 12349 fallback branch when the instance has no fallback prompt.
# NOTE: Debian ships core sounds in English only, so a caller hears English in that case.
CORE_FALLBACK_SOUND = "sorry-youre-having-problems"
# FastAGI route and flow parameter of the hotline number, the same for primary and standby.
HOTLINE_AGI_PATH = "ivr/12349?flow=12349"
# Q.850 cause 41 (temporary failure) marks calls that ended in the fallback branch, so a
# SIP caller can tell them apart from a normal end (cause 16) by the BYE's Reason header.
FALLBACK_HANGUP_CAUSE = 41

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
_SIP_TOKEN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Characters a pjsip.conf value cannot carry: ";" starts a comment and line breaks end it.
_CONFIG_UNSAFE = re.compile(r"[;\r\n\0]")
_PROMPT_ID = re.compile(r"^[A-Za-z0-9_@-]+(/[A-Za-z0-9_@-]+)*$")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")

_STARTUP_TIMEOUT_S = 30.0
_CLI_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
_CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"}


class AsteriskError(Exception):
    """An Asterisk instance could not be configured, started, controlled or stopped cleanly."""


@dataclass(frozen=True, slots=True)
class AgentEndpoint:
    """One agent's SIP account on the switch.

    ``endpoint_id`` is the endpoint and AOR name and the SIP user an agent's phone puts in
    From and To. ``username`` and ``password`` are its digest credentials. With
    ``static_contact`` (a SIP URI) Asterisk calls that address without registration;
    without it the phone must REGISTER.
    """

    endpoint_id: str
    username: str
    password: str = field(repr=False)
    static_contact: str | None = None
    # Dialplan context of calls this endpoint places: "from-agents" for an agent's phone,
    # "from-lower-tier" for the trunk from a lower tier's switch.
    context: str = "from-agents"
    # True for a video phone: the endpoint also allows H.264 and VP8.
    video: bool = False


# Dialplan contexts a SIP endpoint's own calls may land in (extensions.conf).
ENDPOINT_CONTEXTS = ("from-agents", "from-lower-tier")


@dataclass(frozen=True, slots=True)
class AmiCredentials:
    """Address and login of one instance's Asterisk Manager Interface."""

    host: str
    port: int
    username: str
    secret: str = field(repr=False)


def ensure_root(root: Path = DEFAULT_ROOT) -> Path:
    """Return ``root`` once it contains a finished Asterisk root, building it first if needed.

    The build runs ``asterisk-conf/build-root.sh``, which needs root privileges and, for a
    first build, a reachable Debian mirror.
    """

    if (root / ROOT_MARKER_NAME).is_file():
        return root

    log.info("asterisk_root_build", root=str(root))
    result = subprocess.run(["bash", str(BUILD_SCRIPT), str(root)], capture_output=True, text=True)
    if result.returncode != 0:
        raise AsteriskError(f"building the Asterisk root at {root} failed (exit {result.returncode}): {result.stderr[-2000:]}")

    return root


def render_template(text: str, values: Mapping[str, object]) -> str:
    """Replace every ``{{name}}`` in ``text`` with ``values[name]``.

    Raises ``KeyError`` for a placeholder without a value, so a template change can never
    leave a literal placeholder in a configuration file.
    """

    def substitute(match: re.Match[str]) -> str:
        key = match[1]
        if key not in values:
            raise KeyError(f"template placeholder {{{{{key}}}}} has no value")
        return str(values[key])

    return _PLACEHOLDER.sub(substitute, text)


def _load_template(name: str) -> str:
    return (TEMPLATE_DIR / name).read_text(encoding="utf-8")


def _check_config_value(label: str, value: str) -> None:
    if not value or _CONFIG_UNSAFE.search(value) or value != value.strip():
        raise ValueError(f"invalid {label} {value!r}: it must be non-empty, without ';', line breaks or surrounding spaces")


def _check_agent(agent: AgentEndpoint) -> None:
    if not _SIP_TOKEN.match(agent.endpoint_id):
        raise ValueError(f"invalid agent endpoint_id {agent.endpoint_id!r}: use letters, digits, '.', '_' or '-'")
    if agent.endpoint_id == "anonymous":
        raise ValueError("agent endpoint_id 'anonymous' is reserved for callers without an account")
    if not _SIP_TOKEN.match(agent.username):
        raise ValueError(f"invalid agent username {agent.username!r}: use letters, digits, '.', '_' or '-'")
    _check_config_value(f"password of agent {agent.endpoint_id}", agent.password)
    if agent.static_contact is not None:
        _check_config_value(f"static_contact of agent {agent.endpoint_id}", agent.static_contact)
    if agent.context not in ENDPOINT_CONTEXTS:
        raise ValueError(f"invalid context {agent.context!r} of endpoint {agent.endpoint_id}: "
                         f"use one of {', '.join(ENDPOINT_CONTEXTS)}")


def _check_prompt_file(path: Path) -> None:
    """Raise unless ``path`` is a WAV file Asterisk plays as-is: 8 kHz, mono, 16-bit PCM."""

    try:
        with wave.open(str(path), "rb") as audio:
            shape = (audio.getframerate(), audio.getnchannels(), audio.getsampwidth())
    except (wave.Error, EOFError) as error:
        raise AsteriskError(f"prompt {path} is not a readable PCM WAV file: {error}") from error

    if shape != (8000, 1, 2):
        rate, channels, width = shape
        raise AsteriskError(
            f"prompt {path} is {rate} Hz, {channels} channel(s), {8 * width}-bit; Asterisk needs 8000 Hz mono 16-bit PCM"
        )


class AsteriskInstance:
    """One Asterisk process running in the chroot ``root`` with its own configuration and ports.

    ``rtp_ports`` is the inclusive (first, last) RTP port range. Calls to 12349 go to the
    FastAGI server expected on 127.0.0.1:``fastagi_port``. With ``standby_fastagi_port`` a
    call the primary controller cannot accept goes to the standby controller on that port
    before the fallback. ``prompt_dir`` is a host folder of
    prompt files (8 kHz mono 16-bit WAV), copied into the instance at start. With
    ``test_extensions`` the dialplan also contains ``baseline`` and one ``call-<endpoint_id>``
    extension per agent. ``extra_modules`` and ``extra_config_files`` (file name to text)
    let a caller add modules such as app_queue together with their configuration.
    """

    def __init__(
        self,
        name: str,
        *,
        root: Path = DEFAULT_ROOT,
        sip_port: int,
        ami_port: int,
        rtp_ports: tuple[int, int],
        fastagi_port: int,
        standby_fastagi_port: int | None = None,
        agents: Iterable[AgentEndpoint] = (),
        prompt_dir: Path | None = None,
        base_dir: PurePosixPath = DEFAULT_BASE_DIR,
        test_extensions: bool = True,
        fallback_prompt_id: str = "fallback",
        baseline_sounds: tuple[str, str, str] = ("hello-world", "beep", "goodbye"),
        extra_modules: Iterable[str] = (),
        extra_config_files: Mapping[str, str] | None = None,
        verbose_log: bool = False,
    ) -> None:
        if not _NAME.match(name):
            raise ValueError(f"invalid instance name {name!r}: use 1-32 lowercase letters, digits, '_' or '-'")
        if not base_dir.is_absolute():
            raise ValueError(f"base_dir must be an absolute path inside the root, got {base_dir}")
        first_rtp, last_rtp = rtp_ports
        if not 0 < first_rtp < last_rtp < 65536:
            raise ValueError(f"invalid RTP port range {rtp_ports}: expected (first, last) with first < last")

        self.name = name
        self.root = Path(root)
        self.sip_port = sip_port
        self.ami_port = ami_port
        self.rtp_ports = (first_rtp, last_rtp)
        self.fastagi_port = fastagi_port
        self.standby_fastagi_port = standby_fastagi_port
        self.agents = tuple(agents)
        for agent in self.agents:
            _check_agent(agent)
        if len({agent.endpoint_id for agent in self.agents}) != len(self.agents):
            raise ValueError("agent endpoint_id values must be unique")

        self.prompt_dir = prompt_dir
        self.test_extensions = test_extensions
        self.fallback_prompt_id = fallback_prompt_id
        self.baseline_sounds = baseline_sounds
        self.extra_modules = tuple(extra_modules)
        self.extra_config_files = dict(extra_config_files or {})
        self.verbose_log = verbose_log

        # Paths as Asterisk sees them inside the chroot, and the same folder on the host.
        self.instance_dir = base_dir / name
        self.config_path = self.instance_dir / "etc" / "asterisk.conf"
        self.host_dir = self.root / self.instance_dir.relative_to("/")

        self._ami_secret = secrets.token_urlsafe(24)
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def with_free_ports(cls, name: str, *, fastagi_port: int | None = None, rtp_port_count: int = 200, **options: object) -> AsteriskInstance:
        """Create an instance on free loopback ports; ``options`` go to the constructor."""

        rtp_first = net.free_port_range(rtp_port_count)
        return cls(
            name,
            sip_port=net.free_port(),
            ami_port=net.free_port(),
            rtp_ports=(rtp_first, rtp_first + rtp_port_count - 1),
            fastagi_port=fastagi_port if fastagi_port is not None else net.free_port(),
            **options,  # type: ignore[arg-type]
        )

    # -- properties ---------------------------------------------------------------------

    @property
    def ami(self) -> AmiCredentials:
        """AMI login of this instance, valid while it runs."""

        return AmiCredentials(net.LOOPBACK, self.ami_port, AMI_USERNAME, self._ami_secret)

    @property
    def pid(self) -> int | None:
        """Process id of the running Asterisk, or None when it is not running."""

        if self._process is None or self._process.poll() is not None:
            return None
        return self._process.pid

    @property
    def log_path(self) -> Path:
        """Host path of this instance's messages.log (notices, warnings and errors)."""

        return self.host_dir / "log" / "messages.log"

    def sound_path(self, prompt_id: str) -> str:
        """Return the name Asterisk plays for prompt ``prompt_id`` (a path without extension).

        ``prompt_id`` is the file's path inside ``prompt_dir`` without extension, such as
        ``welcome`` or ``zh/welcome``. Raises ``FileNotFoundError`` when no such file was copied.
        """

        if not _PROMPT_ID.match(prompt_id):
            raise ValueError(f"invalid prompt id {prompt_id!r}: use names of letters, digits, '_' or '-' separated by '/'")

        host_stem = self.host_dir / "sounds" / prompt_id
        if not any(host_stem.parent.glob(f"{host_stem.name}.*")):
            raise FileNotFoundError(f"prompt {prompt_id!r} not found in {self.host_dir / 'sounds'}; add it to prompt_dir")

        return str(self.instance_dir / "sounds" / prompt_id)

    # -- configuration ------------------------------------------------------------------

    def render(self) -> None:
        """Write this instance's configuration and prompt copies into the root.

        Earlier files of an instance with the same name are removed first. Raises
        ``AsteriskError`` when an Asterisk with this configuration is still running.
        """

        leftover = net.pids_with_argument(str(self.config_path))
        if leftover:
            raise AsteriskError(f"Asterisk instance {self.name!r} is still running as pid {leftover}; stop it first")

        if self.host_dir.exists():
            shutil.rmtree(self.host_dir)
        for folder in ("etc", "lib", "spool", "run", "log", "cache", "sounds"):
            (self.host_dir / folder).mkdir(parents=True)

        self._copy_prompts()

        values = self._values()
        files = {
            file_name: render_template(_load_template(file_name), values)
            for file_name in (
                "asterisk.conf",
                "modules.conf",
                "logger.conf",
                "rtp.conf",
                "manager.conf",
                "pjsip.conf",
                "extensions.conf",
                "cdr.conf",
                "cel.conf",
                "musiconhold.conf",
            )
        }
        for file_name, text in self.extra_config_files.items():
            if "/" in file_name or file_name in files:
                raise ValueError(f"extra config file name {file_name!r} must be a plain name not rendered by the instance")
            files[file_name] = text

        etc = self.host_dir / "etc"
        for file_name, text in files.items():
            (etc / file_name).write_text(text, encoding="utf-8")
        (etc / "manager.conf").chmod(0o600)

    def _copy_prompts(self) -> None:
        if self.prompt_dir is None:
            return

        source = Path(self.prompt_dir)
        if not source.is_dir():
            raise AsteriskError(f"prompt folder {source} does not exist")

        for wav in source.rglob("*.wav"):
            _check_prompt_file(wav)
        shutil.copytree(source, self.host_dir / "sounds", dirs_exist_ok=True)

    def _values(self) -> dict[str, object]:
        module_dir = self._module_dir()
        agent_template = _load_template("pjsip-agent.conf")
        agent_test_template = _load_template("extensions-agent-test.conf")

        agent_blocks = []
        agent_test_blocks = []
        for agent in self.agents:
            static_contact = f"contact = {agent.static_contact}" if agent.static_contact else ""
            agent_values = {
                "endpoint_id": agent.endpoint_id,
                "username": agent.username,
                "password": agent.password,
                "static_contact": static_contact,
                "context": agent.context,
                "video_codecs": ",h264,vp8" if agent.video else "",
                # A lower tier's trunk asserts the citizen's number in P-Asserted-Identity,
                # since its From user names the trunk for identification.
                "trunk_options": "trust_id_inbound = yes" if agent.context == "from-lower-tier" else "",
            }
            agent_blocks.append(render_template(agent_template, agent_values))
            agent_test_blocks.append(render_template(agent_test_template, agent_values))

        welcome, menu, goodbye = (self._sound_or_core(sound) for sound in self.baseline_sounds)

        return {
            "name": self.name,
            "instance_dir": self.instance_dir,
            "module_dir": module_dir,
            "extra_modules": "\n".join(f"load => {module.removesuffix('.so')}.so" for module in self.extra_modules),
            "verbose_channel": ",verbose" if self.verbose_log else "",
            "rtp_start": self.rtp_ports[0],
            "rtp_end": self.rtp_ports[1],
            "sip_port": self.sip_port,
            "ami_port": self.ami_port,
            "ami_username": AMI_USERNAME,
            "ami_secret": self._ami_secret,
            "fastagi_port": self.fastagi_port,
            "hotline_agi_url": f"agi://{net.LOOPBACK}:{self.fastagi_port}/{HOTLINE_AGI_PATH}",
            "standby_agi_url": (
                f"agi://{net.LOOPBACK}:{self.standby_fastagi_port}/{HOTLINE_AGI_PATH}"
                if self.standby_fastagi_port is not None else ""
            ),
            "standby_feature_agi_url": (
                f"agi://{net.LOOPBACK}:{self.standby_fastagi_port}/acd/feature"
                if self.standby_fastagi_port is not None else ""
            ),
            "agents": "".join(agent_blocks),
            "fallback_sound": self._sound_or_core(self.fallback_prompt_id, core=CORE_FALLBACK_SOUND),
            "fallback_hangup_cause": FALLBACK_HANGUP_CAUSE,
            "test_include": "include => hotline-test" if self.test_extensions else "",
            "baseline_welcome": welcome,
            "baseline_menu": menu,
            "baseline_goodbye": goodbye,
            "agent_test_extensions": "".join(agent_test_blocks),
        }

    def _sound_or_core(self, prompt_id: str, *, core: str | None = None) -> str:
        """Return the instance's copy of ``prompt_id`` when present, else the core sound ``core``.

        Without ``core`` the name itself is taken as a core sound name.
        """

        try:
            return self.sound_path(prompt_id)
        except (FileNotFoundError, ValueError):
            return core if core is not None else prompt_id

    def _module_dir(self) -> PurePosixPath:
        candidates = sorted(self.root.glob("usr/lib/*/asterisk/modules"))
        if not candidates:
            raise AsteriskError(f"no Asterisk module folder under {self.root}/usr/lib; rebuild the root with {BUILD_SCRIPT}")
        return PurePosixPath("/") / candidates[0].relative_to(self.root)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Render the configuration, start Asterisk and wait until it is fully booted.

        Raises ``AsteriskError`` when it exits early, does not boot in time, or did not
        bind its SIP or AMI port (for example because another process took it).
        """

        if self._process is not None:
            raise AsteriskError(f"Asterisk instance {self.name!r} was already started")

        ensure_root(self.root)
        self.render()

        output_path = self.host_dir / "log" / "console.out"
        command = ["chroot", str(self.root), "/usr/sbin/asterisk", "-f", "-n", "-C", str(self.config_path)]
        if self.verbose_log:
            command.append("-vvv")

        with output_path.open("wb") as output:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=_CHILD_ENV,
                start_new_session=True,
            )
        log.info("asterisk_starting", instance=self.name, pid=self._process.pid, sip_port=self.sip_port, ami_port=self.ami_port)

        try:
            self._wait_fully_booted()
            self._check_bound_ports()
        except AsteriskError:
            self.stop()
            raise

        log.info("asterisk_started", instance=self.name, pid=self._process.pid)

    def _wait_fully_booted(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S

        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AsteriskError(
                    f"Asterisk instance {self.name!r} exited with code {self._process.returncode} during start: {self._output_tail()}"
                )

            # The control socket appears early in the boot; until then the command fails fast.
            result = self._run_remote("core waitfullybooted", timeout_s=_STARTUP_TIMEOUT_S)
            if result.returncode == 0 and "fully booted" in result.stdout:
                return
            time.sleep(0.1)

        raise AsteriskError(f"Asterisk instance {self.name!r} did not boot within {_STARTUP_TIMEOUT_S:.0f} s: {self._output_tail()}")

    def _check_bound_ports(self) -> None:
        assert self._process is not None
        sockets = net.sockets_of_process(self._process.pid)
        bound = {(entry.protocol, entry.local_address, entry.local_port) for entry in sockets}

        missing = []
        if ("udp", net.LOOPBACK, self.sip_port) not in bound:
            missing.append(f"SIP udp/{self.sip_port}")
        if ("tcp", net.LOOPBACK, self.ami_port) not in bound:
            missing.append(f"AMI tcp/{self.ami_port}")
        if missing:
            raise AsteriskError(
                f"Asterisk instance {self.name!r} did not bind {', '.join(missing)}; the port may be in use. Log: {self._log_tail()}"
            )

    def cli(self, command: str) -> str:
        """Run one Asterisk CLI command on this instance and return its output."""

        if self.pid is None:
            raise AsteriskError(f"Asterisk instance {self.name!r} is not running; cannot run {command!r}")

        result = self._run_remote(command, timeout_s=_CLI_TIMEOUT_S)
        if result.returncode != 0:
            raise AsteriskError(f"CLI command {command!r} on instance {self.name!r} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def _run_remote(self, command: str, *, timeout_s: float) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                ["chroot", str(self.root), "/usr/sbin/asterisk", "-C", str(self.config_path), "-rx", command],
                capture_output=True,
                text=True,
                env=_CHILD_ENV,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as error:
            raise AsteriskError(f"CLI command {command!r} on instance {self.name!r} timed out after {timeout_s:.0f} s") from error

    def stop(self, *, remove_files: bool = False) -> None:
        """Stop Asterisk and check that no process or listening port of it remains.

        Asks for ``core stop now`` first, then signals the process group. Raises
        ``AsteriskError`` when a process or port is still there afterwards. With
        ``remove_files`` the instance folder is deleted too.
        """

        process = self._process
        if process is None:
            self._remove_files(remove_files)
            return

        if process.poll() is None:
            try:
                self._run_remote("core stop now", timeout_s=_STOP_TIMEOUT_S)
            except AsteriskError as error:
                log.warning("asterisk_stop_command_failed", instance=self.name, pid=process.pid, error=str(error))
            try:
                process.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                log.warning("asterisk_stop_timeout", instance=self.name, pid=process.pid, timeout_s=_STOP_TIMEOUT_S)

        # The group signal also reaches anything Asterisk left behind.
        net.stop_process_group(process, name=f"asterisk:{self.name}")
        self._process = None
        log.info("asterisk_stopped", instance=self.name, pid=process.pid, exit_code=process.returncode)

        self._check_nothing_left()
        self._remove_files(remove_files)

    def _remove_files(self, requested: bool) -> None:
        if requested and self.host_dir.exists():
            shutil.rmtree(self.host_dir)

    def _check_nothing_left(self) -> None:
        leftover_pids = net.pids_with_argument(str(self.config_path))
        leftover_ports = net.listening_ports({self.sip_port, self.ami_port})
        if leftover_pids or leftover_ports:
            raise AsteriskError(
                f"Asterisk instance {self.name!r} left processes {leftover_pids} and listening sockets {leftover_ports} after stop"
            )

    def _output_tail(self) -> str:
        path = self.host_dir / "log" / "console.out"
        text = path.read_text(errors="replace") if path.exists() else ""
        return (text[-1500:] or "(no console output)") + " " + self._log_tail()

    def _log_tail(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return text[-1500:] or "(messages.log is empty)"

    # -- context managers ---------------------------------------------------------------

    def __enter__(self) -> AsteriskInstance:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        self.stop()

    async def start_async(self) -> None:
        """Run ``start`` in a worker thread so the event loop keeps serving."""

        await asyncio.to_thread(self.start)

    async def stop_async(self, *, remove_files: bool = False) -> None:
        """Run ``stop`` in a worker thread so the event loop keeps serving."""

        await asyncio.to_thread(self.stop, remove_files=remove_files)

    async def __aenter__(self) -> AsteriskInstance:
        await self.start_async()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        await self.stop_async()
