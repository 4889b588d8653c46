"""Tool inspection, apart from the run path: how risky each tool of a server looks (`mcp-guard tools`),
a starter policy from that (`mcp-guard init`).

A tool is classed from its MCP annotations first, read as the spec reads them (ToolAnnotations: an
absent readOnlyHint is false, destructiveHint true, idempotentHint false, openWorldHint true), then from
words in its name and description. Annotations are the server's own claims: nothing here makes them
true, which is why a word in the name that says "delete" outweighs a claim of read-only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

RISKS = ("critical", "high", "medium", "low")
CATEGORIES = ("destructive", "execute", "network", "write", "read")

# The spec's defaults for an absent hint (ToolAnnotations, 2025-03-26 onwards).
HINT_DEFAULTS = {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": False, "openWorldHint": True}

DESTRUCTIVE_WORDS = frozenset({
    "delete", "remove", "rm", "purge", "clear", "cancel", "drop", "destroy", "wipe", "kill", "erase",
    "truncate", "revoke", "uninstall", "reset", "terminate", "unlink", "overwrite", "prune", "shred"})
# Words that make a destructive tool worse: it acts on everything, or cannot be undone.
SWEEPING_WORDS = frozenset({"all", "everything", "purge", "wipe", "destroy", "drop", "truncate", "erase"})
EXECUTE_WORDS = frozenset({
    "exec", "execute", "run", "shell", "command", "eval", "script", "spawn", "bash", "terminal",
    "upgrade", "install", "mutate", "invoke"})
NETWORK_WORDS = frozenset({
    "fetch", "http", "https", "url", "download", "upload", "send", "email", "webhook", "publish", "push",
    "deploy", "release", "post", "curl", "browse"})
WRITE_WORDS = frozenset({
    "create", "write", "update", "set", "edit", "add", "save", "put", "insert", "modify", "move", "rename",
    "init", "register", "sync", "patch", "commit", "apply", "import", "rollback", "ack", "fork", "start",
    "spend", "store", "upsert", "append", "activate"})
READ_WORDS = frozenset({
    "get", "list", "read", "search", "find", "show", "status", "describe", "view", "query", "lookup",
    "inspect", "info", "health", "version", "versions", "result", "watch", "catalog", "stats", "explain"})


@dataclass(frozen=True)
class Assessment:
    name: str
    risk: str
    category: str
    why: tuple[str, ...]
    description: str
    annotations: dict[str, Any] = field(default_factory=dict)
    # What `mcp-guard check` calls destructive: not read-only and destructiveHint true, either absent
    # (the spec's defaults) or said. A starter policy gives each such tool a rule.
    marked_destructive: bool = False

    def as_record(self) -> dict[str, Any]:
        return {"name": self.name, "risk": self.risk, "category": self.category, "why": list(self.why),
                "description": self.description, "annotations": self.annotations}


def name_words(name: str) -> list[str]:
    """`llm_job_cancel`, `clearAll`, `session-delete` as lower-case words."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def _first(words: list[str], vocabulary: frozenset[str]) -> str | None:
    return next((word for word in words if word in vocabulary), None)


def classify(tool: dict[str, Any]) -> Assessment:
    name = str(tool.get("name", ""))
    description = tool.get("description")
    description = description if isinstance(description, str) else ""
    raw = tool.get("annotations")
    annotations = {key: value for key, value in raw.items()} if isinstance(raw, dict) else {}
    hints: dict[str, bool] = {}
    explicit: dict[str, bool] = {}
    for hint, default in HINT_DEFAULTS.items():
        value = annotations.get(hint)
        explicit[hint] = isinstance(value, bool)
        hints[hint] = value if isinstance(value, bool) else default

    in_name = name_words(name)
    in_text = [word.lower() for word in re.findall(r"[A-Za-z]+", description)]
    why: list[str] = []

    def claim(hint: str) -> str:
        return f"{hint}: {str(hints[hint]).lower()}" + ("" if explicit[hint] else " (absent: the spec's default)")

    read_only = hints["readOnlyHint"]
    destructive_word = _first(in_name, DESTRUCTIVE_WORDS)
    execute_word = _first(in_name, EXECUTE_WORDS)
    network_word = _first(in_name, NETWORK_WORDS)
    write_word = _first(in_name, WRITE_WORDS)
    read_word = _first(in_name, READ_WORDS)

    if destructive_word:
        category = "destructive"
        why.append(f"name says {destructive_word!r}")
        if read_only and explicit["readOnlyHint"]:
            why.append("though the server claims readOnlyHint: true")
        elif not read_only and hints["destructiveHint"]:
            why.append(claim("destructiveHint"))
    elif read_only:
        category = "read"
        why.append(claim("readOnlyHint"))
        if execute_word or network_word:
            why.append(f"name says {execute_word or network_word!r}")
    elif execute_word:
        category = "execute"
        why.append(f"name says {execute_word!r}")
        why.append(claim("destructiveHint"))
    elif hints["destructiveHint"] and explicit["destructiveHint"]:
        category = "destructive"
        why.append(claim("destructiveHint"))
    elif not annotations and read_word and not (write_word or network_word):
        # No claims at all: the name is all there is. The spec's defaults would call it destructive,
        # which is why such a tool is never low risk.
        category = "read"
        why.append(f"name says {read_word!r}; no annotations (the spec's defaults: destructive)")
    elif network_word:
        category = "network"
        why.append(f"name says {network_word!r}")
    elif hints["destructiveHint"]:
        category = "destructive"
        why.append(claim("destructiveHint"))
    else:
        category = "write"
        why.append(claim("readOnlyHint"))
        if write_word:
            why.append(f"name says {write_word!r}")
    if category not in ("destructive", "read"):
        text_word = _first(in_text, DESTRUCTIVE_WORDS)
        if text_word and not read_only:
            why.append(f"description says {text_word!r}")

    risk = _risk(category, hints, explicit, in_name, bool(annotations), why)
    marked = not read_only and hints["destructiveHint"]
    return Assessment(name, risk, category, tuple(why), description, annotations, marked)


