"""Client-config editing: `mcp-guard wrap` / `unwrap` / `wrap --list`.

An MCP client's config (Claude Desktop's claude_desktop_config.json, Cursor's mcp.json, Claude Code's
.mcp.json) names each server under "mcpServers" as {"command", "args", "env", ...}. Wrapping one rewrites
its command line to `MCP_GUARD run --policy P [--audit A] -- COMMAND ARGS...` and keeps everything else
(env, cwd, type, keys we do not know) where it was.

Where the original is kept: inside the entry, under a key of our own,
`"mcp-guard": {"wrapped": {"command": ..., "args": [...]}}` — only the two values wrap replaced (env is
not copied: secrets are not duplicated, and an env edited after wrapping survives unwrap). Clients ignore
a key they do not know in an entry (Claude Code drops unknown fields silently, Cursor reads only the keys
it knows; Claude Desktop was not at hand to try: the errors it is known to report are missing fields).
Should a client rewrite the file and drop the key, the wrapped command line still holds the original
after its `--`, and unwrap restores from there; should the two disagree (the server's arguments edited
inside the wrapped entry), what runs wins.

Formatting: the whole file is re-serialised in the style detected (indent, separators, ASCII escapes,
final newline, CRLF, BOM), key order kept. A file pretty-printed the way JSON.stringify(x, null, N) or
json.dumps(x, indent=N) prints comes back byte-identical after wrap + unwrap; a hand-formatted one (say,
args on one line inside an indented file) comes back with the same JSON, its whitespace normalised.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .commandline import Failure

MARKER = "mcp-guard"
SERVERS = "mcpServers"
GUARD_NAMES = ("mcp-guard", "mcp-guard.exe")


def default_config_path(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """Claude Desktop's config where the app keeps it: macOS ~/Library/Application Support/Claude,
    Windows %APPDATA%\\Claude, Linux $XDG_CONFIG_HOME/Claude (~/.config/Claude: Electron's appData)."""
    environ = os.environ if environ is None else environ
    platform = platform or sys.platform
    home = environ.get("HOME") or os.path.expanduser("~")
    if platform.startswith("win"):
        base = environ.get("APPDATA") or os.path.join(home, "AppData", "Roaming")
    elif platform == "darwin":
        base = os.path.join(home, "Library", "Application Support")
    else:
        base = environ.get("XDG_CONFIG_HOME") or ""
        if not os.path.isabs(base):
            base = os.path.join(home, ".config")
    return os.path.join(base, "Claude", "claude_desktop_config.json")


def guard_prefix() -> list[str]:
    """The command line that starts this mcp-guard, absolute: the console script being run (symlinks
    kept: a pipx link survives upgrades; the venv's script already names its own interpreter), else the
    one beside this interpreter, else on PATH, else `python -m mcp_guard` with this interpreter."""
    candidates = [sys.argv[0] if sys.argv and sys.argv[0] else "",
                  os.path.join(os.path.dirname(sys.executable), "mcp-guard"), shutil.which("mcp-guard") or ""]
    for candidate in candidates:
        for path in (candidate, candidate + ".exe"):
            if (path and os.path.basename(path) in GUARD_NAMES and os.path.isfile(path)
                    and os.access(path, os.X_OK)):
                return [os.path.abspath(path)]
    # A venv's python is a symlink to the base interpreter: resolving it would lose the venv.
    return [os.path.abspath(sys.executable), "-m", "mcp_guard"]


# --- reading and writing the file, in its own style ---------------------------------------------------

@dataclass(frozen=True)
class Style:
    indent: str | None
    separators: tuple[str, str]
    ensure_ascii: bool
    final_newline: bool
    crlf: bool
    bom: bool

    def render(self, data: Any) -> str:
        text = json.dumps(data, indent=self.indent, separators=self.separators, ensure_ascii=self.ensure_ascii)
        if self.final_newline:
            text += "\n"
        if self.crlf:
            text = text.replace("\n", "\r\n")
        return ("\ufeff" if self.bom else "") + text


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise Failure(f"duplicate key {key!r}: the config is ambiguous (clients disagree on which one "
                          "counts); remove one and try again", 2)
        seen[key] = value
    return seen


def _not_json(word: str) -> Any:
    # Python reads NaN and Infinity; JSON (and the clients) do not.
    raise Failure(f"{word} is not JSON", 2)


def detect_style(text: str, data: Any) -> Style:
    bom = text.startswith("\ufeff")
    body = text[1:] if bom else text
    crlf = "\r\n" in body
    body = body.replace("\r\n", "\n")
    final_newline = body.endswith("\n")
    ensure_ascii = all(ord(char) < 128 for char in body)
    match = re.search(r"\n([ \t]+)\S", body)
    indent = match.group(1) if match else None
    if indent is not None:
        separators = (",", ": ")
    else:
        compact = json.dumps(data, separators=(",", ":"), ensure_ascii=ensure_ascii)
        separators = (",", ":") if body.strip() == compact else (", ", ": ")
    return Style(indent, separators, ensure_ascii, final_newline, crlf, bom)


@dataclass
class Config:
    path: str          # as named (shown in messages)
    real_path: str     # a symlinked config is edited where it lives, the link kept
    text: str
    data: dict[str, Any]
    style: Style

    @property
    def servers(self) -> dict[str, Any]:
        servers = self.data.get(SERVERS)
        return servers if isinstance(servers, dict) else {}


def read_config(path: str) -> Config:
    real_path = os.path.realpath(path)
    try:
        with open(real_path, encoding="utf-8", newline="") as handle:
            text = handle.read()
    except FileNotFoundError:
        hint = (" (Claude Desktop's config, looked for where the app keeps it: name CONFIG for another client "
                "or place)") if path == default_config_path() else ""
        raise Failure(f"{path}: no such file{hint}", 2) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"{path}: cannot read it: {getattr(exc, 'strerror', None) or exc}", 2) from None
    try:
        data = json.loads(text.lstrip("\ufeff"), object_pairs_hook=_no_duplicates, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise Failure(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}; "
                      "the file is left as it is", 2) from None
    except Failure as exc:
        raise Failure(f"{path}: {exc}", 2) from None
    if not isinstance(data, dict):
        raise Failure(f"{path}: not an MCP client config (the top level is not an object)", 2)
    if SERVERS in data and not isinstance(data[SERVERS], dict):
        raise Failure(f"{path}: \"{SERVERS}\" is not an object", 2)
    return Config(path, real_path, text, data, detect_style(text, data))


