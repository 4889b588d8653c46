"""What `mcp-guard check` and `mcp-guard explain` print, and their exit statuses.

Both commands share one contract with `run`: exit status 0 when all is well, 1 for warnings (check) or a
refused call (explain), 2 when the input cannot be used; every error line starts `mcp-guard: error: `.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import click

from .commandline import Failure, parse_arguments
from .engine import SessionState, ToolCall, decide, select_rule
from .policy import Policy, PolicyError, Rule, load

# Where a limit counts (docs/scaling.md): one session (one mcp-guard process), every mcp-guard of this OS
# user on this machine, or every mcp-guard sharing the limit store.
SCOPES = {"session": "per session", "user": "per OS user (shared store)", "global": "global (shared store)"}

GROUPS = ("hidden", "denied", "needs approval", "limited", "constrained", "allowed by a rule",
          "allowed by default")


def limit_lines(rule: Rule) -> list[str]:
    """A rule's limits and constraints in words, each saying what kind of thing it is."""
    lines: list[str] = []
    if rule.rate_limit is not None:
        lines.append(f"rate limit: at most {rule.rate_limit.max} call(s) per {rule.rate_limit.window:g} s, "
                     f"{SCOPES[rule.rate_limit.scope]}")
    if rule.budget is not None:
        lines.append(f"budget: {rule.budget.max:g} per {rule.budget.window:g} s, {SCOPES[rule.budget.scope]}; "
                     f"each call costs the number at {rule.budget.cost} in its arguments")
    if rule.arguments is not None:
        properties = rule.arguments.get("properties") if isinstance(rule.arguments, dict) else None
        names = f" ({', '.join(properties)})" if isinstance(properties, dict) and properties else ""
        lines.append(f"argument constraint: a JSON Schema{names}")
    return lines


def group_of(policy: Policy, rule: Rule | None) -> str:
    action = rule.action if rule is not None else policy.default
    if action == "hide":
        return "hidden"
    if action == "deny":
        return "denied"
    if action == "require_approval":
        return "needs approval"
    if rule is None:
        return "allowed by default"
    if rule.rate_limit is not None or rule.budget is not None:
        return "limited"
    if rule.arguments is not None:
        return "constrained"
    return "allowed by a rule"


def approval_line(policy: Policy, rule: Rule | None, short: bool = False) -> str:
    """How a require_approval call is put to a human, in words: the channel run would use, and the
    rule's approval settings."""
    from .approvalcmd import COMMAND_ENV
    from .policy import DEFAULT_APPROVAL

    settings = rule.approval if rule is not None else DEFAULT_APPROVAL
    command = os.environ.get(COMMAND_ENV) or policy.approval_command
    if command:
        fallback = f"else the approval command ({command!r})"
    else:
        fallback = "else refused (no --approval-command, $MCP_GUARD_APPROVAL_COMMAND or \"approval_command\")"
    remember = {"none": "every call asked", "arguments": "remembered for identical arguments",
                "session": "remembered for the session"}[settings.remember]
    if short:
        then = f"else command {command!r}" if command else "else refused"
        return f"approval: client (elicitation), {then}; {settings.timeout:g} s; {remember}"
    return (f"approval: asked through the client when it supports elicitation, {fallback}; "
            f"waits {settings.timeout:g} s; {remember}")


@contextlib.contextmanager
def _stderr_held() -> Iterator[list[str]]:
    """Collect what is written to fd 2 (the server's stderr, which it inherits) while listing, so it is
    shown apart from the table instead of interleaving with it."""
    held: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as buffer:
        os.dup2(buffer.fileno(), 2)
        try:
            yield held
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            buffer.seek(0)
            held.append(buffer.read().decode("utf-8", "replace"))


def list_server_tools(command: tuple[str, ...], timeout: float) -> tuple[list[dict[str, Any]], str]:
    """The server's tools, and what it wrote to stderr meanwhile."""
    tools, _, server_stderr = list_server_described(command, timeout)
    return tools, server_stderr


