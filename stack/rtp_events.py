"""Test harness: RFC 4733 telephone-event captures for SIPp's ``play_pcap_audio``.

Debian's sip-tester ships one capture per digit, each with fixed RTP sequence numbers
and timestamps. Played one after another in a call, a digit whose capture has lower
numbers than the previous one looks like a late or repeated packet to Asterisk's RTP
stack and is dropped, so "8 then 5" arrives as "8". These captures are written per key
press instead, each with sequence numbers and a timestamp after those of the press
before it, in one RTP stream (one SSRC).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path

# RFC 4733 event codes for the keypad.
EVENT_CODES = {**{str(digit): digit for digit in range(10)}, "*": 10, "#": 11}

PAYLOAD_TYPE = 101  # telephone-event/8000, as the caller's SDP offers
PCMU_PAYLOAD_TYPE = 0
SAMPLE_RATE = 8000
PACKET_INTERVAL_MS = 20
END_PACKETS = 3  # RFC 4733 section 2.5.1.4: the final packet is sent three times
VOLUME_DBM0 = 10
SSRC = 0x1234ABCD

# A timestamp gap between presses larger than any single press, so events never overlap.
TIMESTAMP_STEP = 10 * SAMPLE_RATE
# Sequence numbers one key press may use: its packets, the repeated end packets and a gap.
_SEQ_PER_PRESS = 160 // PACKET_INTERVAL_MS + END_PACKETS + 5

_PCAP_GLOBAL_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # linktype 1: Ethernet
_ETHERNET = bytes(12) + b"\x08\x00"


def _ipv4_udp(payload: bytes, src_port: int = 4000, dst_port: int = 4000) -> bytes:
    udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(payload), 0) + payload
    total = 20 + len(udp)
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    return header + udp


def event_packets(digit: str, *, press_index: int, duration_ms: int = 160) -> list[bytes]:
    """Return the RTP packets of one key press, numbered after ``press_index`` earlier presses."""
    if digit not in EVENT_CODES:
        raise ValueError(f"invalid DTMF digit {digit!r}: use 0-9, * or #")
    if press_index < 0:
        raise ValueError(f"press_index must not be negative, got {press_index}")

    event = EVENT_CODES[digit]
    timestamp = (press_index + 1) * TIMESTAMP_STEP
    packets_in_event = max(duration_ms // PACKET_INTERVAL_MS, 1)
    first_seq = 1000 + press_index * max(packets_in_event + END_PACKETS + 5, _SEQ_PER_PRESS)
    step = SAMPLE_RATE * PACKET_INTERVAL_MS // 1000

    packets = []
    for number in range(packets_in_event + END_PACKETS):
        ended = number >= packets_in_event - 1
        duration = step * min(number + 1, packets_in_event)
        marker = 0x80 if number == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | PAYLOAD_TYPE, (first_seq + number) & 0xFFFF, timestamp, SSRC)
        flags = (0x80 if ended else 0) | VOLUME_DBM0
        packets.append(header + struct.pack("!BBH", event, flags, duration))
    return packets


def _ulaw(sample: int) -> int:
    """Encode one 16-bit linear sample as G.711 mu-law."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(abs(sample), 32635) + 0x84
    exponent = 7
    while exponent > 0 and not magnitude & (0x4000 >> (7 - exponent)):
        exponent -= 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def voice_packets(ms: int, *, after_presses: int, frequency_hz: float = 440.0) -> list[bytes]:
    """Return PCMU packets of a steady tone lasting ``ms``, numbered after ``after_presses`` presses.

    The tone stands in for a caller speaking, loud enough that silence detection does not
    cut it. Its sequence numbers follow the presses' in the same stream, so a key pressed
    after the tone would look late to Asterisk: a tone must be the last thing a caller sends.
    """
    if ms <= 0:
        raise ValueError(f"voice length must be positive, got {ms} ms")
    step = SAMPLE_RATE * PACKET_INTERVAL_MS // 1000
    first_seq = 1000 + (after_presses + 1) * _SEQ_PER_PRESS
    first_timestamp = (after_presses + 1) * TIMESTAMP_STEP
    packets = []
    for number in range(max(ms // PACKET_INTERVAL_MS, 1)):
        samples = bytes(_ulaw(int(8000 * math.sin(2 * math.pi * frequency_hz * (number * step + i) / SAMPLE_RATE)))
                        for i in range(step))
        marker = 0x80 if number == 0 else 0
        header = struct.pack("!BBHII", 0x80, marker | PCMU_PAYLOAD_TYPE, (first_seq + number) & 0xFFFF,
                             first_timestamp + number * step, SSRC)
        packets.append(header + samples)
    return packets


def write_event_pcap(path: Path, digit: str, *, press_index: int) -> Path:
    """Write one key press as a pcap file that SIPp's ``play_pcap_audio`` can play."""
    return _write_pcap(path, event_packets(digit, press_index=press_index))


def write_voice_pcap(path: Path, ms: int, *, after_presses: int) -> Path:
    """Write a tone of ``ms`` milliseconds as a pcap file for SIPp's ``play_pcap_audio``."""
    return _write_pcap(path, voice_packets(ms, after_presses=after_presses))


def _write_pcap(path: Path, packets: list[bytes]) -> Path:
    records = [_PCAP_GLOBAL_HEADER]
    for number, rtp in enumerate(packets):
        frame = _ETHERNET + _ipv4_udp(rtp)
        microseconds = number * PACKET_INTERVAL_MS * 1000
        records.append(struct.pack("<IIII", microseconds // 1_000_000, microseconds % 1_000_000, len(frame), len(frame)))
        records.append(frame)
    path.write_bytes(b"".join(records))
    return path
