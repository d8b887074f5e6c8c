"""Field case P02: text-to-speech that writes nothing, hangs or leaves stale audio.

Runs the real pyttsx3 worker with espeak-ng voice cmn-latn-pinyin. ``sox stats`` checks
the built audio: it must not be silence, and its length must fit the number of
syllables in its text.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from speech.audio import validate_prompt_wav
from speech.build import build_prompts, check_prompts
from speech.catalog import load_catalog
from speech.normalize import normalize
from speech.synth import SynthesisError, SynthesisTimeout, Synthesizer, TtsUnavailable, VoiceSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = REPO_ROOT / "speech" / "tts_worker.py"

TEXTS = [
    "您好，这里是12349民政服务热线。",
    "低保请按1，特困供养请按2。",
    "对不起，您的按键有误，请重新按键。",
    "正在为您转接人工服务，请不要挂机。",
    "等待时间可能较长，请您耐心等待。",
    "您的来电已经记录，我们会尽快给您回电。",
    "感谢您的来电，再见。",
    "您选择的是低保业务。",
    "您选择的是特困供养业务。",
    "您选择的是临时救助业务。",
    "您选择的是儿童福利业务。",
    "您选择的是养老服务业务。",
    "您选择的是流浪乞讨人员救助业务。",
    "您选择的是政策咨询业务。",
    "请您稍等一下。",
    "很抱歉，系统暂时无法为您服务。",
    "如果您还有其他问题，欢迎再次拨打12349。",
    "请保持电话畅通。",
    "行动不便的老人可以申请上门服务。",
    "我们会在3个工作日内联系您。",
]


def sox_stats(path: Path) -> dict[str, float]:
    completed = subprocess.run(["sox", str(path), "-n", "stats"], check=True, capture_output=True, text=True, timeout=30)
    stats: dict[str, float] = {}
    for line in completed.stderr.splitlines():
        match = re.match(r"^(Length s|RMS lev dB|Pk lev dB)\s+(-?[\d.]+|-inf)", line)
        if match:
            stats[match.group(1)] = float(match.group(2))
    return stats


def assert_sounds_like_speech(path: Path, text: str) -> None:
    """Audible, and between 0.2 s and 0.8 s per syllable plus pauses."""
    stats = sox_stats(path)
    normalized = normalize(text)
    pauses = normalized.pinyin.count(",") + normalized.pinyin.count(".")

    assert stats["RMS lev dB"] > -35, f"{path.name} is near silence: {stats}"
    assert stats["Pk lev dB"] > -12, f"{path.name} is too quiet: {stats}"
    assert normalized.syllables * 0.2 <= stats["Length s"] <= normalized.syllables * 0.8 + pauses * 1.0 + 1.5, (
        f"{path.name}: {stats['Length s']} s for {normalized.syllables} syllables"
    )


def write_catalog(path: Path, prompts: dict[str, str], *, rate_wpm: int = 150) -> Path:
    lines = [f"rate_wpm: {rate_wpm}", "prompts:"]
    lines += [f"  {prompt_id}: {text}" for prompt_id, text in prompts.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class TestSynthesizer:
    def test_twenty_prompts_in_one_worker(self, tmp_path: Path) -> None:
        """(P02) One engine rendering 20 prompts in a loop writes 20 complete, distinct files."""
        with Synthesizer() as synthesizer:
            results = [
                synthesizer.synthesize(normalize(text).pinyin, tmp_path / f"p{index:02}.wav", rate_wpm=150)
                for index, text in enumerate(TEXTS)
            ]

        contents = {result.path.read_bytes() for result in results}
        assert len(contents) == len(TEXTS)
        for result, text in zip(results, TEXTS):
            assert result.sample_rate == 22050
            assert result.frames > 0
            assert_sounds_like_speech(result.path, text)
        assert not list(tmp_path.glob(".tmp-*"))

    def test_concurrent_requests_each_get_their_own_audio(self, tmp_path: Path) -> None:
        """(P02) Two threads sharing one synthesizer never get each other's audio or an empty file."""
        short, long = "再见。", "您的来电已经记录，我们会尽快给您回电，请保持电话畅通。"
        errors: list[BaseException] = []

        def render(text: str, name: str) -> None:
            try:
                for round_number in range(5):
                    synthesizer.synthesize(normalize(text).pinyin, tmp_path / f"{name}{round_number}.wav", rate_wpm=150)
            except BaseException as error:  # collected for the main thread's assert
                errors.append(error)

        with Synthesizer() as synthesizer:
            threads = [threading.Thread(target=render, args=(short, "short")),
                       threading.Thread(target=render, args=(long, "long"))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)

        assert errors == []
        for round_number in range(5):
            assert_sounds_like_speech(tmp_path / f"short{round_number}.wav", short)
            assert_sounds_like_speech(tmp_path / f"long{round_number}.wav", long)

    def test_pyttsx3_output_never_reaches_our_stdout(self, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
        with Synthesizer() as synthesizer:
            synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)

        captured = capfd.readouterr()
        assert "Audio saved" not in captured.out
        assert "Audio saved" not in captured.err

    def test_hung_worker_killed_after_timeout(self, tmp_path: Path) -> None:
        """(P02) A TTS engine that never answers costs one timeout, and its process is gone."""
        pid_file = tmp_path / "worker.pid"
        hang = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"

        with Synthesizer(startup_timeout_s=1.0, worker_command=[sys.executable, "-c", hang]) as synthesizer:
            started = time.monotonic()
            with pytest.raises(SynthesisTimeout, match="超过 1 秒未完成"):
                synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)
            elapsed = time.monotonic() - started

        assert elapsed < 5
        with pytest.raises(ProcessLookupError):
            os.kill(int(pid_file.read_text()), 0)
        assert not (tmp_path / "bye.wav").exists()
        assert not list(tmp_path.glob(".tmp-*"))

    def test_worker_hanging_mid_request_times_out(self, tmp_path: Path) -> None:
        # Sends the ready line, then never replies to a request.
        hang_after_ready = "import sys, time; print('{\"ready\": true}', flush=True); sys.stdin.readline(); time.sleep(120)"

        with Synthesizer(timeout_s=1.0, worker_command=[sys.executable, "-c", hang_after_ready]) as synthesizer:
            with pytest.raises(SynthesisTimeout):
                synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)

    def test_worker_that_dies_reported(self, tmp_path: Path) -> None:
        with Synthesizer(worker_command=[sys.executable, "-c", "import sys; sys.exit(3)"]) as synthesizer:
            with pytest.raises(SynthesisError, match="退出码 3"):
                synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)

    def test_worker_recovers_after_failure(self, tmp_path: Path) -> None:
        hang = "import time; time.sleep(120)"
        with Synthesizer(startup_timeout_s=0.5, worker_command=[sys.executable, "-c", hang]) as synthesizer:
            with pytest.raises(SynthesisTimeout):
                synthesizer.synthesize("zai4 jian4", tmp_path / "first.wav", rate_wpm=150)
            # Point the same synthesizer at the real worker: the next request starts it.
            synthesizer._worker_command = [sys.executable, "-I", str(WORKER)]
            result = synthesizer.synthesize("zai4 jian4", tmp_path / "second.wav", rate_wpm=150)

        assert result.frames > 0

    def test_missing_voice_is_fatal_not_english(self, tmp_path: Path) -> None:
        """pyttsx3 accepts an unknown voice silently and speaks English; we refuse instead."""
        with Synthesizer(VoiceSettings(voice="xx-no-such-voice")) as synthesizer:
            with pytest.raises(TtsUnavailable, match="espeak-ng-data"):
                synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)

    def test_missing_libespeak_names_debian_package(self, tmp_path: Path) -> None:
        # Runs the real worker with ctypes unable to load libespeak-ng, as on a machine
        # without the Debian package libespeak-ng1.
        without_library = textwrap.dedent(f"""
            import ctypes, runpy
            real_load = ctypes.cdll.LoadLibrary
            def load(name):
                if "espeak" in str(name):
                    raise OSError(f"{{name}}: cannot open shared object file")
                return real_load(name)
            ctypes.cdll.LoadLibrary = load
            runpy.run_path({str(WORKER)!r}, run_name="__main__")
        """)

        with Synthesizer(worker_command=[sys.executable, "-I", "-c", without_library]) as synthesizer:
            with pytest.raises(TtsUnavailable, match="libespeak-ng1"):
                synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)


