"""require_approval asks a human through the client (issue 8), through the binary, with the SDK's own
client and an elicitation callback playing the human: in the handshake era (mode="legacy": mcp-guard
holds the call and sends elicitation/create of its own) and the stateless era (mode="auto": mcp-guard
answers input_required with its elicitation and a signed requestState; the SDK retries)."""

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

SERVERS = Path(__file__).resolve().parent / "servers"
SERVER = [sys.executable, str(SERVERS / "approval_server.py")]
INPUT_SERVER = [sys.executable, str(SERVERS / "lowlevel_input_server.py")]
TIMEOUT = 40
MODES = ["legacy", "auto"]

warnings.filterwarnings("ignore", category=DeprecationWarning)


def policy(remember: str = "none", timeout: float = 60, **extra: Any) -> dict[str, Any]:
    return {"version": "1", "rules": {
        "delete_file": {"action": "require_approval", "reason": "deleting needs a person",
                        "approval": {"timeout": timeout, "remember": remember}},
        "pay": {"action": "require_approval", "rate_limit": {"max": 1, "window": 3600}},
        **extra}}


class Human:
    """The elicitation callback: answers each question as told (accept, decline, cancel, or waits)."""

    def __init__(self, action: str = "accept", content: dict[str, Any] | None = None, delay: float = 0.0) -> None:
        self.action, self.content, self.delay = action, content, delay
        self.asked: list[Any] = []
        self.release: anyio.Event | None = None

    async def __call__(self, context: Any, params: Any) -> types.ElicitResult:
        self.asked.append(params)
        if self.release is not None:
            await self.release.wait()
        if self.delay:
            await anyio.sleep(self.delay)
        return types.ElicitResult(action=self.action, content=self.content)  # type: ignore[arg-type]


class Setup:
    def __init__(self, tmp_path: Path, policy_doc: dict[str, Any], server: list[str] = SERVER) -> None:
        self.calls_log = tmp_path / "calls.jsonl"
        self.audit = tmp_path / "audit.jsonl"
        path = tmp_path / "policy.json"
        path.write_text(json.dumps(policy_doc))
        self.command = guard_run("--policy", str(path), "--audit", str(self.audit), "--", *server)

    def client(self, mode: str, human: Human | None, **kwargs: Any) -> Client:
        import os

        params = StdioServerParameters(command=self.command[0], args=self.command[1:],
                                       env={**os.environ, "CALLS_LOG": str(self.calls_log),
                                            "SPENT_LOG": str(self.calls_log)})
        return Client(params, mode=mode, elicitation_callback=human,  # type: ignore[arg-type]
                      read_timeout_seconds=TIMEOUT, **kwargs)

    def ran(self) -> list[dict[str, Any]]:
        if not self.calls_log.exists():
            return []
        return [json.loads(line) if line.startswith("{") else {"spent": line}
                for line in self.calls_log.read_text().splitlines()]

    def approvals(self) -> list[dict[str, Any]]:
        records = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return [r for r in records if r["event"] == "approval"]


def run(fn: Any, *args: Any) -> Any:
    async def bounded() -> Any:
        with anyio.fail_after(TIMEOUT + 20):
            return await fn(*args)

    return anyio.run(bounded)


def text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def refusal(result: types.CallToolResult) -> str:
    assert result.is_error, result
    return text(result)


async def calls(setup: Setup, mode: str, human: Human | None, *called: tuple[str, dict[str, Any]]) -> list[Any]:
    async with setup.client(mode, human) as client:
        return [await client.call_tool(name, arguments) for name, arguments in called]


@pytest.mark.parametrize("mode", MODES)
def test_accepted_call_runs_and_the_human_saw_what_it_was(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy())
    human = Human("accept")
    [result] = run(calls, setup, mode, human, ("delete_file", {"path": "/tmp/report.txt"}))
    assert not result.is_error and text(result) == "deleted /tmp/report.txt"
    assert setup.ran() == [{"tool": "delete_file", "arguments": {"path": "/tmp/report.txt"}}]
    [asked] = human.asked
    message = asked.message
    assert "Server:    approval-test-server" in message
    assert "Tool:      delete_file" in message
    assert '"path": "/tmp/report.txt"' in message
    assert "Why asked: deleting needs a person (policy rule delete_file)" in message
    channel = "elicitation" if mode == "legacy" else "elicitation-mrtr"
    records = setup.approvals()
    assert [(r["decision"], r["channel"]) for r in records] == [("approval_asked", channel),
                                                                ("approval_granted", channel)]
    assert records[1]["waited_ms"] >= 0 and records[1]["tool"] == "delete_file"


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("action", "words", "recorded"), [
    ("decline", "the human declined the call", "approval_declined"),
    ("cancel", "the human dismissed the approval request without approving", "approval_cancelled"),
])
def test_declined_or_dismissed_call_never_reaches_the_server(tmp_path: Path, mode: str, action: str, words: str,
                                                             recorded: str) -> None:
    setup = Setup(tmp_path, policy())
    [result] = run(calls, setup, mode, Human(action), ("delete_file", {"path": "a"}))
    said = refusal(result)
    assert said.startswith("mcp-guard refused the call to delete_file: deleting needs a person: ")
    assert words in said
    assert result.meta is not None and result.meta["mcp-guard/decision"]["action"] == "require_approval"
    assert setup.ran() == []
    assert [r["decision"] for r in setup.approvals()][-1] == recorded


