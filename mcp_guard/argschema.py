"""Argument schemas read structurally: which JSON Schema draft one is written in, whether every key in it
is a keyword of that draft, and which object keys it constrains (for the case-variant refusal).

Pure: no I/O. `jsonschema` and `referencing` are imported only when a validator or a key plan is built,
so loading a policy whose rules constrain no arguments never imports them (docs/performance.md).

A schema is walked by what each keyword holds, never by key name alone: the names inside `properties`
are the caller's data (a property may be called "enmu" or "$ref"), the members of `$defs` are schemas,
and the values of `enum`, `const`, `default` and `examples` are data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

DEFAULT_DRAFT = "2020-12"
# The drafts mcp-guard evaluates, by the `$schema` URI that names them (with or without a final "#").
DRAFT_URIS: dict[str, str] = {
    "https://json-schema.org/draft/2020-12/schema": "2020-12",
    "https://json-schema.org/draft/2019-09/schema": "2019-09",
    "http://json-schema.org/draft-07/schema": "draft-07",
    "https://json-schema.org/draft-07/schema": "draft-07",
    "http://json-schema.org/draft-06/schema": "draft-06",
    "https://json-schema.org/draft-06/schema": "draft-06",
    "http://json-schema.org/draft-04/schema": "draft-04",
    "https://json-schema.org/draft-04/schema": "draft-04",
}
DRAFTS = ("draft-04", "draft-06", "draft-07", "2019-09", "2020-12")

# What a keyword's value holds.
VALUE = "value"  # data the keyword constrains with (or an annotation): not walked
SCHEMA = "schema"  # a schema
SCHEMA_MAP = "schema map"  # an object whose values are schemas (its keys are names, not keywords)
SCHEMA_LIST = "schema list"  # an array of schemas
ITEMS = "items"  # a schema, or (before 2020-12) an array of schemas
DEPENDENCIES = "dependencies"  # name -> a schema, or an array of names (draft-07 and before)
ANNOTATION = "annotation"  # constrains nothing: `check` warns
ANNOTATION_SCHEMA = "annotation schema"  # a schema that constrains nothing (contentSchema): walked, warned

_DRAFT_04: dict[str, str] = {
    "$schema": VALUE, "id": VALUE, "$ref": VALUE, "title": VALUE, "description": VALUE, "default": VALUE,
    "definitions": SCHEMA_MAP, "multipleOf": VALUE, "maximum": VALUE, "exclusiveMaximum": VALUE,
    "minimum": VALUE, "exclusiveMinimum": VALUE, "maxLength": VALUE, "minLength": VALUE, "pattern": VALUE,
    "additionalItems": SCHEMA, "items": ITEMS, "maxItems": VALUE, "minItems": VALUE, "uniqueItems": VALUE,
    "maxProperties": VALUE, "minProperties": VALUE, "required": VALUE, "additionalProperties": SCHEMA,
    "properties": SCHEMA_MAP, "patternProperties": SCHEMA_MAP, "dependencies": DEPENDENCIES, "enum": VALUE,
    "type": VALUE, "allOf": SCHEMA_LIST, "anyOf": SCHEMA_LIST, "oneOf": SCHEMA_LIST, "not": SCHEMA,
    "format": ANNOTATION,
    # Keywords of later drafts, harmless in every one: `$defs` (2019-09's name for `definitions`) holds
    # schemas that `$ref` reaches by JSON Pointer in any draft; `$comment` is a note.
    "$defs": SCHEMA_MAP, "$comment": VALUE,
}
_DRAFT_06 = {**{k: v for k, v in _DRAFT_04.items() if k != "id"},
             "$id": VALUE, "const": VALUE, "contains": SCHEMA, "propertyNames": SCHEMA, "examples": VALUE}
_DRAFT_07 = {**_DRAFT_06, "if": SCHEMA, "then": SCHEMA, "else": SCHEMA,
             "readOnly": ANNOTATION, "writeOnly": ANNOTATION, "contentMediaType": ANNOTATION,
             "contentEncoding": ANNOTATION}
# `definitions` stays a place for schemas in every draft: `$ref` reaches it by JSON Pointer.
_DRAFT_2019 = {**{k: v for k, v in _DRAFT_07.items() if k != "dependencies"},
               "$anchor": VALUE, "$recursiveRef": VALUE, "$recursiveAnchor": VALUE,
               "$vocabulary": VALUE, "dependentRequired": VALUE, "dependentSchemas": SCHEMA_MAP,
               "maxContains": VALUE, "minContains": VALUE, "unevaluatedItems": SCHEMA,
               "unevaluatedProperties": SCHEMA, "deprecated": ANNOTATION, "contentSchema": ANNOTATION_SCHEMA}
_DRAFT_2020 = {**{k: v for k, v in _DRAFT_2019.items()
                  if k not in ("$recursiveRef", "$recursiveAnchor", "additionalItems")},
               "$dynamicRef": VALUE, "$dynamicAnchor": VALUE, "prefixItems": SCHEMA_LIST, "items": SCHEMA}
VOCABULARY: dict[str, dict[str, str]] = {"draft-04": _DRAFT_04, "draft-06": _DRAFT_06, "draft-07": _DRAFT_07,
                                         "2019-09": _DRAFT_2019, "2020-12": _DRAFT_2020}
# What to write instead, for keywords that moved between drafts.
_REPLACEMENTS = {
    "dependencies": "dependentRequired or dependentSchemas", "additionalItems": "items beside prefixItems",
    "$recursiveRef": "$dynamicRef", "$recursiveAnchor": "$dynamicAnchor", "id": "$id",
    "dependentRequired": "dependencies", "dependentSchemas": "dependencies",
    "prefixItems": "items as an array", "$dynamicRef": "$recursiveRef", "$dynamicAnchor": "$recursiveAnchor",
}
# Keywords that may stand beside $ref before 2019-09, where every other sibling of $ref is ignored.
_BESIDE_REF = frozenset({"$ref", "$schema", "$id", "id", "$comment", "title", "description", "default",
                         "examples", "definitions", "$defs", "format", "readOnly", "writeOnly",
                         "contentMediaType", "contentEncoding"})
_ANNOTATION_HINTS = {
    "format": "'format' is an annotation and constrains nothing (\"format\": \"uri\" accepts any string): "
              "use \"pattern\"",
    "contentMediaType": "'contentMediaType' is an annotation and constrains nothing: the content is not checked",
    "contentEncoding": "'contentEncoding' is an annotation and constrains nothing: the encoding is not checked",
    "contentSchema": "'contentSchema' is an annotation and constrains nothing: the decoded content is not "
                     "checked against it",
    "readOnly": "'readOnly' is an annotation and constrains nothing: a call that sends the property is not "
                "refused",
    "writeOnly": "'writeOnly' is an annotation and constrains nothing",
    "deprecated": "'deprecated' is an annotation and constrains nothing: a call that uses the property is not "
                  "refused",
}
_REF_KEYWORDS = ("$ref", "$dynamicRef", "$recursiveRef")


def _normalise(uri: str) -> str:
    return uri[:-1] if uri.endswith("#") else uri


def declared_draft(schema: Any) -> str | None:
    """The draft a schema's `$schema` names; None when it names none, or one mcp-guard does not evaluate."""
    if isinstance(schema, dict) and "$schema" in schema:
        uri = schema["$schema"]
        return DRAFT_URIS.get(_normalise(uri)) if isinstance(uri, str) else None
    return DEFAULT_DRAFT


