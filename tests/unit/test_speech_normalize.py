"""Unit tests: Chinese prompt text to tone-numbered pinyin for espeak-ng cmn-latn-pinyin."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech.catalog import load_catalog
from speech.normalize import NORMALIZER_VERSION, NormalizationError, normalize

CATALOG = Path(__file__).resolve().parents[2] / "prompts" / "zh-CN.yaml"


def pinyin(text: str) -> str:
    return normalize(text).pinyin


class TestNumbers:
    def test_hotline_number_read_digit_by_digit_with_yao(self) -> None:
        assert pinyin("12349") == "yao1 er4 san1 si4 jiu3"

    def test_hotline_number_inside_sentence(self) -> None:
        result = normalize("这里是12349民政服务热线")

        assert "yao1 er4 san1 si4 jiu3 min2 zheng4" in result.pinyin
        assert result.spoken == "这里是幺二三四九民政服务热线"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("20000", "er4 ling2 ling2 ling2 ling2"),
            ("13800001111", "yao1 san1 ba1 ling2 ling2 ling2 ling2 yao1 yao1 yao1 yao1"),
            ("010", "ling2 yao1 ling2"),
            ("拨打110", "bo1 da3 yao1 yao1 ling2"),
            ("热线：120", "re4 xian4 , yao1 er4 ling2"),
            ("010-12345678", "ling2 yao1 ling2 , yao1 er4 san1 si4 wu3 liu4 qi1 ba1"),
        ],
    )
    def test_phone_numbers_read_digit_by_digit(self, text: str, expected: str) -> None:
        assert pinyin(text) == expected

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("3个工作日", "san1 ge4 gong1 zuo4 ri4"),
            ("2个工作日", "liang3 ge4 gong1 zuo4 ri4"),
            ("等待15分钟", "deng3 dai4 shi2 wu3 fen1 zhong1"),
            ("105", "yi4 bai3 ling2 wu3"),
            ("110", "yi4 bai3 yi1 shi2"),
            ("2000", "liang3 qian1"),
            ("1001", "yi4 qian1 ling2 yi1"),
            ("10", "shi2"),
            ("20", "er4 shi2"),
            ("3.5", "san1 dian3 wu3"),
            ("95%", "bai3 fen1 zhi1 jiu3 shi2 wu3"),
        ],
    )
    def test_short_numbers_read_as_quantities(self, text: str, expected: str) -> None:
        assert pinyin(text) == expected

    def test_key_press_reads_yi_not_yao(self) -> None:
        assert pinyin("低保请按1") == "di1 bao3 qing3 an4 yi1"
        assert pinyin("人工服务请按0") == "ren2 gong1 fu2 wu4 qing3 an4 ling2"

    def test_year_read_digit_by_digit(self) -> None:
        assert pinyin("2021年") == "er4 ling2 er4 yi1 nian2"

    def test_clock_time(self) -> None:
        assert pinyin("9:00") == "jiu3 dian3"
        assert pinyin("14:05") == "shi2 si4 dian3 ling2 wu3 fen1"


class TestPolyphones:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("请重新按键", "qing3 chong2 xin1 an4 jian4"),
            ("正在为您重新转接", "zheng4 zai4 wei4 nin2 chong2 xin1 zhuan3 jie1"),
            ("重要通知", "zhong4 yao4 tong1 zhi1"),
            ("重拨", "chong2 bo1"),
            ("行动不便", "xing2 dong4 bu2 bian4"),
            ("银行卡", "yin2 hang2 ka3"),
            ("还有其他问题", "hai2 you3 qi2 ta1 wen4 ti2"),
            ("还款", "huan2 kuan3"),
            ("等待时间可能较长", "deng3 dai4 shi2 jian1 ke3 neng2 jiao4 chang2"),
            ("长期", "chang2 qi1"),
            ("长时间", "chang2 shi2 jian1"),
            ("院长", "yuan4 zhang3"),
            ("特困供养", "te4 kun4 gong1 yang3"),
            ("调休", "tiao2 xiu1"),
            ("为您服务", "wei4 nin2 fu2 wu4"),
            ("请保持电话畅通", "qing3 bao3 chi2 dian4 hua4 chang4 tong1"),
        ],
    )
    def test_polyphone_reading_from_context(self, text: str, expected: str) -> None:
        assert pinyin(text) == expected


class TestTones:
    def test_neutral_tone_written_as_five(self) -> None:
        assert pinyin("您的来电") == "nin2 de5 lai2 dian4"
        assert pinyin("我们") == "wo3 men5"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("请您稍等一下", "qing3 nin2 shao1 deng3 yi2 xia4"),
            ("一个", "yi2 ge4"),
            ("一般", "yi4 ban1"),
            ("一百", "yi4 bai3"),
            ("统一", "tong3 yi1"),
            ("第一", "di4 yi1"),
            ("看一看", "kan4 yi1 kan4"),
            ("十一", "shi2 yi1"),
            ("不要挂机", "bu2 yao4 gua4 ji1"),
            ("不能", "bu4 neng2"),
        ],
    )
    def test_yi_and_bu_tone_changes(self, text: str, expected: str) -> None:
        assert pinyin(text) == expected


class TestPauses:
    def test_chinese_punctuation_becomes_pauses(self) -> None:
        assert pinyin("您好，请稍等。再见！") == "nin2 hao3 , qing3 shao1 deng3 . zai4 jian4"

    def test_punctuation_runs_collapse_to_longest_pause(self) -> None:
        assert pinyin("您好，……请稍等") == "nin2 hao3 . qing3 shao1 deng3"

    def test_leading_and_trailing_pauses_dropped(self) -> None:
        assert pinyin("“您好。”") == "nin2 hao3"

    def test_whitespace_is_silent(self) -> None:
        assert pinyin("请按1， 特困") == "qing3 an4 yi1 , te4 kun4"


class TestUnreadable:
    @pytest.mark.parametrize("text", ["请登录APP查询", "您好😀", "费用$5"])
    def test_text_the_voice_cannot_read_rejected(self, text: str) -> None:
        with pytest.raises(NormalizationError, match="无法朗读"):
            normalize(text)


class TestCatalogTexts:
    def test_every_catalog_text_normalizes(self) -> None:
        catalog = load_catalog(CATALOG)

        for prompt in catalog.prompts:
            result = normalize(prompt.text)
            assert result.syllables > 0, prompt.prompt_id
            assert all(token in {",", "."} or token[-1] in "12345" for token in result.pinyin.split()), prompt.prompt_id

    def test_syllable_count_matches_pinyin(self) -> None:
        result = normalize("您好，这里是12349民政服务热线。")

        syllables = [token for token in result.pinyin.split() if token not in {",", "."}]
        assert result.syllables == len(syllables) == 16

    def test_version_is_recorded(self) -> None:
        assert NORMALIZER_VERSION
