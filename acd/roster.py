"""Agent roster files: who can take calls at this node, on which endpoint, with which skills.

A roster is YAML (a list of mappings) or CSV (one agent a row, header first), chosen by
the file suffix. Fields: ``id``, ``name``, ``endpoint``, optional ``tier`` and ``region``,
``skills`` (``dibao:4`` = skill dibao at proficiency 4; a plain ``dibao`` is level 3),
``languages`` (languages and dialects, e.g. 普通话, 温州话), ``capabilities`` (``video``
for sign-language calls) and ``training`` (``elderly_care``). In CSV, list cells separate
items with ``;``.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq
from ruamel.yaml.error import YAMLError

from acd.pool import DEFAULT_PROFICIENCY, AgentProfile
from hotline.settings_errors import explain_error

TIERS = ("ministry", "province", "city", "county")
CAPABILITIES = ("video",)
TRAININGS = ("elderly_care",)
_SKILL_ID = r"^[a-z][a-z0-9_]{0,31}$"
_LIST_FIELDS = ("skills", "languages", "capabilities", "training")


class RosterError(Exception):
    """A roster that cannot be used; the message is Chinese and names row, field and fix.

    ``problems`` lists each mistake on its own when the file was read and its rows checked.
    It is empty when the file could not be read at all, and the message then explains why.
    """

    def __init__(self, message: str, problems: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


def _parse_skill(item: Any) -> tuple[str, int]:
    text = str(item).strip()
    name, _, level_text = text.partition(":")
    if not re.match(_SKILL_ID, name):
        raise ValueError(f"技能“{text}”的名称格式不对，请用小写英文字母开头的代码，例如 dibao 或 dibao:4")
    if not level_text:
        return name, DEFAULT_PROFICIENCY
    if not level_text.isdigit() or not 1 <= int(level_text) <= 5:
        raise ValueError(f"技能“{text}”的熟练度应为 1 到 5 的整数，例如 {name}:4")
    return name, int(level_text)


class _RosterEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    name: Annotated[str, Field(min_length=1, max_length=32)]
    endpoint: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,40}$")]
    tier: str | None = None
    region: Annotated[str | None, Field(pattern=r"^\d{6}$")] = None
    skills: Annotated[list[str], Field(min_length=1)]
    languages: list[Annotated[str, Field(min_length=1, max_length=16)]] = []
    capabilities: list[str] = []
    training: list[str] = []

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: list[str]) -> list[str]:
        for item in value:
            _parse_skill(item)
        return value

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str | None) -> str | None:
        if value is not None and value not in TIERS:
            raise ValueError(f"层级“{value}”不认识，请填 {'、'.join(TIERS)} 之一")
        return value

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in CAPABILITIES:
                raise ValueError(f"能力“{item}”不认识，请填 {'、'.join(CAPABILITIES)}（视频，手语来电需要）")
        return value

    @field_validator("training")
    @classmethod
    def _training(cls, value: list[str]) -> list[str]:
        for item in value:
            if item not in TRAININGS:
                raise ValueError(f"培训“{item}”不认识，请填 {'、'.join(TRAININGS)}（老年人服务培训）")
        return value


def explain_field_error(item: Any) -> str:
    """Return one Chinese line for one pydantic error, keeping a validator's own message."""
    if item["type"] == "value_error":
        field = ".".join(str(part) for part in item["loc"])
        return f"字段“{field}”：{str(item['msg']).removeprefix('Value error, ')}"
    return explain_error(item)


@dataclass(frozen=True, slots=True)
class _RosterRow:
    """One agent's raw row: where it is (for messages about the row), how a later row names it, its fields."""

    where: str
    owner: str
    data: Any


@dataclass(frozen=True, slots=True)
class RosterAgent:
    """An agent loaded from the roster, with the place of its row in the file for messages."""

    where: str
    profile: AgentProfile


def _read_yaml(path: Path, *, with_lines: bool = False) -> list[_RosterRow]:
    try:
        rows = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    except YAMLError as exc:
        raise RosterError(f"坐席名单 {path} 不是有效的 YAML：{exc}") from exc
    if not isinstance(rows, list) or not rows:
        raise RosterError(f"坐席名单 {path} 应为非空列表，每项一名坐席（id、name、endpoint、skills）")
    lines = _yaml_item_lines(path) if with_lines else []
    return [
        _RosterRow(f"第 {lines[number - 1]} 行的第 {number} 名坐席", f"第 {lines[number - 1]} 行的坐席", row)
        if lines else _RosterRow(f"第 {number} 名坐席", f"第 {number} 名坐席", row)
        for number, row in enumerate(rows, start=1)
    ]


