"""The JSON schema published in ivr/flow-schema.json matches the flow models."""

from pathlib import Path

from ruamel.yaml import YAML

from ivr.flow import FLOW_SCHEMA_PATH, FlowDocument, flow_json_schema, render_flow_schema

ROOT = Path(__file__).resolve().parents[2]


def test_committed_schema_is_current():
    committed = FLOW_SCHEMA_PATH.read_text(encoding="utf-8")

    assert committed == render_flow_schema(), (
        "ivr/flow-schema.json is stale: run "
        ".venv/bin/python -c 'from ivr.flow import write_flow_schema; write_flow_schema()'"
    )


def test_schema_lists_every_node_type():
    schema = flow_json_schema()

    node_types = {definition["properties"]["type"]["const"] for name, definition in schema["$defs"].items()
                  if name.endswith("Node")}
    assert node_types == {"play", "menu", "collect", "set", "branch", "queue", "transfer", "record", "callback",
                          "survey", "hangup"}


def test_shipped_flow_matches_document_model():
    document = YAML(typ="safe").load((ROOT / "flows" / "12349.yaml").read_text(encoding="utf-8"))

    parsed = FlowDocument.model_validate(document)

    assert "urgent_agent" in parsed.nodes
