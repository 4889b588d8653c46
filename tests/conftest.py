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


# --- the platform matrix ------------------------------------------------------------------------------
# Tests marked `platform_matrix` run twice: natively, and with MCP_GUARD_FORCE_FALLBACK=1, which makes
# mcp-guard on Linux take the paths of macOS and Windows (mcp_guard/oslayer.py, docs/platforms.md). Every
# mcp-guard they start inherits the variable from this process's environment.
PLATFORM_MODES = ("native", "fallback")
FORCE_FALLBACK_ENV = "MCP_GUARD_FORCE_FALLBACK"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # A test of a marked module can opt out with @pytest.mark.platform_matrix(twice=False) (a load test
    # that exercises no platform path, for the time it would add).
    marker = metafunc.definition.get_closest_marker("platform_matrix")
    if marker is not None and marker.kwargs.get("twice", True):
        metafunc.parametrize("platform_mode", PLATFORM_MODES, indirect=True)


@pytest.fixture(autouse=True)
def platform_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """"native" or "fallback" for `platform_matrix` tests (the environment set accordingly); "native"
    for the others, which leave the environment as it is."""
    mode = str(getattr(request, "param", "native"))
    if mode == "fallback":
        monkeypatch.setenv(FORCE_FALLBACK_ENV, "1")
    elif hasattr(request, "param"):
        monkeypatch.delenv(FORCE_FALLBACK_ENV, raising=False)
    return mode


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
