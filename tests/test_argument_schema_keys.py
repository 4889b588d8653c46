"""The "Path" for "path" refusal holds wherever an argument schema constrains a key (issue 19 item 2).

Through the binary, in front of the recording server: for each way a schema can name an object key
($ref into $defs or definitions, allOf/anyOf/oneOf, not, if/then/else, dependentSchemas, draft-07
dependencies, items, prefixItems, the draft-07 items array, patternProperties, additionalProperties,
nested objects, a recursive $ref), a case variant of the constrained key is refused and never reaches the
upstream, while the same call with the key as constrained still passes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parent / "servers" / "recording_server.py"
PATH = {"type": "string", "pattern": "^/tmp/"}
DRAFT_07 = "http://json-schema.org/draft-07/schema#"

# tool -> (schema, a call with a case variant of a constrained key, the same call as constrained)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "via_ref": ({"$defs": {"p": {"type": "object", "properties": {"path": PATH}}}, "$ref": "#/$defs/p"},
                {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_definitions": ({"definitions": {"p": {"properties": {"path": PATH}}}, "allOf": [{"$ref": "#/definitions/p"}]},
                        {"PATH": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_allof": ({"allOf": [{"type": "object"}, {"properties": {"path": PATH}}]},
                  {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_anyof": ({"anyOf": [{"properties": {"path": PATH}, "required": ["path"]}, {"required": ["id"]}]},
                  {"Path": "/etc/passwd", "id": 1}, {"path": "/tmp/a"}),
    "via_oneof": ({"oneOf": [{"properties": {"path": PATH}}]}, {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_not": ({"not": {"properties": {"path": {"const": "/etc/passwd"}}, "required": ["path"]}},
                {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_if": ({"if": {"properties": {"mode": {"const": "admin"}}, "required": ["mode"]},
                "then": {"properties": {"path": PATH}}},
               {"Mode": "admin", "path": "/etc/passwd"}, {"mode": "user", "path": "/etc/passwd"}),
    "via_then": ({"if": {"type": "object"}, "then": {"properties": {"path": PATH}}},
                 {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_else": ({"if": {"required": ["never"]}, "else": {"properties": {"path": PATH}}},
                 {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_dependent_schemas": ({"dependentSchemas": {"force": {"properties": {"path": PATH}}}},
                              {"force": True, "Path": "/etc/passwd"}, {"force": True, "path": "/tmp/a"}),
    "via_dependencies_07": ({"$schema": DRAFT_07, "dependencies": {"force": {"properties": {"path": PATH}}}},
                            {"force": True, "Path": "/etc/passwd"}, {"force": True, "path": "/tmp/a"}),
    "via_items": ({"properties": {"files": {"type": "array", "items": {"type": "object",
                                                                        "properties": {"path": PATH}}}}},
                  {"files": [{"path": "/tmp/a"}, {"Path": "/etc/passwd"}]}, {"files": [{"path": "/tmp/a"}]}),
    "via_prefix_items": ({"properties": {"pair": {"type": "array", "prefixItems": [
                             {"type": "object", "properties": {"path": PATH}}]}}},
                         {"pair": [{"Path": "/etc/passwd"}]}, {"pair": [{"path": "/tmp/a"}]}),
    "via_items_array_07": ({"$schema": DRAFT_07, "properties": {"pair": {"items": [
                               {"type": "object", "properties": {"path": PATH}}]}}},
                           {"pair": [{"Path": "/etc/passwd"}]}, {"pair": [{"path": "/tmp/a"}]}),
    "via_pattern_properties": ({"patternProperties": {"^path$": PATH}}, {"Path": "/etc/passwd"}, {"path": "/tmp/a"}),
    "via_pattern_value": ({"patternProperties": {"^opt_": {"type": "object", "properties": {"path": PATH}}}},
                          {"opt_a": {"Path": "/etc/passwd"}}, {"opt_a": {"path": "/tmp/a"}}),
    "via_additional_properties": ({"properties": {"id": {"type": "integer"}},
                                   "additionalProperties": {"type": "object", "properties": {"path": PATH}}},
                                  {"x": {"Path": "/etc/passwd"}}, {"x": {"path": "/tmp/a"}}),
    "via_nested": ({"properties": {"opts": {"type": "object", "properties": {"path": PATH}}}},
                   {"opts": {"Path": "/etc/passwd"}}, {"opts": {"path": "/tmp/a"}}),
    "via_recursive_ref": ({"$defs": {"node": {"type": "object", "properties": {
                              "path": PATH, "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
                           "$ref": "#/$defs/node"},
                          {"children": [{"children": [{"Path": "/etc/passwd"}]}]},
                          {"children": [{"children": [{"path": "/tmp/a"}]}]}),
    "via_unicode_fold": ({"properties": {"mask": PATH}}, {"ma\u017fk": "/etc/passwd"}, {"mask": "/tmp/a"}),
}
POLICY = {"version": "1", "rules": {tool: {"arguments": schema} for tool, (schema, _, _) in CASES.items()}}


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from wireclient import WireProcess, guard_command

    tmp = tmp_path_factory.mktemp("keys")
    policy = tmp / "policy.json"
    policy.write_text(json.dumps(POLICY))
    record = tmp / "record.jsonl"
    env = {**__import__("os").environ, "RECORD_FILE": str(record), "TOOLS": ",".join(CASES)}
    proc = WireProcess([*guard_command(), "run", "--policy", str(policy), "--", sys.executable, str(SERVER)], env=env)
    proc.initialize()
    yield proc, record
    proc.kill()


def upstream_arguments(proc: Any, record: Path, tool: str) -> list[Any]:
    assert proc.request(f"barrier-{tool}", "ping", {})["result"] == {}
    calls = [json.loads(line) for line in record.read_bytes().splitlines() if line.strip()]
    return [c["params"].get("arguments") for c in calls
            if c.get("method") == "tools/call" and c["params"]["name"] == tool]


@pytest.mark.parametrize("tool", list(CASES))
def test_a_case_variant_of_a_constrained_key_is_refused_through_every_construct(guard: Any, tool: str) -> None:
    proc, record = guard
    _, variant, constrained = CASES[tool]
    refused = proc.request(f"v-{tool}", "tools/call", {"name": tool, "arguments": variant})
    result = refused["result"]
    assert result["isError"] is True, refused
    reason = result["_meta"]["mcp-guard/decision"]["reason"]
    assert "differs only in case" in reason, reason
    allowed = proc.request(f"c-{tool}", "tools/call", {"name": tool, "arguments": constrained})
    assert "mcp-guard/decision" not in json.dumps(allowed), allowed
    assert upstream_arguments(proc, record, tool) == [constrained]