class TestBuild:
    def test_build_renders_audible_prompts(self, tmp_path: Path) -> None:
        prompts = {f"p{index:02}": text for index, text in enumerate(TEXTS[:6])}
        catalog = write_catalog(tmp_path / "catalog.yaml", prompts)

        report = build_prompts(catalog, tmp_path / "audio")

        assert report.ok, [outcome.message for outcome in report.failed]
        assert len(report.built) == 6
        for prompt_id, text in prompts.items():
            path = tmp_path / "audio" / f"{prompt_id}.wav"
            assert validate_prompt_wav(path).sample_rate == 8000
            assert_sounds_like_speech(path, text)

    def test_changed_text_gives_new_audio(self, tmp_path: Path) -> None:
        """(P02) The same prompt id with new text is re-rendered; unchanged prompts are not."""
        catalog = write_catalog(tmp_path / "catalog.yaml", {"welcome": "您好。", "goodbye": "再见。"})
        out_dir = tmp_path / "audio"
        build_prompts(catalog, out_dir)
        old_welcome = (out_dir / "welcome.wav").read_bytes()
        old_goodbye = (out_dir / "goodbye.wav").read_bytes()

        new_text = "您好，这里是12349民政服务热线，很高兴为您服务。"
        write_catalog(catalog, {"welcome": new_text, "goodbye": "再见。"})
        report = build_prompts(catalog, out_dir)

        assert [outcome.prompt_id for outcome in report.built] == ["welcome"]
        assert [outcome.prompt_id for outcome in report.up_to_date] == ["goodbye"]
        assert (out_dir / "welcome.wav").read_bytes() != old_welcome
        assert (out_dir / "goodbye.wav").read_bytes() == old_goodbye
        assert_sounds_like_speech(out_dir / "welcome.wav", new_text)
        assert check_prompts(catalog, out_dir).ok

    def test_two_builds_at_once(self, tmp_path: Path) -> None:
        """(P02) Two build processes on one folder both finish and leave one consistent set."""
        prompts = {f"p{index:02}": text for index, text in enumerate(TEXTS[:8])}
        catalog = write_catalog(tmp_path / "catalog.yaml", prompts)
        out_dir = tmp_path / "audio"
        script = (
            "import sys; from speech.build import build_prompts; "
            "report = build_prompts(sys.argv[1], sys.argv[2]); "
            "print(len(report.built), len(report.up_to_date), len(report.failed))"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}

        processes = [
            subprocess.Popen([sys.executable, "-c", script, str(catalog), str(out_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO_ROOT)
            for _ in range(2)
        ]
        outputs = [process.communicate(timeout=60)[0].split()[-3:] for process in processes]

        assert all(process.returncode == 0 for process in processes)
        counts = sorted(tuple(int(value) for value in output) for output in outputs)
        assert counts == [(0, 8, 0), (8, 0, 0)]
        assert check_prompts(catalog, out_dir).ok
        assert not list(out_dir.glob(".tmp-*"))

    def test_repository_catalog_builds_audible_prompts(self, tmp_path: Path) -> None:
        """Every shipped prompt renders, passes the Asterisk shape check and sounds like speech."""
        catalog_path = REPO_ROOT / "prompts" / "zh-CN.yaml"
        out_dir = tmp_path / "zh-CN"

        report = build_prompts(catalog_path, out_dir)

        assert report.ok, [outcome.message for outcome in report.failed]
        for outcome in report.built:
            text = load_catalog(catalog_path).get(outcome.prompt_id).text
            assert_sounds_like_speech(outcome.path, text)
        assert check_prompts(catalog_path, out_dir).ok


class TestWorkerProtocol:
    def test_garbage_reply_reported(self, tmp_path: Path) -> None:
        with Synthesizer(worker_command=[sys.executable, "-c", "print('Audio saved to x.wav')"]) as synthesizer:
            with pytest.raises(SynthesisError, match="无法解析"):
                synthesizer.synthesize("zai4 jian4", tmp_path / "bye.wav", rate_wpm=150)

    def test_same_path_rendered_again_replaced(self, tmp_path: Path) -> None:
        with Synthesizer() as synthesizer:
            first = synthesizer.synthesize("zai4 jian4", tmp_path / "prompt.wav", rate_wpm=150).path.read_bytes()
            second = synthesizer.synthesize("nin2 hao3 , huan1 ying2 lai2 dian4", tmp_path / "prompt.wav", rate_wpm=150)

        assert second.path.read_bytes() != first
        assert second.duration_s > 1.5
