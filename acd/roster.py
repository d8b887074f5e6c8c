"""Agent roster files: who can take calls at this node, on which endpoint, with which skills."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from acd.pool import AgentProfile
from hotline.settings_errors import explain_error


class RosterError(Exception):
    """A roster that cannot be used; the message is Chinese and names row, field and fix."""


class _RosterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    name: Annotated[str, Field(min_length=1, max_length=32)]
    endpoint: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
    skills: Annotated[list[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]], Field(min_length=1)]


def load_roster(path: str | Path) -> list[AgentProfile]:
    """Load a YAML roster: a list of agents with ``id``, ``name``, ``endpoint`` and ``skills``."""
    path = Path(path)
    try:
        rows = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise RosterError(f"找不到坐席名单 {path}，请检查路径") from exc
    except YAMLError as exc:
        raise RosterError(f"坐席名单 {path} 不是有效的 YAML：{exc}") from exc

    if not isinstance(rows, list) or not rows:
        raise RosterError(f"坐席名单 {path} 应为非空列表，每项一名坐席（id、name、endpoint、skills）")

    agents: list[AgentProfile] = []
    problems: list[str] = []
    seen_ids: set[str] = set()
    seen_endpoints: set[str] = set()
    for number, row in enumerate(rows, start=1):
        try:
            entry = _RosterEntry.model_validate(row)
        except ValidationError as exc:
            problems.extend(f"第 {number} 名坐席，{explain_error(item)}" for item in exc.errors())
            continue
        if entry.id in seen_ids:
            problems.append(f"第 {number} 名坐席：工号“{entry.id}”重复，请改成唯一的工号")
        if entry.endpoint in seen_endpoints:
            problems.append(f"第 {number} 名坐席：话机“{entry.endpoint}”已分给别的坐席，每名坐席一部话机")
        seen_ids.add(entry.id)
        seen_endpoints.add(entry.endpoint)
        agents.append(AgentProfile(entry.id, entry.name, entry.endpoint, frozenset(entry.skills)))

    if problems:
        raise RosterError(f"坐席名单 {path} 有误：\n" + "\n".join(f"  - {p}" for p in problems))
    return agents