def draft_of(schema: Any) -> str:
    """The draft a (loaded, so checked) schema is evaluated as: the one `$schema` names, else 2020-12."""
    return declared_draft(schema) or DEFAULT_DRAFT


def draft_problem(schema: Any) -> tuple[list[Any], str] | None:
    """Why a schema's `$schema` cannot be honoured: (path inside the schema, problem), or None."""
    if declared_draft(schema) is not None:
        return None
    known = ", ".join(["https://json-schema.org/draft/2020-12/schema", "https://json-schema.org/draft/2019-09/schema",
                       *(f"http://json-schema.org/{draft}/schema#" for draft in ("draft-07", "draft-06", "draft-04"))])
    return ["$schema"], (f"$schema {schema['$schema']!r} names no draft mcp-guard evaluates, and reading the "
                         f"schema as another draft could constrain less than it says (known: {known})")


def validator_class(draft: str) -> Any:
    import jsonschema

    return {"draft-04": jsonschema.Draft4Validator, "draft-06": jsonschema.Draft6Validator,
            "draft-07": jsonschema.Draft7Validator, "2019-09": jsonschema.Draft201909Validator,
            "2020-12": jsonschema.Draft202012Validator}[draft]


def specification(draft: str) -> Any:
    from referencing import jsonschema as specs

    return {"draft-04": specs.DRAFT4, "draft-06": specs.DRAFT6, "draft-07": specs.DRAFT7,
            "2019-09": specs.DRAFT201909, "2020-12": specs.DRAFT202012}[draft]


