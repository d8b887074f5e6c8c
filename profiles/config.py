"""Configuration of the profile store: its database and its two key files.

The profile store has its own YAML file, separate from the node configuration, because
its keys are kept by a different person (the data officer) than the node's settings::

    database: /var/lib/hotline/profiles.sqlite3
    encryption_key_file: /etc/hotline/keys/profiles-encryption.json
    lookup_key_file: /etc/hotline/keys/profiles-lookup.json
    default_area_code: "021"

Paths are used as written, relative ones from the working folder, as in node configs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from hotline.config import ConfigError
from hotline.settings_errors import describe_validation_error


class ProfilesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    database: Path
    encryption_key_file: Path
    lookup_key_file: Path
    # Area code with trunk prefix for landlines presented without one, such as "021".
    default_area_code: Annotated[str, Field(pattern=r"^0[1-9][0-9]{1,2}$")] | None = None


def load_profiles_config(path: str | Path) -> ProfilesConfig:
    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(f"找不到配置文件 {path}，请检查路径") from exc
    except YAMLError as exc:
        raise ConfigError(f"配置文件 {path} 不是有效的 YAML：{exc}") from exc

    try:
        config = ProfilesConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(str(path), exc)) from exc

    database = config.database.resolve()
    for key_file in (config.encryption_key_file, config.lookup_key_file):
        if key_file.resolve() == database or key_file.resolve().parent == database.parent:
            raise ConfigError(
                f"配置文件 {path}：密钥文件 {key_file} 与数据库在同一目录；请把密钥放到数据库目录之外，"
                "这样数据库的备份不会带上密钥"
            )
    return config
