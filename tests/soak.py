#!/usr/bin/env python3
"""Soak test: push N messages through `mcp-guard run` (pipelined) and watch its memory.

    python tests/soak.py [--messages 1000000] [--sample-every 50000] [--window 256] [--no-policy]

Talks to tests/servers/echo_fast.py (or --server CMD) through the installed mcp-guard, with a policy
that hides some tools and has a rule for the called tool (so every call goes through the engine). One
message in 100 is a tools/list (its answer is filtered and re-encoded); the rest are tools/call echo.
At most --window requests are in flight at once. Every --sample-every answers, the mcp-guard process's
VmRSS is read from /proc/PID/status; the curve, VmHWM, the rate and the error count are printed at the
end. pytest runs a short version by default (tests/test_faults.py::test_soak_short, 100,000 messages) and
this full one with -m slow (test_soak_million).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_SERVER = [sys.executable, str(HERE / "servers" / "echo_fast.py")]
POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["tool_000*"],
    "rules": {"echo": {"action": "allow", "reason": "soak"}, "tool_01*": {"action": "deny", "reason": "soak"}},
}


def guard_command() -> list[str]:
    sys.path.insert(0, str(HERE))
    from wireclient import guard_command as find

    return find()


def guard_run(*args: str) -> list[str]:
    sys.path.insert(0, str(HERE))
    from wireclient import guard_run as build

    return build(*args)


def status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def run(messages: int = 1_000_000, sample_every: int = 50_000, window: int = 256, policy: bool = True,
        server: list[str] | None = None, quiet: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        args: list[str] = []
        if policy:
            path = Path(tmp) / "policy.json"
            path.write_text(json.dumps(POLICY))
            args += ["--policy", str(path)]
        args += ["--", *(server or DEFAULT_SERVER)]
        proc = subprocess.Popen(guard_run(*args), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                bufsize=0)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stderr: list[bytes] = []
        threading.Thread(target=lambda: stderr.append(proc.stderr.read()), daemon=True).start()  # type: ignore[union-attr]
        out_fd = proc.stdout.fileno()
        in_fd = proc.stdin.fileno()

        def write_all(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(in_fd, view):]

        init = {"jsonrpc": "2.0", "id": "init", "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "soak", "version": "1"}}}
        write_all(json.dumps(init).encode() + b"\n")
        first = b""
        while not first.endswith(b"\n"):
            chunk = os.read(out_fd, 65536)
            if not chunk:
                raise RuntimeError(f"mcp-guard exited: {b''.join(stderr)!r}")
            first += chunk
        write_all(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')

        slots = threading.Semaphore(window)
        call = (b'{"jsonrpc":"2.0","id":%d,"method":"tools/call",'
                b'"params":{"name":"echo","arguments":{"text":"soak %d"}}}\n')
        listing = b'{"jsonrpc":"2.0","id":%d,"method":"tools/list"}\n'

        def writer() -> None:
            batch: list[bytes] = []
            for i in range(1, messages + 1):
                if not slots.acquire(blocking=False):
                    if batch:
                        write_all(b"".join(batch))
                        batch = []
                    slots.acquire()
                batch.append(listing % i if i % 100 == 0 else call % (i, i))
                if len(batch) >= 64:
                    write_all(b"".join(batch))
                    batch = []
            if batch:
                write_all(b"".join(batch))

        baseline = status_kib(proc.pid, "VmRSS")
        samples: list[tuple[int, int]] = [(0, baseline)]
        started = time.monotonic()
        threading.Thread(target=writer, daemon=True).start()
        answered = errors = 0
        next_sample = sample_every
        pending = b""
        while answered < messages:
            chunk = os.read(out_fd, 1 << 20)
            if not chunk:
                break
            data = pending + chunk
            cut = data.rfind(b"\n") + 1
            complete, pending = data[:cut], data[cut:]
            n = complete.count(b"\n")
            errors += complete.count(b'"error"') + complete.count(b'"isError":true')
            answered += n
            slots.release(n)
            while answered >= next_sample:
                samples.append((next_sample, status_kib(proc.pid, "VmRSS")))
                if not quiet:
                    print(f"{next_sample:>9} messages  VmRSS {samples[-1][1] / 1024:7.1f} MiB", flush=True)
                next_sample += sample_every
        elapsed = time.monotonic() - started
        hwm = status_kib(proc.pid, "VmHWM")
        proc.stdin.close()
        code = proc.wait(60)
        result = {"messages": messages, "answered": answered, "errors": errors, "seconds": round(elapsed, 2),
                  "rate": round(answered / elapsed), "baseline_kib": baseline, "samples": samples,
                  "vmhwm_kib": hwm, "exit": code, "window": window}
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--sample-every", type=int, default=50_000)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--no-policy", action="store_true")
    parser.add_argument("--server", nargs=argparse.REMAINDER, help="server command (default: echo_fast.py)")
    options = parser.parse_args()
    result = run(options.messages, options.sample_every, options.window, not options.no_policy, options.server)
    print()
    print("messages  VmRSS (MiB)")
    for count, kib in result["samples"]:
        print(f"{count:>9}  {kib / 1024:6.1f}")
    print(f"VmHWM {result['vmhwm_kib'] / 1024:.1f} MiB; {result['answered']} answered, {result['errors']} errors, "
          f"{result['seconds']} s ({result['rate']} msg/s, window {result['window']}); exit {result['exit']}")
    print(json.dumps(result))
    sys.exit(0 if result["answered"] == result["messages"] and result["errors"] == 0 and result["exit"] == 0 else 1)


if __name__ == "__main__":
    main()