def schema_objects(schema: Any, draft: str, path: list[Any]) -> Iterator[tuple[list[Any], dict[str, Any]]]:
    """Every schema object in `schema` with its path, found by what each keyword holds (draft `draft`)."""
    vocabulary = VOCABULARY[draft]
    stack: list[tuple[Any, list[Any]]] = [(schema, path)]
    while stack:
        node, where = stack.pop()
        if not isinstance(node, dict):
            continue
        yield where, node
        children: list[tuple[Any, list[Any]]] = []
        for key, value in node.items():
            role = vocabulary.get(key)
            if role in (SCHEMA, ANNOTATION_SCHEMA) or (role == ITEMS and not isinstance(value, list)):
                children.append((value, where + [key]))
            elif role in (SCHEMA_LIST, ITEMS) and isinstance(value, list):
                children += [(sub, where + [key, index]) for index, sub in enumerate(value)]
            elif role in (SCHEMA_MAP, DEPENDENCIES) and isinstance(value, dict):
                children += [(sub, where + [key, name]) for name, sub in value.items()]
        stack.extend(reversed(children))


def _suggestion(key: str, known: list[str]) -> str:
    import difflib  # only when a policy has a problem: not on the start-up path

    folded = {name.casefold(): name for name in known}
    match = folded.get(key.casefold())
    if match is None:
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        match = close[0] if close else None
    return f" (did you mean {match!r}?)" if match else ""


def keyword_problems(schema: Any, draft: str, path: list[Any]) -> list[tuple[list[Any], str]]:
    """Keys that are not keywords of the draft (misspelled, another draft's, made up), a `$schema` or a
    non-anchor `$id` below the root, and constraints beside `$ref` in drafts that ignore them: each would
    constrain nothing, silently. (path, problem) each, in the order the schema is written."""
    vocabulary = VOCABULARY[draft]
    known = sorted(vocabulary)
    label = draft if draft.startswith("draft") else f"draft {draft}"
    problems: list[tuple[list[Any], str]] = []
    for where, node in schema_objects(schema, draft, path):
        below_root = len(where) > len(path)
        for key in node:
            if key not in vocabulary:
                others = [d for d in DRAFTS if key in VOCABULARY[d]]
                if others:
                    instead = f": use {_REPLACEMENTS[key]}" if key in _REPLACEMENTS else ""
                    problem = (f"{key!r} is not a keyword of JSON Schema {label}, so it would constrain nothing "
                               f"(it is one of {', '.join(others)}){instead}, or name that draft with "
                               "\"$schema\"")
                else:
                    problem = (f"unknown JSON Schema keyword {key!r}{_suggestion(key, known)}: it would "
                               "constrain nothing")
                problems.append((where + [key], problem))
            elif below_root and key == "$schema":
                problems.append((where + [key], "$schema is honoured only at the root of an arguments schema"))
            elif below_root and key in ("$id", "id") and not (
                    isinstance(node[key], str) and node[key].startswith("#") and draft.startswith("draft-")):
                problems.append((where + [key], f"{key} below the root of an arguments schema is not supported "
                                                "(it would change what $ref means)"))
        if draft in ("draft-04", "draft-06", "draft-07") and "$ref" in node:
            ignored = [key for key in node if key not in _BESIDE_REF]
            if ignored:
                problems.append((where + [ignored[0]], f"{ignored[0]!r} beside $ref is ignored in {label}, so it "
                                                       "would constrain nothing: put both in an allOf"))
    return problems


def annotation_findings(schema: Any, place: str) -> list[str]:
    """Keywords that only annotate (format, content*, readOnly, ...): the author may think they constrain."""
    draft = draft_of(schema)
    vocabulary = VOCABULARY[draft]
    findings = []
    for where, node in schema_objects(schema, draft, []):
        for key in node:
            if vocabulary.get(key) in (ANNOTATION, ANNOTATION_SCHEMA):
                at = place + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in where + [key])
                findings.append(f"{at}: {_ANNOTATION_HINTS[key]}")
    return findings


