"""Planning tools tell the truth: sign language needs video, every error is listed, verdicts and labels."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from acd.pool import AgentProfile
from acd.roster import RosterError, load_roster
from acd.simulator import (
    ServiceTarget,
    SimulationResult,
    SkillResult,
    SkillTraffic,
    TrafficError,
    TrafficPlan,
    can_take,
    load_traffic,
    overloaded_skills,
    simulate,
)
from hotline.commands.acd import (
    acd,
    erlang_rows,
    label_skills_in,
    skill_label,
    unqueued_call_lines,
    verdict_lines,
)
from storage.acd_store import AcdStore, acd_path
from storage.ticket_store import TicketStore
from tickets.call_record import CallOutcome, CallRecord

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Tables are laid out for a 100-column terminal; pytest-xdist workers set COLUMNS=80.
TERMINAL_100 = {"COLUMNS": "100"}

# A roster with five mistakes in its fields and, hidden behind them, a repeated id and a
# shared endpoint.
BAD_YAML = (
    '- {id: b1, name: 张三, endpoint: ph1, skills: ["dibao:4", general]}\n'
    '- {id: b1, name: 李四, endpoint: ph2, skills: ["dibao:7", general]}\n'
    "- {id: b3, name: 王五, endpoint: ph3, skills: [general, sign_language]}\n"
    '- {id: B4, name: 赵六, endpoint: ph1, skills: ["linshi:0"], capabilities: [vidoe], training: [elder]}\n'
)
BAD_CSV = (
    "id,name,endpoint,tier,region,skills,languages,capabilities,training\n"
    "c1,坐席一,p1,county,330106,dibao:4;general,普通话,,elderly_care\n"
    "c1,坐席二,p2,county,330106,dibao:6;general,普通话,,\n"
    "c3,坐席三,p1,county,330106,general;sign_language,普通话,,\n"
)
# Every flow skill staffed, but b3's sign_language lacks a video phone.
NO_VIDEO_YAML = (
    '- {id: b1, name: 张三, endpoint: ph1, skills: ["dibao:4", general, tekun, yanglao]}\n'
    '- {id: b2, name: 李四, endpoint: ph2, skills: ["dibao:5", general, linshi, ertong]}\n'
    "- {id: b3, name: 王五, endpoint: ph3, skills: [general, sign_language, liulang, zhengce]}\n"
)


pytestmark = pytest.mark.usefixtures("quiet_pool")


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _invoke(*args: str):
    return CliRunner(env=TERMINAL_100).invoke(acd, list(args))


class TestSignLanguageNeedsVideo:
    def test_can_take_requires_video_for_sign_language(self):
        without = AgentProfile("a1", "一", "ep1", frozenset({"sign_language", "dibao"}))
        with_video = AgentProfile("a2", "二", "ep2", frozenset({"sign_language"}), capabilities=frozenset({"video"}))

        assert not can_take(without, "sign_language")
        assert can_take(without, "dibao")
        assert can_take(with_video, "sign_language")
        assert not can_take(with_video, "dibao")

    def test_pool_rejects_agent_without_video(self):
        """The pool itself rejects the agent, because the simulated call carries the need 手语."""
        traffic = [SkillTraffic("sign_language", 20, 120, patience_s=60)]
        without = [AgentProfile("a1", "一", "ep1", frozenset({"sign_language"}))]
        with_video = [AgentProfile("a1", "一", "ep1", frozenset({"sign_language"}), capabilities=frozenset({"video"}))]

        blocked = simulate(without, traffic, hours=10, target_s=15, seed=3).total
        served = simulate(with_video, traffic, hours=10, target_s=15, seed=3).total

        assert blocked.offered > 100
        assert blocked.answered == 0
        assert blocked.abandoned == blocked.offered
        assert served.answered > served.offered / 2

    def test_erlang_and_overload_count_only_video_agents(self):
        roster = [AgentProfile("a1", "一", "ep1", frozenset({"sign_language"})),
                  AgentProfile("a2", "二", "ep2", frozenset({"sign_language"}), capabilities=frozenset({"video"}))]
        plan = TrafficPlan((SkillTraffic("sign_language", 5, 480),))

        (row,) = erlang_rows(plan, ServiceTarget(0.8, 15), roster)

        assert row.on_roster == 1
        assert overloaded_skills(roster, plan.skills) == ()
        assert overloaded_skills(roster, [SkillTraffic("sign_language", 10, 360)]) != ()  # 1 Erlang on 1 agent

    def test_whatif_shows_no_cover_without_video(self, tmp_path: Path):
        roster = _write(tmp_path, "roster.yaml", NO_VIDEO_YAML)

        result = _invoke("whatif", str(roster), str(EXAMPLES / "traffic.yaml"), "--hours", "2")

        assert result.exit_code == 0, result.output
        sign_row = next(line for line in result.output.splitlines()
                        if line.startswith("│ sign_language") and "480" in line)
        assert sign_row.rstrip().endswith("│ 0        │")
        assert "坐席 b3 有该技能，但 capabilities 没有 video，手语来电要求视频话机。" in result.output
        current = result.output.split("现有名单 ")[1].split("建议名单")[0]
        simulated = next(line for line in current.splitlines() if line.startswith("│ sign_language"))
        assert simulated.split("│")[3].strip() == "0"  # answered

    def test_check_traffic_errors_on_sign_language_without_video(self, tmp_path: Path):
        roster = _write(tmp_path, "roster.yaml", NO_VIDEO_YAML)

        result = _invoke("check", str(roster), "--traffic", str(EXAMPLES / "traffic.yaml"))

        assert result.exit_code == 1
        assert ("错误：话务量文件 " in result.output
                and "技能 sign_language（手语） 每小时 1 个来电，名单中没有坐席能接：坐席 b3 有该技能，"
                    "但 capabilities 没有 video" in result.output)
        assert "名单与话务量文件、流程不一致 1 处" in result.output


class TestEveryRosterErrorAtOnce:
    def test_yaml_lists_repeats_beside_field_errors(self, tmp_path: Path):
        with pytest.raises(RosterError) as caught:
            load_roster(_write(tmp_path, "bad.yaml", BAD_YAML))

        problems = caught.value.problems
        assert len(problems) == 7
        assert "第 2 行的第 2 名坐席：工号“b1”重复，第 1 行的坐席已用此工号，请改成唯一的工号" in problems
        assert ("第 4 行的第 4 名坐席：话机“ph1”已分给第 1 行的坐席，每名坐席一部话机，请换成这名坐席自己的话机"
                in problems)
        assert any("dibao:7" in problem for problem in problems)
        assert any("“B4”格式不对" in problem for problem in problems)
        assert any("vidoe" in problem for problem in problems)

    def test_csv_lists_repeats_beside_field_errors(self, tmp_path: Path):
        result = _invoke("check", str(_write(tmp_path, "bad.csv", BAD_CSV)))

        assert result.exit_code == 1
        assert "有 3 处错误" in result.output
        assert "  - 第 3 行：工号“c1”重复，第 2 行的坐席已用此工号，请改成唯一的工号" in result.output
        assert "  - 第 3 行，字段“skills”：技能“dibao:6”的熟练度应为 1 到 5 的整数" in result.output
        assert "  - 第 4 行：话机“p1”已分给第 2 行的坐席" in result.output

    def test_repeat_of_an_invalid_row_names_it(self, tmp_path: Path):
        text = ('- {id: a1, name: 坐席一, endpoint: ep1, skills: ["dibao:9"]}\n'
                "- {id: a1, name: 坐席二, endpoint: ep1, skills: [dibao]}\n")

        with pytest.raises(RosterError) as caught:
            load_roster(_write(tmp_path, "roster.yaml", text))

        assert "第 2 行的第 2 名坐席：工号“a1”重复，第 1 行的坐席已用此工号，请改成唯一的工号" in caught.value.problems
        assert any(problem.startswith("第 2 行的第 2 名坐席：话机“ep1”已分给第 1 行的坐席")
                   for problem in caught.value.problems)


class TestTrafficFileErrors:
    def test_values_named_with_range_and_line(self, tmp_path: Path):
        path = _write(tmp_path, "traffic.yaml", (
            "service_level: 95%\n"
            "wrap_up_s: -1\n"
            "skills:\n"
            "  - {skill: dibao, calls_per_hour: -3, handle_s: 240}\n"
            "  - skill: linshi\n"
            "    calls_per_hour: 10\n"
            "    handle_s: 0\n"
            "  - {skill: yanglao, calls_per_hour: abc, handle_s: 100, patience_s: 0}\n"
            "  - {skill: tekun, calls_per_hour: 3}\n"
        ))

        with pytest.raises(TrafficError) as caught:
            load_traffic(path)

        problems = caught.value.problems
        assert problems == (
            "第 1 行：服务水平目标“95%”格式不对，请写成“百分比/秒数”，例如 80/15（80% 的来电在 15 秒内接起）",
            "第 2 行：话后整理秒数 wrap_up_s 是 -1，请填不小于 0 的秒数",
            "第 4 行（skills 第 1 项）：每小时来电数 calls_per_hour 是 -3，不能为负数，请填不小于 0 的数",
            "第 5 行（skills 第 2 项）：平均处理时长 handle_s 是 0，不能为 0，请填大于 0 的秒数",
            "第 8 行（skills 第 3 项）：每小时来电数 calls_per_hour 的值“abc”不是数字，请填不小于 0 的数",
            "第 8 行（skills 第 3 项）：平均耐心时长 patience_s 是 0，不能为 0，请填大于 0 的秒数，不模拟挂机放弃请留空",
            "第 9 行（skills 第 4 项）：缺少平均处理时长 handle_s，请填大于 0 的秒数",
        )

    def test_csv_rows_and_repeats(self, tmp_path: Path):
        path = _write(tmp_path, "traffic.csv", "skill,calls_per_hour,handle_s,patience_s\n"
                                               "dibao,40,240,90\nlinshi,abc,300,\ndibao,3,100,\n")

        with pytest.raises(TrafficError) as caught:
            load_traffic(path)

        assert caught.value.problems == (
            "第 3 行：每小时来电数 calls_per_hour 的值“abc”不是数字，请填不小于 0 的数",
            "第 4 行：技能 dibao 已写在第 2 行，每个技能只写一次，请合并成一行",
        )

    def test_check_blames_the_traffic_file_only(self, tmp_path: Path):
        traffic = _write(tmp_path, "traffic.yaml", "skills:\n  - {skill: dibao, calls_per_hour: -3, handle_s: 0}\n")

        result = _invoke("check", str(EXAMPLES / "roster.yaml"), "--traffic", str(traffic))

        assert result.exit_code == 1
        assert f"话务量文件 {traffic} 有 2 处错误：" in result.output
        assert f"未通过检查：话务量文件 {traffic} 有误" in result.output
        assert "名单未通过" not in result.output
        assert "坐席名单" not in result.output.split("未通过检查")[1]

    def test_check_reports_both_files(self, tmp_path: Path):
        roster = _write(tmp_path, "bad.yaml", BAD_YAML)
        traffic = _write(tmp_path, "traffic.csv", "skill,calls_per_hour,handle_s\ndibao,-3,240\n")

        result = _invoke("check", str(roster), "--traffic", str(traffic))

        assert result.exit_code == 1
        assert f"坐席名单 {roster} 有 7 处错误：" in result.output
        assert f"话务量文件 {traffic} 有 1 处错误：" in result.output
        assert f"未通过检查：坐席名单 {roster} 有误；话务量文件 {traffic} 有误" in result.output

    def test_whatif_lists_every_traffic_error(self, tmp_path: Path):
        traffic = _write(tmp_path, "traffic.csv", "skill,calls_per_hour,handle_s\ndibao,-3,240\nlinshi,10,0\n")

        result = _invoke("whatif", str(EXAMPLES / "roster.yaml"), str(traffic))

        assert result.exit_code == 1
        assert "第 2 行：每小时来电数 calls_per_hour 是 -3，不能为负数" in result.output
        assert "第 3 行：平均处理时长 handle_s 是 0，不能为 0" in result.output
        assert "缺少" not in result.output


class TestFlowSkills:
    def test_typo_warns_with_row_and_suggestion(self, tmp_path: Path):
        roster_text = (EXAMPLES / "roster.yaml").read_text(encoding="utf-8") + (
            "- id: d2\n  name: 乙\n  endpoint: e2\n  skills:\n    - dibao:4\n    - sign_langauge\n")
        roster = _write(tmp_path, "roster.yaml", roster_text)
        line = roster_text.splitlines().index("- id: d2") + 1

        result = _invoke("check", str(roster))

        assert result.exit_code == 0, result.output
        assert (f"注意：第 {line} 行的第 9 名坐席（坐席 d2）：技能“sign_langauge”不在流程 " in result.output)
        assert "没有来电会按它分给坐席：是不是 sign_language（手语）？" in result.output

    def test_flow_skill_without_agent_is_an_error(self, tmp_path: Path):
        roster = _write(tmp_path, "roster.yaml", "- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao, general]}\n")

        result = _invoke("check", str(roster))

        assert result.exit_code == 1
        assert "会把来电分给技能 tekun（特困供养），名单中没有坐席具备，这些来电无人接听" in result.output
        assert "会把来电分给技能 dibao（" not in result.output
        assert "名单与流程不一致 6 处" in result.output

    def test_explicit_flow_and_no_flow(self, tmp_path: Path):
        roster = _write(tmp_path, "roster.yaml", "- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao, general]}\n")
        flow = _write(tmp_path, "flow.yaml", (
            "flow: small\ntitle: 小流程\nstart: queue\nnodes:\n"
            "  queue: {type: queue, prompt: p, wait_prompt: p, skill: dibao, next: bye, on_no_agent: bye}\n"
            "  bye: {type: hangup, prompt: p}\n"))

        with_flow = _invoke("check", str(roster), "--flow", str(flow))
        without = _invoke("check", str(roster), "--no-flow")
        missing = _invoke("check", str(roster), "--flow", str(tmp_path / "none.yaml"))

        assert with_flow.exit_code == 0, with_flow.output
        assert f"流程 {flow} 的每个技能都有坐席" in with_flow.output
        assert without.exit_code == 0, without.output
        assert "流程" not in without.output
        assert missing.exit_code == 1
        assert f"找不到流程文件 {tmp_path / 'none.yaml'}，请检查 --flow 的路径" in missing.output

    def test_example_roster_matches_shipped_flow(self):
        result = _invoke("check", str(EXAMPLES / "roster.yaml"), "--traffic", str(EXAMPLES / "traffic.yaml"))

        assert result.exit_code == 0, result.output
        assert "注意：第" not in result.output
        assert "12349.yaml 的每个技能都有坐席" in result.output


class TestLabels:
    def test_skill_label(self):
        assert skill_label("dibao") == "dibao（低保）"
        assert skill_label("sign_language") == "sign_language（手语）"
        assert skill_label("general") == "general"

    def test_label_skills_in_decision_text(self):
        assert label_skills_in("来电 c1  技能 dibao  需求 无") == "来电 c1  技能 dibao（低保）  需求 无"
        assert label_skills_in("a1：不具备技能 tekun") == "a1：不具备技能 tekun（特困供养）"
        assert label_skills_in("技能 dibao（低保）") == "技能 dibao（低保）"


def _result(skills: dict[str, tuple[int, float]], total: tuple[int, float]) -> SimulationResult:
    def row(name: str, offered: int, level: float) -> SkillResult:
        return SkillResult(name, offered, offered, 0, 1.0, 0.1, level, 0.0)

    return SimulationResult(3, 3600, 15, 0.5, 1.0, tuple(row(name, *values) for name, values in skills.items()),
                            row("全部", *total))


class TestVerdict:
    def test_missed_skill_and_total(self):
        result = _result({"dibao": (500, 0.712), "general": (600, 0.85), "tekun": (0, math.nan)}, (1100, 0.79))

        lines = verdict_lines("现有名单", result, ServiceTarget(0.8, 15))

        assert lines == [
            "现有名单：未达标（目标 80%/15 秒，2 项未达标，共 3 项）",
            "  未达标：dibao（低保） 服务水平 71.2%，目标 80%/15 秒",
            "  达标：general 服务水平 85.0%，目标 80%/15 秒",
            "  未达标：全部来电 服务水平 79.0%，目标 80%/15 秒",
        ]

    def test_met_with_sparse_skill(self):
        result = _result({"dibao": (41, 0.9)}, (41, 0.9))

        lines = verdict_lines("建议名单", result, ServiceTarget(0.8, 15), {"dibao": 41})

        assert lines[0] == "建议名单：达标（目标 80%/15 秒，0 项未达标，共 2 项）"
        assert lines[1] == "  达标：dibao（低保） 服务水平 90.0%，目标 80%/15 秒（只有 41 个来电，仅供参考）"

    def test_whatif_prints_verdict_for_both_rosters(self, tmp_path: Path):
        roster = _write(tmp_path, "roster.yaml", "- {id: a1, name: 坐席一, endpoint: ep1, skills: [dibao]}\n")
        traffic = _write(tmp_path, "traffic.csv", "skill,calls_per_hour,handle_s\ndibao,60,100\n")

        result = _invoke("whatif", str(roster), str(traffic), "--hours", "10")

        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert "结论（按模拟的服务水平）：" in lines
        assert any(line.startswith("现有名单：未达标（目标 80%/15 秒") for line in lines)
        assert any(line.startswith("  未达标：dibao（低保） 服务水平 ") for line in lines)
        assert any(line.startswith("建议名单：达标（目标 80%/15 秒") for line in lines)


def _node_config(tmp_path: Path) -> Path:
    return _write(tmp_path, "node.yaml", (
        "node_id: county-330106\ntier: county\nregion_code: '330106'\n"
        f"database: {tmp_path / 'node.sqlite3'}\n"
        "parent: {node_id: city-330100, broker: {port: 18830}}\n"
        "telephony:\n  fastagi: {host: 127.0.0.1, port: 4573}\n"
        "  ami: {host: 127.0.0.1, port: 5038, username: hotline, secret_file: ami.secret}\n"
        "  flow: flow.yaml\n  prompt_catalog: prompts.yaml\n  prompt_sound_dir: /sounds\n"
        "  roster: roster.yaml\n"))


async def _record_menu_hang_up(tmp_path: Path) -> None:
    await (await AcdStore.open(acd_path(tmp_path / "node.sqlite3"))).close()
    started = datetime(2026, 12, 5, 8, 10, tzinfo=UTC)
    async with await TicketStore.open(tmp_path / "node.sqlite3", "county-330106", "330106") as store:
        await store.record_call(CallRecord(
            call_id="1796458159.10", caller_raw="13900000010", caller_masked="139****0010", caller_flags=frozenset(),
            dialed="12349", started_at=started, answered_at=started, ended_at=started,
            path=("welcome", "main_menu"), outcome=CallOutcome.ABANDONED_IN_MENU,
        ))


class TestExplainUnqueuedCall:
    def test_menu_hang_up_explained(self, tmp_path: Path):
        config = _node_config(tmp_path)
        asyncio.run(_record_menu_hang_up(tmp_path))

        result = _invoke("explain", "1796458159.10", "--config", str(config))

        assert result.exit_code == 0, result.output
        assert ("来电 1796458159.10（2026-12-05 16:10:00 开始）有通话记录，但没有进入坐席排队，所以没有分配决定。"
                in result.output)
        assert "  结果：菜单中挂机" in result.output
        assert "  最后到达的流程节点：main_menu（共经过 2 个节点）" in result.output
        assert "请核对来电编号" not in result.output

    def test_unknown_call_still_asks_to_check_the_id(self, tmp_path: Path):
        config = _node_config(tmp_path)
        asyncio.run(_record_menu_hang_up(tmp_path))

        result = _invoke("explain", "1796458159.99", "--config", str(config))

        assert result.exit_code == 1
        assert "也没有它的通话记录：请核对来电编号" in result.output

    def test_queued_outcome_without_decision(self):
        started = datetime(2026, 12, 5, 8, 10, tzinfo=UTC)
        record = CallRecord(call_id="c1", caller_raw="13900000011", caller_masked="139****0011",
                            caller_flags=frozenset(), dialed="12349", started_at=started,
                            outcome=CallOutcome.ANSWERED)

        lines = unqueued_call_lines(record)

        assert lines[0] == "来电 c1（2026-12-05 16:10:00 开始）的通话记录显示进过坐席排队（结果：已接通坐席），"
        assert "请确认 --config 指的是接这通来电的节点" in lines[1]
