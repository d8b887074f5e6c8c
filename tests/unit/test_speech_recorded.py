"""Unit tests: human recordings replacing synthesised prompts, slow renditions and peak levels.

Recordings are generated with sox in the shapes operators bring: CD-quality stereo WAV,
FLAC, a tone too short, too quiet or silent, a 4 kHz file, text named ``.wav``.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from hotline.commands.prompts import prompts as prompts_cli
from speech.audio import PROMPT_PEAK_DBFS, WavInfo, peak_dbfs, validate_prompt_wav
from speech.build import (
    MANIFEST_NAME,
    SOURCE_RECORDED,
    SOURCE_SYNTHESIZED,
    build_prompts,
    check_prompts,
)
from speech.catalog import CatalogError, load_catalog


def tone(path: Path, *, seconds: float = 1.5, rate: int = 44100, channels: int = 2, volume: float = 0.5) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sox", "-n", "-r", str(rate), "-c", str(channels), str(path),
                    "synth", str(seconds), "sine", "440", "vol", str(volume)], check=True, timeout=30)
    return path


def silence(path: Path, *, seconds: float = 1.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sox", "-n", "-r", "16000", "-c", "1", str(path), "trim", "0", str(seconds)], check=True, timeout=30)
    return path


def manifest(out_dir: Path) -> dict:
    return json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "zh-CN.yaml"
    path.write_text("rate_wpm: 150\nrenditions:\n  slow: 0.75\nprompts:\n  welcome: 您好，这里是民政服务热线。\n  goodbye: 再见。\n",
                    encoding="utf-8")
    return path


@pytest.fixture
def recorded(tmp_path: Path) -> Path:
    return tmp_path / "recorded"


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "audio"


class TestRenditions:
    def test_catalog_adds_slow_rendition_per_prompt(self, catalog: Path) -> None:
        loaded = load_catalog(catalog)

        assert list(loaded) == ["welcome", "goodbye", "welcome@slow", "goodbye@slow"]
        assert loaded.get("welcome@slow").speed == pytest.approx(0.75)
        assert loaded.rate_for(loaded.get("welcome@slow")) == 112

    def test_bad_rendition_factor_rejected(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.yaml"
        path.write_text("renditions:\n  slow: 3\nprompts:\n  welcome: 您好。\n", encoding="utf-8")

        with pytest.raises(CatalogError, match="slow 的语速系数为 3"):
            load_catalog(path)

    def test_slow_rendition_is_longer(self, catalog: Path, out_dir: Path) -> None:
        report = build_prompts(catalog, out_dir)

        assert report.ok
        normal = validate_prompt_wav(out_dir / "welcome.wav").duration_s
        slow = validate_prompt_wav(out_dir / "welcome@slow.wav").duration_s
        assert slow > normal * 1.15

    def test_built_prompts_peak_at_common_level(self, tmp_path: Path, out_dir: Path) -> None:
        path = tmp_path / "digits.yaml"
        path.write_text("prompts:\n  digit_4: 四\n  welcome: 您好，这里是民政服务热线。\n", encoding="utf-8")

        build_prompts(path, out_dir)

        for name in ("digit_4.wav", "welcome.wav"):
            level = peak_dbfs(validate_prompt_wav(out_dir / name))
            assert level == pytest.approx(PROMPT_PEAK_DBFS, abs=0.1), name


class TestGoodRecordings:
    def test_recording_replaces_prompt(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")

        report = build_prompts(catalog, out_dir)

        assert report.ok
        assert not report.rejected_recordings
        entry = manifest(out_dir)["prompts"]["welcome"]
        assert entry["source"] == SOURCE_RECORDED
        assert entry["recording"] == "welcome.wav"
        assert manifest(out_dir)["prompts"]["goodbye"]["source"] == SOURCE_SYNTHESIZED
        info = validate_prompt_wav(out_dir / "welcome.wav")
        assert info.duration_s == pytest.approx(1.5, abs=0.05)
        assert peak_dbfs(info) == pytest.approx(PROMPT_PEAK_DBFS, abs=0.1)

    def test_slow_rendition_derived_from_recording(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")

        build_prompts(catalog, out_dir)

        entry = manifest(out_dir)["prompts"]["welcome@slow"]
        assert entry["source"] == SOURCE_RECORDED
        assert entry["tempo"] == pytest.approx(0.75)
        assert validate_prompt_wav(out_dir / "welcome@slow.wav").duration_s == pytest.approx(2.0, abs=0.05)

    def test_flac_recording_accepted(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "goodbye.flac", rate=48000, channels=1)

        report = build_prompts(catalog, out_dir)

        assert [outcome.prompt_id for outcome in report.recorded] == ["goodbye", "goodbye@slow"]

    def test_rebuild_is_incremental(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")
        build_prompts(catalog, out_dir)

        again = build_prompts(catalog, out_dir)

        assert not again.built
        assert {outcome.prompt_id for outcome in again.recorded} == {"welcome", "welcome@slow"}
        assert check_prompts(catalog, out_dir).ok

    def test_changed_recording_rebuilt(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")
        build_prompts(catalog, out_dir)
        tone(recorded / "welcome.wav", seconds=2.5)

        again = build_prompts(catalog, out_dir)

        assert {outcome.prompt_id for outcome in again.built} == {"welcome", "welcome@slow"}
        assert validate_prompt_wav(out_dir / "welcome.wav").duration_s == pytest.approx(2.5, abs=0.05)

    def test_removed_recording_brings_back_synthesis(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")
        build_prompts(catalog, out_dir)
        (recorded / "welcome.wav").unlink()

        again = build_prompts(catalog, out_dir)

        assert {outcome.prompt_id for outcome in again.built} == {"welcome", "welcome@slow"}
        assert manifest(out_dir)["prompts"]["welcome"]["source"] == SOURCE_SYNTHESIZED

    def test_own_slow_recording_wins(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")
        tone(recorded / "welcome@slow.wav", seconds=3.0)

        build_prompts(catalog, out_dir)

        assert manifest(out_dir)["prompts"]["welcome@slow"]["recording"] == "welcome@slow.wav"
        assert validate_prompt_wav(out_dir / "welcome@slow.wav").duration_s == pytest.approx(3.0, abs=0.05)


class TestBadRecordings:
    @pytest.mark.parametrize(("make", "problem"), [
        (lambda path: tone(path, seconds=0.1), "短于 0.3 秒"),
        (lambda path: tone(path, volume=0.01), "音量过低"),
        (lambda path: silence(path), "没有声音"),
        (lambda path: tone(path, rate=4000, channels=1), "采样率为 4000 Hz"),
        (lambda path: path.write_text("这不是录音", encoding="utf-8"), "不是可以读取的音频文件"),
    ], ids=["too_short", "too_quiet", "silent", "rate_4k", "text_file"])
    def test_rejected_and_synthesis_kept(self, catalog: Path, recorded: Path, out_dir: Path, make, problem) -> None:
        recorded.mkdir(parents=True, exist_ok=True)
        make(recorded / "welcome.wav")

        report = build_prompts(catalog, out_dir)

        assert report.ok
        assert len(report.rejected_recordings) == 1
        message = report.rejected_recordings[0].message
        assert str(recorded / "welcome.wav") in message
        assert problem in message
        assert "修复" in message
        assert "继续使用合成的提示音 welcome" in message
        assert manifest(out_dir)["prompts"]["welcome"]["source"] == SOURCE_SYNTHESIZED
        assert manifest(out_dir)["prompts"]["welcome@slow"]["source"] == SOURCE_SYNTHESIZED
        validate_prompt_wav(out_dir / "welcome.wav")

    def test_rejected_recording_keeps_previous_prompt(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)
        before = (out_dir / "welcome.wav").read_bytes()
        tone(recorded / "welcome.wav", volume=0.01)

        again = build_prompts(catalog, out_dir)

        assert (out_dir / "welcome.wav").read_bytes() == before
        assert not again.built
        assert len(again.rejected_recordings) == 1

    def test_unknown_id_rejected(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcom.wav")

        report = build_prompts(catalog, out_dir)

        assert "文件名 welcom 不是提示音目录中的编号" in report.rejected_recordings[0].message

    def test_unknown_extension_rejected(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        recorded.mkdir()
        (recorded / "welcome.doc").write_bytes(b"\x00" * 100)
        (recorded / "README.md").write_text("录音说明", encoding="utf-8")

        report = build_prompts(catalog, out_dir)

        assert len(report.rejected_recordings) == 1
        assert "扩展名 .doc 不是支持的音频格式" in report.rejected_recordings[0].message

    def test_two_files_for_one_id_rejected(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "welcome.wav")
        tone(recorded / "welcome.flac")

        report = build_prompts(catalog, out_dir)

        assert len(report.rejected_recordings) == 2
        assert manifest(out_dir)["prompts"]["welcome"]["source"] == SOURCE_SYNTHESIZED

    def test_cli_prints_rejection_and_exits_1(self, catalog: Path, recorded: Path, out_dir: Path) -> None:
        tone(recorded / "goodbye.wav", seconds=0.1)

        result = CliRunner().invoke(prompts_cli, ["build", "--catalog", str(catalog), "--out", str(out_dir)])

        assert result.exit_code == 1
        assert "goodbye.wav" in result.output
        assert "退回录音 1 个" in result.output
        assert manifest(out_dir)["prompts"]["goodbye"]["source"] == SOURCE_SYNTHESIZED


def test_peak_dbfs_of_silence_is_minus_infinity(tmp_path: Path) -> None:
    """A zero peak has no decibel value; the helper reports -inf instead of raising."""
    info = WavInfo(path=tmp_path / "x.wav", sample_rate=8000, channels=1, bits_per_sample=16, frames=1, peak=0)
    assert math.isinf(peak_dbfs(info))
