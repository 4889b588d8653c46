"""A minimal, fast raw upstream: answers initialize, tools/list (one tool, `spend`) and every tools/call with
a small successful result, so that a test can push a hundred thousand allowed calls through mcp-guard."""

from __future__ import annotations

import json
import sys

out = sys.stdout.buffer
for line in sys.stdin.buffer:
    message = json.loads(line)
    method, request_id = message.get("method"), message.get("id")
    if request_id is None:
        continue
    if method == "initialize":
        result: dict = {"protocolVersion": message["params"]["protocolVersion"], "capabilities": {"tools": {}},
                        "serverInfo": {"name": "fast", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "spend", "inputSchema": {"type": "object"}}]}
    elif method == "tools/call":
        result = {"content": [{"type": "text", "text": "ok"}], "isError": False}
    else:
        result = {}
    out.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result}).encode() + b"\n")
    out.flush()
