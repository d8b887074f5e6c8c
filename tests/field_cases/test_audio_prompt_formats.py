"""Field case P01: prompt files in shapes Asterisk refuses are rejected; the build emits one shape.

Asterisk plays ``.wav`` only as 8 kHz mono 16-bit PCM. Each bad shape below is made with
the tool that produces it in practice (espeak-ng, ffmpeg, sox, Python's wave module).
"""

from __future__ import annotations

import re
import struct
import subprocess
import warnings
import wave
from collections.abc import Callable
from pathlib import Path

import pytest

with warnings.catch_warnings():
    # pydub 0.25 imports audioop, deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

from speech.audio import InvalidPromptAudio, convert_for_asterisk, validate_prompt_wav

SENTENCE_PINYIN = "nin2 hao3 , zhe4 li3 shi4 yao1 er4 san1 si4 jiu3 min2 zheng4 fu2 wu4 re4 xian4"


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=30)


def rms_db(path: Path) -> float:
    """RMS level in dBFS between 50 ms and 950 ms, measured by ``sox stats``."""
    completed = subprocess.run(
        ["sox", str(path), "-n", "trim", "0.05", "0.9", "stats"], check=True, capture_output=True, text=True, timeout=30
    )
    match = re.search(r"^RMS lev dB\s+(-?[\d.]+|-inf)", completed.stderr, re.MULTILINE)
    assert match, completed.stderr
    return float(match.group(1))