def list_server_described(command: tuple[str, ...], timeout: float) -> tuple[list[dict[str, Any]], dict[str, Any], str]:
    """The server's tools, its serverInfo, and what it wrote to stderr meanwhile."""
    from .listing import ListingError, list_server

    error: str | None = None
    tools: list[dict[str, Any]] = []
    info: dict[str, Any] = {}
    with _stderr_held() as held:
        try:
            tools, info = list_server(list(command), timeout)
        except ListingError as exc:
            error = str(exc)
    server_stderr = "".join(held).rstrip("\n")
    if error is not None:
        if server_stderr:
            click.echo("The server's stderr:\n" + _indent(server_stderr), err=True)
        raise Failure(f"cannot list the server's tools: {error}", 2)
    return tools, info, server_stderr


def _indent(text: str) -> str:
    return "\n".join("  | " + line for line in text.splitlines())


def check(policy_file: str, command: tuple[str, ...], timeout: float) -> int:
    from .lint import lint, lint_against_tools, lint_argument_names, lint_destructive_by_default

    policy = _load_all_problems(policy_file)
    if policy is None:
        return 2
    findings = lint(policy)
    if not policy_file.endswith((".json", ".yaml", ".yml")):
        findings.append("the file name ends in neither .json nor .yaml/.yml, so it is read as JSON "
                        "(a policy is YAML when its name ends in .yaml or .yml)")
    tools: list[dict[str, Any]] | None = None
    server_stderr = ""
    if command:
        tools, server_stderr = list_server_tools(command, timeout)
        findings += lint_against_tools(policy, [tool["name"] for tool in tools])
        findings += lint_argument_names(policy, tools)
        findings += lint_destructive_by_default(policy, tools)
    drift_report: list[str] = []
    pin_held: dict[str, str] = {}  # tools run will hide or hold for approval because of the pin: why
    if policy.pin is not None:
        from .pinning import PinError, drift, drift_lines, load_lock

        try:
            lock = load_lock(policy.pin)
        except PinError as exc:
            click.echo(f"mcp-guard: error: {exc}", err=True)
            return 2
        if tools is not None:
            found = drift(lock, tools)
            if found.any:
                does = "hides" if policy.on_pin_mismatch == "hide" else "holds for approval"
                findings.append(f"the server's tools differ from the pin {policy.pin}: {len(found.added)} added, "
                                f"{len(found.removed)} removed, {len(found.changed)} changed (below); "
                                f"mcp-guard run {does} what is new or changed")
                drift_report = drift_lines(found)
                pin_held = {name: "added" for name in found.added} | {name: "changed" for name, _ in found.changed}
    from .commandline import monitor_words

    for finding in findings:
        click.echo(f"{policy_file}: warning: {finding}")
    if monitor_words(policy):
        click.echo(f"{policy_file}: note: {monitor_words(policy)[2:]}")
    for line in drift_report:
        click.echo(f"  {line}")
    if tools is not None:
        _print_table(policy, tools, pin_held)
        if server_stderr:
            click.echo("The server's stderr while listing:\n" + _indent(server_stderr))
    if findings:
        click.echo(f"{policy_file}: {len(findings)} warning(s)")
        return 1
    click.echo(f"{policy_file}: OK")
    return 0


def _load_all_problems(policy_file: str) -> Policy | None:
    try:
        return load(policy_file)
    except PolicyError as exc:
        for problem in exc.problems:
            click.echo(f"mcp-guard: error: policy error: {problem}", err=True)
        if len(exc.problems) > 1:
            click.echo(f"mcp-guard: error: {policy_file}: {len(exc.problems)} problems", err=True)
        return None


