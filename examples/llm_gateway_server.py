"""A small, offline stand-in for llm-cli-gateway, written with the MCP Python SDK's `MCPServer`.

It mirrors the shape of the real gateway (tool names, titles and annotations follow
`llm-cli-gateway 3.1.0-rc.8`'s `tools/list`) so mcp-guard can be tried and tested against
something realistic without any model, network or API key:

    python examples/llm_gateway_server.py                       # speaks MCP on stdin/stdout
    mcp-guard run --policy P.json -- python examples/llm_gateway_server.py

Tools (every one has a title and the four annotation hints):

    llm_request(prompt, model)       -> canned text ("[model] echo: prompt")       openWorld
    llm_job_start(prompt, model)     -> {"jobId": ...}; the job "runs" in memory
    llm_job_status(jobId)            -> status of one job                          readOnly
    llm_job_list()                   -> every job                                  readOnly
    llm_job_cancel(jobId)            -> cancels a job            destructive, idempotent, not readOnly
    llm_job_result(jobId)            -> the job's output                           readOnly
    llm_admin_stats()                -> counters                                   readOnly
    llm_spend(amount: number)        -> running total (a "budget" target for policies)
    llm_ask_user(question)           -> asks the human through the client (elicitation)
    llm_summarize_with_client(text)  -> asks the client's LLM to summarise (sampling)
    llm_long_task(steps, delay)      -> sends notifications/progress and notifications/message while it works

Server -> client requests in the two protocol eras
--------------------------------------------------
* Handshake era (`initialize`, protocol <= 2025-11-25; the SDK `Client(mode="legacy")`, and
  mode="auto" against a server that does not answer `server/discover`): `llm_ask_user` calls
  `ctx.elicit(...)` and `llm_summarize_with_client` calls `ctx.session.create_message(...)`.
  Each sends a JSON-RPC *request* (`elicitation/create` / `sampling/createMessage`) from the
  server to the client in the middle of the `tools/call`, and waits for the client's answer.
  A relay therefore has to carry requests in both directions at the same time.

* Stateless era (protocol 2026-07-28; `Client(mode="auto")` against this SDK, which answers
  `server/discover`): there is no back-channel for a request inside a call; `ctx.elicit`
  would raise `NoBackChannelError`. Instead the tool *returns* an `InputRequiredResult`
  (`{"resultType": "input_required", "inputRequests": {"answer": {"method":
  "elicitation/create", ...}}, "requestState": "..."}`) as the answer to `tools/call`. The SDK
  client runs its elicitation/sampling callback locally and sends a *new* `tools/call`
  (new JSON-RPC id) carrying `inputResponses` and the echoed `requestState`; the tool runs
  again and this time finds the answer in `ctx.input_responses`. Both tools here do this
  by hand so that both wire shapes can be seen. (The SDK's `Resolve(...)`/`Elicit`/`Sample`
  markers do the same choice automatically.)

  Logging is per request in the stateless era: a server only sends `notifications/message`
  for a request whose `_meta` carries `io.modelcontextprotocol/logLevel` (SDK:
  `Client(log_level="info")`). Progress needs a `progressToken` in both eras (SDK:
  `call_tool(..., progress_callback=...)`).

The job table is in memory and per process; nothing here touches the network or disk.
"""

from __future__ import annotations

import asyncio
import itertools
import warnings
from typing import Any

import mcp_types as types
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import InputRequiredResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

warnings.filterwarnings("ignore", category=DeprecationWarning)
try:  # logging and sampling are deprecated in 2026-07-28 (SEP-2577); keep stderr quiet
    from mcp.shared.exceptions import MCPDeprecationWarning

    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
except ImportError:  # pragma: no cover
    pass

STATELESS_VERSION = "2026-07-28"

server = MCPServer(
    "llm-gateway-example",
    instructions="An offline stand-in for llm-cli-gateway: canned answers, in-memory async jobs.",
)

