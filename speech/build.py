"""Speech build layer: render every catalog prompt that is missing or stale into Asterisk WAV files.

``build_prompts`` normalises each text to pinyin, renders it with the pyttsx3 worker,
converts it with ffmpeg and validates it. The manifest (``manifest.json`` in the output
folder) records for each file a hash of its text, voice, rate, normaliser version and
audio format, and a hash of the file itself. A changed text or a replaced file is
therefore rendered again, and everything else is left alone. One build at a time may
write a folder: a second build waits for the folder's lock, then finds the prompts current.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import structlog

from speech.audio import AudioConversionError, InvalidPromptAudio, WavInfo, convert_for_asterisk, validate_prompt_wav
from speech.catalog import PromptCatalog, PromptSpec, load_catalog
from speech.normalize import NORMALIZER_VERSION, NormalizationError, NormalizedText, normalize
from speech.synth import SynthesisError, Synthesizer, TtsUnavailable, VoiceSettings

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".build.lock"
MANIFEST_VERSION = 1
# Bump when convert_for_asterisk changes the audio it writes, so every prompt is rebuilt.
AUDIO_FORMAT_VERSION = "8k-mono-s16-44b-1"
DEFAULT_LOCK_TIMEOUT_S = 300.0

# Plausible spoken length per syllable at the catalog rates (80 to 450 words per minute).
# espeak-ng 1.51 voice cmn-latn-pinyin took 0.10 s at 450, 0.33 s at 150 and 0.65 s at 80,
# pauses included, on two hotline sentences. Audio far outside this range means the voice
# read something other than the pinyin.
MIN_SECONDS_PER_SYLLABLE = 0.06
MAX_SECONDS_PER_SYLLABLE = 1.2
MAX_PAUSE_SECONDS = 3.0


class PromptStatus(Enum):
    BUILT = "built"
    UP_TO_DATE = "up_to_date"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PromptOutcome:
    """Result for one prompt; ``message`` is the Chinese error when the prompt failed."""

    prompt_id: str
    status: PromptStatus
    path: Path
    duration_s: float | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class BuildReport:
    """Result of one build over a catalog."""

    catalog_path: Path
    out_dir: Path
    outcomes: tuple[PromptOutcome, ...]
    removed: tuple[str, ...] = ()
    elapsed_s: float = 0.0

    def _with(self, status: PromptStatus) -> tuple[PromptOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes if outcome.status is status)

    @property
    def built(self) -> tuple[PromptOutcome, ...]:
        return self._with(PromptStatus.BUILT)

    @property
    def up_to_date(self) -> tuple[PromptOutcome, ...]:
        return self._with(PromptStatus.UP_TO_DATE)

    @property
    def failed(self) -> tuple[PromptOutcome, ...]:
        return self._with(PromptStatus.FAILED)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_zh(self) -> str:
        """Return a one-line Chinese summary for operators."""
        return (
            f"提示音生成完成：新生成 {len(self.built)} 条，已是最新 {len(self.up_to_date)} 条，"
            f"失败 {len(self.failed)} 条，删除多余 {len(self.removed)} 条，用时 {self.elapsed_s:.1f} 秒；"
            f"输出目录 {self.out_dir}"
        )


@dataclass(frozen=True, slots=True)
class CheckProblem:
    prompt_id: str
    message: str


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Result of checking a built folder against its catalog without rendering anything."""

    out_dir: Path
    checked: int
    problems: tuple[CheckProblem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


ProgressCallback = Callable[[PromptOutcome], None]


class BuildLockTimeout(RuntimeError):
    """Another build held the output folder's lock for longer than the timeout."""


def prompt_hash(catalog: PromptCatalog, prompt: PromptSpec) -> str:
    """Return the hash of everything that decides how a prompt sounds."""
    material = {
        "text": prompt.text,
        "voice": catalog.voice,
        "rate_wpm": catalog.rate_for(prompt),
        "normalizer": NORMALIZER_VERSION,
        "audio_format": AUDIO_FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(material, ensure_ascii=False, sort_keys=True).encode("utf-8")).hexdigest()


def build_prompts(
    catalog_path: Path | str,
    out_dir: Path | str,
    *,
    force: bool = False,
    synthesizer: Synthesizer | None = None,
    on_start: Callable[[int], None] | None = None,
    on_progress: ProgressCallback | None = None,
    lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
) -> BuildReport:
    """Render every prompt of the catalog whose audio is missing, stale or invalid.

    ``force`` renders every prompt. ``on_start`` receives the number of prompts and
    ``on_progress`` each outcome as it happens. A failed prompt does not stop the others;
    a missing voice or TTS library stops the build and fails the remaining prompts.
    Raises ``CatalogError`` for a malformed catalog and ``BuildLockTimeout`` when another
    build keeps the folder locked.
    """
    started = time.monotonic()
    catalog = load_catalog(catalog_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if on_start is not None:
        on_start(len(catalog.prompts))

    own_synthesizer = synthesizer is None
    synthesizer = synthesizer or Synthesizer(VoiceSettings(voice=catalog.voice))
    try:
        with _folder_lock(out_dir, lock_timeout_s):
            _remove_stale_temp_files(out_dir)
            manifest = _read_manifest(out_dir)
            outcomes = _build_all(catalog, out_dir, manifest, synthesizer, force=force, on_progress=on_progress)
            removed = _remove_orphans(catalog, out_dir, manifest)
            _write_manifest(out_dir, manifest)
    finally:
        if own_synthesizer:
            synthesizer.close()

    report = BuildReport(
        catalog_path=Path(catalog_path),
        out_dir=out_dir,
        outcomes=tuple(outcomes),
        removed=tuple(removed),
        elapsed_s=time.monotonic() - started,
    )
    log.info("prompt build finished", built=len(report.built), up_to_date=len(report.up_to_date),
             failed=len(report.failed), removed=len(report.removed), elapsed_ms=round(report.elapsed_s * 1000))
    return report


async def build_prompts_async(catalog_path: Path | str, out_dir: Path | str, **options: Any) -> BuildReport:
    """Run ``build_prompts`` in a thread so an event loop keeps running meanwhile."""
    return await asyncio.to_thread(build_prompts, catalog_path, out_dir, **options)


def check_prompts(catalog_path: Path | str, out_dir: Path | str) -> CheckReport:
    """Validate every catalog prompt's file and its manifest entry, without rendering.

    Reports missing files, files Asterisk cannot play, files whose text changed since
    they were built, and files changed by hand.
    """
    catalog = load_catalog(catalog_path)
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    problems: list[CheckProblem] = []

    for prompt in catalog.prompts:
        path = out_dir / f"{prompt.prompt_id}.wav"
        entry = manifest["prompts"].get(prompt.prompt_id)
        try:
            validate_prompt_wav(path)
        except InvalidPromptAudio as error:
            problems.append(CheckProblem(prompt.prompt_id, str(error)))
            continue

        if entry is None:
            problems.append(CheckProblem(prompt.prompt_id, f"{path} 不在清单 {MANIFEST_NAME} 中，无法确认它与文本一致：请运行 hotline prompts build。"))
        elif entry.get("hash") != prompt_hash(catalog, prompt):
            problems.append(CheckProblem(prompt.prompt_id, f"提示音 {prompt.prompt_id} 的文本、语音或语速已修改，{path} 已过期：请运行 hotline prompts build。"))
        elif entry.get("file_sha256") != _file_sha256(path):
            problems.append(CheckProblem(prompt.prompt_id, f"{path} 在生成后被替换或修改：请运行 hotline prompts build 重新生成。"))

    return CheckReport(out_dir=out_dir, checked=len(catalog.prompts), problems=tuple(problems))


# ---------------------------------------------------------------------------
# One build


def _build_all(
    catalog: PromptCatalog,
    out_dir: Path,
    manifest: dict[str, Any],
    synthesizer: Synthesizer,
    *,
    force: bool,
    on_progress: ProgressCallback | None,
) -> list[PromptOutcome]:
    outcomes: list[PromptOutcome] = []
    fatal: str | None = None

    for prompt in catalog.prompts:
        path = out_dir / f"{prompt.prompt_id}.wav"
        expected_hash = prompt_hash(catalog, prompt)

        if fatal is not None:
            outcome = PromptOutcome(prompt.prompt_id, PromptStatus.FAILED, path, message=fatal)
        elif not force and _is_current(path, manifest["prompts"].get(prompt.prompt_id), expected_hash):
            duration = manifest["prompts"][prompt.prompt_id].get("duration_s")
            outcome = PromptOutcome(prompt.prompt_id, PromptStatus.UP_TO_DATE, path, duration_s=duration)
        else:
            try:
                normalized, info = _render_prompt(catalog, prompt, path, synthesizer)
            except TtsUnavailable as error:
                fatal = f"提示音 {prompt.prompt_id} 未生成：{error}"
                outcome = PromptOutcome(prompt.prompt_id, PromptStatus.FAILED, path, message=fatal)
            except (NormalizationError, SynthesisError, AudioConversionError, InvalidPromptAudio) as error:
                outcome = PromptOutcome(prompt.prompt_id, PromptStatus.FAILED, path, message=f"提示音 {prompt.prompt_id} 未生成：{error}")
            else:
                manifest["prompts"][prompt.prompt_id] = _manifest_entry(catalog, prompt, expected_hash, normalized, info)
                _write_manifest(out_dir, manifest)
                outcome = PromptOutcome(prompt.prompt_id, PromptStatus.BUILT, path, duration_s=info.duration_s)

        if outcome.status is PromptStatus.FAILED:
            log.warning("prompt build failed", prompt_id=prompt.prompt_id, error=outcome.message)
        outcomes.append(outcome)
        if on_progress is not None:
            on_progress(outcome)
    return outcomes


def _render_prompt(
    catalog: PromptCatalog, prompt: PromptSpec, path: Path, synthesizer: Synthesizer
) -> tuple[NormalizedText, WavInfo]:
    normalized = normalize(prompt.text)
    if normalized.syllables == 0:
        raise NormalizationError(f"文本「{prompt.text}」中没有可朗读的内容：请填写汉字文本。")

    with tempfile.TemporaryDirectory(prefix=".tmp-raw-", dir=path.parent) as raw_dir:
        raw = synthesizer.synthesize(normalized.pinyin, Path(raw_dir) / f"{prompt.prompt_id}.wav",
                                     rate_wpm=catalog.rate_for(prompt))
        _check_duration(prompt, normalized, raw.duration_s)
        info = convert_for_asterisk(raw.path, path)

    log.info("prompt built", prompt_id=prompt.prompt_id, duration_ms=round(info.duration_s * 1000))
    return normalized, info


def _check_duration(prompt: PromptSpec, normalized: NormalizedText, duration_s: float) -> None:
    pauses = normalized.pinyin.count(",") + normalized.pinyin.count(".")
    shortest = normalized.syllables * MIN_SECONDS_PER_SYLLABLE
    longest = normalized.syllables * MAX_SECONDS_PER_SYLLABLE + (pauses + 1) * MAX_PAUSE_SECONDS
    if not shortest <= duration_s <= longest:
        raise SynthesisError(
            f"合成音频长 {duration_s:.1f} 秒，与 {normalized.syllables} 个音节的文本不符"
            f"（应在 {shortest:.1f} 到 {longest:.1f} 秒之间），语音可能没有按拼音朗读："
            f"请确认 espeak-ng 语音 cmn-latn-pinyin 可用"
        )


def _is_current(path: Path, entry: dict[str, Any] | None, expected_hash: str) -> bool:
    if entry is None or entry.get("hash") != expected_hash:
        return False
    try:
        validate_prompt_wav(path)
    except InvalidPromptAudio:
        return False
    return entry.get("file_sha256") == _file_sha256(path)


def _manifest_entry(
    catalog: PromptCatalog, prompt: PromptSpec, expected_hash: str, normalized: NormalizedText, info: WavInfo
) -> dict[str, Any]:
    return {
        "file": info.path.name,
        "hash": expected_hash,
        "file_sha256": _file_sha256(info.path),
        "text": prompt.text,
        "pinyin": normalized.pinyin,
        "voice": catalog.voice,
        "rate_wpm": catalog.rate_for(prompt),
        "normalizer": NORMALIZER_VERSION,
        "duration_s": round(info.duration_s, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _remove_orphans(catalog: PromptCatalog, out_dir: Path, manifest: dict[str, Any]) -> list[str]:
    # Only files this build recorded are removed; hand-made files are left alone.
    wanted = {prompt.prompt_id for prompt in catalog.prompts}
    removed: list[str] = []
    for prompt_id in sorted(set(manifest["prompts"]) - wanted):
        entry = manifest["prompts"].pop(prompt_id)
        (out_dir / entry.get("file", f"{prompt_id}.wav")).unlink(missing_ok=True)
        removed.append(prompt_id)
        log.info("orphan prompt removed", prompt_id=prompt_id)
    return removed


# ---------------------------------------------------------------------------
# Files


def _file_sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _empty_manifest() -> dict[str, Any]:
    return {"version": MANIFEST_VERSION, "prompts": {}}


def _read_manifest(out_dir: Path) -> dict[str, Any]:
    path = out_dir / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return _empty_manifest()
    except (json.JSONDecodeError, UnicodeDecodeError):
        # A damaged manifest only costs a full rebuild.
        log.warning("prompt manifest unreadable, rebuilding all prompts", path=str(path))
        return _empty_manifest()

    if not isinstance(manifest, dict) or manifest.get("version") != MANIFEST_VERSION or not isinstance(manifest.get("prompts"), dict):
        return _empty_manifest()
    return manifest


def _write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    path = out_dir / MANIFEST_NAME
    handle, temp_name = tempfile.mkstemp(prefix=".tmp-manifest-", suffix=".json", dir=out_dir)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(manifest, stream, ensure_ascii=False, indent=2, sort_keys=True)
            stream.write("\n")
        os.replace(temp_name, path)
    finally:
        Path(temp_name).unlink(missing_ok=True)


def _remove_stale_temp_files(out_dir: Path) -> None:
    # Called with the folder lock held, so every temporary file left is from a build
    # that was killed.
    for leftover in out_dir.glob(".tmp-*"):
        if leftover.is_dir():
            for child in leftover.iterdir():
                child.unlink(missing_ok=True)
            leftover.rmdir()
        else:
            leftover.unlink(missing_ok=True)


@contextmanager
def _folder_lock(out_dir: Path, timeout_s: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the output folder's lock file.

    flock locks belong to an open file description, so two builds in one process
    exclude each other just as two processes do.
    """
    deadline = time.monotonic() + timeout_s
    with open(out_dir / LOCK_NAME, "a+b") as lock_file:
        while True:
            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as error:
                if error.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if time.monotonic() >= deadline:
                raise BuildLockTimeout(
                    f"另一个提示音生成任务正在写入 {out_dir}，等待 {timeout_s:.0f} 秒仍未结束：请等待它完成后重试。"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_UN)
