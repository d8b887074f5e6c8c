"""Structured logging set-up shared by every process of the hotline.

Every event passes through ``mask_personal_data`` last, so an ID number or phone
number that slips into a log field is masked before it is written.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from hotline.privacy import mask_text

# Fields whose values are switch or ticket identifiers made of digits (such as an
# Asterisk uniqueid "1700000000.42"), which the digit masks must leave alone.
_ID_FIELDS = frozenset(
    {"call_id", "uniqueid", "linkedid", "ticket_id", "action_id", "event_id", "seq", "port",
     "pid", "duration_ms", "count", "attempt", "elapsed_ms", "row_id", "size", "limit"}
)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_mask_value(item) for item in value)
    if isinstance(value, dict):
        return {key: _mask_value(item) for key, item in value.items()}
    return value


def mask_personal_data(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: mask ID and phone numbers in every field but known id fields."""
    for key, value in list(event_dict.items()):
        if key in _ID_FIELDS:
            continue
        event_dict[key] = _mask_value(value)
    return event_dict


def configure_logging(level: str = "INFO", *, json: bool = False, stream: Any = None) -> None:
    """Configure structlog for a process; call once at start-up."""
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        mask_personal_data,
    ]
    if json:
        processors.append(structlog.processors.JSONRenderer(ensure_ascii=False))
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