def write_config(config: Config, data: dict[str, Any]) -> str:
    """Write `data` in the file's style: the old file to CONFIG.bak first, then a temporary file beside
    the config renamed over it (a crash leaves the old file or the new one, never half of one), with
    the old file's permissions (a config can hold API keys in env). Returns the backup's path."""
    backup = os.path.abspath(config.path) + ".bak"
    try:
        mode = os.stat(config.real_path).st_mode & 0o7777
        shutil.copy2(config.real_path, backup)
        handle, temporary = tempfile.mkstemp(prefix=".mcp-guard-", suffix=".tmp",
                                             dir=os.path.dirname(config.real_path))
    except OSError as exc:
        raise Failure(f"{config.path}: cannot write it or its backup: {exc.strerror or exc}; "
                      "the file is left as it is", 2) from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
            out.write(config.style.render(data))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temporary, mode)
        with open(config.real_path, encoding="utf-8", newline="") as now:
            if now.read() != config.text:  # the client (or a person) saved it meanwhile: theirs wins
                raise Failure(f"{config.path}: changed while mcp-guard was editing it; nothing written, "
                              "try again", 2)
        os.replace(temporary, config.real_path)
    except BaseException as exc:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(exc, OSError):
            raise Failure(f"{config.path}: cannot write it: {exc.strerror or exc}; the file is left as it is",
                          2) from None
        raise
    return backup


# --- one entry ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Guarded:
    """What a guarded entry's command line says."""
    original: dict[str, Any]     # {"command": ..., "args": [...]} ("args" absent if it was)
    policy: str | None
    audit: str | None
    recorded: bool               # the original came from our key (else: from after the `--`)