@pytest.fixture(scope="module")
def sentence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same sentence as espeak-ng writes it: 22,050 Hz mono 16-bit."""
    path = tmp_path_factory.mktemp("p01") / "espeak_raw.wav"
    run("espeak-ng", "-v", "cmn-latn-pinyin", "-w", str(path), SENTENCE_PINYIN)
    return path


def ffmpeg(source: Path, target: Path, *options: str) -> Path:
    run("ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), *options, str(target))
    return target


def make_22050(source: Path, folder: Path) -> Path:
    return source


def make_16k_as_wav(source: Path, folder: Path) -> Path:
    return ffmpeg(source, folder / "16k.wav", "-ar", "16000", "-ac", "1", "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact")


def make_stereo(source: Path, folder: Path) -> Path:
    return ffmpeg(source, folder / "stereo.wav", "-ar", "8000", "-ac", "2", "-c:a", "pcm_s16le", "-fflags", "+bitexact", "-flags:a", "+bitexact")


def make_8bit(source: Path, folder: Path) -> Path:
    target = folder / "8bit.wav"
    run("sox", str(source), "-r", "8000", "-c", "1", "-b", "8", str(target))
    return target


def make_list_chunk(source: Path, folder: Path) -> Path:
    # Without -bitexact ffmpeg writes a LIST/INFO chunk naming its own version.
    return ffmpeg(source, folder / "list.wav", "-ar", "8000", "-ac", "1", "-c:a", "pcm_s16le")


def make_extensible(source: Path, folder: Path) -> Path:
    # Right rate, channels and bits, but a WAVE_FORMAT_EXTENSIBLE fmt chunk (40 bytes).
    data = convert_for_asterisk(source, folder / "pcm.wav").path.read_bytes()[44:]
    pcm_guid = struct.pack("<IHH8s", 1, 0x0000, 0x0010, bytes.fromhex("800000aa00389b71"))
    fmt = struct.pack("<HHIIHHHHI16s", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 0x4, pcm_guid)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    target = folder / "extensible.wav"
    target.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    return target


def make_zero_samples(source: Path, folder: Path) -> Path:
    target = folder / "empty.wav"
    with wave.open(str(target), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(b"")
    return target


def make_mulaw(source: Path, folder: Path) -> Path:
    return ffmpeg(source, folder / "mulaw.wav", "-ar", "8000", "-ac", "1", "-c:a", "pcm_mulaw", "-fflags", "+bitexact", "-flags:a", "+bitexact")


BAD_SHAPES: list[tuple[str, Callable[[Path, Path], Path], str]] = [
    ("a_22050_hz", make_22050, "采样率为 22050 Hz"),
    ("b_16k_saved_as_wav", make_16k_as_wav, "采样率为 16000 Hz"),
    ("c_stereo", make_stereo, "有 2 个声道"),
    ("d_8_bit", make_8bit, "采样位数为 8 位"),
    ("e_list_chunk", make_list_chunk, "LIST 块"),
    ("f_extensible", make_extensible, "WAVE_FORMAT_EXTENSIBLE"),
    ("g_zero_samples", make_zero_samples, "没有任何音频采样"),
    ("h_mulaw", make_mulaw, "μ-law"),
]


class TestValidatorRejects:
    @pytest.mark.parametrize(("name", "make", "problem"), BAD_SHAPES, ids=[shape[0] for shape in BAD_SHAPES])
    def test_bad_shape_rejected_naming_file_and_fix(
        self, sentence: Path, tmp_path: Path, name: str, make: Callable[[Path, Path], Path], problem: str
    ) -> None:
        """(P01) Each shape Asterisk refuses or misplays is rejected with a Chinese message."""
        path = make(sentence, tmp_path)

        with pytest.raises(InvalidPromptAudio) as raised:
            validate_prompt_wav(path)

        message = str(raised.value)
        assert problem in message
        assert str(path) in message
        assert "修复：" in message

    def test_all_zero_samples_rejected(self, tmp_path: Path) -> None:
        path = tmp_path / "silence.wav"
        with wave.open(str(path), "wb") as writer:
            writer.setnchannels(1)
            writer.setsampwidth(2)
            writer.setframerate(8000)
            writer.writeframes(b"\x00\x00" * 8000)

        with pytest.raises(InvalidPromptAudio, match="静音"):
            validate_prompt_wav(path)

    def test_truncated_file_rejected(self, sentence: Path, tmp_path: Path) -> None:
        good = convert_for_asterisk(sentence, tmp_path / "good.wav").path
        truncated = tmp_path / "truncated.wav"
        truncated.write_bytes(good.read_bytes()[:-100])

        with pytest.raises(InvalidPromptAudio, match="截断"):
            validate_prompt_wav(truncated)

    def test_not_a_wav_rejected(self, tmp_path: Path) -> None:
        path = tmp_path / "notes.wav"
        path.write_text("这不是音频", encoding="utf-8")

        with pytest.raises(InvalidPromptAudio, match="RIFF/WAVE"):
            validate_prompt_wav(path)

    def test_wav16_extension_rejected(self, sentence: Path, tmp_path: Path) -> None:
        path = make_16k_as_wav(sentence, tmp_path).rename(tmp_path / "welcome.wav16")

        with pytest.raises(InvalidPromptAudio, match="扩展名"):
            validate_prompt_wav(path)

    def test_missing_file_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(InvalidPromptAudio, match="不存在"):
            validate_prompt_wav(tmp_path / "welcome.wav")


class TestConversion:
    def test_converted_file_accepted_with_plain_header(self, sentence: Path, tmp_path: Path) -> None:
        """(P01) The build's converter emits 8 kHz mono 16-bit PCM with a 44-byte header."""
        info = convert_for_asterisk(sentence, tmp_path / "welcome.wav")
        data = info.path.read_bytes()

        assert validate_prompt_wav(info.path).frames == info.frames
        assert data[36:40] == b"data"
        assert struct.unpack_from("<I", data, 40)[0] == len(data) - 44
        assert b"LIST" not in data[:64]
        assert (info.sample_rate, info.channels, info.bits_per_sample) == (8000, 1, 16)

    def test_duration_kept_through_conversion(self, sentence: Path, tmp_path: Path) -> None:
        with wave.open(str(sentence), "rb") as reader:
            source_duration = reader.getnframes() / reader.getframerate()

        info = convert_for_asterisk(sentence, tmp_path / "welcome.wav")

        assert abs(info.duration_s - source_duration) < 0.01

    @pytest.mark.parametrize(("name", "make", "problem"), BAD_SHAPES[:6] + BAD_SHAPES[7:],
                             ids=[shape[0] for shape in BAD_SHAPES[:6] + BAD_SHAPES[7:]])
    def test_every_bad_shape_converts_to_valid_prompt(
        self, sentence: Path, tmp_path: Path, name: str, make: Callable[[Path, Path], Path], problem: str
    ) -> None:
        source = make(sentence, tmp_path)

        info = convert_for_asterisk(source, tmp_path / "fixed.wav")

        assert validate_prompt_wav(info.path).frames > 8000

    def test_resampling_filters_content_above_4_khz(self, tmp_path: Path) -> None:
        """A 6 kHz tone must vanish at 8 kHz, not alias to 2 kHz as pydub's set_frame_rate does."""
        tone = tmp_path / "tone.wav"
        run("sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(tone), "synth", "1", "sine", "6000", "vol", "0.5")
        voice_band = tmp_path / "voice_band.wav"
        run("sox", "-n", "-r", "22050", "-c", "1", "-b", "16", str(voice_band), "synth", "1", "sine", "1000", "vol", "0.5")
        unfiltered = tmp_path / "pydub8k.wav"
        with open(tone, "rb") as source:
            AudioSegment.from_file(source, format="wav").set_frame_rate(8000).export(str(unfiltered), format="wav").close()

        filtered = convert_for_asterisk(tone, tmp_path / "tone8k.wav")
        kept = convert_for_asterisk(voice_band, tmp_path / "voice8k.wav")

        # Skip the first and last 50 ms, where the filter's onset ringing sits.
        assert rms_db(filtered.path) < -60
        assert rms_db(kept.path) > -20
        assert rms_db(unfiltered) > -20  # the aliasing this conversion exists to avoid

    def test_failed_conversion_leaves_old_file(self, sentence: Path, tmp_path: Path) -> None:
        target = convert_for_asterisk(sentence, tmp_path / "welcome.wav").path
        before = target.read_bytes()
        broken = tmp_path / "broken.wav"
        broken.write_bytes(b"RIFF\x00\x00")

        with pytest.raises(Exception, match="ffmpeg"):
            convert_for_asterisk(broken, target)

        assert target.read_bytes() == before
        assert not [path for path in tmp_path.iterdir() if re.match(r"\.tmp-", path.name)]
