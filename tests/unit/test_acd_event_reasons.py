"""Operator wording in the ACD: state-change reasons and roster errors in Chinese."""

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


def test_roster_pattern_errors_state_the_rule(tmp_path):
    from acd.roster import RosterError, load_roster

    roster = tmp_path / "roster.yaml"
    roster.write_text('- {id: A2, name: 坐席二, endpoint: agent2, region: "33010", skills: [dibao]}\n', encoding="utf-8")

    with pytest.raises(RosterError) as caught:
        load_roster(roster)

    assert "“A2”格式不对：应以小写英文字母开头" in str(caught.value)
    assert "“33010”格式不对：应为 6 位数字" in str(caught.value)
