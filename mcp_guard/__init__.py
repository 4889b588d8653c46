"""mcp-guard: a policy proxy in front of an MCP stdio server."""

__version__ = "0.1.0"
# Two unrelated PyPI projects also install a top-level `mcp_guard` package; this marker lets the CLI
# tell whether the files it runs from are ours (see _conflicts.py).
__product__ = "mcp-guard policy proxy"
