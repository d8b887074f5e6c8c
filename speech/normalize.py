"""Speech text layer: turn Chinese prompt text into tone-numbered pinyin for espeak-ng.

espeak-ng speaks Mandarin offline only with the voice ``cmn-latn-pinyin``, which reads
pinyin syllables with tone numbers (``ni3 hao3``, ``de5`` for the neutral tone) and treats
``,`` and ``.`` as short and long pauses. It cannot pick the reading of a polyphone from
context and misreads long digit runs, so this module resolves both before synthesis:

* numbers of 5 or more digits, numbers with a leading zero, numbers after a phone word
  (电话, 热线, 拨打 …) and hyphenated numbers are read digit by digit, with 幺 (yao1) for 1;
* key presses (按1) and 4-digit years (2024年) are read digit by digit with 一 (yi1);
* other numbers are read as quantities (12 → 十二, 105 → 一百零五, 2个 → 两个, 95% → 百分之九十五);
* 一 and 不 take their tone changes (一下 yi2 xia4, 不要 bu2 yao4), because the voice does not;
* Chinese and ASCII punctuation become the pauses ``,`` and ``.``.

Text the voice would mispronounce silently (Latin letters, emoji, unknown symbols) raises
``NormalizationError`` so the catalog author rewrites it in Chinese.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pypinyin import Style, lazy_pinyin

# Bump whenever a change here alters the pinyin produced for some text: the prompt build
# hashes this value, so every prompt is re-synthesised with the new rules.
NORMALIZER_VERSION = "1"

SHORT_PAUSE = ","
LONG_PAUSE = "."


class NormalizationError(ValueError):
    """Text contains characters the Mandarin voice cannot read."""


@dataclass(frozen=True, slots=True)
class NormalizedText:
    """One prompt text prepared for the voice.

    ``spoken`` is the Chinese text with numbers written out as they are read, ``pinyin``
    the string passed to espeak-ng, ``syllables`` the number of spoken syllables.
    """

    source: str
    spoken: str
    pinyin: str
    syllables: int


# Phrases pypinyin 0.55 reads wrongly in hotline texts. They are matched before the
# text reaches pypinyin, longest first.
# NOTE: matching is by substring, so a phrase that straddles two words (提供 + 养老 in
# "提供养老" contains 供养) also takes this reading; keep entries whose reading is right
# in every hotline text.
PHRASE_READINGS: dict[str, tuple[str, ...]] = {
    "供养": ("gong1", "yang3"),  # 特困供养: provide for (gòng yǎng is "make offerings")
    "还款": ("huan2", "kuan3"),
    "调休": ("tiao2", "xiu1"),
    "重拨": ("chong2", "bo1"),
    "重听": ("chong2", "ting1"),  # listen again (zhòng tīng is "hard of hearing")
    "重按": ("chong2", "an4"),
    "长时间": ("chang2", "shi2", "jian1"),
    # 长 after a degree word is the adjective "long" (cháng), never zhǎng.
    "较长": ("jiao4", "chang2"),
    "很长": ("hen3", "chang2"),
    "太长": ("tai4", "chang2"),
    "过长": ("guo4", "chang2"),
    "更长": ("geng4", "chang2"),
    "最长": ("zui4", "chang2"),
}

_PAUSES = {
    **dict.fromkeys("，,、；;：:—-（）()【】[]「」『』“”‘’\"'《》<>/", SHORT_PAUSE),
    **dict.fromkeys("。.！!？?…", LONG_PAUSE),
}
_SILENT = set(" \t\r\n\u3000～~·")

_DIGIT_READINGS = {
    "0": "ling2", "1": "yi1", "2": "er4", "3": "san1", "4": "si4",
    "5": "wu3", "6": "liu4", "7": "qi1", "8": "ba1", "9": "jiu3",
}
_DIGIT_CHARS = dict(zip("0123456789", "零一二三四五六七八九"))

# Words after which a number is a phone or hotline number, read digit by digit.
_PHONE_WORDS = ("电话", "热线", "号码", "拨打", "致电", "手机", "座机", "专线", "分机", "工号", "传真")

# Measure words after which a lone 2 is read 两 rather than 二.
_MEASURE_WORDS = set("个位名天次种件份人项条户年月周岁元块分秒点") | {"小时", "分钟", "星期", "工作日"}

_HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3007"
_TOKEN_RE = re.compile(
    rf"(?P<time>\d{{1,2}}:\d{{2}})(?!\d)"
    rf"|(?P<grouped>\d+(?:-\d+)+)"
    rf"|(?P<number>\d+(?:\.\d+)?)(?P<percent>%|％)?"
    rf"|(?P<han>[{_HAN}]+)"
    rf"|(?P<other>.)",
    re.DOTALL,
)
_SYLLABLE_RE = re.compile(r"^[a-z]+[1-5]$")
_NUMERAL_CHARS = set("零〇一二两三四五六七八九十百千万亿幺")
_DIGIT_NUMERALS = set("零〇一二两三四五六七八九幺")

# First characters of words that end in 一 and keep its first tone (统一, 唯一, 之一).
# NOTE: pypinyin ships no word list to find other word ends, so 一 after any other
# character is read as the start of a word (一下, 一个) and changes tone.
_WORDS_ENDING_IN_YI = set("统唯之逐单专")


def normalize(text: str) -> NormalizedText:
    """Convert prompt text to the pinyin string espeak-ng voice ``cmn-latn-pinyin`` reads.

    Raises ``NormalizationError`` naming the characters the voice cannot read.
    """
    spoken_parts: list[str] = []
    output: list[str] = []
    syllable_count = 0
    unreadable: list[str] = []

    for match in _TOKEN_RE.finditer(text):
        kind = "number" if match.group("number") else (match.lastgroup or "other")
        value = match.group(kind)
        before = text[: match.start()]
        after = text[match.end():]

        if kind == "other":
            pause = _pause_for(value)
            if pause is not None:
                _append_pause(output, pause)
                spoken_parts.append(value)
            elif value not in _SILENT:
                unreadable.append(value)
            continue

        if kind == "han":
            chars, syllables = value, _han_to_pinyin(value)
        else:
            chars, syllables = _read_number_token(kind, match, before, after)

        spoken_parts.append(chars)
        output.extend(syllables)
        syllable_count += len(syllables)

    if unreadable:
        shown = "".join(dict.fromkeys(unreadable))
        raise NormalizationError(
            f"文本含有普通话语音无法朗读的字符「{shown}」：请改写为汉字（字母、符号要写成读音），文本：{text}"
        )

    # A trailing pause adds nothing: espeak-ng already ends every utterance with one.
    while output and output[-1] in (SHORT_PAUSE, LONG_PAUSE):
        output.pop()

    return NormalizedText(
        source=text,
        spoken="".join(spoken_parts),
        pinyin=" ".join(output),
        syllables=syllable_count,
    )


def _pause_for(char: str) -> str | None:
    return _PAUSES.get(char)


def _append_pause(output: list[str], pause: str) -> None:
    # Collapse runs of punctuation into one pause, keeping the longer one.
    if not output:
        return
    if output[-1] == LONG_PAUSE:
        return
    if output[-1] == SHORT_PAUSE:
        output[-1] = pause
        return
    output.append(pause)


# ---------------------------------------------------------------------------
# Numbers


def _read_number_token(kind: str, match: re.Match[str], before: str, after: str) -> tuple[str, list[str]]:
    if kind == "time":
        return _read_clock_time(match.group("time"))

    if kind == "grouped":
        return _read_grouped_digits(match.group("grouped"))

    number = match.group("number")
    if match.group("percent"):
        chars = "百分之" + _quantity_chars(number, after="")
        return chars, _numeral_pinyin(chars)

    integer_part = number.split(".")[0]
    if "." not in number and _is_key_press(before):
        return _read_digits(number, one="yi1")
    if "." not in number and len(integer_part) == 4 and after.startswith("年"):
        return _read_digits(number, one="yi1")
    if "." not in number and _is_phone_number(integer_part, before):
        return _read_digits(number, one="yao1")

    chars = _quantity_chars(number, after=after)
    return chars, _numeral_pinyin(chars)


def _is_key_press(before: str) -> bool:
    return before.rstrip().endswith(("按", "按键", "键入"))


def _is_phone_number(digits: str, before: str) -> bool:
    if len(digits) >= 5:
        return True
    if len(digits) >= 2 and digits.startswith("0"):
        return True
    context = before.rstrip(" ：:是为")[-4:]
    return any(context.endswith(word) for word in _PHONE_WORDS)


def _read_digits(digits: str, *, one: str) -> tuple[str, list[str]]:
    chars = "".join("幺" if one == "yao1" and digit == "1" else _DIGIT_CHARS[digit] for digit in digits)
    syllables = [one if digit == "1" else _DIGIT_READINGS[digit] for digit in digits]
    return chars, syllables


def _read_grouped_digits(value: str) -> tuple[str, list[str]]:
    # 010-12345678 or 400-123-4567: every group digit by digit, a short pause between groups.
    chars: list[str] = []
    syllables: list[str] = []
    for index, group in enumerate(value.split("-")):
        if index:
            chars.append("，")
            syllables.append(SHORT_PAUSE)
        group_chars, group_syllables = _read_digits(group, one="yao1")
        chars.append(group_chars)
        syllables.extend(group_syllables)
    return "".join(chars), syllables


def _read_clock_time(value: str) -> tuple[str, list[str]]:
    hours, minutes = (int(part) for part in value.split(":"))
    chars = _integer_chars(hours, lone_two_as_liang=True) + "点"
    if minutes:
        chars += ("零" if minutes < 10 else "") + _integer_chars(minutes) + "分"
    return chars, _numeral_pinyin(chars)


def _quantity_chars(number: str, *, after: str) -> str:
    integer_text, _, fraction = number.partition(".")
    integer = int(integer_text)
    before_measure = any(after.startswith(word) for word in _MEASURE_WORDS)
    chars = _integer_chars(integer, lone_two_as_liang=before_measure and not fraction)
    if fraction:
        chars += "点" + "".join(_DIGIT_CHARS[digit] for digit in fraction)
    return chars


def _integer_chars(value: int, *, lone_two_as_liang: bool = False) -> str:
    """Write 0 <= value < 10**8 as Chinese numerals (105 → 一百零五, 10 → 十, 2000 → 两千)."""
    if value == 2 and lone_two_as_liang:
        return "两"
    if value < 10:
        return _DIGIT_CHARS[str(value)]
    if value >= 10**8:
        # Quantities this large never occur in prompts; read them digit by digit.
        return "".join(_DIGIT_CHARS[digit] for digit in str(value))

    high, low = divmod(value, 10_000)
    if high == 0:
        return _below_ten_thousand(low, leading=True)

    chars = _below_ten_thousand(high, leading=True) + "万"
    if low:
        chars += ("零" if low < 1000 else "") + _below_ten_thousand(low, leading=False)
    return chars


def _below_ten_thousand(value: int, *, leading: bool) -> str:
    units = ((1000, "千"), (100, "百"), (10, "十"))
    chars: list[str] = []
    pending_zero = False
    for unit_value, unit_char in units:
        digit, value = divmod(value, unit_value)
        if digit == 0:
            pending_zero = bool(chars)
            continue
        if pending_zero:
            chars.append("零")
            pending_zero = False
        if unit_value == 10 and digit == 1 and leading and not chars:
            chars.append("十")  # 10..19 at the start read 十, 十五
        elif digit == 2 and unit_value >= 1000 and not chars:
            chars.append("两" + unit_char)  # 2000 → 两千
        else:
            chars.append(_DIGIT_CHARS[str(digit)] + unit_char)
    if value:
        if pending_zero:
            chars.append("零")
        chars.append(_DIGIT_CHARS[str(value)])
    return "".join(chars)


def _numeral_pinyin(chars: str) -> list[str]:
    return _han_to_pinyin(chars)


# ---------------------------------------------------------------------------
# Chinese characters


def _han_to_pinyin(text: str) -> list[str]:
    syllables: list[str] = []
    chars: list[str] = []
    position = 0
    while position < len(text):
        phrase = _phrase_at(text, position)
        if phrase:
            chars.extend(phrase)
            syllables.extend(PHRASE_READINGS[phrase])
            position += len(phrase)
            continue

        end = position + 1
        while end < len(text) and not _phrase_at(text, end):
            end += 1
        chunk = text[position:end]
        chars.extend(chunk)
        syllables.extend(_pypinyin_words(chunk))
        position = end

    _check_syllables(text, syllables)
    return _apply_tone_changes(chars, syllables)


def _phrase_at(text: str, position: int) -> str | None:
    for phrase in sorted(PHRASE_READINGS, key=len, reverse=True):
        if text.startswith(phrase, position):
            return phrase
    return None


def _pypinyin_words(chunk: str) -> list[str]:
    # Characters without a reading come back unchanged and are rejected by _check_syllables.
    return lazy_pinyin(chunk, style=Style.TONE3, neutral_tone_with_five=True, errors="default")


def _check_syllables(text: str, syllables: list[str]) -> None:
    unknown = [syllable for syllable in syllables if not _SYLLABLE_RE.match(syllable)]
    if unknown:
        raise NormalizationError(f"汉字「{''.join(unknown)}」没有拼音读音：请换用常用字，文本：{text}")


def _tone(syllable: str) -> str:
    return syllable[-1]


def _apply_tone_changes(chars: list[str], syllables: list[str]) -> list[str]:
    """Apply the tone changes of 一 and 不 that espeak-ng's pinyin voice does not make.

    一 takes tone 2 before a fourth tone and tone 4 before other tones (一下, 一百). It
    keeps tone 1 at the end of a word (统一), after another numeral or before a digit
    (十一, 一百一十), after 第, and between repeated verbs (看一看). 不 takes tone 2
    before a fourth tone.
    """
    changed = list(syllables)
    for index, char in enumerate(chars[:-1]):
        following = syllables[index + 1]
        previous_char = chars[index - 1] if index else ""
        next_char = chars[index + 1]

        if char == "不" and syllables[index] == "bu4" and _tone(following) == "4":
            changed[index] = "bu2"
            continue

        if char != "一" or syllables[index] != "yi1":
            continue
        in_number = previous_char in _NUMERAL_CHARS or next_char in _DIGIT_NUMERALS
        is_ordinal = previous_char == "第"
        between_repeats = previous_char == next_char
        ends_word = previous_char in _WORDS_ENDING_IN_YI
        if ends_word or in_number or is_ordinal or between_repeats:
            continue
        if _tone(following) == "4" or (next_char == "个" and _tone(following) == "5"):
            changed[index] = "yi2"
        elif _tone(following) in "123":
            changed[index] = "yi4"
    return changed
