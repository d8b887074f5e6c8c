"""Stack: runs a private mosquitto broker on a loopback port for tests and the demo.

The broker writes its own configuration into a working directory, listens on
127.0.0.1 only, and ``stop()`` leaves no process behind.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"


class BrokerError(RuntimeError):
    """The broker could not be started or stopped."""


@dataclass(frozen=True, slots=True)
class ListenerSecurity:
    """TLS and authentication files of a listener; ``hotline brokers init`` generates them.

    Clients must log in with a user from ``password_file`` (anonymous access is off) and
    may only use the topics ``acl_file`` grants that user.
    """

    ca_file: Path
    cert_file: Path
    key_file: Path
    password_file: Path
    acl_file: Path
    # mosquitto 2.0 reads this as the lowest TLS version the listener accepts.
    tls_version: str = "tlsv1.2"


def security_config_lines(security: ListenerSecurity) -> list[str]:
    """Return the mosquitto.conf lines that turn on TLS, passwords and the ACL.

    They must follow the ``listener`` line, because mosquitto 2.0 applies the TLS
    options to the listener defined last.
    """
    return [
        f"cafile {security.ca_file}",
        f"certfile {security.cert_file}",
        f"keyfile {security.key_file}",
        f"tls_version {security.tls_version}",
        "require_certificate false",
        "allow_anonymous false",
        f"password_file {security.password_file}",
        f"acl_file {security.acl_file}",
    ]


def free_port() -> int:
    """Return a TCP port on the loopback interface that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


class MosquittoBroker:
    """One mosquitto process with a generated configuration.

    ``port=0`` picks a free port. ``persistence_dir`` enables on-disk persistence of
    sessions and queued messages there. ``max_packet_size`` makes the broker drop any
    client that sends a larger packet, as the production broker may be configured to.
    ``security`` turns on TLS, per-node passwords and the ACL. ``config_file`` starts
    mosquitto with an existing configuration instead of a generated one; it needs an
    explicit ``port`` that matches the file's listener, and the file sets where logs go.
    """

    def __init__(
        self,
        port: int = 0,
        *,
        max_packet_size: int | None = None,
        persistence_dir: str | Path | None = None,
        work_dir: str | Path | None = None,
        executable: str = "mosquitto",
        start_timeout_s: float = 10.0,
        security: ListenerSecurity | None = None,
        config_file: str | Path | None = None,
    ) -> None:
        if config_file is not None and port == 0:
            raise ValueError("a broker started from an existing config_file needs the port of its listener")
        self.host = LOOPBACK
        self.port = port
        self.security = security
        self._config_file = Path(config_file) if config_file is not None else None
        self.max_packet_size = max_packet_size
        self.persistence_dir = Path(persistence_dir) if persistence_dir else None
        self._owns_work_dir = work_dir is None and config_file is None
        if work_dir is not None:
            self.work_dir = Path(work_dir)
        elif self._config_file is not None:
            self.work_dir = self._config_file.parent
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="hotline-mosquitto-"))
        self._executable = executable
        self._start_timeout_s = start_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        if self._config_file is not None:
            return self._config_file
        return self.work_dir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.work_dir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        """Return the broker's log so far (empty before the first start)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def write_config(self) -> Path:
        lines = [f"listener {self.port} {LOOPBACK}"]
        if self.security is not None:
            lines += security_config_lines(self.security)
        else:
            # NOTE: without ``security`` anyone on loopback may connect and use every topic;
            # tests and the demo use that, a deployed broker uses the generated configuration.
            lines.append("allow_anonymous true")
        lines += [
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
        ]
        if self.max_packet_size is not None:
            lines.append(f"max_packet_size {int(self.max_packet_size)}")
        if self.persistence_dir is not None:
            self.persistence_dir.mkdir(parents=True, exist_ok=True)
            lines += ["persistence true", f"persistence_location {self.persistence_dir}/"]
        else:
            lines.append("persistence false")
        if os.geteuid() == 0:
            # mosquitto running as root switches to the "mosquitto" user, which cannot
            # write into a root-owned temporary directory; stay as the current user.
            lines.append(f"user {getpass.getuser()}")

        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def start(self) -> MosquittoBroker:
        """Start the broker and wait until its port accepts connections."""
        if self.running:
            raise BrokerError(f"mosquitto is already running on port {self.port}")
        if shutil.which(self._executable) is None:
            raise BrokerError(f"{self._executable} not found; install the Debian package 'mosquitto'")

        if self.port == 0:
            self.port = free_port()
        if self._config_file is None:
            self.write_config()
        elif not self._config_file.is_file():
            raise BrokerError(f"mosquitto configuration {self._config_file} not found")
        self._process = subprocess.Popen(
            [self._executable, "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_until_listening()
        log.info("mosquitto started", port=self.port, pid=self._process.pid)
        return self

    def _wait_until_listening(self) -> None:
        process = self._process
        if process is None:
            raise BrokerError("mosquitto was not started")
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._process = None
                raise BrokerError(
                    f"mosquitto exited with code {process.returncode} during start-up on port "
                    f"{self.port}; log follows:\n{self.log_text()[-2000:]}"
                )
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)

        self.stop()
        raise BrokerError(f"mosquitto did not accept connections on port {self.port} within {self._start_timeout_s} s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout_s``) and wait for it to exit."""
        process = self._process
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("mosquitto ignored SIGTERM, killing it", port=self.port, pid=process.pid)
                process.kill()
                process.wait()
        log.info("mosquitto stopped", port=self.port, pid=process.pid, returncode=process.returncode)

    def cleanup(self) -> None:
        """Stop the broker and remove the working directory if this object created it."""
        self.stop()
        if self._owns_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()