def _risk(category: str, hints: dict[str, bool], explicit: dict[str, bool], in_name: list[str],
          annotated: bool, why: list[str]) -> str:
    if category == "destructive":
        sweeping = _first(in_name, SWEEPING_WORDS)
        if sweeping:
            why.append(f"name says {sweeping!r}")
            return "critical"
        if hints["openWorldHint"] and explicit["openWorldHint"]:
            why.append("openWorldHint: true")
        # Destructive only by the spec's default, with no word to back it: worth a look, not an alarm.
        if not explicit["destructiveHint"] and not any(w in DESTRUCTIVE_WORDS for w in in_name):
            return "medium"
        return "high"
    if category == "execute":
        return "high"
    if category == "network":
        return "medium"
    if category == "write":
        if hints["openWorldHint"] and explicit["openWorldHint"]:
            why.append("openWorldHint: true")
            return "medium"
        return "medium" if not hints["idempotentHint"] else "low"
    # read
    if not annotated:
        return "medium"
    if hints["openWorldHint"] and explicit["openWorldHint"]:
        why.append("openWorldHint: true")
        return "medium"
    return "low"


def assess(tools: list[dict[str, Any]]) -> list[Assessment]:
    return [classify(tool) for tool in tools]


# What a policy does with a tool, in one word for the table.
def policy_word(policy: Any, name: str) -> str:
    from .engine import select_rule
    from .reports import group_of

    group = group_of(policy, select_rule(policy, name))
    return {"hidden": "hidden", "denied": "denied", "needs approval": "approval", "limited": "limited",
            "constrained": "limited"}.get(group, "allowed")


LEGEND = ("Annotations (readOnlyHint, destructiveHint, idempotentHint, openWorldHint) are the server's own "
          "claims, read with the spec's defaults when absent (not read-only, destructive, not idempotent, "
          "open world); words in a tool's name come next. Risk: critical > high > medium > low.")


def table(assessments: list[Assessment], policy: Any | None, width: int = 100) -> list[str]:
    """An aligned table that fits `width` columns: long names, reasons and descriptions are cut."""
    headers = ["TOOL", "RISK", "CATEGORY"] + (["POLICY"] if policy is not None else []) + ["WHY"]
    rows: list[list[str]] = []
    for item in assessments:
        row = [item.name, item.risk, item.category]
        if policy is not None:
            row.append(policy_word(policy, item.name))
        row.append("; ".join(item.why))
        rows.append(row)
    fixed = len(headers) - 1
    widths = [max(len(headers[i]), *(len(row[i]) for row in rows)) if rows else len(headers[i])
              for i in range(fixed)]
    widths[0] = min(widths[0], 34)
    rest = max(10, width - sum(widths) - 2 * fixed)
    lines = [_line(headers, widths, rest)]
    lines += [_line(row, widths, rest) for row in rows]
    return lines


def _cut(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:max(0, width - 3)] + "..."


def _line(row: list[str], widths: list[int], rest: int) -> str:
    cells = [_cut(cell, widths[i]).ljust(widths[i]) for i, cell in enumerate(row[:-1])]
    return "  ".join([*cells, _cut(row[-1], rest)]).rstrip()


def descriptions(assessments: list[Assessment], width: int = 100) -> list[str]:
    name_width = min(34, max((len(item.name) for item in assessments), default=0))
    return [f"{_cut(item.name, name_width):<{name_width}}  {_cut(item.description, width - name_width - 2)}".rstrip()
            for item in assessments]


# --- init: a starter policy -------------------------------------------------------------------------

PROFILES = ("strict", "balanced", "permissive")


def rule_key(name: str) -> str:
    """A rule key matching exactly `name`: glob characters in a tool's name stand for themselves."""
    return re.sub(r"([*?\[])", r"[\1]", name)


def _reason(item: Assessment) -> str:
    return f"{item.category} ({item.risk} risk): " + "; ".join(item.why)


