"""Tool pinning against changed tool definitions ("rug pulls"): `mcp-guard pin` records a hash of each
tool's definition; at run time a tool that is new or changed since is hidden (or held for approval), and
`mcp-guard check` reports the drift.

A definition is what an agent reads and acts on: the tool's name, description, inputSchema and
annotations, hashed as canonical JSON (sorted keys, no spaces, UTF-8). The lock file also keeps each
definition, so a drift report can say what changed, not only that something did.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

PINNED_KEYS = ("name", "description", "inputSchema", "annotations")
PinAction = Literal["deny", "require_approval", "hide"]
LOCK_VERSION = 1


class PinError(Exception):
    """A lock file that cannot be used: missing, unreadable, not one mcp-guard wrote."""


def definition(tool: dict[str, Any]) -> dict[str, Any]:
    return {key: tool[key] for key in PINNED_KEYS if key in tool}


def canonical(tool: dict[str, Any]) -> bytes:
    return json.dumps(definition(tool), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def tool_hash(tool: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(tool)).hexdigest()


@dataclass(frozen=True)
class Lock:
    path: str
    hashes: dict[str, str]
    definitions: dict[str, dict[str, Any]] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)


def lock_text(tools: list[dict[str, Any]], server: dict[str, Any]) -> str:
    entries = {tool["name"]: {"hash": tool_hash(tool), "definition": definition(tool)}
               for tool in sorted(tools, key=lambda tool: str(tool["name"]))}
    document = {"mcp_guard_lock": LOCK_VERSION, "server": server, "tools": entries}
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def load_lock(path: str) -> Lock:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise PinError(f"the pin file {path} does not exist (write it with mcp-guard pin -o {path} -- COMMAND)") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PinError(f"cannot read the pin file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PinError(f"the pin file {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(document, dict) or document.get("mcp_guard_lock") != LOCK_VERSION:
        raise PinError(f"the pin file {path} is not a lock written by mcp-guard pin")
    tools = document.get("tools")
    if not isinstance(tools, dict):
        raise PinError(f"the pin file {path} has no tools object")
    hashes: dict[str, str] = {}
    definitions: dict[str, dict[str, Any]] = {}
    for name, entry in tools.items():
        digest = entry.get("hash") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise PinError(f"the pin file {path}: tool {name!r} has no sha256 hash")
        hashes[name] = digest
        if isinstance(entry.get("definition"), dict):
            definitions[name] = entry["definition"]
    server = document.get("server")
    return Lock(path, hashes, definitions, server if isinstance(server, dict) else {})


# --- drift, for check --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Drift:
    added: list[str]
    removed: list[str]
    changed: list[tuple[str, list[str]]]  # name, what changed in a few lines

    @property
    def any(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def drift(lock: Lock, tools: list[dict[str, Any]]) -> Drift:
    now = {tool["name"]: tool for tool in tools}
    added = sorted(name for name in now if name not in lock.hashes)
    removed = sorted(name for name in lock.hashes if name not in now)
    changed: list[tuple[str, list[str]]] = []
    for name in sorted(now):
        if name in lock.hashes and tool_hash(now[name]) != lock.hashes[name]:
            changed.append((name, _differences(lock.definitions.get(name), definition(now[name]))))
    return Drift(added, removed, changed)


def _differences(before: dict[str, Any] | None, after: dict[str, Any], width: int = 60) -> list[str]:
    if before is None:
        return ["(the lock keeps no definition to compare with)"]
    lines: list[str] = []
    for key in PINNED_KEYS:
        if before.get(key) == after.get(key):
            continue
        if isinstance(before.get(key), str) or isinstance(after.get(key), str):
            lines.append(f"{key}: {_short(before.get(key), width)} -> {_short(after.get(key), width)}")
            continue
        old = _flatten(before.get(key), key)
        new = _flatten(after.get(key), key)
        for path in sorted(set(old) | set(new)):
            if old.get(path) != new.get(path):
                lines.append(f"{path}: {_short(old.get(path, '(absent)'), 40)} -> "
                             f"{_short(new.get(path, '(absent)'), 40)}")
    return lines[:8] + ([f"... and {len(lines) - 8} more"] if len(lines) > 8 else [])


def _flatten(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        found: dict[str, Any] = {}
        for key, inner in value.items():
            found.update(_flatten(inner, f"{path}.{key}"))
        return found
    return {path: value}


def _short(value: Any, width: int) -> str:
    if value is None or value == "(absent)":
        text = "(absent)"
    elif isinstance(value, str):
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 3] + "..."


def drift_lines(found: Drift) -> list[str]:
    lines = [f"added since pinned: {name}" for name in found.added]
    lines += [f"removed since pinned: {name}" for name in found.removed]
    for name, differences in found.changed:
        lines.append(f"changed since pinned: {name}")
        lines += [f"    {line}" for line in differences]
    return lines


# --- at run time ------------------------------------------------------------------------------------

class PinCheck:
    """What the guard knows of the pin: the pinned hashes, and the verdict on each tool of the listings
    it has filtered. A tool is trusted only once a listing has shown its definition matching the lock: a
    call to a tool no listing has shown yet is refused, since nothing says what the agent was told it
    does."""

    def __init__(self, lock: Lock, mode: str) -> None:
        self.lock = lock
        self.mode = mode  # "hide" or "require_approval"
        self.verified: set[str] = set()
        self.mismatched: dict[str, str] = {}  # name -> "added" or "changed"
        self.warned: set[tuple[str, str]] = set()

    def observe(self, tool: dict[str, Any]) -> str | None:
        """Note a listed tool; None when it matches the lock, else "added" or "changed"."""
        name = tool["name"]
        pinned = self.lock.hashes.get(name)
        if pinned is not None and tool_hash(tool) == pinned:
            self.verified.add(name)
            self.mismatched.pop(name, None)
            return None
        status = "added" if pinned is None else "changed"
        self.verified.discard(name)
        self.mismatched[name] = status
        return status

    def first_warning(self, name: str, status: str) -> bool:
        """True the first time (name, status) is seen in this session: one warning per tool."""
        if (name, status) in self.warned:
            return False
        self.warned.add((name, status))
        return True

    def refusal(self, name: str) -> tuple[PinAction, str] | None:
        """(action, reason) for a call to `name`, or None when the pin lets it through."""
        if name in self.verified:
            return None
        status = self.mismatched.get(name) or (None if name in self.lock.hashes else "added")
        if status is None:
            return ("deny", f"{name} has not been seen in a tool list matching the pin "
                            f"{os.path.basename(self.lock.path)} in this session; list the tools first")
        what = "is new" if status == "added" else "changed its definition"
        if self.mode == "require_approval":
            return ("require_approval", f"{name} {what} since it was pinned; it needs approval")
        return ("hide", f"{name} {what} since it was pinned")
