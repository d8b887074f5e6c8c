"""Speech recognition worker process: loads one vosk model and recognises recordings against word lists.

Run only by ``speech.vosk_recognizer.VoskRecognizer`` as ``python -I vosk_worker.py
MODEL_DIR``. The model is loaded once, in this process, so its memory (hundreds of MB)
never counts against the call controller and a stuck decode can be killed without
touching calls. The worker first writes one JSON line, ``{"ready": true}`` or
``{"error": ...}``. Then each JSON request line on stdin gets one JSON reply line on
stdout:

- ``{"op": "check", "words": [...]}`` returns ``{"missing": [...]}``, the words (or
  parts of phrases) that are not in the model's vocabulary.
- ``{"op": "recognize", "wav": PATH, "words": [...]}`` returns ``{"text": ..., "elapsed_ms": ...}``.

Failures of one request are returned as ``{"error": ...}`` and the worker keeps
running. This file imports only the standard library and vosk, so it runs without the
project on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import sys
import time
import wave
from typing import Any, TextIO

UNKNOWN_WORD = "[unk]"
CHUNK_FRAMES = 4000


def _reply(stream: TextIO, **fields: Any) -> None:
    stream.write(json.dumps(fields, ensure_ascii=False) + "\n")
    stream.flush()


def _missing_words(model: Any, words: list[str]) -> list[str]:
    missing: list[str] = []
    for word in words:
        for token in word.split():
            if model.vosk_model_find_word(token) < 0 and token not in missing:
                missing.append(token)
    return missing


def _recognize(model: Any, request: dict[str, Any]) -> dict[str, Any]:
    from vosk import KaldiRecognizer  # type: ignore[import-untyped]  # vosk 0.3.45 ships no type hints

    started = time.monotonic()
    words = [str(word) for word in request["words"]]
    with wave.open(str(request["wav"]), "rb") as reader:
        if reader.getnchannels() != 1 or reader.getsampwidth() != 2 or reader.getcomptype() != "NONE":
            return {"error": "recording is not mono 16-bit PCM WAV"}
        recognizer = KaldiRecognizer(model, reader.getframerate(), json.dumps(words + [UNKNOWN_WORD], ensure_ascii=False))
        while True:
            chunk = reader.readframes(CHUNK_FRAMES)
            if not chunk:
                break
            recognizer.AcceptWaveform(chunk)
    result = json.loads(recognizer.FinalResult())
    return {"text": str(result.get("text", "")), "elapsed_ms": round((time.monotonic() - started) * 1000)}


def main() -> int:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the protocol

    if len(sys.argv) != 2:
        _reply(protocol, error="usage: vosk_worker.py MODEL_DIR")
        return 2
    try:
        from vosk import Model, SetLogLevel  # type: ignore[import-untyped]  # vosk 0.3.45 ships no type hints
    except ImportError as error:
        _reply(protocol, error=f"vosk is not installed: {error}")
        return 1

    SetLogLevel(-1)
    try:
        model = Model(sys.argv[1])
    except Exception as error:  # noqa: BLE001 - vosk 0.3.45 raises a bare Exception when the model does not load
        _reply(protocol, error=f"model failed to load: {error}")
        return 1
    _reply(protocol, ready=True)

    for line in sys.stdin:
        try:
            request = json.loads(line)
            if request.get("op") == "check":
                _reply(protocol, missing=_missing_words(model, [str(word) for word in request["words"]]))
            elif request.get("op") == "recognize":
                _reply(protocol, **_recognize(model, request))
            else:
                _reply(protocol, error=f"unknown op {request.get('op')!r}")
        except (json.JSONDecodeError, KeyError, TypeError, OSError, EOFError, wave.Error) as error:
            _reply(protocol, error=f"{type(error).__name__}: {error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
