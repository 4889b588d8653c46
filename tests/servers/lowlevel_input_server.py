"""A server written with the MCP SDK's lowlevel `Server` whose tool `spend` needs input first: the first
round answers `input_required` with a `requestState` that is NOT sealed to the arguments (a counter),
and a retry carrying that state and `inputResponses` runs the tool with whatever arguments the retry
carries. The SDK's MCPServer seals its state; the lowlevel Server (and other SDKs) need not.

Each completed call appends its `amount` to the file named by $SPENT_LOG, so a test can see what ran."""

from __future__ import annotations

import itertools
import os
import warnings

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

warnings.filterwarnings("ignore")
states = itertools.count(1)
SPEND_SCHEMA = {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}


async def list_tools(ctx: object, params: object) -> types.ListToolsResult:
    return types.ListToolsResult(tools=[types.Tool(name="spend", description="Spend an amount, once confirmed.",
                                                   input_schema=SPEND_SCHEMA)])


async def call_tool(ctx: object,
                    params: types.CallToolRequestParams) -> types.CallToolResult | types.InputRequiredResult:
    amount = (params.arguments or {}).get("amount")
    if not params.input_responses:
        return types.InputRequiredResult(
            input_requests={"confirm": {"method": "elicitation/create", "params": {
                "mode": "form", "message": f"Spend {amount}?",
                "requestedSchema": {"type": "object", "properties": {"ok": {"type": "boolean"}}}}}},
            request_state=f"state-{next(states)}")
    log = os.environ.get("SPENT_LOG")
    if log:
        with open(log, "a") as out:
            out.write(f"{amount}\n")
    return types.CallToolResult(content=[types.TextContent(type="text", text=f"spent {amount}")])


server = Server("lowlevel-input", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
