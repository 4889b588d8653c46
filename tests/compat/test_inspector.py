"""The MCP Inspector's CLI mode (a real, independent client) lists and calls tools through mcp-guard.

Inspector v1's CLI splits its own command line at `--`, so `mcp-guard run ... -- server` cannot be given
to it inline (nor in its --config args); the guarded server is started through a two-line wrapper
script instead, as one would in any client that does the same."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from .compat import PYTHON, ROOT, Tools, guard_bin, write_policy

GATEWAY = ROOT / "examples" / "llm_gateway_server.py"

POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["llm_job_cancel"],
    "rules": {"llm_admin_*": {"action": "deny", "reason": "admin tools are off"}},
}


def _server() -> list[str]:
    assert GATEWAY.exists(), f"{GATEWAY} is missing"
    return [PYTHON, str(GATEWAY)]


def _wrapper(tmp_path: Path, argv: list[str], name: str) -> str:
    script = tmp_path / name
    script.write_text("#!/bin/sh\nexec " + " ".join(_q(a) for a in argv) + "\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def _q(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def inspector(tools: Tools, command: str, *args: str) -> tuple[int, Any, str]:
    proc = subprocess.run([*tools.inspector_cli, "--cli", command, *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "NO_COLOR": "1"})
    try:
        out = json.loads(proc.stdout) if proc.stdout.strip() else None
    except json.JSONDecodeError:
        out = proc.stdout
    return proc.returncode, out, proc.stderr


@pytest.fixture
def direct(tmp_path: Path) -> str:
    return _wrapper(tmp_path, _server(), "direct.sh")


@pytest.fixture
def allow_all(tmp_path: Path) -> str:
    policy = write_policy(tmp_path, {"version": "1", "default": "allow"}, "allow.json")
    return _wrapper(tmp_path, [guard_bin(), "run", "--policy", policy, "--", *_server()], "allow.sh")


@pytest.fixture
def policed(tmp_path: Path) -> str:
    policy = write_policy(tmp_path, POLICY, "policy.json")
    return _wrapper(tmp_path, [guard_bin(), "run", "--policy", policy, "--", *_server()], "policed.sh")


def test_inspector_lists_and_calls_through_allow_all(tools: Tools, direct: str, allow_all: str) -> None:
    rc_d, listed_d, err = inspector(tools, direct, "--method", "tools/list")
    assert rc_d == 0, err
    rc_g, listed_g, err = inspector(tools, allow_all, "--method", "tools/list")
    assert rc_g == 0, err
    assert listed_g == listed_d
    assert "llm_job_cancel" in [t["name"] for t in listed_g["tools"]]

    call = ("--method", "tools/call", "--tool-name", "llm_request", "--tool-arg", "prompt=hello", "model=m1")
    rc_d, called_d, err = inspector(tools, direct, *call)
    assert rc_d == 0, err
    rc_g, called_g, err = inspector(tools, allow_all, *call)
    assert rc_g == 0, err
    assert called_g == called_d
    assert called_g["content"][0]["text"] == "[m1] echo: hello"


def test_inspector_sees_hidden_tools_gone_and_refusals(tools: Tools, direct: str, policed: str) -> None:
    _, listed_d, _ = inspector(tools, direct, "--method", "tools/list")
    rc, listed, err = inspector(tools, policed, "--method", "tools/list")
    assert rc == 0, err
    assert listed["tools"] == [t for t in listed_d["tools"] if t["name"] != "llm_job_cancel"]

    # The hidden tool answers exactly as the server answers a tool it does not have.
    rc, out, err = inspector(tools, policed, "--method", "tools/call", "--tool-name", "llm_job_cancel",
                             "--tool-arg", "jobId=j1")
    rc_d, out_d, err_d = inspector(tools, direct, "--method", "tools/call", "--tool-name", "no_such_tool",
                                   "--tool-arg", "jobId=j1")
    assert (rc, json.dumps(out).replace("llm_job_cancel", "NAME")) == (
        rc_d, json.dumps(out_d).replace("no_such_tool", "NAME")), (out, err)
    assert out["isError"] is True and out["content"][0]["text"] == "Unknown tool: llm_job_cancel"

    rc, out, err = inspector(tools, policed, "--method", "tools/call", "--tool-name", "llm_admin_stats")
    assert rc == 0, err
    assert out["isError"] is True
    assert out["content"] == [{"type": "text",
                               "text": "mcp-guard refused the call to llm_admin_stats: admin tools are off."}]
    assert out["_meta"]["mcp-guard/decision"]["rule"] == "llm_admin_*"

    rc, out, err = inspector(tools, policed, "--method", "tools/call", "--tool-name", "llm_request",
                             "--tool-arg", "prompt=still here", "model=m2")
    assert rc == 0, err
    assert out["content"][0]["text"] == "[m2] echo: still here"
