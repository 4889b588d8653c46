#!/usr/bin/env python3
"""A fast single-threaded raw stdio MCP server for the soak (tests/soak.py): echoes tools/call arguments,
lists N tools (ECHO_TOOLS, default 50) plus `echo`. The same as the benchmark's upstream
(shared/bench/echo_fast.py), kept in the repository so the soak runs from a bare clone."""
import json
import os
import sys

N = int(os.environ.get("ECHO_TOOLS", "50"))
TOOLS = [{"name": f"tool_{i:04d}", "description": f"Generated tool number {i} that does something useful",
          "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}}} for i in range(N)]
TOOLS.append({"name": "echo", "description": "echo", "inputSchema": {"type": "object"}})
out = sys.stdout.buffer
for line in sys.stdin.buffer:
    m = json.loads(line)
    rid, meth = m.get("id"), m.get("method")
    if rid is None:
        continue
    if meth == "initialize":
        r = {"protocolVersion": m["params"].get("protocolVersion", "2025-06-18"),
             "capabilities": {"tools": {"listChanged": True}}, "serverInfo": {"name": "echo-fast", "version": "1"}}
    elif meth == "tools/list":
        r = {"tools": TOOLS}
    elif meth == "tools/call":
        a = m["params"].get("arguments") or {}
        t = "x" * a["size"] if "size" in a else json.dumps(a)
        r = {"content": [{"type": "text", "text": t}], "isError": False}
    else:
        r = {}
    out.write(json.dumps({"jsonrpc": "2.0", "id": rid, "result": r}).encode() + b"\n")
    out.flush()