@pytest.mark.parametrize("mode", MODES)
def test_no_answer_in_time_is_told_apart_from_a_no(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy(timeout=1))
    # The human answers "accept" after 2.5 s: too late in both eras (a held call stops waiting; a
    # retry's state has expired).
    [result] = run(calls, setup, mode, Human("accept", delay=2.5), ("delete_file", {"path": "a"}))
    assert "no answer to the approval request within 1 s" in refusal(result)
    assert setup.ran() == []
    assert [r["decision"] for r in setup.approvals()][-1] == "approval_timeout"


@pytest.mark.parametrize("mode", MODES)
def test_no_channel_refuses_and_says_how_to_enable_approval(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy())
    [result] = run(calls, setup, mode, None, ("delete_file", {"path": "a"}))
    said = refusal(result)
    assert "approval is required, and nobody can be asked" in said
    assert "--approval-command" in said and "elicitation" in said
    assert setup.ran() == []
    assert [r["decision"] for r in setup.approvals()] == ["approval_unavailable"]


@pytest.mark.parametrize("mode", MODES)
def test_remember_session_asks_once_per_tool(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy(remember="session"))
    human = Human("accept")
    results = run(calls, setup, mode, human, ("delete_file", {"path": "a"}), ("delete_file", {"path": "b"}),
                  ("delete_file", {"path": "c"}))
    assert [text(r) for r in results] == ["deleted a", "deleted b", "deleted c"]
    assert len(human.asked) == 1
    schema = human.asked[0].requested_schema
    assert schema["properties"]["remember"]["default"] == "session"


@pytest.mark.parametrize("mode", MODES)
def test_the_human_may_approve_once_only(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy(remember="session"))
    human = Human("accept", content={"remember": "none"})
    run(calls, setup, mode, human, ("delete_file", {"path": "a"}), ("delete_file", {"path": "b"}))
    assert len(human.asked) == 2


@pytest.mark.parametrize("mode", MODES)
def test_remember_arguments_passes_only_identical_arguments(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy(remember="arguments"))
    human = Human("accept")
    results = run(calls, setup, mode, human, ("delete_file", {"path": "a"}), ("delete_file", {"path": "a"}),
                  ("delete_file", {"path": "b"}))
    assert [text(r) for r in results] == ["deleted a", "deleted a", "deleted b"]
    assert len(human.asked) == 2
    remembered = [r for r in setup.approvals() if r.get("remembered")]
    assert len(remembered) == 1


@pytest.mark.parametrize("mode", MODES)
def test_limits_are_charged_only_when_approved(tmp_path: Path, mode: str) -> None:
    # pay: require_approval with a rate limit of 1 an hour. A declined call takes nothing; the approved
    # one takes the only call of the hour; the next is refused by the limit before anyone is asked.
    setup = Setup(tmp_path, policy())
    no, yes = Human("decline"), Human("accept")

    async def scenario() -> list[Any]:
        async with setup.client(mode, no) as declined:
            first = await declined.call_tool("pay", {"amount": 1})
        return [first]

    [first] = run(scenario)
    assert first.is_error
    results = run(calls, setup, mode, yes, ("pay", {"amount": 2}), ("pay", {"amount": 3}))
    assert text(results[0]) == "paid 2.0"
    assert "rate limit reached" in refusal(results[1])
    assert len(yes.asked) == 1
    assert [r["tool"] for r in setup.ran()] == ["pay"]


@pytest.mark.parametrize("mode", MODES)
def test_other_calls_flow_while_one_waits_for_the_human(tmp_path: Path, mode: str) -> None:
    setup = Setup(tmp_path, policy())
    human = Human("accept")
    human.release = anyio.Event()

    async def scenario() -> tuple[Any, Any]:
        async with setup.client(mode, human) as client:
            held: dict[str, Any] = {}

            async def wait_for_approval() -> None:
                held["result"] = await client.call_tool("delete_file", {"path": "a"})

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_approval)
                while not human.asked:
                    await anyio.sleep(0.01)
                other = await client.call_tool("read_file", {"path": "b"})
                assert "result" not in held
                assert human.release is not None
                human.release.set()
            return held["result"], other

    held, other = run(scenario)
    assert text(other) == "contents of b" and text(held) == "deleted a"
    assert [r["tool"] for r in setup.ran()] == ["read_file", "delete_file"]


