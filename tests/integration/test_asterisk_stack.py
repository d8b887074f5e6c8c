"""Integration: real Asterisk 22 instances from the shared root, driven by real SIPp callers and agents."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stack import net
from stack.asterisk import (
    FALLBACK_HANGUP_CAUSE,
    REPO_DIR,
    AgentEndpoint,
    AmiCredentials,
    AsteriskInstance,
    ensure_root,
)
from stack.sipp import Dtmf, EndedBy, Pause, SippAgent, SippCaller, SippError

pytestmark = pytest.mark.integration

# Q.850 cause 16: normal call clearing.
NORMAL_CLEARING = 16
# "hello-world" lasts about 1.6 s; the key is pressed while the "beep" menu prompt's Read waits.
BASELINE_KEY_DELAY_MS = 2500


class AmiEventReader:
    """Minimal blocking AMI client for tests: logs in and collects events by type."""

    def __init__(self, credentials: AmiCredentials, timeout_s: float = 5.0) -> None:
        self._socket = socket.create_connection((credentials.host, credentials.port), timeout=timeout_s)
        self._buffer = b""
        self._socket.recv(1024)  # banner line "Asterisk Call Manager/..."

        login = f"Action: Login\r\nUsername: {credentials.username}\r\nSecret: {credentials.secret}\r\nActionID: login\r\n\r\n"
        self._socket.sendall(login.encode())
        response = self._next_message(time.monotonic() + timeout_s)
        if response.get("Response") != "Success":
            raise AssertionError(f"AMI login failed: {response}")

    def _next_message(self, deadline: float) -> dict[str, str]:
        while b"\r\n\r\n" not in self._buffer:
            self._socket.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self._socket.recv(65536)
            if not chunk:
                raise AssertionError("AMI connection closed")
            self._buffer += chunk

        raw, self._buffer = self._buffer.split(b"\r\n\r\n", 1)
        message: dict[str, str] = {}
        for line in raw.decode("utf-8", errors="replace").split("\r\n"):
            key, _, value = line.partition(": ")
            message[key] = value
        return message

    def wait_user_event(self, name: str, timeout_s: float) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                message = self._next_message(deadline)
            except TimeoutError as error:
                raise AssertionError(f"no UserEvent {name} within {timeout_s} s") from error
            if message.get("Event") == "UserEvent" and message.get("UserEvent") == name:
                return message

    def close(self) -> None:
        self._socket.close()


@pytest.fixture(scope="module")
def asterisk_root() -> Path:
    return ensure_root()


@pytest.fixture(scope="module")
def agent_account() -> AgentEndpoint:
    return AgentEndpoint("agent1001", "u1001", f"pw-{os.getpid()}")


@pytest.fixture(scope="module")
def instance(asterisk_root: Path, agent_account: AgentEndpoint) -> Iterator[AsteriskInstance]:
    asterisk = AsteriskInstance.with_free_ports(f"it{os.getpid()}a", root=asterisk_root, agents=[agent_account])
    asterisk.start()
    try:
        yield asterisk
    finally:
        asterisk.stop(remove_files=True)


@pytest.fixture()
def ami(instance: AsteriskInstance) -> Iterator[AmiEventReader]:
    reader = AmiEventReader(instance.ami)
    try:
        yield reader
    finally:
        reader.close()


class TestRenderedConfiguration:
    def test_modules_conf_disables_autoload(self, instance: AsteriskInstance) -> None:
        """Only listed modules load, so none can look up outside names."""

        text = (instance.host_dir / "etc" / "modules.conf").read_text()

        assert re.search(r"^autoload = no$", text, re.MULTILINE)
        assert not re.search(r"^autoload = yes", text, re.MULTILINE)

    def test_every_socket_stays_on_loopback(self, instance: AsteriskInstance) -> None:
        """SIP and AMI listen on 127.0.0.1 and no socket talks to another host."""

        assert instance.pid is not None
        sockets = net.sockets_of_process(instance.pid)

        listening = [entry for entry in sockets if entry.state == "LISTEN"]
        assert listening
        assert all(entry.local_address == net.LOOPBACK for entry in listening), listening

        connected_elsewhere = [entry for entry in sockets if entry.peer_address not in ("0.0.0.0", "::", "*", net.LOOPBACK)]
        assert connected_elsewhere == []

        # pjproject's DNS resolver binds one unconnected UDP socket per address family to
        # the wildcard address; its only name server is 127.0.0.1 (blank resolv.conf).
        wildcard = [entry for entry in sockets if entry.local_address not in (net.LOOPBACK,)]
        assert all(entry.protocol == "udp" and entry.state == "UNCONN" for entry in wildcard), wildcard
        assert len(wildcard) <= 2, wildcard

    def test_root_resolv_conf_is_blank(self, instance: AsteriskInstance) -> None:
        """The chroot has no name server, so no DNS query can leave the machine."""

        assert (instance.root / "etc" / "resolv.conf").read_text().strip() == ""


class TestCalls:
    def test_baseline_reads_key_and_hangs_up(self, instance: AsteriskInstance, ami: AmiEventReader) -> None:
        """A caller dials the pure-dialplan baseline, presses 5, and Asterisk ends the call normally."""

        caller = SippCaller(
            target_port=instance.sip_port,
            dialed="baseline",
            steps=[Pause(BASELINE_KEY_DELAY_MS), Dtmf("5")],
            wait_bye_timeout_ms=15_000,
        )

        results = caller.run(timeout_s=30)

        assert len(results) == 1, caller.diagnosis()
        result = results[0]
        assert result.answered
        assert result.completed
        assert result.ended_by is EndedBy.REMOTE
        assert result.cause == NORMAL_CLEARING
        event = ami.wait_user_event("HotlineBaseline", timeout_s=5)
        assert event["Choice"] == "5"

    def test_hotline_without_controller_plays_fallback(self, instance: AsteriskInstance, ami: AmiEventReader) -> None:
        """With no FastAGI server on the port, 12349 raises HotlineFallback and hangs up with cause 41."""

        caller = SippCaller(target_port=instance.sip_port, dialed="12349", caller_number="13800138000")

        results = caller.run(timeout_s=30)

        assert len(results) == 1, caller.diagnosis()
        assert results[0].ended_by is EndedBy.REMOTE
        assert results[0].cause == FALLBACK_HANGUP_CAUSE
        event = ami.wait_user_event("HotlineFallback", timeout_s=5)
        assert event["CallerIDNum"] == "13800138000"
        assert event["AgiStatus"] == "FAILURE"

    def test_anonymous_caller_reaches_hotline(self, instance: AsteriskInstance, ami: AmiEventReader) -> None:
        """A call with an anonymous From is taken by the anonymous endpoint, not rejected."""

        caller = SippCaller(target_port=instance.sip_port, dialed="12349", caller_number=None)

        results = caller.run(timeout_s=30)

        assert len(results) == 1, caller.diagnosis()
        assert results[0].answered
        assert results[0].cause == FALLBACK_HANGUP_CAUSE
        event = ami.wait_user_event("HotlineFallback", timeout_s=5)
        assert event["CallerIDNum"] == "anonymous"

    def test_registered_agent_answers_dial(self, instance: AsteriskInstance, agent_account: AgentEndpoint) -> None:
        """An agent registers with digest auth, Dial rings it, it answers and later hangs up."""

        agent = SippAgent(
            endpoint_id=agent_account.endpoint_id,
            username=agent_account.username,
            password=agent_account.password,
            registrar_port=instance.sip_port,
            ring_ms=200,
            talk_ms=700,
        )
        with agent:
            contacts = instance.cli(f"pjsip show aor {agent_account.endpoint_id}")
            assert agent.contact_uri in contacts

            caller = SippCaller(target_port=instance.sip_port, dialed=f"call-{agent_account.endpoint_id}", wait_bye_timeout_ms=10_000)
            results = caller.run(timeout_s=30)

            assert len(results) == 1, caller.diagnosis()
            assert results[0].answered
            assert results[0].ended_by is EndedBy.REMOTE
            assert results[0].cause == NORMAL_CLEARING
            assert agent.answered_calls == 1, agent.diagnosis()

    def test_wrong_agent_password_fails_registration(self, instance: AsteriskInstance, agent_account: AgentEndpoint) -> None:
        """A REGISTER with the wrong digest password is rejected."""

        agent = SippAgent(
            endpoint_id=agent_account.endpoint_id,
            username=agent_account.username,
            password="wrong-password",
            registrar_port=instance.sip_port,
        )

        with pytest.raises(SippError):
            agent.start(timeout_s=5)
        assert agent.answered_calls == 0


class TestInstances:
    def test_two_instances_run_at_once_and_stop_clean(self, asterisk_root: Path) -> None:
        """Two instances on different ports take calls at the same time and leave nothing after stop."""

        first = AsteriskInstance.with_free_ports(f"it{os.getpid()}b", root=asterisk_root)
        second = AsteriskInstance.with_free_ports(f"it{os.getpid()}c", root=asterisk_root)
        with first, second:
            callers = [
                SippCaller(target_port=asterisk.sip_port, dialed="baseline", steps=[Pause(BASELINE_KEY_DELAY_MS), Dtmf("#")])
                for asterisk in (first, second)
            ]
            for caller in callers:
                caller.start()
            try:
                results = [caller.wait(timeout_s=30) for caller in callers]
            finally:
                for caller in callers:
                    caller.close()

            for outcome in results:
                assert len(outcome) == 1
                assert outcome[0].ended_by is EndedBy.REMOTE
                assert outcome[0].cause == NORMAL_CLEARING

            secrets = [_manager_secret(asterisk) for asterisk in (first, second)]
            pids = [asterisk.pid for asterisk in (first, second)]

        for asterisk, pid in zip((first, second), pids):
            assert pid is not None
            assert not Path(f"/proc/{pid}").exists()
            assert net.pids_with_argument(str(asterisk.config_path)) == []
            assert net.listening_ports({asterisk.sip_port, asterisk.ami_port}) == []

        assert secrets[0] != secrets[1]
        for secret in secrets:
            assert len(secret) >= 24
            assert not _repository_contains(secret)

        for asterisk in (first, second):
            asterisk.stop(remove_files=True)


def _manager_secret(asterisk: AsteriskInstance) -> str:
    text = (asterisk.host_dir / "etc" / "manager.conf").read_text()
    match = re.search(r"^secret = (\S+)$", text, re.MULTILINE)
    assert match is not None
    return match[1]


def _repository_contains(text: str) -> bool:
    for folder in ("asterisk-conf", "stack", "tests"):
        for path in (REPO_DIR / folder).rglob("*"):
            if path.is_file() and text in path.read_text(errors="ignore"):
                return True
    return False