def starter_policy(assessments: list[Assessment], profile: str, server: dict[str, Any],
                   command: list[str]) -> dict[str, Any]:
    """A policy `mcp-guard check` accepts, every rule with a reason naming what classed the tool."""
    name = server.get("name") if isinstance(server.get("name"), str) else None
    version = server.get("version") if isinstance(server.get("version"), str) else None
    made_from = f"{name or 'an unnamed server'}" + (f" {version}" if version else "")
    policy: dict[str, Any] = {
        "version": "1",
        "description": (f"Starter policy ({profile}) made by `mcp-guard init` from {made_from} "
                        f"({len(assessments)} tools; command: {' '.join(command)}). Review before use."),
    }
    rules: dict[str, Any] = {}
    if profile == "strict":
        policy["default"] = "deny"
        policy["default_reason"] = "not on the allow-list of read-only tools (mcp-guard init, strict)"
        for item in assessments:
            if item.category == "destructive":
                rules[rule_key(item.name)] = {"action": "hide", "note": "hidden: " + _reason(item)}
            elif item.category == "read" and item.risk == "low":
                rules[rule_key(item.name)] = {"action": "allow", "reason": "allowed: " + _reason(item)}
    elif profile == "balanced":
        policy["default"] = "allow"
        for item in assessments:
            if item.category in ("destructive", "execute"):
                rules[rule_key(item.name)] = {"action": "require_approval",
                                              "reason": "needs approval: " + _reason(item)}
            elif item.category in ("write", "network") or item.marked_destructive:
                rules[rule_key(item.name)] = {"action": "allow", "rate_limit": {"max": 30, "window": 60},
                                    "reason": "rate-limited: " + _reason(item)}
    elif profile == "permissive":
        policy["default"] = "allow"
        for item in assessments:
            if item.category == "destructive" or item.marked_destructive:
                rules[rule_key(item.name)] = {"action": "allow", "rate_limit": {"max": 10, "window": 60},
                                    "reason": "rate-limited: " + _reason(item)}
    else:
        raise ValueError(f"unknown profile {profile!r}")
    policy["rules"] = rules
    return policy


# --- the commands' bodies (cli.py only parses) ------------------------------------------------------

def tools_command(policy_path: str | None, as_json: bool, command: tuple[str, ...], timeout: float) -> int:
    import json

    import click

    from .commandline import load_policy
    from .reports import list_server_described

    policy = load_policy(policy_path, False) if policy_path is not None else None
    tools, info, _ = list_server_described(command, timeout)
    assessments = assess(tools)
    if as_json:
        records = []
        for item in assessments:
            record = item.as_record()
            if policy is not None:
                record["policy"] = policy_word(policy, item.name)
            records.append(record)
        click.echo(json.dumps({"server": info, "tools": records}, indent=2))
        return 0
    server = " ".join(str(info[key]) for key in ("name", "version") if isinstance(info.get(key), str) and info[key])
    click.echo(f"{server or 'The server'} offers {len(tools)} tool(s):")
    for line in table(assessments, policy):
        click.echo(line)
    click.echo("")
    click.echo("Descriptions (cut):")
    for line in descriptions(assessments):
        click.echo(line)
    click.echo("")
    for line in _wrap(LEGEND, 100):
        click.echo(line)
    return 0


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width)


def init_command(profile: str, output: str, force: bool, command: tuple[str, ...], timeout: float) -> int:
    import json
    import os

    import click

    from .commandline import Failure
    from .reports import list_server_described

    if output != "-" and os.path.exists(output) and not force:
        raise Failure(f"{output} exists; give --force to overwrite it", 2)
    tools, info, _ = list_server_described(command, timeout)
    policy = starter_policy(assess(tools), profile, info, list(command))
    text = json.dumps(policy, indent=2, ensure_ascii=False) + "\n"
    if output == "-":
        click.echo(text, nl=False)
        return 0
    directory = os.path.dirname(os.path.abspath(output))
    temporary = os.path.join(directory, f".{os.path.basename(output)}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        if force:
            os.replace(temporary, output)
        else:
            # Refuse, atomically, a file that appeared meanwhile.
            os.link(temporary, output)
    except FileExistsError:
        raise Failure(f"{output} exists; give --force to overwrite it", 2) from None
    except OSError as exc:
        raise Failure(f"cannot write {output}: {exc.strerror}", 2) from None
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    rules = policy["rules"]
    click.echo(f"wrote {output}: {profile} profile, {len(rules)} rule(s) for {len(tools)} tool(s), "
               f"default {policy['default']}; review it, then: mcp-guard check {output} -- {' '.join(command)}",
               err=True)
    return 0


def write_atomically(path: str, text: str) -> None:
    import os
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def pin_command(output: str, command: tuple[str, ...], timeout: float) -> int:
    import click

    from .commandline import Failure
    from .pinning import lock_text
    from .reports import list_server_described

    tools, info, _ = list_server_described(command, timeout)
    try:
        write_atomically(output, lock_text(tools, info))
    except OSError as exc:
        raise Failure(f"cannot write {output}: {exc.strerror or exc}", 2) from None
    server = " ".join(str(info[key]) for key in ("name", "version") if isinstance(info.get(key), str) and info[key])
    click.echo(f"pinned {len(tools)} tool(s) of {server or 'the server'} in {output}; name it in the policy: "
               f'"pin": "{output}"', err=True)
    return 0
