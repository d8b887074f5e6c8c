"""Domain: reading and validating profile import files (CSV or JSON), row by row.

Policy: a row that fails validation is skipped and listed in the report with its row
number, column, masked value and the fix. Every other row is imported. The store writes
the rows in one transaction, so a failed write leaves nothing behind.

Columns (CSV header names; JSON objects use the same keys):

- ``name`` (required): full name.
- ``id_number`` (required): 18-character or 15-digit ID number; a 15-digit number is stored upgraded.
- ``phones`` (required): one or more numbers separated by ";".
- ``region_code`` (required): county-level GB/T 2260 code of the current address.
- ``address``: the rest of the address (street, house number).
- ``statuses``: periods separated by ";", each ``状态:开始日期~结束日期`` with an empty end
  for a status still in force, such as ``低保:2023-01-01~2024-06-30;特困:2024-07-01~``.
- ``need_tags``: tags separated by ";" from NeedTag, such as ``需语速放缓;手语``.
- ``contact_name``, ``contact_relation``, ``contact_phone``: guardian or contact.
- ``help_history``: records separated by ";", each ``日期 描述``, such as ``2024-03-02 临时救助800元``.
- ``preferred_agent``: agent id from the ACD roster.

In JSON, ``phones``, ``statuses``, ``need_tags`` and ``help_history`` may also be lists of
strings in the same item form.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from hotline.privacy import mask_id_number, mask_name, mask_phone
from profiles.id_number import IdNumberError, parse_id_number
from profiles.model import (
    Address,
    AssistanceStatus,
    Contact,
    HelpRecord,
    NeedTag,
    Profile,
    StatusPeriod,
)
from profiles.phone import PhoneNumber, PhoneNumberError, normalise_phone
from regions.divisions import DivisionLevel, DivisionTable

COLUMNS = ("name", "id_number", "phones", "region_code", "address", "statuses", "need_tags",
           "contact_name", "contact_relation", "contact_phone", "help_history", "preferred_agent")
REQUIRED_COLUMNS = ("name", "id_number", "phones", "region_code")

# Records one fault of the row being validated: column, raw value, Chinese message with the fix.
_Fail = Callable[[str, str, str], None]

MAX_NAME_LENGTH = 64
MAX_TEXT_LENGTH = 500


class ImportFileError(Exception):
    """An import file that cannot be read at all; the message is Chinese and names the fix."""


@dataclass(frozen=True)
class RowError:
    """One fault in one row: row number as the file counts it, column, masked value and the fix."""

    row: int
    column: str
    value_masked: str
    message: str

    def render(self) -> str:
        return f"第 {self.row} 行，列 {self.column}，值 {self.value_masked or '（空）'}：{self.message}"


@dataclass(frozen=True)
class ValidRow:
    row: int
    profile: Profile
    upgraded_id: bool


def _mask_for_report(column: str, value: str) -> str:
    """Mask a value for the error report: personal data never appears in clear."""
    if not value:
        return ""
    if column == "id_number":
        return mask_id_number(value)
    if column in ("phones", "contact_phone"):
        return mask_phone(value)
    if column in ("name", "contact_name"):
        return mask_name(value)
    if column in ("address", "help_history"):
        return f"（已隐去，{len(value)} 个字）"
    return value


def read_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number, record) from a CSV file (row 1 is the header) or a JSON array (row = element, from 1)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            yield from _read_csv(path)
        elif suffix == ".json":
            yield from _read_json(path)
        else:
            raise ImportFileError(f"不支持的文件类型 {path.suffix or '（无扩展名）'}：请使用 .csv 或 .json 文件")
    except FileNotFoundError:
        raise ImportFileError(f"找不到导入文件 {path}") from None
    except UnicodeDecodeError:
        raise ImportFileError(f"导入文件 {path} 不是 UTF-8 编码；请在表格软件中另存为“CSV UTF-8”") from None


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise ImportFileError(f"CSV 表头缺少必填列 {', '.join(missing)}；表头应包含 {', '.join(COLUMNS)}")
        unknown = [column for column in header if column not in COLUMNS]
        if unknown:
            raise ImportFileError(f"CSV 表头有未知列 {', '.join(unknown)}；可用的列为 {', '.join(COLUMNS)}")
        for record in reader:
            yield reader.line_num, record


def _read_json(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ImportFileError(f"JSON 文件 {path} 第 {error.lineno} 行第 {error.colno} 列格式错误：{error.msg}") from None
    if not isinstance(document, list):
        raise ImportFileError("JSON 导入文件的最外层应为数组，每个元素是一个对象")
    for index, record in enumerate(document, start=1):
        if not isinstance(record, dict):
            raise ImportFileError(f"JSON 数组第 {index} 个元素不是对象")
        unknown = [key for key in record if key not in COLUMNS]
        if unknown:
            raise ImportFileError(f"JSON 数组第 {index} 个元素有未知字段 {', '.join(unknown)}；可用字段为 {', '.join(COLUMNS)}")
        yield index, record


def _text(record: dict[str, Any], column: str) -> str:
    value = record.get(column)
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(str(item) for item in value)
    return str(value).strip()


def _items(text: str) -> list[str]:
    return [item.strip() for item in text.replace("；", ";").split(";") if item.strip()]


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        return None


class RowValidator:
    """Validates import rows against the division table and today's date (Asia/Shanghai)."""

    def __init__(self, divisions: DivisionTable, today: date, default_area_code: str | None = None) -> None:
        self._divisions = divisions
        self._today = today
        self._default_area_code = default_area_code

    def validate(self, row: int, record: dict[str, Any]) -> ValidRow | list[RowError]:
        errors: list[RowError] = []

        def fail(column: str, value: str, message: str) -> None:
            errors.append(RowError(row, column, _mask_for_report(column, value), message))

        name = _text(record, "name")
        if not name:
            fail("name", name, "姓名为必填项，请填写")
        elif len(name) > MAX_NAME_LENGTH:
            fail("name", name, f"姓名超过 {MAX_NAME_LENGTH} 个字，请核对是否串列")

        id_text = _text(record, "id_number")
        id_number = None
        if not id_text:
            fail("id_number", id_text, "身份证号为必填项，请填写")
        else:
            try:
                id_number = parse_id_number(id_text, today=self._today)
            except IdNumberError as error:
                fail("id_number", id_text, error.message)

        phones = self._phones(_text(record, "phones"), fail)
        region_code = self._region(_text(record, "region_code"), fail)
        statuses = self._statuses(_text(record, "statuses"), fail)
        need_tags = self._need_tags(_text(record, "need_tags"), fail)
        contact = self._contact(record, fail)
        help_history = self._help_history(_text(record, "help_history"), fail)

        address = _text(record, "address")
        if len(address) > MAX_TEXT_LENGTH:
            fail("address", address, f"地址超过 {MAX_TEXT_LENGTH} 个字，请精简")

        if errors or id_number is None or region_code is None:
            return errors
        profile = Profile(
            name=name,
            id_number=id_number.value,
            phones=phones,
            address=Address(region_code, address),
            statuses=statuses,
            need_tags=need_tags,
            contact=contact,
            help_history=help_history,
            preferred_agent=_text(record, "preferred_agent") or None,
        )
        return ValidRow(row, profile, id_number.upgraded)

    def _phone(self, column: str, text: str, fail: _Fail) -> PhoneNumber | None:
        try:
            return normalise_phone(text, default_area_code=self._default_area_code)
        except PhoneNumberError as error:
            fail(column, text, error.message)
            return None

    def _phones(self, text: str, fail: _Fail) -> tuple[PhoneNumber, ...]:
        items = _items(text)
        if not items:
            fail("phones", text, "至少填写一个电话号码，多个号码用英文分号 ; 分隔")
            return ()
        phones = [self._phone("phones", item, fail) for item in items]
        return tuple(dict.fromkeys(phone for phone in phones if phone is not None))

    def _region(self, text: str, fail: _Fail) -> str | None:
        if not text:
            fail("region_code", text, "区划代码为必填项，请填写现住址所在县级区划的 6 位代码")
            return None
        division = self._divisions.get(text)
        if division is None:
            fail("region_code", text,
                 f"区划代码不在区划表（{self._divisions.dataset_version}）中，请填写现住址所在县级区划的 6 位代码")
            return None
        if division.level is not DivisionLevel.COUNTY:
            fail("region_code", text, f"{division.name} 不是县级区划，请填写现住址所在县（市、区）的代码")
            return None
        return text

    def _statuses(self, text: str, fail: _Fail) -> tuple[StatusPeriod, ...]:
        allowed = "、".join(status.value for status in AssistanceStatus)
        periods = []
        for item in _items(text):
            label, _, span = item.replace("：", ":").partition(":")
            start_text, _, end_text = span.partition("~")
            try:
                status = AssistanceStatus(label.strip())
            except ValueError:
                fail("statuses", item, f"未知的救助状态，应为 {allowed} 之一，格式如 低保:2023-01-01~2024-06-30")
                continue
            start = _parse_date(start_text)
            end = _parse_date(end_text) if end_text.strip() else None
            if start is None or (end_text.strip() and end is None):
                fail("statuses", item, "日期应写成 YYYY-MM-DD，格式如 低保:2023-01-01~2024-06-30，仍在享受的结束日期留空")
                continue
            if start > self._today:
                fail("statuses", item, "开始日期晚于今天，请核对")
                continue
            if end is not None and end < start:
                fail("statuses", item, "结束日期早于开始日期，请核对")
                continue
            periods.append(StatusPeriod(status, start, end))
        return tuple(periods)

    def _need_tags(self, text: str, fail: _Fail) -> frozenset[NeedTag]:
        allowed = "、".join(tag.value for tag in NeedTag)
        tags = set()
        for item in _items(text):
            try:
                tags.add(NeedTag(item))
            except ValueError:
                fail("need_tags", item, f"未知的特殊需求标签，应为 {allowed} 之一")
        return frozenset(tags)

    def _contact(self, record: dict[str, Any], fail: _Fail) -> Contact | None:
        name = _text(record, "contact_name")
        relation = _text(record, "contact_relation")
        phone_text = _text(record, "contact_phone")
        if not (name or relation or phone_text):
            return None
        if not name:
            fail("contact_name", name, "填写了联系人关系或电话时，联系人姓名为必填项")
            return None
        phone = self._phone("contact_phone", phone_text, fail) if phone_text else None
        return Contact(name, relation, phone)

    def _help_history(self, text: str, fail: _Fail) -> tuple[HelpRecord, ...]:
        records = []
        for item in _items(text):
            day_text, _, description = item.partition(" ")
            day = _parse_date(day_text)
            if day is None or not description.strip():
                fail("help_history", item, "每条帮扶记录应写成“YYYY-MM-DD 描述”，多条用英文分号 ; 分隔")
                continue
            if day > self._today:
                fail("help_history", item, f"帮扶日期 {day_text} 晚于今天，请核对")
                continue
            records.append(HelpRecord(day, description.strip()))
        return tuple(records)


