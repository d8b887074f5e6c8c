"""ACD settings file: wrap-up, ring-no-answer pause, reservation expiry and routing weights.

Every key is optional and falls back to the ``AcdSettings`` default. Example::

    wrap_up_s: 15
    no_answer_pause_reason: no_answer   # or null to keep an agent available
    reservation_ttl_s: 120
    preferred_wait_s: 30
    need_boosts: {手语: 30, 听力障碍: 20, 需语速放缓: 10, 需重复确认: 10}
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from acd.pool import PAUSE_REASONS, AcdSettings
from acd.roster import explain_field_error

_DEFAULTS = AcdSettings()


class AcdSettingsError(Exception):
    """A settings file that cannot be used; the message is Chinese and names the key and fix."""


class _SettingsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    wrap_up_s: Annotated[float, Field(ge=0, le=600)] = _DEFAULTS.wrap_up_s
    no_answer_pause_reason: str | None = _DEFAULTS.no_answer_pause_reason
    reservation_ttl_s: Annotated[float, Field(ge=10, le=3600)] = _DEFAULTS.reservation_ttl_s
    preferred_wait_s: Annotated[float, Field(ge=0, le=600)] = _DEFAULTS.preferred_wait_s
    priority_weight: Annotated[float, Field(ge=0)] = _DEFAULTS.priority_weight
    wait_slope_per_s: Annotated[float, Field(ge=0)] = _DEFAULTS.wait_slope_per_s
    need_boosts: dict[str, Annotated[float, Field(ge=0)]] = dict(_DEFAULTS.need_boosts)
    proficiency_weight: Annotated[float, Field(ge=0)] = _DEFAULTS.proficiency_weight
    elderly_care_bonus: Annotated[float, Field(ge=0)] = _DEFAULTS.elderly_care_bonus
    preferred_agent_bonus: Annotated[float, Field(ge=0)] = _DEFAULTS.preferred_agent_bonus
    same_tier_bonus: Annotated[float, Field(ge=0)] = _DEFAULTS.same_tier_bonus
    explain_all_limit: Annotated[int, Field(ge=0)] = _DEFAULTS.explain_all_limit
    explain_list_size: Annotated[int, Field(ge=2)] = _DEFAULTS.explain_list_size

    @field_validator("no_answer_pause_reason")
    @classmethod
    def _reason(cls, value: str | None) -> str | None:
        if value is not None and value not in PAUSE_REASONS:
            raise ValueError(f"暂停原因“{value}”不在原因表中，请填 {'、'.join(PAUSE_REASONS)} 之一，或填 null 表示不暂停")
        return value


def load_acd_settings(path: str | Path) -> AcdSettings:
    """Load an ACD settings YAML file; an empty file gives the defaults."""
    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise AcdSettingsError(f"找不到坐席分配设置文件 {path}，请检查路径") from exc
    except YAMLError as exc:
        raise AcdSettingsError(f"坐席分配设置文件 {path} 不是有效的 YAML：{exc}") from exc

    try:
        parsed = _SettingsFile.model_validate(data or {})
    except ValidationError as exc:
        lines = [explain_field_error(item) for item in exc.errors()]
        raise AcdSettingsError(f"坐席分配设置文件 {path} 有误：\n" + "\n".join(f"  - {line}" for line in lines)) from exc
    return AcdSettings(**parsed.model_dump())
