"""A stdio MCP server that replays a recorded `tools/list` result: by default exactly
<repo>/../shared/fixtures/llm-cli-gateway-3.1.0-rc.8-tools-list.json (llm-cli-gateway 3.1.0-rc.8,
64 tools), sent as one compact line of about 190 KB, as the real server does.

    python tests/servers/replay_server.py [FIXTURE.json]

It speaks newline-delimited JSON-RPC directly (no SDK), so what it sends is exactly the fixture:
- initialize        -> protocolVersion echoed (if known), capabilities {"tools": {"listChanged": false}}
- tools/list        -> {"result": <the fixture>} (one page)
- tools/call        -> for a listed tool: {"content":[{"type":"text","text":"replayed NAME ARGS"}]};
                       otherwise error -32602 "Unknown tool: NAME"
- ping              -> {}
- other requests    -> error -32601; notifications are ignored. Exits on stdin EOF.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURE = (Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
           / "llm-cli-gateway-3.1.0-rc.8-tools-list.json")
VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")


def main() -> int:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE
    listing = json.loads(path.read_text(encoding="utf-8"))
    listing_json = json.dumps(listing, separators=(",", ":"), ensure_ascii=False)
    names = {tool["name"] for tool in listing["tools"]}
    out = sys.stdout.buffer

    def send(text: str) -> None:
        out.write(text.encode("utf-8") + b"\n")
        out.flush()

    def answer(msg_id: object, result: object) -> None:
        send(json.dumps({"jsonrpc": "2.0", "id": msg_id, "result": result}, separators=(",", ":")))

    def error(msg_id: object, code: int, message: str) -> None:
        send(json.dumps({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}},
                        separators=(",", ":")))

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            error(None, -32700, "Parse error")
            continue
        if not isinstance(msg, dict) or "id" not in msg or "method" not in msg:
            continue
        msg_id, method, params = msg["id"], msg["method"], msg.get("params") or {}
        if method == "initialize":
            asked = params.get("protocolVersion")
            answer(msg_id, {"protocolVersion": asked if asked in VERSIONS else VERSIONS[-1],
                            "capabilities": {"tools": {"listChanged": False}},
                            "serverInfo": {"name": "llm-cli-gateway-replay", "version": "3.1.0-rc.8"}})
        elif method == "tools/list":
            send('{"jsonrpc":"2.0","id":' + json.dumps(msg_id) + ',"result":' + listing_json + "}")
        elif method == "tools/call":
            name = params.get("name")
            if name in names:
                text = f"replayed {name} {json.dumps(params.get('arguments') or {}, sort_keys=True)}"
                answer(msg_id, {"content": [{"type": "text", "text": text}]})
            else:
                error(msg_id, -32602, f"Unknown tool: {name}")
        elif method == "ping":
            answer(msg_id, {})
        else:
            error(msg_id, -32601, f"Method not found: {method}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
