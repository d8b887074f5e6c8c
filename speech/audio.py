"""Speech audio layer: convert prompts to the WAV shape Asterisk plays, and reject every other shape.

Asterisk's ``format_wav`` plays a ``.wav`` file as 8 kHz mono 16-bit linear PCM (16 kHz
files must be named ``.wav16``). A file in any other shape is refused, or played at the
wrong speed, and the caller hears nothing. The build therefore emits exactly one shape:
a 44-byte header (RIFF, a 16-byte ``fmt `` chunk with format tag 1, then ``data``) and
8,000 Hz mono 16-bit samples. ffmpeg does the conversion: its resampler low-pass filters
before decimating, which pydub's ``set_frame_rate`` does not, and ``-bitexact`` with
``-map_metadata -1`` stops it adding a LIST chunk. ``validate_prompt_wav`` reads the
header bytes itself and names the file, the problem and the fix in Chinese.
"""

from __future__ import annotations

import array
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ASTERISK_SAMPLE_RATE_HZ = 8000
ASTERISK_CHANNELS = 1
ASTERISK_BITS_PER_SAMPLE = 16
PLAIN_HEADER_BYTES = 44
DEFAULT_FFMPEG_TIMEOUT_S = 60.0
FULL_SCALE = 32768
# Built prompts are scaled so their loudest sample sits here, so a short word such as
# 四 is as loud as a sentence; 3 dB below full scale leaves room for the switch's codecs.
PROMPT_PEAK_DBFS = -3.0

WAVE_FORMAT_PCM = 0x0001
_FORMAT_NAMES = {
    0x0003: "IEEE 浮点",
    0x0006: "A-law",
    0x0007: "μ-law",
    0x0011: "IMA ADPCM",
    0x0055: "MP3",
    0xFFFE: "WAVE_FORMAT_EXTENSIBLE 扩展头",
}

FIX_REBUILD = "运行 hotline prompts build 重新生成（缺失、被改动或格式不对的提示音都会重新合成）"
FIX_FFMPEG = (
    "外来录音请用 ffmpeg -i 原文件 -ac 1 -ar 8000 -c:a pcm_s16le -map_metadata -1 "
    "-fflags +bitexact -flags:a +bitexact 新文件.wav 转换"
)


class InvalidPromptAudio(ValueError):
    """A prompt file Asterisk cannot play; the message names the file, the problem and the fix."""


# Builds the exception for one file from a problem and an optional fix.
Reject = Callable[..., InvalidPromptAudio]


class AudioConversionError(RuntimeError):
    """ffmpeg failed or timed out while converting a prompt."""


@dataclass(frozen=True, slots=True)
class WavInfo:
    """Shape and loudness of a prompt file that passed validation."""

    path: Path
    sample_rate: int
    channels: int
    bits_per_sample: int
    frames: int
    peak: int  # largest absolute sample value, 0..32768

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


def convert_for_asterisk(
    source: Path | str,
    target: Path | str,
    *,
    timeout_s: float = DEFAULT_FFMPEG_TIMEOUT_S,
    tempo: float = 1.0,
    peak_dbfs: float | None = None,
) -> WavInfo:
    """Convert any audio file ffmpeg reads into an Asterisk prompt at ``target``.

    ``tempo`` below 1 slows the audio down without changing its pitch (ffmpeg's
    ``atempo``, 0.5 to 2.0). ``peak_dbfs`` scales the samples so the loudest one sits at
    that level. The result is written to a temporary name, validated, then renamed, so
    ``target`` is either the old file or a complete valid one. Raises
    ``AudioConversionError`` or ``InvalidPromptAudio``.
    """
    if not 0.5 <= tempo <= 2.0:
        raise ValueError(f"tempo {tempo} outside ffmpeg atempo's range 0.5 to 2.0")
    source = Path(source)
    target = Path(target)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioConversionError("找不到 ffmpeg：请安装 Debian 软件包 ffmpeg（apt-get install ffmpeg）。")

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".tmp-{target.stem}-", suffix=".wav", dir=target.parent)
    os.close(handle)
    temp_path = Path(temp_name)

    command = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", str(source),
        "-map", "0:a:0", "-map_metadata", "-1",
        # 3 dB of headroom so the resampler's overshoot on full-scale speech cannot clip.
        "-af", f"volume=-3dB,{f'atempo={tempo:g},' if tempo != 1.0 else ''}aresample={ASTERISK_SAMPLE_RATE_HZ}",
        "-ac", str(ASTERISK_CHANNELS), "-ar", str(ASTERISK_SAMPLE_RATE_HZ),
        "-c:a", "pcm_s16le",
        "-fflags", "+bitexact", "-flags:a", "+bitexact",
        "-f", "wav", str(temp_path),
    ]
    try:
        try:
            completed = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise AudioConversionError(f"ffmpeg 转换 {source.name} 超过 {timeout_s:.0f} 秒未完成：请检查源文件。") from None
        if completed.returncode != 0:
            detail = completed.stderr.decode("utf-8", "replace").strip().splitlines()
            raise AudioConversionError(
                f"ffmpeg 转换 {source.name} 失败（退出码 {completed.returncode}：{detail[-1] if detail else '无输出'}）：请检查源文件是否为有效音频。"
            )

        if peak_dbfs is not None:
            normalize_peak(temp_path, peak_dbfs)
        info = validate_prompt_wav(temp_path, display_name=str(target))
        os.replace(temp_path, target)
    finally:
        temp_path.unlink(missing_ok=True)

    return WavInfo(
        path=target,
        sample_rate=info.sample_rate,
        channels=info.channels,
        bits_per_sample=info.bits_per_sample,
        frames=info.frames,
        peak=info.peak,
    )


