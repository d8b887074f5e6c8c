"""Simulator: the real pool under Poisson traffic on a virtual clock, checked against Erlang C."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console

from acd.erlang import average_speed_of_answer, erlang_c, service_level
from acd.pool import AgentProfile
from acd.simulator import (
    MIN_STABLE_CALLS,
    Overload,
    ServiceTarget,
    SkillTraffic,
    TrafficError,
    TrafficPlan,
    hours_for_calls,
    load_traffic,
    overloaded_skills,
    simulate,
    sparse_skills,
)
from hotline.cli import main
from hotline.commands.acd import (
    ERLANG_LEGEND,
    SIMULATION_LEGEND,
    erlang_rows,
    erlang_table,
    overload_warnings,
    sample_warning,
    simulation_table,
)

SOAK = os.environ.get("HOTLINE_SOAK") == "1"

# Tables are laid out for a 100-column terminal; pytest-xdist workers set COLUMNS=80.
TERMINAL_100 = {"COLUMNS": "100"}


pytestmark = pytest.mark.usefixtures("quiet_pool")


def _agents(count: int, skill: str = "dibao") -> list[AgentProfile]:
    return [AgentProfile(f"a{i}", f"坐席{i}", f"ep{i}", frozenset({skill})) for i in range(count)]


def test_matches_erlang_c_for_one_skill():
    """10 identical agents, 8 Erlangs (160 calls/h, 180 s), no abandonment.

    Default run: 1,000 simulated hours (about 145,000 calls, 15-40 s). With HOTLINE_SOAK=1:
    4,000 hours. The generated load must lie within 2 % of 8 Erlangs. Probability of
    waiting, ASA, service level (20 s) and occupancy must lie within 5 % of Erlang C at
    the load the run generated. The mean wait moves about five times as much as the load,
    so a comparison at the nominal load would mostly measure the traffic's sampling noise.
    """
    hours = 4000 if SOAK else 1000

    started = time.monotonic()
    result = simulate(_agents(10), [SkillTraffic("dibao", 160, 180)], hours=hours, target_s=20, seed=12349)
    elapsed = time.monotonic() - started

    total = result.total
    load = result.offered_load
    assert total.offered > 100_000
    assert total.abandoned == 0
    assert load == pytest.approx(8.0, rel=0.02)
    assert total.wait_probability == pytest.approx(erlang_c(10, load), rel=0.05)
    assert total.asa_s == pytest.approx(average_speed_of_answer(10, load, 180), rel=0.05)
    assert total.service_level == pytest.approx(service_level(10, load, 180, 20), rel=0.05)
    assert result.occupancy == pytest.approx(load / 10, rel=0.05)
    assert elapsed < hours * 3600 / 1000  # virtual time: far faster than real time


def test_seed_fixes_the_result():
    traffic = [SkillTraffic("dibao", 100, 120, patience_s=60)]

    first = simulate(_agents(3), traffic, hours=5, target_s=15, seed=1)
    again = simulate(_agents(3), traffic, hours=5, target_s=15, seed=1)
    other = simulate(_agents(3), traffic, hours=5, target_s=15, seed=2)

    assert first == again
    assert other != first


def test_abandoned_calls_counted_once():
    result = simulate(_agents(3), [SkillTraffic("dibao", 60, 120, patience_s=20)], hours=40, target_s=15, seed=5)

    total = result.total
    assert total.offered == total.answered + total.abandoned
    assert 0.02 < total.abandon_rate < 0.5
    assert total.service_level <= 1 - total.abandon_rate


def test_multi_skill_roster_serves_each_skill():
    roster = [AgentProfile("a1", "一", "ep1", frozenset({"dibao"})),
              AgentProfile("a2", "二", "ep2", frozenset({"dibao", "linshi"}))]
    traffic = [SkillTraffic("dibao", 20, 120), SkillTraffic("linshi", 10, 120), SkillTraffic("yanglao", 0, 120)]

    result = simulate(roster, traffic, hours=20, target_s=15, seed=3)

    by_skill = {row.skill: row for row in result.skills}
    assert by_skill["dibao"].answered == by_skill["dibao"].offered > 300
    assert by_skill["linshi"].answered == by_skill["linshi"].offered > 100
    assert by_skill["yanglao"].offered == 0
    assert math.isnan(by_skill["yanglao"].asa_s)
    assert 0 < result.occupancy < 1


def test_load_traffic_yaml_and_csv(tmp_path: Path):
    yaml_file = tmp_path / "traffic.yaml"
    yaml_file.write_text(
        "service_level: 80/15\nwrap_up_s: 10\nskills:\n"
        "  - {skill: dibao, calls_per_hour: 40, handle_s: 240, patience_s: 90}\n"
        "  - {skill: linshi, calls_per_hour: 20, handle_s: 300}\n", encoding="utf-8")
    csv_file = tmp_path / "traffic.csv"
    csv_file.write_text("skill,calls_per_hour,handle_s,patience_s\ndibao,40,240,90\nlinshi,20,300,\n", encoding="utf-8")

    plan = load_traffic(yaml_file)
    from_csv = load_traffic(csv_file)

    assert plan.target == ServiceTarget(0.80, 15.0)
    assert plan.wrap_up_s == 10.0
    assert plan.skills == from_csv.skills == (SkillTraffic("dibao", 40, 240, 90), SkillTraffic("linshi", 20, 300))


@pytest.mark.parametrize(("content", "message"), [
    ("skill,calls_per_hour,handle_s\ndibao,40,\n", "缺少平均处理时长 handle_s"),
    ("skill,calls_per_hour,handle_s\ndibao,四十,240\n", "calls_per_hour 的值“四十”不是数字"),
    ("skill,calls_per_hour,handle_s\ndibao,40,240\ndibao,10,240\n", "技能 dibao 已写在第 2 行，每个技能只写一次"),
    ("skill,calls_per_hour,handle_s,queue\ndibao,40,240,x\n", "未知字段 queue"),
])
def test_traffic_errors_name_the_fix(tmp_path: Path, content: str, message: str):
    path = tmp_path / "traffic.csv"
    path.write_text(content, encoding="utf-8")

    with pytest.raises(TrafficError, match=message):
        load_traffic(path)


def test_service_target_parse():
    assert ServiceTarget.parse("90/20") == ServiceTarget(0.9, 20.0)
    with pytest.raises(TrafficError, match="例如 80/15"):
        ServiceTarget.parse("80%")


def test_whatif_prints_minimum_and_simulations(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao]}\n"
                      "- {id: a2, name: 坐席二, endpoint: ep2, skills: [dibao, linshi]}\n", encoding="utf-8")
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("skill,calls_per_hour,handle_s,patience_s\ndibao,40,240,90\nlinshi,20,300,90\n",
                       encoding="utf-8")

    result = CliRunner(env=TERMINAL_100).invoke(main, ["acd", "whatif", str(roster), str(traffic), "--hours", "5", "--target", "80/15"])

    assert result.exit_code == 0, result.output
    assert "服务水平目标：80% 的来电在 15 秒内接起" in result.output
    dibao_row = next(line for line in result.output.splitlines() if line.startswith("│ dibao") and "2.67" in line)
    assert "│ 5 " in dibao_row  # 2.67 Erlangs need 5 agents for 80/15
    assert "现有名单" in result.output
    assert "建议名单（每个技能按最少坐席数专人接听，共 9 名）" in result.output


def test_whatif_reports_a_bad_traffic_file(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao]}\n", encoding="utf-8")

    result = CliRunner(env=TERMINAL_100).invoke(main, ["acd", "whatif", str(roster), str(tmp_path / "missing.yaml")])

    assert result.exit_code != 0
    assert "找不到话务量文件" in result.output


def test_overloaded_queue_drains_after_arrivals_stop():
    """One agent, 2 Erlangs, callers never hang up: every counted call is still answered.

    The calls queued when arrivals stop are answered later and their waits count, so the
    mean wait roughly doubles when the run doubles.
    """
    traffic = [SkillTraffic("dibao", 60, 120)]

    short = simulate(_agents(1), traffic, hours=5, target_s=15, seed=7).total
    long = simulate(_agents(1), traffic, hours=10, target_s=15, seed=7).total

    assert short.answered == short.offered
    assert short.abandoned == 0
    assert short.waiting_at_end > short.offered / 3
    assert short.max_wait_s > 3600
    assert long.asa_s > 1.5 * short.asa_s


def test_stable_queue_has_few_calls_waiting_at_end():
    result = simulate(_agents(3), [SkillTraffic("dibao", 40, 120)], hours=20, target_s=15, seed=3)

    total = result.total
    assert total.waiting_at_end <= 3
    assert 0 < total.max_wait_s < 600
    assert math.isnan(simulate(_agents(1), [SkillTraffic("dibao", 0, 120)], hours=1, target_s=15).total.max_wait_s)


def test_overloaded_skills_compares_load_with_agents():
    roster = [AgentProfile("a1", "一", "ep1", frozenset({"dibao", "tekun"})),
              AgentProfile("a2", "二", "ep2", frozenset({"dibao"}))]
    traffic = [SkillTraffic("dibao", 40, 150),    # 1.67 Erlangs with 2 agents
               SkillTraffic("tekun", 30, 150),    # 1.25 Erlangs with 1 agent
               SkillTraffic("linshi", 30, 300),   # no agent at all: reported elsewhere
               SkillTraffic("yanglao", 0, 300)]

    assert overloaded_skills(roster, traffic) == (Overload("tekun", pytest.approx(1.25), 1),)
    with_wrap_up = overloaded_skills(roster, traffic, wrap_up_s=30)
    assert [item.skill for item in with_wrap_up] == ["dibao", "tekun"]
    assert with_wrap_up[0].load == pytest.approx(2.0)


def test_sparse_skills_and_hours_needed():
    traffic = [SkillTraffic("dibao", 100, 60), SkillTraffic("yanglao", 5, 60), SkillTraffic("tekun", 0, 60)]
    result = simulate(_agents(3, "dibao") + [AgentProfile("y", "养", "epy", frozenset({"yanglao"}))],
                      traffic, hours=10, target_s=15, seed=4)

    sparse = sparse_skills([result], traffic)

    assert list(sparse) == ["yanglao"]
    assert sparse["yanglao"] == result.skills[1].offered < MIN_STABLE_CALLS
    assert hours_for_calls(traffic, ["yanglao"]) == 89  # 400 / (5 per hour * 0.9 counted)
    assert hours_for_calls(traffic, ["dibao", "yanglao"]) == 89
    assert hours_for_calls(traffic, ["dibao"]) == 5
    assert hours_for_calls(traffic, ["tekun"]) == 0


def test_whatif_warns_about_few_calls(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao, yanglao]}\n"
                      "- {id: a2, name: 坐席二, endpoint: ep2, skills: [dibao]}\n", encoding="utf-8")
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("skill,calls_per_hour,handle_s\ndibao,13,240\nyanglao,5,200\n", encoding="utf-8")

    result = CliRunner(env=TERMINAL_100).invoke(main, ["acd", "whatif", str(roster), str(traffic), "--hours", "1"])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    heading = next(number for number, line in enumerate(lines) if "统计到的来电少于 400 个" in line)
    assert "dibao（低保） " in lines[heading + 1]
    assert "yanglao（养老服务） " in lines[heading + 1]
    assert "请用 --hours 89 或更长重新运行" in result.output  # yanglao: 400 / (5 * 0.9)


def test_whatif_without_warning_for_enough_calls(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao]}\n"
                      "- {id: a2, name: 坐席二, endpoint: ep2, skills: [dibao]}\n", encoding="utf-8")
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("skill,calls_per_hour,handle_s\ndibao,60,60\n", encoding="utf-8")

    result = CliRunner(env=TERMINAL_100).invoke(main, ["acd", "whatif", str(roster), str(traffic), "--hours", "10"])

    assert result.exit_code == 0, result.output
    assert "少于 400 个" not in result.output
    assert "不少于名单中能接的" not in result.output


def test_whatif_warns_about_overloaded_skill(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao, tekun]}\n"
                      "- {id: a2, name: 坐席二, endpoint: ep2, skills: [dibao]}\n", encoding="utf-8")
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("skill,calls_per_hour,handle_s\ndibao,10,120\ntekun,40,300\n", encoding="utf-8")

    result = CliRunner(env=TERMINAL_100).invoke(main, ["acd", "whatif", str(roster), str(traffic), "--hours", "4"])

    assert result.exit_code == 0, result.output
    assert "注意：技能 tekun（特困供养） 的话务量 3.33 爱尔兰（含话后整理），不少于名单中能接的 1 名坐席。" in result.output
    assert "平均等待只反映模拟时长" in result.output
    assert "请给该技能至少 6 名坐席" in result.output
    assert "技能 dibao（低保） 的话务量" not in result.output
    queued = next(line for line in result.output.splitlines() if "模拟停止来电时该技能仍有" in line)
    assert int(queued.split("仍有 ")[1].split(" 个")[0]) > 10


def test_overload_warning_with_patience_points_at_abandonment():
    roster = _agents(1)
    plan = TrafficPlan((SkillTraffic("dibao", 60, 120, patience_s=60),))
    result = simulate(roster, plan.skills, hours=3, target_s=15, seed=2)

    lines = overload_warnings(roster, plan, result, {"dibao": 4})

    assert "平均耐心 60 秒" in lines[1]
    assert "请给该技能至少 4 名坐席" in lines[-3]
    assert lines[-2].startswith("注意：各技能话务量合计 2.00 爱尔兰")


def _render(table, width: int) -> list[str]:
    console = Console(width=width, record=True, file=open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    console.print(table)
    console.file.close()
    return console.export_text().splitlines()


def _whatif_tables(skills: tuple[str, ...]) -> tuple[dict[str, object], list[str]]:
    plan = TrafficPlan(tuple(SkillTraffic(skill, 120.5, 1234.5, 90) for skill in skills), wrap_up_s=30)
    roster = [AgentProfile(f"a{i}", "坐席", f"ep{i}", frozenset(skills)) for i in range(12)]
    result = simulate(roster, plan.skills, hours=1, target_s=15, seed=1, wrap_up_s=30)
    tables = {
        "erlang": erlang_table(erlang_rows(plan, ServiceTarget(0.8, 15), roster)),
        "simulation": simulation_table("现有名单 /srv/hotline/county/roster.yaml 的模拟结果", result),
    }
    return tables, [*ERLANG_LEGEND, *SIMULATION_LEGEND, *sample_warning([result], plan, 1)]


def test_whatif_tables_fit_100_columns():
    """Skill names up to 13 characters (sign_language): tables, legends and warnings fit 100 columns unwrapped."""
    tables, notes = _whatif_tables(("dibao", "sign_language"))

    for name, table in tables.items():
        widest = max(cell_len(line) for line in _render(table, 400))
        assert widest <= 100, f"{name}: {widest} cells"
    assert max(cell_len(line) for line in notes) <= 100


def test_whatif_tables_wrap_long_skill_names_only():
    """A 32-character skill name wraps in its own column; headers stay on one line at 100 columns."""
    tables, _ = _whatif_tables(("dibao", "a" * 32))

    for name, table in tables.items():
        lines = _render(table, 100)
        assert max(cell_len(line) for line in lines) <= 100, name
        header = next(line for line in lines if line.startswith("┃"))
        assert header.count("┃") == len(table.columns) + 1, f"{name}: header wrapped"
        assert sum(line.startswith("┃") for line in lines) == 1, f"{name}: header wrapped"


def test_sample_warning_scales_hours_by_measured_calls():
    """38 hours at 12 calls an hour expect 410 counted calls; seed 4 draws 390, so the hint scales by those."""
    plan = TrafficPlan((SkillTraffic("dibao", 12, 60),))
    result = simulate(_agents(2), plan.skills, hours=38, target_s=15, seed=4)

    lines = sample_warning([result], plan, 38)

    assert hours_for_calls(plan.skills, ["dibao"]) == 38  # 400 / (12 * 0.9) = 37.04
    assert result.skills[0].offered == 390
    assert lines[1] == "　　dibao（低保） 390 个"
    assert "请用 --hours 39 或更长" in lines[-1]  # 38 * 400 / 390 = 38.97
