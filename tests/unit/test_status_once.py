"""``hotline status --once`` exits non-zero when the controller's published status is stale or missing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from acd.status import build_status
from hotline.commands.acd import NODE_STALE_S
from hotline.commands.status import STALE_EXIT_CODE, _show, is_stale, status
from storage.acd_store import AcdStore, acd_path
from tests.unit.test_ticket_lifecycle_cli import write_config

# 2026-12-05 10:00 in Beijing.
PUBLISHED = datetime(2026, 12, 5, 2, 0, tzinfo=UTC)
COUNTY = "county-330106"


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


async def _publish(path: Path, published_at: datetime | None) -> None:
    async with await AcdStore.open(path) as store:
        if published_at is not None:
            await store.publish_status(build_status(COUNTY, published_at, [], {}, []))


def _node(tmp_path: Path, published_at: datetime | None) -> tuple[Path, Path]:
    config = write_config(tmp_path, COUNTY, "county", "330106")
    path = acd_path(tmp_path / f"{COUNTY}.db")
    asyncio.run(_publish(path, published_at))
    return config, path


def test_is_stale_threshold() -> None:
    fresh = build_status(COUNTY, PUBLISHED, [], {}, [])
    assert not is_stale(fresh, PUBLISHED + timedelta(seconds=NODE_STALE_S))
    assert is_stale(fresh, PUBLISHED + timedelta(seconds=NODE_STALE_S + 1))
    assert is_stale(None, PUBLISHED)


def test_once_fresh_status(tmp_path: Path) -> None:
    _, path = _node(tmp_path, PUBLISHED)
    stale = asyncio.run(_show(path, True, lambda: PUBLISHED + timedelta(seconds=1)))
    assert stale is False


def test_once_stale_status(tmp_path: Path) -> None:
    _, path = _node(tmp_path, PUBLISHED)
    stale = asyncio.run(_show(path, True, lambda: PUBLISHED + timedelta(seconds=104)))
    assert stale is True


def test_cli_stale_exit_code(tmp_path: Path) -> None:
    # Published at a fixed past moment, so the status is stale at any real time after it.
    config, _ = _node(tmp_path, PUBLISHED)
    result = CliRunner(env={"COLUMNS": "100"}).invoke(status, ["--config", str(config), "--once"])
    assert result.exit_code == STALE_EXIT_CODE, result.output
    assert "可能已停止" in result.stdout


def test_cli_missing_status_exit_code(tmp_path: Path) -> None:
    config, _ = _node(tmp_path, None)
    result = CliRunner(env={"COLUMNS": "100"}).invoke(status, ["--config", str(config), "--once"])
    assert result.exit_code == STALE_EXIT_CODE, result.output
    assert "还没有发布过坐席状态" in result.stdout


def test_cli_fresh_exit_zero(tmp_path: Path) -> None:
    # The CLI reads the real clock, so this status is published just before the command runs.
    config, _ = _node(tmp_path, datetime.now(UTC))
    result = CliRunner(env={"COLUMNS": "100"}).invoke(status, ["--config", str(config), "--once"])
    assert result.exit_code == 0, result.output
    assert "可能已停止" not in result.stdout


def test_help_names_exit_code() -> None:
    result = CliRunner().invoke(status, ["--help"])
    # click wraps the help text, so compare with the line breaks removed.
    text = " ".join(result.stdout.split())
    assert f"{STALE_EXIT_CODE} 仅用于 --once" in text
