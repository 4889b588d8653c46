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
# The shared-limit tests start a real Redis (tests/test_shared_limits.py): Debian's redis-server package,
# installed non-interactively when absent (as root, or through passwordless sudo).
if ! command -v redis-server >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q --no-install-recommends redis-server </dev/null >/dev/null \
    || { $SUDO apt-get update -q </dev/null >/dev/null && \
         $SUDO apt-get install -y -q --no-install-recommends redis-server </dev/null >/dev/null; } \
    || echo "warning: could not install redis-server; the Redis tests will be skipped" >&2
  # The package's service is not wanted: each test starts its own server on a free loopback port.
  ($SUDO service redis-server stop || true) >/dev/null 2>&1
fi
.venv/bin/ruff check mcp_guard tests examples
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
