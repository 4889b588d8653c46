"""The `mcp-guard` command: parse arguments, load the policy, call into the package. No logic here."""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import click

from . import __version__

POLICY_ENV = "MCP_GUARD_POLICY"
AUDIT_ENV = "MCP_GUARD_AUDIT"


class Failure(Exception):
    """An error for people: printed as one line, with an exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=getattr(logging, level.upper()),
                        format="mcp-guard: %(levelname)s: %(message)s")


def _load_policy(path: str | None) -> Any:
    from .policy import PolicyError, allow_all, load

    if path is None:
        return allow_all()
    try:
        return load(path)
    except PolicyError as exc:
        raise Failure(f"policy error: {exc}", 2) from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcp-guard (the MCP policy proxy)")
def cli() -> None:
    """A policy proxy in front of an MCP stdio server: hide tools, allow, deny, rate-limit and
    constrain tool calls."""


@cli.command(context_settings={"allow_interspersed_args": False})
@click.option("--policy", "policy_path", envvar=POLICY_ENV, type=click.Path(dir_okay=False),
              help=f"Policy file (JSON, or YAML by extension). Also ${POLICY_ENV}. Without one, "
                   "everything passes.")
@click.option("--audit", "audit_path", envvar=AUDIT_ENV, type=click.Path(dir_okay=False),
              help=f"Append one JSON decision record per line to this file. Also ${AUDIT_ENV}.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="mcp-guard's own log on stderr.")
@click.option("--max-message-bytes", default=64 * 1024 * 1024, show_default=True, type=click.IntRange(1024),
              help="Longer lines are refused (client) or dropped (upstream) with a JSON-RPC error.")
@click.option("--drain-timeout", default=30.0, show_default=True, type=click.FloatRange(0),
              help="After the client closes stdin, seconds to wait for answers still owed.")
@click.option("--shutdown-grace", default=3.0, show_default=True, type=click.FloatRange(0),
              help="Seconds the server gets to exit after its stdin closes, before SIGTERM (then SIGKILL).")
@click.option("--state", "state", default=None, metavar="URL",
              help="The limit store of global-scoped limits: sqlite:///path/to/state.db or redis://host:port/db. "
                   "Also $MCP_GUARD_STATE, then the policy's \"state\"; default: a SQLite file in the user's "
                   "state directory.")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def run(policy_path: str | None, audit_path: str | None, log_level: str, max_message_bytes: int,
        drain_timeout: float, shutdown_grace: float, state: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND (an MCP stdio server) behind the policy: mcp-guard run --policy FILE -- COMMAND..."""
    _setup_logging(log_level)
    for variable in (POLICY_ENV, AUDIT_ENV):
        if os.environ.get(variable) == "" and not (policy_path if variable == POLICY_ENV else audit_path):
            # Set but empty (a templated client config whose variable was never filled): refusing beats
            # silently running without the policy, or without the audit trail.
            raise Failure(f"{variable} is set but empty; unset it or name a file", 2)
    if not command:
        raise Failure("no server command: use mcp-guard run [--policy FILE] -- COMMAND [ARGS...]", 2)
    policy = _load_policy(policy_path)
    from .lint import argument_annotations

    for finding in argument_annotations(policy):
        logging.getLogger("mcp_guard").warning("%s: %s", policy.source, finding)
    shared = _open_shared(policy, state)
    from .audit import AuditLog
    from .guard import Guard
    from .relay import Options
    from .runner import run_relay
    from .upstream import StartError

    try:
        audit = AuditLog(audit_path)
    except OSError as exc:
        raise Failure(f"cannot open the audit file {audit_path}: {exc.strerror or exc}", 2) from None
    audit.record("start", policy=policy.source, command=list(command), version=__version__)
    options = Options(max_message_bytes, drain_timeout, shutdown_grace)
    try:
        status = run_relay(command, Guard(policy, audit, shared=shared), options)
    except StartError as exc:
        raise Failure(str(exc), exc.status) from None
    finally:
        audit.close()
    # A pump thread may still be blocked reading a client that never closed its end; do not wait for it.
    sys.stderr.flush()
    os._exit(status)


