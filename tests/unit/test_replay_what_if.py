"""Recorded inputs on call records, their migration, what-if replay and the ``hotline replay`` command."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

from click.testing import CliRunner

from hotline.commands.replay import replay
from hotline.ticket_desk import TicketDesk
from ivr.call import Call, CallerId
from ivr.engine import FlowRunner
from ivr.flow import load_flow
from replay.offline import ReplayPort, always_free_pool
from replay.scripts import load_script
from replay.what_if import NO_INPUTS, render_what_if, script_from_record, what_if
from storage.schema import MIGRATIONS
from storage.ticket_store import TicketStore
from tests.unit.test_replay_offline import FLOW_FILE, LENGTHS, LIBRARY, broken_flow
from tickets.call_record import CallOutcome

COUNTY, REGION = "county-330106", "330106"
STARTED = datetime(2026, 12, 3, 2, 0, tzinfo=UTC)  # 10:00 on a Thursday in Beijing
RECORDED = ("menu_1_dibao", "menu_5_yanglao", "no_input_three_times", "hangup_main_menu")


async def record_calls(database: Path) -> None:
    """Run library scripts through the flow with the real ticket desk, as a live node would."""
    flow = load_flow(FLOW_FILE)
    async with await TicketStore.open(database, COUNTY, REGION, clock=lambda: STARTED) as store:
        desk = TicketDesk(store)
        for index, name in enumerate(RECORDED):
            script = load_script(LIBRARY / f"{name}.yaml")
            port = ReplayPort(script.keys, script.hangup_ms, LENGTHS)
            started = STARTED + timedelta(minutes=index)
            runner = FlowRunner(await always_free_pool(flow), desk, clock=port.seconds,
                                wall_clock=lambda start=started, clock=port: start + timedelta(milliseconds=clock.now_ms))
            call = Call(f"1764727200.{index}", CallerId.from_raw(script.caller), "12349", "PJSIP/x", started, "agi")
            await desk.finish_call(await runner.run(flow, call, port))


async def test_live_calls_keep_their_inputs(tmp_path: Path) -> None:
    await record_calls(tmp_path / "county.sqlite3")

    async with await TicketStore.open(tmp_path / "county.sqlite3", COUNTY, REGION) as store:
        calls = {call.call_id: call for call in await store.list_calls()}

    dibao = calls["1764727200.0"].inputs
    assert dibao is not None and dibao.flow_version == load_flow(FLOW_FILE).version
    # The caller pressed 1 in the menu and left the survey after the agent unanswered.
    assert [(k.node, k.digits, k.outcome, k.at_ms) for k in dibao.keys] == [("main_menu", "1", "accepted", 9500),
                                                                            ("survey", "", "no_input", 34000)]
    assert not dibao.hung_up
    silent = calls["1764727200.2"].inputs
    # Three silent menu attempts, then the unanswered survey after the agent.
    assert silent is not None and [k.outcome for k in silent.keys] == ["no_input"] * 4
    hung_up = calls["1764727200.3"].inputs
    assert hung_up is not None
    assert hung_up.hung_up
    assert hung_up.ended_ms == 12000

    script = script_from_record(calls["1764727200.3"])
    assert not isinstance(script, str)
    assert script.hangup_ms == 12000
    assert script.keys == ()


async def test_what_if_finds_the_changed_branch(tmp_path: Path) -> None:
    await record_calls(tmp_path / "county.sqlite3")
    async with await TicketStore.open(tmp_path / "county.sqlite3", COUNTY, REGION) as store:
        records = await store.list_calls()

    report = await what_if(records, broken_flow(), lengths=LENGTHS, current=load_flow(FLOW_FILE))

    assert (report.total, report.replayed, len(report.changed), report.baseline_mismatches) == (4, 4, 1, 0)
    changed = report.changed[0]
    assert changed.caller_masked == "139****0027"
    assert changed.candidate.path == ("welcome", "main_menu", "no_agent")
    lines = render_what_if(report)
    assert lines[0] == "共 4 通通话，回放 4 通，路径改变 1 通，不变 3 通。"
    assert "    新路径：welcome → main_menu → no_agent" in lines

    unchanged = await what_if(records, load_flow(FLOW_FILE), lengths=LENGTHS)
    assert unchanged.changed == []


async def test_old_calls_rows_skipped(tmp_path: Path) -> None:
    database = tmp_path / "county.sqlite3"
    connection = sqlite3.connect(database)
    for statements in MIGRATIONS[:2]:
        for statement in statements:
            connection.execute(statement)
    connection.execute(
        "INSERT INTO calls (call_id, caller_raw, caller_masked, caller_flags, dialed, started_at, path, outcome, "
        "recorded_at) VALUES ('1764727200.9', '13900000041', '139****0041', '[]', '12349', "
        "'2026-12-03T02:00:00.000000Z', '[\"welcome\", \"main_menu\"]', 'abandoned_in_menu', "
        "'2026-12-03T02:01:00.000000Z')")
    connection.execute("PRAGMA user_version = 2")
    connection.commit()
    connection.close()

    async with await TicketStore.open(database, COUNTY, REGION) as store:
        (old,) = await store.list_calls()

    assert old.inputs is None
    assert old.outcome is CallOutcome.ABANDONED_IN_MENU
    report = await what_if([old], load_flow(FLOW_FILE), lengths=LENGTHS)
    assert (report.replayed, report.skipped) == (0, {NO_INPUTS: 1})
    assert "跳过 1 通：无按键记录" in render_what_if(report)


def test_cli_what_if_on_recorded_database(tmp_path: Path) -> None:
    import asyncio

    asyncio.run(record_calls(tmp_path / "county.sqlite3"))
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(FLOW_FILE.read_text(encoding="utf-8").replace(
        "    on_exhausted: to_agent\n", "    on_exhausted: no_agent\n"), encoding="utf-8")
    config = tmp_path / "county.yaml"
    config.write_text(f"""\
