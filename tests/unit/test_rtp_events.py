"""RFC 4733 key-press captures: every press follows the previous one in sequence and time."""

import struct

import pytest

from stack.rtp_events import END_PACKETS, SSRC, event_packets, voice_packets, write_event_pcap
from stack.sipp import Dtmf, Voice, build_caller_scenario


def _fields(packet: bytes) -> tuple[int, int, int, int, int, int, int]:
    _, marker_pt, seq, timestamp, ssrc = struct.unpack("!BBHII", packet[:12])
    event, flags, duration = struct.unpack("!BBH", packet[12:16])
    return marker_pt, seq, timestamp, ssrc, event, flags, duration


def test_press_has_marker_then_three_end_packets():
    packets = [_fields(p) for p in event_packets("5", press_index=0)]

    assert packets[0][0] == 0x80 | 101
    assert all(p[0] == 101 for p in packets[1:])
    assert sum(1 for p in packets if p[5] & 0x80) == END_PACKETS + 1
    assert {p[4] for p in packets} == {5}
    assert {p[2] for p in packets} == {packets[0][2]}
    assert {p[3] for p in packets} == {SSRC}


def test_later_press_has_higher_numbers():
    """A later press must not look like a late packet of an earlier one (8 then 5)."""
    first = [_fields(p) for p in event_packets("8", press_index=0)]
    second = [_fields(p) for p in event_packets("5", press_index=1)]

    assert second[0][1] > first[-1][1]
    assert second[0][2] > first[0][2]


def test_star_and_pound_codes():
    assert _fields(event_packets("*", press_index=0)[0])[4] == 10
    assert _fields(event_packets("#", press_index=0)[0])[4] == 11


def test_invalid_digit_rejected():
    with pytest.raises(ValueError, match="invalid DTMF digit 'A'"):
        event_packets("A", press_index=0)


def test_pcap_file_layout(tmp_path):
    path = write_event_pcap(tmp_path / "p.pcap", "1", press_index=2)
    data = path.read_bytes()

    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4
    assert linktype == 1
    _, _, incl, orig = struct.unpack("<IIII", data[24:40])
    assert incl == orig == 14 + 20 + 8 + 16


def test_voice_follows_the_presses_in_the_same_stream():
    """A tone after three presses continues their stream: same SSRC, higher numbers, PCMU."""
    last_press = [_fields(p) for p in event_packets("1", press_index=2)]
    voice = voice_packets(1000, after_presses=3)

    headers = [struct.unpack("!BBHII", packet[:12]) for packet in voice]
    assert len(voice) == 50
    assert headers[0][1] == 0x80  # marker bit, payload type 0 (PCMU)
    assert {h[4] for h in headers} == {SSRC}
    assert headers[0][2] > max(p[1] for p in last_press)
    assert headers[0][3] > last_press[0][2]
    assert [h[2] for h in headers] == list(range(headers[0][2], headers[0][2] + 50))
    assert all(len(packet) == 12 + 160 for packet in voice)


def test_voice_is_a_tone_not_silence():
    """Mu-law silence is 0xFF; a tone swings far from it in every packet."""
    for packet in voice_packets(200, after_presses=0):
        samples = packet[12:]
        assert len(set(samples)) > 10


def test_caller_scenario_refuses_keys_after_the_tone(tmp_path):
    with pytest.raises(ValueError, match="after its last key press"):
        build_caller_scenario(caller_number="13900000001", steps=[Voice(500), Dtmf("1")], hangup_after_ms=None,
                              wait_bye_timeout_ms=1000, pcap_dir=tmp_path)


def test_caller_scenario_plays_the_tone(tmp_path):
    scenario = build_caller_scenario(caller_number="13900000001", steps=[Dtmf("3"), Voice(500)],
                                     hangup_after_ms=None, wait_bye_timeout_ms=1000, pcap_dir=tmp_path)

    assert f'play_pcap_audio="{tmp_path / "voice1.pcap"}"' in scenario
    assert (tmp_path / "voice1.pcap").stat().st_size > 25 * 172
