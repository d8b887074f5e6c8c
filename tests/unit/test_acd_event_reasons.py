"""`hotline acd events` shows the reasons of state changes in Chinese."""

import pytest

from hotline.commands.acd import event_reason_label


@pytest.mark.parametrize(("reason", "label"), [
    ("reserved", "分配来电"),
    ("release:dial_returned", "释放（转接结束）"),
    ("pause:meal/phone", "暂停（用餐），来自话机功能码"),
    ("unpause/cli", "示闲，来自命令行"),
    ("something_new", "something_new"),
])
def test_agent_event_reasons_read_in_chinese(reason, label):
    assert event_reason_label(reason) == label
