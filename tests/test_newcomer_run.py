"""Issue 14, `mcp-guard run` for a newcomer, through the real binary: no silent unguarded start, `--`
optional, a start-up line naming the policy, and a client told why a guard will not start."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SERVERS
from wireclient import WireProcess, guard_command

TINY = [sys.executable, str(SERVERS / "policy_tiny_server.py")]
POLICY = {"version": "1", "default": "allow", "hide": ["delete_everything"],
          "rules": {"add": {"action": "deny", "reason": "no sums"}, "echo": {"rate_limit": {"max": 5, "window": 60}}}}
TIME = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_GUARD_")}
    # Policy discovery looks in the user's config directory: never the real one (the tests run in tmp_path,
    # so ./mcp-guard.json is theirs too).
    env["XDG_CONFIG_HOME"] = "/nonexistent/mcp-guard-tests-config"
    env.update(extra)
    return env


def write(tmp_path: Path, body: object, name: str = "policy.json") -> Path:
    path = tmp_path / name
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


def marker_server(tmp_path: Path) -> tuple[list[str], Path]:
    marker = tmp_path / "server-started"
    return [sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"], marker


def run(args: list[str], env: dict[str, str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*guard_command(), *args], input=stdin.decode(), capture_output=True, text=True,
                          timeout=60, env=env, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


# --- running unguarded by accident ---------------------------------------------------------------


def test_run_without_any_policy_refuses_to_start(tmp_path: Path) -> None:
    server, marker = marker_server(tmp_path)
    proc = run(["run", "--", *server], clean_env(), tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("mcp-guard: error: no policy")
    for name in ("--policy", "MCP_GUARD_POLICY", "--no-policy", "./mcp-guard.{json,yaml,yml}",
                 "/nonexistent/mcp-guard-tests-config/mcp-guard/policy.{json,yaml,yml}"):
        assert name in lines[0]
    assert not marker.exists() and proc.stdout == ""


def test_a_misspelled_policy_variable_is_named_and_nothing_runs(tmp_path: Path) -> None:
    """The newcomer's typo: MCP_GUARD_POLICIES. It used to run the server with no policy, silently."""
    policy = write(tmp_path, POLICY)
    server, marker = marker_server(tmp_path)
    proc = run(["run", "--", *server], clean_env(MCP_GUARD_POLICIES=str(policy)), tmp_path)
    assert proc.returncode == 2
    assert ("mcp-guard: warning: MCP_GUARD_POLICIES is set, but mcp-guard reads MCP_GUARD_POLICY (a typo?)"
            in proc.stderr.splitlines())
    assert not marker.exists()


def test_unrelated_mcp_guard_variables_are_left_alone(tmp_path: Path) -> None:
    policy = write(tmp_path, POLICY)
    proc = run(["check", str(policy)], clean_env(MCP_GUARD_SKIP_COMPAT="1", MCP_GUARD_AUDT="a.jsonl"), tmp_path)
    assert "MCP_GUARD_SKIP_COMPAT" not in proc.stderr
    assert "MCP_GUARD_AUDT is set, but mcp-guard reads MCP_GUARD_AUDIT" in proc.stderr


def test_no_policy_is_a_plain_relay_only_when_asked(tmp_path: Path) -> None:
    proc = WireProcess([*guard_command(), "run", "--no-policy", *TINY], env=clean_env())
    try:
        proc.initialize()
        names = [t["name"] for t in proc.request(1, "tools/list")["result"]["tools"]]
        assert sorted(names) == ["add", "delete_everything", "echo", "read_note"]
        proc.close_stdin()
        assert proc.wait(30) == 0
        assert re.fullmatch(TIME + r" mcp-guard: no policy \(--no-policy\): every message passes",
                            proc.stderr.splitlines()[0]), proc.stderr
    finally:
        proc.kill()


def test_policy_and_no_policy_together_is_an_error(tmp_path: Path) -> None:
    policy = write(tmp_path, POLICY)
    server, marker = marker_server(tmp_path)
    proc = run(["run", "--no-policy", "--", *server], clean_env(MCP_GUARD_POLICY=str(policy)), tmp_path)
    assert proc.returncode == 2 and "--no-policy and $MCP_GUARD_POLICY contradict" in proc.stderr
    assert not marker.exists()


def test_a_policy_option_after_the_server_command_gets_a_hint(tmp_path: Path) -> None:
    policy = write(tmp_path, POLICY)
    server, marker = marker_server(tmp_path)
    proc = run(["run", *server, "--policy", str(policy)], clean_env(), tmp_path)
    assert proc.returncode == 2
    assert "--policy after the server command is the server's argument: put it before" in proc.stderr
    assert not marker.exists()


# --- the start-up line and `--` being optional ---------------------------------------------------


def test_inline_without_separator_and_the_start_up_line(tmp_path: Path) -> None:
    """`run --policy p.json SERVER ARGS...` as the Inspector and mcp-proxy pass it (they strip `--`)."""
    policy = write(tmp_path, POLICY)
    proc = WireProcess([*guard_command(), "run", "--policy", str(policy), *TINY], env=clean_env())
    try:
        proc.initialize()
        names = [t["name"] for t in proc.request(1, "tools/list")["result"]["tools"]]
        assert sorted(names) == ["add", "echo", "read_note"]
        refused = proc.request(2, "tools/call", {"name": "add", "arguments": {"a": 1, "b": 2}})
        assert refused["result"]["isError"] is True
        proc.close_stdin()
        assert proc.wait(30) == 0
    finally:
        proc.kill()
    first = proc.stderr.splitlines()[0]
    assert re.fullmatch(TIME + f" mcp-guard: policy {re.escape(str(policy))}: 1 hidden, 2 rule\\(s\\), "
                               "default allow", first), proc.stderr


