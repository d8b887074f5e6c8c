"""flow_edges lists every jump of a flow as (source, label, target)."""

from pathlib import Path

from ivr.flow import flow_edges, load_flow

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_flow_edges():
    flow = load_flow(ROOT / "flows" / "12349.yaml")

    edges = flow_edges(flow)

    assert ("welcome", "next", "main_menu") in edges
    assert ("main_menu", "1", "chose_dibao") in edges
    assert ("main_menu", "on_exhausted", "to_agent") in edges
    assert ("to_agent", "on_no_agent", "no_agent") in edges
    assert all(source in flow.nodes and target in flow.nodes for source, _, target in edges)
    assert not [edge for edge in edges if edge[0] in ("finished", "no_agent")]
