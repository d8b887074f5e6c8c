"""``hotline sla check`` and ``hotline sla calendar`` against a real SQLite ticket store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner
from rich.console import Console

from hotline.commands.sla import sla
from storage.ticket_store import TicketStore
from tickets.model import CHINA_TZ, TicketCategory

RULES = Path(__file__).resolve().parents[2] / "config" / "sla.yaml"
NODE = "city-330100"


@pytest.fixture(autouse=True)
def reset_logging() -> Iterator[None]:
    """Undo the CLI's logging configuration, which points at the runner's temporary stderr."""
    yield
    structlog.reset_defaults()


def cst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ).astimezone(timezone.utc)


async def seed(database: Path) -> dict[str, str]:
    """Open four tickets on 2025-10-09: late, nearly late, resolved in time, and cancelled."""
    async with await TicketStore.open(database, NODE, "330100") as store:
        late = await store.open_ticket(None, TicketCategory.LINSHI, "139****0001", cst(2025, 10, 9, 9), "agent-1001")
        near = await store.open_ticket(None, TicketCategory.LINSHI, "139****0002", cst(2025, 10, 9, 9, 40), "agent-1001")
        answered = await store.open_ticket(None, TicketCategory.ZHENGCE, "139****0003", cst(2025, 10, 9, 9, 50), "agent-1002")
        closed = await store.open_ticket(None, TicketCategory.LINSHI, "139****0004", cst(2025, 10, 9, 8), "agent-1002")
        await store.apply_action(answered.ticket_id, "answer_directly", "agent-1002", note="已在电话中解答低保申请条件",
                                 occurred_at=cst(2025, 10, 9, 9, 51))
        await store.apply_action(closed.ticket_id, "cancel", "agent-1002", reason="entered_in_error",
                                 occurred_at=cst(2025, 10, 9, 8, 5))
    return {"late": late.ticket_id, "near": near.ticket_id, "answered": answered.ticket_id, "closed": closed.ticket_id}


@pytest.fixture
def node(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    database = tmp_path / "city.db"
    ids = asyncio.run(seed(database))
    config = tmp_path / "city.yaml"
    config.write_text(
        f"node_id: {NODE}\ntier: city\nregion_code: '330100'\ndatabase: {database}\nbroker:\n  port: 1883\n",
        encoding="utf-8",
    )
    return config, ids


class TestSlaCheck:
    def test_lists_breach_and_warning(self, node: tuple[Path, dict[str, str]]) -> None:
        config, ids = node
        result = CliRunner(env={"COLUMNS": "250"}).invoke(
            sla, ["check", "--config", str(config), "--rules", str(RULES), "--at", "2025-10-09T10:30"],
        )
        assert result.exit_code == 0, result.output
        assert "共 3 张未归档工单；1 个阶段预警，1 个阶段已超时（督办候选）。" in result.output
        assert f"督办候选：工单 {ids['late']} 的转出阶段应于 2025-10-09 10:00 前完成，已超时。" in result.output
        assert ids["near"] in result.output
        assert "预警：已用 83%" in result.output
        assert ids["closed"] not in result.output

    def test_before_any_deadline(self, node: tuple[Path, dict[str, str]]) -> None:
        config, _ids = node
        result = CliRunner(env={"COLUMNS": "250"}).invoke(
            sla, ["check", "--config", str(config), "--rules", str(RULES), "--at", "2025-10-09T09:05+08:00"],
        )
        assert result.exit_code == 0, result.output
        assert "0 个阶段预警，0 个阶段已超时" in result.output

    def test_bad_time(self, node: tuple[Path, dict[str, str]]) -> None:
        config, _ids = node
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["check", "--config", str(config), "--rules", str(RULES), "--at", "tomorrow"])
        assert result.exit_code == 2
        assert "时间“tomorrow”格式不对" in result.output

    def test_bad_rules_file(self, node: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
        config, _ids = node
        rules = tmp_path / "sla.yaml"
        rules.write_text("rules:\n  - {phase: callback, limit: 0, unit: working_days}\n", encoding="utf-8")
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["check", "--config", str(config), "--rules", str(rules)])
        assert result.exit_code == 2
        assert f"{rules}:2: 时限 limit 的值“0”无效" in result.output


class TestSlaCalendar:
    def test_covered_year(self) -> None:
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["calendar", "2025", "--rules", str(RULES)])
        assert result.exit_code == 0, result.output
        assert "2025 年：软件包已收录国务院办公厅的节假日安排。" in result.output
        assert "2025-10-11" in result.output
        assert "调休上班" in result.output
        assert "2025 年共 248 个工作日、117 个休息日。" in result.output

    def test_uncovered_year(self) -> None:
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["calendar", "2099", "--rules", str(RULES)])
        assert result.exit_code == 0, result.output
        assert "2099 年：没有节假日数据" in result.output
        assert "个休息日（暂定）。" in result.output

    def test_override_shown(self, tmp_path: Path) -> None:
        (tmp_path / "calendar-overrides.yaml").write_text(
            "days:\n  2025-03-10: {kind: day_off, name: 台风停工, source: 市政府通告}\n", encoding="utf-8"
        )
        rules = tmp_path / "sla.yaml"
        rules.write_text(RULES.read_text(encoding="utf-8"), encoding="utf-8")
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["calendar", "2025", "--rules", str(rules)])
        assert result.exit_code == 0, result.output
        assert "台风停工" in result.output
        assert "休息日（本地调整）" in result.output
        assert "2025 年共 247 个工作日" in result.output


class TestSlaFilesAndWidth:
    def test_missing_rules_outside_checkout(self, node: tuple[Path, dict[str, str]], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
        config, _ids = node
        monkeypatch.chdir(tmp_path)
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["check", "--config", str(config)])
        assert result.exit_code == 2
        assert "找不到时限规则表 config/sla.yaml" in result.stderr
        assert "--rules" in result.stderr
        assert "sla.yaml:1" not in result.stderr

    def test_missing_rules_for_calendar(self, tmp_path: Path) -> None:
        missing = tmp_path / "nowhere" / "sla.yaml"
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["calendar", "2025", "--rules", str(missing)])
        assert result.exit_code == 2
        assert f"找不到时限规则表 {missing}" in result.stderr
        assert ":1:" not in result.stderr

    def test_missing_overrides_file(self, node: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
        config, _ids = node
        # The copied rules name calendar-overrides.yaml beside them, which tmp_path does not have.
        rules = tmp_path / "sla.yaml"
        rules.write_text(RULES.read_text(encoding="utf-8"), encoding="utf-8")
        result = CliRunner(env={"COLUMNS": "250"}).invoke(sla, ["check", "--config", str(config), "--rules", str(rules)])
        assert result.exit_code == 2
        assert f"找不到日历调整文件 {tmp_path / 'calendar-overrides.yaml'}" in result.stderr
        assert ":1:" not in result.stderr

    @pytest.mark.parametrize("width", [100, 80])
    def test_check_fits_console(self, node: tuple[Path, dict[str, str]], width: int) -> None:
        config, ids = node
        result = CliRunner(env={"COLUMNS": str(width)}).invoke(
            sla, ["check", "--config", str(config), "--rules", str(RULES), "--at", "2025-10-09T10:30"],
        )
        assert result.exit_code == 0, result.output
        table = result.stdout.split("共 3 张未归档工单")[0]
        assert "…" not in table
        for line in table.splitlines():
            assert Console(width=300).measure(line).maximum <= width, line
        for ticket_id in (ids["late"], ids["near"], ids["answered"]):
            assert ticket_id in table
        assert "2025-10-09 10:00" in table
