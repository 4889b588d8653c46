"""Helpers for the shared-limit tests: fleets of real `mcp-guard` processes in front of recording servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from wireclient import WireProcess, guard_command

SERVER = Path(__file__).resolve().parent / "servers" / "recording_server.py"


def write_policy(directory: Path, policy: dict[str, Any], name: str = "policy.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(policy))
    return path


def start_guard(policy: Path, state: str | None, record: Path, tools: str = "allowed",
                env: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> WireProcess:
    args = guard_command() + ["run", "--policy", str(policy)]
    if state is not None:
        args += ["--state", state]
    args += [*extra, "--", sys.executable, str(SERVER)]
    environment = {**os.environ, "RECORD_FILE": str(record), "TOOLS": tools, **(env or {})}
    proc = WireProcess(args, env=environment)
    proc.initialize()
    return proc


def call_line(request_id: int, tool: str, arguments: dict[str, Any] | None = None) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": arguments or {}}})


def send_calls(proc: WireProcess, calls: list[tuple[str, dict[str, Any]]], first_id: int = 1) -> None:
    proc.send("\n".join(call_line(first_id + index, tool, arguments) for index, (tool, arguments) in enumerate(calls)))


def collect(proc: WireProcess, count: int, timeout: float = 60.0) -> dict[int, dict[str, Any]]:
    """The answers to `count` requests, by id."""
    answers: dict[int, dict[str, Any]] = {}
    while len(answers) < count:
        message = proc.recv(timeout)
        if isinstance(message, dict) and "id" in message and "method" not in message:
            answers[message["id"]] = message
    return answers


def passed(answer: dict[str, Any]) -> bool:
    """Whether the upstream answered (not mcp-guard's refusal)."""
    result = answer.get("result")
    return isinstance(result, dict) and "mcp-guard/decision" not in (result.get("_meta") or {})


def refusal_text(answer: dict[str, Any]) -> str:
    return str(answer["result"]["content"][0]["text"])


def upstream_calls(record: Path) -> int:
    if not record.exists():
        return 0
    return sum(1 for line in record.read_bytes().splitlines() if json.loads(line).get("method") == "tools/call")


def guard_status(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(guard_command() + ["status", "--json", *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def run_guard(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(guard_command() + list(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
