"""See mcp-guard apply a policy to a real stdio MCP server, with the SDK's own client.

    python examples/quickstart.py

It lists the example server's tools directly and through `mcp-guard run --policy
examples/policies/quickstart.json`, then makes a few calls through the guard: a hidden tool, a denied
one, a rate-limited one, one with a bad argument, and one that needs a person's approval (this client
answers mcp-guard's question, as a person would in a client that shows it: docs/approval.md). It ends by
running the same expectations as a policy test (examples/quickstart.tests.json), as CI would:
`mcp-guard test`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

HERE = Path(__file__).resolve().parent
SERVER = [sys.executable, str(HERE / "llm_gateway_server.py")]
POLICY = HERE / "policies" / "quickstart.json"
TESTS = HERE / "quickstart.tests.json"


def guard_command() -> list[str]:
    script = Path(sys.executable).parent / "mcp-guard"
    found = str(script) if script.exists() else shutil.which("mcp-guard")
    return [found] if found else [sys.executable, "-m", "mcp_guard"]


def params(command: list[str]) -> StdioServerParameters:
    return StdioServerParameters(command=command[0], args=command[1:])


def show(result: object) -> str:
    content = getattr(result, "content", [])
    text = " ".join(" ".join(getattr(part, "text", "").split()) for part in content)
    return ("REFUSED/ERROR: " if getattr(result, "is_error", False) else "ok: ") + text[:110]


async def approve(context: object, params: types.ElicitRequestFormParams) -> types.ElicitResult:
    """The client's elicitation callback: where a real client shows mcp-guard's question to a person."""
    print("    mcp-guard asks the person at the client:")
    print("\n".join("      | " + line for line in params.message.splitlines()))
    print("    the person clicks Accept")
    return types.ElicitResult(action="accept")


async def main() -> None:
    async with Client(params(SERVER), mode="legacy") as direct:
        names = [tool.name for tool in (await direct.list_tools()).tools]
    print(f"Directly, the server offers {len(names)} tools:\n  {', '.join(names)}\n")

    audit = Path(tempfile.mkdtemp()) / "audit.jsonl"
    guarded = guard_command() + ["run", "--policy", str(POLICY), "--audit", str(audit), "--", *SERVER]
    print("Through: " + " ".join(Path(a).name if "/" in a else a for a in guarded) + "\n")
    async with Client(params(guarded), mode="legacy", elicitation_callback=approve) as client:
        seen = [tool.name for tool in (await client.list_tools()).tools]
        print(f"Through mcp-guard the agent sees {len(seen)} tools; hidden: {sorted(set(names) - set(seen))}\n")
        calls = [
            ("llm_job_cancel", {"jobId": "job-1"}),
            ("llm_admin_stats", {}),
            ("llm_job_status", {"jobId": "../etc/passwd"}),
            ("llm_request", {"prompt": "hello", "model": "demo"}),
            ("llm_request", {"prompt": "hello again", "model": "demo"}),
            ("llm_request", {"prompt": "one too many", "model": "demo"}),
            ("llm_spend", {"amount": 5}),
        ]
        for name, arguments in calls:
            try:
                outcome = show(await client.call_tool(name, arguments))
            except Exception as exc:  # a JSON-RPC error (some servers answer a tool they lack so)
                outcome = f"ERROR: {exc}"
            print(f"  call {name}({arguments}):\n    {outcome}")

    print(f"\nThe audit trail ({audit}):")
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        if record["event"] == "call":
            print(f"  {record['tool']:<16} {record['action']:<6} rule={record['rule']}")
        elif record["event"] == "approval":
            print(f"  {record['tool']:<16} {record['decision']} ({record['channel']})")
        elif record["event"] == "list":
            print(f"  tools/list       hid {record['hidden']}")
        elif record["event"] == "end":
            print(f"  session end      {record['how']}: {record['calls']} call(s), {record['decisions']}")


def policy_tests() -> int:
    """The policy's expectations, checked the way CI checks them (docs/testing-policies.md)."""
    test = guard_command() + ["test", str(TESTS), "--", *SERVER]
    print("\nThe same, as a policy test: mcp-guard test examples/quickstart.tests.json")
    sys.stdout.flush()
    return subprocess.run(test, check=False).returncode


if __name__ == "__main__":
    anyio.run(main)
    sys.exit(policy_tests())
