"""Every built prompt plays on a real Asterisk 22: STREAM FILE reports a positive endpos.

The handler starts each file 0.1 s before its end (STREAM FILE's sample offset), so the
whole catalog is checked in a few seconds while Asterisk still opens, decodes and plays
every file to its last sample.
"""

import asyncio
import wave
from pathlib import Path

import pytest

from hwd_bridge.agi_channel import AgiChannel
from hwd_bridge.agi_protocol import AgiEnvironment
from hwd_bridge.fastagi_server import FastAgiServer
from speech.catalog import load_catalog
from stack.asterisk import AsteriskInstance, ensure_root
from stack.sipp import SippCaller

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AUDIO_DIR = REPO / "prompts" / "audio" / "zh-CN"
TAIL_SAMPLES = 800  # 0.1 s at 8 kHz


def _samples(prompt_id: str) -> int:
    with wave.open(str(AUDIO_DIR / f"{prompt_id}.wav"), "rb") as audio:
        return audio.getnframes()


async def test_every_prompt_plays_with_endpos():
    prompt_ids = sorted(load_catalog(REPO / "prompts" / "zh-CN.yaml"))
    assert prompt_ids, "the prompt catalog is empty"
    endpos: dict[str, int] = {}
    instance_holder: list[AsteriskInstance] = []

    async def handler(env: AgiEnvironment, channel: AgiChannel) -> None:
        instance = instance_holder[0]
        await channel.answer()
        for prompt_id in prompt_ids:
            start = max(_samples(prompt_id) - TAIL_SAMPLES, 0)
            reply = await channel.run_command("STREAM FILE", instance.sound_path(prompt_id), "", start,
                                              minus_one_is_failure=False)
            endpos[prompt_id] = reply.endpos or 0
        await channel.hangup()

    async with FastAgiServer({"ivr/12349": handler}) as server:
        instance = AsteriskInstance.with_free_ports("prompts", root=ensure_root(), fastagi_port=server.port,
                                                    prompt_dir=AUDIO_DIR)
        instance_holder.append(instance)
        await instance.start_async()
        try:
            results = await SippCaller(target_port=instance.sip_port, caller_number="13900000099").run_async(timeout_s=60)
        finally:
            await instance.stop_async(remove_files=True)

    assert results[0].answered
    assert sorted(endpos) == prompt_ids
    for prompt_id in prompt_ids:
        assert endpos[prompt_id] >= _samples(prompt_id) - 1, f"{prompt_id}: endpos {endpos[prompt_id]}"
