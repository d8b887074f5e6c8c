"""Domain: China's working-day calendar (法定节假日 and 调休) and working-hours arithmetic; no I/O but file loading.

The State Council publishes each year's holidays and make-up working days (调休上班) once a
year. ``HolidayData.from_chinese_calendar`` takes them from the ``chinesecalendar`` package,
and an admin override file adds or corrects single days and may declare a whole year that the
package does not cover yet. A date that neither source covers is never silently treated as
an ordinary Monday-to-Friday date. The result for it carries ``provisional=True``, and so
does every deadline computed across it, with a warning in the log.

Deadlines in working days follow the Civil Code of the PRC, articles 201 and 203: the day of
the start is not counted, and the period ends when business stops on its last day (here the
end of the last working-hours period of that day). All instants are aware datetimes in UTC;
days and working hours are Asia/Shanghai, which has no daylight saving time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import chinese_calendar
import structlog
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from tickets.model import CHINA_TZ, require_utc

log = structlog.get_logger(__name__)

# A deadline search gives up after this many calendar days, so a calendar without any
# working day (a broken override file) raises instead of looping forever.
MAX_SEARCH_DAYS = 3660

_HOURS_RE = re.compile(r"^(?P<start>[0-2][0-9]:[0-5][0-9])-(?P<end>[0-2][0-9]:[0-5][0-9])$")
_WEEKDAY_NAMES = ("周一", "周二", "周三", "周四", "周五", "周六", "周日")


class DayKind(enum.Enum):
    """Kind of a calendar date for a government office in mainland China."""

    WORKDAY = "workday"
    WEEKEND = "weekend"
    HOLIDAY = "holiday"
    MAKEUP_WORKDAY = "makeup_workday"
    OVERRIDE_WORKDAY = "override_workday"
    OVERRIDE_DAY_OFF = "override_day_off"

    @property
    def is_working(self) -> bool:
        return self in (DayKind.WORKDAY, DayKind.MAKEUP_WORKDAY, DayKind.OVERRIDE_WORKDAY)

    @property
    def label(self) -> str:
        return _DAY_KIND_LABELS[self]


_DAY_KIND_LABELS = {
    DayKind.WORKDAY: "工作日",
    DayKind.WEEKEND: "周末",
    DayKind.HOLIDAY: "法定节假日",
    DayKind.MAKEUP_WORKDAY: "调休上班",
    DayKind.OVERRIDE_WORKDAY: "工作日（本地调整）",
    DayKind.OVERRIDE_DAY_OFF: "休息日（本地调整）",
}


@dataclass(frozen=True, slots=True)
class CalendarDay:
    """One Asia/Shanghai date: working or not, the holiday name, where that came from.

    ``provisional`` is true when no data source covers the date, so the result comes only from the
    Monday-to-Friday rule, which a later State Council notice may contradict.
    """

    day: date
    kind: DayKind
    holiday_name: str | None
    source: str
    provisional: bool

    @property
    def is_working(self) -> bool:
        return self.kind.is_working


@dataclass(frozen=True, slots=True)
class Deadline:
    """A computed instant (UTC) and the uncovered dates its computation relied on."""

    at: datetime
    provisional_days: tuple[date, ...] = ()

    @property
    def provisional(self) -> bool:
        return bool(self.provisional_days)


@dataclass(frozen=True, slots=True)
class WorkingDuration:
    """An amount of working time and the uncovered dates it was measured across."""

    amount: timedelta
    provisional_days: tuple[date, ...] = ()

    @property
    def provisional(self) -> bool:
        return bool(self.provisional_days)


# ---------------------------------------------------------------------------- configuration errors


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem in an admin's YAML file, located by file and line."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class CalendarConfigError(ValueError):
    """A calendar or SLA file that must not be used; ``issues`` lists every problem, in Chinese."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


class _DatesAsTextConstructor(RoundTripConstructor):
    """Round-trip constructor that leaves YAML timestamps as text, so an invalid date gets a located message."""


_DatesAsTextConstructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def load_yaml_document(path: Path) -> tuple[str, Any]:
    """Read a YAML file with ruamel's round-trip loader, which keeps line numbers and rejects duplicate keys."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CalendarConfigError([ConfigIssue(source, 1, f"找不到文件 {source}，请检查路径")]) from None
    except UnicodeDecodeError:
        raise CalendarConfigError([ConfigIssue(source, 1, "文件不是 UTF-8 编码，请另存为 UTF-8")]) from None

    yaml = YAML(typ="rt")
    yaml.Constructor = _DatesAsTextConstructor
    try:
        return source, yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        problem = exc.problem or exc.context or "语法错误"
        raise CalendarConfigError(
            [ConfigIssue(source, line, f"YAML 格式错误（{problem}），请检查缩进、冒号和引号")]
        ) from None


def line_of(container: Any, key: Any, *, value: bool = False) -> int:
    """Return the 1-based line of a key (or of its value) in a ruamel container, or of the container."""
    if not hasattr(container, "lc"):
        return 1
    try:
        line, _column = container.lc.value(key) if value else container.lc.key(key)
    except (KeyError, IndexError, TypeError):
        return container.lc.line + 1
    return line + 1


# ---------------------------------------------------------------------------- working hours


@dataclass(frozen=True, slots=True)
class WorkingHours:
    """Office hours of every working day, as ordered, non-overlapping periods within one day.

    A period cannot cross midnight. Work that continues overnight is counted from the first
    period of the next working day.
    """

    periods: tuple[tuple[time, time], ...]

    def __post_init__(self) -> None:
        if not self.periods:
            raise ValueError("working hours need at least one period")
        previous_end: time | None = None
        for start, end in self.periods:
            if start >= end:
                raise ValueError(f"working-hours period {start:%H:%M}-{end:%H:%M} ends before it starts")
            if previous_end is not None and start < previous_end:
                raise ValueError(f"working-hours period {start:%H:%M}-{end:%H:%M} overlaps the period before it")
            previous_end = end

    @classmethod
    def parse(cls, specs: Iterable[str]) -> WorkingHours:
        """Build from strings such as ``"08:30-12:00"``; raise ValueError with a Chinese message."""
        specs = [str(spec) for spec in specs]
        periods = []
        for spec in specs:
            match = _HOURS_RE.match(spec.strip())
            if match is None:
                raise ValueError(f"工作时段“{spec}”格式不对，应写成“08:30-12:00”这样的 时:分-时:分")
            try:
                start = time.fromisoformat(match["start"])
                end = time.fromisoformat(match["end"])
            except ValueError:
                raise ValueError(f"工作时段“{spec}”里的时间不存在，小时应为 00-23，分钟应为 00-59") from None
            periods.append((start, end))
        try:
            return cls(tuple(periods))
        except ValueError:
            raise ValueError(
                f"工作时段 {', '.join(specs)} 无效：每段须先开始后结束、不跨零点，并按时间先后排列、互不重叠"
            ) from None

    @property
    def daily_amount(self) -> timedelta:
        return sum((_span(start, end) for start, end in self.periods), timedelta())

    def __str__(self) -> str:
        return "、".join(f"{start:%H:%M}-{end:%H:%M}" for start, end in self.periods)


def _span(start: time, end: time) -> timedelta:
    anchor = date(2000, 1, 1)
    return datetime.combine(anchor, end) - datetime.combine(anchor, start)


DEFAULT_WORKING_HOURS = WorkingHours(((time(8, 30), time(12, 0)), (time(13, 30), time(17, 30))))


# ---------------------------------------------------------------------------- data sources


@dataclass(frozen=True, slots=True)
class HolidayData:
    """State Council holiday and make-up working-day data for the years ``first_year..last_year``.

    ``holidays`` maps each day off of a holiday period, weekends inside it included, to the
    holiday's Chinese name. ``makeup_workdays`` maps each 调休 weekend working day the same way.
    """

    source: str
    first_year: int
    last_year: int
    holidays: Mapping[date, str]
    makeup_workdays: Mapping[date, str]

    def covers(self, day: date) -> bool:
        return self.first_year <= day.year <= self.last_year

    @classmethod
    def from_chinese_calendar(cls) -> HolidayData:
        """Read the tables shipped by the ``chinesecalendar`` package (import name ``chinese_calendar``)."""
        names = {member.value: member.chinese for member in chinese_calendar.Holiday}
        holidays = {day: names.get(name, name) for day, name in chinese_calendar.holidays.items()}
        makeup = {day: names.get(name, name) for day, name in chinese_calendar.workdays.items()}
        years = [day.year for day in holidays]
        return cls(
            source=f"chinesecalendar {chinese_calendar.__version__}（国务院办公厅节假日安排通知）",
            first_year=min(years),
            last_year=max(years),
            holidays=MappingProxyType(holidays),
            makeup_workdays=MappingProxyType(makeup),
        )


@dataclass(frozen=True, slots=True)
class DayOverride:
    """An admin's ruling on one date, with the notice it comes from and its line in the file."""

    day: date
    working: bool
    name: str | None
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class YearOverride:
    """A year whose complete holiday notice the override file carries day by day."""

    year: int
    source: str
    line: int