node_id: {COUNTY}
tier: county
region_code: "{REGION}"
database: {tmp_path / 'county.sqlite3'}
parent: {{node_id: city-330100, broker: {{port: 1883}}}}
telephony:
  fastagi: {{port: 4573}}
  ami: {{port: 5038, username: hotline, secret_file: {tmp_path / 'secret'}}}
  flow: {FLOW_FILE}
  prompt_catalog: prompts/zh-CN.yaml
  prompt_sound_dir: /sounds
  roster: {tmp_path / 'roster.yaml'}
""", encoding="utf-8")

    result = CliRunner().invoke(replay, ["--what-if", str(candidate), "--since", "2026-12-03", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "共 4 通通话，回放 4 通，路径改变 1 通，不变 3 通。" in result.output
    assert "主叫 139****0027" in result.output and "13900000027" not in result.output

    later = CliRunner().invoke(replay, ["--what-if", str(candidate), "--since", "2026-12-04", "--config", str(config)])
    assert "共 0 通通话" in later.output

    bad = CliRunner().invoke(replay, ["--what-if", str(candidate), "--since", "12/03", "--config", str(config)])
    assert bad.exit_code == 2 and "--since 的日期“12/03”格式不对" in bad.output


def test_cli_offline_reports_pass_fail_and_exit_code(tmp_path: Path) -> None:
    good = CliRunner().invoke(replay, ["--offline", str(LIBRARY / "menu_1_dibao.yaml")])
    assert good.exit_code == 0, good.output
    assert "通过  主菜单按1 低保" in good.output and "通过 1 个，失败 0 个" in good.output

    broken = tmp_path / "broken.yaml"
    broken.write_text(FLOW_FILE.read_text(encoding="utf-8").replace(
        "category: yanglao, skill: yanglao", "category: zhengce, skill: zhengce"), encoding="utf-8")
    failed = CliRunner().invoke(replay, ["--offline", "--flow", str(broken), str(LIBRARY / "menu_5_yanglao.yaml"),
                                         str(LIBRARY / "menu_1_dibao.yaml")])
    assert failed.exit_code == 1
    assert "失败  主菜单按5 养老服务" in failed.output
    assert "    类别：期望 yanglao，实际 zhengce" in failed.output
    assert "通过 1 个，失败 1 个" in failed.output

    bad_script = tmp_path / "bad.yaml"
    bad_script.write_text("name: x\nexpect: {outcome: nope}\n", encoding="utf-8")
    rejected = CliRunner().invoke(replay, ["--offline", str(bad_script)])
    assert rejected.exit_code == 1 and f"{bad_script}:2: 结果“nope”不存在" in rejected.output
