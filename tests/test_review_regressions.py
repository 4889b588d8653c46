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
from wireclient import guard_command

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
    proc = subprocess.Popen(guard_command() + ["run", "--", sys.executable, str(SERVERS / "relay_raw_server.py")],
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
