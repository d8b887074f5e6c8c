"""Node configuration files: valid files load, mistakes are rejected in Chinese with the fix."""

import pytest

from hotline.config import ConfigError, load_node_config

CITY = """\
node_id: city-330100
tier: city
region_code: "330100"
database: /tmp/city.sqlite3
broker: {port: 18830}
"""


def _write(tmp_path, text):
    path = tmp_path / "node.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_city_config_loads(tmp_path):
    config = load_node_config(_write(tmp_path, CITY))

    assert config.tier == "city"
    assert config.broker.port == 18830


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (CITY.replace('"330100"', '"339999"'), "339999"),
        (CITY.replace("tier: city", "tier: town"), "tier"),
        (CITY.replace("broker: {port: 18830}\n", ""), "broker"),
        (CITY.replace("node_id: city-330100", "node_id: City 1"), "node_id"),
        (CITY + "colour: red\n", "字段“colour”：不认识此字段"),
        (CITY.replace("tier: city", "tier: county").replace("330100", "330106"), "县级节点必须"),
        (CITY.replace("tier: city", "tier: county"), "请把 tier 改为 city"),
    ],
    ids=["unknown region", "bad tier", "no broker", "bad node id", "unknown field", "county without telephony",
         "tier does not match region"],
)
def test_config_mistake_rejected(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_node_config(_write(tmp_path, text))

    assert message in str(caught.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="找不到配置文件"):
        load_node_config(tmp_path / "absent.yaml")


def test_value_errors_explained_in_chinese(tmp_path):
    text = CITY.replace("broker: {port: 18830}", "broker: {port: 230320}").replace('"330100"', "330100")

    with pytest.raises(ConfigError) as caught:
        load_node_config(_write(tmp_path, text))

    message = str(caught.value)
    assert "字段“broker.port”的值“230320”不能大于 65535" in message
    assert "请加英文引号" in message
    assert "Input should" not in message


def test_yaml_syntax_error_located(tmp_path):
    with pytest.raises(ConfigError, match="YAML 格式有误（第 3 行第 1 列）"):
        load_node_config(_write(tmp_path, "node_id: a\ntier: [city\n"))


def test_missing_telephony_files_named(tmp_path):
    text = """\
node_id: county-330106
tier: county
region_code: "330106"
database: /tmp/county.sqlite3
parent: {node_id: city-330100, broker: {port: 18830}}
telephony:
  fastagi: {port: 0}
  ami: {port: 5038, username: hotline, secret_file: /nonexistent/secret}
  flow: /nonexistent/12349.yml
  prompt_catalog: /nonexistent/zh-CN.yaml
  prompt_sound_dir: /sounds
  roster: /nonexistent/roster.yaml
"""
    with pytest.raises(ConfigError) as caught:
        load_node_config(_write(tmp_path, text), require_files=True)

    message = str(caught.value)
    assert "telephony.flow：/nonexistent/12349.yml" in message
    assert "telephony.ami.secret_file：/nonexistent/secret" in message
