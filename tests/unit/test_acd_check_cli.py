"""``hotline acd check``: a roster file checked without a node, and the shipped examples."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.cells import cell_len
from rich.console import Console

from acd.roster import load_roster
from acd.simulator import load_traffic
from hotline.cli import main
from hotline.commands.acd import skills_table

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Tables are laid out for a 100-column terminal; pytest-xdist workers set COLUMNS=80.
TERMINAL_100 = {"COLUMNS": "100"}


pytestmark = pytest.mark.usefixtures("quiet_pool")


def _check(*args: str):
    return CliRunner(env=TERMINAL_100).invoke(main, ["acd", "check", *args])


def test_examples_load():
    roster = load_roster(EXAMPLES / "roster.yaml")
    plan = load_traffic(EXAMPLES / "traffic.yaml")

    assert len(roster) == 8
    assert any("sign_language" in agent.skills and "video" in agent.capabilities for agent in roster)
    assert any("温州话" in agent.languages for agent in roster)
    assert any("elderly_care" in agent.training for agent in roster)
    staffed = {skill for agent in roster for skill in agent.skills}
    assert {traffic.skill for traffic in plan.skills} <= staffed


def test_check_example_roster_passes():
    result = _check(str(EXAMPLES / "roster.yaml"), "--traffic", str(EXAMPLES / "traffic.yaml"))

    assert result.exit_code == 0, result.output
    out = result.output
    assert "共 8 名坐席" in out
    assert "手语来电（技能 sign_language 且话机有 video 能力）：1 名：a05（坐席五）" in out
    assert "温州话 3 名（a02、a04、a08）" in out
    assert "老年人服务培训（elderly_care，需语速放缓的来电优先分给他们）：3 名" in out
    dibao = next(line for line in out.splitlines() if line.startswith("│ dibao"))
    assert "│ 3 " in dibao
    assert "5:1 4:1 2:1" in dibao
    assert "名单中的技能 ertong（儿童福利）、linshi（临时救助）、liulang（流浪乞讨救助） 不在话务量文件" in out
    assert "通过检查" in out


def test_whatif_runs_on_examples():
    result = CliRunner(env=TERMINAL_100).invoke(main, ["acd", "whatif", str(EXAMPLES / "roster.yaml"), str(EXAMPLES / "traffic.yaml"),
                                       "--hours", "2"])

    assert result.exit_code == 0, result.output
    assert "服务水平目标：80% 的来电在 15 秒内接起；话后整理 30 秒" in result.output
    assert "现有名单" in result.output
    assert "统计到的来电少于 400 个" in result.output
    assert "请用 --hours 445 或更长重新运行" in result.output  # sign_language: 400 / (1 per hour * 0.9)


def test_check_csv_lists_every_error(tmp_path: Path):
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,endpoint,skills,capabilities\n"
                      "a1,坐席一,agent1,dibao:7,\n"
                      "a2,坐席二,agent2,dibao,camera\n"
                      "a3,坐席三,agent2,dibao,\n", encoding="utf-8")

    result = _check(str(roster))

    assert result.exit_code == 1
    out = result.output
    assert f"坐席名单 {roster} 有 3 处错误：" in out
    assert "  - 第 2 行，字段“skills”：技能“dibao:7”的熟练度应为 1 到 5 的整数，例如 dibao:4" in out
    assert "  - 第 3 行，字段“capabilities”：能力“camera”不认识，请填 video（视频，手语来电需要）" in out
    assert "  - 第 4 行：话机“agent2”已分给第 3 行的坐席，每名坐席一部话机" in out
    assert f"未通过检查：坐席名单 {roster} 有误" in out
    assert "熟练度（等级:人数）" not in out  # no skills table for a roster with errors


def test_check_yaml_names_agent_and_field(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: agent1, skills: [dibao]}\n"
                      "- {id: a2, name: 坐席二, endpoint: agent2}\n", encoding="utf-8")

    result = _check(str(roster))

    assert result.exit_code == 1
    assert "第 2 行的第 2 名坐席，字段“skills”：缺少此字段" in result.output


def test_check_missing_file():
    result = _check("/nonexistent/roster.yaml")

    assert result.exit_code == 1
    assert "找不到坐席名单 /nonexistent/roster.yaml，请检查路径" in result.output


def test_check_traffic_skill_without_agent(tmp_path: Path):
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("skill,calls_per_hour,handle_s\ndibao,10,240\nzhongzhi,5,200\n", encoding="utf-8")

    result = _check(str(EXAMPLES / "roster.yaml"), "--traffic", str(traffic))

    assert result.exit_code == 1
    assert "技能 zhongzhi 每小时 5 个来电，名单中没有坐席具备" in result.output
    assert "请在名单中给至少一名坐席加上技能 zhongzhi" in result.output
    assert "技能 dibao（低保） 每小时" not in result.output
    assert "名单与话务量文件、流程不一致 1 处" in result.output


def test_check_bad_traffic_file(tmp_path: Path):
    traffic = tmp_path / "traffic.csv"
    traffic.write_text("skill,calls_per_hour,handle_s\ndibao,十,240\n", encoding="utf-8")

    result = _check(str(EXAMPLES / "roster.yaml"), "--traffic", str(traffic))

    assert result.exit_code == 1
    assert "calls_per_hour 的值“十”不是数字" in result.output


def test_check_warns_sign_language_without_video(tmp_path: Path):
    roster = tmp_path / "roster.yaml"
    roster.write_text("- {id: a1, name: 坐席一, endpoint: agent1, skills: [general, sign_language]}\n",
                      encoding="utf-8")

    result = _check(str(roster), "--no-flow")

    assert result.exit_code == 0, result.output
    assert "手语来电（技能 sign_language 且话机有 video 能力）：0 名" in result.output
    assert "坐席 a1 有技能 sign_language，但 capabilities 没有 video，接不了手语来电" in result.output
    assert "名单中没有能接手语来电的坐席" in result.output
    assert "名单没有写 languages" in result.output


def test_skills_table_fits_100_columns():
    console = Console(width=100, record=True, file=open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115
    console.print(skills_table(load_roster(EXAMPLES / "roster.yaml")))
    console.file.close()

    lines = console.export_text().splitlines()
    assert max(cell_len(line) for line in lines) <= 100
    assert sum(line.startswith("┃") for line in lines) == 1