@cli.command()
@click.argument("policy_file", type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0),
              help="Seconds the whole listing may take (start, handshake, every page), however chatty the "
                   "server is.")
def check(policy_file: str, command: tuple[str, ...], timeout: float) -> None:
    """Validate and lint POLICY_FILE; with -- COMMAND, also compare it with the server's real tools."""
    from .lint import lint
    from .policy import PolicyError, load

    try:
        policy = load(policy_file)
    except PolicyError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    findings = lint(policy)
    tools: list[dict[str, Any]] | None = None
    if command:
        from .listing import ListingError, list_tools

        try:
            tools = list_tools(list(command), timeout)
        except ListingError as exc:
            raise Failure(f"cannot list the server's tools: {exc}", 1) from None
        from .lint import lint_against_tools

        findings += lint_against_tools(policy, [tool["name"] for tool in tools])
    for finding in findings:
        click.echo(f"{policy_file}: warning: {finding}")
    if tools is not None:
        from .engine import select_rule, visible

        shown = [tool["name"] for tool in tools if visible(policy, tool["name"])]
        click.echo(f"The server offers {len(tools)} tool(s); the agent will see {len(shown)}:")
        for tool in tools:
            name = tool["name"]
            # What the rule says, not what a call with no arguments would get: an argument schema
            # that requires something would otherwise show an allowed tool as denied.
            rule = select_rule(policy, name)
            action = rule.action if rule else policy.default
            label: str = "hidden" if action == "hide" else action
            if action == "allow" and rule is not None and (
                    rule.rate_limit or rule.budget or rule.arguments is not None):
                label = "allow (limited)"
            click.echo(f"  {label:<18} {name}  [{rule.key if rule else 'default'}]")
    if findings:
        click.echo(f"{policy_file}: {len(findings)} warning(s)")
        sys.exit(1)
    click.echo(f"{policy_file}: OK")


@cli.command()
@click.option("--policy", "policy_path", envvar=POLICY_ENV, required=True, type=click.Path(dir_okay=False))
@click.option("--args", "args_json", default=None, help="The call's arguments as a JSON object.")
@click.argument("tool")
def explain(policy_path: str, args_json: str | None, tool: str) -> None:
    """Show the decision for a call to TOOL and the rule that made it."""
    from .engine import SessionState, ToolCall, decide, select_rule

    policy = _load_policy(policy_path)
    arguments = None
    if args_json is not None:
        try:
            arguments = json.loads(args_json)
        except ValueError as exc:
            raise Failure(f"--args is not valid JSON: {exc}", 2) from None
        if not isinstance(arguments, dict):
            raise Failure("--args must be a JSON object", 2)
    decision = decide(policy, ToolCall(tool, arguments), SessionState(), 0.0)
    rule = select_rule(policy, tool)
    matched = policy.matching_rules(tool)
    click.echo(f"tool:     {tool}")
    click.echo(f"decision: {decision.action}{' (hidden from tools/list)' if decision.action == 'hide' else ''}")
    click.echo(f"rule:     {rule.place if rule else 'default'}")
    if decision.reason:
        click.echo(f"reason:   {decision.reason}")
    if rule and (rule.rate_limit or rule.budget):
        if rule.rate_limit:
            click.echo(f"limit:    at most {rule.rate_limit.max} call(s) per {rule.rate_limit.window:g} s"
                       f" ({rule.rate_limit.scope} scope)")
        if rule.budget:
            click.echo(f"budget:   {rule.budget.max:g} per {rule.budget.window:g} s, cost at {rule.budget.cost}"
                       f" ({rule.budget.scope} scope)")
    if len(matched) > 1:
        click.echo("also matched (less specific): " + ", ".join(r.place for r in matched[1:]))
    click.echo(json.dumps({"tool": tool, **decision.as_record()}))


