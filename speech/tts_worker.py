"""Speech synthesis worker process: renders one pinyin text per request with pyttsx3.

Run only by ``speech.synth.Synthesizer`` as ``python -I tts_worker.py``. Requests arrive
as JSON lines on stdin and each gets one JSON line in reply on the original stdout.
pyttsx3 2.99 prints to stdout, so file descriptor 1 is pointed at stderr before pyttsx3
is imported and the protocol uses a private copy of the original descriptor.

Each request is one ``save_to_file`` followed by one ``runAndWait``, because pyttsx3
writes only the last file when several saves are queued before a run. The worker checks
that the requested file exists and contains samples before it replies.

This file imports only the standard library and pyttsx3, so it runs without the
project on ``sys.path``.
"""

from __future__ import annotations

import json
import os
import sys
import wave
from typing import Any, TextIO

# Renders of one request before the worker reports that pyttsx3 wrote no audio.
MAX_ATTEMPTS = 3


def _open_protocol_stream() -> TextIO:
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


def _reply(stream: TextIO, **fields: Any) -> None:
    stream.write(json.dumps(fields, ensure_ascii=False) + "\n")
    stream.flush()


def _find_voice(engine: Any, wanted: str) -> str | None:
    """Return the espeak-ng voice id matching ``wanted`` (a language name or voice id)."""
    wanted = wanted.lower()
    for voice in engine.getProperty("voices"):
        languages = [language.lower() for language in (voice.languages or [])]
        voice_id = voice.id.lower()
        if wanted in languages or voice_id == wanted or voice_id.endswith("/" + wanted):
            return str(voice.id)
    return None


def _check_output(path: str) -> int:
    """Return the number of frames in the file pyttsx3 wrote, or raise ValueError."""
    if not os.path.exists(path):
        raise ValueError("pyttsx3 did not write the file")
    if os.path.getsize(path) <= 44:
        raise ValueError(f"pyttsx3 wrote {os.path.getsize(path)} bytes, no audio")
    with wave.open(path, "rb") as reader:
        frames = reader.getnframes()
        if reader.getnchannels() != 1 or reader.getsampwidth() != 2:
            raise ValueError("pyttsx3 wrote a file that is not mono 16-bit PCM")
        if frames == 0:
            raise ValueError("pyttsx3 wrote a file with zero samples")
        return frames


def _render(engine: Any, state: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
    voice_name = request["voice"]
    if state.get("voice_name") != voice_name:
        voice_id = _find_voice(engine, voice_name)
        if voice_id is None:
            # pyttsx3 accepts an unknown voice name silently and then speaks English.
            return {"ok": False, "kind": "voice_missing", "detail": voice_name}
        # Set the voice only when it changes: with pyttsx3 2.99 and espeak-ng 1.51,
        # calling SetVoiceByName before every utterance made about 1 in 100 of them
        # end at once with zero samples (measured over 300 utterances).
        engine.setProperty("voice", voice_id)
        state["voice_name"] = voice_name

    engine.setProperty("rate", int(request["rate_wpm"]))
    engine.setProperty("volume", float(request.get("volume", 1.0)))

    path = request["path"]
    last_error: ValueError | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if os.path.exists(path):
            os.remove(path)
        engine.save_to_file(request["text"], path)
        engine.runAndWait()
        try:
            frames = _check_output(path)
        except ValueError as error:
            # Even with the voice set once, about 1 utterance in 400 ended with zero
            # samples in the same setup. Running the same text again renders it.
            last_error = error
            continue
        with wave.open(path, "rb") as reader:
            sample_rate = reader.getframerate()
        return {"ok": True, "frames": frames, "sample_rate": sample_rate, "attempts": attempt}

    assert last_error is not None
    raise last_error


def main() -> int:
    protocol = _open_protocol_stream()

    try:
        import pyttsx3

        engine = pyttsx3.init("espeak")
    except (ImportError, RuntimeError, OSError) as error:
        _reply(protocol, ok=False, kind="library_missing", detail=f"{type(error).__name__}: {error}")
        return 1
    _reply(protocol, ready=True, pyttsx3_version=getattr(pyttsx3, "__version__", "unknown"))

    state: dict[str, str] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        try:
            result = _render(engine, state, request)
        except (RuntimeError, ValueError, OSError, wave.Error) as error:
            # RuntimeError covers pyttsx3's "run loop already started".
            result = {"ok": False, "kind": "failed", "detail": f"{type(error).__name__}: {error}"}
        _reply(protocol, **result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
