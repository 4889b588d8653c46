"""A raw stdio JSON-RPC server whose tools/list answers are written by the test, byte for byte.

Environment:
  LISTINGS     JSON list of strings: the i-th tools/list is answered with the i-th string (the last one
               repeats), where the text "__ID__" is replaced by the request's id (as JSON)
  RECORD_FILE  append every line received here (optional)
  SENT_FILE    append every line written to stdout here (optional)

initialize and ping are answered normally; tools/call answers {"content": [{"type": "text", "text":
"ran NAME"}], "isError": false}; anything else -32601.
"""

from __future__ import annotations

import json
import os
import sys

LISTINGS = json.loads(os.environ["LISTINGS"]) if os.environ.get("LISTINGS") else [
    '{"jsonrpc":"2.0","id":__ID__,"result":{"tools":[]}}']
record = open(os.environ["RECORD_FILE"], "ab", buffering=0) if os.environ.get("RECORD_FILE") else None  # noqa: SIM115
sent = open(os.environ["SENT_FILE"], "ab", buffering=0) if os.environ.get("SENT_FILE") else None  # noqa: SIM115
out = sys.stdout.buffer
listed = 0


def write(line: bytes) -> None:
    if sent is not None:
        sent.write(line + b"\n")
    out.write(line + b"\n")
    out.flush()


for line in sys.stdin.buffer:
    if record is not None:
        record.write(line)
    message = json.loads(line)
    if not isinstance(message, dict) or "method" not in message or "id" not in message:
        continue
    request_id = message["id"]
    method = message["method"]
    params = message.get("params") if isinstance(message.get("params"), dict) else {}
    if method == "tools/list":
        template = LISTINGS[min(listed, len(LISTINGS) - 1)]
        listed += 1
        write(template.replace("__ID__", json.dumps(request_id)).encode())
        continue
    if method == "initialize":
        result: dict = {"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                        "capabilities": {"tools": {}}, "serverInfo": {"name": "listing-server", "version": "1"}}
    elif method == "ping":
        result = {}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": f"ran {params.get('name')}"}], "isError": False}
    else:
        write(json.dumps({"jsonrpc": "2.0", "id": request_id,
                          "error": {"code": -32601, "message": f"Method not found: {method}"}}).encode())
        continue
    write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode())
