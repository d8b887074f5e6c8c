"""Speech build layer: render every catalog prompt that is missing or stale into Asterisk WAV files.

``build_prompts`` normalises each text to pinyin, renders it with the pyttsx3 worker,
converts it with ffmpeg, scales it to a common peak level and validates it. A human
recording in the catalog's ``recorded/`` folder replaces the synthesised prompt of the
same id once it passes the checks in ``speech.recorded``; a catalog rendition such as
``main_menu@slow`` without its own recording is then the recording slowed down. The manifest (``manifest.json`` in the output
folder) records for each file a hash of its text, voice, rate, normaliser version and
audio format (or of the recording it came from), and a hash of the file itself. A changed text or a replaced file is
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

from speech.audio import (
    PROMPT_PEAK_DBFS,
    AudioConversionError,
    InvalidPromptAudio,
    WavInfo,
    convert_for_asterisk,
    validate_prompt_wav,
)
from speech.catalog import PromptCatalog, PromptSpec, load_catalog
from speech.normalize import (
    NORMALIZER_VERSION,
    NormalizationError,
    NormalizedText,
    normalize,
)
from speech.recorded import (
    RECORDED_DIR_NAME,
    InvalidRecording,
    Recording,
    RecordingRejection,
    find_recordings,
    render_recording,
)
from speech.synth import SynthesisError, Synthesizer, TtsUnavailable, VoiceSettings

log = structlog.get_logger(__name__)

MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".build.lock"
MANIFEST_VERSION = 1
# Bump when convert_for_asterisk changes the audio it writes, so every prompt is rebuilt.
AUDIO_FORMAT_VERSION = "8k-mono-s16-44b-peak3-2"
DEFAULT_LOCK_TIMEOUT_S = 300.0

# Plausible spoken length per syllable at the catalog rates (80 to 450 words per minute).
# espeak-ng 1.51 voice cmn-latn-pinyin took 0.10 s at 450, 0.33 s at 150 and 0.65 s at 80,
# pauses included, on two hotline sentences. Audio far outside this range means the voice
# read something other than the pinyin.
MIN_SECONDS_PER_SYLLABLE = 0.06
MAX_SECONDS_PER_SYLLABLE = 1.2
MAX_PAUSE_SECONDS = 3.0


SOURCE_SYNTHESIZED = "synthesized"
SOURCE_RECORDED = "recorded"


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
    source: str = SOURCE_SYNTHESIZED


@dataclass(frozen=True, slots=True)
class BuildReport:
    """Result of one build over a catalog."""

    catalog_path: Path
    out_dir: Path
    outcomes: tuple[PromptOutcome, ...]
    removed: tuple[str, ...] = ()
    elapsed_s: float = 0.0
    rejected_recordings: tuple[RecordingRejection, ...] = ()

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
    def recorded(self) -> tuple[PromptOutcome, ...]:
        return tuple(outcome for outcome in self.outcomes
                     if outcome.source == SOURCE_RECORDED and outcome.status is not PromptStatus.FAILED)

    @property
    def ok(self) -> bool:
        """True when every prompt has playable audio; rejected recordings do not count."""
        return not self.failed

    def summary_zh(self) -> str:
        """Return a one-line Chinese summary for operators."""
        return (
            f"提示音生成完成：新生成 {len(self.built)} 条，已是最新 {len(self.up_to_date)} 条，"
            f"失败 {len(self.failed)} 条，删除多余 {len(self.removed)} 条，采用录音 {len(self.recorded)} 条，"
            f"退回录音 {len(self.rejected_recordings)} 个，用时 {self.elapsed_s:.1f} 秒；输出目录 {self.out_dir}"
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


def recording_hash(recording: Recording, tempo: float) -> str:
    """Return the hash of everything that decides how a prompt made from a recording sounds."""
    material = {"recording_sha256": recording.sha256, "tempo": tempo, "audio_format": AUDIO_FORMAT_VERSION}
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()


def default_recorded_dir(catalog_path: Path | str) -> Path:
    """Return the recordings folder of a catalog: ``recorded/`` next to the catalog file."""
    return Path(catalog_path).parent / RECORDED_DIR_NAME


def synthesis_tempo(prompt: PromptSpec) -> float:
    """Return the ffmpeg tempo that gives a prompt its speed factor, within atempo's 0.5 to 2.0."""
    return min(max(prompt.speed, 0.5), 2.0)


