"""Domain: turn numbers into the prompt fragments a caller hears, in Mandarin.

Dynamic speech (a queue position, minutes to wait, a ticket number, digits read back)
is assembled from short pre-rendered prompts instead of being synthesised during the
call. Two readings exist:

- Digit by digit, as telephone and ID numbers are read: 1 is 幺 (``digit_1``), so
  ``12349`` is 幺二三四九.
- Cardinal, for counts: ``12`` is 十二, ``101`` is 一百零一, ``20000`` is 两万. Before a
  measure word (位、分钟) a lone 2 is 两, and 2 before 百、千、万 is always 两.

The functions return prompt ids from ``prompts/zh-CN.yaml`` and do no I/O.
"""

from __future__ import annotations

from ivr.entry import digit_prompts

ZERO = "digit_0"
# Cardinal digits 1 to 9; 2 is 二 here and becomes 两 where Mandarin requires it.
CARDINAL_DIGITS = ("", "num_1", "num_2", "num_3", "num_4", "num_5", "num_6", "num_7", "num_8", "num_9")
LIANG = "num_liang"
SHI = "num_shi"
BAI = "num_bai"
QIAN = "num_qian"
WAN = "num_wan"
DI = "word_di"
UNIT_WEI = "unit_wei"
UNIT_MINUTES = "unit_minutes"

QUEUE_POSITION_INTRO = "queue_position_intro"
QUEUE_AHEAD_INTRO = "queue_ahead_intro"
QUEUE_AHEAD_CALLERS = "queue_ahead_callers"
WAIT_MINUTES_INTRO = "wait_minutes_intro"
TICKET_NUMBER_INTRO = "ticket_number_intro"

# 亿 (10^8) is never needed for queue positions, minutes or counts on a hotline.
MAX_CARDINAL = 99_999_999

# Every fragment the functions below can return, so a build or a test can check the
# catalog has each one.
FRAGMENT_IDS = frozenset(
    {ZERO, LIANG, SHI, BAI, QIAN, WAN, DI, UNIT_WEI, UNIT_MINUTES, QUEUE_POSITION_INTRO, QUEUE_AHEAD_INTRO,
     QUEUE_AHEAD_CALLERS, WAIT_MINUTES_INTRO, TICKET_NUMBER_INTRO}
    | {fragment for fragment in CARDINAL_DIGITS if fragment}
    | {f"digit_{digit}" for digit in "0123456789x"}
)


def digits_fragments(value: str) -> list[str]:
    """Return the fragments that read ``value`` digit by digit, 1 as 幺 and X as 叉.

    Raises ``ValueError`` for any character other than a digit, ``X`` or ``*``.
    """
    return digit_prompts(value)


def cardinal_fragments(number: int, *, measure: bool = False) -> list[str]:
    """Return the fragments that read ``number`` as a Mandarin count.

    ``measure`` is True when a measure word follows (位、分钟), so 2 is read 两 (两位),
    while 12 stays 十二 and 22 stays 二十二. A leading 10 to 19 is read 十… without
    一; inside a larger number it is 一十 (一百一十). Zeros inside a number are read
    once as 零 (一千零一, 一万零一十). Raises ``ValueError`` outside 0 to ``MAX_CARDINAL``.
    """
    if isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= MAX_CARDINAL:
        raise ValueError(f"cannot read {number!r} as a count: expected an integer from 0 to {MAX_CARDINAL}")
    if number == 0:
        return [ZERO]
    if number == 2 and measure:
        return [LIANG]

    high, low = divmod(number, 10_000)
    if high == 0:
        return _below_ten_thousand(low, leading=True)

    fragments = [LIANG, WAN] if high == 2 else _below_ten_thousand(high, leading=True) + [WAN]
    if low:
        # 一万零五十: a gap below the thousands place is read as one 零.
        if low < 1000:
            fragments.append(ZERO)
        fragments += _below_ten_thousand(low, leading=False)
    return fragments


def _below_ten_thousand(number: int, *, leading: bool) -> list[str]:
    """Read 1 to 9999; ``leading`` is True when nothing is spoken before it."""
    places = ((1000, QIAN), (100, BAI), (10, SHI))
    fragments: list[str] = []
    pending_zero = False
    remainder = number

    for value, unit in places:
        digit, remainder = divmod(remainder, value)
        if digit == 0:
            pending_zero = bool(fragments)
            continue
        if pending_zero:
            fragments.append(ZERO)
            pending_zero = False

        if unit == SHI and digit == 1 and leading and not fragments:
            fragments.append(SHI)  # 十二, not 一十二
        elif digit == 2 and unit in (QIAN, BAI):
            fragments += [LIANG, unit]
        else:
            fragments += [CARDINAL_DIGITS[digit], unit]

    if remainder:
        if pending_zero:
            fragments.append(ZERO)
        fragments.append(CARDINAL_DIGITS[remainder])
    return fragments


def queue_position_fragments(position: int) -> list[str]:
    """Return 您现在排在第 N 位 for a 1-based queue position (ordinals keep 二: 第二位)."""
    if position < 1:
        raise ValueError(f"queue position {position} is not 1 or more")
    return [QUEUE_POSITION_INTRO, DI, *cardinal_fragments(position), UNIT_WEI]


def callers_ahead_fragments(count: int) -> list[str]:
    """Return 您前面还有 N 位来电者在等待 for the number of callers queued ahead."""
    return [QUEUE_AHEAD_INTRO, *cardinal_fragments(count, measure=True), QUEUE_AHEAD_CALLERS]


def wait_minutes_fragments(minutes: int) -> list[str]:
    """Return 预计还需等待 N 分钟; a wait below one minute is read as 一分钟."""
    return [WAIT_MINUTES_INTRO, *cardinal_fragments(max(1, minutes), measure=True), UNIT_MINUTES]


def ticket_number_fragments(ticket_id: str) -> list[str]:
    """Return 您的工单编号是 and the ticket id's digits one by one; the hyphens are not spoken.

    A ticket id looks like ``330102-20261205-0001``. Raises ``ValueError`` for any other
    character than digits and hyphens.
    """
    digits = ticket_id.replace("-", "")
    if not digits.isdigit():
        raise ValueError(f"ticket id {ticket_id!r} has characters other than digits and hyphens")
    return [TICKET_NUMBER_INTRO, *digits_fragments(digits)]