def _run_options(entry: Mapping[str, Any]) -> list[str] | None:
    """The words after `run` when the entry runs mcp-guard, else None."""
    command, args = entry.get("command"), entry.get("args")
    if not isinstance(command, str) or not isinstance(args, list):
        return None
    # A Windows path is recognised on any system: C:\Users\me\.mcp-guard\Scripts\mcp-guard.exe
    if re.split(r"[\\/]", command)[-1].lower() in GUARD_NAMES and args[:1] == ["run"]:
        return args[1:]
    if args[:3] == ["-m", "mcp_guard", "run"]:
        return args[3:]
    return None


def _option(words: list[str], name: str) -> str | None:
    for index, word in enumerate(words):
        if word == name and index + 1 < len(words):
            return str(words[index + 1])
        if isinstance(word, str) and word.startswith(name + "="):
            return word[len(name) + 1:]
    return None


def guarded(entry: Mapping[str, Any]) -> Guarded | None:
    """The entry as mcp-guard wrapped it, or None when it does not run through mcp-guard."""
    words = _run_options(entry)
    if words is None:
        return None
    before, after = (words[:words.index("--")], words[words.index("--") + 1:]) if "--" in words else (words, [])
    policy = _option(before, "--policy")
    if policy is None and isinstance(entry.get("env"), dict):
        policy = entry["env"].get("MCP_GUARD_POLICY")
    audit = _option(before, "--audit")
    record = entry.get(MARKER)
    wrapped = record.get("wrapped") if isinstance(record, dict) else None
    if (isinstance(wrapped, dict) and isinstance(wrapped.get("command"), str)
            and isinstance(wrapped.get("args", []), list)):
        recorded_line = [wrapped["command"], *(wrapped.get("args") or [])]
        if not after or after == recorded_line:
            return Guarded(dict(wrapped), policy, audit, True)
    if not after:
        return Guarded({}, policy, audit, False)
    # Our key is gone (a client rewrote the file) or disagrees with what runs: what runs wins.
    return Guarded({"command": after[0], "args": after[1:]}, policy, audit, False)


def _kind(entry: Any) -> str | None:
    """Why an entry cannot be wrapped (None: it can)."""
    if not isinstance(entry, dict):
        return "its entry is not an object"
    transport = entry.get("type")
    if "url" in entry or (isinstance(transport, str) and transport not in ("stdio", "")):
        return (f"it is a remote server ({'type ' + transport if isinstance(transport, str) else 'url'}), "
                "not a stdio one: mcp-guard guards servers it starts")
    if not isinstance(entry.get("command"), str) or not entry["command"]:
        return "it has no \"command\""
    if "args" in entry and not isinstance(entry["args"], list):
        return "its \"args\" is not a list"
    return None


def _entry(config: Config, server: str) -> dict[str, Any]:
    servers = config.servers
    if server not in servers:
        names = ", ".join(sorted(servers)) or "none"
        raise Failure(f"{config.path}: no server {server!r} in \"{SERVERS}\" (there: {names}); "
                      "the file is left as it is", 2)
    entry = servers[server]
    if not isinstance(entry, dict):
        raise Failure(f"{config.path}: server {server!r}: its entry is not an object", 2)
    return entry


def _with_servers(config: Config, server: str, entry: dict[str, Any]) -> dict[str, Any]:
    data = dict(config.data)
    data[SERVERS] = {name: (entry if name == server else value) for name, value in config.servers.items()}
    return data


