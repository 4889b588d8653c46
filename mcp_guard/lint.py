"""Lints for `mcp-guard check`: policies that load but probably do not say what their author meant."""

from __future__ import annotations

from typing import Any

from .engine import select_rule
from .policy import CharClass, Policy, Rule, glob_parts


def _class_choices(char_class: CharClass) -> list[str]:
    """A few characters a [...] class matches: each end and the middle of every range, each literal."""
    if char_class.negated:
        return ["\x01", "~"]
    chars: list[str] = []
    for first, last in char_class.ranges:
        lo, hi = ord(first), ord(last)
        chars += [first] if lo == hi else [first, chr((lo + hi) // 2), last]
    return list(dict.fromkeys(chars)) or ["a"]


def _samples(rule: Rule) -> list[str]:
    """Names the rule's key matches, to test whether anything else always decides them first."""
    if not rule.is_glob:
        return [rule.key]
    pieces: list[list[str]] = []
    for part in glob_parts(rule.key).parts:
        if part == "*":
            pieces.append(["", "x", "zz_9-Q"])
        elif part == "?":
            pieces.append(["q", "_"])
        elif isinstance(part, CharClass):
            pieces.append(_class_choices(part))
        else:
            pieces.append([part])
    names = [""]
    for choices in pieces:
        names = [name + choice for name in names for choice in choices][:200]
    return names


def _untyped_properties(schema: object, where: str) -> list[str]:
    """Constrained properties that do not say their "type". Servers convert arguments to the types their
    tools declare (the Python SDK turns "1000" into 1000 and "yes" into True), so a constraint such as
    maximum 10, checked against the string "1000", passes here and the tool gets 1000."""
    found: list[str] = []
    if not isinstance(schema, dict):
        return found
    properties = schema.get("properties")
    if isinstance(properties, dict):
        for name, sub in properties.items():
            if isinstance(sub, dict) and sub and "type" not in sub and "$ref" not in sub:
                found.append(f"{where}.properties.{name}")
            found += _untyped_properties(sub, f"{where}.properties.{name}")
    return found


def argument_annotations(policy: Policy) -> list[str]:
    """Annotation-only keywords in argument schemas (format, contentMediaType, readOnly, ...): they
    constrain nothing, though they read as if they did. Said by `check`, and by `run` at start."""
    from .argschema import annotation_findings

    return [finding for rule in policy.rules if rule.arguments is not None
            for finding in annotation_findings(rule.arguments, f"rules.{rule.key}.arguments")]


# Item types that jsonschema can sort, so that uniqueItems costs n log n instead of comparing every pair.
_SORTABLE_TYPES = ({"string"}, {"number", "integer"}, {"boolean"}, {"null"})
_VALUE_KEYWORDS = ("const", "enum", "default", "examples")
# Subschemas one check may walk through $ref (each reference followed, every time) before `check` warns.
EXPANSION_WARNING = 10_000
REF_DEPTH_WARNING = 32


def _subschemas(node: object, where: str) -> list[tuple[str, dict[str, object]]]:
    """Every object in a schema, with its place (values of const, enum, ... are data, not schemas)."""
    found: list[tuple[str, dict[str, object]]] = []
    if isinstance(node, dict):
        found.append((where, node))
        for key, value in node.items():
            if key not in _VALUE_KEYWORDS:
                found += _subschemas(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _subschemas(value, f"{where}[{index}]")
    return found


def _costly_unique_items(schema: object, where: str) -> list[str]:
    """uniqueItems where the array's items may be objects or arrays (or mixed types): jsonschema then
    compares every pair of items, so a few thousand items cost seconds. Checked after "items" that
    allow only one sortable type, it is cheap: a wrong item is refused before uniqueItems runs."""
    found = []
    for place, node in _subschemas(schema, where):
        if node.get("uniqueItems") is not True:
            continue
        items = node.get("items")
        kinds = items.get("type") if isinstance(items, dict) else None
        kind_set = {kinds} if isinstance(kinds, str) else set(kinds) if isinstance(kinds, list) else None
        sortable = kind_set is not None and any(kind_set <= family for family in _SORTABLE_TYPES)
        keys = list(node)
        if sortable and keys.index("items") < keys.index("uniqueItems"):
            continue
        why = ("is checked before \"items\"" if sortable else
               "is on an array whose items may be objects, arrays or of mixed types")
        found.append(f"{place}.uniqueItems {why}: jsonschema then compares every pair of items, so a call "
                     "with a few thousand items costs seconds to check (refused once over "
                     "limits.argument_check_seconds); give \"items\" one scalar \"type\" and write it first")
    return found


def _ref_expansion(schema: object) -> tuple[int, int]:
    """How many subschemas a check may walk when every $ref is followed (each time it is met), and the
    longest chain of $refs. References that loop count once: their cost follows the data's depth."""
    sizes: dict[str, tuple[int, int]] = {}

    def resolve(ref: str) -> object:
        if ref == "#":
            return schema
        if not ref.startswith("#/"):
            return None  # an $anchor: not followed here (the policy loader checked that it resolves)
        node: object = schema
        for token in ref[2:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                return None
        return node

    def measure(node: object, active: frozenset[str]) -> tuple[int, int]:
        size, depth = 1, 0
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    if value in active:
                        continue
                    if value not in sizes:
                        target = resolve(value)
                        inner = measure(target, active | {value}) if target is not None else (1, 0)
                        sizes[value] = (inner[0], inner[1] + 1)
                    size += sizes[value][0]
                    depth = max(depth, sizes[value][1])
                elif key not in _VALUE_KEYWORDS and key != "$defs" and key != "definitions":
                    inner = measure(value, active)
                    size += inner[0]
                    depth = max(depth, inner[1])
        elif isinstance(node, list):
            for value in node:
                inner = measure(value, active)
                size += inner[0]
                depth = max(depth, inner[1])
        return size, depth

    return measure(schema, frozenset())


def _costly_refs(schema: object, where: str) -> list[str]:
    size, depth = _ref_expansion(schema)
    found = []
    if size > EXPANSION_WARNING:
        found.append(f"{where} expands through $ref to about {size:,} subschemas (references that branch into "
                     "references multiply): checking one call can take very long (refused once over "
                     "limits.argument_check_seconds); define each part once")
    elif depth > REF_DEPTH_WARNING:
        found.append(f"{where} has $ref chains {depth} deep: every check follows them all; shorten them")
    return found


def lint(policy: Policy) -> list[str]:
    findings: list[str] = argument_annotations(policy)
    for rule in policy.rules:
        if rule.arguments is not None and rule.action in ("allow", "require_approval"):
            findings += _costly_unique_items(rule.arguments, f"rules.{rule.key}.arguments")
            findings += _costly_refs(rule.arguments, f"rules.{rule.key}.arguments")
        for place in _untyped_properties(rule.arguments, f"rules.{rule.key}.arguments"):
            findings.append(f"{place} has constraints but no \"type\": a server that converts arguments "
                            "to its tool's types (the Python SDK does) may accept \"1000\" as 1000 or \"yes\" "
                            "as true, past the constraint; add \"type\"")
        samples = [name for name in _samples(rule) if rule in policy.matching_rules(name)]
        if samples and all(select_rule(policy, name) != rule for name in samples):
            winner = select_rule(policy, samples[0])
            assert winner is not None
            findings.append(f"{rule.place} never decides anything: {winner.place} takes precedence for "
                            f"every tool it matches (for example {samples[0]!r})")
        for kind, limit in (("rate_limit", rule.rate_limit), ("budget", rule.budget)):
            if limit is not None and limit.max == 0:
                refused = ("every call is refused" if kind == "rate_limit"
                           else "every call that costs anything is refused")
                findings.append(f"rules.{rule.key}.{kind} has max 0: {refused}; "
                                "say action \"deny\" if that is what you mean")
            elif limit is not None and limit.window == 0:
                findings.append(f"rules.{rule.key}.{kind} has window 0, so it limits nothing")
        if rule.origin == "rules" and rule.action == "hide" and rule.reason:
            findings.append(f"rules.{rule.key} has a reason, but a hidden tool's caller only gets "
                            "the server's own answer for a tool it does not have: the reason is never shown")
        raw_rules = policy.raw.get("rules") if isinstance(policy.raw, dict) else None
        raw_rule = raw_rules.get(rule.key) if isinstance(raw_rules, dict) and rule.origin == "rules" else None
        if isinstance(raw_rule, dict) and "approval" in raw_rule and rule.action != "require_approval":
            findings.append(f"rules.{rule.key} has approval settings, but its action is {rule.action!r}: "
                            "only a require_approval rule asks anyone")
        if rule.action in ("deny", "hide") and rule.origin == "rules" and (
                rule.rate_limit or rule.budget or rule.arguments is not None):
            findings.append(f"rules.{rule.key} has action {rule.action!r}, so its limits and argument "
                            "constraints never apply")
    if policy.default in ("deny", "hide") and not any(
            rule.action in ("allow", "require_approval") for rule in policy.rules):
        findings.append(f"default is {policy.default!r} and no rule allows anything: every tool is "
                        f"{'refused' if policy.default == 'deny' else 'hidden'}")
    return findings


def lint_against_tools(policy: Policy, tool_names: list[str]) -> list[str]:
    findings = []
    for rule in policy.rules:
        if not any(rule in policy.matching_rules(name) for name in tool_names):
            findings.append(f"{rule.place} matches none of the server's {len(tool_names)} tools "
                            "(a typo, or a tool this server version does not have?)")
    return findings


def _destructive(tool: dict[str, Any]) -> bool:
    """The spec's reading of a tool's annotations: destructiveHint defaults to true, and only means
    something when the tool is not read-only (readOnlyHint defaults to false)."""
    annotations = tool.get("annotations")
    hints = annotations if isinstance(annotations, dict) else {}
    if hints.get("readOnlyHint") is True:
        return False
    return hints.get("destructiveHint", True) is not False


def lint_destructive_by_default(policy: Policy, tools: list[dict[str, Any]]) -> list[str]:
    """Tools the server marks destructive that no rule names and the default lets through."""
    if policy.default != "allow":
        return []
    names = [tool["name"] for tool in tools if _destructive(tool) and select_rule(policy, tool["name"]) is None]
    if not names:
        return []
    return [f"{len(names)} tool(s) the server marks destructive are allowed by default, with no rule: "
            f"{', '.join(names)} (destructiveHint, true when a tool that is not read-only does not say)"]


def lint_argument_names(policy: Policy, tools: list[dict[str, Any]]) -> list[str]:
    """A rule whose argument constraints name none of a tool's real arguments constrains nothing of that
    tool: a `read_*` rule on `path` leaves `read_multiple_files`, which takes `paths`, unconstrained. (A
    glob rule may constrain the union of several tools' flags, each tool having some: that is fine.)"""
    findings: list[str] = []
    for tool in tools:
        rule = select_rule(policy, tool["name"])
        if rule is None or rule.action in ("deny", "hide") or not isinstance(rule.arguments, dict):
            continue
        constrained = rule.arguments.get("properties")
        schema = tool.get("inputSchema")
        real = schema.get("properties") if isinstance(schema, dict) else None
        if not isinstance(constrained, dict) or not constrained or not isinstance(real, dict):
            continue
        if not any(name in real for name in constrained):
            names = list(real)
            takes = ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
            findings.append(f"{rule.place} constrains {', '.join(map(repr, constrained))}, which {tool['name']} "
                            f"does not take (its arguments: {takes or 'none'}): {tool['name']}'s real "
                            "arguments are unconstrained")
    return findings
