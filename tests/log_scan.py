"""Scanner for personal numbers in log text: resident ID numbers and mainland phone numbers.

``tests/conftest.py`` runs it over every log the integration tests write. Patterns:

- an 18-character resident ID number (GB 11643): a plausible birth date and a matching
  check character, so random 18-digit runs do not count;
- a 15-digit first-generation ID number with a plausible birth date;
- a mainland mobile number, 1[3-9] and nine more digits, optionally after +86 or 0086;
- a landline with its area code: 010, 02X or a three-digit code after 0, then 7 or 8
  digits, optionally with a hyphen.

A match must not touch a letter or digit on either side, so runs inside hex digests,
call ids and timestamps do not count. Hits are reported masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from hotline.privacy import mask_id_number, mask_phone
from profiles.id_number import check_character

_EDGE_BEFORE = r"(?<![0-9A-Za-z])"
_EDGE_AFTER = r"(?![0-9A-Za-z])"
_DATE = r"(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"

PATTERNS: dict[str, re.Pattern[str]] = {
    "id_number_18": re.compile(_EDGE_BEFORE + r"([1-9][0-9]{5}(?:18|19|20)[0-9]{2}" + _DATE + r"[0-9]{3}[0-9Xx])"
                               + _EDGE_AFTER),
    "id_number_15": re.compile(_EDGE_BEFORE + r"([1-9][0-9]{5}[0-9]{2}" + _DATE + r"[0-9]{3})" + _EDGE_AFTER),
    "mobile": re.compile(_EDGE_BEFORE + r"(?:\+?86|0086)?(1[3-9][0-9]{9})" + _EDGE_AFTER),
    "landline": re.compile(_EDGE_BEFORE + r"(0(?:10|2[0-9]|[3-9][0-9]{2})-?[0-9]{7,8})" + _EDGE_AFTER),
}

# Files the integration stack writes as logs: SIPp traces, Asterisk and mosquitto logs,
# node logs and console captures. Databases, audio and scenario inputs are not logs.
LOG_SUFFIXES = frozenset({".log", ".out", ".err", ".txt"})
LOG_NAMES = frozenset({"messages", "full", "console", "queue_log"})
MAX_SCANNED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Hit:
    """One personal number found in a log, already masked."""

    source: str
    line: int
    kind: str
    masked: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.kind} {self.masked}"


def _valid_id_18(value: str) -> bool:
    return check_character(value[:17]) == value[17].upper()


def _mask(kind: str, value: str) -> str:
    return mask_id_number(value) if kind.startswith("id_number") else mask_phone(value.replace("-", ""))


def scan_text(text: str, source: str) -> list[Hit]:
    """Return every personal number in ``text``, with 1-based line numbers."""
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(line):
                value = match.group(1)
                if kind == "id_number_18" and not _valid_id_18(value):
                    continue
                hits.append(Hit(source, number, kind, _mask(kind, value)))
    return hits


def is_log_file(path: Path) -> bool:
    return path.suffix.lower() in LOG_SUFFIXES or path.name.lower() in LOG_NAMES


def log_files(roots: Iterable[Path]) -> Iterator[Path]:
    """Yield every log file under ``roots``, in sorted order."""
    for root in roots:
        if root.is_file():
            yield root
            continue
        if root.is_dir():
            yield from sorted(path for path in root.rglob("*") if path.is_file() and is_log_file(path))


def scan_files(paths: Iterable[Path]) -> list[Hit]:
    """Scan log files as text (bytes that are not UTF-8 are replaced); the first 64 MiB of each."""
    hits = []
    for path in paths:
        with path.open("rb") as handle:
            data = handle.read(MAX_SCANNED_BYTES)
        hits.extend(scan_text(data.decode("utf-8", errors="replace"), str(path)))
    return hits
