"""Domain: the speech recogniser a flow may ask, and how its answer maps to a menu choice.

A menu node can accept a spoken answer as well as a key. The caller's answer reaches the
recogniser as a recording made by the switch (RECORD FILE), and the recogniser is bound
to the node's word list (for example 低保、临时救助、人工), so it can only return one of
those words or nothing. Without a recogniser the flow uses keys only, and a recogniser
error never ends a call: the menu falls back to its keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from ivr.ports import RecordingResult

# Vosk's token for speech outside the word list.
UNKNOWN_WORD = "[unk]"


class RecognizerError(Exception):
    """The recogniser could not give an answer (worker crashed, timed out or rejected the audio)."""


class RecognizerUnavailable(RecognizerError):
    """No usable model: the path is missing or wrong, or the model failed to load.

    The message is for operators, in Chinese, and names the path and the fix.
    """


class RecognizerTimeout(RecognizerError):
    """The recogniser took longer than its time limit for one recording."""


@dataclass(frozen=True, slots=True)
class Recognition:
    """What the recogniser heard in one recording.

    ``text`` is the recogniser's raw output restricted to the word list and ``[unk]``;
    ``word`` is the word-list entry it contains, or None when the caller said something
    else or nothing. ``elapsed_ms`` is the recognition time in the worker.
    """

    text: str
    word: str | None
    elapsed_ms: int = 0


class SpeechRecognizer(Protocol):
    """A recogniser that hears one recorded answer against a word list."""

    async def recognize(self, recording: Path, words: Sequence[str]) -> Recognition:
        """Recognise ``recording`` (a mono 16-bit WAV) against ``words``.

        Raises ``RecognizerTimeout`` past the time limit, ``RecognizerUnavailable``
        without a model, and ``RecognizerError`` for other failures.
        """
        ...


@runtime_checkable
class AnswerRecorder(Protocol):
    """A call port that can record a short spoken answer (the FastAGI port does, with RECORD FILE).

    It is separate from ``CallPort`` so ports without recording keep satisfying that protocol.
    """

    async def record_answer(self, name: str, *, max_seconds: int, silence_s: int = 1) -> RecordingResult:
        """Record after a beep until ``silence_s`` of silence, ``#`` or ``max_seconds``."""
        ...


def match_word(text: str, words: Sequence[str]) -> str | None:
    """Return the entry of ``words`` that ``text`` contains, or None.

    Spaces are ignored, because Mandarin models return words separated by spaces
    (``临时 救助``). When several entries occur, the longest wins, so 临时救助 beats
    救助. ``[unk]`` never matches.
    """
    heard = text.replace(UNKNOWN_WORD, " ").replace(" ", "")
    if not heard:
        return None
    found = [word for word in words if word.replace(" ", "") and word.replace(" ", "") in heard]
    if not found:
        return None
    return max(found, key=lambda word: len(word.replace(" ", "")))


def choice_for(recognition: Recognition, choices: Mapping[str, str]) -> str | None:
    """Return the menu key that the recognised word stands for, or None.

    ``choices`` maps each spoken word to the key a caller would press for it (人工 to
    ``0``), so a spoken answer takes the same path through the flow as the key.
    """
    if recognition.word is None:
        return None
    return choices.get(recognition.word)
