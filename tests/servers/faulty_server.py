#!/usr/bin/env python3
"""A raw stdio JSON-RPC "MCP server" that misbehaves on purpose, for tests/test_faults.py.

The fault is chosen by the environment variable FAULT:

  none           behave (answer initialize, tools/list, tools/call with an echo)
  exit_early     exit with status EXIT_CODE (default 3) before answering initialize
  close_stdout   answer initialize, then close stdout on the first tools/call but keep running (and reading)
  hang           answer initialize and tools/list, never answer tools/call
  stderr_flood   write STDERR_MB (default 8) megabytes to stderr around every answer, answering normally
  garbage        write garbage lines (not JSON, invalid UTF-8, JSON that is no message, an answer with an id
                 nobody asked for) before and after every answer
  exit_mid_call  answer initialize, then exit with EXIT_CODE (default 0) on receiving a tools/call
  ignore_term    ignore SIGTERM and stdin EOF: only SIGKILL ends it (answers normally otherwise)
  grandchild     start a grandchild process (sleep) that inherits nothing but the process group, write its pid
                 to PID_FILE, answer normally; with GRANDCHILD_STDOUT=1 the grandchild keeps our stdout open
  grandchild_exit  like grandchild with the grandchild holding our stdout, then exit mid-call
  gather         hold every tools/call answer until GATHER (default 1000) calls have arrived, then answer
                 them all at once in reverse order (proves that many calls were in flight together)

Every mode writes its own pid to PID_FILE (a second line holds the grandchild's pid when there is one).
In every mode, a tools/call whose arguments hold {"bad": KIND} is answered with a bad answer of that kind:
nan (NaN in the result), utf8 (invalid UTF-8), deep (nested 100,000 levels), big (BIG_BYTES, default 2 MiB, of
text), twice (the answer sent two times), string_id (the id as a string), unknown_id (an answer to an id
never sent, and no answer to this one), batch (the answer wrapped in a JSON array).

RECORD_FILE, when set, receives every line read from stdin (appended, flushed at once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

FAULT = os.environ.get("FAULT", "none")
RECORD = os.environ.get("RECORD_FILE")
PID_FILE = os.environ.get("PID_FILE")

out = sys.stdout.buffer
err = sys.stderr.buffer

TOOLS = [
    {"name": "echo", "description": "echo the arguments", "inputSchema": {"type": "object"}},
    {"name": "secret", "description": "a tool a policy may hide", "inputSchema": {"type": "object"}},
]


def record(line: bytes) -> None:
    if RECORD:
        with open(RECORD, "ab") as f:
            f.write(line if line.endswith(b"\n") else line + b"\n")


def send(body: dict) -> None:
    out.write(json.dumps(body).encode() + b"\n")
    out.flush()


def answer(rid, result: dict) -> None:
    send({"jsonrpc": "2.0", "id": rid, "result": result})


def flood() -> None:
    megabytes = int(os.environ.get("STDERR_MB", "8"))
    chunk = (b"E" * 1023 + b"\n") * 1024
    for _ in range(megabytes):
        err.write(chunk)
    err.flush()


def garbage(rid=None) -> None:
    out.write(b"this is not json\n")
    out.write(b"\xff\xfe invalid utf-8 \xc3\x28\n")
    out.write(b"[1, 2, 3]\n")
    out.write(b'"a string"\n')
    out.write(b'{"jsonrpc": "2.0", "id": "nobody-asked", "result": {}}\n')
    out.write(b"{\n")
    out.write(b"\n")
    out.flush()


def bad_answer(rid, kind: str) -> None:
    head = b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode() + b',"result":'
    if kind == "nan":
        out.write(head + b'{"content":[],"value":NaN}}\n')
    elif kind == "utf8":
        out.write(head + b'{"content":[{"type":"text","text":"\xff\xfe"}]}}\n')
    elif kind == "deep":
        out.write(head + b"[" * 100_000 + b"]" * 100_000 + b"}\n")
    elif kind == "big":
        size = int(os.environ.get("BIG_BYTES", str(2 * 1024 * 1024)))
        out.write(head + b'{"content":[{"type":"text","text":"' + b"x" * size + b'"}]}}\n')
    elif kind == "twice":
        line = head + b'{"content":[{"type":"text","text":"first"}]}}\n'
        out.write(line + line.replace(b"first", b"second"))
    elif kind == "string_id":
        out.write(b'{"jsonrpc":"2.0","id":' + json.dumps(str(rid)).encode() + b',"result":{"content":[]}}\n')
    elif kind == "unknown_id":
        out.write(b'{"jsonrpc":"2.0","id":"never-sent","result":{"content":[]}}\n')
    elif kind == "batch":
        out.write(b"[" + head + b'{"content":[]}}]\n')
    out.flush()


def write_pids(extra: int | None = None) -> None:
    if PID_FILE:
        with open(PID_FILE, "w") as f:
            f.write(f"{os.getpid()}\n")
            if extra is not None:
                f.write(f"{extra}\n")


def start_grandchild(keep_stdout: bool) -> int:
    child = subprocess.Popen(
        ["sleep", "300"],
        stdin=subprocess.DEVNULL,
        stdout=None if keep_stdout else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return child.pid


def main() -> None:
    grandchild = None
    if FAULT == "ignore_term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if FAULT in ("grandchild", "grandchild_exit"):
        keep = FAULT == "grandchild_exit" or os.environ.get("GRANDCHILD_STDOUT") == "1"
        grandchild = start_grandchild(keep)
    write_pids(grandchild)
    if FAULT == "exit_early":
        sys.exit(int(os.environ.get("EXIT_CODE", "3")))

    stdin = sys.stdin.buffer
    stdout_closed = False
    held: list = []
    gather = int(os.environ.get("GATHER", "1000"))
    while True:
        line = stdin.readline()
        if not line:
            break
        record(line)
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if not isinstance(msg, dict):
            continue
        rid, method = msg.get("id"), msg.get("method")
        if rid is None or method is None:
            continue  # notifications and answers
        if stdout_closed:
            continue
        if FAULT == "stderr_flood":
            flood()
        if FAULT == "garbage":
            garbage()
        if method == "initialize":
            params = msg.get("params") or {}
            answer(rid, {"protocolVersion": params.get("protocolVersion", "2025-06-18"),
                         "capabilities": {"tools": {}}, "serverInfo": {"name": "faulty", "version": "1"}})
        elif method == "tools/list":
            answer(rid, {"tools": TOOLS})
        elif method == "tools/call":
            if FAULT == "hang":
                continue
            if FAULT == "close_stdout":
                os.close(1)
                stdout_closed = True
                continue
            if FAULT == "gather":
                held.append(msg)
                if len(held) >= gather:
                    for m in reversed(held):
                        text = json.dumps(m["params"].get("arguments"))
                        answer(m["id"], {"content": [{"type": "text", "text": text}],
                                         "isError": False})
                    held.clear()
                continue
            if FAULT in ("exit_mid_call", "grandchild_exit"):
                os._exit(int(os.environ.get("EXIT_CODE", "0")))
            params = msg.get("params") or {}
            bad = (params.get("arguments") or {}).get("bad")
            if bad is not None:
                bad_answer(rid, bad)
                continue
            delay = (params.get("arguments") or {}).get("delay")
            if isinstance(delay, (int, float)):
                time.sleep(delay)
            answer(rid, {"content": [{"type": "text", "text": json.dumps(params.get("arguments"))}],
                         "isError": False})
        elif method == "ping":
            answer(rid, {})
        else:
            send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"no method {method}"}})
        if FAULT == "stderr_flood":
            flood()
        if FAULT == "garbage":
            garbage()
    # stdin closed
    if FAULT in ("ignore_term", "close_stdout"):
        # Keep running after EOF: ignore_term waits for SIGKILL; close_stdout lingers until stopped.
        while True:
            time.sleep(1)


if __name__ == "__main__":
    main()
