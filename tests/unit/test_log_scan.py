"""Log scanner: finds planted ID and phone numbers, ignores look-alikes, and fails an integration session."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles.synthetic import synthetic_id_for_index
from tests.log_scan import log_files, scan_files, scan_text

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parents[2]
SYNTHETIC_ID = synthetic_id_for_index(7, "330106")


@pytest.mark.parametrize(("line", "kind"), [
    (f"caller id={SYNTHETIC_ID} entered", "id_number_18"),
    ("legacy 330106491231002 found", "id_number_15"),
    ("from sip:13900000041@127.0.0.1", "mobile"),
    ("number=+8613900000041", "mobile"),
    ("callback 021-55501234 requested", "landline"),
    ("callback 057188001234", "landline"),
])
def test_planted_number_found(line: str, kind: str):
    hits = scan_text(f"first line\n{line}\n", "node.log")

    assert [(hit.line, hit.kind) for hit in hits] == [(2, kind)]
    assert "node.log:2" in str(hits[0])


def test_hit_is_masked():
    hits = scan_text(f"id {SYNTHETIC_ID} mobile 13900000041", "node.log")

    assert len(hits) == 2
    assert SYNTHETIC_ID not in str(hits)
    assert "13900000041" not in str(hits)
    assert "139****0041" in str(hits)


@pytest.mark.parametrize("line", [
    "flow_version=4d2e13900000041f3a",  # digits inside a hex digest
    "call_id=1700000000.42 uniqueid=1733356800.123",
    "at 2026-12-05T00:44:12.123456+00:00 elapsed_ms=13900",
    "caller=139****0041 id=3***************12",
    SYNTHETIC_ID[:17] + ("0" if SYNTHETIC_ID[17] != "0" else "1"),  # wrong check character
    "ticket 330106-20261204-0001 seq=3",
])
def test_look_alikes_ignored(line: str):
    assert scan_text(line, "node.log") == []


def test_log_files_chosen_by_name(tmp_path: Path):
    for name in ("county.log", "caller_errors.log", "console.out", "messages", "county.sqlite3", "prompt.wav",
                 "scenario.xml", "calls.csv"):
        (tmp_path / name).write_text(f"13900000041 {name}\n", encoding="utf-8")

    found = sorted(path.name for path in log_files([tmp_path]))

    assert found == ["caller_errors.log", "console.out", "county.log", "messages"]
    assert len(scan_files(log_files([tmp_path]))) == 4


def test_session_fails_on_leaked_number(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """An integration test whose process writes a phone number to a log file fails the whole session."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makepyfile(test_leak="""
        import pytest

        @pytest.mark.integration
        def test_writes_log(tmp_path):
            (tmp_path / "county.log").write_text("ok\\ncaller 13900000041 answered\\n", encoding="utf-8")

        def test_unit_log_not_scanned(tmp_path):
            (tmp_path / "unit.log").write_text("13900000042\\n", encoding="utf-8")
    """)
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*1 ID or phone numbers in clear*", "*county.log:2: mobile 139****0041*"])
    assert "13900000041" not in result.stdout.str()
    assert "0042" not in result.stdout.str()


def test_leak_in_last_test_found(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """The session's last test tears down the scanning fixture; its own folders are still scanned."""
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makepyfile(test_leak_last="""
        import pytest

        def test_unit_first(tmp_path):
            (tmp_path / "unit.log").write_text("ok\\n", encoding="utf-8")

        @pytest.mark.integration
        def test_writes_log_last(tmp_path):
            (tmp_path / "county.log").write_text("caller 13900000043 answered\\n", encoding="utf-8")
    """)
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*county.log:1: mobile 139****0043*"])


def test_clean_integration_session_passes(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    pytester.makeconftest((REPO / "tests" / "conftest.py").read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\nmarkers =\n    integration: real processes\n")
    pytester.makepyfile(test_clean="""
        import pytest

        @pytest.mark.integration
        def test_writes_log(tmp_path):
            (tmp_path / "county.log").write_text("caller 139****0041 answered\\n", encoding="utf-8")
            print("structlog line call_id=1700000000.42")
    """)
    monkeypatch.setenv("PYTHONPATH", str(REPO))

    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")

    result.assert_outcomes(passed=1)
