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
        (CITY + "colour: red\n", "不认识的字段“colour”"),
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