_job_ids = itertools.count(1)
JOBS: dict[str, dict[str, Any]] = {}
STATS: dict[str, float] = {"requests": 0, "jobs_started": 0, "jobs_cancelled": 0, "spent": 0.0}


def _ann(*, read_only: bool, destructive: bool, idempotent: bool, open_world: bool,
         title: str) -> types.ToolAnnotations:
    return types.ToolAnnotations(
        title=title,
        read_only_hint=read_only,
        destructive_hint=destructive,
        idempotent_hint=idempotent,
        open_world_hint=open_world,
    )


def _stateless(ctx: Context) -> bool:
    version = ctx.protocol_version
    return version is not None and is_version_at_least(version, STATELESS_VERSION)


def _answer(prompt: str, model: str) -> str:
    return f"[{model}] echo: {prompt}"


@server.tool(
    name="llm_request",
    title="LLM request",
    description="Send one prompt to a model and return its text (canned, offline).",
    annotations=_ann(title="LLM request", read_only=False, destructive=True, idempotent=False, open_world=True),
)
def llm_request(prompt: str, model: str = "example-model") -> str:
    STATS["requests"] += 1
    return _answer(prompt, model)


@server.tool(
    name="llm_job_start",
    title="Start async job",
    description="Start an asynchronous LLM job; returns its jobId.",
    annotations=_ann(title="Start async job", read_only=False, destructive=True, idempotent=False, open_world=True),
)
def llm_job_start(prompt: str, model: str = "example-model") -> dict[str, Any]:
    job_id = f"job-{next(_job_ids)}"
    JOBS[job_id] = {"jobId": job_id, "model": model, "status": "completed", "output": _answer(prompt, model)}
    STATS["jobs_started"] += 1
    return {"jobId": job_id, "status": "running"}


def _job(job_id: str) -> dict[str, Any]:
    if job_id not in JOBS:
        raise ValueError(f"no such job: {job_id}")
    return JOBS[job_id]


@server.tool(
    name="llm_job_status",
    title="Async job status",
    description="The status of one async job.",
    annotations=_ann(title="Async job status", read_only=True, destructive=False, idempotent=True, open_world=False),
)
def llm_job_status(jobId: str) -> dict[str, Any]:  # noqa: N803 - the gateway's argument name
    job = _job(jobId)
    return {"jobId": jobId, "status": job["status"]}


@server.tool(
    name="llm_job_list",
    title="List async jobs",
    description="Every async job this process knows about.",
    annotations=_ann(title="List async jobs", read_only=True, destructive=False, idempotent=True, open_world=False),
)
def llm_job_list() -> dict[str, Any]:
    return {"jobs": [{"jobId": j["jobId"], "status": j["status"]} for j in JOBS.values()]}


@server.tool(
    name="llm_job_cancel",
    title="Cancel async job",
    description="Cancel an async job (cancelling twice is harmless).",
    annotations=_ann(title="Cancel async job", read_only=False, destructive=True, idempotent=True, open_world=False),
)
def llm_job_cancel(jobId: str) -> dict[str, Any]:  # noqa: N803
    job = _job(jobId)
    if job["status"] != "cancelled":
        job["status"] = "cancelled"
        STATS["jobs_cancelled"] += 1
    return {"jobId": jobId, "status": "cancelled"}


@server.tool(
    name="llm_job_result",
    title="Async job result",
    description="The output of a finished async job.",
    annotations=_ann(title="Async job result", read_only=True, destructive=False, idempotent=True, open_world=False),
)
def llm_job_result(jobId: str) -> dict[str, Any]:  # noqa: N803
    job = _job(jobId)
    return {"jobId": jobId, "status": job["status"], "output": job["output"] if job["status"] == "completed" else None}