def wrap(config_path: str, server: str, policy: str, audit: str | None, prefix: list[str]) -> str:
    """Rewrite `server`'s entry to run through mcp-guard with `policy` (and `audit`). Returns what was done."""
    config = read_config(config_path)
    entry = _entry(config, server)
    current = guarded(entry)
    if current is not None:
        if not current.original:
            raise Failure(f"{config.path}: server {server!r} already runs through mcp-guard, but its command "
                          "line has no `--` before the server command (written by hand?): edit it by hand", 2)
        original = current.original
    else:
        problem = _kind(entry)
        if problem is not None:
            raise Failure(f"{config.path}: server {server!r} cannot be wrapped: {problem}", 2)
        original = {"command": entry["command"], **({"args": entry["args"]} if "args" in entry else {})}
    from .commandline import load_policy

    load_policy(policy, False)  # a policy that cannot be used would stop the server in the client
    policy, audit = os.path.abspath(policy), (os.path.abspath(audit) if audit else None)
    args = [*prefix[1:], "run", "--policy", policy, *(["--audit", audit] if audit else []),
            "--", original["command"], *original.get("args", [])]
    new: dict[str, Any] = {}
    for key, value in entry.items():
        if key == MARKER:
            continue
        if key == "command":
            new["command"] = prefix[0]
            if "args" not in entry:  # none before: right after the command
                new["args"] = args
        elif key == "args":
            new["args"] = args  # in the original's place
        else:
            new[key] = value
    new[MARKER] = {"wrapped": original}
    if new == entry:
        return f"{config.path}: {server} is already guarded by {policy}; nothing changed"
    backup = write_config(config, _with_servers(config, server, new))
    verb = "re-wrapped" if current is not None else "wrapped"
    return (f"{config.path}: {verb} {server}: it now runs through mcp-guard with {policy}"
            + (f", audit {audit}" if audit else "") + f" (backup: {backup}); restart the client to use it")


def unwrap(config_path: str, server: str) -> str:
    """Restore `server`'s entry as it was before wrap. Returns what was done."""
    config = read_config(config_path)
    entry = _entry(config, server)
    current = guarded(entry)
    if current is None:
        return f"{config.path}: {server} is not guarded; nothing changed"
    if not current.original:
        raise Failure(f"{config.path}: server {server!r} runs through mcp-guard, but its command line has no "
                      "`--` before the server command (written by hand?): edit it by hand", 2)
    original = current.original
    restored: dict[str, Any] = {}
    for key, value in entry.items():
        if key == MARKER:
            continue
        if key == "command":
            restored["command"] = original["command"]
        elif key == "args":
            if "args" in original:
                restored["args"] = original["args"]
        else:
            restored[key] = value
    backup = write_config(config, _with_servers(config, server, restored))
    how = ("" if current.recorded else " (from its command line: mcp-guard's record of the original was gone, "
           "or no longer matched what runs)")
    return f"{config.path}: unwrapped {server}{how} (backup: {backup}); restart the client to use it"


@dataclass(frozen=True)
class ServerState:
    name: str
    state: str               # guarded / not guarded / remote / invalid
    policy: str | None
    audit: str | None
    command: str | None      # the server's own command line, shown short

    def __str__(self) -> str:
        """`name: guarded by /abs/policy.json, audit /abs/a.jsonl  (npx -y server)`"""
        state = self.state + (f" by {self.policy}" if self.policy else "")
        state += f", audit {self.audit}" if self.audit else ""
        return f"{self.name}: {state}" + (f"  ({self.command})" if self.command else "")


def list_servers(config_path: str) -> list[ServerState]:
    config = read_config(config_path)
    rows = []
    for name, entry in config.servers.items():
        if not isinstance(entry, dict):
            rows.append(ServerState(name, "invalid", None, None, None))
            continue
        current = guarded(entry)
        if current is not None:
            line = [current.original["command"], *current.original.get("args", [])] if current.original else []
            rows.append(ServerState(name, "guarded", current.policy, current.audit, _short(line)))
            continue
        problem = _kind(entry)
        if problem is not None and ("url" in entry or "type" in entry):
            rows.append(ServerState(name, "remote", None, None, str(entry.get("url") or "")))
        elif problem is not None:
            rows.append(ServerState(name, "invalid", None, None, None))
        else:
            rows.append(ServerState(name, "not guarded", None, None,
                                    _short([entry["command"], *entry.get("args", [])])))
    return rows


def _short(words: list[Any], width: int = 100) -> str:
    text = " ".join(str(word) for word in words)
    return text if len(text) <= width else text[:width - 3] + "..."