def references(schema: Any, draft: str, path: list[Any]) -> list[tuple[list[Any], str]]:
    """Every $ref (and $dynamicRef, $recursiveRef) with its path."""
    return [(where + [key], node[key]) for where, node in schema_objects(schema, draft, path)
            for key in _REF_KEYWORDS if isinstance(node.get(key), str)]


# --- the case-variant refusal ----------------------------------------------------------------------


class KeyPlan:
    """Which object keys an arguments schema constrains, wherever it names them: `properties`,
    `patternProperties`, `required`, `dependentRequired`/`dependentSchemas`/`dependencies`, through
    `$ref`, `allOf`/`anyOf`/`oneOf`/`not`, `if`/`then`/`else`, and into values by `properties`,
    `patternProperties`, `additionalProperties`, `unevaluatedProperties`, `items`, `prefixItems`,
    `additionalItems`, `contains` and `unevaluatedItems`. Over-approximates (every branch of an anyOf
    counts): a guard refuses rather than misses.

    An argument key that is not constrained but is a constrained name in another case ("Path" for
    "path"), or that matches a constrained pattern only when case is ignored, is refused: JSON Schema
    sees an unconstrained key, a server that matches keys case-insensitively (Go's encoding/json) the
    constrained one. What is learnt about each schema object is kept (the policy's schemas are finite);
    nothing is kept about arguments."""

    def __init__(self, schema: Any, draft: str) -> None:
        self.schema = schema
        self.draft = draft
        self._resolver: Any = None
        self._flat: dict[int, tuple[dict[str, Any], ...]] = {}
        self._names: dict[int, tuple[frozenset[str], dict[str, str], tuple[str, ...]]] = {}
        self._relevant: dict[int, bool] = {}
        self._patterns: dict[str, tuple[re.Pattern[str] | None, re.Pattern[str] | None]] = {}

    def problem(self, arguments: Any) -> str | None:
        return self._check(self.schema, arguments, "")

    # -- what a schema object is, in place -------------------------------------------------------------

    def _lookup(self, ref: str) -> Any:
        if self._resolver is None:
            from referencing import Registry

            resource = specification(self.draft).create_resource(self.schema)
            self._resolver = Registry().with_resource("urn:mcp-guard:arguments", resource).resolver(
                "urn:mcp-guard:arguments")
        try:
            return self._resolver.lookup(ref).contents
        except Exception:  # noqa: BLE001 - checked at load; the validator refuses what cannot resolve
            return None

    def _flatten(self, schema: Any) -> tuple[dict[str, Any], ...]:
        """The schema objects that apply in place of `schema`: itself, what it references, its
        allOf/anyOf/oneOf members, not, if/then/else and dependent schemas, transitively."""
        cached = self._flat.get(id(schema))
        if cached is not None:
            return cached
        found: list[dict[str, Any]] = []
        seen: set[int] = set()
        stack = [schema]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            seen.add(id(node))
            found.append(node)
            for key in ("not", "if", "then", "else"):
                stack.append(node.get(key))
            for key in ("allOf", "anyOf", "oneOf"):
                members = node.get(key)
                if isinstance(members, list):
                    stack.extend(members)
            for key in ("dependentSchemas", "dependencies"):
                members = node.get(key)
                if isinstance(members, dict):
                    stack.extend(members.values())
            for key in _REF_KEYWORDS:
                ref = node.get(key)
                if isinstance(ref, str):
                    stack.append(self._lookup(ref))
        result = tuple(found)
        self._flat[id(schema)] = result
        return result

    def _names_of(self, schema: Any) -> tuple[frozenset[str], dict[str, str], tuple[str, ...]]:
        cached = self._names.get(id(schema))
        if cached is not None:
            return cached
        names: set[str] = set()
        patterns: list[str] = []
        for node in self._flatten(schema):
            for key in ("properties", "dependentSchemas", "dependentRequired", "dependencies"):
                value = node.get(key)
                if isinstance(value, dict):
                    names.update(value)
                    for member in value.values():
                        if isinstance(member, list):
                            names.update(name for name in member if isinstance(name, str))
            required = node.get("required")
            if isinstance(required, list):
                names.update(name for name in required if isinstance(name, str))
            pattern_properties = node.get("patternProperties")
            if isinstance(pattern_properties, dict):
                patterns += pattern_properties
        result = (frozenset(names), {name.casefold(): name for name in names}, tuple(dict.fromkeys(patterns)))
        self._names[id(schema)] = result
        return result

    def _compiled(self, pattern: str) -> tuple[re.Pattern[str] | None, re.Pattern[str] | None]:
        cached = self._patterns.get(pattern)
        if cached is None:
            try:
                cached = (re.compile(pattern), re.compile(pattern, re.IGNORECASE))
            except re.error:  # the validator refuses the call; nothing to learn here
                cached = (None, None)
            self._patterns[pattern] = cached
        return cached

    # -- where values lead -------------------------------------------------------------------------------

    def _property_children(self, schema: Any, key: str) -> list[Any]:
        children = []
        for node in self._flatten(schema):
            matched = False
            properties = node.get("properties")
            if isinstance(properties, dict) and key in properties:
                children.append(properties[key])
                matched = True
            pattern_properties = node.get("patternProperties")
            if isinstance(pattern_properties, dict):
                for pattern, sub in pattern_properties.items():
                    compiled = self._compiled(pattern)[0]
                    if compiled is not None and compiled.search(key):
                        children.append(sub)
                        matched = True
            if not matched:
                children += [node.get("additionalProperties"), node.get("unevaluatedProperties")]
        return [child for child in children if isinstance(child, dict)]

    def _item_children(self, schema: Any, index: int) -> list[Any]:
        children = []
        for node in self._flatten(schema):
            prefix, items = node.get("prefixItems"), node.get("items")
            if isinstance(prefix, list):
                children.append(prefix[index] if index < len(prefix) else items)
            elif isinstance(items, list):
                children.append(items[index] if index < len(items) else node.get("additionalItems"))
            else:
                children.append(items)
            children += [node.get("contains"), node.get("unevaluatedItems")]
        return [child for child in children if isinstance(child, dict)]

    def _all_children(self, node: dict[str, Any]) -> list[Any]:
        children: list[Any] = []
        for key in ("properties", "patternProperties"):
            value = node.get(key)
            if isinstance(value, dict):
                children += value.values()
        for key in ("prefixItems", "items"):
            value = node.get(key)
            if isinstance(value, list):
                children += value
        children += [node.get(key) for key in ("additionalProperties", "unevaluatedProperties", "items",
                                               "additionalItems", "contains", "unevaluatedItems")]
        return [child for child in children if isinstance(child, dict)]

    def _is_relevant(self, schema: Any) -> bool:
        """Whether the schema constrains any object key, here or in any value below: if not, a value it
        applies to needs no walk (an array of a million integers against `items` costs nothing)."""
        known = self._relevant.get(id(schema))
        if known is not None:
            return known
        self._relevant[id(schema)] = True  # while it is being worked out: a recursive schema is walked
        names, _, patterns = self._names_of(schema)
        relevant = bool(names or patterns) or any(
            self._is_relevant(child) for node in self._flatten(schema) for child in self._all_children(node))
        self._relevant[id(schema)] = relevant
        return relevant

    # -- the walk over the arguments ------------------------------------------------------------------

    def _check(self, schema: Any, value: Any, where: str) -> str | None:
        if not isinstance(value, (dict, list)) or not isinstance(schema, dict) or not self._is_relevant(schema):
            return None
        if isinstance(value, list):
            base = where[:-1] if where.endswith(".") else where
            for index, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    for child in self._item_children(schema, index):
                        problem = self._check(child, item, f"{base}[{index}].")
                        if problem is not None:
                            return problem
            return None
        names, folded, patterns = self._names_of(schema)
        for key, item in value.items():
            if key not in names:
                other = folded.get(key.casefold())
                if other is not None:
                    return (f"argument {where}{key} differs only in case from the constrained argument "
                            f"{where}{other}")
                problem = self._pattern_variant(patterns, key, where)
                if problem is not None:
                    return problem
            if isinstance(item, (dict, list)):
                for child in self._property_children(schema, key):
                    problem = self._check(child, item, f"{where}{key}.")
                    if problem is not None:
                        return problem
        return None

    def _pattern_variant(self, patterns: tuple[str, ...], key: str, where: str) -> str | None:
        if not patterns:
            return None
        compiled = [(pattern, *self._compiled(pattern)) for pattern in patterns]
        if any(exact is not None and exact.search(key) for _, exact, _ in compiled):
            return None
        for pattern, _, folded in compiled:
            if folded is not None and folded.search(key):
                return (f"argument {where}{key} differs only in case from the keys the pattern {pattern!r} "
                        "constrains")
        return None
