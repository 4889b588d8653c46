"""A raw JSON-RPC line client for a subprocess: for tests that are about the wire."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


def guard_command() -> list[str]:
    script = Path(sys.executable).parent / "mcp-guard"
    if script.exists():
        return [str(script)]
    found = shutil.which("mcp-guard")
    return [found] if found else [sys.executable, "-m", "mcp_guard"]


def guard_run(*args: str) -> list[str]:
    """`mcp-guard run ARGS...`. When the options before the server command name no policy, `--no-policy`
    is added: run refuses to start without a policy unless it is told to relay without one."""
    options = args[:args.index("--")] if "--" in args else args
    if not any(a in ("--policy", "--no-policy") or a.startswith("--policy=") for a in options):
        args = ("--no-policy", *args)
    return [*guard_command(), "run", *args]


class WireProcess:
    """Spawns a command; `send` writes lines to its stdin, `recv` reads lines from its stdout."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, stderr: Any = subprocess.PIPE) -> None:
        self.args = args
        self.other: list[Any] = []
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                     env=env)
        self.lines: queue.Queue[bytes | None] = queue.Queue()
        self.stderr_chunks: list[bytes] = []
        threading.Thread(target=self._read_stdout, daemon=True).start()
        if self.proc.stderr is not None:
            threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.put(line.rstrip(b"\n"))
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read1(65536), b""):  # type: ignore[union-attr]
            self.stderr_chunks.append(chunk)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def stderr(self) -> str:
        return b"".join(self.stderr_chunks).decode("utf-8", "replace")

    def send(self, message: dict[str, Any] | list[Any] | bytes | str) -> None:
        if isinstance(message, (dict, list)):
            data = json.dumps(message).encode() + b"\n"
        elif isinstance(message, str):
            data = message.encode() + b"\n"
        else:
            data = message if message.endswith(b"\n") else message + b"\n"
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv_raw(self, timeout: float = 10.0) -> bytes | None:
        """The next line (without its newline), or None at EOF. Raises TimeoutError."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no line from {self.args} within {timeout} s; stderr: {self.stderr}") from None

    def recv(self, timeout: float = 10.0) -> Any:
        line = self.recv_raw(timeout)
        if line is None:
            raise EOFError(f"{self.args} closed its stdout; stderr: {self.stderr}")
        return json.loads(line)

    def request(self, request_id: Any, method: str, params: dict[str, Any] | None = None,
                timeout: float = 10.0) -> Any:
        """Send a request and return the answer with its id, collecting anything else in `self.other`."""
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
        if params is not None:
            body["params"] = params
        self.send(body)
        deadline = time.monotonic() + timeout
        while True:
            message = self.recv(max(0.01, deadline - time.monotonic()))
            if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
                return message
            self.other.append(message)

    def initialize(self, version: str = "2025-11-25", capabilities: dict[str, Any] | None = None) -> Any:
        answer = self.request(0, "initialize", {"protocolVersion": version, "capabilities": capabilities or {},
                                                "clientInfo": {"name": "wire-test", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True
