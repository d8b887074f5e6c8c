"""Speech synthesis layer: render pinyin to WAV through pyttsx3 in an isolated worker process.

pyttsx3 2.99 (espeak driver) prints to stdout, writes only the last file when several
saves are queued, is not thread-safe, raises "run loop already started" when re-entered,
and can hang inside libespeak-ng. None of that may reach the caller, so every request
goes to a separate worker process (``tts_worker.py``), one prompt per save, under a
timeout. A worker that times out or dies is killed and replaced on the next request.
Output goes to a temporary name, is checked, and only then renamed into place.

The worker loads libespeak-ng through ctypes as ``libespeak-ng.so.1``. On Debian 12 that
file comes from the package ``libespeak-ng1`` and the voices from ``espeak-ng-data``.
"""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog

log = structlog.get_logger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("tts_worker.py")

DEFAULT_TIMEOUT_S = 30.0
DEFAULT_STARTUP_TIMEOUT_S = 20.0


class SynthesisError(Exception):
    """One prompt could not be rendered; the message is Chinese and names the fix."""


class SynthesisTimeout(SynthesisError):
    """The worker sent no reply within the timeout and was killed."""


class TtsUnavailable(SynthesisError):
    """pyttsx3, libespeak-ng or the requested voice is missing, so no prompt can be rendered."""


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """espeak-ng voice and loudness; the rate is given per request."""

    voice: str = "cmn-latn-pinyin"
    volume: float = 1.0


@dataclass(frozen=True, slots=True)
class RawAudio:
    """A WAV file as the synthesizer wrote it (espeak-ng renders 22,050 Hz mono 16-bit)."""

    path: Path
    sample_rate: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate


