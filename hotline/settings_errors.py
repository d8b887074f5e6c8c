"""Chinese messages for configuration files validated with pydantic."""

from __future__ import annotations

from pydantic import ValidationError


def describe_validation_error(source: str, error: ValidationError) -> str:
    """Render every pydantic error as one Chinese line naming the field, the value and the fix."""
    lines = [f"配置文件 {source} 有误："]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "（顶层）"
        value = item.get("input")
        if item["type"] == "missing":
            lines.append(f"  - 缺少字段“{field}”，请补上")
        elif item["type"] == "extra_forbidden":
            lines.append(f"  - 不认识的字段“{field}”，请检查拼写或删除")
        else:
            lines.append(f"  - 字段“{field}”的值“{value}”无效（{item['msg']}），请按说明修改")
    return "\n".join(lines)
