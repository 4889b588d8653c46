"""A tiny MCP stdio server for `mcp-guard check FILE -- python policy_tiny_server.py`: four tools."""

from __future__ import annotations

from mcp.server import MCPServer

server = MCPServer("policy-tiny")


@server.tool()
def echo(text: str) -> str:
    """Say text back."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def read_note(name: str) -> str:
    """Read a note."""
    return f"note {name}"


@server.tool()
def delete_everything() -> str:
    """Delete everything (not really)."""
    return "deleted"


if __name__ == "__main__":
    server.run("stdio")
