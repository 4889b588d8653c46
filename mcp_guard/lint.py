"""Lints for `mcp-guard check`: policies that load but probably do not say what their author meant."""

from __future__ import annotations

import re

from .engine import select_rule
from .policy import Policy, Rule


def _samples(rule: Rule) -> list[str]:
    """Names the rule's key matches, to test whether anything else always decides them first."""
    if not rule.is_glob:
        return [rule.key]
    out = []
    for star in ("", "x", "zz_9-Q"):
        name = re.sub(r"\[!?\]?[^\]]*\]", lambda m: _first_in_class(m.group(0)), rule.key)
        out.append(name.replace("*", star).replace("?", "q"))
    return out


def _first_in_class(cls: str) -> str:
    body = cls[1:-1]
    if body.startswith(("!", "^")):
        return "\x01"
    return body[0] if body else "a"


def lint(policy: Policy) -> list[str]:
    findings: list[str] = []
    for rule in policy.rules:
        samples = [name for name in _samples(rule) if rule in policy.matching_rules(name)]
        if samples and all(select_rule(policy, name) != rule for name in samples):
            winner = select_rule(policy, samples[0])
            assert winner is not None
            findings.append(f"{rule.place} never decides anything: {winner.place} takes precedence for "
                            f"every tool it matches (for example {samples[0]!r})")
        for kind, limit in (("rate_limit", rule.rate_limit), ("budget", rule.budget)):
            if limit is not None and limit.window == 0:
                findings.append(f"rules.{rule.key}.{kind} has window 0, so it limits nothing")
        if rule.rate_limit is not None and rule.rate_limit.max == 0 and rule.rate_limit.window > 0:
            findings.append(f"rules.{rule.key}.rate_limit has max 0: every call is refused; "
                            "say action \"deny\" if that is what you mean")
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
