"""Shared set-up for the unit tests."""

from __future__ import annotations

import logging

import pytest
import structlog


@pytest.fixture(autouse=True)
def terminal_size_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Remove COLUMNS and LINES, so CLI output has the same width with and without pytest-xdist.

    pytest-xdist 3.8 workers run with COLUMNS=80 and LINES=24 in their environment, which a
    serial run does not have, and the CLI sizes piped output from COLUMNS. A test that needs a
    width sets it with ``CliRunner(env={"COLUMNS": ...})``.
    """
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)


@pytest.fixture
def quiet_pool() -> None:
    """Keep only warnings from structlog: the ACD pool logs every state change at INFO.

    The session-wide fixture in tests/conftest.py puts the set-up back after the test.
    """
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
