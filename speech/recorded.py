"""Speech recordings layer: human recordings that replace synthesised prompts by id.

An operator drops ``<prompt id>.<ext>`` into the catalog's ``recorded/`` folder (for
example ``prompts/recorded/welcome.wav``). The build checks each file with ffprobe and
the converted samples, converts it with ffmpeg to the prompt shape Asterisk plays, and
uses it in place of the synthesised prompt. A file that fails a check is rejected with a
Chinese message naming the file, the problem and the fix, and the synthesised prompt
stays in use.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from speech.audio import (
    DEFAULT_FFMPEG_TIMEOUT_S,
    PROMPT_PEAK_DBFS,
    AudioConversionError,
    InvalidPromptAudio,
    WavInfo,
    convert_for_asterisk,
    normalize_peak,
    peak_dbfs,
    validate_prompt_wav,
)

RECORDED_DIR_NAME = "recorded"
RECORDING_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a")
MIN_RECORDING_S = 0.3
MAX_RECORDING_S = 120.0
# Below 8 kHz the conversion would upsample, and the caller hears muffled speech.
MIN_RECORDING_RATE_HZ = 8000
# A recording whose loudest sample is below this is mostly noise once normalised.
MIN_RECORDING_PEAK_DBFS = -30.0
DEFAULT_PROBE_TIMEOUT_S = 30.0

FIX_RERECORD = "请重新录制或导出该录音后再运行 hotline prompts build"


class InvalidRecording(ValueError):
    """A recording that cannot replace its prompt; the message names the file, the problem and the fix."""


@dataclass(frozen=True, slots=True)
class Recording:
    """A recording file found for one catalog prompt id."""

    prompt_id: str
    path: Path
    sha256: str


@dataclass(frozen=True, slots=True)
class RecordingRejection:
    """A recording the build did not use, with the Chinese message shown to the operator."""

    path: Path
    message: str


@dataclass(frozen=True, slots=True)
class RecordingProbe:
    """Codec, sample rate, channels and duration of a recording's first audio stream, as ffprobe reports them."""

    codec: str
    sample_rate: int
    channels: int
    duration_s: float


def rejection_message(path: Path, prompt_id: str | None, problem: str, fix: str) -> str:
    outcome = f"继续使用合成的提示音 {prompt_id}" if prompt_id else "未替换任何提示音"
    return f"录音文件 {path} 未采用（{outcome}）：{problem}。修复：{fix}。"


def find_recordings(
    recorded_dir: Path, prompt_ids: Iterable[str]
) -> tuple[dict[str, Recording], list[RecordingRejection]]:
    """List the recordings in ``recorded_dir`` by prompt id, and reject files that name no prompt.

    Hidden files, folders and ``README`` files are skipped. A file whose extension is
    not a known audio type, whose name is not a catalog id, or whose id has a second
    file with another extension is rejected.
    """
    if not recorded_dir.is_dir():
        return {}, []

    known = set(prompt_ids)
    by_id: dict[str, list[Path]] = {}
    rejections: list[RecordingRejection] = []
    for path in sorted(recorded_dir.iterdir()):
        if path.name.startswith(".") or path.is_dir() or path.stem.upper().startswith("README"):
            continue

        if path.suffix.lower() not in RECORDING_EXTENSIONS:
            rejections.append(RecordingRejection(path, rejection_message(
                path, None, f"扩展名 {path.suffix or '（无）'} 不是支持的音频格式",
                f"请另存为 {'、'.join(RECORDING_EXTENSIONS)} 之一",
            )))
            continue
        if path.stem not in known:
            rejections.append(RecordingRejection(path, rejection_message(
                path, None, f"文件名 {path.stem} 不是提示音目录中的编号",
                "把文件改名为要替换的提示音编号（如 welcome.wav），编号见 prompts/zh-CN.yaml",
            )))
            continue
        by_id.setdefault(path.stem, []).append(path)

    recordings: dict[str, Recording] = {}
    for prompt_id, paths in sorted(by_id.items()):
        if len(paths) > 1:
            names = "、".join(path.name for path in paths)
            for path in paths:
                rejections.append(RecordingRejection(path, rejection_message(
                    path, prompt_id, f"提示音 {prompt_id} 有多个录音文件（{names}）", "只保留其中一个文件",
                )))
            continue
        path = paths[0]
        recordings[prompt_id] = Recording(prompt_id, path, hashlib.sha256(path.read_bytes()).hexdigest())
    return recordings, rejections