def _yaml_item_lines(path: Path) -> list[int]:
    """Return the 1-based line on which each item of a YAML roster list starts, or [] when unknown.

    The safe loader keeps no positions, so the file is parsed a second time in round-trip mode.
    """
    try:
        document = YAML().load(path.read_text(encoding="utf-8"))
    except YAMLError:
        return []
    if not isinstance(document, CommentedSeq):
        return []
    return [document.lc.item(index)[0] + 1 for index in range(len(document))]


def _read_csv(path: Path) -> list[_RosterRow]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        rows: list[_RosterRow] = []
        for row in reader:
            if not any((value or "").strip() for value in row.values() if isinstance(value, str)):
                continue
            data: dict[str, Any] = {}
            for column, value in row.items():
                if column is None:
                    data["（多余的列）"] = value
                    continue
                text = (value or "").strip()
                if column in _LIST_FIELDS:
                    data[column] = [part.strip() for part in text.split(";") if part.strip()]
                elif text:
                    data[column] = text
            rows.append(_RosterRow(f"第 {reader.line_num} 行", f"第 {reader.line_num} 行的坐席", data))
    if not rows:
        raise RosterError(f"坐席名单 {path} 没有坐席：第 1 行写列名（id,name,endpoint,skills,…），之后每行一名坐席")
    return rows


def load_roster(path: str | Path) -> list[AgentProfile]:
    """Load a YAML or CSV roster (by suffix ``.csv``) into agent profiles.

    Raises ``RosterError`` listing every mistake in the file, not only the first.
    """
    return [agent.profile for agent in load_roster_rows(path, with_lines=False)]


def load_roster_rows(path: str | Path, *, with_lines: bool = True) -> list[RosterAgent]:
    """Load a roster like ``load_roster`` and keep where each agent's row is, for later checks.

    YAML line numbers need a second, slower round-trip parse (about 1.8 s at 5,000 agents
    on the development machine). With ``with_lines`` False only a roster with mistakes
    pays for it, and valid rows are named by their position in the list.
    """
    path = Path(path)
    is_csv = path.suffix.lower() == ".csv"
    try:
        rows = _read_csv(path) if is_csv else _read_yaml(path, with_lines=with_lines)
    except FileNotFoundError as exc:
        raise RosterError(f"找不到坐席名单 {path}，请检查路径") from exc

    agents, problems = _check_rows(rows)
    if problems and not is_csv and not with_lines:
        agents, problems = _check_rows(_read_yaml(path, with_lines=True))
    if problems:
        raise RosterError(f"坐席名单 {path} 有误：\n" + "\n".join(f"  - {p}" for p in problems), tuple(problems))
    return agents


def _check_rows(rows: list[_RosterRow]) -> tuple[list[RosterAgent], list[str]]:
    """Validate the rows; return the agents of the valid ones and a message for each mistake."""
    agents: list[RosterAgent] = []
    problems: list[str] = []
    id_owners: dict[str, str] = {}
    endpoint_owners: dict[str, str] = {}
    for row in rows:
        # Repeated ids and endpoints are looked for on every row, valid or not, so a roster
        # with both kinds of mistakes lists them all in one run.
        problems.extend(_repeats(row, id_owners, endpoint_owners))
        try:
            entry = _RosterEntry.model_validate(row.data)
        except ValidationError as exc:
            problems.extend(f"{row.where}，{explain_field_error(item)}" for item in exc.errors())
            continue
        levels = dict(_parse_skill(item) for item in entry.skills)
        agents.append(RosterAgent(row.where, AgentProfile(
            entry.id, entry.name, entry.endpoint, frozenset(levels), tuple(sorted(levels.items())),
            tier=entry.tier, region_code=entry.region, languages=frozenset(entry.languages),
            capabilities=frozenset(entry.capabilities), training=frozenset(entry.training),
        )))
    return agents, problems


def _repeats(row: _RosterRow, id_owners: dict[str, str], endpoint_owners: dict[str, str]) -> list[str]:
    """Return the messages for a row whose id or endpoint an earlier row already has; remember this row's."""
    if not isinstance(row.data, dict):
        return []
    found: list[str] = []
    agent_id = _text_value(row.data.get("id"))
    if agent_id:
        if agent_id in id_owners:
            found.append(f"{row.where}：工号“{agent_id}”重复，{id_owners[agent_id]}已用此工号，请改成唯一的工号")
        else:
            id_owners[agent_id] = row.owner
    endpoint = _text_value(row.data.get("endpoint"))
    if endpoint:
        if endpoint in endpoint_owners:
            found.append(f"{row.where}：话机“{endpoint}”已分给{endpoint_owners[endpoint]}，"
                         f"每名坐席一部话机，请换成这名坐席自己的话机")
        else:
            endpoint_owners[endpoint] = row.owner
    return found


def _text_value(value: Any) -> str:
    return "" if value is None else str(value).strip()