def prompt_hash(catalog: PromptCatalog, prompt: PromptSpec) -> str:
    """Return the hash of everything that decides how a prompt sounds."""
    material = {
        "text": prompt.text,
        "voice": catalog.voice,
        "rate_wpm": catalog.rate_wpm,
        "tempo": synthesis_tempo(prompt),
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
    recorded_dir: Path | str | None = None,
) -> BuildReport:
    """Render every prompt of the catalog whose audio is missing, stale or invalid.

    ``recorded_dir`` (default ``recorded/`` next to the catalog) holds human recordings
    named by prompt id; each one that passes its checks replaces the synthesised prompt,
    and the others are listed in ``rejected_recordings``. ``force`` renders every prompt. ``on_start`` receives the number of prompts and
    ``on_progress`` each outcome as it happens. A failed prompt does not stop the others;
    a missing voice or TTS library stops the build and fails the remaining prompts.
    Raises ``CatalogError`` for a malformed catalog and ``BuildLockTimeout`` when another
    build keeps the folder locked.
    """
    started = time.monotonic()
    catalog = load_catalog(catalog_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    recorded = Path(recorded_dir) if recorded_dir is not None else default_recorded_dir(catalog_path)
    recordings, rejections = find_recordings(recorded, catalog)
    if on_start is not None:
        on_start(len(catalog.prompts))

    own_synthesizer = synthesizer is None
    synthesizer = synthesizer or Synthesizer(VoiceSettings(voice=catalog.voice))
    try:
        with _folder_lock(out_dir, lock_timeout_s):
            _remove_stale_temp_files(out_dir)
            manifest = _read_manifest(out_dir)
            outcomes = _build_all(catalog, out_dir, manifest, synthesizer, recordings, rejections,
                                  force=force, on_progress=on_progress)
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
        rejected_recordings=_unique_rejections(rejections),
    )
    log.info("prompt build finished", built=len(report.built), up_to_date=len(report.up_to_date),
             failed=len(report.failed), removed=len(report.removed), recorded=len(report.recorded),
             rejected_recordings=len(report.rejected_recordings), elapsed_ms=round(report.elapsed_s * 1000))
    return report


async def build_prompts_async(catalog_path: Path | str, out_dir: Path | str, **options: Any) -> BuildReport:
    """Run ``build_prompts`` in a thread so an event loop keeps running meanwhile."""
    return await asyncio.to_thread(build_prompts, catalog_path, out_dir, **options)


def check_prompts(catalog_path: Path | str, out_dir: Path | str, *, recorded_dir: Path | str | None = None) -> CheckReport:
    """Validate every catalog prompt's file and its manifest entry, without rendering.

    Reports missing files, files Asterisk cannot play, files whose text changed since
    they were built, and files changed by hand. A prompt built from a recording is
    current while its recording is unchanged; a prompt that has a recording the last
    build rejected is current when it matches its text.
    """
    catalog = load_catalog(catalog_path)
    out_dir = Path(out_dir)
    manifest = _read_manifest(out_dir)
    problems: list[CheckProblem] = []
    recorded = Path(recorded_dir) if recorded_dir is not None else default_recorded_dir(catalog_path)
    recordings, _ = find_recordings(recorded, catalog)

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
        elif entry.get("hash") not in _accepted_hashes(catalog, prompt, recordings):
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
    recordings: dict[str, Recording],
    rejections: list[RecordingRejection],
    *,
    force: bool,
    on_progress: ProgressCallback | None,
) -> list[PromptOutcome]:
    outcomes: list[PromptOutcome] = []
    fatal: str | None = None
    rejected_ids: set[str] = set()

    for prompt in catalog.prompts:
        path = out_dir / f"{prompt.prompt_id}.wav"
        outcome: PromptOutcome | None = None

        # A recording wins over synthesis; a rejected one falls through to synthesis.
        source = _recording_for(catalog, prompt, recordings, rejected_ids)
        if source is not None:
            result = _build_from_recording(prompt, path, manifest, out_dir, source, force=force)
            if isinstance(result, RecordingRejection):
                rejections.append(result)
                rejected_ids.add(source[0].prompt_id)
            else:
                outcome = result

        if outcome is None:
            outcome, fatal = _build_synthesized(catalog, prompt, path, manifest, out_dir, synthesizer,
                                                fatal=fatal, force=force)

        if outcome.status is PromptStatus.FAILED:
            log.warning("prompt build failed", prompt_id=prompt.prompt_id, error=outcome.message)
        outcomes.append(outcome)
        if on_progress is not None:
            on_progress(outcome)
    return outcomes


def _recording_for(
    catalog: PromptCatalog, prompt: PromptSpec, recordings: dict[str, Recording], rejected_ids: set[str]
) -> tuple[Recording, float] | None:
    """Return the recording a prompt is made from and the tempo to play it at, if any.

    A rendition uses its own recording at normal tempo, or else the base prompt's
    recording slowed by the rendition's speed factor.
    """
    own = recordings.get(prompt.prompt_id)
    if own is not None and own.prompt_id not in rejected_ids:
        return own, 1.0
    if prompt.rendition is None:
        return None
    base = recordings.get(prompt.base_id)
    if base is None or base.prompt_id in rejected_ids:
        return None
    return base, max(0.5, min(2.0, catalog.rendition_factor(prompt.rendition)))


