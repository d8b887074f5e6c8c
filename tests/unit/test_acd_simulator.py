"""Simulator: the real pool under Poisson traffic on a virtual clock, checked against Erlang C."""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import pytest
import structlog
from click.testing import CliRunner

from acd.erlang import average_speed_of_answer, erlang_c, service_level
from acd.pool import AgentProfile
from acd.simulator import (
    ServiceTarget,
    SkillTraffic,
    TrafficError,
    load_traffic,
    simulate,
)
from hotline.cli import main

SOAK = os.environ.get("HOTLINE_SOAK") == "1"


@pytest.fixture(autouse=True)
def quiet_pool():
    """The pool logs every state change at INFO; a long simulation keeps only warnings."""
    previous = structlog.get_config()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    yield
    structlog.configure(**previous)


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
    ("skill,calls_per_hour,handle_s\ndibao,40,240\ndibao,10,240\n", "技能 dibao 写了不止一次"),
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

    result = CliRunner().invoke(main, ["acd", "whatif", str(roster), str(traffic), "--hours", "5", "--target", "80/15"])

    assert result.exit_code == 0, result.output
    assert "服务水平目标：80% 的来电在 15 秒内接起" in result.output
    dibao_row = next(line for line in result.output.splitlines() if line.startswith("│ dibao") and "2.67" in line)
    assert "│ 5 " in dibao_row  # 2.67 Erlangs need 5 agents for 80/15
    assert "现有名单" in result.output
    assert "建议名单（每个技能按最少坐席数专人接听，共 9 名）" in result.output


def test_whatif_reports_a_bad_traffic_file(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao]}\n", encoding="utf-8")

    result = CliRunner().invoke(main, ["acd", "whatif", str(roster), str(tmp_path / "missing.yaml")])

    assert result.exit_code != 0
    assert "找不到话务量文件" in result.output
