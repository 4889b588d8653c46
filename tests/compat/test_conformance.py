"""The MCP conformance suite's server scenarios, run against tests/compat/conformance_server.py through
the stdio->Streamable-HTTP bridge `supergateway`, directly and with `mcp-guard run` in between.

Required: every scenario's verdict is the same through mcp-guard as directly, and every scenario passes
directly (the conformance fixture plus the bridge implement all of them).

The bridge is supergateway in stateful Streamable HTTP mode: one child process per HTTP session, raw
JSON-RPC lines both ways, server->client requests and notifications included (sampling, elicitation,
logging, progress); it sends a message from the child on the POST stream of the request in flight.
supergateway 4.0.0 itself neither binds to loopback nor checks Host/Origin, which the
`dns-rebinding-protection` scenario requires of a local server; tests/compat/loopback_only.mjs,
preloaded into its Node process, adds exactly that (HTTP headers only; JSON-RPC is untouched), so the
scenario is a check of the bridge's HTTP front, identical in both columns: mcp-guard never sees HTTP.

supergateway spawns `--stdio` through a shell, so the guarded command is passed as one quoted string.
`--sessionTimeout` reaps each scenario's session (and its server process) a few seconds after the
scenario's client went away; supergateway kills the remaining children's process groups on SIGTERM.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .compat import HERE, PYTHON, Tools, free_port, guard_bin, versions, wait_port

SERVER = HERE / "conformance_server.py"

# Scenarios of @modelcontextprotocol/conformance 0.1.16 `server` (the default suite): all 30 must run.
MIN_SCENARIOS = 30

_SUMMARY = re.compile(r"^[\u2713\u2717] (\S+): (\d+) passed, (\d+) failed", re.M)


def _stop_gateway(proc: subprocess.Popen[Any]) -> None:
    # supergateway answers SIGTERM by SIGTERM-ing each child's process group and waiting up to 5 s
    # for it (SIGKILL after that) before it exits: give it that time, or its children are orphaned.
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_suite(tools: Tools, server_argv: list[str], outdir: Path) -> dict[str, str]:
    port = free_port()
    with open(outdir.with_suffix(".gateway.log"), "w") as log:
        gateway = subprocess.Popen(
            [*tools.supergateway, "--stdio", shlex.join(server_argv), "--outputTransport", "streamableHttp",
             "--stateful", "--sessionTimeout", "5000", "--port", str(port), "--logLevel", "info"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_port(port)
            proc = subprocess.run([*tools.conformance, "server", "--url", f"http://127.0.0.1:{port}/mcp",
                                   "-o", str(outdir)], capture_output=True, text=True, timeout=300)
        finally:
            _stop_gateway(gateway)
    outdir.with_suffix(".suite.log").write_text(proc.stdout + proc.stderr)
    verdicts = {m[1]: ("pass" if m[3] == "0" else f"FAIL ({m[2]}/{int(m[2]) + int(m[3])})")
                for m in _SUMMARY.finditer(proc.stdout)}
    assert verdicts, f"no summary from the conformance suite:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return verdicts


def format_table(direct: dict[str, str], guarded: dict[str, str]) -> str:
    rows = [("scenario", "direct", "through mcp-guard"), ("---", "---", "---")]
    rows += [(name, direct.get(name, "-"), guarded.get(name, "-")) for name in direct]
    rows += [(name, "-", guarded[name]) for name in guarded if name not in direct]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def test_conformance_verdicts_identical(tools: Tools, tmp_path: Path) -> None:
    direct_argv = [PYTHON, str(SERVER)]
    guarded_argv = [guard_bin(), "run", "--no-policy", "--", PYTHON, str(SERVER)]
    # The two runs are independent (own gateway, own port, own server processes): run them side by side.
    with ThreadPoolExecutor(2) as pool:
        direct_run = pool.submit(run_suite, tools, direct_argv, tmp_path / "direct")
        guarded_run = pool.submit(run_suite, tools, guarded_argv, tmp_path / "guarded")
        direct, guarded = direct_run.result(), guarded_run.result()
    table = format_table(direct, guarded)
    print("\n" + versions() + "\n" + table)
    if os.environ.get("MCP_GUARD_CONFORMANCE_TABLE"):
        Path(os.environ["MCP_GUARD_CONFORMANCE_TABLE"]).write_text(table + "\n")
    assert guarded == direct, table
    assert len(direct) >= MIN_SCENARIOS, table
    assert all(verdict == "pass" for verdict in direct.values()), table
