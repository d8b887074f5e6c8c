"""Application: the queue's music on hold, a soft tone written as an 8 kHz WAV file.

Asterisk's ``res_musiconhold`` plays every file of a class's folder in turn (mode
``files``, see asterisk-conf/templates/musiconhold.conf). The hotline ships no recorded
music, so the class folder contains one generated file: two quiet notes, then silence,
which Asterisk loops while the caller waits.
"""

from __future__ import annotations

import math
import struct
import wave
from pathlib import Path

# Folder under the prompt folder (and so under the instance's sounds) that the class reads.
HOLD_MUSIC_FOLDER = "moh"
HOLD_MUSIC_FILE = "hold.wav"
# The class name the flow's queue node names in ``hold_music``.
DEFAULT_CLASS = "default"

SAMPLE_RATE_HZ = 8000
# Notes C5 and E5, each 0.8 s with raised-cosine fades, then 2.4 s of silence: a 4 s loop.
NOTES_HZ = (523.25, 659.25)
NOTE_S = 0.8
FADE_S = 0.1
SILENCE_S = 2.4
# About -20 dBFS: audible but well below the level of the prompts.
AMPLITUDE = 0.1


def hold_tone_samples() -> list[int]:
    """Return the loop's 16-bit samples."""
    samples: list[int] = []
    note_samples = int(NOTE_S * SAMPLE_RATE_HZ)
    fade_samples = int(FADE_S * SAMPLE_RATE_HZ)
    for frequency in NOTES_HZ:
        for index in range(note_samples):
            edge = min(index, note_samples - 1 - index)
            envelope = 0.5 - 0.5 * math.cos(math.pi * edge / fade_samples) if edge < fade_samples else 1.0
            value = AMPLITUDE * envelope * math.sin(2 * math.pi * frequency * index / SAMPLE_RATE_HZ)
            samples.append(round(value * 32767))
    samples.extend([0] * int(SILENCE_S * SAMPLE_RATE_HZ))
    return samples


def write_hold_tone(prompt_dir: Path) -> Path:
    """Write ``<prompt_dir>/moh/hold.wav`` (8 kHz mono 16-bit PCM) and return its path."""
    folder = prompt_dir / HOLD_MUSIC_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / HOLD_MUSIC_FILE
    samples = hold_tone_samples()
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(SAMPLE_RATE_HZ)
        audio.writeframes(struct.pack(f"<{len(samples)}h", *samples))
    return path
