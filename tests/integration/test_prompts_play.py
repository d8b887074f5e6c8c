"""Every built prompt plays on a real Asterisk 22: STREAM FILE reports a positive endpos.

The handler starts each file 0.1 s before its end (STREAM FILE's sample offset). The
whole catalog, slow renditions and number fragments included, is then checked in about
0.2 s per prompt while Asterisk still opens, decodes and plays every file to its last
sample. Then it plays two spoken numbers in full, fragment by fragment, through ``AgiCallPort``.
"""

import wave
from pathlib import Path

import pytest

from hwd_bridge.agi_call_port import AgiCallPort
from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.fastagi_server import FastAgiServer
from ivr.spoken_numbers import (
    FRAGMENT_IDS,
    callers_ahead_fragments,
    wait_minutes_fragments,
)
from speech.catalog import load_catalog
from stack.asterisk import AsteriskInstance, ensure_root
from stack.sipp import SippCaller

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AUDIO_DIR = REPO / "prompts" / "audio" / "zh-CN"
TAIL_SAMPLES = 800  # 0.1 s at 8 kHz


def _sound(instance: AsteriskInstance, prompt_id: str) -> str:
    """Return the file Asterisk plays for a prompt, renditions (``welcome@slow``) included.

    ``AsteriskInstance.sound_path`` accepts no ``@``, so a rendition is looked up by its base
    id and the path built next to it.
    """
    base, _, rendition = prompt_id.partition("@")
    path = instance.sound_path(base)
    assert (AUDIO_DIR / f"{prompt_id}.wav").is_file(), prompt_id
    return f"{path}@{rendition}" if rendition else path


def _samples(prompt_id: str) -> int:
    with wave.open(str(AUDIO_DIR / f"{prompt_id}.wav"), "rb") as audio:
        return audio.getnframes()


async def test_every_prompt_plays_with_endpos():
    prompt_ids = sorted(load_catalog(REPO / "prompts" / "zh-CN.yaml"))
    assert prompt_ids, "the prompt catalog is empty"
    endpos: dict[str, int] = {}
    instance_holder: list[AsteriskInstance] = []
    # 您前面还有两位来电者在等待，预计还需等待十五分钟, at the slow rendition.
    spoken = [f"{fragment}@slow" for fragment in callers_ahead_fragments(2) + wait_minutes_fragments(15)]
    sequence_offsets: list[int] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        instance = instance_holder[0]
        await channel.answer()
        for prompt_id in prompt_ids:
            start = max(_samples(prompt_id) - TAIL_SAMPLES, 0)
            reply = await channel.run_command("STREAM FILE", _sound(instance, prompt_id), "", start,
                                              minus_one_is_failure=False)
            endpos[prompt_id] = reply.endpos or 0

        port = AgiCallPort(channel, lambda prompt_id: _sound(instance, prompt_id))
        for fragment in spoken:
            result = await port.play_prompt(fragment)
            sequence_offsets.append(result.offset_samples if result.played else -1)
        await channel.hangup()

    async with FastAgiServer({"ivr/12349": handler}) as server:
        instance = AsteriskInstance.with_free_ports("prompts", root=ensure_root(), fastagi_port=server.port,
                                                    prompt_dir=AUDIO_DIR)
        instance_holder.append(instance)
        await instance.start_async()
        try:
            # About 0.2 s per prompt tail plus the two numbers in full: the caller waits far longer
            # for the BYE than SIPp's default 30 s.
            results = await SippCaller(target_port=instance.sip_port, caller_number="13900000099",
                                      wait_bye_timeout_ms=150_000).run_async(timeout_s=180)
        finally:
            await instance.stop_async(remove_files=True)

    assert results[0].answered
    assert FRAGMENT_IDS | {f"{fragment}@slow" for fragment in FRAGMENT_IDS} <= set(prompt_ids)
    assert sorted(endpos) == prompt_ids
    for prompt_id in prompt_ids:
        assert endpos[prompt_id] >= _samples(prompt_id) - 1, f"{prompt_id}: endpos {endpos[prompt_id]}"
    for fragment, offset in zip(spoken, sequence_offsets, strict=True):
        assert offset >= _samples(fragment) - 1, f"{fragment}: offset {offset}"
