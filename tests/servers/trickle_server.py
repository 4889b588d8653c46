"""A server that answers initialize, then never answers tools/list: it only writes a log notification
every 0.5 s, for ever. It ignores the end of its input and SIGTERM, so only SIGKILL ends it."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time

signal.signal(signal.SIGTERM, signal.SIG_IGN)
lock = threading.Lock()


def write(message: dict) -> None:
    with lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def trickle() -> None:
    count = 0
    while True:
        time.sleep(0.5)
        count += 1
        write({"jsonrpc": "2.0", "method": "notifications/message",
               "params": {"level": "info", "data": f"still working ({count})"}})


threading.Thread(target=trickle, daemon=True).start()
for line in sys.stdin:
    message = json.loads(line)
    if message.get("method") == "initialize":
        write({"jsonrpc": "2.0", "id": message["id"], "result": {
            "protocolVersion": "2025-11-25", "capabilities": {"tools": {}, "logging": {}},
            "serverInfo": {"name": "trickle", "version": "1"}}})
while True:  # input closed: keep trickling
    time.sleep(60)
