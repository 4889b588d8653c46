"""A raw stdio JSON-RPC server for the relay's cancel and long-lived-stream tests.

  subscriptions/listen  -> notifications/subscriptions/acknowledged (carrying the listen id), never answered:
                           the 2026-07-28 stream stays open until the session ends
  stream/end            -> ends the listen stream params.id the way the spec says a server does on stdio
                           (notifications/cancelled naming it), then answers {}
  slow/never            -> never answered (until the session ends: nothing is written for it at EOF either)
  tools/list            -> {"tools": [...]} with TOOLS (comma-separated, default "echo")
  tools/call            -> an echo of the arguments; a call to the tool "never" is never answered
  ping                  -> {}
  anything else         -> error -32601

Notifications are not answered. RECORD_FILE, when set, receives every line read (appended, flushed).
At EOF on stdin the server exits 0 at once.
"""

from __future__ import annotations

import json
import os
import sys

from lineserver import serve

OUT = sys.stdout.fileno()
TOOLS = [name for name in (os.environ.get("TOOLS") or "echo").split(",") if name]
SUBSCRIPTION_META = "io.modelcontextprotocol/subscriptionId"
_record = open(os.environ["RECORD_FILE"], "ab", buffering=0) if os.environ.get("RECORD_FILE") else None  # noqa: SIM115


def write(body: dict) -> None:
    data = json.dumps(body).encode() + b"\n"
    view = memoryview(data)
    while view:
        view = view[os.write(OUT, view):]


def answer(request_id: object, result: dict) -> None:
    write({"jsonrpc": "2.0", "id": request_id, "result": result})


def handle(msg: dict) -> None:
    method, request_id = msg.get("method"), msg.get("id")
    if not isinstance(method, str) or "id" not in msg:
        return
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    if method == "subscriptions/listen":
        write({"jsonrpc": "2.0", "method": "notifications/subscriptions/acknowledged",
               "params": {"_meta": {SUBSCRIPTION_META: request_id}, "notifications": params.get("notifications", {})}})
    elif method == "stream/end":
        write({"jsonrpc": "2.0", "method": "notifications/cancelled",
               "params": {"requestId": params.get("id"), "reason": "the server ended the stream"}})
        answer(request_id, {})
    elif method == "slow/never":
        pass
    elif method == "tools/list":
        answer(request_id, {"tools": [{"name": name, "inputSchema": {"type": "object"}} for name in TOOLS]})
    elif method == "tools/call" and params.get("name") == "never":
        pass
    elif method == "tools/call":
        answer(request_id, {"content": [{"type": "text", "text": json.dumps(params.get("arguments"))}],
                            "isError": False})
    elif method == "ping":
        answer(request_id, {})
    else:
        write({"jsonrpc": "2.0", "id": request_id, "error": {"code": -32601, "message": f"no method {method}"}})


def main() -> None:
    serve(handle, _record)
    os._exit(0)


if __name__ == "__main__":
    main()
