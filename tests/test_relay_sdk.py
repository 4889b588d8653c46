"""The foundation: an SDK client through `mcp-guard run -- python examples/llm_gateway_server.py` sees the
same server it would see directly, in both protocol eras (mode="legacy": initialize handshake; mode="auto":
the stateless 2026-07-28 protocol), with and without a policy."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from wireclient import guard_run

ROOT = Path(__file__).resolve().parent.parent
GATEWAY = [sys.executable, str(ROOT / "examples" / "llm_gateway_server.py")]
TIMEOUT = 30

warnings.filterwarnings("ignore", category=DeprecationWarning)

ALLOW_ALL = {"version": "1", "default": "allow",
             "rules": {"llm_*": {"action": "allow"}, "llm_spend": {"action": "allow", "reason": "fine"}}}
EXPECTED_TOOLS = {"llm_request", "llm_job_start", "llm_job_status", "llm_job_list", "llm_job_cancel",
                  "llm_job_result", "llm_admin_stats", "llm_spend", "llm_ask_user", "llm_summarize_with_client",
                  "llm_long_task"}
EXPECTED_VERSION = {"legacy": "2025-11-25", "auto": "2026-07-28"}


class Recorder:
    """Client callbacks that answer elicitation and sampling, and remember what arrived."""

    def __init__(self) -> None:
        self.elicitations: list[Any] = []
        self.samplings: list[Any] = []
        self.logs: list[Any] = []
        self.progress: list[tuple[float, float | None, str | None]] = []

    async def elicit(self, context: Any, params: Any) -> types.ElicitResult:
        self.elicitations.append(params)
        return types.ElicitResult(action="accept", content={"answer": "blue"})

    async def sample(self, context: Any, params: Any) -> types.CreateMessageResult:
        self.samplings.append(params)
        return types.CreateMessageResult(role="assistant", model="client-llm",
                                         content=types.TextContent(type="text", text="it is short"))

    async def log(self, params: Any) -> None:
        self.logs.append(params)

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))


def server_params(command: list[str]) -> StdioServerParameters:
    return StdioServerParameters(command=command[0], args=command[1:])


def guarded(tmp_path: Path, policy: dict[str, Any] | None) -> list[str]:
    command: list[str] = []
    if policy is not None:
        path = tmp_path / "allow-all.json"
        path.write_text(json.dumps(policy))
        command += ["--policy", str(path)]
    return guard_run(*command, "--", *GATEWAY)


def client(command: list[str], mode: str, recorder: Recorder) -> Client:
    return Client(server_params(command), mode=mode, elicitation_callback=recorder.elicit,  # type: ignore[arg-type]
                  sampling_callback=recorder.sample, logging_callback=recorder.log, log_level="debug",
                  read_timeout_seconds=TIMEOUT)


def text_of(result: types.CallToolResult) -> str:
    assert not result.is_error, result
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def list_tools(command: list[str], mode: str) -> list[dict[str, Any]]:
    async with client(command, mode, Recorder()) as c:
        listing = await c.list_tools()
        return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listing.tools]


def run(fn: Any, *args: Any) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(TIMEOUT):
            return await fn(*args)

    return anyio.run(bounded)


MODES = ["legacy", "auto"]
POLICIES = [pytest.param(None, id="no-policy"), pytest.param(ALLOW_ALL, id="allow-all")]


@pytest.mark.parametrize("mode", MODES)
def test_direct_example_server_works(mode: str) -> None:
    """The example itself (no mcp-guard), so a failure below is the relay's and not the example's."""
    tools = run(list_tools, GATEWAY, mode)
    assert {t["name"] for t in tools} == EXPECTED_TOOLS
    for tool in tools:
        assert tool.get("title"), tool
        ann = tool["annotations"]
        assert set(ann) >= {"title", "readOnlyHint", "destructiveHint", "idempotentHint", "openWorldHint"}, tool
    by_name = {t["name"]: t for t in tools}
    assert by_name["llm_job_cancel"]["annotations"]["destructiveHint"] is True
    assert by_name["llm_job_cancel"]["annotations"]["idempotentHint"] is True
    assert by_name["llm_job_cancel"]["annotations"]["readOnlyHint"] is False
    assert by_name["llm_request"]["annotations"]["openWorldHint"] is True
    for name in ("llm_job_status", "llm_job_list", "llm_admin_stats"):
        assert by_name[name]["annotations"]["readOnlyHint"] is True
    assert by_name["llm_spend"]["inputSchema"]["properties"]["amount"]["type"] == "number"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_tools_list_through_guard_equals_direct(mode: str, policy: Any, tmp_path: Path) -> None:
    direct = run(list_tools, GATEWAY, mode)
    through = run(list_tools, guarded(tmp_path, policy), mode)
    assert through == direct


async def session(command: list[str], mode: str, recorder: Recorder) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with client(command, mode, recorder) as c:
        out["version"] = c.protocol_version
        out["request"] = text_of(await c.call_tool("llm_request", {"prompt": "héllo ✓", "model": "m1"}))
        started = (await c.call_tool("llm_job_start", {"prompt": "p", "model": "m2"})).structured_content
        job = started["jobId"]
        out["status"] = (await c.call_tool("llm_job_status", {"jobId": job})).structured_content
        out["list"] = (await c.call_tool("llm_job_list", {})).structured_content
        out["result"] = (await c.call_tool("llm_job_result", {"jobId": job})).structured_content
        out["cancel"] = (await c.call_tool("llm_job_cancel", {"jobId": job})).structured_content
        out["cancel_again"] = (await c.call_tool("llm_job_cancel", {"jobId": job})).structured_content
        out["spend"] = (await c.call_tool("llm_spend", {"amount": 2.5})).structured_content
        out["stats"] = (await c.call_tool("llm_admin_stats", {})).structured_content
        missing = await c.call_tool("llm_job_status", {"jobId": "nope"})
        out["missing_is_error"] = missing.is_error
        out["ask"] = text_of(await c.call_tool("llm_ask_user", {"question": "Favourite colour?"}))
        out["summary"] = text_of(await c.call_tool("llm_summarize_with_client", {"text": "a long text"}))
        out["long"] = text_of(await c.call_tool("llm_long_task", {"steps": 3, "delay": 0.01},
                                                progress_callback=recorder.on_progress))
    return out


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("mode", MODES)
def test_sdk_session_through_guard(mode: str, policy: Any, tmp_path: Path) -> None:
    recorder = Recorder()
    out = run(session, guarded(tmp_path, policy), mode, recorder)
    assert out["version"] == EXPECTED_VERSION[mode]
    assert out["request"] == "[m1] echo: héllo ✓"
    assert out["status"] == {"jobId": "job-1", "status": "completed"}
    assert out["list"] == {"jobs": [{"jobId": "job-1", "status": "completed"}]}
    assert out["result"]["output"] == "[m2] echo: p"
    assert out["cancel"] == out["cancel_again"] == {"jobId": "job-1", "status": "cancelled"}
    assert out["spend"] == {"spent": 2.5, "total": 2.5}
    assert out["stats"]["jobs_cancelled"] == 1 and out["stats"]["requests"] == 1
    assert out["missing_is_error"] is True
    # elicitation: answered by the client's callback (a server->client request in the handshake era,
    # an InputRequiredResult + retried tools/call in the stateless era)
    assert out["ask"] == "user said: blue"
    assert len(recorder.elicitations) == 1 and recorder.elicitations[0].message == "Favourite colour?"
    # sampling
    assert out["summary"] == "summary (client-llm): it is short"
    assert len(recorder.samplings) == 1
    assert recorder.samplings[0].messages[0].content.text == "Summarise: a long text"
    # notifications: progress and logging arrive
    assert out["long"] == "done after 3 steps"
    assert recorder.progress == [(1.0, 3.0, "step 1"), (2.0, 3.0, "step 2"), (3.0, 3.0, "step 3")]
    assert [(m.level, m.data) for m in recorder.logs] == [("info", f"step {i} of 3") for i in (1, 2, 3)]


@pytest.mark.parametrize("mode", MODES)
def test_sdk_session_same_as_direct(mode: str, tmp_path: Path) -> None:
    direct_rec, guard_rec = Recorder(), Recorder()
    direct = run(session, GATEWAY, mode, direct_rec)
    through = run(session, guarded(tmp_path, None), mode, guard_rec)
    assert through == direct
    assert guard_rec.progress == direct_rec.progress
    assert [m.model_dump() for m in guard_rec.logs] == [m.model_dump() for m in direct_rec.logs]
    assert [p.model_dump() for p in guard_rec.elicitations] == [p.model_dump() for p in direct_rec.elicitations]
    assert [p.model_dump() for p in guard_rec.samplings] == [p.model_dump() for p in direct_rec.samplings]
