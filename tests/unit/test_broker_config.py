"""Generated broker security (CA, server certificate, passwords, ACL, mosquitto.conf) and per-install AMI secrets."""

from __future__ import annotations

import base64
import ipaddress
import re
import shutil
import stat
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiomqtt
import pytest
from click.testing import CliRunner
from cryptography import x509

from hotline.brokers import (
    PASSWORD_HASH_ITERATIONS,
    BrokerFiles,
    BrokerSetupError,
    client_security,
    hash_password,
    init_broker,
    render_acl,
)
from hotline.cli import main
from hotline.config import ConfigError, MqttBroker, MqttTls
from stack.asterisk import AsteriskInstance, _load_template, render_template
from stack.mosquitto import MosquittoBroker
from tier_sync.mqtt_session import ClientSecurity, describe_connect_failure

NOW = datetime(2026, 12, 4, 2, 0, tzinfo=timezone.utc)
CITY = "city-330100"
CHILDREN = ("county-330106", "county-330108")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def generated(tmp_path: Path) -> BrokerFiles:
    return init_broker(tmp_path / "broker", CITY, CHILDREN, 18883, now=NOW, run_as="hotline").files


def acl_rules(text: str) -> dict[str, list[str]]:
    """Parse an acl_file into user -> ["read TOPIC", "write TOPIC", ...]."""
    rules: dict[str, list[str]] = {}
    user = None
    for line in text.splitlines():
        if line.startswith("user "):
            user = line.split()[1]
            rules[user] = []
        elif line.startswith("topic "):
            assert user is not None, "topic rule before any user line applies to anonymous clients"
            rules[user].append(line.removeprefix("topic "))
    return rules


class TestPasswordHash:
    def test_format(self) -> None:
        assert re.fullmatch(r"\$7\$101\$[A-Za-z0-9+/=]{16}\$[A-Za-z0-9+/=]{88}", hash_password("pw"))

    def test_salted(self) -> None:
        assert hash_password("pw") != hash_password("pw")

    @pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="mosquitto_passwd not installed")
    def test_matches_mosquitto_passwd(self, tmp_path: Path) -> None:
        password_file = tmp_path / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(password_file), "county-330106", "Synthetic-pw-1"],
                       check=True, capture_output=True)
        user, reference = password_file.read_text().strip().split(":", 1)
        _, _, iterations, salt, _ = reference.split("$")

        ours = hash_password("Synthetic-pw-1", salt=base64.b64decode(salt), iterations=int(iterations))

        assert user == "county-330106"
        assert int(iterations) == PASSWORD_HASH_ITERATIONS
        assert ours == reference


class TestAcl:
    def test_child_publishes_only_as_itself(self) -> None:
        rules = acl_rules(render_acl(CITY, CHILDREN))
        assert rules["county-330106"] == [
            "write hotline/v1/city-330100/up/county-330106/#",
            "read hotline/v1/county-330106/down/#",
        ]
        assert rules["county-330108"] == [
            "write hotline/v1/city-330100/up/county-330108/#",
            "read hotline/v1/county-330108/down/#",
        ]

    def test_broker_node_reads_up_writes_down(self) -> None:
        rules = acl_rules(render_acl(CITY, CHILDREN))
        assert rules[CITY] == [
            "read hotline/v1/city-330100/up/#",
            "write hotline/v1/county-330106/down/#",
            "write hotline/v1/county-330108/down/#",
        ]

    def test_no_wildcard_grants(self) -> None:
        text = render_acl(CITY, CHILDREN)
        assert "pattern" not in text
        assert "hotline/v1/+" not in text
        assert "topic readwrite" not in text


