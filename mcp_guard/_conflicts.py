"""Two unrelated PyPI projects (bonanza-mcp-guard, mcp-guardrails) also install a top-level package
named `mcp_guard` and a `mcp-guard` command. Installed into the same environment as this project, the
files of one overwrite the other's. Telling the user beats a baffling traceback.

Reading importlib.metadata costs ~60 ms at every start; listing one directory costs well under one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

FOREIGN = {"bonanza_mcp_guard": "bonanza-mcp-guard", "mcp_guardrails": "mcp-guardrails"}
_DIST_INFO = re.compile(r"^(bonanza_mcp_guard|mcp_guardrails)-([^-]+)\.dist-info$", re.IGNORECASE)


def foreign_distributions() -> list[str]:
    """`name version` of each conflicting distribution installed beside this package, or in this
    interpreter's site-packages (which is elsewhere when mcp-guard is installed in editable mode)."""
    import sysconfig

    places = {Path(__file__).resolve().parent.parent}
    for key in ("purelib", "platlib"):
        try:
            places.add(Path(sysconfig.get_paths()[key]))
        except (KeyError, OSError):
            pass
    found = set()
    for site in places:
        try:
            entries = os.listdir(site)
        except OSError:
            continue
        for entry in entries:
            match = _DIST_INFO.match(entry)
            if match:
                found.add(f"{FOREIGN[match.group(1).lower()]} {match.group(2)}")
    return sorted(found)


def explain(found: list[str]) -> str:
    names = " and ".join(found)
    return (
        f"{names} {'is' if len(found) == 1 else 'are'} installed in the same Python environment as "
        f"mcp-guard (the MCP policy proxy). {'It' if len(found) == 1 else 'Each'} is an unrelated project "
        "that also installs a package named `mcp_guard` and a `mcp-guard` command, so their files "
        "overwrite each other and either command may run the wrong code. Uninstall "
        f"{'it' if len(found) == 1 else 'them'} (pip uninstall {' '.join(f.split()[0] for f in found)}) "
        "and reinstall mcp-guard, or keep each in its own virtual environment."
    )
