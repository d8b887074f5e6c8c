"""Offline runner: the call-script library against the shipped flow, and a broken flow's diffs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ivr.flow import Flow, load_flow, parse_flow
from replay.offline import ActualCall, ReplayPort, compare, run_offline
from replay.scripts import TimedKey, load_script, parse_script, script_files
from tickets.call_record import CallOutcome

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "tests" / "replay"
FLOW_FILE = REPO / "flows" / "12349.yaml"

# Prompt lengths in seconds as the shipped audio has them, pinned so the test does not
# need the audio built.
LENGTHS = {
    "agent_failed": 9.4, "category_dibao": 2.9, "category_ertong": 3.7, "category_linshi": 3.7,
    "category_liulang": 4.9, "category_tekun": 3.9, "category_yanglao": 3.6, "category_zhengce": 3.9,
    "emergency_ack": 11.7, "goodbye": 11.3, "invalid_key": 7.4, "main_menu": 20.1, "no_agent": 15.8,
    "no_input": 8.3, "queue_wait": 13.1, "transfer_agent": 5.6, "welcome": 7.9,
}


@pytest.fixture(scope="module")
def flow() -> Flow:
    return load_flow(FLOW_FILE)


def broken_flow() -> Flow:
    """The shipped flow with two mistakes: key 5 files under policy, silence hangs up."""
    text = FLOW_FILE.read_text(encoding="utf-8")
    text = text.replace("category: yanglao, skill: yanglao", "category: zhengce, skill: zhengce")
    text = text.replace("    on_exhausted: to_agent\n", "    on_exhausted: no_agent\n")
    return parse_flow(text.encode(), source="broken.yaml")


@pytest.mark.parametrize("path", script_files([LIBRARY]), ids=lambda path: path.stem)
async def test_library_script_passes_offline(flow: Flow, path: Path) -> None:
    script = load_script(path)

    actual = await run_offline(flow, script, lengths=LENGTHS)

    assert compare(script.expect, actual) == []


async def test_broken_flow_fails_named_scripts_with_readable_diffs() -> None:
    broken = broken_flow()
    failures: dict[str, list[str]] = {}
    for path in script_files([LIBRARY]):
        script = load_script(path)
        problems = compare(script.expect, await run_offline(broken, script, lengths=LENGTHS))
        if problems:
            failures[path.stem] = problems

    assert {"menu_5_yanglao", "invalid_8_then_5", "no_input_three_times", "invalid_three_times"} <= set(failures)
    assert "menu_1_dibao" not in failures
    assert failures["menu_5_yanglao"] == ["类别：期望 yanglao，实际 zhengce", "技能组：期望 yanglao，实际 zhengce"]
    assert failures["no_input_three_times"][0] == (
        "路径：期望 welcome → main_menu → to_agent → survey → finished\n      实际 welcome → main_menu → no_agent")
    assert "结果：期望 answered，实际 completed" in failures["no_input_three_times"]


async def test_key_during_announcement_lost(flow: Flow) -> None:
    # A key pressed during the welcome announcement reaches no menu, as on the switch.
    script = parse_script("name: x\nkeys: [{key: '1', at_ms: 2000}]\nhangup_ms: 30000\n"
                          "expect: {outcome: abandoned_in_menu}\n", source="x.yaml")
    ports: list[ReplayPort] = []

    actual = await run_offline(flow, script, lengths=LENGTHS, keep_port=ports.append)

    assert ports[0].dropped == [TimedKey("1", 2000)]
    assert actual.path == ("welcome", "main_menu")
    assert actual.outcome is CallOutcome.ABANDONED_IN_MENU
    assert ports[0].now_ms == 30000


def test_compare_checks_only_what_the_script_names() -> None:
    script = parse_script("name: x\nexpect: {agent: agent1, ticket: false}\n", source="x.yaml")
    actual = ActualCall(("welcome",), "dibao", "dibao", "agent2", True, CallOutcome.ANSWERED)

    assert compare(script.expect, actual) == ["坐席：期望 agent1，实际 agent2", "工单：期望不生成，实际生成了"]