class Synthesizer:
    """Renders pinyin text to WAV files, one request at a time, in a worker process.

    Safe to share between threads: requests are serialised by a lock. Use as a context
    manager, or call ``close()``, so the worker process ends.
    """

    def __init__(
        self,
        settings: VoiceSettings | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        worker_command: Sequence[str] | None = None,
    ) -> None:
        self._settings = settings or VoiceSettings()
        self._timeout_s = timeout_s
        self._startup_timeout_s = startup_timeout_s
        self._worker_command = list(worker_command or [sys.executable, "-I", str(WORKER_SCRIPT)])
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_file: IO[bytes] | None = None
        self._buffer = b""

    @property
    def voice(self) -> str:
        return self._settings.voice

    def __enter__(self) -> Synthesizer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker process if one is running."""
        with self._lock:
            self._stop_worker()

    def synthesize(self, pinyin: str, out_path: Path | str, *, rate_wpm: int) -> RawAudio:
        """Render ``pinyin`` at ``rate_wpm`` into ``out_path`` (replaced atomically).

        Raises ``TtsUnavailable`` when no prompt can be rendered on this machine,
        ``SynthesisTimeout`` when the worker hangs and ``SynthesisError`` otherwise.
        """
        out_path = Path(out_path)
        if not pinyin.strip():
            raise SynthesisError(f"要合成的文本为空，无法生成 {out_path.name}：请在提示音目录中填写文本。")

        out_path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".tmp-{out_path.stem}-", suffix=".wav", dir=out_path.parent)
        os.close(handle)
        temp_path = Path(temp_name)
        try:
            with self._lock:
                reply = self._request(
                    {
                        "text": pinyin,
                        "path": str(temp_path),
                        "voice": self._settings.voice,
                        "rate_wpm": rate_wpm,
                        "volume": self._settings.volume,
                    },
                    action=f"合成 {out_path.name}",
                )
            frames, sample_rate = _check_raw_wav(temp_path, out_path.name)
            os.replace(temp_path, out_path)
        finally:
            temp_path.unlink(missing_ok=True)

        if reply.get("attempts", 1) > 1:
            log.info("speech synthesis retried after empty output", file=out_path.name, attempt=reply["attempts"])
        log.debug("speech synthesized", file=out_path.name, frames=frames)
        return RawAudio(path=out_path, sample_rate=sample_rate, frames=frames)

    # -- worker process ---------------------------------------------------------------

    def _request(self, request: dict[str, Any], *, action: str) -> dict[str, Any]:
        self._ensure_worker()
        assert self._process is not None and self._process.stdin is not None

        try:
            self._process.stdin.write((json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8"))
            self._process.stdin.flush()
        except (BrokenPipeError, ValueError):
            detail = self._stop_worker()
            raise SynthesisError(f"语音合成进程意外退出（{detail}），{action}失败：请重试；如反复出现，请检查 espeak-ng 安装。") from None

        reply = self._read_reply(self._timeout_s, action=action)
        if reply.get("ok"):
            return reply

        kind = reply.get("kind")
        detail = reply.get("detail", "")
        if kind == "voice_missing":
            raise TtsUnavailable(
                f"espeak-ng 中没有语音 {detail}，{action}失败：请安装 Debian 软件包 espeak-ng-data，"
                f"并确认 `espeak-ng --voices=cmn` 列出 cmn-latn-pinyin。"
            )
        raise SynthesisError(f"pyttsx3 {action}失败（{detail}）：请检查文本，或运行 hotline prompts build --force 重试。")

    def _ensure_worker(self) -> None:
        if self._process is not None and self._process.poll() is None:
            return
        self._stop_worker()

        self._stderr_file = tempfile.TemporaryFile()
        self._buffer = b""
        self._process = subprocess.Popen(
            self._worker_command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            close_fds=True,
        )
        log.debug("tts worker started", pid=self._process.pid)

        hello = self._read_reply(self._startup_timeout_s, action="启动语音合成进程")
        if hello.get("ready"):
            return

        detail = hello.get("detail", "")
        self._stop_worker()
        raise TtsUnavailable(
            f"pyttsx3 无法加载 espeak-ng（{detail}）：请安装 Debian 软件包 libespeak-ng1 和 espeak-ng-data "
            f"（apt-get install libespeak-ng1 espeak-ng-data），并确认虚拟环境中已安装 pyttsx3。"
        )

    def _read_reply(self, timeout_s: float, *, action: str) -> dict[str, Any]:
        assert self._process is not None and self._process.stdout is not None
        stdout = self._process.stdout
        deadline = time.monotonic() + timeout_s

        with selectors.DefaultSelector() as selector:
            selector.register(stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    pid = self._process.pid
                    self._stop_worker(kill=True)
                    log.warning("tts worker timed out", pid=pid, timeout_s=timeout_s, action=action)
                    raise SynthesisTimeout(
                        f"{action}超过 {timeout_s:.0f} 秒未完成，已结束合成进程：请重试；"
                        f"如反复超时，请缩短该提示音文本或检查 espeak-ng。"
                    )
                chunk = os.read(stdout.fileno(), 65536)
                if not chunk:
                    detail = self._stop_worker()
                    raise SynthesisError(f"语音合成进程意外退出（{detail}），{action}失败：请检查 pyttsx3 和 espeak-ng 安装。")
                self._buffer += chunk

        line, _, self._buffer = self._buffer.partition(b"\n")
        try:
            reply = json.loads(line)
        except json.JSONDecodeError:
            self._stop_worker()
            raise SynthesisError(f"语音合成进程返回了无法解析的内容，{action}失败：请检查 tts_worker.py。") from None
        if not isinstance(reply, dict):
            self._stop_worker()
            raise SynthesisError(f"语音合成进程返回了无法解析的内容，{action}失败：请检查 tts_worker.py。")
        return reply

    def _stop_worker(self, *, kill: bool = False) -> str:
        """End the worker and return its exit status and last stderr line, for error messages.

        Closing stdin lets an idle worker exit by itself; a hung one is killed.
        """
        process, self._process = self._process, None
        detail = ""
        if process is not None:
            if kill:
                process.kill()
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
            try:
                process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
            detail = f"退出码 {process.returncode}"

        if self._stderr_file is not None:
            self._stderr_file.seek(0)
            tail = self._stderr_file.read()[-500:].decode("utf-8", "replace").strip()
            self._stderr_file.close()
            self._stderr_file = None
            if tail:
                detail += f"，输出：{tail.splitlines()[-1]}"
        return detail


def _check_raw_wav(path: Path, label: str) -> tuple[int, int]:
    """Return (frames, sample rate) of a rendered file, or raise ``SynthesisError``."""
    try:
        with wave.open(str(path), "rb") as reader:
            frames = reader.getnframes()
            sample_rate = reader.getframerate()
            shape_ok = reader.getnchannels() == 1 and reader.getsampwidth() == 2
    except (wave.Error, EOFError, OSError) as error:
        raise SynthesisError(f"pyttsx3 为 {label} 写出的文件不是有效的 WAV（{error}）：请重试。") from None

    if not shape_ok:
        raise SynthesisError(f"pyttsx3 为 {label} 写出的文件不是单声道 16 位 PCM：请检查 pyttsx3 版本。")
    if frames == 0:
        raise SynthesisError(f"pyttsx3 为 {label} 写出的文件没有任何采样：请检查文本和 espeak-ng 语音。")
    return frames, sample_rate