def normalize_peak(path: Path | str, peak_dbfs: float) -> None:
    """Scale the samples of a plain 44-byte-header 16-bit WAV in place so its peak is ``peak_dbfs``.

    A file of another shape, or one whose samples are all zero, is left unchanged for
    ``validate_prompt_wav`` to reject.
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) <= PLAIN_HEADER_BYTES or data[36:40] != b"data" or (len(data) - PLAIN_HEADER_BYTES) % 2:
        return

    samples = array.array("h")
    samples.frombytes(data[PLAIN_HEADER_BYTES:])
    if sys.byteorder == "big":
        samples.byteswap()
    peak = max(abs(min(samples)), abs(max(samples)))
    if peak == 0:
        return

    gain = FULL_SCALE * 10 ** (peak_dbfs / 20) / peak
    scaled = array.array("h", (max(-FULL_SCALE, min(FULL_SCALE - 1, round(sample * gain))) for sample in samples))
    if sys.byteorder == "big":
        scaled.byteswap()
    path.write_bytes(data[:PLAIN_HEADER_BYTES] + scaled.tobytes())


def peak_dbfs(info: WavInfo) -> float:
    """Return the peak level of a validated prompt in dB relative to full scale."""
    return 20 * math.log10(info.peak / FULL_SCALE) if info.peak else -math.inf


def validate_prompt_wav(path: Path | str, *, display_name: str | None = None) -> WavInfo:
    """Check that ``path`` is an 8 kHz mono 16-bit PCM WAV with a plain 44-byte header.

    Raises ``InvalidPromptAudio`` for every other shape: another sample rate, stereo,
    8-bit, μ-law or other codecs, WAVE_FORMAT_EXTENSIBLE, extra chunks such as LIST,
    zero samples, a truncated file, or samples that are all zero.
    """
    path = Path(path)
    name = display_name or str(path)

    def reject(problem: str, fix: str = FIX_REBUILD) -> InvalidPromptAudio:
        return InvalidPromptAudio(f"提示音文件 {name} 无法由 Asterisk 正确播放：{problem}。修复：{fix}。")

    if path.suffix.lower() != ".wav":
        raise reject(f"扩展名为 {path.suffix or '（无）'}，提示音须为 .wav", "改用 .wav 扩展名并按 8000 Hz 单声道 16 位 PCM 保存")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise reject("文件不存在") from None
    except OSError as error:
        raise reject(f"文件无法读取（{error.strerror}）", "检查文件权限") from None

    _check_riff(data, reject)
    channels, sample_rate, byte_rate, block_align, bits = _check_fmt_chunk(data, reject)
    _check_pcm_shape(channels, sample_rate, bits, byte_rate, block_align, reject)
    samples = _check_data_chunk(data, reject)

    peak = max(abs(min(samples)), abs(max(samples)))
    if peak == 0:
        raise reject("所有采样都是 0，播放时只有静音", FIX_REBUILD + "，并确认语音合成有声音输出")

    return WavInfo(
        path=path,
        sample_rate=sample_rate,
        channels=channels,
        bits_per_sample=bits,
        frames=len(samples),
        peak=peak,
    )


def _check_riff(data: bytes, reject: Reject) -> None:
    if len(data) < 12 or data[0:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise reject("不是 RIFF/WAVE 格式的文件", FIX_FFMPEG)
    riff_size = struct.unpack_from("<I", data, 4)[0]
    if riff_size + 8 != len(data):
        raise reject(f"RIFF 头记录的长度 {riff_size + 8} 字节与实际文件 {len(data)} 字节不符，文件被截断或带有多余数据")


def _check_fmt_chunk(data: bytes, reject: Reject) -> tuple[int, int, int, int, int]:
    if len(data) < 20 or data[12:16] != b"fmt ":
        raise reject(f"第一个数据块是 {_chunk_name(data, 12)}，不是 fmt", FIX_FFMPEG)

    fmt_size = struct.unpack_from("<I", data, 16)[0]
    if fmt_size < 16 or len(data) < 20 + fmt_size:
        raise reject("fmt 块不完整", FIX_FFMPEG)
    fmt_tag, channels, sample_rate, byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", data, 20)

    if fmt_tag != WAVE_FORMAT_PCM:
        codec = _FORMAT_NAMES.get(fmt_tag, f"格式代码 0x{fmt_tag:04X}")
        raise reject(f"编码为 {codec}，不是线性 PCM（格式代码 1）", FIX_REBUILD + "；" + FIX_FFMPEG)
    if fmt_size != 16:
        raise reject(f"fmt 块长 {fmt_size} 字节，不是标准 44 字节文件头所用的 16 字节", FIX_FFMPEG)
    return channels, sample_rate, byte_rate, block_align, bits


def _check_pcm_shape(
    channels: int, sample_rate: int, bits: int, byte_rate: int, block_align: int, reject: Reject
) -> None:
    if channels != ASTERISK_CHANNELS:
        raise reject(f"有 {channels} 个声道，提示音须为单声道", FIX_REBUILD + "；" + FIX_FFMPEG)
    if sample_rate != ASTERISK_SAMPLE_RATE_HZ:
        hint = ""
        if sample_rate == 22050:
            hint = "（这是 espeak-ng 的原始输出，未经转换）"
        elif sample_rate == 16000:
            hint = "（Asterisk 把 .wav 当作 8000 Hz 播放，16 kHz 文件须命名为 .wav16）"
        raise reject(f"采样率为 {sample_rate} Hz{hint}，.wav 提示音须为 8000 Hz", FIX_REBUILD + "；" + FIX_FFMPEG)
    if bits != ASTERISK_BITS_PER_SAMPLE:
        raise reject(f"采样位数为 {bits} 位，提示音须为 16 位", FIX_REBUILD + "；" + FIX_FFMPEG)
    if block_align != 2 or byte_rate != ASTERISK_SAMPLE_RATE_HZ * 2:
        raise reject(f"fmt 块数据不一致（每秒字节数 {byte_rate}，块对齐 {block_align}）", FIX_FFMPEG)


def _check_data_chunk(data: bytes, reject: Reject) -> array.array[int]:
    if data[36:40] != b"data":
        chunk = _chunk_name(data, 36)
        raise reject(f"fmt 块之后是 {chunk} 块，不是 data 块（文件头不是标准的 44 字节）", FIX_REBUILD + "；" + FIX_FFMPEG)

    data_size = struct.unpack_from("<I", data, 40)[0]
    if data_size == 0:
        raise reject("没有任何音频采样（时长为 0）", FIX_REBUILD + "，并确认语音合成有声音输出")
    if PLAIN_HEADER_BYTES + data_size != len(data):
        raise reject(f"data 块记录 {data_size} 字节，但文件头之后实有 {len(data) - PLAIN_HEADER_BYTES} 字节（文件被截断或带有多余的块）")
    if data_size % 2:
        raise reject(f"data 块长 {data_size} 字节，不是 16 位采样的整数倍")

    samples = array.array("h")
    samples.frombytes(data[PLAIN_HEADER_BYTES:])
    if sys.byteorder == "big":
        samples.byteswap()
    return samples


def _chunk_name(data: bytes, offset: int) -> str:
    raw = data[offset:offset + 4]
    if len(raw) < 4:
        return "（文件结束）"
    return raw.decode("latin-1").strip() or repr(raw)
