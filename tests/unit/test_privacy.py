"""Masking of personal data for logs, CLI output and upward payloads."""

import io
import json

import pytest
import structlog

from hotline.logging import configure_logging
from hotline.privacy import mask_id_number, mask_name, mask_phone, mask_text


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("13900000001", "139****0001"),
        ("+8613900000001", "139****0001"),
        ("02155501234", "021******34"),
        ("01055501234", "010******34"),
        ("057155501234", "0571******34"),
        ("55501234", "******34"),
        ("110", "***"),
        (None, "无号码"),
        ("", "无号码"),
    ],
)
def test_mask_phone(raw, masked):
    assert mask_phone(raw) == masked


def test_mask_id_number_keeps_first_and_last_two():
    # Synthetic number with a valid GB 11643 check character.
    assert mask_id_number("330106195001011231") == "3***************31"


def test_mask_name_keeps_first_character():
    assert mask_name("张三丰") == "张**"


def test_mask_text_finds_numbers_in_free_text():
    text = "来电 13900000001，身份证 330106195001011231，座机 02155501234"

    masked = mask_text(text)

    assert "13900000001" not in masked
    assert "330106195001011231" not in masked
    assert "02155501234" not in masked
    assert "139****0001" in masked


def test_log_processor_masks_fields_but_not_ids():
    stream = io.StringIO()
    configure_logging("INFO", json=True, stream=stream)

    structlog.get_logger("t").info("call started", caller="13900000001", call_id="1733000000.42",
                                   note="回拨 02155501234")

    event = json.loads(stream.getvalue())
    assert event["caller"] == "139****0001"
    assert event["call_id"] == "1733000000.42"
    assert "02155501234" not in event["note"]
