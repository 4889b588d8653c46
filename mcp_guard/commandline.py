"""How the command line is read, apart from click's own parsing: where a server command starts, which
policy is in force, and the MCP_GUARD_* variables that look like typos.

The CLI (cli.py) only declares the commands; what their words mean is decided here.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

import click

POLICY_ENV = "MCP_GUARD_POLICY"
AUDIT_ENV = "MCP_GUARD_AUDIT"
ENV_PREFIX = "MCP_GUARD_"


class Failure(Exception):
    """An error for people: printed as one line, with an exit status. `answer_client`: mcp-guard was
    about to serve an MCP client, which is then told the same line (startup.answer_first_request)."""

    def __init__(self, message: str, status: int = 1, answer_client: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.answer_client = answer_client


class ServerCommand(click.Command):
    """A click command whose last argument is a server command (COMMAND [ARGS...]).

    `--` before it is optional: after the command's own leading arguments (`leading`, e.g. check's FILE),
    the first word that is not an option starts the server command, as in `timeout`, `env` and `uv run`.
    Clients such as the MCP Inspector and mcp-proxy strip `--` from the arguments they are given, so
    `run --policy p.json server --flag` must mean what it says. A misspelled option before the server
    command is still an option to click ("No such option"), never the start of the command."""

    def __init__(self, *args: Any, leading: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.leading = leading

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, with_separator(args, self.params, self.leading))


def with_separator(args: list[str], params: Iterable[click.Parameter], leading: int) -> list[str]:
    """`args` with `--` inserted before the server command, when it is not there already."""
    takes_value: dict[str, int] = {}
    for param in params:
        if isinstance(param, click.Option):
            count = 0 if (param.is_flag or param.count) else max(param.nargs, 1)
            for name in [*param.opts, *param.secondary_opts]:
                takes_value[name] = count
    positionals = 0
    index = 0
    while index < len(args):
        word = args[index]
        if word == "--":
            return args
        if word.startswith("-") and word != "-":
            name, has_value, _ = word.partition("=")
            index += 1 if has_value else 1 + takes_value.get(name, 0)
            continue
        if positionals >= leading:
            return [*args[:index], "--", *args[index:]]
        positionals += 1
        index += 1
    return args


def known_variables(command: click.Command) -> set[str]:
    """Every environment variable an option of `command` (or its subcommands) reads."""
    found: set[str] = set()
    commands = [command]
    if isinstance(command, click.Group):
        commands += list(command.commands.values())
    for each in commands:
        for param in each.params:
            envvar = getattr(param, "envvar", None)
            if isinstance(envvar, str):
                found.add(envvar)
            elif isinstance(envvar, (list, tuple)):
                found.update(envvar)
    return found


def misspelled_variables(environ: Mapping[str, str], known: set[str]) -> list[tuple[str, str]]:
    """(name, the known name it is probably meant to be) for each set variable that looks like a typo of
    one mcp-guard reads: `MCP_GUARD_POLICIES` for `MCP_GUARD_POLICY`. Variables with no close match (a
    test suite's MCP_GUARD_SKIP_COMPAT, say) are not mcp-guard's business and are left alone."""
    found: list[tuple[str, str]] = []
    suffixes = {name[len(ENV_PREFIX):]: name for name in known if name.startswith(ENV_PREFIX)}
    for name in sorted(environ):
        if name in known:
            continue
        if name.startswith(ENV_PREFIX):
            match = difflib.get_close_matches(name[len(ENV_PREFIX):], list(suffixes), n=1, cutoff=0.6)
            if match:
                found.append((name, suffixes[match[0]]))
        elif "GUARD" in name.upper() or name.upper().startswith("MCP"):
            match = difflib.get_close_matches(name.upper(), sorted(known), n=1, cutoff=0.85)
            if match:
                found.append((name, match[0]))
    return found


def policy_summary(policy: Any, discovered: bool = False, monitor: bool = False) -> str:
    """The start-up line that says which policy is in force (and that it was found, not named)."""
    hidden = sum(1 for rule in policy.rules if rule.action == "hide")
    rules = sum(1 for rule in policy.rules if rule.origin == "rules")
    return (f"policy {os.path.abspath(policy.source)}: {hidden} hidden, {rules} rule(s), "
            f"default {policy.default}" + (f", tools pinned in {policy.pin}" if getattr(policy, "pin", None) else "")
            + monitor_words(policy, monitor) + (" (found there: no --policy named one)" if discovered else ""))


def monitor_words(policy: Any, monitor: bool = False) -> str:
    """", MONITOR MODE: ..." when nothing is enforced, ", N rule(s) monitored: ..." when some rules are not."""
    if monitor or getattr(policy, "mode", "enforce") == "monitor":
        why = "--monitor" if monitor else "the policy's \"mode\""
        return f", MONITOR MODE ({why}): every decision is recorded, nothing is refused or hidden"
    monitored = [rule.key for rule in policy.rules if getattr(rule, "monitor", False)]
    if monitored:
        return f", {len(monitored)} rule(s) in monitor mode (recorded, not enforced): {', '.join(monitored)}"
    return ""


# Where a policy is looked for when none is named (--policy, $MCP_GUARD_POLICY): the project's own file
# first, then the user's. The first found is used; the start-up line names it.
LOCAL_NAMES = ("mcp-guard.json", "mcp-guard.yaml", "mcp-guard.yml")
USER_NAMES = ("policy.json", "policy.yaml", "policy.yml")


def user_config_dir(environ: Mapping[str, str], platform: str) -> str:
    """mcp-guard's directory in the user's configuration: $XDG_CONFIG_HOME/mcp-guard when set (on every
    platform), else ~/.config/mcp-guard, ~/Library/Application Support/mcp-guard on macOS, and
    %APPDATA%\\mcp-guard on Windows."""
    home = environ.get("HOME") or os.path.expanduser("~")
    base = environ.get("XDG_CONFIG_HOME") or ""
    if not os.path.isabs(base):  # the XDG spec: a relative value is to be ignored
        if platform.startswith("win"):
            base = environ.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
        elif platform == "darwin":
            base = os.path.join(home, "Library", "Application Support")
        else:
            base = os.path.join(home, ".config")
    return os.path.join(base, "mcp-guard")


def policy_places(environ: Mapping[str, str] | None = None, platform: str | None = None) -> list[str]:
    """Every place a policy is looked for, in order."""
    import sys

    config = user_config_dir(os.environ if environ is None else environ, platform or sys.platform)
    return [os.path.join(".", name) for name in LOCAL_NAMES] + [os.path.join(config, n) for n in USER_NAMES]


def discover_policy() -> str | None:
    """The first policy file found in `policy_places()`, or None."""
    for place in policy_places():
        if os.path.isfile(place):
            return place
    return None


def places_in_words() -> str:
    """The places looked in, short: ./mcp-guard.{json,yaml,yml} or /home/u/.config/mcp-guard/policy.{...}"""
    config = os.path.dirname(policy_places()[-1])
    return (f"./mcp-guard.{{json,yaml,yml}} or {os.path.join(config, 'policy')}.{{json,yaml,yml}}")


def find_policy(path: str | None, what: str) -> tuple[str, bool]:
    """`path` when given; else the discovered policy (and True: it was found, not named). Found nowhere:
    a Failure naming the places looked in. `what` says how to name one instead ("--policy FILE")."""
    if path is not None:
        return path, False
    found = discover_policy()
    if found is None:
        raise Failure(f"no policy: none named and none found in {places_in_words()}; give {what} or set "
                      f"{POLICY_ENV}", 2)
    return found, True


def load_run_policy(path: str | None, no_policy: bool, from_environment: bool, command: tuple[str, ...]) -> Any:
    """The policy `run` enforces: the one named, else the first found in `policy_places()`. Without one
    the guard would relay everything: that must be asked for (`--no-policy`), never the result of a typo
    in a variable's name, an option placed after the server command or a missing file."""
    from .policy import allow_all

    if path is not None and no_policy:
        where = f"${POLICY_ENV}" if from_environment else "--policy"
        raise Failure(f"--no-policy and {where} contradict each other; give one", 2, answer_client=True)
    if no_policy:
        return allow_all("(no policy: --no-policy)")
    if path is None:
        path = discover_policy()
    if path is None:
        hint = ""
        if any(word == "--policy" or word.startswith("--policy=") for word in command):
            hint = " (--policy after the server command is the server's argument: put it before)"
        raise Failure(f"no policy: none named and none found in {places_in_words()}; give --policy FILE or "
                      f"set {POLICY_ENV}, or say --no-policy to relay without one{hint}", 2, answer_client=True)
    return load_policy(path, from_environment, answer_client=True)


def load_policy(path: str, from_environment: bool, answer_client: bool = False) -> Any:
    """The policy at `path`, or a Failure (exit status 2) with its one-line problem. A path from
    MCP_GUARD_POLICY that names nothing says so, and where a relative path was looked for."""
    from .policy import PolicyError, load

    try:
        return load(path)
    except PolicyError as exc:
        message = f"policy error: {exc}"
        if from_environment and exc.problem == "no such file":
            message += f" (the path came from ${POLICY_ENV}, resolved in {os.getcwd()})"
        raise Failure(message, 2, answer_client=answer_client) from None


def parse_arguments(args_json: str | None) -> dict[str, Any] | None:
    """The JSON object given with --args, or a Failure (exit status 2) saying what is wrong with it."""
    if args_json is None:
        return None
    try:
        arguments = json.loads(args_json)
    except ValueError as exc:
        raise Failure(f"--args is not valid JSON: {exc}", 2) from None
    if not isinstance(arguments, dict):
        raise Failure("--args must be a JSON object", 2)
    return arguments
