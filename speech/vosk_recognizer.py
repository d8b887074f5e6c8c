"""Speech recognition adapter: a ``SpeechRecognizer`` backed by vosk in a separate worker process.

``VoskRecognizer`` loads the model only from the configured folder and only inside its
worker (``speech/vosk_worker.py``), so a large model cannot stall the event loop or
bloat the call controller. One worker recognises one recording at a time. A request
that exceeds its time limit kills the worker, so the next request starts a new one.
The word list is passed to vosk as a grammar, so the result can only contain those
words or ``[unk]``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import structlog

from ivr.recognizer import (
    Recognition,
    RecognizerError,
    RecognizerTimeout,
    RecognizerUnavailable,
    match_word,
)

log = structlog.get_logger(__name__)

WORKER_SCRIPT = Path(__file__).with_name("vosk_worker.py")
DEFAULT_LOAD_TIMEOUT_S = 120.0
DEFAULT_RECOGNIZE_TIMEOUT_S = 10.0
# Files that every vosk model folder has: the acoustic model and its configuration.
MODEL_MARKERS = ("am/final.mdl", "conf/model.conf")


def check_model_path(model_path: Path | str | None) -> Path:
    """Return the model folder, or raise ``RecognizerUnavailable`` naming the path and the fix."""
    if model_path is None or str(model_path) == "":
        raise RecognizerUnavailable("未配置语音识别模型路径：流程只接受按键。如需语音识别，请把 vosk 模型解压到本机并在配置中填写其目录。")
    path = Path(model_path)
    if not path.is_dir():
        raise RecognizerUnavailable(
            f"语音识别模型目录 {path} 不存在：请把 vosk 普通话模型解压到该目录，或改正配置中的路径；在此之前流程只接受按键。"
        )
    missing = [marker for marker in MODEL_MARKERS if not (path / marker).is_file()]
    if missing:
        raise RecognizerUnavailable(
            f"{path} 不是 vosk 模型目录（缺少 {'、'.join(missing)}）：请填写解压后含 am、conf 子目录的那一层目录。"
        )
    return path


class VoskRecognizer:
    """Recognise recorded answers against a word list with a vosk model in a worker process.

    ``start`` checks the path and waits for the model to load; it raises
    ``RecognizerUnavailable`` with a Chinese message when the path is missing or wrong,
    or when the model fails to load within ``load_timeout_s``.
    """

    def __init__(
        self,
        model_path: Path | str,
        *,
        timeout_s: float = DEFAULT_RECOGNIZE_TIMEOUT_S,
        load_timeout_s: float = DEFAULT_LOAD_TIMEOUT_S,
        worker_command: Sequence[str] | None = None,
    ) -> None:
        self._model_path = Path(model_path)
        self._timeout_s = timeout_s
        self._load_timeout_s = load_timeout_s
        self._worker_command = list(worker_command or [sys.executable, "-I", str(WORKER_SCRIPT)])
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()

    @property
    def worker_pid(self) -> int | None:
        """Process id of the running worker, or None before ``start`` and after a kill."""
        return self._process.pid if self._process is not None and self._process.returncode is None else None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        async with self._lock:
            await self._ensure_worker()

    async def stop(self) -> None:
        async with self._lock:
            await self._stop_worker()

    async def missing_words(self, words: Sequence[str]) -> list[str]:
        """Return the words (or parts of phrases) the model's vocabulary lacks; vosk ignores those."""
        reply = await self._request({"op": "check", "words": list(words)}, self._timeout_s)
        return [str(word) for word in reply.get("missing", [])]

    async def recognize(self, recording: Path, words: Sequence[str]) -> Recognition:
        reply = await self._request({"op": "recognize", "wav": str(recording), "words": list(words)}, self._timeout_s)
        text = str(reply.get("text", ""))
        return Recognition(text=text, word=match_word(text, words), elapsed_ms=int(reply.get("elapsed_ms", 0)))

    async def _request(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        async with self._lock:
            process = await self._ensure_worker()
            assert process.stdin is not None and process.stdout is not None

            started = time.monotonic()
            try:
                process.stdin.write((json.dumps(request, ensure_ascii=False) + "\n").encode("utf-8"))
                await process.stdin.drain()
                line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
            except TimeoutError:
                log.warning("speech recognition timed out, killing worker", op=request["op"], timeout_s=timeout_s)
                await self._stop_worker(kill=True)
                raise RecognizerTimeout(f"speech recognition took longer than {timeout_s:.1f} s") from None
            except (BrokenPipeError, ConnectionResetError):
                line = b""

            if not line:
                await self._stop_worker()
                raise RecognizerError("speech recognition worker exited")
            reply = _parse_reply(line)
            if "error" in reply:
                raise RecognizerError(f"speech recognition failed: {reply['error']}")
            log.debug("speech recognition reply", op=request["op"], elapsed_ms=round((time.monotonic() - started) * 1000))
            return reply

    async def _ensure_worker(self) -> asyncio.subprocess.Process:
        if self._process is not None and self._process.returncode is None:
            return self._process

        path = check_model_path(self._model_path)
        process = await asyncio.create_subprocess_exec(
            *self._worker_command, str(path),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )
        self._process = process
        assert process.stdout is not None
        started = time.monotonic()
        try:
            line = await asyncio.wait_for(process.stdout.readline(), self._load_timeout_s)
        except TimeoutError:
            await self._stop_worker()
            raise RecognizerUnavailable(
                f"语音识别模型 {path} 在 {self._load_timeout_s:.0f} 秒内未加载完成：请确认模型完整、内存充足。"
            ) from None

        reply = _parse_reply(line) if line else {"error": "worker exited before loading the model"}
        if not reply.get("ready"):
            await self._stop_worker()
            raise RecognizerUnavailable(
                f"语音识别模型 {path} 加载失败（{reply.get('error')}）：请确认该目录是完整的 vosk 模型，且已安装 Python 包 vosk。"
            )
        log.info("speech recognition model loaded", model=str(path), worker_pid=process.pid,
                 elapsed_ms=round((time.monotonic() - started) * 1000))
        return process

    async def _stop_worker(self, *, kill: bool = False) -> None:
        process, self._process = self._process, None
        if process is None or process.returncode is not None:
            return
        if kill:
            process.kill()
            await process.wait()
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 2.0)
        except TimeoutError:
            process.kill()
            await process.wait()


async def open_recognizer(model_path: Path | str | None, **options: Any) -> VoskRecognizer | None:
    """Start a recogniser for ``model_path``, or return None so the flow stays keys-only.

    A missing, wrong or unloadable model is logged as a warning with the Chinese
    message for the operator; it never stops the node.

    NOTE: the node configuration has no model path or answer folder yet, so no county
    node calls this; ``FlowRunner(recognizer=..., answer_path=...)`` takes its result.
    """
    if model_path is None or str(model_path) == "":
        return None
    recognizer = VoskRecognizer(model_path, **options)
    try:
        await recognizer.start()
    except RecognizerUnavailable as error:
        log.warning("speech recognition disabled, menus accept keys only", model=str(model_path), reason=str(error))
        return None
    return recognizer


def _parse_reply(line: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {"error": f"unreadable reply {line[:80]!r}"}
    return reply if isinstance(reply, dict) else {"error": f"unexpected reply {reply!r}"}
