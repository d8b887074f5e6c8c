"""The generated hold-music file: a format Asterisk plays as-is, quiet, with a silent tail."""

import wave

from hotline.hold_music import AMPLITUDE, SAMPLE_RATE_HZ, hold_tone_samples, write_hold_tone


def test_hold_tone_file_is_8khz_mono_16bit(tmp_path):
    path = write_hold_tone(tmp_path)

    assert path == tmp_path / "moh" / "hold.wav"
    with wave.open(str(path), "rb") as audio:
        assert audio.getframerate() == 8000
        assert audio.getnchannels() == 1
        assert audio.getsampwidth() == 2
        assert audio.getnframes() == 4 * SAMPLE_RATE_HZ


def test_hold_tone_is_quiet_and_fades():
    samples = hold_tone_samples()

    assert max(abs(sample) for sample in samples) <= round(AMPLITUDE * 32767)
    # Each note starts and ends at silence, so the loop never clicks.
    assert samples[0] == 0
    assert all(sample == 0 for sample in samples[-int(2.4 * SAMPLE_RATE_HZ):])
