"""Roster CSV/YAML with proficiency, the ACD store and the `hotline acd` commands."""

import asyncio
import sqlite3
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from acd.decisions import AgentEvent
from acd.pool import AcdSettings, AgentPool, DeviceState
from acd.roster import RosterError, load_roster
from acd.settings import AcdSettingsError, load_acd_settings
from hotline.commands.acd import acd
from storage.acd_store import ACD_LATEST_VERSION, AcdStore, AcdStoreRecorder, acd_path

CSV = (
    "id,name,endpoint,tier,region,skills,languages,capabilities,training\n"
    "a1,坐席一,agent1,county,330106,dibao:4;linshi,普通话;温州话,video,elderly_care\n"
    "a2,坐席二,agent2,,,dibao,,,\n"
)


def test_csv_roster_loads(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text(CSV, encoding="utf-8")

    a1, a2 = load_roster(path)

    assert a1.level("dibao") == 4
    assert a1.level("linshi") == 3
    assert a1.level("yanglao") == 0
    assert a1.languages == frozenset({"普通话", "温州话"})
    assert a1.capabilities == frozenset({"video"})
    assert a1.training == frozenset({"elderly_care"})
    assert (a1.tier, a1.region_code) == ("county", "330106")
    assert a2.skills == frozenset({"dibao"})
    assert a2.tier is None


def test_yaml_roster_with_levels(tmp_path):
    path = tmp_path / "roster.yaml"
    path.write_text("- {id: a1, name: 坐席一, endpoint: agent1, skills: ['dibao:5', general], "
                    "languages: [普通话], training: [elderly_care]}\n", encoding="utf-8")

    (agent,) = load_roster(path)

    assert agent.level("dibao") == 5
    assert agent.level("general") == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,name,endpoint,skills\na1,坐席一,agent1,dibao:7\n", "第 2 行，字段“skills”：技能“dibao:7”的熟练度应为 1 到 5 的整数"),
        ("id,name,endpoint,skills\na1,坐席一,agent1,dibao\na2,坐席二,agent2,\n", "第 3 行，字段“skills”"),
        ("id,name,endpoint,skills,capabilities\na1,坐席一,agent1,dibao,fax\n", "能力“fax”不认识"),
        ("id,name,endpoint,skills,tier\na1,坐席一,agent1,dibao,town\n", "层级“town”不认识"),
        ("id,name,endpoint,skills,colour\na1,坐席一,agent1,dibao,red\n", "字段“colour”：不认识此字段"),
        ("id,name,endpoint,skills\n", "没有坐席"),
    ],
    ids=["level out of range", "empty skills", "unknown capability", "unknown tier", "unknown column", "no rows"],
)
def test_csv_mistakes_rejected(tmp_path, text, message):
    path = tmp_path / "roster.csv"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(RosterError) as caught:
        load_roster(path)

    assert message in str(caught.value)


async def test_store_migrates_and_round_trips(tmp_path):
    database = tmp_path / "node.sqlite3"
    path = acd_path(database)
    assert path.name == "node.sqlite3.acd.sqlite3"

    store = await AcdStore.open(path)
    recorder = AcdStoreRecorder(store)
    pool = AgentPool(load_roster(_roster(tmp_path)), clock=lambda: 5.0,
                     wall_clock=lambda: datetime(2026, 12, 4, 3, 0, tzinfo=UTC),
                     settings=AcdSettings(), recorder=recorder)
    await pool.device_state_changed("agent1", DeviceState.NOT_IN_USE)
    await pool.reserve("call-1", "dibao", timeout_s=0.01)
    await recorder.flush()

    (decision,) = await store.decisions_for("call-1")
    assert decision.chosen_agent == "a1"
    assert decision.decided_at == datetime(2026, 12, 4, 3, 0, tzinfo=UTC)
    events = await store.events_for("a1")
    assert events == [AgentEvent(datetime(2026, 12, 4, 3, 0, tzinfo=UTC), "a1", "available", "reserved",
                                 "reserved", "call-1", None)]
    await store.close()

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == ACD_LATEST_VERSION


def _roster(tmp_path):
    path = tmp_path / "roster.csv"
    path.write_text(CSV, encoding="utf-8")
    return path


def _node_config(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text(
        "node_id: county-330106\ntier: county\nregion_code: '330106'\n"
        f"database: {tmp_path / 'node.sqlite3'}\n"
        "parent: {node_id: city-330100, broker: {port: 18830}}\n"
        "telephony:\n  fastagi: {host: 127.0.0.1, port: 4573}\n"
        "  ami: {host: 127.0.0.1, port: 5038, username: hotline, secret_file: ami.secret}\n"
        "  flow: flow.yaml\n  prompt_catalog: prompts.yaml\n  prompt_sound_dir: /sounds\n"
        f"  roster: {_roster(tmp_path)}\n",
        encoding="utf-8",
    )
    return path


def test_cli_agents_lists_roster(tmp_path):
    result = CliRunner().invoke(acd, ["agents", "--config", str(_node_config(tmp_path))])

    assert result.exit_code == 0, result.output
    assert "坐席一" in result.output
    assert "dibao:4" in result.output
    assert "老年人服务" in result.output


async def _record_decision(tmp_path):
    store = await AcdStore.open(acd_path(tmp_path / "node.sqlite3"))
    recorder = AcdStoreRecorder(store)
    pool = AgentPool(load_roster(_roster(tmp_path)), clock=lambda: 5.0, recorder=recorder)
    await pool.device_state_changed("agent2", DeviceState.NOT_IN_USE)
    await pool.reserve("call-9", "dibao", timeout_s=0.01)
    await recorder.flush()
    await store.close()


def test_cli_explain_prints_chinese(tmp_path):
    config = _node_config(tmp_path)
    asyncio.run(_record_decision(tmp_path))

    result = CliRunner().invoke(acd, ["explain", "call-9", "--config", str(config)])

    assert result.exit_code == 0, result.output
    assert "来电 call-9 共 1 次分配决定" in result.output
    assert "结果：a2" in result.output
    assert "a1：话机状态为 unknown" in result.output


def test_cli_explain_unknown_call(tmp_path):
    config = _node_config(tmp_path)
    asyncio.run(_record_decision(tmp_path))

    result = CliRunner().invoke(acd, ["explain", "call-0", "--config", str(config)])

    assert result.exit_code == 1
    assert "没有来电 call-0 的分配记录" in result.output


def test_settings_file_overrides_defaults(tmp_path):
    path = tmp_path / "acd.yaml"
    path.write_text("wrap_up_s: 0\nno_answer_pause_reason: null\nneed_boosts: {手语: 50}\n", encoding="utf-8")

    settings = load_acd_settings(path)

    assert settings.wrap_up_s == 0
    assert settings.no_answer_pause_reason is None
    assert settings.need_boosts == {"手语": 50}
    assert settings.reservation_ttl_s == AcdSettings().reservation_ttl_s


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("wrap_up_s: -1\n", "字段“wrap_up_s”的值“-1”不能小于 0"),
        ("no_answer_pause_reason: away\n", "暂停原因“away”不在原因表中"),
        ("wrapup_s: 5\n", "字段“wrapup_s”：不认识此字段"),
    ],
    ids=["negative wrap-up", "unknown reason", "misspelt key"],
)
def test_settings_file_mistakes_rejected(tmp_path, text, message):
    path = tmp_path / "acd.yaml"
    path.write_text(text, encoding="utf-8")

    with pytest.raises(AcdSettingsError) as caught:
        load_acd_settings(path)

    assert message in str(caught.value)
