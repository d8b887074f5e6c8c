"""Unit tests: loading and checking the prompt catalog YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech.catalog import CatalogError, load_catalog

CATALOG = Path(__file__).resolve().parents[2] / "prompts" / "zh-CN.yaml"

REQUIRED_IDS = {
    "welcome", "main_menu", "invalid_key", "no_input", "transfer_agent", "queue_wait", "no_agent",
    "agent_failed", "goodbye", "prompt_fallback", "system_error", "category_dibao", "category_tekun",
    "category_linshi", "category_ertong", "category_yanglao", "category_liulang", "category_zhengce",
}


def write_catalog(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(body, encoding="utf-8")
    return path


class TestRepositoryCatalog:
    def test_contains_every_required_prompt(self) -> None:
        catalog = load_catalog(CATALOG)

        assert REQUIRED_IDS <= set(catalog)

    def test_voice_and_rate(self) -> None:
        catalog = load_catalog(CATALOG)

        assert catalog.voice == "cmn-latn-pinyin"
        assert 120 <= catalog.rate_wpm <= 175

    def test_main_menu_names_every_key(self) -> None:
        text = load_catalog(CATALOG).get("main_menu").text

        for key_and_label in ["低保请按1", "特困供养请按2", "临时救助请按3", "儿童福利请按4",
                              "养老服务请按5", "流浪乞讨救助请按6", "政策咨询请按7", "人工服务请按0"]:
            assert key_and_label in text

    def test_welcome_names_the_hotline(self) -> None:
        assert "12349" in load_catalog(CATALOG).get("welcome").text

    def test_callback_prompts_promise_a_callback(self) -> None:
        catalog = load_catalog(CATALOG)

        assert "回电" in catalog.get("no_agent").text
        assert "回电" in catalog.get("system_error").text


class TestLoading:
    def test_short_and_long_entry_forms(self, tmp_path: Path) -> None:
        path = write_catalog(tmp_path, "rate_wpm: 140\nprompts:\n  a: 你好。\n  b:\n    text: 再见。\n    speed: 0.5\n    note: 慢\n")

        catalog = load_catalog(path)

        assert [prompt.prompt_id for prompt in catalog.prompts] == ["a", "b"]
        assert catalog.get("a").speed == 1.0
        assert catalog.get("b").note == "慢"
        assert catalog.rate_for(catalog.get("b")) == 80  # 70 is clamped to espeak-ng's minimum
        assert "a" in catalog
        assert len(catalog) == 2

    @pytest.mark.parametrize(
        ("body", "fragment"),
        [
            ("prompts:\n  Welcome: 你好\n", "编号 'Welcome' 无效"),
            ("prompts:\n  a: 你好\n  b:\n    speed: 1.0\n", "第 3 行：提示音 b 缺少 text"),
            ("prompts:\n  a:\n    text: 你好\n    speed: 3\n", "speed 为 3"),
            ("prompts:\n  a:\n    text: 你好\n    volume: 1\n", "未知字段 volume"),
            ("prompts: {}\n", "没有任何提示音"),
            ("rate_wpm: 20\nprompts:\n  a: 你好\n", "rate_wpm 为 20"),
            ("prompt:\n  a: 你好\n", "未知的顶层字段 prompt"),
            ("prompts:\n  a: 你好\n  a: 再见\n", "不是合法的 YAML"),
        ],
    )
    def test_malformed_catalog_rejected_with_line(self, tmp_path: Path, body: str, fragment: str) -> None:
        path = write_catalog(tmp_path, body)

        with pytest.raises(CatalogError) as raised:
            load_catalog(path)

        assert fragment in str(raised.value)
        assert str(path) in str(raised.value)

    def test_missing_file_rejected(self, tmp_path: Path) -> None:
        with pytest.raises(CatalogError, match="不存在"):
            load_catalog(tmp_path / "missing.yaml")