def test_server_options_after_the_command_are_the_servers(tmp_path: Path) -> None:
    policy = write(tmp_path, POLICY)
    seen = tmp_path / "argv.json"
    script = f"import json, sys; json.dump(sys.argv[1:], open({str(seen)!r}, 'w'))"
    proc = run(["run", "--policy", str(policy), sys.executable, "-c", script, "--flag", "-x", "--policy", "y"],
               clean_env(), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(seen.read_text()) == ["--flag", "-x", "--policy", "y"]


@pytest.mark.parametrize("args", [["run", "--polcy", "p.json", "true"],
                                  ["run", "--policy", "p.json", "--bogus", "true"],
                                  ["check", "p.json", "--timout", "3", "true"]])
def test_a_misspelled_option_without_separator_is_still_no_such_option(tmp_path: Path, args: list[str]) -> None:
    write(tmp_path, POLICY, "p.json")
    proc = run(args, clean_env(), tmp_path)
    assert proc.returncode == 2
    assert "No such option" in proc.stderr and proc.stdout == ""


def test_check_takes_the_server_command_without_separator(tmp_path: Path) -> None:
    policy = write(tmp_path, POLICY)
    proc = run(["check", "--timeout", "60", str(policy), *TINY], clean_env(), tmp_path)
    assert "The server offers 4 tool(s)" in proc.stdout, proc.stdout + proc.stderr


# --- a client told why the guard will not start ----------------------------------------------------


def test_a_bad_policy_answers_the_first_request_then_exits_2(tmp_path: Path) -> None:
    policy = write(tmp_path, '{"version": "1",\n "rules": {"x": {"rate_limt": {"max": 1, "window": 1}}}}')
    server, marker = marker_server(tmp_path)
    proc = WireProcess([*guard_command(), "run", "--policy", str(policy), *server], env=clean_env())
    try:
        proc.send({"jsonrpc": "2.0", "method": "notifications/something"})  # not a request: not answered
        proc.send({"jsonrpc": "2.0", "id": "init-1", "method": "initialize",
                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                              "clientInfo": {"name": "t", "version": "1"}}})
        answer = proc.recv(timeout=20)
        assert proc.wait(20) == 2
    finally:
        proc.kill()
    error_line = next(line for line in proc.stderr.splitlines() if line.startswith("mcp-guard: error: "))
    assert answer["id"] == "init-1" and answer["error"]["code"] == -32010
    assert answer["error"]["message"] == "mcp-guard: " + error_line[len("mcp-guard: error: "):]
    assert "unknown key 'rate_limt'" in answer["error"]["message"] and str(policy) in answer["error"]["message"]
    assert proc.recv_raw(timeout=5) is None  # nothing else, and stdout closed
    assert not marker.exists()


def test_a_bad_policy_waits_only_a_few_seconds_for_a_request(tmp_path: Path) -> None:
    policy = write(tmp_path, "{")
    server, marker = marker_server(tmp_path)
    started = time.monotonic()
    proc = WireProcess([*guard_command(), "run", "--policy", str(policy), *server], env=clean_env())
    try:
        assert proc.wait(30) == 2  # stdin stays open and silent
    finally:
        proc.kill()
    elapsed = time.monotonic() - started
    assert 4.0 <= elapsed < 25, elapsed  # waited for a request (5 s), then gave up
    assert proc.recv_raw(timeout=5) is None
    assert "not valid JSON" in proc.stderr and not marker.exists()


def test_no_policy_also_tells_the_client(tmp_path: Path) -> None:
    server, marker = marker_server(tmp_path)
    proc = WireProcess([*guard_command(), "run", *server], env=clean_env())
    try:
        proc.send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}})
        answer = proc.recv(timeout=20)
        assert proc.wait(20) == 2
    finally:
        proc.kill()
    assert answer["id"] == 0 and "--no-policy" in answer["error"]["message"]
    assert not marker.exists()


def test_a_policy_path_from_the_variable_that_does_not_exist_says_so(tmp_path: Path) -> None:
    server, marker = marker_server(tmp_path)
    proc = run(["run", *server], clean_env(MCP_GUARD_POLICY="policies/missing.json"), tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "mcp-guard: error: policy error: policies/missing.json: no such file "
        f"(the path came from $MCP_GUARD_POLICY, resolved in {tmp_path})")
    assert not marker.exists()


def test_the_sdk_client_is_told_why_the_guard_will_not_start(tmp_path: Path) -> None:
    """The MCP SDK's own Client, as an agent host would use it: connecting fails with mcp-guard's reason."""
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    policy = write(tmp_path, '{"version": "1", "default": "alow"}')
    server, marker = marker_server(tmp_path)
    command = [*guard_command(), "run", "--policy", str(policy), *server]
    errors: list[BaseException] = []

    async def connect() -> None:
        params = StdioServerParameters(command=command[0], args=command[1:], env=clean_env())
        with anyio.fail_after(60):
            try:
                async with Client(params, mode="legacy"):
                    pass
            except BaseException as exc:  # noqa: BLE001 - the failure itself is what is checked
                errors.append(exc)

    anyio.run(connect)
    assert errors, "the SDK client connected to a guard whose policy is unusable"
    text = repr(errors[0]) + str(errors[0]) + "".join(map(str, getattr(errors[0], "exceptions", ())))
    assert "'alow' is not one of 'allow'" in text, text
    assert not marker.exists()
