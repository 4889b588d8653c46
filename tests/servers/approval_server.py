"""An SDK MCPServer behind which approval is tested: every call that runs appends one JSON line (tool,
arguments) to $CALLS_LOG, so a test sees exactly what reached the server."""

from __future__ import annotations

import json
import os
import time

from mcp.server import MCPServer

server = MCPServer("approval-test-server")


def _ran(tool: str, arguments: dict[str, object]) -> None:
    log = os.environ.get("CALLS_LOG")
    if log:
        with open(log, "a") as out:
            out.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")


@server.tool()
def delete_file(path: str) -> str:
    """Delete a file (not really)."""
    _ran("delete_file", {"path": path})
    return f"deleted {path}"


@server.tool()
def read_file(path: str) -> str:
    """Read a file (not really)."""
    _ran("read_file", {"path": path})
    return f"contents of {path}"


@server.tool()
def pay(amount: float) -> str:
    """Pay an amount (not really)."""
    _ran("pay", {"amount": amount})
    time.sleep(0)
    return f"paid {amount}"


if __name__ == "__main__":
    server.run("stdio")
