"""Regression tests for findings of the security review that are not about a single policing rule."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wireclient import guard_command, guard_run

SERVERS = Path(__file__).resolve().parent / "servers"


def run(args: list[str], env: dict[str, str] | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(guard_command() + args, input=stdin, capture_output=True, timeout=30,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("text", ["version: '1'\nrules:\n  spend: {budget: {max: .nan, window: 60, cost: /usd}}\n",
                                  "version: '1'\nrules:\n  req: {rate_limit: {max: 1, window: .nan}}\n",
                                  "version: '1'\nrules:\n  spend: {budget: {max: .inf, window: 60, cost: /usd}}\n"])
def test_yaml_non_finite_limits_are_refused(tmp_path: Path, text: str) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text(text)
    marker = tmp_path / "started"
    result = run(["run", "--policy", str(policy), "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    assert result.returncode == 2
    assert b"not a finite number" in result.stderr and str(policy).encode() in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("variable", ["MCP_GUARD_POLICY", "MCP_GUARD_AUDIT"])
def test_a_set_but_empty_variable_is_an_error_not_a_silent_default(tmp_path: Path, variable: str) -> None:
    marker = tmp_path / "started"
    result = run(["run", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')"], env={variable: ""})
    assert result.returncode == 2
    assert result.stderr.decode().strip() == f"mcp-guard: error: {variable} is set but empty; unset it or name a file"
    assert not marker.exists()


def test_a_non_blocking_stdout_gets_whole_lines(tmp_path: Path) -> None:
    """Some launchers hand over a pipe with O_NONBLOCK set on the shared file description."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    proc = subprocess.Popen(guard_run("--", sys.executable, str(SERVERS / "relay_raw_server.py")),
                            stdin=subprocess.PIPE, stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    assert proc.stdin is not None
    proc.stdin.write(b'{"jsonrpc":"2.0","id":41,"method":"raw/big","params":{"size":300000}}\n')
    proc.stdin.close()
    time.sleep(1.0)  # let mcp-guard fill the pipe and meet EAGAIN
    data = b""
    with os.fdopen(read_end, "rb") as reader:
        while chunk := reader.read(65536):
            data += chunk
    assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    answer = json.loads(data)
    assert answer["id"] == 41
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("args", [["run", "--polcy", "p.json", "--", "true"],
                                  ["run", "--policy", "p.json", "--bogus", "--", "true"]])
def test_a_misspelled_option_is_named_not_run_as_the_command(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "p.json").write_text('{"version": "1"}')
    result = subprocess.run(guard_command() + args, cwd=tmp_path, capture_output=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert b"No such option" in result.stderr and b"command not found" not in result.stderr
    assert b"Traceback" not in result.stderr and result.stdout == b""


def test_server_arguments_after_the_separator_are_the_servers(tmp_path: Path) -> None:
    marker = tmp_path / "argv.json"
    script = f"import json, sys; json.dump(sys.argv[1:], open({str(marker)!r}, 'w'))"
    result = subprocess.run(guard_run("--", sys.executable, "-c", script, "--policy", "-x", "--"),
                            capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    assert json.loads(marker.read_text()) == ["--policy", "-x", "--"]