def _print_table(policy: Policy, tools: list[dict[str, Any]], pin_held: dict[str, str] | None = None) -> None:
    grouped: dict[str, list[tuple[str, Rule | None]]] = {group: [] for group in GROUPS}
    pinned_out: dict[str, str] = {}
    for tool in tools:
        # What the rule says, not what a call with no arguments would get: an argument schema that
        # requires something would otherwise show an allowed tool as denied.
        rule = select_rule(policy, tool["name"])
        group = group_of(policy, rule)
        if pin_held and tool["name"] in pin_held and group != "hidden":
            # What run does with a tool new or changed since it was pinned, before the policy is asked.
            group = "hidden" if policy.on_pin_mismatch == "hide" else "needs approval"
            pinned_out[tool["name"]] = f"[pin: {pin_held[tool['name']]} since pinned]"
        grouped[group].append((tool["name"], rule))
    shown = len(tools) - len(grouped["hidden"])
    click.echo(f"The server offers {len(tools)} tool(s); the agent will see {shown}:")
    width = max((len(tool["name"]) for tool in tools), default=0)
    for group in GROUPS:
        rows = grouped[group]
        if not rows:
            continue
        click.echo(f"{group} ({len(rows)}):")
        for name, rule in rows:
            where = f"[rule: {rule.key}]" if rule is not None else "[default]"
            if name in pinned_out:
                click.echo(f"  {name:<{width}}  {pinned_out[name]}")
                continue
            details = []
            if group in ("denied", "needs approval"):
                reason = rule.reason if rule is not None else policy.default_reason
                if reason:
                    details.append(f"reason: {reason}")
            if group == "needs approval" and name not in pinned_out:
                details.append(approval_line(policy, rule, short=True))
            if rule is not None and group not in ("hidden", "denied"):
                details += limit_lines(rule)
            click.echo(f"  {name:<{width}}  {where}" + "".join(f"; {d}" for d in details))


def explain(policy_path: str, tool: str, args_json: str | None, command: tuple[str, ...], timeout: float,
            as_json: bool, policy_from_environment: bool = False) -> int:
    from .commandline import load_policy

    policy = load_policy(policy_path, policy_from_environment)
    arguments = parse_arguments(args_json)
    rule = select_rule(policy, tool)
    offered: bool | None = None
    if command:
        names = [t["name"] for t in list_server_tools(command, timeout)[0]]
        offered = tool in names
        if not offered and not policy.matching_rules(tool):
            import difflib

            close = difflib.get_close_matches(tool, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise Failure(f"no such tool on this server: {tool!r}{hint}; it offers {len(names)} tool(s)", 2)
    decision = decide(policy, ToolCall(tool, arguments), SessionState(), 0.0)
    monitored = not decision.allowed and (policy.mode == "monitor" or (rule is not None and rule.monitor))
    record = {"tool": tool, **decision.as_record(), **({"monitor": True} if monitored else {})}
    if as_json:
        click.echo(json.dumps(record))
        return 0 if decision.allowed else 1
    matched = policy.matching_rules(tool)
    click.echo(f"tool:     {tool}")
    click.echo(f"decision: {decision.action}{' (hidden from tools/list)' if decision.action == 'hide' else ''}")
    click.echo(f"rule:     {rule.place if rule else 'default'}")
    if monitored:
        why = "the policy's \"mode\" is \"monitor\"" if policy.mode == "monitor" else "the rule says \"monitor\": true"
        click.echo(f"monitor:  {why}: run records this decision but forwards the call (and lists the tool)")
    if decision.reason:
        click.echo(f"reason:   {decision.reason}")
    if decision.action == "require_approval":
        click.echo(f"how:      {approval_line(policy, rule)[len('approval: '):]}")
    if rule is not None and rule.action in ("allow", "require_approval"):
        for line in limit_lines(rule):
            click.echo(f"limit:    {line}")
    if len(matched) > 1:
        click.echo("also matched (less specific): " + ", ".join(r.place for r in matched[1:]))
    if offered is False:
        click.echo("note:     the server does not offer this tool")
    return 0 if decision.allowed else 1