@server.tool(
    name="llm_admin_stats",
    title="Gateway statistics",
    description="Counters of this gateway process.",
    annotations=_ann(title="Gateway statistics", read_only=True, destructive=False, idempotent=True, open_world=False),
)
def llm_admin_stats() -> dict[str, Any]:
    return {**STATS, "jobs": len(JOBS)}


@server.tool(
    name="llm_spend",
    title="Spend credits",
    description="Record spending `amount` credits; returns the running total.",
    annotations=_ann(title="Spend credits", read_only=False, destructive=True, idempotent=False, open_world=True),
)
def llm_spend(amount: float) -> dict[str, Any]:
    STATS["spent"] += amount
    return {"spent": amount, "total": STATS["spent"]}


class UserAnswer(BaseModel):
    answer: str = Field(description="Your answer")


def _answer_schema() -> types.ElicitRequestedSchema:
    return {"type": "object", "properties": {"answer": {"type": "string", "description": "Your answer"}},
            "required": ["answer"]}  # type: ignore[return-value]


@server.tool(
    name="llm_ask_user",
    title="Ask the user",
    description="Ask the human a question through the client (elicitation) and return the answer.",
    annotations=_ann(title="Ask the user", read_only=True, destructive=False, idempotent=False, open_world=False),
)
async def llm_ask_user(question: str, ctx: Context) -> str | InputRequiredResult:
    if _stateless(ctx):
        responses = ctx.input_responses or {}
        reply = responses.get("answer")
        if reply is None:
            request = types.ElicitRequest(params=types.ElicitRequestFormParams(message=question,
                                                                              requested_schema=_answer_schema()))
            return InputRequiredResult(input_requests={"answer": request}, request_state="ask-user:1")
        if not isinstance(reply, types.ElicitResult):
            raise ValueError("the client did not answer the elicitation")
        if reply.action != "accept" or not reply.content:
            return f"user {reply.action}d"
        return f"user said: {reply.content.get('answer')}"
    result = await ctx.elicit(question, UserAnswer)
    if result.action == "accept":
        return f"user said: {result.data.answer}"
    return f"user {result.action}d"


@server.tool(
    name="llm_summarize_with_client",
    title="Summarise with the client's model",
    description="Ask the client's own LLM (sampling) for a one-line summary of `text`.",
    annotations=_ann(title="Summarise with the client's model", read_only=True, destructive=False,
                     idempotent=False, open_world=True),
)
async def llm_summarize_with_client(text: str, ctx: Context) -> str | InputRequiredResult:
    messages = [types.SamplingMessage(role="user", content=types.TextContent(type="text", text=f"Summarise: {text}"))]
    if _stateless(ctx):
        reply = (ctx.input_responses or {}).get("summary")
        if reply is None:
            request = types.CreateMessageRequest(params=types.CreateMessageRequestParams(messages=messages,
                                                                                        max_tokens=100))
            return InputRequiredResult(input_requests={"summary": request}, request_state="summarize:1")
        if not isinstance(reply, types.CreateMessageResult):
            raise ValueError("the client did not answer the sampling request")
        result = reply
    else:
        result = await ctx.session.create_message(messages, max_tokens=100, related_request_id=ctx.request_id)
    content = result.content
    text_out = content.text if isinstance(content, types.TextContent) else str(content)
    return f"summary ({result.model}): {text_out}"


@server.tool(
    name="llm_long_task",
    title="Long task with progress",
    description="Work for `steps` steps of `delay` seconds, sending progress notifications and log messages.",
    annotations=_ann(title="Long task with progress", read_only=True, destructive=False, idempotent=True,
                     open_world=False),
)
async def llm_long_task(ctx: Context, steps: int = 3, delay: float = 0.05) -> str:
    for step in range(1, steps + 1):
        await ctx.info(f"step {step} of {steps}")
        await ctx.report_progress(step, steps, f"step {step}")
        await asyncio.sleep(delay)
    return f"done after {steps} steps"


if __name__ == "__main__":
    server.run("stdio")