@dataclass(frozen=True, slots=True)
class CalendarOverrides:
    path: str | None = None
    days: Mapping[date, DayOverride] = field(default_factory=dict)
    years: Mapping[int, YearOverride] = field(default_factory=dict)


_DAY_KINDS = {"working_day": True, "day_off": False}


def load_calendar_overrides(path: str | Path) -> CalendarOverrides:
    """Load and validate an override file; raise CalendarConfigError listing every problem.

    The file has two optional sections::

        years:
          2027: {source: 国务院办公厅关于2027年部分节假日安排的通知}
        days:
          2027-02-06: {kind: working_day, name: 春节, source: 同上}
          2027-02-08: {kind: day_off, name: 春节, source: 同上}
    """
    source, document = load_yaml_document(Path(path))
    issues: list[ConfigIssue] = []

    if document is None:
        return CalendarOverrides(path=source)
    if not isinstance(document, CommentedMap):
        raise CalendarConfigError([ConfigIssue(source, 1, "文件顶层应为映射，只能有 years 和 days 两节")])

    for key in document:
        if key not in ("years", "days"):
            issues.append(ConfigIssue(source, line_of(document, key), f"不认识的一节“{key}”，只能有 years 和 days，请检查拼写或删除"))

    years = _parse_year_entries(source, document.get("years"), line_of(document, "years"), issues)
    days = _parse_day_entries(source, document.get("days"), line_of(document, "days"), issues)
    if issues:
        raise CalendarConfigError(issues)
    return CalendarOverrides(path=source, days=MappingProxyType(days), years=MappingProxyType(years))


def _parse_year_entries(source: str, section: Any, section_line: int, issues: list[ConfigIssue]) -> dict[int, YearOverride]:
    years: dict[int, YearOverride] = {}
    if section is None:
        return years
    if not isinstance(section, CommentedMap):
        issues.append(ConfigIssue(source, section_line, "years 应为“年份: {source: 通知名称}”的映射"))
        return years

    for key, entry in section.items():
        line = line_of(section, key)
        if not isinstance(key, int) or isinstance(key, bool) or not 2000 <= key <= 2100:
            issues.append(ConfigIssue(source, line, f"年份“{key}”无效，请写四位数年份，例如 2027"))
            continue
        notice = _entry_source(source, entry, line, issues, f"{key} 年")
        if notice is not None:
            years[key] = YearOverride(year=key, source=notice, line=line)
    return years


def _parse_day_entries(source: str, section: Any, section_line: int, issues: list[ConfigIssue]) -> dict[date, DayOverride]:
    days: dict[date, DayOverride] = {}
    if section is None:
        return days
    if not isinstance(section, CommentedMap):
        issues.append(ConfigIssue(source, section_line, "days 应为“日期: {kind: ..., source: ...}”的映射"))
        return days

    for key, entry in section.items():
        line = line_of(section, key)
        day = _parse_date(key)
        if day is None:
            issues.append(ConfigIssue(source, line, f"日期“{key}”无效，请写成 YYYY-MM-DD，例如 2027-02-06"))
            continue
        if not isinstance(entry, CommentedMap):
            issues.append(ConfigIssue(source, line, f"{day} 的内容应为映射，例如 {{kind: day_off, name: 春节, source: 通知名称}}"))
            continue

        unknown = [name for name in entry if name not in ("kind", "name", "source")]
        for name in unknown:
            issues.append(ConfigIssue(source, line_of(entry, name), f"{day} 有不认识的字段“{name}”，只能有 kind、name、source"))

        kind = entry.get("kind")
        if kind not in _DAY_KINDS:
            where = line_of(entry, "kind") if "kind" in entry else line
            issues.append(ConfigIssue(
                source, where, f"{day} 的 kind 值“{kind}”无效，请写 working_day（上班）或 day_off（休息）"
            ))
        name = entry.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            issues.append(ConfigIssue(source, line_of(entry, "name"), f"{day} 的 name 值“{name}”无效，请写节日名称或删除这一行"))
        notice = _entry_source(source, entry, line, issues, str(day))
        if kind in _DAY_KINDS and notice is not None and (name is None or isinstance(name, str)):
            days[day] = DayOverride(day=day, working=_DAY_KINDS[kind], name=name, source=notice, line=line)
    return days


