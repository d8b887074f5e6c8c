"""Chinese messages for configuration files validated with pydantic."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

# pydantic error type → Chinese explanation with the fix; the placeholders are the keys
# of the error's context (le, ge, lt, gt, expected).
_EXPLANATIONS = {
    "missing": "缺少此字段，请补上",
    "extra_forbidden": "不认识此字段，请检查拼写或删除",
    "less_than_equal": "不能大于 {le}，请改小",
    "greater_than_equal": "不能小于 {ge}，请改大",
    "less_than": "必须小于 {lt}，请改小",
    "greater_than": "必须大于 {gt}，请改大",
    "int_parsing": "应为整数，请去掉引号或多余的字符",
    "int_type": "应为整数",
    "string_type": "应为文字；数字形式的代码（如地区代码）请加英文引号，例如 \"330106\"",
    "string_pattern_mismatch": "格式不对，请对照示例配置修改",
    "string_too_short": "太短，请补全",
    "string_too_long": "太长，请缩短",
    "literal_error": "只能是 {expected} 之一",
    "bool_parsing": "应为 true 或 false",
    "dict_type": "应为映射（“键: 值”的形式）",
    "model_type": "应为映射（“键: 值”的形式）",
    "list_type": "应为列表（每项以“- ”开头）",
    "path_type": "应为文件路径",
}


# The rule behind each pattern the configuration models use, for "string_pattern_mismatch".
_PATTERN_RULES = {
    r"^\d{6}$": "应为 6 位数字，例如 \"330106\"",
    r"^[0-9]{6}$": "应为 6 位数字，例如 \"330106\"",
    r"^[a-z][a-z0-9_-]{0,31}$": "应以小写英文字母开头，只用小写字母、数字、下划线和减号，最长 32 个字符，例如 a1",
    r"^[a-z][a-z0-9-]{1,47}$": "应以小写英文字母开头，只用小写字母、数字和减号，2 到 48 个字符，例如 county-330106",
    r"^[A-Za-z0-9_.\-]{1,40}$": "只能用英文字母、数字、点、下划线和减号，最长 40 个字符",
    r"^[A-Za-z0-9_-]{1,40}$": "只能用英文字母、数字、下划线和减号，最长 40 个字符",
    r"^0[1-9][0-9]{1,2}$": "应为以 0 开头的 3 到 4 位长途区号，例如 \"0571\"",
    r"^/[A-Za-z0-9_./-]+$": "应为以 / 开头的绝对路径，只用英文字母、数字和 _ . / -",
}


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "（顶层）"


def explain_error(item: Any) -> str:
    """Return one Chinese line for one pydantic error: the field, the value and the fix."""
    field = _field_name(item["loc"])
    template = _EXPLANATIONS.get(item["type"])
    try:
        explanation = template.format(**(item.get("ctx") or {})) if template else None
    except (KeyError, IndexError):
        explanation = None
    if item["type"] == "string_pattern_mismatch":
        pattern = str((item.get("ctx") or {}).get("pattern", ""))
        explanation = "格式不对：" + _PATTERN_RULES.get(pattern, f"应符合规则 {pattern}")
    explanation = explanation or f"无效，请按示例配置修改（{item['type']}）"

    if item["type"] in ("missing", "extra_forbidden"):
        return f"字段“{field}”：{explanation}"
    return f"字段“{field}”的值“{item.get('input')}”{explanation}"


def describe_validation_error(source: str, error: ValidationError) -> str:
    """Render every pydantic error as one Chinese line naming the field, the value and the fix."""
    lines = [f"配置文件 {source} 有误："]
    lines.extend(f"  - {explain_error(item)}" for item in error.errors())
    return "\n".join(lines)
