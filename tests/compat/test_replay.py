"""The recorded llm-cli-gateway 3.1.0-rc.8 listing (64 tools, one ~190 KB line) through mcp-guard with
examples/policies/llm-cli-gateway.json: what the policy hides is gone, everything else is intact, and
`mcp-guard check` accepts the policy against the replay server. Needs no installed tools."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from .compat import ALLOW_ALL, PYTHON, ROOT, guard_bin

REPLAY = ROOT / "tests" / "servers" / "replay_server.py"
FIXTURE = ROOT.parent / "shared" / "fixtures" / "llm-cli-gateway-3.1.0-rc.8-tools-list.json"
POLICY = ROOT / "examples" / "policies" / "llm-cli-gateway.json"


@pytest.fixture(scope="module")
def fixture() -> dict[str, Any]:
    assert FIXTURE.exists(), f"{FIXTURE} is missing"
    return json.loads(FIXTURE.read_text())


@pytest.fixture(scope="module")
def policy() -> dict[str, Any]:
    assert POLICY.exists(), f"{POLICY} is missing"
    return json.loads(POLICY.read_text())


def _list(proc: Any) -> tuple[bytes, Any]:
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})
    raw = proc.recv_raw(timeout=20)
    assert raw is not None
    return raw, json.loads(raw)


def test_replay_server_serves_the_fixture_exactly(spawn_guard: Any, fixture: dict[str, Any]) -> None:
    """Direct and through an allow-all mcp-guard: the same ~190 KB line, byte for byte."""
    expected = json.dumps(fixture, separators=(",", ":"), ensure_ascii=False).encode()
    proc = subprocess.Popen([PYTHON, str(REPLAY)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = proc.communicate(b'{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":'
                              b'"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}\n'
                              b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}\n', timeout=20)
    direct = out.splitlines()[1]
    assert direct == b'{"jsonrpc":"2.0","id":1,"result":' + expected + b"}"
    assert len(direct) > 180_000

    raw, answer = _list(spawn_guard([PYTHON, str(REPLAY)], policy=ALLOW_ALL))
    assert raw.rstrip(b"\r\n") == direct
    assert len(answer["result"]["tools"]) == 64


def test_policy_hides_what_it_should_and_keeps_the_rest(spawn_guard: Any, fixture: dict[str, Any],
                                                       policy: dict[str, Any]) -> None:
    names = [t["name"] for t in fixture["tools"]]
    hidden = set(policy.get("hide", [])) | {k for k, r in policy.get("rules", {}).items()
                                              if r.get("action") == "hide" and k in names}
    assert hidden and hidden <= set(names), hidden
    raw, answer = _list(spawn_guard([PYTHON, str(REPLAY)], policy=str(POLICY)))
    shown = answer["result"]["tools"]
    assert [t["name"] for t in shown] == [n for n in names if n not in hidden]
    assert shown == [t for t in fixture["tools"] if t["name"] not in hidden]  # every other field intact
    assert set(answer["result"]) == set(fixture)
    assert len(raw) > 150_000


def test_policy_refuses_llm_job_cancel_and_passes_others(spawn_guard: Any, policy: dict[str, Any]) -> None:
    proc = spawn_guard([PYTHON, str(REPLAY)], policy=str(POLICY))
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    cancel = proc.request(2, "tools/call", {"name": "llm_job_cancel", "arguments": {"jobId": "j1"}})
    result = cancel["result"]
    assert result["isError"] is True
    decision = result["_meta"]["mcp-guard/decision"]
    assert decision["action"] == policy["rules"]["llm_job_cancel"]["action"]
    assert decision["rule"] == "llm_job_cancel"
    assert result["content"][0]["text"].startswith("mcp-guard refused the call to llm_job_cancel: ")
    for i, name in enumerate(sorted(policy["hide"])):
        err = proc.request(10 + i, "tools/call", {"name": name, "arguments": {}})
        assert err["error"] == {"code": -32602, "message": f"Unknown tool: {name}"}
    ok = proc.request(30, "tools/call", {"name": "llm_job_status", "arguments": {"jobId": "j1"}})
    assert ok["result"]["content"][0]["text"] == 'replayed llm_job_status {"jobId": "j1"}'


def test_check_accepts_the_policy_against_the_replay_server(fixture: dict[str, Any],
                                                           policy: dict[str, Any]) -> None:
    proc = subprocess.run([guard_bin(), "check", str(POLICY), "--", PYTHON, str(REPLAY)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    hidden = len(policy["hide"])
    assert f"The server offers 64 tool(s); the agent will see {64 - hidden}:" in proc.stdout
    assert proc.stdout.rstrip().endswith("OK") or f"{POLICY.name}: OK" in proc.stdout or ": OK" in proc.stdout
    lines = proc.stdout.splitlines()
    start = lines.index(f"hidden ({hidden}):")
    assert sorted(line.split()[0] for line in lines[start + 1:start + 1 + hidden]) == sorted(policy["hide"])
