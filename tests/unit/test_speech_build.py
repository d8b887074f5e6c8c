"""Unit tests: the prompt build (manifest, staleness, failures) and the ``hotline prompts`` CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hotline.commands.prompts import prompts as prompts_cli
from speech.build import MANIFEST_NAME, PromptStatus, build_prompts, build_prompts_async, check_prompts
from speech.normalize import NORMALIZER_VERSION
from speech.synth import Synthesizer

# A worker that exits at once: a build given it fails any prompt it tries to render.
DEAD_WORKER = [sys.executable, "-c", "import sys; sys.exit(3)"]


def write_catalog(path: Path, prompts: dict[str, str], *, extra: str = "") -> Path:
    lines = ["rate_wpm: 150", extra, "prompts:"] + [f"  {key}: {value}" for key, value in prompts.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return write_catalog(tmp_path / "catalog.yaml", {"welcome": "您好。", "goodbye": "再见。", "category_dibao": "您选择的是低保业务。"})


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    return tmp_path / "audio"


def manifest(out_dir: Path) -> dict:
    return json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))


class TestManifest:
    def test_manifest_ties_file_to_text_and_voice(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)

        entry = manifest(out_dir)["prompts"]["welcome"]
        assert entry["file"] == "welcome.wav"
        assert entry["text"] == "您好。"
        assert entry["pinyin"] == "nin2 hao3"
        assert entry["voice"] == "cmn-latn-pinyin"
        assert entry["normalizer"] == NORMALIZER_VERSION
        assert len(entry["hash"]) == 64
        assert entry["duration_s"] > 0.3

    def test_second_build_renders_nothing(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)

        with Synthesizer(worker_command=DEAD_WORKER) as dead:
            report = build_prompts(catalog, out_dir, synthesizer=dead)

        assert report.ok
        assert len(report.up_to_date) == 3
        assert report.built == ()

    def test_force_renders_everything(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)

        report = build_prompts(catalog, out_dir, force=True)

        assert len(report.built) == 3

    def test_speed_change_renders_again(self, catalog: Path, out_dir: Path, tmp_path: Path) -> None:
        build_prompts(catalog, out_dir)
        catalog.write_text(catalog.read_text(encoding="utf-8").replace("goodbye: 再见。", "goodbye:\n    text: 再见。\n    speed: 0.7"),
                           encoding="utf-8")

        report = build_prompts(catalog, out_dir)

        assert [outcome.prompt_id for outcome in report.built] == ["goodbye"]

    def test_hand_replaced_file_detected_and_rebuilt(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)
        subprocess.run(["sox", str(out_dir / "goodbye.wav"), "-r", "22050", str(out_dir / "raw.wav")], check=True, timeout=30)
        shutil.move(out_dir / "raw.wav", out_dir / "goodbye.wav")

        problems = check_prompts(catalog, out_dir).problems
        report = build_prompts(catalog, out_dir)

        assert [problem.prompt_id for problem in problems] == ["goodbye"]
        assert "22050 Hz" in problems[0].message
        assert [outcome.prompt_id for outcome in report.built] == ["goodbye"]
        assert check_prompts(catalog, out_dir).ok

    def test_damaged_manifest_rebuilds_all(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)
        (out_dir / MANIFEST_NAME).write_text("{not json", encoding="utf-8")

        report = build_prompts(catalog, out_dir)

        assert len(report.built) == 3

    def test_removed_prompt_file_deleted(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)
        (out_dir / "hand_made.wav").write_bytes(b"kept")
        write_catalog(catalog, {"welcome": "您好。", "goodbye": "再见。"})

        report = build_prompts(catalog, out_dir)

        assert report.removed == ("category_dibao",)
        assert not (out_dir / "category_dibao.wav").exists()
        assert (out_dir / "hand_made.wav").exists()
        assert "category_dibao" not in manifest(out_dir)["prompts"]

    def test_leftover_temporary_files_cleaned(self, catalog: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / ".tmp-welcome-abc.wav").write_bytes(b"partial")

        build_prompts(catalog, out_dir)

        assert not list(out_dir.glob(".tmp-*"))


class TestFailures:
    def test_unreadable_text_fails_only_that_prompt(self, tmp_path: Path, out_dir: Path) -> None:
        catalog = write_catalog(tmp_path / "catalog.yaml", {"welcome": "您好。", "app_hint": "请下载APP。"})

        report = build_prompts(catalog, out_dir)

        assert [outcome.prompt_id for outcome in report.built] == ["welcome"]
        failed = report.failed[0]
        assert failed.prompt_id == "app_hint"
        assert "提示音 app_hint 未生成" in failed.message
        assert "APP" in failed.message
        assert not (out_dir / "app_hint.wav").exists()

    def test_missing_voice_stops_build(self, tmp_path: Path, out_dir: Path) -> None:
        catalog = write_catalog(tmp_path / "catalog.yaml", {"welcome": "您好。", "goodbye": "再见。"},
                                extra="voice: xx-no-such-voice")

        report = build_prompts(catalog, out_dir)

        assert [outcome.status for outcome in report.outcomes] == [PromptStatus.FAILED, PromptStatus.FAILED]
        assert all("espeak-ng-data" in outcome.message for outcome in report.failed)

    def test_failed_render_keeps_previous_audio(self, catalog: Path, out_dir: Path) -> None:
        build_prompts(catalog, out_dir)
        before = (out_dir / "welcome.wav").read_bytes()
        write_catalog(catalog, {"welcome": "您好，欢迎来电。", "goodbye": "再见。", "category_dibao": "您选择的是低保业务。"})

        with Synthesizer(worker_command=DEAD_WORKER) as dead:
            report = build_prompts(catalog, out_dir, synthesizer=dead)

        assert [outcome.prompt_id for outcome in report.failed] == ["welcome"]
        assert (out_dir / "welcome.wav").read_bytes() == before
        assert not check_prompts(catalog, out_dir).ok  # still flagged as stale

    async def test_async_build_runs_beside_event_loop(self, catalog: Path, out_dir: Path) -> None:
        report = await build_prompts_async(catalog, out_dir)

        assert len(report.built) == 3


class TestCli:
    def test_build_then_check(self, catalog: Path, out_dir: Path) -> None:
        runner = CliRunner()

        built = runner.invoke(prompts_cli, ["build", "--catalog", str(catalog), "--out", str(out_dir)])
        checked = runner.invoke(prompts_cli, ["check", "--catalog", str(catalog), "--out", str(out_dir)])

        assert built.exit_code == 0, built.output
        assert "新生成 3 条" in built.output
        assert checked.exit_code == 0, checked.output
        assert "提示音检查通过：3 条" in checked.output

    def test_check_reports_missing_and_stale(self, catalog: Path, out_dir: Path) -> None:
        runner = CliRunner()
        runner.invoke(prompts_cli, ["build", "--catalog", str(catalog), "--out", str(out_dir)])
        (out_dir / "welcome.wav").unlink()
        write_catalog(catalog, {"welcome": "您好。", "goodbye": "再会。", "category_dibao": "您选择的是低保业务。"})

        result = runner.invoke(prompts_cli, ["check", "--catalog", str(catalog), "--out", str(out_dir)])

        assert result.exit_code == 1
        assert "welcome.wav 无法由 Asterisk 正确播放：文件不存在" in result.output
        assert "提示音 goodbye 的文本、语音或语速已修改" in result.output
        assert "3 条中有 2 条有问题" in result.output

    def test_build_with_failed_prompt_exits_1(self, tmp_path: Path, out_dir: Path) -> None:
        catalog = write_catalog(tmp_path / "catalog.yaml", {"welcome": "您好。", "app_hint": "请下载APP。"})

        result = CliRunner().invoke(prompts_cli, ["build", "--catalog", str(catalog), "--out", str(out_dir)])

        assert result.exit_code == 1
        assert "提示音 app_hint 未生成" in result.output
        assert "失败 1 条" in result.output

    def test_bad_catalog_exits_2(self, tmp_path: Path, out_dir: Path) -> None:
        result = CliRunner().invoke(prompts_cli, ["build", "--catalog", str(tmp_path / "none.yaml"), "--out", str(out_dir)])

        assert result.exit_code == 2
        assert "不存在" in result.output
