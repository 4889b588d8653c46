"""The `mcp-guard` command: parse arguments, load the policy, call into the package. No logic here."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

import click

from . import __version__
from .commandline import AUDIT_ENV, POLICY_ENV, Failure, ServerCommand
from .options import DEFAULT_DRAIN_TIMEOUT, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_SHUTDOWN_GRACE, Options


def _utc_time(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created * 1000) % 1000:03d}Z"


class _StderrFormatter(logging.Formatter):
    """`TIME mcp-guard: level: message`: a client's log file holds many servers' lines, hours apart."""

    def format(self, record: logging.LogRecord) -> str:
        return f"{_utc_time(record.created)} mcp-guard: {record.levelname.lower()}: {super().format(record)}"


def _setup_logging(level: str) -> None:
    # Written by a thread of its own, never blocking the relay or signal handling (diagnostics.py).
    from .diagnostics import setup_logging

    setup_logging(level, _StderrFormatter("%(message)s"))


def _announce(message: str) -> None:
    """A start-up line shown at every log level: which policy is in force."""
    click.echo(f"{_utc_time(time.time())} mcp-guard: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="mcp-guard (the MCP policy proxy)")
def cli() -> None:
    """A policy proxy in front of an MCP stdio server: hide tools, allow, deny, rate-limit and
    constrain tool calls."""


@cli.command(cls=ServerCommand, context_settings={"allow_interspersed_args": False})
@click.option("--policy", "policy_path", envvar=POLICY_ENV, type=click.Path(dir_okay=False),
              help=f"Policy file (JSON, or YAML by extension). Also ${POLICY_ENV}.")
@click.option("--no-policy", is_flag=True,
              help="Relay without a policy: every message passes. Without a policy and without this "
                   "flag, run refuses to start.")
@click.option("--audit", "audit_path", envvar=AUDIT_ENV, type=click.Path(dir_okay=False),
              help=f"Append one JSON decision record per line to this file (docs/audit.md). Also ${AUDIT_ENV}.")
@click.option("--audit-args", "audit_args", default="keys", show_default=True, envvar="MCP_GUARD_AUDIT_ARGS",
              type=click.Choice(["keys", "hash", "full"]),
              help="What the audit records of a call's arguments: their keys, a SHA-256 of the canonical "
                   "arguments (identical calls match), or the arguments whole (they may hold secrets).")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
              help="mcp-guard's own log on stderr.")
@click.option("--no-reload", is_flag=True,
              help="Do not reload the policy when its file changes or on SIGHUP (SIGHUP then stops mcp-guard).")
@click.option("--monitor", is_flag=True,
              help="Monitor (shadow) mode: decide and record every call as the policy says (monitor_would_deny, "
                   "...), warn on stderr, but refuse and hide nothing. To roll a policy out (docs/audit.md).")
@click.option("--max-message-bytes", default=DEFAULT_MAX_MESSAGE_BYTES, show_default=True, type=click.IntRange(1024),
              help="Longer lines are refused (client) or dropped (upstream) with a JSON-RPC error.")
@click.option("--drain-timeout", default=DEFAULT_DRAIN_TIMEOUT, show_default=True, type=click.FloatRange(0),
              help="After the client closes stdin, seconds to wait for answers still owed.")
@click.option("--shutdown-grace", default=DEFAULT_SHUTDOWN_GRACE, show_default=True, type=click.FloatRange(0),
              help="Seconds the server gets to exit after its stdin closes, before SIGTERM (then SIGKILL).")
@click.option("--state", "state", default=None, metavar="URL", envvar="MCP_GUARD_STATE",
              help="The limit store of global-scoped limits: sqlite:///path/to/state.db or redis://host:port/db. "
                   "Also $MCP_GUARD_STATE, then the policy's \"state\"; default: a SQLite file in the user's "
                   "state directory.")
@click.option("--approval-command", "approval_command", default=None, metavar="CMD",
              envvar="MCP_GUARD_APPROVAL_COMMAND",
              help="Asked to approve require_approval calls when the client cannot ask its human (no elicitation): "
                   "run by the shell with the call as JSON on stdin; exit 0 approves. Also "
                   "$MCP_GUARD_APPROVAL_COMMAND, then the policy's \"approval_command\" (docs/approval.md).")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, policy_path: str | None, no_policy: bool, audit_path: str | None, audit_args: str,
        log_level: str, no_reload: bool, monitor: bool, max_message_bytes: int, drain_timeout: float,
        shutdown_grace: float, state: str | None, approval_command: str | None, command: tuple[str, ...]) -> None:
    """Run COMMAND (an MCP stdio server) behind the policy: mcp-guard run --policy FILE COMMAND [ARGS...]
    (a `--` before COMMAND is optional)."""
    from .commandline import load_run_policy, policy_summary

    _setup_logging(log_level)
    for variable in (POLICY_ENV, AUDIT_ENV):
        if os.environ.get(variable) == "" and not (policy_path if variable == POLICY_ENV else audit_path):
            # Set but empty (a templated client config whose variable was never filled): refusing beats
            # silently running without the policy, or without the audit trail.
            raise Failure(f"{variable} is set but empty; unset it or name a file", 2, answer_client=True)
    if not command:
        raise Failure("no server command: use mcp-guard run --policy FILE COMMAND [ARGS...]", 2)
    from_environment = ctx.get_parameter_source("policy_path") == click.core.ParameterSource.ENVIRONMENT
    policy = load_run_policy(policy_path, no_policy, from_environment, command)
    from .lint import argument_annotations

    for finding in argument_annotations(policy):
        logging.getLogger("mcp_guard").warning("%s: %s", policy.source, finding)
    shared = _open_shared(policy, state)
    from .audit import AuditLog
    from .guard import Guard
    from .runner import run_relay
    from .upstream import StartError

    try:
        audit = AuditLog(audit_path, audit_args, command)
    except OSError as exc:
        raise Failure(f"cannot open the audit file {audit_path}: {exc.strerror or exc}", 2,
                      answer_client=True) from None
    audit.record("start", policy=policy.source, command=list(command), version=__version__, audit_args=audit_args,
                 mode="monitor" if monitor or policy.mode == "monitor" else "enforce")
    options = Options(max_message_bytes, drain_timeout, shutdown_grace)
    guard = Guard(policy, audit, shared=shared, pins=_pin_check(policy), monitor=monitor,
                  approval_command=approval_command, server_command=command)
    if not no_policy and not no_reload:
        from . import oslayer
        from .reload import PolicyReloader

        guard.reloader = PolicyReloader(policy.source, guard)
        # SIGHUP (where there is one) reloads the policy (the reloader's own receiver) instead of ending
        # the session.
        options.stop_signals = tuple(s for s in options.stop_signals if s != oslayer.SIGHUP)

    def ended(status: int, how: str) -> None:
        # The session's last record: how it ended, and what was decided in it.
        audit.record("end", how=how, status=status, calls=sum(guard.counts.values()), decisions=dict(guard.counts))

    try:
        discovered = policy_path is None
        summary = (policy_summary(policy, discovered, monitor) if not no_policy
                   else "no policy (--no-policy): every message passes")
        status = run_relay(command, guard, options, started=lambda: _announce(summary), ended=ended)
    except StartError as exc:
        raise Failure(str(exc), exc.status, answer_client=True) from None
    finally:
        audit.close()
    # A pump thread may still be blocked reading a client that never closed its end; do not wait for it.
    # The log, and the server's last words on stderr, are given a moment (none if stderr is not read).
    from .diagnostics import flush

    flush(2.0)
    sys.stderr.flush()
    os._exit(status)


@cli.command(cls=ServerCommand, leading=1)
@click.argument("policy_file", required=False, type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0),
              help="Seconds the whole listing may take (start, handshake, every page), however chatty the "
                   "server is.")
def check(policy_file: str | None, command: tuple[str, ...], timeout: float) -> None:
    """Validate and lint POLICY_FILE; with COMMAND (a `--` before it is optional), also compare it with the
    server's real tools and show what the agent will see. Without POLICY_FILE, the policy run would use
    ($MCP_GUARD_POLICY, else the first found: see docs/policy.md). Exit status: 0 clean, 1 warnings,
    2 invalid."""
    from .commandline import find_policy
    from .reports import check as report

    if policy_file is None:
        policy_file, discovered = find_policy(os.environ.get(POLICY_ENV) or None, "POLICY_FILE")
        _announce(f"checking {policy_file}" + (" (found: none named)" if discovered else f" (from ${POLICY_ENV})"))

    sys.exit(report(policy_file, command, timeout))


@cli.command(cls=ServerCommand)
@click.option("-o", "--output", default="tools.lock", show_default=True, type=click.Path(dir_okay=False),
              help="The lock file to write (replaced if it exists: pinning again accepts today's tools).")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds the whole listing may take.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def pin(output: str, timeout: float, command: tuple[str, ...]) -> None:
    """Record a hash of each tool's definition (name, description, inputSchema, annotations) of the server
    COMMAND starts; with "pin": FILE in a policy, a tool new or changed since is hidden. Exit status: 0, or
    2 when the server cannot be listed or the file cannot be written."""
    from .inspection import pin_command

    sys.exit(pin_command(output, command, timeout))


@cli.command(cls=ServerCommand)
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False),
              help="Also show what this policy does with each tool (hidden, denied, approval, limited, allowed).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the server's info and every tool's class.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds the whole listing may take.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def tools(policy_path: str | None, as_json: bool, timeout: float, command: tuple[str, ...]) -> None:
    """List every tool of the server COMMAND starts, with its risk, category and why (its annotations, the
    server's own claims, then words in its name). Exit status: 0, or 2 when the server cannot be listed."""
    from .inspection import tools_command

    sys.exit(tools_command(policy_path, as_json, command, timeout))


@cli.command(cls=ServerCommand)
@click.option("--profile", type=click.Choice(["strict", "balanced", "permissive"]), default="balanced",
              show_default=True, help="strict: default deny, destructive tools hidden, read tools allowed; "
              "balanced: destructive and execute tools need approval, write tools rate-limited; "
              "permissive: only destructive tools rate-limited.")
@click.option("-o", "--output", default="mcp-guard.json", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the policy (- for stdout). mcp-guard.json is found by run without --policy.")
@click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds the whole listing may take.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def init(profile: str, output: str, force: bool, timeout: float, command: tuple[str, ...]) -> None:
    """Write a starter policy for the server COMMAND starts, every rule with the reason it was made.
    Exit status: 0 written, 2 when the file exists (without --force) or the server cannot be listed."""
    from .inspection import init_command

    sys.exit(init_command(profile, output, force, command, timeout))


@cli.command(cls=ServerCommand, leading=1)
@click.option("--policy", "policy_path", envvar=POLICY_ENV, type=click.Path(dir_okay=False),
              help=f"Policy file. Also ${POLICY_ENV}; else the first found (docs/policy.md).")
@click.option("--args", "args_json", default=None, help="The call's arguments as a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as one JSON object, nothing else.")
@click.option("--timeout", default=30.0, show_default=True, help="Seconds to wait for the server's tool list.")
@click.argument("tool")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def explain(ctx: click.Context, policy_path: str | None, args_json: str | None, as_json: bool, timeout: float,
            tool: str, command: tuple[str, ...]) -> None:
    """Show the decision for a call to TOOL and the rule that made it; with COMMAND, also whether the
    server offers TOOL. Exit status: 0 allowed, 1 refused, 2 bad input."""
    from .commandline import find_policy
    from .reports import explain as report

    from_environment = ctx.get_parameter_source("policy_path") == click.core.ParameterSource.ENVIRONMENT
    policy_path, discovered = find_policy(policy_path, "--policy FILE")
    if discovered:
        _announce(f"policy {policy_path} (found: no --policy named one)")
    sys.exit(report(policy_path, tool, args_json, command, timeout, as_json, from_environment))


@cli.group()
def audit() -> None:
    """Read an audit file (run --audit FILE): check its hash chain, count its decisions, follow it."""


@audit.command("verify")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON object: each session's records, last hash, problem.")
def audit_verify(file: str, as_json: bool) -> None:
    """Check every session's hash chain in FILE: OK, or the first line removed, edited or reordered in
    each session. Exit status: 0 intact, 1 broken, 3 intact but mcp-guard could not write some records
    (a full disk), 2 unreadable."""
    from .auditcli import verify_command

    sys.exit(verify_command(file, as_json))


@audit.command("summary")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--since", default=None, metavar="DURATION", help="Only records of the last 30s, 15m, 1h, 2d...")
@click.option("--session", default=None, metavar="ID", help="Only this session (a prefix of its id is enough).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object, for programs.")
def audit_summary(file: str, since: str | None, session: str | None, as_json: bool) -> None:
    """Counts by tool and decision, the commonest refusal reasons, the slowest tools and the approvals."""
    from .auditcli import summary_command

    sys.exit(summary_command(file, since, session, as_json))


@audit.command("tail")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("-n", "--lines", default=10, show_default=True, type=click.IntRange(0),
              help="Decisions already in the file to show first.")
@click.option("--no-follow", is_flag=True, help="Show them and stop, instead of following the file.")
def audit_tail(file: str, lines: int, no_follow: bool) -> None:
    """Follow FILE live, one short line per decision (Ctrl-C stops)."""
    from .auditcli import tail_command

    sys.exit(tail_command(file, lines, not no_follow))


def _pin_check(policy: Any) -> Any:
    """The policy's pin, its lock file read now: a missing or corrupt one stops the start (exit 2)."""
    if policy.pin is None:
        return None
    from .pinning import PinCheck, PinError, load_lock

    try:
        return PinCheck(load_lock(policy.pin), policy.on_pin_mismatch)
    except PinError as exc:
        raise Failure(str(exc), 2, answer_client=True) from None


def _open_shared(policy: Any, state: str | None) -> Any:
    """The limit stores of the policy's user- and global-scoped limits, checked before the child starts.
    A policy with session-scoped limits only imports and opens nothing (start-up stays as fast)."""
    if state is None and os.environ.get("MCP_GUARD_STATE") == "":
        raise Failure("MCP_GUARD_STATE is set but empty; unset it or name a store", 2, answer_client=True)
    if not policy.shared_limits:
        return None
    from .limitstore import StoreURLError
    from .sharedlimits import open_shared

    try:
        return open_shared(policy, state)
    except StoreURLError as exc:
        raise Failure(f"limit store: {exc}", 2, answer_client=True) from None


@cli.command()
@click.option("--state", "state", default=None, metavar="URL", envvar="MCP_GUARD_STATE",
              help="The limit store (as for run): --state, $MCP_GUARD_STATE, the policy's \"state\", the default.")
@click.option("--policy", "policy_path", envvar=POLICY_ENV, type=click.Path(dir_okay=False),
              help="Show this policy's shared limits (and their user-scoped counters in the user's own store).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per counter.")
@click.option("--reset", "reset_rule", default=None, metavar="RULE",
              help="Forget what RULE's shared limits have taken (needs --policy).")
def status(state: str | None, policy_path: str | None, as_json: bool, reset_rule: str | None) -> None:
    """The shared limits' counters: what is taken in each window, what is left, when it frees up."""
    from .commandline import load_policy
    from .limitstore import StoreUnavailable, StoreURLError, default_url, open_store
    from .sharedlimits import reset, state_url
    from .sharedlimits import status as counters

    policy = load_policy(policy_path, False) if policy_path else None
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
        raise Failure(f"limit store: {exc}", 2, answer_client=True) from None
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


@cli.command(cls=ServerCommand, leading=1)
@click.option("--policy", "policy_path", envvar=POLICY_ENV, type=click.Path(dir_okay=False),
              help=f"Policy file. Also ${POLICY_ENV}; else the first found (docs/policy.md).")
@click.option("--args", "args_json", default=None, help="The call's arguments as a JSON object.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON, not its text.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="Seconds each answer (initialize, the call) may take.")
@click.argument("tool")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def call(policy_path: str | None, args_json: str | None, as_json: bool, timeout: float, tool: str,
         command: tuple[str, ...]) -> None:
    """Start COMMAND behind the policy (as `mcp-guard run` does), call TOOL once and print the result's
    text. Exit status: 0 the call ran and succeeded, 1 the server answered with an error, 3 the policy
    refused it (hidden, denied, limited, needs approval), 2 bad input."""
    from .calltool import call as call_tool
    from .commandline import find_policy

    policy_path, _ = find_policy(policy_path, "--policy FILE")
    sys.exit(call_tool(policy_path, tool, args_json, command, as_json, timeout))


@cli.command(cls=ServerCommand, leading=1)
@click.argument("tests_file", type=click.Path(dir_okay=False))
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False), help="Also write JUnit XML to this file.")
@click.option("--offline", is_flag=True, help="Ask the policy alone (as explain does); start no server.")
def test(tests_file: str, command: tuple[str, ...], junit_path: str | None, offline: bool) -> None:
    """Run the policy tests in TESTS_FILE (JSON or YAML; `mcp-guard schema --tests`) through mcp-guard run
    in front of the file's server, or COMMAND (a `--` before it is optional). Exit status: 0 all passed,
    1 any failed, 2 bad file or input."""
    from .policytests import run_tests

    sys.exit(run_tests(tests_file, command, junit_path, offline))


@cli.command()
@click.option("--tests", "tests_schema", is_flag=True,
              help="The test file's schema (mcp-guard test), not the policy's.")
def schema(tests_schema: bool) -> None:
    """Print the policy file's JSON Schema (for editors and CI); --tests: the test file's."""
    from .policy import schema as policy_schema
    from .policytests import schema as test_file_schema

    click.echo(json.dumps(test_file_schema() if tests_schema else policy_schema(), indent=2))


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--server", "server", metavar="NAME", help="The server's name under \"mcpServers\".")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False), help="The policy it is to run with.")
@click.option("--audit", "audit_path", type=click.Path(dir_okay=False), help="Also keep an audit trail there.")
@click.option("--list", "as_list", is_flag=True, help="Show each server of CONFIG and whether it is guarded.")
def wrap(config: str | None, server: str | None, policy_path: str | None, audit_path: str | None,
         as_list: bool) -> None:
    """Make a server of an MCP client's config (Claude Desktop's claude_desktop_config.json, Cursor's
    mcp.json, Claude Code's .mcp.json) run through mcp-guard: wrap [CONFIG] --server NAME --policy FILE.
    Without CONFIG: Claude Desktop's, where the app keeps it. The old file is kept as CONFIG.bak;
    `mcp-guard unwrap` restores the entry."""
    from .wrap import default_config_path, guard_prefix, list_servers
    from .wrap import wrap as wrap_server

    config = config or default_config_path()
    if as_list:
        if server or policy_path or audit_path:
            raise Failure("--list takes no --server, --policy or --audit", 2)
        rows = list_servers(config)
        click.echo(config)
        for row in rows:
            click.echo(f"  {row}")
        if not rows:
            click.echo("  (no servers in \"mcpServers\")")
        return
    if not server or not policy_path:
        raise Failure("wrap needs --server NAME and --policy FILE (or --list)", 2)
    click.echo(wrap_server(config, server, policy_path, audit_path, guard_prefix()))


@cli.command()
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--server", "server", metavar="NAME", required=True, help="The server's name under \"mcpServers\".")
def unwrap(config: str | None, server: str) -> None:
    """Restore a server that `mcp-guard wrap` made run through mcp-guard, as it was. Without CONFIG:
    Claude Desktop's."""
    from .wrap import default_config_path
    from .wrap import unwrap as unwrap_server

    click.echo(unwrap_server(config or default_config_path(), server))


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    from ._conflicts import explain as explain_conflict
    from ._conflicts import foreign_distributions

    foreign = foreign_distributions()
    if foreign:
        click.echo(f"mcp-guard: warning: {explain_conflict(foreign)}", err=True)
    from .commandline import known_variables, misspelled_variables

    for name, meant in misspelled_variables(os.environ, known_variables(cli)):
        click.echo(f"mcp-guard: warning: {name} is set, but mcp-guard reads {meant} (a typo?)", err=True)
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
        if exc.answer_client:
            from .startup import answer_first_request

            answer_first_request(f"mcp-guard: {exc}")
        sys.exit(exc.status)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