def test_upstream_asking_for_input_after_approval_does_not_ask_the_human_twice(tmp_path: Path) -> None:
    # The lowlevel server's spend answers input_required (its own confirmation) to every first round: the
    # client's retry carries the upstream's state, which is the approved call going on.
    setup = Setup(tmp_path, {"version": "1", "rules": {"spend": {"action": "require_approval"}}}, INPUT_SERVER)
    human = Human("accept", content={"ok": True})
    [result] = run(calls, setup, "auto", human, ("spend", {"amount": 4}))
    assert text(result) == "spent 4"
    messages = [asked.message for asked in human.asked]
    assert len(messages) == 2, messages
    assert messages[0].startswith("mcp-guard: an agent wants to call") and messages[1] == "Spend 4?"
    assert [r["decision"] for r in setup.approvals()] == ["approval_asked", "approval_granted"]


def test_cancelling_the_waiting_call_drops_it_and_cancels_the_question(spawn_guard, tmp_path: Path) -> None:
    """Raw lines: the client cancels the call held for approval. Nothing reaches the server, the call is
    never answered, and mcp-guard tells the client to stop asking its human (notifications/cancelled for
    its own request's id)."""
    calls_log = tmp_path / "calls.jsonl"
    audit = tmp_path / "audit.jsonl"
    proc = spawn_guard(SERVER, policy(), extra=("--audit", str(audit)), env={"CALLS_LOG": str(calls_log)})
    proc.initialize(capabilities={"elicitation": {"form": {}}})
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "delete_file", "arguments": {"path": "a"}, "_meta": {"progressToken": "p5"}}})
    progress = proc.recv(TIMEOUT)
    assert progress["method"] == "notifications/progress" and progress["params"]["progressToken"] == "p5"
    assert "waiting for a human to approve delete_file" in progress["params"]["message"]
    question = proc.recv(TIMEOUT)
    assert question["method"] == "elicitation/create" and question["params"]["mode"] == "form"
    own_id = question["id"]
    proc.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}})
    told = proc.recv(TIMEOUT)
    assert told == {"jsonrpc": "2.0", "method": "notifications/cancelled",
                    "params": {"requestId": own_id, "reason": "no longer needed"}}
    # The human's late answer is consumed, never forwarded; the call stays unanswered; the session goes on.
    proc.send({"jsonrpc": "2.0", "id": own_id, "result": {"action": "accept"}})
    answer = proc.request(6, "tools/call", {"name": "read_file", "arguments": {"path": "b"}}, timeout=TIMEOUT)
    assert answer["result"]["content"][0]["text"] == "contents of b"
    assert [m for m in proc.other if m.get("id") == 5] == []
    assert [json.loads(line)["tool"] for line in calls_log.read_text().splitlines()] == ["read_file"]
    proc.close_stdin()
    assert proc.wait(TIMEOUT) == 0
    approvals = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["decision"] for r in approvals if r["event"] == "approval"] == ["approval_asked", "approval_cancelled"]


def test_an_error_answer_to_the_question_refuses_the_call(spawn_guard, tmp_path: Path) -> None:
    calls_log = tmp_path / "calls.jsonl"
    proc = spawn_guard(SERVER, policy(), env={"CALLS_LOG": str(calls_log)})
    proc.initialize(capabilities={"elicitation": {}})  # an empty object: form mode (2025-11-25)
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
               "params": {"name": "delete_file", "arguments": {"path": "a"}}})
    question = proc.recv(TIMEOUT)
    proc.send({"jsonrpc": "2.0", "id": question["id"], "error": {"code": -32603, "message": "no UI here"}})
    answer = proc.recv(TIMEOUT)
    assert answer["id"] == 5 and answer["result"]["isError"] is True
    said = answer["result"]["content"][0]["text"]
    assert "the approval request failed (asked through the client): no UI here" in said
    assert not calls_log.exists()


def test_a_client_with_url_elicitation_only_is_not_asked_in_a_form(spawn_guard, tmp_path: Path) -> None:
    proc = spawn_guard(SERVER, policy())
    proc.initialize(capabilities={"elicitation": {"url": {}}})
    answer = proc.request(5, "tools/call", {"name": "delete_file", "arguments": {"path": "a"}}, timeout=TIMEOUT)
    assert "nobody can be asked" in answer["result"]["content"][0]["text"]


def test_an_approved_call_the_upstream_asks_about_is_charged_once(tmp_path: Path) -> None:
    # spend: approval and a budget of 10. 4 is approved, the upstream confirms, the retry runs without
    # being charged again; 6 then fits exactly; 1 more is refused by the budget before anyone is asked.
    doc = {"version": "1", "rules": {"spend": {"action": "require_approval",
                                               "budget": {"max": 10, "window": 3600, "cost": "/amount"}}}}
    setup = Setup(tmp_path, doc, INPUT_SERVER)
    human = Human("accept", content={"ok": True})
    results = run(calls, setup, "auto", human, ("spend", {"amount": 4}), ("spend", {"amount": 6}),
                  ("spend", {"amount": 1}))
    assert [text(r) for r in results[:2]] == ["spent 4", "spent 6"]
    assert "budget exhausted: 10 of 10 spent" in refusal(results[2])
    assert len([a for a in human.asked if a.message.startswith("mcp-guard")]) == 2
    assert [r["spent"] for r in setup.ran()] == ["4", "6"]
