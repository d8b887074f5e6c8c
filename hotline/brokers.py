"""Generated security for a tier node's mosquitto: private CA, server certificate, per-node passwords and ACL.

A node above the county runs a broker that its children publish to. ``init_broker``
writes everything that broker needs into one directory:

- ``ca.crt`` / ``ca.key``: a private CA for this broker only;
- ``server.crt`` / ``server.key``: the broker's certificate for its host names;
- ``credentials/<node>.password``: one random password per node, to copy to that node;
- ``passwd``: the same passwords hashed for mosquitto's ``password_file``;
- ``acl``: per-node topic rules, so a node can publish only as itself;
- ``mosquitto.conf``: a TLS 1.2+ listener with anonymous access off, using the above.

Topic rules, with ``B`` the broker's node and ``C`` each child::

    user B    read  hotline/v1/B/up/#        (the receiver reads everything sent up)
              write hotline/v1/C/down/#      (acks and instructions to each child)
    user C    write hotline/v1/B/up/C/#      (a child publishes only under its own id)
              read  hotline/v1/C/down/#      (and reads only what is addressed to it)
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import TypeAdapter, ValidationError

from hotline.config import ConfigError, MqttBroker, NodeId
from stack.mosquitto import ListenerSecurity, security_config_lines
from tickets.model import validate_node_id
from tier_sync.mqtt_session import ClientSecurity
from tier_sync.topics import TOPIC_ROOT

CA_VALIDITY = timedelta(days=3650)
SERVER_VALIDITY = timedelta(days=825)
DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")

# mosquitto 2.0 password hashes are "$7$<iterations>$<base64 salt>$<base64 hash>" with
# PBKDF2-HMAC-SHA512, and mosquitto_passwd 2.0.11 writes 101 iterations and a 12-byte
# salt (a unit test compares with its output). The passwords are 32 random bytes, so a
# slower hash would add no protection against guessing.
PASSWORD_HASH_ITERATIONS = 101
PASSWORD_SALT_BYTES = 12
PASSWORD_BYTES = 32


class BrokerSetupError(Exception):
    """The broker files cannot be generated; the message is Chinese and names the fix."""


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Paths of the files ``init_broker`` generates in one directory."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.directory / "server.crt"

    @property
    def server_key(self) -> Path:
        return self.directory / "server.key"

    @property
    def password_file(self) -> Path:
        return self.directory / "passwd"

    @property
    def acl_file(self) -> Path:
        return self.directory / "acl"

    @property
    def config_file(self) -> Path:
        return self.directory / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.directory / "mosquitto.log"

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def credential(self, node_id: str) -> Path:
        """Return the file holding ``node_id``'s password in clear, to be copied to that node."""
        return self.directory / "credentials" / f"{validate_node_id(node_id)}.password"

    def listener_security(self) -> ListenerSecurity:
        return ListenerSecurity(
            ca_file=self.ca_cert,
            cert_file=self.server_cert,
            key_file=self.server_key,
            password_file=self.password_file,
            acl_file=self.acl_file,
        )


@dataclass(frozen=True, slots=True)
class BrokerInitResult:
    """Outcome of ``init_broker``: the nodes that got a new password and whether the CA is new."""

    files: BrokerFiles
    node_id: str
    children: tuple[str, ...]
    new_ca: bool
    new_credentials: tuple[str, ...]
    kept_credentials: tuple[str, ...]


