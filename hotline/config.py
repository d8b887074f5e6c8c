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


class MqttBroker(_Strict):
    host: Literal["127.0.0.1", "localhost", "::1"] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)]
    max_packet_size: Annotated[int, Field(ge=1024)] = 262144


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


class Telephony(_Strict):
    """Settings of a call-taking node: FastAGI listener, AMI login, flow, prompts and roster."""

    fastagi: FastAgiListen
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
    }
    missing = [f"  - {key}：{file}" for key, file in files.items() if file is not None and not Path(file).is_file()]
    if missing:
        raise ConfigError(f"配置文件 {path} 中以下文件不存在，请检查路径（相对路径从当前目录算起）：\n" + "\n".join(missing))


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
    if config.tier != "county" and config.broker is None:
        raise ConfigError(f"配置文件 {path}：{TIER_LABELS[config.tier]}节点必须配置本级 MQTT 服务 broker，供下级上报工单")
    return config
