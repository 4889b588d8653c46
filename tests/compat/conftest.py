"""Fixtures for the compatibility tests: real MCP servers and clients installed by tests/compat/install.sh.

The install dir comes from MCP_GUARD_COMPAT_DIR (default <repo>/.compat). When something is missing the
tests FAIL, unless MCP_GUARD_SKIP_COMPAT=1 is set, in which case they are skipped.
"""

from __future__ import annotations

import pytest

from . import compat


@pytest.fixture(scope="session")
def tools() -> compat.Tools:
    return compat.require_tools()


@pytest.fixture(scope="session")
def llm_cli_gateway() -> compat.LlmCliGateway:
    return compat.require_llm_cli_gateway()
