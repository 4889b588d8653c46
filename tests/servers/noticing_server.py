"""A raw (no SDK) stdio JSON-RPC MCP server for tests/test_noticing.py: answers shaped to test what
mcp-guard must notice (a listing over 1 MiB, a listing it cannot read, a stray debug line, a stateless
tool that asks for input first).

Every line received is appended, exact bytes, to RECORD_FILE (when set) before it is handled.

Environment:
  RECORD_FILE  append every received line here
  TOOLS        comma-separated tool names (default "allowed,secret_tool,ask")
  LISTING      how tools/list is answered:
                 normal      (default) {"tools": [...]}
                 big         the same, each tool's description padded so the line is over BIG_BYTES
                             (default 2 MiB): above mcp-guard's large-answer shortcut
                 not_a_list  {"tools": "allowed,secret_tool"}
                 no_name     a tool without a "name"
                 name_number a tool whose "name" is a number
                 not_object  "result" is a list of tools, not an object

tools/call:
  noisy        first writes the line `progress: {"id": ID}` (a stray debug print that is not JSON-RPC and
               holds the request's id, but not at its head), then answers normally
  ask          (the stateless era's multi-round call) without params.inputResponses: answers
               {"resultType": "input_required", "inputRequests": {...}, "requestState": "state-N"};
               with them: a complete result that echoes the requestState it was given
  anything else an echo of the name and arguments
"""

from __future__ import annotations

import itertools
import json
import os
import sys

from lineserver import serve

TOOLS = [name for name in (os.environ.get("TOOLS") or "allowed,secret_tool,ask").split(",") if name]
LISTING = os.environ.get("LISTING") or "normal"
BIG_BYTES = int(os.environ.get("BIG_BYTES") or 2 * 1024 * 1024)
RECORD = os.environ.get("RECORD_FILE")

record_file = open(RECORD, "ab", buffering=0) if RECORD else None  # noqa: SIM115
out = sys.stdout.buffer
states = itertools.count(1)


def write(data: bytes) -> None:
    out.write(data + b"\n")
    out.flush()


def send(obj: dict) -> None:
    write(json.dumps(obj).encode())


def listing() -> object:
    tools: list[dict] = [{"name": name, "description": f"the {name} tool", "inputSchema": {"type": "object"}}
                         for name in TOOLS]
    if LISTING == "big":
        pad = "x" * (BIG_BYTES // max(1, len(tools)) + 1)
        for tool in tools:
            tool["description"] += " " + pad
    elif LISTING == "not_a_list":
        return {"tools": ",".join(TOOLS)}
    elif LISTING == "no_name":
        tools.append({"description": "a tool without a name", "inputSchema": {"type": "object"}})
    elif LISTING == "name_number":
        tools.append({"name": 7, "description": "a tool named by a number", "inputSchema": {"type": "object"}})
    elif LISTING == "not_object":
        return tools
    return {"tools": tools}


def handle(msg: dict) -> None:
    method = msg.get("method")
    if not isinstance(method, str) or "id" not in msg:
        return
    rid = msg["id"]
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "protocolVersion": params.get("protocolVersion", "2025-11-25"), "capabilities": {"tools": {}},
            "serverInfo": {"name": "noticing-server", "version": "1"}}})
    elif method == "server/discover":
        send({"jsonrpc": "2.0", "id": rid, "result": {
            "supportedVersions": ["2026-07-28"], "capabilities": {"tools": {}}, "resultType": "complete"}})
    elif method == "ping":
        send({"jsonrpc": "2.0", "id": rid, "result": {}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": rid, "result": listing()})
    elif method == "tools/call":
        name = params.get("name")
        arguments = params.get("arguments")
        if name == "noisy":
            write(b'progress: {"id": ' + json.dumps(rid).encode() + b"}")
        if name == "ask" and not params.get("inputResponses"):
            send({"jsonrpc": "2.0", "id": rid, "result": {
                "resultType": "input_required",
                "inputRequests": {"confirm": {"method": "elicitation/create",
                                              "params": {"message": "Go on?", "requestedSchema": {
                                                  "type": "object", "properties": {}}}}},
                "requestState": f"state-{next(states)}"}})
            return
        text = json.dumps({"tool": name, "arguments": arguments, "requestState": params.get("requestState")})
        send({"jsonrpc": "2.0", "id": rid, "result": {"content": [{"type": "text", "text": text}],
                                                      "isError": False, "resultType": "complete"}})
    else:
        send({"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": f"Method not found: {method}"}})


def main() -> int:
    serve(handle, record_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
