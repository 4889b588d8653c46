#!/usr/bin/env bash
# Everything the test suite needs, from a bare Python 3.10+, then the suite itself:
# a virtualenv with mcp-guard and its test tools, the real MCP servers and clients the
# compatibility tests run (npm and PyPI, into .compat/), ruff, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
if [ "${MCP_GUARD_SKIP_COMPAT:-0}" != "1" ]; then
  bash tests/compat/install.sh "${MCP_GUARD_COMPAT_DIR:-$PWD/.compat}"
fi
.venv/bin/ruff check mcp_guard tests examples
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