def probe_recording(path: Path, *, timeout_s: float = DEFAULT_PROBE_TIMEOUT_S) -> RecordingProbe:
    """Read the codec, rate, channels and duration of the first audio stream with ffprobe.

    Raises ``InvalidRecording`` when the file is not audio ffprobe can read.
    """
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        raise AudioConversionError("找不到 ffprobe：请安装 Debian 软件包 ffmpeg（apt-get install ffmpeg）。")

    command = [
        ffprobe, "-v", "error", "-select_streams", "a:0",
        "-show_entries", "stream=codec_name,sample_rate,channels,duration:format=duration",
        "-of", "json", str(path),
    ]
    try:
        completed = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise AudioConversionError(f"ffprobe 读取 {path} 超过 {timeout_s:.0f} 秒未完成：请检查该文件。") from None

    try:
        report = json.loads(completed.stdout or b"{}")
    except json.JSONDecodeError:
        report = {}
    streams = report.get("streams") or []
    if completed.returncode != 0 or not streams:
        detail = completed.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = f"（{detail[-1]}）" if detail else ""
        raise InvalidRecording(f"不是可以读取的音频文件{reason}")

    stream = streams[0]
    duration = stream.get("duration") or (report.get("format") or {}).get("duration") or "0"
    try:
        return RecordingProbe(
            codec=str(stream.get("codec_name", "未知")),
            sample_rate=int(stream.get("sample_rate") or 0),
            channels=int(stream.get("channels") or 0),
            duration_s=float(duration),
        )
    except ValueError:
        raise InvalidRecording("音频流信息无法解析（采样率或时长不是数字）") from None


def check_probe(probe: RecordingProbe) -> None:
    """Raise ``InvalidRecording`` when the recording's rate or length cannot make a usable prompt."""
    if probe.sample_rate < MIN_RECORDING_RATE_HZ:
        raise InvalidRecording(f"采样率为 {probe.sample_rate} Hz，低于电话音频所需的 {MIN_RECORDING_RATE_HZ} Hz")
    if probe.duration_s < MIN_RECORDING_S:
        raise InvalidRecording(f"时长 {probe.duration_s:.2f} 秒，短于 {MIN_RECORDING_S} 秒")
    if probe.duration_s > MAX_RECORDING_S:
        raise InvalidRecording(f"时长 {probe.duration_s:.0f} 秒，超过提示音上限 {MAX_RECORDING_S:.0f} 秒")


def render_recording(
    recording: Recording, target: Path, *, tempo: float = 1.0, timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S
) -> WavInfo:
    """Check one recording and write it to ``target`` as a prompt Asterisk plays.

    ``tempo`` below 1 renders a slow rendition from the same recording. ``target`` is
    replaced only when every check passes. Raises ``InvalidRecording`` with the operator
    message, or ``AudioConversionError`` when ffmpeg itself fails.
    """
    path = recording.path
    try:
        check_probe(probe_recording(path))
    except InvalidRecording as error:
        raise InvalidRecording(rejection_message(path, recording.prompt_id, str(error), FIX_RERECORD)) from None

    # Converted and checked under a temporary name, so a rejected recording never
    # replaces the synthesised prompt.
    handle, temp_name = tempfile.mkstemp(prefix=f".tmp-rec-{recording.prompt_id}-", suffix=".wav", dir=target.parent)
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        try:
            raw = convert_for_asterisk(path, temp_path, tempo=tempo, timeout_s=timeout_s)
        except InvalidPromptAudio:
            raise InvalidRecording(rejection_message(path, recording.prompt_id, "转换后没有声音（全部采样为 0）", FIX_RERECORD)) from None
        except AudioConversionError as error:
            raise InvalidRecording(rejection_message(path, recording.prompt_id, str(error).rstrip("。"), FIX_RERECORD)) from None

        level = peak_dbfs(raw)
        if level < MIN_RECORDING_PEAK_DBFS:
            level_text = "-∞" if math.isinf(level) else f"{level:.1f}"
            raise InvalidRecording(rejection_message(
                path, recording.prompt_id, f"音量过低（峰值 {level_text} dBFS，须高于 {MIN_RECORDING_PEAK_DBFS:.0f} dBFS）",
                "靠近话筒重新录制，或提高录音电平",
            ))

        normalize_peak(temp_path, PROMPT_PEAK_DBFS)
        info = validate_prompt_wav(temp_path, display_name=str(target))
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)

    return WavInfo(path=target, sample_rate=info.sample_rate, channels=info.channels,
                   bits_per_sample=info.bits_per_sample, frames=info.frames, peak=info.peak)