def _entry_source(source: str, entry: Any, line: int, issues: list[ConfigIssue], subject: str) -> str | None:
    notice = entry.get("source") if isinstance(entry, CommentedMap) else None
    if isinstance(notice, str) and notice.strip():
        return notice.strip()
    where = line_of(entry, "source") if isinstance(entry, CommentedMap) and "source" in entry else line
    issues.append(ConfigIssue(
        source, where, f"{subject} 缺少 source（依据的通知），请写明发文机关和通知名称，例如“国办发明电〔2026〕X号”"
    ))
    return None


def _parse_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            return None
    return None


# ---------------------------------------------------------------------------- the calendar


class WorkingCalendar:
    """Working days and working hours of a Chinese government office, in Asia/Shanghai.

    Lookup order for a date: the override file's entry for that date, then the package data
    if it covers the year, then the Monday-to-Friday rule. That rule is final for a year the
    override file declares complete and provisional otherwise.
    """

    def __init__(
        self,
        data: HolidayData,
        overrides: CalendarOverrides | None = None,
        hours: WorkingHours = DEFAULT_WORKING_HOURS,
    ) -> None:
        self.data = data
        self.overrides = overrides or CalendarOverrides()
        self.hours = hours

    @classmethod
    def default(cls, overrides: CalendarOverrides | None = None, hours: WorkingHours = DEFAULT_WORKING_HOURS) -> WorkingCalendar:
        return cls(HolidayData.from_chinese_calendar(), overrides, hours)

    def covers_year(self, year: int) -> bool:
        return self.data.first_year <= year <= self.data.last_year or year in self.overrides.years

    def is_working_day(self, day: date) -> bool:
        """Return whether ``day`` is a working day, logging a warning when the answer is provisional.

        This is the flow engine's calendar port, used by branches on office hours.
        """
        result = self.day(day)
        if result.provisional:
            log.warning("working day answered without calendar data", day=day.isoformat(), source=result.source)
        return result.is_working

    def day(self, day: date) -> CalendarDay:
        """Return the kind of ``day``, with its source and whether that result is provisional."""
        override = self.overrides.days.get(day)
        if override is not None:
            kind = DayKind.OVERRIDE_WORKDAY if override.working else DayKind.OVERRIDE_DAY_OFF
            return CalendarDay(day, kind, override.name, f"{override.source}（{self.overrides.path}:{override.line}）", False)

        weekend = day.weekday() >= 5
        if self.data.covers(day):
            if day in self.data.makeup_workdays:
                return CalendarDay(day, DayKind.MAKEUP_WORKDAY, self.data.makeup_workdays[day], self.data.source, False)
            if day in self.data.holidays:
                return CalendarDay(day, DayKind.HOLIDAY, self.data.holidays[day], self.data.source, False)
            return CalendarDay(day, DayKind.WEEKEND if weekend else DayKind.WORKDAY, None, self.data.source, False)

        year_override = self.overrides.years.get(day.year)
        if year_override is not None:
            return CalendarDay(day, DayKind.WEEKEND if weekend else DayKind.WORKDAY, None, year_override.source, False)

        return CalendarDay(
            day, DayKind.WEEKEND if weekend else DayKind.WORKDAY, None, "无节假日数据，暂按周一至周五上班推定", True
        )


    def days_of_year(self, year: int) -> list[CalendarDay]:
        first = date(year, 1, 1)
        return [self.day(first + timedelta(days=offset)) for offset in range((date(year + 1, 1, 1) - first).days)]

    # ------------------------------------------------------------------ arithmetic

    def periods_on(self, day: date) -> list[tuple[datetime, datetime]]:
        """Return the working-hours periods of ``day`` as UTC instants; none on a day off."""
        if not self.day(day).is_working:
            return []
        return [
            (
                datetime.combine(day, start, CHINA_TZ).astimezone(timezone.utc),
                datetime.combine(day, end, CHINA_TZ).astimezone(timezone.utc),
            )
            for start, end in self.hours.periods
        ]

    def add_working_days(self, start: datetime, days: int, *, warn: bool = True) -> Deadline:
        """Return the end of business of the ``days``-th working day after the Asia/Shanghai date of ``start``.

        A provisional result is logged as a warning unless ``warn`` is false, for callers that log it themselves.
        """
        if days < 1:
            raise ValueError(f"working days to add must be 1 or more, got {days}")
        current = require_utc(start, "start").astimezone(CHINA_TZ).date()
        provisional: list[date] = []
        counted = 0
        for _ in range(MAX_SEARCH_DAYS):
            current += timedelta(days=1)
            info = self.day(current)
            if info.provisional:
                provisional.append(current)
            if info.is_working:
                counted += 1
                if counted == days:
                    close = datetime.combine(current, self.hours.periods[-1][1], CHINA_TZ).astimezone(timezone.utc)
                    return self._deadline(start, close, provisional, warn)
        raise ValueError(f"no {days} working days found within {MAX_SEARCH_DAYS} days after {start.isoformat()}")

    def add_working_time(self, start: datetime, amount: timedelta, *, warn: bool = True) -> Deadline:
        """Return the instant when ``amount`` of working time has passed since ``start``.

        Time outside working hours (nights, the lunch break, days off) does not count, so
        work started at 17:00 with two hours left ends at 10:00 on the next working day. ``warn``
        works as in ``add_working_days``.
        """
        start = require_utc(start, "start")
        if amount < timedelta(0):
            raise ValueError(f"working time to add must not be negative, got {amount}")
        if amount == timedelta(0):
            return Deadline(start)

        remaining = amount
        current = start.astimezone(CHINA_TZ).date()
        provisional: list[date] = []
        for _ in range(MAX_SEARCH_DAYS):
            if self.day(current).provisional:
                provisional.append(current)
            for period_start, period_end in self.periods_on(current):
                begin = max(period_start, start)
                if begin >= period_end:
                    continue
                available = period_end - begin
                if remaining <= available:
                    return self._deadline(start, begin + remaining, provisional, warn)
                remaining -= available
            current += timedelta(days=1)
        raise ValueError(f"{amount} of working time not reached within {MAX_SEARCH_DAYS} days after {start.isoformat()}")

    def working_time_between(self, start: datetime, end: datetime) -> WorkingDuration:
        """Return the working time inside ``[start, end)``; zero when ``end`` is not after ``start``."""
        start = require_utc(start, "start")
        end = require_utc(end, "end")
        total = timedelta(0)
        provisional: list[date] = []
        if end <= start:
            return WorkingDuration(total)

        current = start.astimezone(CHINA_TZ).date()
        last = end.astimezone(CHINA_TZ).date()
        while current <= last:
            if self.day(current).provisional:
                provisional.append(current)
            for period_start, period_end in self.periods_on(current):
                overlap = min(period_end, end) - max(period_start, start)
                if overlap > timedelta(0):
                    total += overlap
            current += timedelta(days=1)
        return WorkingDuration(total, tuple(provisional))

    def _deadline(self, start: datetime, at: datetime, provisional: list[date], warn: bool) -> Deadline:
        if provisional and warn:
            log.warning(
                "deadline provisional: no holiday data for some days",
                start=start.isoformat(),
                deadline=at.isoformat(),
                uncovered_days=[day.isoformat() for day in provisional],
            )
        return Deadline(at, tuple(provisional))


def weekday_label(day: date) -> str:
    return _WEEKDAY_NAMES[day.weekday()]
