"""Shared test fixtures: where the real `mcp-guard` binary is, and a raw JSON-RPC wire client for it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wireclient import WireProcess, guard_command, guard_run  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SERVERS = Path(__file__).resolve().parent / "servers"
SHARED = ROOT.parent / "shared"


@pytest.fixture
def guard_cmd() -> list[str]:
    """The command that runs the installed mcp-guard (the console script of this interpreter)."""
    return guard_command()


@pytest.fixture
def python() -> str:
    return sys.executable


@pytest.fixture
def spawn_guard(tmp_path):
    """spawn_guard(server_cmd, policy=None, extra=()) -> a WireProcess speaking raw JSON-RPC lines to
    `mcp-guard run [--policy FILE] [extra...] -- server_cmd...` (no policy: `--no-policy`, a plain relay).
    Every process is killed at teardown."""
    started: list[WireProcess] = []

    def spawn(server_cmd: list[str], policy: dict | str | None = None, extra: tuple[str, ...] = (),
              env: dict[str, str] | None = None) -> WireProcess:
        args: list[str] = []
        if policy is not None:
            if isinstance(policy, dict):
                import json

                path = tmp_path / f"policy-{len(started)}.json"
                path.write_text(json.dumps(policy))
                policy = str(path)
            args += ["--policy", policy]
        args += list(extra) + ["--", *server_cmd]
        proc = WireProcess(guard_run(*args), env={**os.environ, **(env or {})})
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.kill()