@dataclass(frozen=True)
class ImportPlan:
    """The rows to write and the rows skipped, with every fault found."""

    valid: tuple[ValidRow, ...]
    errors: tuple[RowError, ...]
    total_rows: int

    @property
    def skipped_rows(self) -> int:
        return len({error.row for error in self.errors})


def plan_import(rows: Iterator[tuple[int, dict[str, Any]]], validator: RowValidator,
                progress: Callable[[int], None] | None = None) -> ImportPlan:
    """Validate every row; a row with any fault, or a repeat of an ID number seen earlier in the file, is skipped.

    ``progress`` is called with 1 after each row.
    """
    valid: list[ValidRow] = []
    errors: list[RowError] = []
    first_row_by_id: dict[str, int] = {}
    total = 0
    for row, record in rows:
        total += 1
        result = validator.validate(row, record)
        if isinstance(result, ValidRow):
            earlier = first_row_by_id.setdefault(result.profile.id_number, row)
            if earlier != row:
                errors.append(RowError(row, "id_number", mask_id_number(result.profile.id_number),
                                       f"与第 {earlier} 行的身份证号相同；同一人只保留一行，请合并后重新导入"))
            else:
                valid.append(result)
        else:
            errors.extend(result)
        if progress is not None:
            progress(1)
    return ImportPlan(tuple(valid), tuple(errors), total)
