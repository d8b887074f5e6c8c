"""CLI: ``hotline brokers`` generates a tier broker's TLS, passwords and ACL, and tests a node's login."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiomqtt
import click

from hotline.brokers import DEFAULT_HOSTS, BrokerSetupError, client_security, init_broker
from hotline.config import ConfigError, MqttBroker, load_node_config
from tier_sync.mqtt_session import SessionSettings, make_client


class _CommandFailed(click.ClickException):
    """A failure reported to the operator in Chinese, with exit code 1."""

    def show(self, file: object = None) -> None:
        click.echo(f"错误：{self.format_message()}", err=True)


@click.group(help="各级节点的 MQTT 服务：生成 TLS 证书、每个节点的密码和访问控制，检查节点能否登录。")
def brokers() -> None:
    pass


@brokers.command(
    "init",
    help=(
        "为本级节点的 mosquitto 生成私有 CA、服务证书、每个节点一份密码、访问控制表和 mosquitto.conf。"
        "再次运行时保留已有的 CA 和密码，只为新列出的下级节点生成密码；未列出的下级节点将失去访问权限。"
    ),
)
@click.option("--node", "node_id", required=True, help="本级节点编号（运行该 MQTT 服务的节点），例如 city-330100。")
@click.option("--child", "children", multiple=True,
              help="向本服务上报的下级节点编号，可重复；紧急工单直连本级的节点也要列出。")
@click.option("--dir", "directory", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="输出目录；文件只有当前用户可读。")
@click.option("--port", type=click.IntRange(1, 65535), default=8883, show_default=True, help="TLS 监听端口。")
@click.option("--listen", default="127.0.0.1", show_default=True, help="监听地址。")
@click.option("--host", "hosts", multiple=True,
              help=f"写入服务证书的主机名或 IP，可重复；总会包含 {'、'.join(DEFAULT_HOSTS)}。")
@click.option("--run-as", default=None, help="mosquitto 以 root 启动时切换到的用户；默认是运行本命令的用户。")
@click.option("--max-packet-size", type=click.IntRange(1024), default=None,
              help="单个 MQTT 包的最大字节数；需与下级节点配置中的 max_packet_size 一致。")
def init_command(
    node_id: str,
    children: tuple[str, ...],
    directory: Path,
    port: int,
    listen: str,
    hosts: tuple[str, ...],
    run_as: str | None,
    max_packet_size: int | None,
) -> None:
    all_hosts = tuple(dict.fromkeys((*DEFAULT_HOSTS, *hosts)))
    try:
        result = init_broker(directory, node_id, children, port, hosts=all_hosts, listen=listen, run_as=run_as,
                             max_packet_size=max_packet_size)
    except BrokerSetupError as exc:
        raise _CommandFailed(str(exc)) from None
    except OSError as exc:
        raise _CommandFailed(f"无法写入目录 {directory}：{exc.strerror}。请检查路径和权限") from None

    files = result.files
    click.echo(f"已生成节点 {node_id} 的 MQTT 服务配置：{files.config_file}")
    click.echo(f"  CA 证书：{files.ca_cert}（{'新建' if result.new_ca else '沿用已有的'}）")
    click.echo(f"  服务证书：{files.server_cert}（主机 {'、'.join(all_hosts)}）")
    click.echo(f"  访问控制：{files.acl_file}；密码表：{files.password_file}")
    for member in (node_id, *children):
        state = "新生成" if member in result.new_credentials else "沿用"
        click.echo(f"  {member} 的密码（{state}）：{files.credential(member)}")
    click.echo(f"启动：mosquitto -c {files.config_file}")
    click.echo(
        "下一步：把 ca.crt 和各下级节点自己的 credentials/<节点编号>.password 安全地复制到该节点，"
        "并在其配置的 parent.broker 中写入 tls.ca_file 和 password_file；本级节点的 broker 一节同样配置。"
    )


@brokers.command("check", help="用节点配置中的 TLS 和密码登录其 MQTT 服务（上级的和本级的），报告能否连接。")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="节点配置文件（YAML）。")
@click.option("--timeout", type=click.FloatRange(0.5, 120), default=10.0, show_default=True, help="每次连接的超时秒数。")
def check_command(config_path: Path, timeout: float) -> None:
    try:
        config = load_node_config(config_path)
    except ConfigError as exc:
        raise _CommandFailed(str(exc)) from None

    targets: list[tuple[str, MqttBroker]] = []
    if config.parent is not None:
        targets.append((f"上级 {config.parent.node_id}", config.parent.broker))
    if config.broker is not None:
        targets.append(("本级", config.broker))
    if not targets:
        raise _CommandFailed(f"配置文件 {config_path} 中没有 parent.broker 或 broker：没有可检查的 MQTT 服务")

    failed = 0
    for label, broker in targets:
        try:
            security = client_security(broker, config.node_id)
        except ConfigError as exc:
            click.echo(f"{label} MQTT 服务 {broker.host}:{broker.port}：{exc}", err=True)
            failed += 1
            continue
        # Session expiry 0: the broker forgets this one-off session when it disconnects.
        settings = SessionSettings(security=security, connect_timeout_s=timeout, session_expiry_s=0)
        error = asyncio.run(_try_login(broker, config.node_id, settings))
        if error is None:
            mode = "TLS + 密码" if security is not None and security.password else (
                "TLS" if security is not None else "明文、无密码")
            click.echo(f"{label} MQTT 服务 {broker.host}:{broker.port}：以节点 {config.node_id} 登录成功（{mode}）")
        else:
            click.echo(f"{label} {error}", err=True)
            failed += 1
    sys.exit(1 if failed else 0)


async def _try_login(broker: MqttBroker, node_id: str, settings: SessionSettings) -> str | None:
    """Connect once and disconnect; return the Chinese reason on failure, None on success."""
    # A client id of its own, so the check never takes over a running node's session.
    client = make_client(broker.host, broker.port, f"hotline-{node_id}-check", settings)
    try:
        async with client:
            return None
    except aiomqtt.MqttError as exc:
        return str(exc)