# ---------------------------------------------------------------- certificates


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "12349 hotline"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def generate_ca(node_id: str, now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create a private CA key and self-signed certificate for ``node_id``'s broker."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"12349 hotline broker CA {node_id}")
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _subject_alternative_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_server_certificate(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    node_id: str,
    hosts: tuple[str, ...],
    now: datetime,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Issue the broker's TLS server certificate for ``hosts`` (names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(f"12349 hotline broker {node_id}"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + SERVER_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(hosts)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to a file only its owner can read, without a moment of wider access."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    path.chmod(0o600)


# ---------------------------------------------------------------- passwords and ACL


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PASSWORD_HASH_ITERATIONS) -> str:
    """Hash a password in mosquitto 2.0's ``password_file`` format (PBKDF2-HMAC-SHA512)."""
    salt = salt if salt is not None else secrets.token_bytes(PASSWORD_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def render_password_file(passwords: dict[str, str]) -> str:
    """Return the ``password_file`` text: one ``user:hash`` line per node, sorted by node id."""
    return "".join(f"{node_id}:{hash_password(passwords[node_id])}\n" for node_id in sorted(passwords))


def render_acl(node_id: str, children: tuple[str, ...]) -> str:
    """Return the mosquitto ``acl_file`` under which each node can publish only as itself."""
    lines = [
        "# Generated by hotline brokers init; edits are lost when it runs again.",
        "# No rule is given for anonymous clients, because the broker does not accept them.",
        "",
        f"user {node_id}",
        f"topic read {TOPIC_ROOT}/{node_id}/up/#",
    ]
    lines += [f"topic write {TOPIC_ROOT}/{child}/down/#" for child in children]
    for child in children:
        lines += [
            "",
            f"user {child}",
            f"topic write {TOPIC_ROOT}/{node_id}/up/{child}/#",
            f"topic read {TOPIC_ROOT}/{child}/down/#",
        ]
    return "\n".join(lines) + "\n"


def render_mosquitto_conf(
    files: BrokerFiles,
    port: int,
    *,
    listen: str = "127.0.0.1",
    run_as: str | None = None,
    max_packet_size: int | None = None,
) -> str:
    """Return a standalone mosquitto.conf for ``mosquitto -c``: one TLS listener, logins and ACL."""
    lines = [
        "# Generated by hotline brokers init; edits are lost when it runs again.",
        "per_listener_settings false",
        f"listener {port} {listen}",
        *security_config_lines(files.listener_security()),
        "persistence true",
        f"persistence_location {files.data_dir}/",
        f"log_dest file {files.log_file}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
    ]
    if max_packet_size is not None:
        lines.append(f"max_packet_size {int(max_packet_size)}")
    if run_as is not None:
        # mosquitto started as root switches to this user, who must be able to read the key files.
        lines.append(f"user {run_as}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the whole directory


def _check_node_ids(node_id: str, children: tuple[str, ...]) -> None:
    # The same rule as node_id in a node's configuration, so every generated user can log in.
    node_id_rule = TypeAdapter(NodeId)
    for value in (node_id, *children):
        try:
            node_id_rule.validate_python(value)
        except ValidationError:
            raise BrokerSetupError(
                f"节点编号 {value!r} 无效：应以小写字母开头，只含小写字母、数字和连字符，共 2 到 48 个字符，"
                f"例如 county-330106"
            ) from None
    if node_id in children:
        raise BrokerSetupError(f"下级节点列表中出现了本级节点 {node_id}：请只列出向本服务上报的下级节点")
    duplicates = sorted({child for child in children if children.count(child) > 1})
    if duplicates:
        raise BrokerSetupError(f"下级节点 {', '.join(duplicates)} 重复列出：每个节点只列一次")


def _load_ca(files: BrokerFiles) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    try:
        key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
        certificate = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise BrokerSetupError(
            f"无法读取已有的 CA（{files.ca_cert}、{files.ca_key}）：{exc}。"
            f"请恢复这两个文件；若要重建 CA，请删除二者后重新运行，并把新的 ca.crt 发给所有下级节点"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise BrokerSetupError(f"{files.ca_key} 不是本工具生成的 EC 私钥：请删除 ca.crt 和 ca.key 后重新运行")
    return key, certificate


def init_broker(
    directory: str | Path,
    node_id: str,
    children: tuple[str, ...],
    port: int,
    *,
    hosts: tuple[str, ...] = DEFAULT_HOSTS,
    listen: str = "127.0.0.1",
    run_as: str | None = None,
    max_packet_size: int | None = None,
    now: datetime | None = None,
) -> BrokerInitResult:
    """Generate or update the broker files of ``node_id`` in ``directory``.

    ``run_as`` (default: the current user) is the account mosquitto switches to when
    started as root; the generated files are readable by their owner only.
    Running it again keeps the CA and every existing node password, so nodes already
    set up keep working. It issues a new server certificate and adds passwords for new
    children. The password file, ACL and mosquitto.conf are rewritten from the full
    list, so a child left out of ``children`` loses access.
    """
    now = now or datetime.now(timezone.utc)
    # The files are private to the account running init, so mosquitto must run as it too.
    run_as = run_as or getpass.getuser()
    _check_node_ids(node_id, children)
    if not 0 < port < 65536:
        raise BrokerSetupError(f"端口 {port} 无效：请给出 1 到 65535 之间的端口")

    files = BrokerFiles(Path(directory))
    files.directory.mkdir(parents=True, exist_ok=True)
    files.directory.chmod(0o700)
    files.data_dir.mkdir(exist_ok=True)

    # Step 1: the CA, kept across runs because every node trusts it.
    new_ca = not files.ca_cert.exists() and not files.ca_key.exists()
    if new_ca:
        ca_key, ca_cert = generate_ca(node_id, now)
        _write_private(files.ca_key, _key_pem(ca_key))
        files.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    else:
        ca_key, ca_cert = _load_ca(files)

    # Step 2: a fresh server certificate for the current host names.
    server_key, server_cert = issue_server_certificate(ca_key, ca_cert, node_id, hosts, now)
    _write_private(files.server_key, _key_pem(server_key))
    files.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))

    # Step 3: one password per node, the broker's own node included.
    passwords: dict[str, str] = {}
    created: list[str] = []
    kept: list[str] = []
    for member in (node_id, *children):
        credential = files.credential(member)
        if credential.exists():
            passwords[member] = read_password_file(credential)
            kept.append(member)
        else:
            passwords[member] = secrets.token_urlsafe(PASSWORD_BYTES)
            _write_private(credential, (passwords[member] + "\n").encode())
            created.append(member)

    # Step 4: what mosquitto reads.
    _write_private(files.password_file, render_password_file(passwords).encode())
    _write_private(files.acl_file, render_acl(node_id, children).encode())
    conf = render_mosquitto_conf(files, port, listen=listen, run_as=run_as, max_packet_size=max_packet_size)
    _write_private(files.config_file, conf.encode())

    return BrokerInitResult(
        files=files,
        node_id=node_id,
        children=children,
        new_ca=new_ca,
        new_credentials=tuple(created),
        kept_credentials=tuple(kept),
    )


# ---------------------------------------------------------------- the client side


def read_password_file(path: Path) -> str:
    """Read a node's password from its credential file (one line, surrounding blanks ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"找不到 MQTT 密码文件 {path}：请从上级节点复制 hotline brokers init 生成的 credentials/<节点编号>.password") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"无法读取 MQTT 密码文件 {path}：{exc}") from None
    password = text.strip()
    if not password or "\n" in password:
        raise ConfigError(f"MQTT 密码文件 {path} 应只有一行密码：请重新复制上级节点生成的密码文件")
    return password


def client_security(broker: MqttBroker, node_id: str) -> ClientSecurity | None:
    """Build ``node_id``'s TLS and login settings for ``broker`` from the node config.

    Returns None for a broker without ``tls`` and ``password_file`` (plain loopback, as in
    tests and the demo). A password without TLS is rejected, because it would cross the
    link in clear.
    """
    if broker.tls is None and broker.password_file is None:
        return None
    if broker.tls is None:
        raise ConfigError(
            f"MQTT 服务 {broker.host}:{broker.port} 配置了 password_file 但没有 tls：密码不能明文传输，"
            f"请加入 tls.ca_file（上级节点 hotline brokers init 生成的 ca.crt）"
        )
    if not Path(broker.tls.ca_file).is_file():
        raise ConfigError(
            f"找不到 MQTT 服务 {broker.host}:{broker.port} 的 CA 证书 {broker.tls.ca_file}："
            f"请从该服务所在节点复制 hotline brokers init 生成的 ca.crt"
        )
    password = read_password_file(Path(broker.password_file)) if broker.password_file is not None else None
    return ClientSecurity(
        ca_file=Path(broker.tls.ca_file),
        username=node_id if password is not None else None,
        password=password,
    )
