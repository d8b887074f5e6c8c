"""Configuration of one hotline node: its tier, region, parent and the services it talks to."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from hotline.settings_errors import describe_validation_error
from regions.divisions import RegionCodeError
from regions.tiers import validate_node_region_code

Tier = Literal["county", "city", "province", "ministry"]
TIER_LABELS = {"county": "县级", "city": "市级", "province": "省级", "ministry": "部级"}

# GB/T 2260 region code; the ministry uses 000000.
RegionCode = Annotated[str, Field(pattern=r"^[0-9]{6}$")]
NodeId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,47}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTls(_Strict):
    """TLS to a broker set up by ``hotline brokers init``."""

    # The private CA certificate that signed the broker's server certificate.
    ca_file: Path


class MqttBroker(_Strict):
    host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]
    max_packet_size: Annotated[int, Field(ge=1024)] = 262144
    tls: MqttTls | None = None
    # File with this node's broker password; the MQTT username is the node id.
    password_file: Path | None = None


class ParentLink(_Strict):
    """The tier above: its node id and the broker it runs."""

    node_id: NodeId
    broker: MqttBroker


class FastAgiListen(_Strict):
    host: Literal["127.0.0.1", "::1"] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)]


class AmiLogin(_Strict):
    host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]
    username: str
    secret_file: Path


class SpeechSettings(_Strict):
    """Speech recognition for menus with ``listen``; without this section menus take keys only."""

    # Folder of a vosk model, loaded only in the recogniser's own worker process.
    model_path: Path
    # Folder the switch records callers' answers into, as a path inside the Asterisk root.
    # RECORD FILE neither creates it nor accepts a relative path, so it must exist.
    answer_dir: Annotated[str, Field(pattern=r"^/[A-Za-z0-9_./-]+$")]
    # The same folder as the controller sees it (the Asterisk root plus ``answer_dir``).
    answer_local_dir: Path


class Telephony(_Strict):
    """Settings of a call-taking node: FastAGI listener, AMI login, flow, prompts and roster."""

    fastagi: FastAgiListen
    # Listener of the standby controller (`hotline run --standby`), which takes new calls
    # while the primary is down; both share the node's database.
    standby_fastagi: FastAgiListen | None = None
    ami: AmiLogin
    flow: Path
    prompt_catalog: Path
    # Folder of prompt audio as a path inside the Asterisk root, without a trailing slash.
    prompt_sound_dir: str
    roster: Path
    # Admin's working-day overrides on top of the State Council holiday data.
    calendar_overrides: Path | None = None
    # Wrap-up time, no-answer pause and routing weights; defaults apply when absent.
    acd_settings: Path | None = None
    # Citizen profile store settings (`hotline profiles init`). With them the node looks
    # callers up, skips the menu for callers with an open ticket and seals stored numbers.
    profiles: Path | None = None
    speech: SpeechSettings | None = None
    # PJSIP endpoint that reaches citizens' numbers: with it, callers who ask for a callback
    # in the queue keep their place and are called back through it when their turn comes.
    callback_trunk: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,40}$")] | None = None
    # The switch's recording folder as this process sees it; recorded agent calls found
    # there are attached to their tickets.
    call_recordings_dir: Path | None = None
    # Days `hotline recordings purge` keeps agent-call recordings.
    recording_retention_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class NodeConfig(_Strict):
    node_id: NodeId
    tier: Tier
    region_code: RegionCode
    database: Path
    parent: ParentLink | None = None
    # The broker this node runs for its children, when it has any.
    broker: MqttBroker | None = None
    telephony: Telephony | None = None
    log_file: Path | None = None
    # Ancestors (province, ministry) that receive this node's emergency tickets straight from
    # it as well as through the parent (跨级直连); empty for a node without that duty.
    direct_upstream: tuple[ParentLink, ...] = ()


class ConfigError(Exception):
    """A configuration file that cannot be used; the message is Chinese and names the fix."""


def _check_files_exist(path: Path, telephony: Telephony) -> None:
    files = {
        "telephony.flow": telephony.flow,
        "telephony.prompt_catalog": telephony.prompt_catalog,
        "telephony.roster": telephony.roster,
        "telephony.ami.secret_file": telephony.ami.secret_file,
        "telephony.calendar_overrides": telephony.calendar_overrides,
        "telephony.acd_settings": telephony.acd_settings,
        "telephony.profiles": telephony.profiles,
    }
    missing = [f"  - {key}：{file}" for key, file in files.items() if file is not None and not Path(file).is_file()]
    if missing:
        raise ConfigError(f"配置文件 {path} 中以下文件不存在，请检查路径（相对路径从当前目录算起）：\n" + "\n".join(missing))


def _check_direct_upstream(path: Path, config: NodeConfig) -> None:
    """Reject direct links that repeat the parent, repeat each other or point at the node itself."""
    if config.direct_upstream and config.parent is None:
        raise ConfigError(f"配置文件 {path}：direct_upstream（跨级直连）需要同时配置上级节点 parent")
    seen: set[str] = {config.node_id}
    if config.parent is not None:
        seen.add(config.parent.node_id)
    for index, link in enumerate(config.direct_upstream):
        if link.node_id in seen:
            raise ConfigError(
                f"配置文件 {path}：direct_upstream 第 {index + 1} 项的节点 {link.node_id} 与本节点、上级节点或"
                f"前面的直连节点重复；跨级直连只填上级以上的省级、部级节点，每个节点一项"
            )
        seen.add(link.node_id)


def load_node_config(path: str | Path, *, require_files: bool = False) -> NodeConfig:
    """Load and check a node's configuration.

    ``require_files`` also checks that every file the telephony section names exists,
    which a node about to run needs and a CLI command that reads the database does not.
    """
    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"找不到配置文件 {path}，请检查路径") from exc
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"第 {mark.line + 1} 行第 {mark.column + 1} 列" if mark else "某处"
        raise ConfigError(f"配置文件 {path} 的 YAML 格式有误（{where}）：请检查缩进、冒号和引号") from exc

    try:
        config = NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(path), exc)) from exc

    try:
        validate_node_region_code(config.region_code, config.tier)
    except RegionCodeError as exc:
        raise ConfigError(f"配置文件 {path}：{exc}") from exc

    if require_files and config.telephony is not None:
        _check_files_exist(path, config.telephony)

    if config.tier == "county" and config.telephony is None:
        raise ConfigError(f"配置文件 {path}：县级节点必须有 telephony 一节（FastAGI、AMI、流程和坐席名单）")
    if config.tier == "county" and config.parent is None:
        raise ConfigError(f"配置文件 {path}：县级节点必须配置上级节点 parent，工单要逐级上报")
    _check_direct_upstream(path, config)
    if config.tier != "county" and config.broker is None:
        raise ConfigError(f"配置文件 {path}：{TIER_LABELS[config.tier]}节点必须配置本级 MQTT 服务 broker，供下级上报工单")
    return config
