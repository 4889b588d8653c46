"""`mcp-guard wrap` / `unwrap` / `wrap --list` on real client config files, through the installed binary:
round trips on each client's shape, idempotence, errors that leave the file alone, backups, and a client
launching the rewritten entry exactly as written in front of the example server."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import guard_command

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = ROOT / "examples" / "llm_gateway_server.py"
QUICKSTART = ROOT / "examples" / "policies" / "quickstart.json"

warnings.filterwarnings("ignore", category=DeprecationWarning)


def guard(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(guard_command() + list(args), capture_output=True, text=True, timeout=60, cwd=cwd,
                          env=env, stdin=subprocess.DEVNULL)


def stringify(data: Any) -> str:
    """What JSON.stringify(data, null, 2) writes (Claude Desktop, `claude mcp add`), plus a newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


CLAUDE_DESKTOP = {
    "globalShortcut": "Ctrl+Space",
    "mcpServers": {
        "llm-gateway": {"command": "npx", "args": ["-y", "llm-cli-gateway"],
                        "env": {"OPENAI_API_KEY": "sk-test", "LOG": "débug"}},
        "filesystem": {"command": "npx",
                       "args": ["-y", "@modelcontextprotocol/server-filesystem", "/Users/me/Desktop"]},
    },
    "preferences": {"menuBarEnabled": True, "sidebarMode": "chat"},
}
CURSOR = {
    "mcpServers": {
        "remote": {"url": "https://mcp.example.com/mcp", "headers": {"Authorization": "Bearer x"}},
        "everything": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-everything"],
                       "cwd": "/work/project", "disabled": False, "autoApprove": []},
    },
}
CLAUDE_CODE = {
    "mcpServers": {
        "gateway": {"type": "stdio", "command": "uvx", "args": ["llm-cli-gateway", "--port", "0"],
                    "env": {"TOKEN": "${TOKEN}"}},
        "docs": {"type": "http", "url": "https://learn.microsoft.com/api/mcp"},
    },
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


@pytest.mark.parametrize("shape, where, server", [
    pytest.param(CLAUDE_DESKTOP, "Claude/claude_desktop_config.json", "llm-gateway", id="claude-desktop"),
    pytest.param(CURSOR, ".cursor/mcp.json", "everything", id="cursor"),
    pytest.param(CLAUDE_CODE, "project/.mcp.json", "gateway", id="claude-code-project"),
])
def test_round_trip_is_byte_identical(shape: dict[str, Any], where: str, server: str, tmp_path: Path) -> None:
    config = write(tmp_path / where, stringify(shape))
    original = config.read_bytes()
    # relative paths, from another directory: the entry must hold absolute ones (the client's cwd is unknown)
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.json").write_bytes(QUICKSTART.read_bytes())
    done = guard("wrap", str(config), "--server", server, "--policy", "policies/p.json", "--audit", "a.jsonl",
                 cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"wrapped {server}" in done.stdout
    data = json.loads(config.read_text())
    entry, before = data["mcpServers"][server], shape["mcpServers"][server]
    assert entry["command"] == guard_command()[0] and os.path.isabs(entry["command"])
    assert entry["args"] == ["run", "--policy", str(tmp_path / "policies" / "p.json"),
                             "--audit", str(tmp_path / "a.jsonl"), "--", before["command"], *before["args"]]
    # everything else of the entry, and every other entry and key, as it was and where it was
    assert {k: v for k, v in entry.items() if k not in ("command", "args", "mcp-guard")} == \
        {k: v for k, v in before.items() if k not in ("command", "args")}
    assert list(entry)[:len(before)] == list(before) and list(entry)[-1] == "mcp-guard"
    assert {k: v for k, v in data.items() if k != "mcpServers"} == {k: v for k, v in shape.items() if k != "mcpServers"}
    assert {k: v for k, v in data["mcpServers"].items() if k != server} == \
        {k: v for k, v in shape["mcpServers"].items() if k != server}
    assert list(data["mcpServers"]) == list(shape["mcpServers"])
    assert config.read_text().startswith('{\n  "')  # the file's own indent
    assert Path(str(config) + ".bak").read_bytes() == original

    undone = guard("unwrap", str(config), "--server", server)
    assert undone.returncode == 0, undone.stderr
    assert config.read_bytes() == original


def test_wrap_twice_changes_nothing_and_another_policy_updates(tmp_path: Path) -> None:
    config = write(tmp_path / "claude_desktop_config.json", stringify(CLAUDE_DESKTOP))
    original = config.read_bytes()
    other = tmp_path / "strict.json"
    other.write_text(json.dumps({"version": "1", "default": "deny", "rules": {"llm_job_list": {"action": "allow"}}}))
    assert guard("wrap", str(config), "--server", "llm-gateway", "--policy", str(QUICKSTART)).returncode == 0
    wrapped = config.read_bytes()
    os.utime(config, (1_000_000, 1_000_000))
    again = guard("wrap", str(config), "--server", "llm-gateway", "--policy", str(QUICKSTART))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert config.read_bytes() == wrapped and config.stat().st_mtime == 1_000_000  # not even rewritten

    switched = guard("wrap", str(config), "--server", "llm-gateway", "--policy", str(other))
    assert switched.returncode == 0, switched.stderr
    entry = json.loads(config.read_text())["mcpServers"]["llm-gateway"]
    assert entry["args"] == ["run", "--policy", str(other), "--", "npx", "-y", "llm-cli-gateway"]  # not nested
    assert guard("unwrap", str(config), "--server", "llm-gateway").returncode == 0
    assert config.read_bytes() == original
    still = guard("unwrap", str(config), "--server", "llm-gateway")
    assert still.returncode == 0 and "not guarded" in still.stdout and config.read_bytes() == original


def test_run_as_a_module_still_writes_the_console_script(tmp_path: Path) -> None:
    """`python -m mcp_guard wrap`: the entry names the venv's mcp-guard script, not __main__.py."""
    config = write(tmp_path / "mcp.json", stringify(CURSOR))
    out = subprocess.run([sys.executable, "-m", "mcp_guard", "wrap", str(config), "--server", "everything",
                          "--policy", str(QUICKSTART)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(config.read_text())["mcpServers"]["everything"]["command"] == guard_command()[0]


def test_entry_without_args_comes_back_without_args(tmp_path: Path) -> None:
    shape = {"mcpServers": {"bare": {"command": "/opt/server", "env": {"A": "1"}}}}
    config = write(tmp_path / "mcp.json", stringify(shape))
    original = config.read_bytes()
    assert guard("wrap", str(config), "--server", "bare", "--policy", str(QUICKSTART)).returncode == 0
    entry = json.loads(config.read_text())["mcpServers"]["bare"]
    assert list(entry) == ["command", "args", "env", "mcp-guard"]
    assert entry["args"][-2:] == ["--", "/opt/server"]
    assert guard("unwrap", str(config), "--server", "bare").returncode == 0
    assert config.read_bytes() == original


def test_other_styles(tmp_path: Path) -> None:
    """Compact one-line files, tabs, 4 spaces, CRLF and \\u escapes come back byte-identical; a hand-formatted
    file (args on one line in an indented file) comes back with the same JSON, its whitespace normalised."""
    styles = {
        "compact": json.dumps(CURSOR, separators=(",", ":")),
        "one-line": json.dumps(CURSOR),
        "tabs": json.dumps(CURSOR, indent="\t") + "\n",
        "four": json.dumps(CURSOR, indent=4),
        "crlf": json.dumps(CURSOR, indent=2).replace("\n", "\r\n") + "\r\n",
        "escaped": json.dumps(CLAUDE_DESKTOP, indent=2),
    }
    for name, text in styles.items():
        config = write(tmp_path / f"{name}.json", text)
        server = "llm-gateway" if name == "escaped" else "everything"
        assert guard("wrap", str(config), "--server", server, "--policy", str(QUICKSTART)).returncode == 0
        assert config.read_bytes() != text.encode()
        assert guard("unwrap", str(config), "--server", server).returncode == 0
        assert config.read_bytes() == text.encode(), name

    hand = ('{\n  "mcpServers": {\n    "everything": { "command": "npx",\n'
            '      "args": ["-y", "@modelcontextprotocol/server-everything"] }\n  }\n}\n')
    config = write(tmp_path / "hand.json", hand)
    assert guard("wrap", str(config), "--server", "everything", "--policy", str(QUICKSTART)).returncode == 0
    assert guard("unwrap", str(config), "--server", "everything").returncode == 0
    assert json.loads(config.read_text()) == json.loads(hand)
    assert config.read_text() == stringify(json.loads(hand))


def test_list(tmp_path: Path) -> None:
    config = write(tmp_path / "claude_desktop_config.json", stringify({**CLAUDE_DESKTOP, "mcpServers": {
        **CLAUDE_DESKTOP["mcpServers"], "remote": {"type": "sse", "url": "https://x/sse"}}}))
    assert guard("wrap", str(config), "--server", "filesystem", "--policy", str(QUICKSTART),
                 "--audit", str(tmp_path / "a.jsonl")).returncode == 0
    listed = guard("wrap", "--list", str(config))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0] == str(config)
    assert lines[1] == "  llm-gateway: not guarded  (npx -y llm-cli-gateway)"
    assert lines[2] == (f"  filesystem: guarded by {QUICKSTART}, audit {tmp_path / 'a.jsonl'}  "
                        "(npx -y @modelcontextprotocol/server-filesystem /Users/me/Desktop)")
    assert lines[3] == "  remote: remote  (https://x/sse)"


BAD_POLICY = {"version": "1", "rules": {"x": {"action": "explode"}}}


@pytest.mark.parametrize("text, args, message", [
    pytest.param('{"mcpServers": {"a": {"command": "x",}}}', ("--server", "a"), "not valid JSON", id="invalid-json"),
    pytest.param(stringify(CURSOR), ("--server", "nope"), "no server 'nope'", id="no-such-server"),
    pytest.param(stringify(CURSOR), ("--server", "remote"), "remote server (url), not a stdio one", id="url-entry"),
    pytest.param(stringify(CLAUDE_CODE), ("--server", "docs"), "remote server (type http)", id="http-entry"),
    pytest.param('{"mcpServers": {"a": {"command": "x"}, "a": {"command": "y"}}}', ("--server", "a"),
                 "duplicate key 'a'", id="duplicate-server"),
    pytest.param('{"mcpServers": {"a": {"command": "x", "command": "y"}}}', ("--server", "a"),
                 "duplicate key 'command'", id="duplicate-key"),
    pytest.param('[1, 2]', ("--server", "a"), "top level is not an object", id="not-an-object"),
    pytest.param('{"mcpServers": {"a": {"command": "x", "timeout": NaN}}}', ("--server", "a"), "NaN is not JSON",
                 id="nan"),
    pytest.param(stringify(CURSOR), ("--server", "everything", "BAD"), "policy error", id="bad-policy"),
])
def test_errors_leave_the_file_alone(text: str, args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    config = write(tmp_path / "mcp.json", text)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(BAD_POLICY))
    policy = str(bad) if "BAD" in args else str(QUICKSTART)
    for command in (["wrap", str(config), *[a for a in args if a != "BAD"], "--policy", policy],
                    ["unwrap", str(config), *[a for a in args if a != "BAD"]]):
        if command[0] == "unwrap" and ("BAD" in args or "remote server" in message):
            continue  # unwrap has no policy; a remote entry is simply "not guarded" to it (below)
        out = guard(*command)
        assert out.returncode == 2, out
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
        assert config.read_bytes() == text.encode()
        assert not Path(str(config) + ".bak").exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mcp.json", "bad.json"])  # no temp files
    if message in ("not valid JSON", "duplicate key 'a'"):
        assert guard("wrap", "--list", str(config)).returncode == 2
    if "remote server" in message:
        out = guard("unwrap", str(config), *args)
        assert out.returncode == 0 and "not guarded; nothing changed" in out.stdout
        assert config.read_bytes() == text.encode() and not Path(str(config) + ".bak").exists()


def test_missing_config_and_missing_options(tmp_path: Path) -> None:
    out = guard("wrap", str(tmp_path / "none.json"), "--server", "a", "--policy", str(QUICKSTART))
    assert out.returncode == 2 and "no such file" in out.stderr
    assert not (tmp_path / "none.json").exists()
    config = write(tmp_path / "mcp.json", stringify(CURSOR))
    assert guard("wrap", str(config), "--server", "everything").returncode == 2
    empty = write(tmp_path / "empty.json", "{}\n")
    assert guard("wrap", "--list", str(empty)).stdout.splitlines()[1] == '  (no servers in "mcpServers")'
    assert guard("wrap", "--list", str(config), "--server", "everything").returncode == 2


def test_permissions_backup_and_symlink_kept(tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "mcp.json", stringify(CURSOR))
    real.chmod(0o600)
    link = tmp_path / ".cursor" / "mcp.json"
    link.parent.mkdir()
    link.symlink_to(real)
    original = real.read_bytes()
    assert guard("wrap", str(link), "--server", "everything", "--policy", str(QUICKSTART)).returncode == 0
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    backup = Path(str(link) + ".bak")
    assert backup.read_bytes() == original and stat.S_IMODE(backup.stat().st_mode) == 0o600
    wrapped = real.read_bytes()
    assert guard("unwrap", str(link), "--server", "everything").returncode == 0
    assert real.read_bytes() == original and backup.read_bytes() == wrapped  # the backup: the file just before


def test_unwrap_when_a_client_dropped_our_key(tmp_path: Path) -> None:
    """A client that rewrote the file without the "mcp-guard" key: the original is read back from after `--`."""
    config = write(tmp_path / ".mcp.json", stringify(CLAUDE_CODE))
    assert guard("wrap", str(config), "--server", "gateway", "--policy", str(QUICKSTART)).returncode == 0
    data = json.loads(config.read_text())
    del data["mcpServers"]["gateway"]["mcp-guard"]
    config.write_text(stringify(data))
    out = guard("unwrap", str(config), "--server", "gateway")
    assert out.returncode == 0 and "from its command line" in out.stdout
    assert json.loads(config.read_text()) == CLAUDE_CODE


def test_an_edit_after_wrapping_survives_unwrap(tmp_path: Path) -> None:
    """The server's arguments edited inside the wrapped entry, and its env changed: unwrap keeps both (what
    runs wins over the record), rather than bringing back a stale copy."""
    config = write(tmp_path / ".mcp.json", stringify(CLAUDE_CODE))
    assert guard("wrap", str(config), "--server", "gateway", "--policy", str(QUICKSTART)).returncode == 0
    data = json.loads(config.read_text())
    entry = data["mcpServers"]["gateway"]
    entry["args"][-1] = "8080"
    entry["env"]["TOKEN"] = "${OTHER}"
    config.write_text(stringify(data))
    assert "guarded" in guard("wrap", "--list", str(config)).stdout
    out = guard("unwrap", str(config), "--server", "gateway")
    assert out.returncode == 0 and "no longer matched" in out.stdout
    restored = json.loads(config.read_text())["mcpServers"]["gateway"]
    assert restored == {"type": "stdio", "command": "uvx", "args": ["llm-cli-gateway", "--port", "8080"],
                        "env": {"TOKEN": "${OTHER}"}}


def test_windows_paths_are_recognised(tmp_path: Path) -> None:
    """A config from Windows (backslashes, mcp-guard.exe) is listed and unwrapped on any system."""
    shape = {"mcpServers": {"gw": {"command": "C:\\Users\\me\\.mcp-guard\\Scripts\\MCP-GUARD.EXE",
                                   "args": ["run", "--policy", "C:\\p.json", "--", "npx", "gw"]}}}
    config = write(tmp_path / "claude_desktop_config.json", stringify(shape))
    assert "gw: guarded by C:\\p.json" in guard("wrap", "--list", str(config)).stdout
    assert guard("unwrap", str(config), "--server", "gw").returncode == 0
    assert json.loads(config.read_text()) == {"mcpServers": {"gw": {"command": "npx", "args": ["gw"]}}}


def test_default_config_is_claude_desktops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_CONFIG_HOME", "APPDATA")}
    env["HOME"] = str(home)
    if sys.platform == "darwin":
        where = home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
    else:
        where = home / ".config" / "Claude" / "claude_desktop_config.json"
    missing = guard("wrap", "--list", env=env)
    assert missing.returncode == 2 and str(where) in missing.stderr and "name CONFIG" in missing.stderr
    config = write(where, stringify(CLAUDE_DESKTOP))
    assert guard("wrap", "--server", "llm-gateway", "--policy", str(QUICKSTART), env=env).returncode == 0
    listed = guard("wrap", "--list", env=env)
    assert listed.stdout.splitlines()[0] == str(where) and "llm-gateway: guarded" in listed.stdout
    assert guard("unwrap", "--server", "llm-gateway", env=env).returncode == 0
    assert config.read_bytes() == stringify(CLAUDE_DESKTOP).encode()
    if sys.platform.startswith("linux"):
        env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
        assert str(tmp_path / "xdg" / "Claude" / "claude_desktop_config.json") in guard("wrap", "--list",
                                                                                        env=env).stderr


async def client_view(entry: dict[str, Any], cwd: Path) -> tuple[list[str], str, bool]:
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry.get("env"), cwd=cwd)
    async with Client(params, mode="legacy", read_timeout_seconds=30) as client:  # type: ignore[arg-type]
        names = [tool.name for tool in (await client.list_tools()).tools]
        denied = await client.call_tool("llm_admin_stats", {})
        echo = await client.call_tool("llm_request", {"prompt": "hi", "model": "m"})
        text = "".join(getattr(part, "text", "") for part in echo.content)
        return names, text, bool(denied.is_error)


def test_a_client_launching_the_wrapped_entry_gets_the_policy(tmp_path: Path) -> None:
    """The rewritten entry, started exactly as a client starts it (command + args + env, from an unrelated
    working directory), puts the example server behind the quickstart policy."""
    shape = {"mcpServers": {"gateway": {"command": sys.executable, "args": [str(GATEWAY)],
                                        "env": {"PATH": os.environ.get("PATH", ""), "GATEWAY_NOTE": "x"}}}}
    config = write(tmp_path / "claude_desktop_config.json", stringify(shape))
    done = guard("wrap", str(config), "--server", "gateway", "--policy", str(QUICKSTART),
                 "--audit", "audit.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    entry = json.loads(config.read_text())["mcpServers"]["gateway"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    async def bounded() -> tuple[list[str], str, bool]:
        with anyio.fail_after(60):
            return await client_view(entry, elsewhere)

    names, text, denied = anyio.run(bounded)
    assert "llm_job_cancel" not in names and "llm_job_list" in names   # hidden by the policy
    assert denied                                                       # llm_admin_* denied
    assert text == "[m] echo: hi"
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["policy"] == str(QUICKSTART)
    assert any(r.get("tool") == "llm_admin_stats" and r.get("action") == "deny" for r in records)
