"""Working-day calendar: State Council data, 调休, overrides, provisional dates, working-hours arithmetic."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tickets.calendar import (
    CalendarConfigError,
    DayKind,
    HolidayData,
    WorkingCalendar,
    WorkingHours,
    load_calendar_overrides,
)
from tickets.model import CHINA_TZ

DATA = HolidayData.from_chinese_calendar()


def cst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """Return an aware UTC instant for a Beijing wall-clock time."""
    return datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ).astimezone(timezone.utc)


@pytest.fixture(scope="module")
def calendar() -> WorkingCalendar:
    return WorkingCalendar(DATA)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calendar-overrides.yaml"
    path.write_text(text, encoding="utf-8")
    return path


class TestPackageData:
    def test_coverage_includes_2025_and_2026(self) -> None:
        assert DATA.first_year <= 2025
        assert DATA.last_year >= 2026
        assert DATA.source.startswith("chinesecalendar ")

    def test_national_day_and_mid_autumn_2025(self, calendar: WorkingCalendar) -> None:
        """The 2025 notice: Oct 1-8 off, Sunday Sep 28 and Saturday Oct 11 are make-up working days."""
        assert calendar.day(date(2025, 9, 27)).kind is DayKind.WEEKEND
        makeup_sunday = calendar.day(date(2025, 9, 28))
        assert makeup_sunday.kind is DayKind.MAKEUP_WORKDAY
        assert makeup_sunday.is_working
        assert makeup_sunday.holiday_name == "国庆节"
        for day in range(1, 9):
            info = calendar.day(date(2025, 10, day))
            assert info.kind is DayKind.HOLIDAY, day
            assert not info.is_working, day
        assert calendar.day(date(2025, 10, 6)).holiday_name == "中秋"
        assert calendar.day(date(2025, 10, 9)).kind is DayKind.WORKDAY
        makeup_saturday = calendar.day(date(2025, 10, 11))
        assert makeup_saturday.kind is DayKind.MAKEUP_WORKDAY
        assert not makeup_saturday.provisional
        assert calendar.day(date(2025, 10, 12)).kind is DayKind.WEEKEND

    def test_spring_festival_2025(self, calendar: WorkingCalendar) -> None:
        assert calendar.day(date(2025, 1, 26)).kind is DayKind.MAKEUP_WORKDAY
        for day in (date(2025, 1, 28), date(2025, 1, 31), date(2025, 2, 3), date(2025, 2, 4)):
            info = calendar.day(day)
            assert info.kind is DayKind.HOLIDAY, day
            assert info.holiday_name == "春节", day
        assert calendar.day(date(2025, 2, 5)).kind is DayKind.WORKDAY
        assert calendar.day(date(2025, 2, 8)).kind is DayKind.MAKEUP_WORKDAY

    def test_working_day_count_2025(self, calendar: WorkingCalendar) -> None:
        """2025: 261 Monday-to-Friday days, minus 18 weekday holidays, plus 5 make-up weekend days."""
        days = calendar.days_of_year(2025)
        assert len(days) == 365
        assert sum(1 for info in days if info.is_working) == 248


class TestWorkingDays:
    def test_deadline_crosses_weekend(self, calendar: WorkingCalendar) -> None:
        deadline = calendar.add_working_days(cst(2025, 3, 7, 10), 1)
        assert deadline.at == cst(2025, 3, 10, 17, 30)
        assert not deadline.provisional

    def test_start_day_not_counted(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_days(cst(2025, 3, 10, 8, 0), 1).at == cst(2025, 3, 11, 17, 30)

    def test_deadline_crosses_national_day(self, calendar: WorkingCalendar) -> None:
        """Three working days from Sep 30: Oct 9, Oct 10 and the make-up Saturday Oct 11."""
        assert calendar.add_working_days(cst(2025, 9, 30, 10), 3).at == cst(2025, 10, 11, 17, 30)

    def test_deadline_on_makeup_saturday(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_days(cst(2025, 10, 10, 9), 1).at == cst(2025, 10, 11, 17, 30)
        assert calendar.add_working_days(cst(2025, 2, 7, 9), 1).at == cst(2025, 2, 8, 17, 30)

    def test_makeup_sunday_counts_plain_saturday_does_not(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_days(cst(2025, 9, 26, 15), 1).at == cst(2025, 9, 28, 17, 30)

    def test_deadline_crosses_spring_festival(self, calendar: WorkingCalendar) -> None:
        """From Jan 27, 2025 (Monday before the holiday), the next working day is Feb 5."""
        assert calendar.add_working_days(cst(2025, 1, 27, 16), 1).at == cst(2025, 2, 5, 17, 30)

    def test_start_on_holiday_evening(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_days(cst(2025, 10, 3, 22), 2).at == cst(2025, 10, 10, 17, 30)

    def test_zero_days_rejected(self, calendar: WorkingCalendar) -> None:
        with pytest.raises(ValueError, match="1 or more"):
            calendar.add_working_days(cst(2025, 3, 7, 10), 0)


class TestWorkingHoursArithmetic:
    def test_lunch_break_skipped(self, calendar: WorkingCalendar) -> None:
        deadline = calendar.add_working_time(cst(2025, 3, 10, 11), timedelta(hours=2))
        assert deadline.at == cst(2025, 3, 10, 14, 30)

    def test_overnight_carries_to_next_morning(self, calendar: WorkingCalendar) -> None:
        deadline = calendar.add_working_time(cst(2025, 3, 10, 17), timedelta(hours=2))
        assert deadline.at == cst(2025, 3, 11, 10, 0)

    def test_weekend_and_holiday_skipped(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_time(cst(2025, 3, 7, 16, 30), timedelta(hours=3)).at == cst(2025, 3, 10, 10, 30)
        assert calendar.add_working_time(cst(2025, 9, 30, 17), timedelta(hours=1)).at == cst(2025, 10, 9, 9, 0)

    def test_makeup_saturday_has_office_hours(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_time(cst(2025, 10, 10, 17), timedelta(hours=1)).at == cst(2025, 10, 11, 9, 0)
        assert calendar.add_working_time(cst(2025, 10, 11, 17), timedelta(hours=1)).at == cst(2025, 10, 13, 9, 0)

    def test_start_before_opening(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_time(cst(2025, 3, 10, 7), timedelta(hours=1)).at == cst(2025, 3, 10, 9, 30)

    def test_start_during_lunch(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_time(cst(2025, 3, 10, 12, 30), timedelta(minutes=30)).at == cst(2025, 3, 10, 14, 0)

    def test_exactly_to_closing(self, calendar: WorkingCalendar) -> None:
        assert calendar.add_working_time(cst(2025, 3, 10, 16, 30), timedelta(hours=1)).at == cst(2025, 3, 10, 17, 30)

    def test_time_between_over_night_and_lunch(self, calendar: WorkingCalendar) -> None:
        measured = calendar.working_time_between(cst(2025, 3, 10, 11), cst(2025, 3, 11, 9))
        assert measured.amount == timedelta(hours=1, minutes=30) + timedelta(hours=4)
        assert not measured.provisional

    def test_time_between_reversed_is_zero(self, calendar: WorkingCalendar) -> None:
        assert calendar.working_time_between(cst(2025, 3, 11), cst(2025, 3, 10)).amount == timedelta(0)

    def test_custom_hours(self) -> None:
        hours = WorkingHours.parse(["09:00-12:00", "14:00-18:00"])
        calendar = WorkingCalendar(DATA, hours=hours)
        assert hours.daily_amount == timedelta(hours=7)
        assert calendar.add_working_time(cst(2025, 3, 10, 11), timedelta(hours=2)).at == cst(2025, 3, 10, 15, 0)
        assert calendar.add_working_days(cst(2025, 3, 10, 11), 1).at == cst(2025, 3, 11, 18, 0)

    @pytest.mark.parametrize(
        ("specs", "fragment"),
        [
            (["8:30-12:00"], "格式不对"),
            (["08:30-25:00"], "时间不存在"),
            (["12:00-08:30"], "先开始后结束"),
            (["08:30-12:00", "11:00-17:30"], "互不重叠"),
        ],
    )
    def test_invalid_hours_rejected(self, specs: list[str], fragment: str) -> None:
        with pytest.raises(ValueError, match=fragment):
            WorkingHours.parse(specs)


class TestTimeZone:
    def test_shanghai_has_no_dst(self, calendar: WorkingCalendar) -> None:
        """08:30 Beijing time is 00:30 UTC in winter and in summer alike."""
        for day in (date(2025, 1, 6), date(2025, 7, 7)):
            opening = calendar.periods_on(day)[0][0]
            assert opening == datetime.combine(day, time(0, 30), timezone.utc)

    def test_any_aware_zone_accepted(self, calendar: WorkingCalendar) -> None:
        """A start given in another zone is the same instant; Monday 03:00 UTC is 11:00 in Beijing."""
        start_utc = datetime(2025, 3, 10, 3, 0, tzinfo=timezone.utc)
        start_new_york = start_utc.astimezone(timezone(timedelta(hours=-4)))
        assert calendar.add_working_time(start_new_york, timedelta(hours=2)).at == cst(2025, 3, 10, 14, 30)
        assert calendar.add_working_time(start_new_york, timedelta(hours=2)).at.tzinfo == timezone.utc

    def test_utc_date_differs_from_china_date(self, calendar: WorkingCalendar) -> None:
        """Friday 20:00 UTC is already Saturday in Beijing, so one working day ends on Monday."""
        assert calendar.add_working_days(datetime(2025, 3, 7, 20, 0, tzinfo=timezone.utc), 1).at == cst(2025, 3, 10, 17, 30)

    def test_naive_rejected(self, calendar: WorkingCalendar) -> None:
        with pytest.raises(ValueError, match="timezone-aware"):
            calendar.add_working_days(datetime(2025, 3, 7, 10), 1)


class TestProvisional:
    def test_uncovered_date_is_provisional(self, calendar: WorkingCalendar) -> None:
        saturday = calendar.day(date(2099, 6, 6))
        assert saturday.provisional
        assert saturday.kind is DayKind.WEEKEND
        assert "暂按周一至周五" in saturday.source
        monday = calendar.day(date(2099, 6, 1))
        assert monday.provisional
        assert monday.is_working

    def test_deadline_in_uncovered_year_flagged_and_logged(self, calendar: WorkingCalendar) -> None:
        with capture_logs() as logs:
            deadline = calendar.add_working_days(cst(2099, 6, 5, 10), 1)
        assert deadline.at == cst(2099, 6, 8, 17, 30)
        assert deadline.provisional
        assert deadline.provisional_days == (date(2099, 6, 6), date(2099, 6, 7), date(2099, 6, 8))
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert len(warnings) == 1
        assert warnings[0]["uncovered_days"] == ["2099-06-06", "2099-06-07", "2099-06-08"]

    def test_warning_can_be_left_to_caller(self, calendar: WorkingCalendar) -> None:
        with capture_logs() as logs:
            deadline = calendar.add_working_time(cst(2099, 6, 5, 17), timedelta(hours=1), warn=False)
        assert deadline.at == cst(2099, 6, 8, 9, 0)
        assert deadline.provisional
        assert logs == []

    def test_deadline_from_last_covered_year_into_next(self, calendar: WorkingCalendar) -> None:
        last = DATA.last_year
        deadline = calendar.add_working_days(cst(last, 12, 30, 10), 2)
        assert deadline.provisional
        assert all(day.year == last + 1 for day in deadline.provisional_days)

    def test_covered_deadline_not_logged(self, calendar: WorkingCalendar) -> None:
        with capture_logs() as logs:
            calendar.add_working_days(cst(2025, 3, 7, 10), 1)
        assert logs == []


class TestOverrides:
    def test_day_off_moves_deadline(self, tmp_path: Path) -> None:
        path = write(tmp_path, "days:\n  2025-03-10: {kind: day_off, name: 台风停工, source: 杭州市人民政府通告}\n")
        calendar = WorkingCalendar(DATA, load_calendar_overrides(path))
        info = calendar.day(date(2025, 3, 10))
        assert info.kind is DayKind.OVERRIDE_DAY_OFF
        assert info.holiday_name == "台风停工"
        assert "杭州市人民政府通告" in info.source
        assert f"{path}:2" in info.source
        assert calendar.add_working_days(cst(2025, 3, 7, 10), 1).at == cst(2025, 3, 11, 17, 30)

    def test_working_day_on_weekend(self, tmp_path: Path) -> None:
        path = write(tmp_path, "days:\n  '2025-03-08': {kind: working_day, source: 区政府通知}\n")
        calendar = WorkingCalendar(DATA, load_calendar_overrides(path))
        assert calendar.add_working_days(cst(2025, 3, 7, 10), 1).at == cst(2025, 3, 8, 17, 30)

    def test_year_declared_complete(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "years:\n  2099: {source: 国务院办公厅关于2099年部分节假日安排的通知}\n"
            "days:\n  2099-06-08: {kind: day_off, name: 端午, source: 同上}\n",
        )
        calendar = WorkingCalendar(DATA, load_calendar_overrides(path))
        assert calendar.covers_year(2099)
        assert not calendar.day(date(2099, 6, 9)).provisional
        deadline = calendar.add_working_days(cst(2099, 6, 5, 10), 1)
        assert deadline.at == cst(2099, 6, 9, 17, 30)
        assert not deadline.provisional

    def test_empty_file(self, tmp_path: Path) -> None:
        overrides = load_calendar_overrides(write(tmp_path, "# nothing yet\n"))
        assert dict(overrides.days) == {}

    def test_shipped_file_loads(self) -> None:
        path = Path(__file__).resolve().parents[2] / "config" / "calendar-overrides.yaml"
        load_calendar_overrides(path)

    def test_errors_name_file_line_value_and_fix(self, tmp_path: Path) -> None:
        path = write(
            tmp_path,
            "days:\n"
            "  2025-03-10: {kind: holiday, source: 通知}\n"
            "  2025-02-30: {kind: day_off, source: 通知}\n"
            "  2025-03-12: {kind: day_off}\n"
            "  2025-03-13: {kind: day_off, source: 通知, reason: x}\n"
            "years:\n"
            "  twenty: {source: 通知}\n"
            "weeks: {}\n",
        )
        with pytest.raises(CalendarConfigError) as caught:
            load_calendar_overrides(path)
        text = str(caught.value)
        assert f"{path}:2: 2025-03-10 的 kind 值“holiday”无效，请写 working_day（上班）或 day_off（休息）" in text
        assert f"{path}:3: 日期“2025-02-30”无效，请写成 YYYY-MM-DD" in text
        assert f"{path}:4: 2025-03-12 缺少 source（依据的通知）" in text
        assert f"{path}:5: 2025-03-13 有不认识的字段“reason”" in text
        assert f"{path}:7: 年份“twenty”无效" in text
        assert f"{path}:8: 不认识的一节“weeks”" in text
        assert len(caught.value.issues) == 6

    def test_duplicate_date_rejected(self, tmp_path: Path) -> None:
        path = write(tmp_path, "days:\n  2025-03-10: {kind: day_off, source: a}\n  2025-03-10: {kind: working_day, source: b}\n")
        with pytest.raises(CalendarConfigError, match="YAML 格式错误"):
            load_calendar_overrides(path)

    def test_missing_file(self, tmp_path: Path) -> None:
        with pytest.raises(CalendarConfigError, match="找不到文件"):
            load_calendar_overrides(tmp_path / "absent.yaml")
