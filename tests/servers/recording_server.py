"""A raw (no SDK) stdio JSON-RPC MCP server that records every line it receives.

Used by the end-to-end policing tests: the recording shows what mcp-guard let through.

Environment:
  RECORD_FILE        append every received line (exact bytes, one per line) to this file
  TOOLS              comma-separated tool names (default "allowed,llm_job_cancel,other_tool")
  PAGE_SIZE          tools per tools/list page; 0 or unset = one page
  STRING_ID_METHODS  comma-separated methods whose answers carry the request id turned into a string
  CHANGE_ON_CALL     a tool name: calling it replaces the tool list with TOOLS_AFTER and sends
                     notifications/tools/list_changed before the answer
  TOOLS_AFTER        comma-separated tool names for CHANGE_ON_CALL
  ERROR_TOOLS        comma-separated tools answered with a JSON-RPC error (ERROR_CODE, default -32602:
                     the server refused the call, so mcp-guard gives its quota back)
  ISERROR_TOOLS      comma-separated tools answered with a result with isError true
  SLOW_TOOLS         comma-separated tools that sleep arguments.ms milliseconds (max 2000) first

Stateless era: when a request carries params._meta["io.modelcontextprotocol/protocolVersion"], results
carry resultType "complete" and list results ttlMs / cacheScope as well. List results always carry
_meta {"recording/page": N}. A call to an unknown tool gets -32602 "Unknown tool: NAME" with
data {"source": "recording_server"} so tests can tell the upstream's answer from mcp-guard's.
"""

from __future__ import annotations

import json
import os
import sys
import time

from lineserver import serve

PV_META = "io.modelcontextprotocol/protocolVersion"


def _names(var: str, default: str = "") -> list[str]:
    value = os.environ.get(var, default)
    return [name for name in value.split(",") if name != ""] if value else []


TOOLS = _names("TOOLS", "allowed,llm_job_cancel,other_tool")
TOOLS_AFTER = _names("TOOLS_AFTER")
PAGE_SIZE = int(os.environ.get("PAGE_SIZE") or 0)
STRING_ID_METHODS = set(_names("STRING_ID_METHODS"))
CHANGE_ON_CALL = os.environ.get("CHANGE_ON_CALL") or None
ERROR_TOOLS = set(_names("ERROR_TOOLS"))
ERROR_CODE = int(os.environ.get("ERROR_CODE", "-32602"))
ISERROR_TOOLS = set(_names("ISERROR_TOOLS"))
SLOW_TOOLS = set(_names("SLOW_TOOLS"))
RECORD = os.environ.get("RECORD_FILE")

record_file = open(RECORD, "ab", buffering=0) if RECORD else None  # noqa: SIM115
out = sys.stdout.buffer


def send(obj: dict) -> None:
    out.write(json.dumps(obj).encode() + b"\n")  # ASCII: lone surrogates stay \u escapes
    out.flush()


def tool_def(name: str) -> dict:
    return {"name": name, "description": f"the {name} tool",
            "inputSchema": {"type": "object", "additionalProperties": True}}


def handle(msg: dict) -> None:
    method = msg.get("method")
    if not isinstance(method, str) or "id" not in msg:
        return  # a notification or a response: recorded, nothing to answer
    request_id = msg["id"]
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    meta = params.get("_meta") if isinstance(params.get("_meta"), dict) else {}
    stateless = PV_META in meta
    answer_id = str(request_id) if method in STRING_ID_METHODS else request_id

    def result(body: dict) -> None:
        if stateless:
            body.setdefault("resultType", "complete")
        send({"jsonrpc": "2.0", "id": answer_id, "result": body})

    def error(code: int, message: str, data=None) -> None:
        err = {"code": code, "message": message}
        if data is not None:
            err["data"] = data
        send({"jsonrpc": "2.0", "id": answer_id, "error": err})

    global TOOLS
    if method == "initialize":
        result({"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "recording-server", "version": "1"}})
    elif method == "server/discover":
        result({"supportedVersions": ["2026-07-28"], "capabilities": {"tools": {"listChanged": True}},
                "ttlMs": 0, "cacheScope": "private"})
    elif method == "ping":
        result({})
    elif method == "tools/list":
        cursor = params.get("cursor")
        start = 0
        if cursor is not None:
            if not (isinstance(cursor, str) and cursor.startswith("page-") and cursor[5:].isdigit()):
                error(-32602, "Invalid cursor")
                return
            start = int(cursor[5:])
        size = PAGE_SIZE if PAGE_SIZE > 0 else max(1, len(TOOLS))
        page = TOOLS[start:start + size]
        body: dict = {"tools": [tool_def(name) for name in page],
                      "_meta": {"recording/page": start // size}}
        if start + size < len(TOOLS):
            body["nextCursor"] = f"page-{start + size}"
        if stateless:
            body["ttlMs"] = 60000
            body["cacheScope"] = "private"
        result(body)
    elif method == "tools/call":
        name = params.get("name")
        arguments = params.get("arguments")
        if name not in TOOLS:
            error(-32602, f"Unknown tool: {name}", {"source": "recording_server"})
            return
        if name in SLOW_TOOLS and isinstance(arguments, dict):
            ms = arguments.get("ms")
            if isinstance(ms, (int, float)) and not isinstance(ms, bool):
                time.sleep(min(max(ms, 0), 2000) / 1000)
        if name == CHANGE_ON_CALL:
            TOOLS = list(TOOLS_AFTER)
            send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        if name in ERROR_TOOLS:
            error(ERROR_CODE, f"{name} failed upstream")
            return
        text = json.dumps({"tool": name, "arguments": arguments})
        result({"content": [{"type": "text", "text": text}], "isError": name in ISERROR_TOOLS})
    else:
        error(-32601, f"Method not found: {method}")


def main() -> int:
    serve(handle, record_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
