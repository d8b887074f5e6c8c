"""The end of ``hotline demo``: the id table and the next-step commands built from the call reports."""

from __future__ import annotations

import io
import shlex
from datetime import UTC, datetime
from pathlib import Path

from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console

from hotline.cli import main
from hotline.commands.demo import _ids_table, _summary_table, next_steps
from hotline.demo import CallReport, ScriptedCall
from stack.sipp import CallerResult, Dtmf, EndedBy, Pause
from tickets.call_record import CallOutcome, CallRecord
from tickets.model import Ticket, TicketCategory, TicketState

AT = datetime(2026, 12, 5, 7, 11, tzinfo=UTC)
REPO = Path("/srv/hotline")
COUNTY_CONFIG = REPO / "var" / "demo" / "county.yaml"
CITY_CONFIG = REPO / "var" / "demo" / "city.yaml"


def _script(label: str, number: str | None, digit: str | None, outcome: CallOutcome, expects_ticket: bool) -> ScriptedCall:
    steps = (Pause(9000), Dtmf(digit)) if digit else ()
    return ScriptedCall(label, number, steps, None, outcome, None, None, expects_ticket)


def _ticket(ticket_id: str, call_id: str) -> Ticket:
    return Ticket(ticket_id, "county-330106", "330106", TicketCategory.DIBAO, TicketState.NEW, "139****0001",
                  call_id, AT, AT, 4)


def _report(call_id: str, *, agent_id: str | None, ticket_id: str | None, at_city: bool,
            outcome: CallOutcome = CallOutcome.ANSWERED, label: str = "按1 低保") -> CallReport:
    script = _script(label, "13900000001", "1", outcome, ticket_id is not None)
    record = CallRecord(call_id=call_id, caller_raw="13900000001", caller_masked="139****0001",
                        caller_flags=frozenset(), dialed="12349", started_at=AT,
                        path=("welcome", "main_menu", "chose_dibao", "to_agent", "survey", "finished"),
                        agent_id=agent_id, outcome=outcome, ticket_id=ticket_id)
    county = _ticket(ticket_id, call_id) if ticket_id else None
    city = county if at_city else None
    return CallReport(script, CallerResult(call_id, True, True, EndedBy.REMOTE, 16), record, county, city)


def _render(table: object, width: int = 100) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(table)
    return console.export_text()


def test_commands_name_real_ids():
    reports = [
        _report("1796454948.10", agent_id=None, ticket_id=None, at_city=False, outcome=CallOutcome.ABANDONED_IN_MENU),
        _report("1796454669.0", agent_id="agent2", ticket_id="330106-20261205-0001", at_city=True),
    ]

    steps = next_steps(reports, COUNTY_CONFIG, CITY_CONFIG, hotline_command=".venv/bin/hotline", cwd=REPO)

    assert [step.command for step in steps] == [
        ".venv/bin/hotline tickets list --config var/demo/county.yaml",
        ".venv/bin/hotline tickets show 330106-20261205-0001 --config var/demo/city.yaml",
        ".venv/bin/hotline acd explain 1796454669.0 --config var/demo/county.yaml",
        ".venv/bin/hotline acd events agent2 --config var/demo/county.yaml",
    ]
    assert "330106-20261205-0001" in steps[1].purpose
    assert "agent2" in steps[2].purpose


def test_commands_parse_as_cli():
    reports = [_report("1796454669.0", agent_id="agent1", ticket_id="330106-20261205-0001", at_city=True)]

    steps = next_steps(reports, COUNTY_CONFIG, CITY_CONFIG, hotline_command="hotline", cwd=REPO)

    # Each command names a real subcommand with valid options: --help stops click after parsing.
    for step in steps:
        words = shlex.split(step.command)
        assert words[0] == "hotline"
        result = CliRunner().invoke(main, [*words[1:], "--help"])
        assert result.exit_code == 0, (step.command, result.output)


def test_ticket_missing_at_city_leaves_show_out():
    reports = [_report("1796454669.0", agent_id="agent1", ticket_id="330106-20261205-0001", at_city=False)]

    commands = [step.command for step in next_steps(reports, COUNTY_CONFIG, CITY_CONFIG,
                                                    hotline_command="hotline", cwd=REPO)]

    assert not any(" tickets show " in command for command in commands)
    assert any(" acd explain 1796454669.0 " in command for command in commands)


def test_no_answered_call_leaves_acd_out():
    reports = [_report("1796454948.10", agent_id=None, ticket_id=None, at_city=False,
                       outcome=CallOutcome.ABANDONED_IN_MENU)]

    commands = [step.command for step in next_steps(reports, COUNTY_CONFIG, CITY_CONFIG,
                                                    hotline_command="hotline", cwd=REPO)]

    assert commands == ["hotline tickets list --config var/demo/county.yaml"]


def test_paths_outside_cwd_absolute_and_quoted():
    config = Path("/data/演示 数据/county.yaml")
    reports = [_report("1796454669.0", agent_id="agent1", ticket_id="330106-20261205-0001", at_city=True)]

    steps = next_steps(reports, config, config.with_name("city.yaml"), hotline_command="hotline", cwd=REPO)

    assert steps[0].command == "hotline tickets list --config '/data/演示 数据/county.yaml'"
    assert shlex.split(steps[0].command)[-1] == str(config)


def test_ids_table_shows_both_tiers():
    reports = [
        _report("1796454669.0", agent_id="agent1", ticket_id="330106-20261205-0001", at_city=True),
        _report("1796454728.2", agent_id="agent1", ticket_id="330106-20261205-0002", at_city=False),
        _report("1796454948.10", agent_id=None, ticket_id=None, at_city=False, outcome=CallOutcome.ABANDONED_IN_MENU),
    ]

    lines = _render(_ids_table(reports)).splitlines()

    first = next(line for line in lines if "1796454669.0" in line)
    assert first.count("330106-20261205-0001") == 2
    second = next(line for line in lines if "1796454728.2" in line)
    assert "330106-20261205-0002" in second
    assert "未到达市级" in second
    assert any("1796454948.10" in line for line in lines)


def test_tables_fit_100_columns():
    # The demo's longest call label, and call ids as long as Asterisk's after many calls.
    reports = [_report(f"1796454669.{n}0", agent_id="agent1", ticket_id=f"330106-20261205-000{n}", at_city=True,
                       label="先按8（无效）再按5 养老服务") for n in range(1, 7)]

    for table in (_summary_table(reports), _ids_table(reports)):
        text = _render(table)
        assert max(cell_len(line) for line in text.splitlines()) <= 100
        # Nothing is cut off with an ellipsis.
        assert "…" not in text
