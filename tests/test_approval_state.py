"""The stateless era's approval state, on the wire (raw JSON-RPC lines): mcp-guard's requestState is
accepted once, for the tool and the very arguments it was issued for, within its time, from this process;
anything else is refused and never forwarded. And the pure parts of approval.py as tables."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from mcp_guard import approval
from mcp_guard.approval import INPUT_KEY, STATE_PREFIX, Memory, StateSigner

SERVER = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "approval_server.py")]
TIMEOUT = 30
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
    "io.modelcontextprotocol/clientInfo": {"name": "state-test", "version": "1"},
}
POLICY = {"version": "1", "rules": {"delete_file": {"action": "require_approval", "approval": {"timeout": 60}}}}
ACCEPT = {INPUT_KEY: {"action": "accept"}}


class Session:
    def __init__(self, spawn_guard: Any, tmp_path: Path) -> None:
        self.calls_log = tmp_path / "calls.jsonl"
        self.proc = spawn_guard(SERVER, POLICY, env={"CALLS_LOG": str(self.calls_log)})
        self.next_id = 10
        self.proc.request(1, "server/discover", {"_meta": META}, timeout=TIMEOUT)

    def call(self, arguments: dict[str, Any], **extra: Any) -> dict[str, Any]:
        self.next_id += 1
        params = {"name": "delete_file", "arguments": arguments, "_meta": META, **extra}
        return self.proc.request(self.next_id, "tools/call", params, timeout=TIMEOUT)["result"]

    def question(self, arguments: dict[str, Any]) -> str:
        result = self.call(arguments)
        assert result["resultType"] == "input_required", result
        assert list(result["inputRequests"]) == [INPUT_KEY]
        assert result["inputRequests"][INPUT_KEY]["method"] == "elicitation/create"
        state: str = result["requestState"]
        return state

    def ran(self) -> list[Any]:
        return [json.loads(line)["arguments"] for line in self.calls_log.read_text().splitlines()] \
            if self.calls_log.exists() else []


def refused(result: dict[str, Any]) -> str:
    assert result.get("isError") is True, result
    assert result["resultType"] == "complete"
    text: str = result["content"][0]["text"]
    return text


def test_the_retry_with_the_state_and_an_accept_runs_once(spawn_guard, tmp_path: Path) -> None:
    s = Session(spawn_guard, tmp_path)
    state = s.question({"path": "a"})
    ran = s.call({"path": "a"}, inputResponses=ACCEPT, requestState=state)
    assert ran["content"][0]["text"] == "deleted a"
    replayed = s.call({"path": "a"}, inputResponses=ACCEPT, requestState=state)
    assert "it was used already (a replay)" in refused(replayed)
    assert s.ran() == [{"path": "a"}]


def test_the_upstream_never_sees_mcp_guards_state_or_answer(spawn_guard, tmp_path: Path) -> None:
    # The recording server shows the exact line forwarded: no requestState, no inputResponses, the
    # numbers as the client wrote them.
    record = tmp_path / "record.jsonl"
    server = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "recording_server.py")]
    proc = spawn_guard(server, {"version": "1", "rules": {"other_tool": {"action": "require_approval"}}},
                       env={"RECORD_FILE": str(record)})
    first = proc.request(2, "tools/call", {"name": "other_tool", "arguments": {"n": 1}, "_meta": META})["result"]
    state = first["requestState"]
    line = ('{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"other_tool","arguments":{"n":1e0},'
            f'"_meta":{json.dumps(META)},"inputResponses":{json.dumps(ACCEPT)},"requestState":{json.dumps(state)}}}}}')
    proc.send(line)
    answer = proc.recv(TIMEOUT)
    # 1e0 is not the 1 the state was issued for (numbers compare as written): refused, not forwarded.
    assert "it was issued for other arguments" in answer["result"]["content"][0]["text"]
    first = proc.request(4, "tools/call", {"name": "other_tool", "arguments": {"n": 1.5}, "_meta": META})["result"]
    line = ('{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"other_tool","arguments":{"n":1.50},'
            f'"_meta":{json.dumps(META)},"inputResponses":{json.dumps(ACCEPT)},'
            f'"requestState":{json.dumps(first["requestState"])}}}}}')
    proc.send(line)
    assert "issued for other arguments" in proc.recv(TIMEOUT)["result"]["content"][0]["text"]
    first = proc.request(6, "tools/call", {"name": "other_tool", "arguments": {"n": 1.5}, "_meta": META})["result"]
    line = ('{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"other_tool","arguments":{"n":1.5},'
            f'"_meta":{json.dumps(META)},"inputResponses":{json.dumps(ACCEPT)},'
            f'"requestState":{json.dumps(first["requestState"])}}}}}')
    proc.send(line)
    assert proc.recv(TIMEOUT)["id"] == 7
    forwarded = [line for line in record.read_bytes().splitlines() if b'"tools/call"' in line]
    assert len(forwarded) == 1
    assert b'"arguments":{"n":1.5}' in forwarded[0]
    assert b"requestState" not in forwarded[0] and b"inputResponses" not in forwarded[0]
    assert b"mcp-guard" not in forwarded[0]


@pytest.mark.parametrize(("tamper", "problem"), [
    (lambda state: state[:-2] + ("AA" if not state.endswith("AA") else "BB"), "its signature does not verify"),
    (lambda state: STATE_PREFIX + base64.urlsafe_b64encode(json.dumps(
        {"t": "delete_file", "a": "x", "i": 0, "e": 1e12, "n": "n", "r": "session"}).encode()).decode().rstrip("=")
        + "." + state.rsplit(".", 1)[1], "its signature does not verify"),
    (lambda state: STATE_PREFIX + "garbage", "its signature does not verify"),
])
def test_a_forged_state_is_refused_and_never_forwarded(spawn_guard, tmp_path: Path, tamper: Any,
                                                       problem: str) -> None:
    s = Session(spawn_guard, tmp_path)
    state = s.question({"path": "a"})
    said = refused(s.call({"path": "a"}, inputResponses=ACCEPT, requestState=tamper(state)))
    assert problem in said and "the call was not sent" in said
    assert s.ran() == []


def test_a_state_for_other_arguments_or_another_tool_is_refused(spawn_guard, tmp_path: Path) -> None:
    s = Session(spawn_guard, tmp_path)
    state = s.question({"path": "harmless"})
    assert "issued for other arguments" in refused(s.call({"path": "/etc"}, inputResponses=ACCEPT,
                                                          requestState=state))
    assert s.ran() == []


def test_a_retry_without_an_answer_is_refused(spawn_guard, tmp_path: Path) -> None:
    s = Session(spawn_guard, tmp_path)
    state = s.question({"path": "a"})
    assert "the retry carried no answer to it" in refused(s.call({"path": "a"}, requestState=state))
    assert s.ran() == []


# --- the pure parts ------------------------------------------------------------------------------------


def test_signer_binds_tool_arguments_time_and_use() -> None:
    signer = StateSigner()
    state = signer.seal("t", "d1", now=100.0, ttl=10, remember="none")
    assert signer.open(state, "u", "d1", 101.0) == "it was issued for another tool"
    assert signer.open(state, "t", "d2", 101.0) == "it was issued for other arguments"
    assert signer.open(state, "t", "d1", 111.0) == approval.EXPIRED
    opened = signer.open(state, "t", "d1", 105.0)
    assert isinstance(opened, approval.Sealed) and opened.issued == 100.0
    assert signer.open(state, "t", "d1", 106.0) == "it was used already (a replay)"
    assert StateSigner().open(state, "t", "d1", 101.0).startswith("its signature does not verify")


@pytest.mark.parametrize(("remember", "content", "kept"), [
    ("none", {"remember": "session"}, "none"),  # never more than the policy allows
    ("session", None, "session"),
    ("session", {"remember": "none"}, "none"),
    ("arguments", {"remember": "session"}, "arguments"),
])
def test_what_an_accept_is_remembered_for(remember: Any, content: Any, kept: str) -> None:
    outcome = approval.read_result({"action": "accept", "content": content}, remember, "elicitation")
    assert outcome.granted and outcome.remember == kept


@pytest.mark.parametrize(("answer", "status"), [
    (None, "timeout"),
    ({"result": {"action": "decline"}}, "declined"),
    ({"result": {"action": "cancel"}}, "cancelled"),
    ({"result": {"action": "maybe"}}, "error"),
    ({"result": "yes"}, "error"),
    ({"error": {"code": -1, "message": "x"}}, "error"),
])
def test_answers_that_are_not_an_accept(answer: Any, status: str) -> None:
    assert approval.read_answer(answer, "none").status == status


def test_memory_by_mode() -> None:
    memory = Memory()
    memory.keep("t", "d", "arguments", "elicitation")
    assert memory.recall("t", "d", "arguments") == "elicitation"
    assert memory.recall("t", "e", "arguments") is None
    assert memory.recall("t", "d", "none") is None  # the policy now remembers nothing
    memory.keep("t", "d", "session", "command")
    assert memory.recall("t", "zzz", "session") == "command"


def test_the_message_cuts_long_values_and_keeps_names_on_their_line() -> None:
    text = approval.message("srv\nfake: line", "tool", {"a": "x" * 1000, **{f"k{i}": i for i in range(30)}},
                            "because", "rule")
    lines = text.splitlines()
    assert 'Server:    "srv\\nfake: line"' in lines
    assert any("more characters" in line for line in lines)
    assert any("more lines" in line for line in lines)
    assert len(lines) < 25


def test_client_capabilities_for_form_elicitation() -> None:
    assert approval.client_supports_form({"elicitation": {}})
    assert approval.client_supports_form({"elicitation": {"form": {}, "url": {}}})
    assert not approval.client_supports_form({"elicitation": {"url": {}}})
    assert not approval.client_supports_form({})
    assert not approval.client_supports_form(None)


def test_without_own_parts_keeps_the_rest_as_written() -> None:
    line = ('{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"z":1e0,"a":[1.50]},'
            f'"inputResponses":{{"{INPUT_KEY}":{{"action":"accept"}},"theirs":{{"x":1}}}},'
            f'"requestState":"{STATE_PREFIX}abc.def"}}}}').encode()
    out = approval.without_own_parts(line)
    assert out == (b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","arguments":{"z":1e0,'
                   b'"a":[1.50]},"inputResponses":{"theirs":{"x":1}}}}')
