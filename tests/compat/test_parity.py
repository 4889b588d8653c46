"""Real MCP servers, driven by the SDK's Client, give the same answers directly and through
`mcp-guard run` with an allow-all policy; with a real policy only the policed tools change."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from . import compat
from .compat import ALLOW_ALL, Tools, guarded, run_scenario, write_policy

EVERYTHING_CALLS: list[tuple[str, dict[str, Any]]] = [
    ("echo", {"message": "hello through the guard"}),
    ("get-sum", {"a": 2, "b": 3}),
    ("get-tiny-image", {}),
    ("get-annotated-message", {"messageType": "error", "includeImage": False}),
    ("get-structured-content", {"location": "Chicago"}),
    ("get-roots-list", {}),
    ("trigger-sampling-request", {"prompt": "say hi", "maxTokens": 10}),
    ("trigger-elicitation-request", {}),
    ("no-such-tool", {}),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    d = tmp_path / "files"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("alpha\nbeta\n")
    (d / "sub" / "b.md").write_text("# bee\n")
    return d


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    d = tmp_path / "repo"
    d.mkdir()
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=Compat", "-c", "user.email=compat@example.com",
                        "-c", "init.defaultBranch=main", *args], cwd=d, check=True, capture_output=True, env=env)

    git("init", "-q")
    (d / "README.md").write_text("hello\n")
    git("add", "README.md")
    git("commit", "-q", "-m", "first")
    (d / "README.md").write_text("hello\nworld\n")
    (d / "new.txt").write_text("untracked\n")
    return d


Scenario = tuple[list[str], list[tuple[str, dict[str, Any]]], list[Path]]


def _server(name: str, tools: Tools, workdir: Path, repo: Path) -> Scenario:
    if name == "everything":
        return tools.everything, EVERYTHING_CALLS, [workdir]
    if name == "filesystem":
        return tools.filesystem(workdir), [
            ("list_allowed_directories", {}),
            ("list_directory", {"path": str(workdir)}),
            ("read_text_file", {"path": str(workdir / "a.txt")}),
            ("directory_tree", {"path": str(workdir)}),
            ("search_files", {"path": str(workdir), "pattern": "*.md"}),
            ("read_text_file", {"path": "/etc/passwd"}),  # outside the root: an error result
        ], [workdir]
    if name == "time":
        return tools.time_server, [
            ("get_current_time", {"timezone": "Etc/UTC"}),
            ("convert_time", {"source_timezone": "Etc/UTC", "time": "12:00", "target_timezone": "Asia/Tokyo"}),
            ("get_current_time", {"timezone": "Not/AZone"}),
        ], [workdir]
    if name == "git":
        return tools.git_server(repo), [
            ("git_status", {"repo_path": str(repo)}),
            ("git_diff_unstaged", {"repo_path": str(repo)}),
            ("git_log", {"repo_path": str(repo), "max_count": 5}),
            ("git_branch", {"repo_path": str(repo), "branch_type": "local"}),
        ], [repo]
    raise AssertionError(name)


SERVERS = ["everything", "filesystem", "time", "git"]


@pytest.mark.parametrize("mode", ["legacy", "auto"])
@pytest.mark.parametrize("server", SERVERS)
def test_allow_all_is_transparent(server: str, mode: str, tools: Tools, workdir: Path, repo: Path,
                                  tmp_path: Path) -> None:
    argv, calls, roots = _server(server, tools, workdir, repo)
    policy = write_policy(tmp_path, ALLOW_ALL)
    direct = run_scenario(argv, mode, calls, roots)
    through = run_scenario(guarded(argv, policy), mode, calls, roots)
    assert direct["tools"], f"{server}: no tools listed"
    assert all("result" in c or c["call"] in ("no-such-tool",) for c in direct["calls"]), direct["calls"]
    assert through == with_reload(direct)


def with_reload(direct: dict[str, Any]) -> dict[str, Any]:
    """What the client sees through mcp-guard with live reload (the default): the one change is
    tools.listChanged advertised, since mcp-guard itself tells the client when a new policy changes its
    tools (docs/audit.md)."""
    expected = json.loads(json.dumps(direct))
    tools = (expected.get("capabilities") or {}).get("tools")
    if isinstance(tools, dict):
        tools["listChanged"] = True
    return expected


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_allow_all_without_reload_is_byte_for_byte_transparent(mode: str, tools: Tools, workdir: Path, repo: Path,
                                                                tmp_path: Path) -> None:
    argv, calls, roots = _server("time", tools, workdir, repo)
    policy = write_policy(tmp_path, ALLOW_ALL)
    direct = run_scenario(argv, mode, calls, roots)
    assert run_scenario(guarded(argv, policy, "--no-reload"), mode, calls, roots) == direct


def test_everything_sends_server_requests_and_notifications(tools: Tools, workdir: Path, tmp_path: Path) -> None:
    """The scenario really exercises server->client traffic (so the parity test above means something)."""
    through = run_scenario(guarded(tools.everything, write_policy(tmp_path, ALLOW_ALL)), "legacy",
                           EVERYTHING_CALLS, [workdir])
    kinds = [json.loads(e) for e in through["events"]]
    requests = {e["request"] for e in kinds if "request" in e}
    assert {"roots/list", "sampling/createMessage", "elicitation/create"} <= requests
    methods = {e["notification"]["method"] for e in kinds if "notification" in e}
    assert "notifications/tools/list_changed" in methods
    sampled = next(c for c in through["calls"] if c["call"] == "trigger-sampling-request")
    assert "sampled" in json.dumps(sampled)


POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["get-env"],
    "rules": {"get-sum": {"action": "deny", "reason": "sums are off today"}},
}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_everything_with_a_real_policy(mode: str, tools: Tools, workdir: Path, tmp_path: Path) -> None:
    calls = EVERYTHING_CALLS + [("get-env", {})]
    direct = run_scenario(tools.everything, mode, calls, [workdir])
    through = run_scenario(guarded(tools.everything, write_policy(tmp_path, POLICY)), mode, calls, [workdir])

    names_direct = [t["name"] for t in direct["tools"]]
    assert "get-env" in names_direct and "get-sum" in names_direct
    assert through["tools"] == [t for t in direct["tools"] if t["name"] != "get-env"]

    by_call_direct = {c["call"]: c for c in direct["calls"]}
    by_call_through = {c["call"]: c for c in through["calls"]}
    refused = by_call_through["get-sum"]["result"]
    assert refused["isError"] is True
    text = "mcp-guard refused the call to get-sum: sums are off today."
    assert refused["content"] == [{"type": "text", "text": text}]
    decision = {"action": "deny", "rule": "get-sum", "reason": "sums are off today"}
    assert refused["_meta"]["mcp-guard/decision"] == decision
    # The hidden tool answers exactly as the server answers a tool it does not have.
    hidden = json.dumps(by_call_through["get-env"]).replace("get-env", "NAME")
    assert hidden == json.dumps(by_call_direct["no-such-tool"]).replace("no-such-tool", "NAME")
    assert by_call_through["get-env"]["result"]["content"][0]["text"] == "MCP error -32602: Tool get-env not found"
    for name in by_call_direct:
        if name not in ("get-sum", "get-env"):
            assert by_call_through[name] == by_call_direct[name], name
    for key in ("protocol_version", "server_info", "capabilities", "instructions", "events"):
        assert through[key] == direct[key], key


def test_shutdown_escalates_when_the_server_ignores_eof(tools: Tools, spawn_guard: Any) -> None:
    """server-everything, once the client declared roots, does not exit on stdin EOF: mcp-guard must
    close its stdin, wait --shutdown-grace, then SIGTERM it, and finish within grace + ~3 s."""
    grace = 1.0
    proc = spawn_guard(tools.everything, policy=ALLOW_ALL, extra=("--shutdown-grace", str(grace)))
    answer = proc.initialize(capabilities={"roots": {"listChanged": True}})
    assert "result" in answer, answer
    proc.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    deadline = time.monotonic() + 10
    roots_request = None
    while roots_request is None and time.monotonic() < deadline:
        msg = proc.recv(timeout=max(0.1, deadline - time.monotonic()))
        if isinstance(msg, dict) and msg.get("method") == "roots/list":
            roots_request = msg
    assert roots_request is not None, "server-everything never asked for roots"
    proc.send({"jsonrpc": "2.0", "id": roots_request["id"], "result": {"roots": []}})
    time.sleep(0.3)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert children, "mcp-guard has no child"
    start = time.monotonic()
    proc.close_stdin()
    status = proc.wait(timeout=grace + 10)
    elapsed = time.monotonic() - start
    assert status == 0, proc.stderr
    assert elapsed <= grace + 3.0, f"shutdown took {elapsed:.1f} s"
    time.sleep(0.2)
    for pid in children:
        assert not compat_pid_alive(int(pid)), f"server process {pid} survived mcp-guard"


def test_server_everything_really_ignores_eof_after_roots(tools: Tools) -> None:
    """The premise of the shutdown test: without mcp-guard the server stays up after stdin EOF."""
    proc = subprocess.Popen(tools.everything, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {"roots": {"listChanged": True}},
            "clientInfo": {"name": "compat", "version": "0"}}}
        proc.stdin.write((json.dumps(init) + "\n").encode())
        proc.stdin.flush()
        proc.stdout.readline()
        proc.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
        proc.stdin.flush()
        time.sleep(0.6)
        proc.stdin.close()
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(2.0)
    finally:
        compat.stop(proc)


def compat_pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
