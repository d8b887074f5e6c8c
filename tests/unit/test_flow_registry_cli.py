"""`hotline flows reload / rollback / versions`: Chinese output over the store the node uses."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from hotline.cli import main
from ivr.flow_registry import FlowRegistry, store_dir_for_database
from tests.unit.test_flow_registry import BAD_FLOW, BASE_FLOW, PROMPT_IDS, ROOT, edited_flow


@pytest.fixture
def county(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Write a county config; return (config, flow file, database path)."""
    flow_file = tmp_path / "12349.yaml"
    flow_file.write_text(BASE_FLOW, encoding="utf-8")
    database = tmp_path / "county.sqlite3"
    config = tmp_path / "county.yaml"
    config.write_text(f"""\
node_id: county-test
tier: county
region_code: "330106"
database: {database}
parent:
  node_id: city-test
  broker: {{port: 1883}}
telephony:
  fastagi: {{port: 0}}
  ami: {{port: 5038, username: hotline, secret_file: {tmp_path / 'ami-secret'}}}
  flow: {flow_file}
  prompt_catalog: {ROOT / 'prompts' / 'zh-CN.yaml'}
  prompt_sound_dir: /var/lib/asterisk/sounds
  roster: {tmp_path / 'roster.yaml'}
""", encoding="utf-8")
    return config, flow_file, database


def flows_command(*args: str):
    return CliRunner().invoke(main, ["flows", *args])


def test_reload_activates_and_node_store_sees_it(county):
    config, flow_file, database = county

    result = flows_command("reload", "--config", str(config), "--operator", "王五", "--reason", "首次上线")

    version = hashlib.sha256(BASE_FLOW.encode()).hexdigest()
    assert result.exit_code == 0, result.output
    assert f"已生效：版本 {version[:12]}，第 1 次变更" in result.output
    node_view = FlowRegistry.for_database(database, prompt_ids=PROMPT_IDS)
    assert node_view.current().version == version
    assert node_view.active().operator == "王五"


def test_reload_unchanged(county):
    config, _, _ = county
    flows_command("reload", "--config", str(config))

    result = flows_command("reload", "--config", str(config))

    assert result.exit_code == 0
    assert "已经是当前生效的版本" in result.output


def test_reload_rejects_bad_edit(county):
    config, flow_file, database = county
    flows_command("reload", "--config", str(config))
    flow_file.write_text(BAD_FLOW, encoding="utf-8")

    result = flows_command("reload", "--config", str(config))

    assert result.exit_code == 1
    assert f"{flow_file.resolve()}:" in result.output
    assert "跳转目标“chose_dibaoo”不存在" in result.output
    assert "没有生效；正在运行的版本保持不变" in result.output
    registry = FlowRegistry.for_database(database, prompt_ids=PROMPT_IDS)
    assert registry.current().version == hashlib.sha256(BASE_FLOW.encode()).hexdigest()


def test_rollback_and_versions(county):
    config, flow_file, _ = county
    flows_command("reload", "--config", str(config))
    flow_file.write_text(edited_flow("二版"), encoding="utf-8")
    flows_command("reload", "--config", str(config))
    first = hashlib.sha256(BASE_FLOW.encode()).hexdigest()

    rolled = flows_command("rollback", "--config", str(config), "--to", first[:8], "--operator", "李四",
                           "--reason", "二版菜单有误")
    listing = flows_command("versions", "--config", str(config))

    assert rolled.exit_code == 0, rolled.output
    assert f"已生效：版本 {first[:12]}，第 3 次变更" in rolled.output
    assert "流程文件本身没有改动" in rolled.output
    assert listing.exit_code == 0, listing.output
    lines = listing.output.splitlines()
    rows = [line for line in lines if first[:12] in line or hashlib.sha256(edited_flow("二版").encode()).hexdigest()[:12] in line]
    assert len(rows) == 3
    assert "3（当前）" in rows[0]
    assert "回滚" in rows[0]
    assert "李四" in rows[0]
    assert rows[2].lstrip("│ ").startswith("1")


def test_rollback_without_previous(county):
    config, _, _ = county
    flows_command("reload", "--config", str(config))

    result = flows_command("rollback", "--config", str(config))

    assert result.exit_code == 1
    assert result.output.startswith("错误：没有上一个版本可以回滚")


def test_versions_of_empty_store(county):
    config, _, database = county

    result = flows_command("versions", "--config", str(config))

    assert result.exit_code == 0
    assert f"版本库 {store_dir_for_database(database)} 里还没有生效过的流程" in result.output


def test_commands_need_county_config(tmp_path):
    config = tmp_path / "city.yaml"
    config.write_text(f"""\
node_id: city-test
tier: city
region_code: "330100"
database: {tmp_path / 'city.sqlite3'}
broker: {{port: 1883}}
""", encoding="utf-8")

    result = flows_command("versions", "--config", str(config))

    assert result.exit_code == 1
    assert "不是县级节点的配置" in result.output


def test_missing_config(tmp_path):
    result = flows_command("reload", "--config", str(tmp_path / "none.yaml"))

    assert result.exit_code == 1
    assert "错误：找不到配置文件" in result.output
