"""Unit tests of the structural reading of argument schemas (argschema.py) and of the canonical form of
a call's arguments (wire.call_arguments_fingerprint). The behaviour through the binary is tested in
test_argument_schema_keys.py, test_argument_schema_keywords.py and test_stateless_retry_budget.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from mcp_guard import wire
from mcp_guard.argschema import KeyPlan, annotation_findings, keyword_problems

PATH = {"type": "string"}


def problem(schema: Any, arguments: Any) -> str | None:
    return KeyPlan(schema, "2020-12").problem(arguments)


def test_keys_as_constrained_and_unrelated_keys_pass() -> None:
    schema = {"anyOf": [{"properties": {"path": PATH}}, {"properties": {"Path": PATH}}]}
    assert problem(schema, {"path": "a"}) is None
    assert problem(schema, {"Path": "a"}) is None  # constrained as written by one branch
    assert problem(schema, {"other": 1, "PATH": {"x": 1}}) is not None
    assert problem({"properties": {"path": PATH}}, {"other": {"Path": 1}}) is None  # not constrained there


def test_a_pattern_that_accepts_several_cases_constrains_them_all() -> None:
    assert problem({"patternProperties": {"(?i)^path$": PATH}}, {"PATH": "x"}) is None
    assert problem({"patternProperties": {"^[Pp]ath$": PATH}}, {"Path": "x"}) is None
    assert problem({"patternProperties": {"^path$": PATH}}, {"PATH": "x"}) is not None
    assert problem({"patternProperties": {"^path$": PATH}}, {"route": "x"}) is None


def test_required_and_dependent_names_are_constrained_keys() -> None:
    assert problem({"required": ["token"]}, {"Token": "x"}) is not None
    assert problem({"dependentRequired": {"force": ["reason"]}}, {"Force": True}) is not None


def test_arrays_of_scalars_under_a_schema_without_keys_are_not_walked() -> None:
    plan = KeyPlan({"properties": {"ids": {"type": "array", "items": {"type": "integer"}}}}, "2020-12")
    assert plan.problem({"ids": list(range(200_000))}) is None
    assert plan._relevant  # worked out once per schema object, kept


def test_cyclic_references_terminate() -> None:
    schema = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}],
                                                          "properties": {"path": PATH}}},
              "$ref": "#/$defs/a"}
    assert problem(schema, {"Path": 1}) is not None


def test_keyword_walk_reads_structure_not_names() -> None:
    schema = {"properties": {"enmu": {"type": "string"}}, "$defs": {"enum": {"const": {"enmu": 1}}},
              "enum": [{"requried": 1}], "examples": [{"tpye": 1}], "default": {"x": 1}}
    assert keyword_problems(schema, "2020-12", []) == []
    found = keyword_problems({"properties": {"a": {"items": {"minimun": 1}}}}, "2020-12", ["r"])
    assert found == [(["r", "properties", "a", "items", "minimun"],
                      "unknown JSON Schema keyword 'minimun' (did you mean 'minimum'?): it would constrain nothing")]


def test_annotations_are_found_wherever_they_are() -> None:
    found = annotation_findings({"$defs": {"u": {"format": "uri"}}, "items": {"contentEncoding": "base64"}}, "p")
    assert [f.split(":")[0] for f in found] == ["p.$defs.u.format", "p.items.contentEncoding"]


def fingerprint(params: dict[str, Any] | str) -> str | None:
    text = params if isinstance(params, str) else json.dumps(params)
    return wire.call_arguments_fingerprint(
        ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + text + "}").encode())


@pytest.mark.parametrize(("first", "second", "same"), [
    ('{"name":"t","arguments":{"a":1,"b":"x"}}', '{"name":"t","arguments":{"b":"x","a":1}}', True),
    ('{"name":"t","arguments":{"s":"A"}}', '{"name":"t","arguments":{"s":"\\u0041"}}', True),
    ('{"name":"t"}', '{"name":"t","arguments":{}}', True),
    ('{"name":"t","arguments":{"a":1}}', '{"name":"t","arguments":{"a":1.0}}', False),
    ('{"name":"t","arguments":{"a":100}}', '{"name":"t","arguments":{"a":1e2}}', False),
    ('{"name":"t","arguments":{"a":0.1}}', '{"name":"t","arguments":{"a":0.10000000000000001}}', False),
    ('{"name":"t","arguments":{"a":"1"}}', '{"name":"t","arguments":{"a":1}}', False),
    ('{"name":"t","arguments":{"a":[1,2]}}', '{"name":"t","arguments":{"a":[2,1]}}', False),
    ('{"name":"t","arguments":{"a":true}}', '{"name":"t","arguments":{"a":1}}', False),
])
def test_arguments_compare_in_canonical_form_with_numbers_as_written(first: str, second: str, same: bool) -> None:
    assert (fingerprint(first) == fingerprint(second)) is same
    assert fingerprint(first) is not None