class TestInitBroker:
    def test_private_files(self, generated: BrokerFiles) -> None:
        private = [generated.ca_key, generated.server_key, generated.password_file, generated.acl_file,
                   generated.config_file, generated.credential(CITY), *map(generated.credential, CHILDREN)]
        for path in private:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path

    def test_password_file_lists_every_node(self, generated: BrokerFiles) -> None:
        users = [line.split(":", 1)[0] for line in generated.password_file.read_text().splitlines()]
        assert users == sorted((CITY, *CHILDREN))

    def test_passwords_distinct_and_long(self, generated: BrokerFiles) -> None:
        passwords = [generated.credential(node).read_text().strip() for node in (CITY, *CHILDREN)]
        assert len(set(passwords)) == 3
        assert min(len(password) for password in passwords) >= 40

    def test_server_certificate(self, generated: BrokerFiles) -> None:
        ca = x509.load_pem_x509_certificate(generated.ca_cert.read_bytes())
        server = x509.load_pem_x509_certificate(generated.server_cert.read_bytes())
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value

        server.verify_directly_issued_by(ca)
        assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)
        assert "localhost" in names.get_values_for_type(x509.DNSName)
        assert server.not_valid_before_utc == NOW - timedelta(minutes=5)
        assert server.not_valid_after_utc == NOW + timedelta(days=825)
        assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    def test_mosquitto_conf(self, generated: BrokerFiles) -> None:
        lines = generated.config_file.read_text().splitlines()
        assert "listener 18883 127.0.0.1" in lines
        assert "allow_anonymous false" in lines
        assert "allow_anonymous true" not in lines
        assert "tls_version tlsv1.2" in lines
        assert f"password_file {generated.password_file}" in lines
        assert f"acl_file {generated.acl_file}" in lines
        assert f"certfile {generated.server_cert}" in lines
        assert "user hotline" in lines
        # TLS options apply to the listener defined before them.
        assert lines.index("listener 18883 127.0.0.1") < lines.index(f"certfile {generated.server_cert}")

    def test_rerun_keeps_ca_and_passwords(self, tmp_path: Path, generated: BrokerFiles) -> None:
        ca_before = generated.ca_cert.read_bytes()
        password_before = generated.credential("county-330106").read_text()

        result = init_broker(generated.directory, CITY, ("county-330106", "county-330110"), 18883, now=NOW)

        assert result.new_ca is False
        assert generated.ca_cert.read_bytes() == ca_before
        assert generated.credential("county-330106").read_text() == password_before
        assert result.new_credentials == ("county-330110",)
        assert result.kept_credentials == (CITY, "county-330106")

    def test_rerun_revokes_unlisted_child(self, generated: BrokerFiles) -> None:
        init_broker(generated.directory, CITY, ("county-330106",), 18883, now=NOW)
        assert "county-330108" not in generated.password_file.read_text()
        assert "county-330108" not in generated.acl_file.read_text()

    @pytest.mark.parametrize(
        ("node_id", "children", "expected"),
        [
            ("City", (), "'City'"),
            (CITY, ("county_330106",), "'county_330106'"),
            (CITY, (CITY,), "本级节点"),
            (CITY, ("county-330106", "county-330106"), "重复"),
        ],
    )
    def test_bad_node_ids_rejected(self, tmp_path: Path, node_id: str, children: tuple[str, ...],
                                   expected: str) -> None:
        with pytest.raises(BrokerSetupError) as caught:
            init_broker(tmp_path / "broker", node_id, children, 18883, now=NOW)
        assert expected in str(caught.value)

    def test_damaged_ca_named(self, generated: BrokerFiles) -> None:
        generated.ca_key.write_text("not a key")
        with pytest.raises(BrokerSetupError) as caught:
            init_broker(generated.directory, CITY, CHILDREN, 18883, now=NOW)
        assert str(generated.ca_key) in str(caught.value)


class TestStackBrokerConfig:
    def test_security_replaces_anonymous(self, tmp_path: Path, generated: BrokerFiles) -> None:
        broker = MosquittoBroker(18884, work_dir=tmp_path / "run", security=generated.listener_security())
        text = broker.write_config().read_text()
        assert "allow_anonymous false" in text
        assert "allow_anonymous true" not in text
        assert f"keyfile {generated.server_key}" in text

    def test_plain_broker_unchanged(self, tmp_path: Path) -> None:
        text = MosquittoBroker(18885, work_dir=tmp_path / "run").write_config().read_text()
        assert "allow_anonymous true" in text
        assert "cafile" not in text

    def test_config_file_needs_port(self, generated: BrokerFiles) -> None:
        with pytest.raises(ValueError, match="port"):
            MosquittoBroker(config_file=generated.config_file)


