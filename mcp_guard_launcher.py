"""The `mcp-guard` command's entry point, outside the `mcp_guard` package on purpose.

Two unrelated PyPI projects (bonanza-mcp-guard, mcp-guardrails) also install a package named
`mcp_guard`. Installed after mcp-guard, their files replace ours, and importing the package would run
their `__init__` (and fail with a baffling traceback, or run their code). This module checks, without
importing the package, that its `__init__` is ours, and says clearly what happened when it is not.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

MARKER = '__product__ = "mcp-guard policy proxy"'


def main() -> None:
    spec = importlib.util.find_spec("mcp_guard")
    origin = Path(spec.origin) if spec is not None and spec.origin else None
    try:
        ours = origin is not None and MARKER in origin.read_text(encoding="utf-8")
    except OSError:
        ours = False
    if not ours:
        where = origin.parent if origin is not None else "nowhere on sys.path"
        sys.stderr.write(
            f"mcp-guard: error: the Python package `mcp_guard` in {where} is not mcp-guard's (the MCP policy "
            "proxy): another project installed a package of the same name over it (bonanza-mcp-guard and "
            "mcp-guardrails both do). Install mcp-guard in its own virtual environment: "
            "python3 -m venv ~/.mcp-guard && ~/.mcp-guard/bin/pip install <mcp-guard> , "
            "then use ~/.mcp-guard/bin/mcp-guard.\n"
        )
        sys.exit(1)
    from mcp_guard.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
