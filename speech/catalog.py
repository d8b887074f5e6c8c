"""Speech catalog layer: load the prompt catalog YAML into frozen prompt specs.

A catalog maps prompt ids (the file names Asterisk plays, without extension) to the text
callers hear, with an optional per-prompt speed factor and maintainer note. Errors name
the file, the line and the fix in Chinese, because operators edit this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

DEFAULT_VOICE = "cmn-latn-pinyin"
DEFAULT_RATE_WPM = 150
MIN_SPEED = 0.5
MAX_SPEED = 1.5
MIN_RATE_WPM = 80
MAX_RATE_WPM = 450  # espeak-ng's accepted range is 80 to 450 words per minute

PROMPT_ID_RE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
RENDITION_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,15}$")
# A rendition's prompt id is the base id, this separator and the rendition name
# (``main_menu@slow``); the flow runner plays it for callers whose needs ask for it.
RENDITION_SEPARATOR = "@"
_TOP_LEVEL_KEYS = {"language", "voice", "rate_wpm", "renditions", "prompts"}
_PROMPT_KEYS = {"text", "speed", "note"}


class CatalogError(ValueError):
    """The catalog file is missing or malformed; the message names the file, line and fix."""


@dataclass(frozen=True, slots=True)
class PromptSpec:
    """One prompt: its id, the text spoken, and a speed factor applied to the catalog rate."""

    prompt_id: str
    text: str
    speed: float = 1.0
    note: str | None = None
    # Set on a generated rendition (``slow``); its base prompt is ``base_id``.
    rendition: str | None = None

    @property
    def base_id(self) -> str:
        """Return the id of the prompt this one renders: itself, or the base of a rendition."""
        return self.prompt_id.split(RENDITION_SEPARATOR, 1)[0]


@dataclass(frozen=True, slots=True)
class PromptCatalog:
    """All prompts of one language, with the voice and base rate they are rendered with.

    ``prompts`` holds the catalog's own prompts followed by one generated prompt per
    prompt and rendition (``main_menu@slow``), whose speed is the prompt's speed times
    the rendition's factor from ``renditions``.
    """

    path: Path
    language: str
    voice: str
    rate_wpm: int
    prompts: tuple[PromptSpec, ...]
    renditions: tuple[tuple[str, float], ...] = ()

    def rendition_factor(self, rendition: str) -> float:
        """Return the speed factor of one rendition; raise ``KeyError`` for an unknown one."""
        return dict(self.renditions)[rendition]

    def rate_for(self, prompt: PromptSpec) -> int:
        """Return the espeak-ng rate in words per minute for one prompt."""
        return max(MIN_RATE_WPM, min(MAX_RATE_WPM, round(self.rate_wpm * prompt.speed)))

    def get(self, prompt_id: str) -> PromptSpec | None:
        return next((prompt for prompt in self.prompts if prompt.prompt_id == prompt_id), None)

    def __iter__(self) -> Iterator[str]:
        """Iterate over prompt ids, so ``set(catalog)`` is the set of ids."""
        return (prompt.prompt_id for prompt in self.prompts)

    def __contains__(self, prompt_id: object) -> bool:
        return any(prompt.prompt_id == prompt_id for prompt in self.prompts)

    def __len__(self) -> int:
        return len(self.prompts)


def load_catalog(path: Path | str) -> PromptCatalog:
    """Read and check a catalog file; raise ``CatalogError`` on any problem."""
    path = Path(path)
    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"提示音目录文件 {path} 不存在：请检查 --catalog 参数或文件路径。") from None
    except (OSError, UnicodeDecodeError) as error:
        raise CatalogError(f"无法读取提示音目录文件 {path}（{error}）：请确认文件可读且为 UTF-8 编码。") from None

    try:
        document = YAML(typ="rt").load(source)
    except YAMLError as error:
        raise CatalogError(f"提示音目录文件 {path} 不是合法的 YAML：{error}") from None

    if not isinstance(document, dict):
        raise CatalogError(f"{path}：顶层必须是映射，至少包含 prompts。")
    return _catalog_from_document(path, document)


def _catalog_from_document(path: Path, document: dict[str, Any]) -> PromptCatalog:
    unknown = sorted(set(document) - _TOP_LEVEL_KEYS)
    if unknown:
        raise CatalogError(f"{path}：未知的顶层字段 {', '.join(map(str, unknown))}；允许的字段为 {', '.join(sorted(_TOP_LEVEL_KEYS))}。")

    language = document.get("language", "zh-CN")
    voice = document.get("voice", DEFAULT_VOICE)
    rate_wpm = document.get("rate_wpm", DEFAULT_RATE_WPM)
    if not isinstance(language, str) or not isinstance(voice, str) or not voice:
        raise CatalogError(f"{path}：language 和 voice 必须是非空字符串。")
    if isinstance(rate_wpm, bool) or not isinstance(rate_wpm, int) or not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
        raise CatalogError(f"{path}：rate_wpm 为 {rate_wpm!r}，必须是 {MIN_RATE_WPM} 到 {MAX_RATE_WPM} 之间的整数（每分钟音节数）。")

    entries = document.get("prompts")
    if not isinstance(entries, dict) or not entries:
        raise CatalogError(f"{path}：缺少 prompts，或其中没有任何提示音。")

    prompts = tuple(_prompt_from_entry(path, entries, prompt_id) for prompt_id in entries)
    renditions = _renditions_from_document(path, document)
    generated = tuple(
        PromptSpec(prompt_id=f"{prompt.prompt_id}{RENDITION_SEPARATOR}{name}", text=prompt.text,
                   speed=prompt.speed * factor, rendition=name)
        for name, factor in renditions
        for prompt in prompts
    )
    return PromptCatalog(path=path, language=language, voice=voice, rate_wpm=rate_wpm, prompts=prompts + generated,
                         renditions=renditions)


def _renditions_from_document(path: Path, document: dict[str, Any]) -> tuple[tuple[str, float], ...]:
    entries = document.get("renditions", {})
    where = f"{path} {_line_of(document, 'renditions')}"
    if not isinstance(entries, dict):
        raise CatalogError(f"{where}：renditions 必须是“版本名: 语速系数”的映射，例如 slow: 0.75。")

    renditions: list[tuple[str, float]] = []
    for name, factor in entries.items():
        if not isinstance(name, str) or not RENDITION_NAME_RE.match(name):
            raise CatalogError(f"{where}：版本名 {name!r} 无效；只能由小写字母、数字和下划线组成，且以字母开头。")
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not MIN_SPEED <= float(factor) <= MAX_SPEED:
            raise CatalogError(f"{where}：版本 {name} 的语速系数为 {factor!r}，必须是 {MIN_SPEED} 到 {MAX_SPEED} 之间的数。")
        renditions.append((name, float(factor)))
    return tuple(renditions)


def _line_of(mapping: Any, key: Any) -> str:
    # ruamel's round-trip loader records 0-based key positions.
    try:
        return f"第 {mapping.lc.key(key)[0] + 1} 行"
    except (AttributeError, KeyError, TypeError):
        return "未知行"


def _prompt_from_entry(path: Path, entries: dict[str, Any], prompt_id: Any) -> PromptSpec:
    where = f"{path} {_line_of(entries, prompt_id)}"
    if not isinstance(prompt_id, str) or not PROMPT_ID_RE.match(prompt_id):
        raise CatalogError(
            f"{where}：提示音编号 {prompt_id!r} 无效；编号用作文件名，只能由小写字母、数字和下划线组成，且以字母开头。"
        )

    entry = entries[prompt_id]
    if isinstance(entry, str):
        entry = {"text": entry}
    if not isinstance(entry, dict):
        raise CatalogError(f"{where}：提示音 {prompt_id} 必须是文本，或包含 text 的映射。")

    unknown = sorted(set(entry) - _PROMPT_KEYS)
    if unknown:
        raise CatalogError(f"{where}：提示音 {prompt_id} 含未知字段 {', '.join(map(str, unknown))}；允许 text、speed、note。")

    text = entry.get("text")
    if not isinstance(text, str) or not text.strip():
        raise CatalogError(f"{where}：提示音 {prompt_id} 缺少 text，或 text 为空。")

    speed = entry.get("speed", 1.0)
    if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not MIN_SPEED <= float(speed) <= MAX_SPEED:
        raise CatalogError(f"{where}：提示音 {prompt_id} 的 speed 为 {speed!r}，必须是 {MIN_SPEED} 到 {MAX_SPEED} 之间的数。")

    note = entry.get("note")
    if note is not None and not isinstance(note, str):
        raise CatalogError(f"{where}：提示音 {prompt_id} 的 note 必须是文本。")

    return PromptSpec(prompt_id=prompt_id, text=text.strip(), speed=float(speed), note=note)
