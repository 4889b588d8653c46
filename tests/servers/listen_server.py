"""An MCP stdio server written with the SDK's MCPServer, which serves 2026-07-28 `subscriptions/listen`
streams: for the test that an open listen stream does not make mcp-guard's shutdown wait."""

from __future__ import annotations

from mcp.server import MCPServer

server = MCPServer("listen-test")


@server.tool()
def echo(text: str) -> str:
    """Say text back."""
    return text


if __name__ == "__main__":
    server.run("stdio")