def _build_from_recording(
    prompt: PromptSpec,
    path: Path,
    manifest: dict[str, Any],
    out_dir: Path,
    source: tuple[Recording, float],
    *,
    force: bool,
) -> PromptOutcome | RecordingRejection:
    recording, tempo = source
    expected_hash = recording_hash(recording, tempo)
    entry = manifest["prompts"].get(prompt.prompt_id)
    if not force and _is_current(path, entry, expected_hash):
        return PromptOutcome(prompt.prompt_id, PromptStatus.UP_TO_DATE, path,
                             duration_s=entry.get("duration_s") if entry else None, source=SOURCE_RECORDED)

    try:
        info = render_recording(recording, path, tempo=tempo)
    except InvalidRecording as error:
        log.warning("recording rejected", prompt_id=prompt.prompt_id, recording=recording.path.name)
        return RecordingRejection(recording.path, str(error))

    manifest["prompts"][prompt.prompt_id] = {
        "file": info.path.name,
        "hash": expected_hash,
        "file_sha256": _file_sha256(info.path),
        "source": SOURCE_RECORDED,
        "recording": recording.path.name,
        "recording_sha256": recording.sha256,
        "tempo": tempo,
        "text": prompt.text,
        "duration_s": round(info.duration_s, 3),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    _write_manifest(out_dir, manifest)
    log.info("prompt built from recording", prompt_id=prompt.prompt_id, recording=recording.path.name,
             duration_ms=round(info.duration_s * 1000))
    return PromptOutcome(prompt.prompt_id, PromptStatus.BUILT, path, duration_s=info.duration_s, source=SOURCE_RECORDED)


def _build_synthesized(
    catalog: PromptCatalog,
    prompt: PromptSpec,
    path: Path,
    manifest: dict[str, Any],
    out_dir: Path,
    synthesizer: Synthesizer,
    *,
    fatal: str | None,
    force: bool,
) -> tuple[PromptOutcome, str | None]:
    """Synthesise one prompt unless current; return its outcome and the build-stopping error, if any."""
    expected_hash = prompt_hash(catalog, prompt)
    if fatal is not None:
        return PromptOutcome(prompt.prompt_id, PromptStatus.FAILED, path, message=fatal), fatal
    if not force and _is_current(path, manifest["prompts"].get(prompt.prompt_id), expected_hash):
        duration = manifest["prompts"][prompt.prompt_id].get("duration_s")
        return PromptOutcome(prompt.prompt_id, PromptStatus.UP_TO_DATE, path, duration_s=duration), None

    try:
        normalized, info = _render_prompt(catalog, prompt, path, synthesizer)
    except TtsUnavailable as error:
        fatal = f"提示音 {prompt.prompt_id} 未生成：{error}"
        return PromptOutcome(prompt.prompt_id, PromptStatus.FAILED, path, message=fatal), fatal
    except (NormalizationError, SynthesisError, AudioConversionError, InvalidPromptAudio) as error:
        message = f"提示音 {prompt.prompt_id} 未生成：{error}"
        return PromptOutcome(prompt.prompt_id, PromptStatus.FAILED, path, message=message), None

    manifest["prompts"][prompt.prompt_id] = _manifest_entry(catalog, prompt, expected_hash, normalized, info)
    _write_manifest(out_dir, manifest)
    return PromptOutcome(prompt.prompt_id, PromptStatus.BUILT, path, duration_s=info.duration_s), None


def _accepted_hashes(catalog: PromptCatalog, prompt: PromptSpec, recordings: dict[str, Recording]) -> set[str]:
    accepted = {prompt_hash(catalog, prompt)}
    source = _recording_for(catalog, prompt, recordings, set())
    if source is not None:
        accepted.add(recording_hash(*source))
    return accepted


def _unique_rejections(rejections: list[RecordingRejection]) -> tuple[RecordingRejection, ...]:
    # A base recording rejected again while building its renditions is reported once.
    seen: set[Path] = set()
    unique: list[RecordingRejection] = []
    for rejection in rejections:
        if rejection.path not in seen:
            seen.add(rejection.path)
            unique.append(rejection)
    return tuple(unique)


def _render_prompt(
    catalog: PromptCatalog, prompt: PromptSpec, path: Path, synthesizer: Synthesizer
) -> tuple[NormalizedText, WavInfo]:
    normalized = normalize(prompt.text)
    if normalized.syllables == 0:
        raise NormalizationError(f"文本「{prompt.text}」中没有可朗读的内容：请填写汉字文本。")

    with tempfile.TemporaryDirectory(prefix=".tmp-raw-", dir=path.parent) as raw_dir:
        # Every prompt is spoken at the catalog's one rate and slowed by ffmpeg afterwards:
        # with pyttsx3 2.99 and espeak-ng 1.51 a rate change between utterances often took
        # effect late, so a slow rendition came out at normal speed.
        raw = synthesizer.synthesize(normalized.pinyin, Path(raw_dir) / f"{prompt.prompt_id}.wav",
                                     rate_wpm=catalog.rate_wpm)
        _check_duration(prompt, normalized, raw.duration_s)
        info = convert_for_asterisk(raw.path, path, peak_dbfs=PROMPT_PEAK_DBFS, tempo=synthesis_tempo(prompt))

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
        "source": SOURCE_SYNTHESIZED,
        "text": prompt.text,
        "pinyin": normalized.pinyin,
        "voice": catalog.voice,
        "rate_wpm": catalog.rate_wpm,
        "tempo": synthesis_tempo(prompt),
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