class TestClientSecurity:
    def test_plain_broker_has_none(self) -> None:
        assert client_security(MqttBroker(port=1883), "county-330106") is None

    def test_reads_password_and_ca(self, generated: BrokerFiles) -> None:
        broker = MqttBroker(port=18883, tls=MqttTls(ca_file=generated.ca_cert),
                            password_file=generated.credential("county-330106"))
        security = client_security(broker, "county-330106")
        assert security is not None
        assert security.username == "county-330106"
        assert security.password == generated.credential("county-330106").read_text().strip()
        assert security.ca_file == generated.ca_cert
        assert security.password not in repr(security)

    def test_password_without_tls_rejected(self, generated: BrokerFiles) -> None:
        broker = MqttBroker(port=18883, password_file=generated.credential("county-330106"))
        with pytest.raises(ConfigError) as caught:
            client_security(broker, "county-330106")
        assert "tls.ca_file" in str(caught.value)

    def test_missing_ca_named(self, tmp_path: Path) -> None:
        broker = MqttBroker(port=18883, tls=MqttTls(ca_file=tmp_path / "nope.crt"))
        with pytest.raises(ConfigError) as caught:
            client_security(broker, "county-330106")
        assert str(tmp_path / "nope.crt") in str(caught.value)

    def test_missing_password_file_named(self, generated: BrokerFiles, tmp_path: Path) -> None:
        broker = MqttBroker(port=18883, tls=MqttTls(ca_file=generated.ca_cert), password_file=tmp_path / "x.password")
        with pytest.raises(ConfigError) as caught:
            client_security(broker, "county-330106")
        assert str(tmp_path / "x.password") in str(caught.value)

    def test_tls_context_refuses_old_versions(self, generated: BrokerFiles) -> None:
        context = ClientSecurity(ca_file=generated.ca_cert).tls_context()
        assert context is not None
        assert context.minimum_version.name == "TLSv1_2"
        assert context.check_hostname


class TestConnectFailureText:
    def test_login_rejected(self) -> None:
        text = describe_connect_failure(aiomqtt.MqttCodeError(135, "Not authorized"), "127.0.0.1", 8883,
                                        ClientSecurity(Path("ca.crt"), "county-330106", "x"))
        assert "127.0.0.1:8883" in text
        assert "county-330106" in text
        assert "password_file" in text

    def test_plain_client_told_about_tls(self) -> None:
        text = describe_connect_failure(aiomqtt.MqttError("Operation timed out"), "127.0.0.1", 8883, None)
        assert "tls.ca_file" in text
        assert "Operation timed out" in text

    def test_untrusted_certificate(self) -> None:
        cause = "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
        text = describe_connect_failure(aiomqtt.MqttError(cause), "127.0.0.1", 8883,
                                        ClientSecurity(Path("/etc/other-ca.crt")))
        assert "/etc/other-ca.crt" in text
        assert "ca.crt" in text


class TestCli:
    def test_init_prints_files(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(main, ["brokers", "init", "--node", CITY, "--child", "county-330106",
                                           "--dir", str(tmp_path / "b"), "--port", "18883", "--host", "mqtt.example"])
        assert result.exit_code == 0, result.output
        assert "county-330106 的密码（新生成）" in result.output
        server = x509.load_pem_x509_certificate((tmp_path / "b" / "server.crt").read_bytes())
        names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert "mqtt.example" in names.get_values_for_type(x509.DNSName)

    def test_init_bad_node_in_chinese(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(main, ["brokers", "init", "--node", "City", "--dir", str(tmp_path / "b")])
        assert result.exit_code == 1
        assert "节点编号 'City' 无效" in result.output


class TestAmiSecret:
    def instance(self, tmp_path: Path, name: str) -> AsteriskInstance:
        return AsteriskInstance(name, root=tmp_path, sip_port=15060, ami_port=15038, rtp_ports=(20000, 20010),
                                fastagi_port=14573)

    def test_secret_generated_per_instance(self, tmp_path: Path) -> None:
        first = self.instance(tmp_path, "one").ami.secret
        second = self.instance(tmp_path, "two").ami.secret
        assert first != second
        assert len(first) >= 32

    def test_manager_conf_loopback_only(self, tmp_path: Path) -> None:
        instance = self.instance(tmp_path, "one")
        text = render_template(_load_template("manager.conf"), {
            "name": "one", "ami_port": 15038, "ami_username": instance.ami.username, "ami_secret": instance.ami.secret,
        })
        settings = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition("=") for line in text.splitlines())
            if value and not key.lstrip().startswith(";")
        )
        assert settings["bindaddr"] == "127.0.0.1"
        assert settings["webenabled"] == "no"
        assert settings["deny"] == "0.0.0.0/0.0.0.0"
        assert settings["permit"] == "127.0.0.1/255.255.255.255"
        assert settings["secret"] == instance.ami.secret

    def test_no_fixed_secret_committed(self) -> None:
        tracked = subprocess.run(["git", "ls-files", "asterisk-conf", "config", "docs", "examples"], cwd=REPO,
                                 capture_output=True, text=True, check=True).stdout.split()
        offenders = []
        for name in tracked:
            path = REPO / name
            if not path.is_file():
                continue
            for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if re.match(r"^\s*secret\s*=\s*(?!\{\{)\S", line):
                    offenders.append(f"{name}:{number}")
        assert offenders == []
