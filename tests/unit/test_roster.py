"""Agent roster files: valid rosters load, mistakes name the row, field and fix in Chinese."""

import pytest

from acd.roster import RosterError, load_roster


def _write(tmp_path, text):
    path = tmp_path / "roster.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_roster_loads(tmp_path):
    agents = load_roster(_write(tmp_path, "- {id: a1, name: 坐席一, endpoint: agent1, skills: [dibao, general]}\n"))

    assert [agent.agent_id for agent in agents] == ["a1"]
    assert agents[0].skills == frozenset({"dibao", "general"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {id: a1, name: 坐席一, endpoint: agent1}\n", "第 1 名坐席，字段“skills”：缺少此字段"),
        ("- {id: a1, name: 坐席一, endpoint: agent1, skills: [dibao], colour: x}\n", "字段“colour”：不认识此字段"),
        (("- {id: a1, name: 坐席一, endpoint: agent1, skills: [dibao]}\n"
          "- {id: a1, name: 坐席二, endpoint: agent2, skills: [dibao]}\n"), "第 2 名坐席：工号“a1”重复，第 1 行的坐席已用此工号"),
        (("- {id: a1, name: 坐席一, endpoint: agent1, skills: [dibao]}\n"
          "- {id: a2, name: 坐席二, endpoint: agent1, skills: [dibao]}\n"), "话机“agent1”已分给第 1 行的坐席"),
        ("[]\n", "应为非空列表"),
    ],
    ids=["missing skills", "unknown field", "duplicate id", "shared endpoint", "empty"],
)
def test_roster_mistake_rejected(tmp_path, text, message):
    with pytest.raises(RosterError) as caught:
        load_roster(_write(tmp_path, text))

    assert message in str(caught.value)