def _open_shared(policy: Any, state: str | None) -> Any:
    """The limit stores of the policy's user- and global-scoped limits, checked before the child starts.
    A policy with session-scoped limits only imports and opens nothing (start-up stays as fast)."""
    if state is None and os.environ.get("MCP_GUARD_STATE") == "":
        raise Failure("MCP_GUARD_STATE is set but empty; unset it or name a store", 2)
    if not policy.shared_limits:
        return None
    from .limitstore import StoreURLError
    from .sharedlimits import open_shared

    try:
        return open_shared(policy, state)
    except StoreURLError as exc:
        raise Failure(f"limit store: {exc}", 2) from None


@cli.command()
@click.option("--state", "state", default=None, metavar="URL",
              help="The limit store (as for run): --state, $MCP_GUARD_STATE, the policy's \"state\", the default.")
@click.option("--policy", "policy_path", envvar=POLICY_ENV, type=click.Path(dir_okay=False),
              help="Show this policy's shared limits (and their user-scoped counters in the user's own store).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per counter.")
@click.option("--reset", "reset_rule", default=None, metavar="RULE",
              help="Forget what RULE's shared limits have taken (needs --policy).")
def status(state: str | None, policy_path: str | None, as_json: bool, reset_rule: str | None) -> None:
    """The shared limits' counters: what is taken in each window, what is left, when it frees up."""
    from .limitstore import StoreUnavailable, StoreURLError, default_url, open_store
    from .sharedlimits import reset, state_url
    from .sharedlimits import status as counters

    policy = _load_policy(policy_path) if policy_path else None
    if reset_rule is not None and policy is None:
        raise Failure("--reset needs the policy whose rule it is: --policy FILE", 2)
    url = state or os.environ.get("MCP_GUARD_STATE") or (policy.state if policy else None) or default_url()
    if policy is not None:
        url = state_url(state, policy)
    try:
        store = open_store(url)
        user_scoped = policy is not None and any(limit is not None and limit.scope == "user"
                                                 for rule in policy.rules for limit in (rule.rate_limit, rule.budget))
        user_store = open_store(default_url()) if user_scoped and url != default_url() else store
    except StoreURLError as exc:
        raise Failure(f"limit store: {exc}", 2) from None
    try:
        if reset_rule is not None:
            assert policy is not None
            if not any(rule.key == reset_rule for rule in policy.rules):
                raise Failure(f"the policy has no rule {reset_rule!r}", 2)
            removed = reset(policy, reset_rule, store, user_store)
            click.echo(f"reset {reset_rule}: {removed} entr{'y' if removed == 1 else 'ies'} removed")
            return
        rows = counters(policy, store, user_store)
    except StoreUnavailable as exc:
        raise Failure(f"the limit store is unavailable: {exc}", 1) from None
    if as_json:
        for row in rows:
            click.echo(json.dumps(row))
        return
    if not rows:
        click.echo(f"no shared limits in {url}" if policy is None else
                   f"{policy.source}: no user- or global-scoped limits")
        return
    for row in rows:
        frees = f", frees up in {row['frees_in']:.0f} s" if row["frees_in"] is not None else ""
        who = f"user {row['user']}" if "user" in row else row["scope"]
        click.echo(f"{row['rule']} {row['limit']} ({who}, {row['policy']}): {row['used']:g} of {row['max']:g} "
                   f"taken in {row['window']:g} s, {row['left']:g} left{frees}")


@cli.command()
def schema() -> None:
    """Print the policy file's JSON Schema (for editors and CI)."""
    from .policy import schema as policy_schema

    click.echo(json.dumps(policy_schema(), indent=2))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from ._conflicts import explain as explain_conflict
    from ._conflicts import foreign_distributions

    foreign = foreign_distributions()
    if foreign:
        click.echo(f"mcp-guard: warning: {explain_conflict(foreign)}", err=True)
    if args[:1] == ["run"] and "--" not in args and not {"-h", "--help"} & set(args):
        click.echo("mcp-guard: error: put -- before the server command: "
                   "mcp-guard run [--policy FILE] -- COMMAND [ARGS...]", err=True)
        sys.exit(2)
    try:
        cli.main(args=args, prog_name="mcp-guard", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("mcp-guard: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"mcp-guard: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except Failure as exc:
        click.echo(f"mcp-guard: error: {exc}", err=True)
        sys.exit(exc.status)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
