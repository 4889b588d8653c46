"""A scripted raw JSON-RPC upstream for the relay wire tests (tests/test_relay_wire.py).

It reads newline-framed lines from stdin, remembers every raw line it received, and answers:

  initialize            -> a minimal handshake answer echoing the protocol version
  tools/list            -> {"tools": []}
  ping                  -> {}
  raw/emit              -> writes params.lines_b64 (each base64-decoded, + "\n") to stdout verbatim,
                           nothing else (include the answer to this request among them if you want one)
  raw/received          -> {"lines_b64": [...]} every raw line received before this request
  raw/measure           -> {"len": N, "sha256": HEX} of this request's own raw line (without the newline)
  raw/big               -> a line `{"jsonrpc":"2.0","id":ID,"result":{"data":"xxx..."}}` with params.size x's
                           (ID written as json.dumps of the request id)
  raw/sleep             -> in a thread: params.notify notifications `notifications/message` every
                           params.seconds/(notify+1) s, then after params.seconds the answer {"slept": S}
  raw/crash             -> os._exit(params.code) without answering
  raw/pids              -> starts a grandchild (`sleep 300`), answers {"pid": ..., "grandchild": ...}
  anything else         -> error -32601

Environment: RELAY_IGNORE_EOF=1 keeps running after stdin closes; RELAY_IGNORE_TERM=1 ignores SIGTERM
and SIGINT (so only SIGKILL ends it).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time

OUT = sys.stdout.buffer
LOCK = threading.Lock()
RECEIVED: list[bytes] = []


def write(data: bytes) -> None:
    with LOCK:
        OUT.write(data)
        OUT.flush()


def answer(request_id, result=None, error=None) -> None:
    body = {"jsonrpc": "2.0", "id": request_id}
    if error is not None:
        body["error"] = error
    else:
        body["result"] = result if result is not None else {}
    write(json.dumps(body, ensure_ascii=False).encode() + b"\n")


def sleeper(request_id, seconds: float, notify: int) -> None:
    step = seconds / (notify + 1)
    for i in range(notify):
        time.sleep(step)
        write(json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                          "params": {"level": "info", "data": f"tick {i}"}}).encode() + b"\n")
    time.sleep(max(0.0, seconds - step * notify))
    answer(request_id, {"slept": seconds})


def handle(line: bytes) -> None:
    try:
        msg = json.loads(line)
    except ValueError:
        return
    if not isinstance(msg, dict) or "method" not in msg or "id" not in msg:
        return
    rid, method, params = msg["id"], msg["method"], msg.get("params") or {}
    if method == "initialize":
        answer(rid, {"protocolVersion": params.get("protocolVersion", "2025-11-25"), "capabilities": {"tools": {}},
                     "serverInfo": {"name": "relay-raw", "version": "1"}})
    elif method == "tools/list":
        answer(rid, {"tools": []})
    elif method == "ping":
        answer(rid, {})
    elif method == "raw/emit":
        write(b"".join(base64.b64decode(item) + b"\n" for item in params["lines_b64"]))
    elif method == "raw/received":
        answer(rid, {"lines_b64": [base64.b64encode(item).decode() for item in RECEIVED[:-1]]})
    elif method == "raw/measure":
        answer(rid, {"len": len(line), "sha256": hashlib.sha256(line).hexdigest()})
    elif method == "raw/big":
        head = b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode() + b',"result":{"data":"'
        write(head + b"x" * int(params["size"]) + b'"}}\n')
    elif method == "raw/sleep":
        threading.Thread(target=sleeper, args=(rid, float(params["seconds"]), int(params.get("notify", 0))),
                         daemon=True).start()
    elif method == "raw/crash":
        os._exit(int(params.get("code", 3)))
    elif method == "raw/pids":
        grandchild = subprocess.Popen(["sleep", "300"])
        answer(rid, {"pid": os.getpid(), "grandchild": grandchild.pid})
    else:
        answer(rid, error={"code": -32601, "message": f"Method not found: {method}"})


def main() -> None:
    if os.environ.get("RELAY_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            break
        line = line.rstrip(b"\n")
        RECEIVED.append(line)
        handle(line)
    if os.environ.get("RELAY_IGNORE_EOF") == "1":
        while True:
            time.sleep(3600)


if __name__ == "__main__":
    main()
