"""End to end: the policy enforced on the wire, through the real `mcp-guard` binary.

A raw recording server (tests/servers/recording_server.py) sits behind mcp-guard and appends every line it
receives to a file, so each test can say not only what the client was answered but also what did (and did
not) reach the upstream server.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parent / "servers" / "recording_server.py"
PV_META = "io.modelcontextprotocol/protocolVersion"
STATELESS_META = {PV_META: "2026-07-28"}
DECISION = "mcp-guard/decision"
PROBE_NAME = re.compile(r"t[0-9a-f]{24}")  # mcp-guard's stand-in for a hidden tool's name

TOOLS = [
    "allowed", "secret_tool", "internal_a", "internal_b", "llm_job_cancel", "rate_tool", "budget_tool",
    "args_tool", "approve_tool", "flaky_tool", "flaky_budget", "other_tool",
]
HIDDEN = {"secret_tool", "internal_a", "internal_b"}

POLICY: dict[str, Any] = {
    "version": "1",
    "default": "allow",
    "hide": ["secret_tool", "internal_*"],
    "rules": {
        "llm_job_cancel": {"action": "deny", "reason": "cancelling a job cannot be undone"},
        "rate_tool": {"rate_limit": {"max": 2, "window": 3600}},
        "budget_tool": {"budget": {"max": 10, "window": 3600, "cost": "/cost"}},
        "args_tool": {"arguments": {"type": "object", "required": ["path"],
                                    "properties": {"path": {"type": "string", "pattern": "^/tmp/"}}}},
        "approve_tool": {"action": "require_approval"},
        "flaky_tool": {"rate_limit": {"max": 1, "window": 3600}},
        "flaky_budget": {"budget": {"max": 5, "window": 3600, "cost": "/cost"}},
    },
}

ODD_NAMES = [
    "LLM_JOB_CANCEL",
    "Llm_job_cancel",
    "llm_job_cancel ",
    " llm_job_cancel",
    "llm_job_cancel\u200b",
    "\u200bllm_job_cancel",
    "llm_job_\u0441ancel",  # Cyrillic es
    "llm_j\u043eb_cancel",  # Cyrillic o
    "\uff4c\uff4c\uff4d_job_cancel",  # fullwidth
    "llm\u2010job_cancel",  # hyphen
    "llm_job_cancel\u0000",
    "llm_job_cancel\n",
    "llm_job_cance\u0131",  # dotless i is not l, but close enough for a human
    "llm_job_cance\u006c\u0301",  # combining accent
]


class Guarded:
    """One mcp-guard process in front of the recording server."""

    def __init__(self, proc: Any, record: Path) -> None:
        self.proc = proc
        self.record = record
        self._ids = itertools.count(1000)

    def next_id(self) -> int:
        return next(self._ids)

    def call(self, name: Any, arguments: Any = ..., request_id: Any = None, meta: dict | None = None,
             params: Any = ...) -> dict:
        if params is ...:
            params = {"name": name}
            if arguments is not ...:
                params["arguments"] = arguments
            if meta is not None:
                params["_meta"] = meta
        return self.proc.request(self.next_id() if request_id is None else request_id, "tools/call", params,
                                 timeout=10)

    def barrier(self) -> None:
        """A ping through to the upstream: everything forwarded before it has been recorded once it is answered."""
        answer = self.proc.request(f"barrier-{self.next_id()}", "ping", {}, timeout=10)
        assert answer.get("result") == {}, answer

    def recorded(self) -> list[Any]:
        self.barrier()
        return [json.loads(line) for line in self.record.read_bytes().splitlines() if line.strip()]

    def recorded_raw(self) -> list[bytes]:
        self.barrier()
        return [line for line in self.record.read_bytes().splitlines() if line.strip()]

    def upstream_calls(self) -> list[Any]:
        """The names of every tools/call the upstream received (notifications and batches included),
        except mcp-guard's probes for hidden tools (a call to a random name that cannot exist): each of
        those is checked here to carry nothing of the hidden call but its _meta (no arguments)."""
        names = []
        for msg in self.recorded():
            for item in msg if isinstance(msg, list) else [msg]:
                if isinstance(item, dict) and item.get("method") == "tools/call":
                    params = item.get("params")
                    name = params.get("name") if isinstance(params, dict) else None
                    if isinstance(name, str) and PROBE_NAME.fullmatch(name):
                        assert params.get("arguments", {}) == {} and set(params) <= {"name", "arguments", "_meta"}
                        continue
                    names.append(name)
        return names

    def list_all(self, meta: dict | None = None) -> tuple[list[str], list[dict]]:
        names: list[str] = []
        pages: list[dict] = []
        cursor = None
        for _ in range(50):
            params: dict[str, Any] = {}
            if cursor is not None:
                params["cursor"] = cursor
            if meta is not None:
                params["_meta"] = meta
            answer = self.proc.request(self.next_id(), "tools/list", params)
            assert "result" in answer, answer
            pages.append(answer["result"])
            names += [tool["name"] for tool in answer["result"]["tools"]]
            cursor = answer["result"].get("nextCursor")
            if cursor is None:
                return names, pages
        raise AssertionError("tools/list never ended")


@pytest.fixture
def guarded(spawn_guard, tmp_path):
    counter = itertools.count()

    def start(policy: dict | None = None, tools: list[str] | None = None, env: dict[str, str] | None = None,
              extra: tuple[str, ...] = (), initialize: bool = True) -> Guarded:
        record = tmp_path / f"record-{next(counter)}.jsonl"
        server_env = {"RECORD_FILE": str(record), "TOOLS": ",".join(tools or TOOLS), **(env or {})}
        proc = spawn_guard([sys.executable, str(SERVER)], policy=POLICY if policy is None else policy,
                           extra=extra, env=server_env)
        guard = Guarded(proc, record)
        if initialize:
            answer = proc.initialize()
            assert "result" in answer, answer
        return guard

    return start


def refusal_text(answer: dict) -> str:
    result = answer["result"]
    assert result["isError"] is True
    assert len(result["content"]) == 1 and result["content"][0]["type"] == "text"
    return result["content"][0]["text"]


def assert_refused(answer: dict, tool: str, action: str, rule: str | None, reason: str | None = None,
                   stateless: bool = False) -> dict:
    """The documented refusal: a CallToolResult with isError, the text, and the decision in _meta."""
    assert "error" not in answer, answer
    result = answer["result"]
    text = refusal_text(answer)
    decision = result["_meta"][DECISION]
    assert decision["action"] == action
    assert decision["rule"] == rule
    if reason is not None:
        assert decision["reason"] == reason
    assert text.startswith(f"mcp-guard refused the call to {tool}: {decision['reason']}")
    assert text.endswith(".")
    if "retry_after" in decision:
        # Rounded up: retrying after the time said must not be refused again.
        assert text.endswith(f". Retry after {math.ceil(decision['retry_after'])} s."), text
    else:
        assert "Retry" not in text
    if stateless:
        assert result["resultType"] == "complete"
    else:
        assert "resultType" not in result
    assert set(result) <= {"content", "isError", "_meta", "resultType"}
    return decision


def assert_unknown_tool(answer: dict, name: str) -> None:
    """The recording server's own answer for a tool it does not have (mcp-guard asks it, for a hidden
    tool, about a name that cannot exist, and puts the hidden name in)."""
    assert answer["error"] == {"code": -32602, "message": f"Unknown tool: {name}",
                               "data": {"source": "recording_server"}}, answer
    assert "result" not in answer


def upstream_echo(answer: dict) -> dict:
    """The recording server's answer to a call it ran."""
    assert answer["result"]["isError"] is False, answer
    return json.loads(answer["result"]["content"][0]["text"])


# --- hiding -----------------------------------------------------------------------------------------


def test_hidden_tools_removed_from_every_page(guarded):
    g = guarded(env={"PAGE_SIZE": "2"})
    names, pages = g.list_all()
    assert names == [t for t in TOOLS if t not in HIDDEN]
    assert len(pages) == 6
    # page 1 is [allowed, secret_tool], page 2 [internal_a, internal_b]: emptied, but the page is still there
    assert [t["name"] for t in pages[0]["tools"]] == ["allowed"]
    assert pages[1]["tools"] == []
    for index, page in enumerate(pages):
        assert page["_meta"] == {"recording/page": index}
        if index < len(pages) - 1:
            assert page["nextCursor"] == f"page-{2 * (index + 1)}"
        else:
            assert "nextCursor" not in page
        for tool in page["tools"]:
            assert tool == {"name": tool["name"], "description": f"the {tool['name']} tool",
                            "inputSchema": {"type": "object", "additionalProperties": True}}


def test_unchanged_page_forwarded_as_received(guarded, tmp_path):
    # The same request to the server directly, then through mcp-guard: a page that hides nothing arrives
    # as the exact bytes the server wrote (json.dumps' ", " separators; mcp-guard's own encoding is compact).
    request = b'{"jsonrpc": "2.0", "id": 77, "method": "tools/list", "params": {}}'
    env = {**os.environ, "RECORD_FILE": str(tmp_path / "direct.jsonl"), "TOOLS": "allowed,other_tool"}
    direct = subprocess.run([sys.executable, str(SERVER)], input=request + b"\n", capture_output=True, env=env,
                            timeout=30, check=True).stdout.rstrip(b"\n")
    g = guarded(policy={"version": "1", "hide": ["secret_tool"]}, tools=["allowed", "other_tool"])
    g.proc.send(request)
    assert g.proc.recv_raw(10) == direct
    assert b'"tools": [' in direct


def test_hidden_after_list_changed(guarded):
    g = guarded(tools=["allowed", "changer"],
                env={"CHANGE_ON_CALL": "changer", "TOOLS_AFTER": "allowed,secret_tool,internal_new,fresh"})
    names, _ = g.list_all()
    assert names == ["allowed", "changer"]
    g.proc.other.clear()
    upstream_echo(g.call("changer", {}))
    assert {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"} in g.proc.other
    names, _ = g.list_all()
    assert names == ["allowed", "fresh"]
    assert_unknown_tool(g.call("internal_new", {}), "internal_new")
    assert_unknown_tool(g.call("secret_tool", {}), "secret_tool")
    assert upstream_echo(g.call("fresh", {"a": 1})) == {"tool": "fresh", "arguments": {"a": 1}}
    assert g.upstream_calls() == ["changer", "fresh"]


@pytest.mark.parametrize("name", ["secret_tool", "internal_a", "internal_never_offered"])
def test_call_to_hidden_tool_is_unknown_and_never_forwarded(guarded, name):
    g = guarded()
    answer = g.call(name, {"x": 1})
    assert_unknown_tool(answer, name)
    assert "policy" not in json.dumps(answer).lower() and "guard" not in json.dumps(answer).lower()
    assert g.upstream_calls() == []


# --- refusals ----------------------------------------------------------------------------------------


def test_deny_with_reason(guarded):
    g = guarded()
    answer = g.call("llm_job_cancel", {"jobId": "j-1"})
    assert_refused(answer, "llm_job_cancel", "deny", "llm_job_cancel", "cancelling a job cannot be undone")
    assert refusal_text(answer) == ("mcp-guard refused the call to llm_job_cancel: "
                                    "cancelling a job cannot be undone.")
    assert g.upstream_calls() == []


def test_rate_limit_refusal_has_retry_after(guarded):
    g = guarded()
    for _ in range(2):
        upstream_echo(g.call("rate_tool", {}))
    answer = g.call("rate_tool", {})
    decision = assert_refused(answer, "rate_tool", "deny", "rate_tool",
                              "rate limit reached: at most 2 call(s) per 3600 s")
    assert 3500 < decision["retry_after"] <= 3600
    text = refusal_text(answer)
    seconds = int(re.search(r"Retry after (\d+) s\.$", text).group(1))
    assert seconds == math.ceil(decision["retry_after"])
    assert g.upstream_calls() == ["rate_tool", "rate_tool"]


def test_budget_refusals(guarded):
    g = guarded()
    upstream_echo(g.call("budget_tool", {"cost": 6}))
    over = g.call("budget_tool", {"cost": 6})
    decision = assert_refused(over, "budget_tool", "deny", "budget_tool",
                              "budget exhausted: 6 of 10 spent in the last 3600 s, this call costs 6")
    assert 3500 < decision["retry_after"] <= 3600
    too_big = g.call("budget_tool", {"cost": 11})
    decision = assert_refused(too_big, "budget_tool", "deny", "budget_tool",
                              "cost 11 is more than the whole budget of 10 per 3600 s")
    assert "retry_after" not in decision
    assert_refused(g.call("budget_tool", {}), "budget_tool", "deny", "budget_tool",
                   "the call has no cost at /cost in its arguments")
    assert_refused(g.call("budget_tool", {"cost": "4"}), "budget_tool", "deny", "budget_tool",
                   "the cost at /cost in the call's arguments is not a number")
    assert_refused(g.call("budget_tool", {"cost": -1}), "budget_tool", "deny", "budget_tool",
                   "the cost at /cost in the call's arguments is negative")
    upstream_echo(g.call("budget_tool", {"cost": 4}))
    assert_refused(g.call("budget_tool", {"cost": 0.5}), "budget_tool", "deny", "budget_tool")
    assert g.upstream_calls() == ["budget_tool", "budget_tool"]


@pytest.mark.parametrize("arguments", [{"path": "/etc/passwd"}, {}, ..., {"path": 5}])
def test_argument_violation(guarded, arguments):
    g = guarded()
    answer = g.call("args_tool", arguments)
    decision = assert_refused(answer, "args_tool", "deny", "args_tool")
    assert decision["reason"].startswith(("argument path", "the arguments")), decision
    assert g.upstream_calls() == []
    upstream_echo(g.call("args_tool", {"path": "/tmp/ok"}))
    assert g.upstream_calls() == ["args_tool"]


def test_require_approval_is_refused(guarded):
    g = guarded()
    answer = g.call("approve_tool", {})
    decision = assert_refused(answer, "approve_tool", "require_approval", "approve_tool")
    assert "approval" in decision["reason"]
    assert g.upstream_calls() == []


def test_default_deny_reason(guarded):
    g = guarded(policy={"version": "1", "default": "deny", "default_reason": "not on the list",
                        "rules": {"allowed": {"action": "allow"}}})
    assert_refused(g.call("other_tool", {}), "other_tool", "deny", None, "not on the list")
    upstream_echo(g.call("allowed", {}))
    assert g.upstream_calls() == ["allowed"]


def test_quota_given_back_when_upstream_refuses_with_a_jsonrpc_error(guarded):
    g = guarded(env={"ERROR_TOOLS": "flaky_tool,flaky_budget"})
    for _ in range(3):
        answer = g.call("flaky_tool", {})
        assert DECISION not in json.dumps(answer), answer  # the upstream's own failure, not a refusal
        answer = g.call("flaky_budget", {"cost": 5})
        assert DECISION not in json.dumps(answer), answer
    assert g.upstream_calls() == ["flaky_tool", "flaky_budget"] * 3


def test_quota_kept_when_the_tool_ran_and_reported_is_error(guarded):
    # isError means the tool ran (and may have done its work before failing): no refund, or an agent
    # could repeat a side effect for ever by making it fail afterwards.
    g = guarded(env={"ISERROR_TOOLS": "flaky_tool"})
    answer = g.call("flaky_tool", {})
    assert answer["result"]["isError"] is True and DECISION not in json.dumps(answer)
    assert_refused(g.call("flaky_tool", {}), "flaky_tool", "deny", "flaky_tool")
    assert g.upstream_calls() == ["flaky_tool"]


def test_quota_kept_when_the_client_cancelled_the_call(guarded):
    # A server answers a cancelled call with an error, possibly after doing the work: no refund. (The
    # client gave up on the call, so that late answer is dropped: docs/relay.md.)
    g = guarded(env={"ERROR_TOOLS": "flaky_tool", "SLOW_TOOLS": "flaky_tool"})
    g.proc.send({"jsonrpc": "2.0", "id": 77, "method": "tools/call",
                 "params": {"name": "flaky_tool", "arguments": {"ms": 300}}})
    g.proc.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 77}})
    time.sleep(0.6)  # the server's error answer to 77 has come (and was dropped)
    assert_refused(g.call("flaky_tool", {}), "flaky_tool", "deny", "flaky_tool")
    assert g.upstream_calls() == ["flaky_tool"]
    assert not any(isinstance(m, dict) and m.get("id") == 77 for m in g.proc.other)


def test_quota_kept_when_upstream_succeeds(guarded):
    g = guarded()
    upstream_echo(g.call("flaky_tool", {}))
    assert_refused(g.call("flaky_tool", {}), "flaky_tool", "deny", "flaky_tool")
    assert g.upstream_calls() == ["flaky_tool"]


def test_refund_matches_a_string_id_answer(guarded):
    # The upstream answers "N" to request N: still matched, so the failed call gives its quota back.
    g = guarded(env={"ERROR_TOOLS": "flaky_tool", "STRING_ID_METHODS": "tools/call"})
    for _ in range(3):  # flaky_tool's limit is 1 call an hour: each refund makes room for the next
        request_id = g.next_id()
        g.proc.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "flaky_tool"}})
        answer = g.proc.recv(10)
        assert answer["id"] == str(request_id), answer  # the server changed the id's type
        assert answer["error"]["code"] == -32602, answer
    assert g.upstream_calls() == ["flaky_tool"] * 3


# --- the stateless era ---------------------------------------------------------------------------------


def test_stateless_refusal_and_filtered_listing(guarded):
    g = guarded(env={"PAGE_SIZE": "2"}, initialize=False)
    discover = g.proc.request(1, "server/discover", {"_meta": STATELESS_META})
    assert discover["result"]["supportedVersions"] == ["2026-07-28"]
    names, pages = g.list_all(meta=STATELESS_META)
    assert names == [t for t in TOOLS if t not in HIDDEN]
    for index, page in enumerate(pages):
        # 60000 from the server, cut to a second: with live reload a listing must not stay fresh long after
        # the policy that filtered it changed (guard.MAX_TTL_MS).
        assert page["ttlMs"] == 1000 and page["cacheScope"] == "private"
        assert page["resultType"] == "complete"
        assert page["_meta"] == {"recording/page": index}
        assert ("nextCursor" in page) == (index < len(pages) - 1)
    assert pages[1]["tools"] == []
    answer = g.call("llm_job_cancel", {}, meta=STATELESS_META)
    assert_refused(answer, "llm_job_cancel", "deny", "llm_job_cancel", stateless=True)
    # Once the session is stateless, a request that forgot its _meta is still answered in that era.
    assert_refused(g.call("approve_tool", {}), "approve_tool", "require_approval", "approve_tool",
                   stateless=True)
    assert_unknown_tool(g.call("secret_tool", {}, meta=STATELESS_META), "secret_tool")
    assert g.upstream_calls() == []


def test_stateless_first_request_without_discover(guarded):
    g = guarded(initialize=False)
    assert_refused(g.call("llm_job_cancel", {}, meta=STATELESS_META), "llm_job_cancel", "deny",
                   "llm_job_cancel", stateless=True)


# --- ids ----------------------------------------------------------------------------------------------


def test_listing_answered_with_a_string_id_is_still_filtered(guarded):
    g = guarded(env={"STRING_ID_METHODS": "tools/list"})
    g.proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    answer = g.proc.recv(10)
    assert answer["id"] in (5, "5")
    assert [t["name"] for t in answer["result"]["tools"]] == [t for t in TOOLS if t not in HIDDEN]


def test_duplicate_id_in_flight_is_refused(guarded):
    g = guarded(env={"SLOW_TOOLS": "other_tool"})
    g.proc.send({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
                 "params": {"name": "other_tool", "arguments": {"ms": 600}}})
    g.proc.send({"jsonrpc": "2.0", "id": "9", "method": "tools/call",
                 "params": {"name": "allowed", "arguments": {}}})
    first, second = g.proc.recv(10), g.proc.recv(10)
    assert second["id"] == 9 and "result" in second
    assert first["id"] == "9" and first["error"]["code"] == -32600
    assert g.upstream_calls() == ["other_tool"]


# --- shapes that must never reach the upstream ----------------------------------------------------------


def test_batch_with_a_refused_call_forwards_nothing(guarded):
    g = guarded()
    g.proc.send([
        {"jsonrpc": "2.0", "id": 10, "method": "tools/call", "params": {"name": "allowed"}},
        {"jsonrpc": "2.0", "id": 11, "method": "tools/call", "params": {"name": "llm_job_cancel"}},
        {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "llm_job_cancel"}},
        {"jsonrpc": "2.0", "id": 12, "method": "tools/list"},
    ])
    answer = g.proc.recv(10)
    assert isinstance(answer, list)
    assert [item["id"] for item in answer] == [10, 11, 12]
    assert all(item["error"]["code"] == -32600 for item in answer)
    assert g.upstream_calls() == []
    assert not any(isinstance(msg, list) for msg in g.recorded())


def test_batch_of_notifications_only(guarded):
    g = guarded()
    g.proc.send([{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "llm_job_cancel"}}])
    answer = g.proc.recv(10)
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert g.upstream_calls() == []


@pytest.mark.parametrize("name", ["allowed", "llm_job_cancel", "secret_tool"])
def test_tools_call_as_notification_is_dropped(guarded, name):
    g = guarded()
    g.proc.send({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": name, "arguments": {}}})
    g.barrier()
    assert g.proc.other == []  # no answer to a notification
    assert g.upstream_calls() == []


def test_real_notifications_still_pass(guarded):
    g = guarded()
    g.proc.send({"jsonrpc": "2.0", "method": "notifications/roots/list_changed"})
    assert {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"} in g.recorded()


@pytest.mark.parametrize("params", [{}, {"name": 5}, {"name": None}, {"name": ["allowed"]},
                                    {"name": {"x": 1}}, {"arguments": {}}, None, ["allowed"], "allowed"])
def test_tools_call_without_a_string_name(guarded, params):
    g = guarded()
    request_id = g.next_id()
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call"}
    if params is not None:
        body["params"] = params
    g.proc.send(body)
    answer = g.proc.recv(10)
    assert answer["id"] == request_id and answer["error"]["code"] == -32602, answer
    assert g.upstream_calls() == []


@pytest.mark.parametrize("arguments", [[1, 2], "x", 5, True, ["path", "/tmp/ok"]])
@pytest.mark.parametrize("name", ["allowed", "llm_job_cancel"])
def test_arguments_not_an_object(guarded, name, arguments):
    g = guarded()
    answer = g.call(name, arguments)
    assert answer["error"]["code"] == -32602, answer
    assert g.upstream_calls() == []


# --- names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ODD_NAMES, ids=[ascii(n) for n in ODD_NAMES])
def test_odd_names_do_not_match_and_are_forwarded_as_other_names(guarded, name):
    g = guarded()
    answer = g.call(name, {})
    # Not the policy's refusal: the upstream's own "unknown tool" (the recording server marks its errors).
    assert answer["error"]["data"] == {"source": "recording_server"}, answer
    assert answer["error"]["message"] == f"Unknown tool: {name}"
    assert g.upstream_calls() == [name]


@pytest.mark.parametrize("name", ODD_NAMES, ids=[ascii(n) for n in ODD_NAMES])
def test_odd_names_refused_by_default_deny(guarded, name):
    # The policy from the seed page: deny by default, hide llm_job_cancel.
    g = guarded(policy={"version": "1", "default": "deny", "hide": ["llm_job_cancel"]})
    assert_refused(g.call(name, {}), name, "deny", None)
    assert_unknown_tool(g.call("llm_job_cancel", {}), "llm_job_cancel")
    assert g.upstream_calls() == []


def test_seed_policy_listing(guarded):
    g = guarded(policy={"version": "1", "default": "deny", "hide": ["llm_job_cancel"]})
    names, _ = g.list_all()
    assert names == [t for t in TOOLS if t != "llm_job_cancel"]
    assert_refused(g.call("allowed", {}), "allowed", "deny", None)
    assert g.upstream_calls() == []


def test_escaped_spelling_of_the_exact_name_is_still_matched(guarded):
    g = guarded()
    line = (b'{"jsonrpc":"2.0","id":31,"method":"tools/call","params":'
            b'{"name":"\\u006clm_job_\\u0063ancel","arguments":{}}}')
    g.proc.send(line)
    assert_refused(g.proc.recv(10), "llm_job_cancel", "deny", "llm_job_cancel")
    line = b'{"jsonrpc":"2.0","id":32,"method":"tools/call","params":{"name":"secret\\u005ftool"}}'
    g.proc.send(line)
    assert_unknown_tool(g.proc.recv(10), "secret_tool")
    assert g.upstream_calls() == []


@pytest.mark.parametrize("line", [
    b'{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"allowed","name":"llm_job_cancel"}}',
    b'{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"llm_job_cancel","name":"allowed"}}',
    b'{"jsonrpc":"2.0","id":43,"method":"tools/call","params":{"name":"allowed"},"params":{"name":"secret_tool"}}',
    b'{"jsonrpc":"2.0","id":44,"method":"tools/list","method":"tools/call","params":{"name":"llm_job_cancel"}}',
    b'{"jsonrpc":"2.0","id":45,"method":"tools/call","params":{"name":"args_tool",'
    b'"arguments":{"path":"/tmp/x","path":"/etc/passwd"}}}',
])
def test_duplicate_key_smuggling_is_refused(guarded, line):
    g = guarded()
    g.proc.send(line)
    answer = g.proc.recv(10)
    assert answer["error"]["code"] == -32600, answer
    assert "duplicate key" in answer["error"]["message"]
    assert g.upstream_calls() == []


def test_duplicate_key_refusal_carries_the_readable_id(guarded):
    g = guarded()
    g.proc.send(b'{"jsonrpc":"2.0","id":41,"method":"tools/call","params":{"name":"allowed","name":"x"}}')
    answer = g.proc.recv(10)
    assert answer["error"]["code"] == -32600
    assert answer["id"] == 41


# --- audit --------------------------------------------------------------------------------------------


def test_audit_records_every_decision(guarded, tmp_path):
    audit = tmp_path / "audit.jsonl"
    g = guarded(extra=("--audit", str(audit)), env={"ERROR_TOOLS": "flaky_tool"})
    g.call("allowed", {"b": 1, "a": "hunter2"}, request_id=101)
    g.call("llm_job_cancel", {"jobId": "j"}, request_id=102)
    g.call("secret_tool", {}, request_id=103)
    g.call("rate_tool", request_id=104)
    g.call("rate_tool", request_id=105)
    g.call("rate_tool", request_id=106)
    g.call("args_tool", {"path": "/etc/shadow"}, request_id=107)
    g.call("approve_tool", {}, request_id=108)
    g.call("flaky_tool", {}, request_id=109)
    g.proc.request(110, "tools/call", {"name": 7})
    g.proc.request(111, "tools/call", {"name": "allowed", "arguments": [1]})
    g.proc.send({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "llm_job_cancel"}})
    g.list_all()
    g.barrier()

    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert "hunter2" not in audit.read_text()
    assert records[0]["event"] == "start"
    assert len({r["session"] for r in records}) == 1
    assert all({"time", "session", "event"} <= set(r) for r in records)
    calls = {r["request_id"]: r for r in records if r["event"] == "call"}
    assert len([r for r in records if r["event"] == "call"]) == 11 == len(calls)

    def check(request_id, **expected):
        record = calls[request_id]
        for key, value in expected.items():
            assert record[key] == value, (request_id, key, record)
        return record

    check(101, tool="allowed", action="allow", rule=None, argument_keys=["a", "b"])
    check(102, tool="llm_job_cancel", action="deny", rule="llm_job_cancel",
          reason="cancelling a job cannot be undone", argument_keys=["jobId"])
    check(103, tool="secret_tool", action="hide", rule="secret_tool")
    check(104, tool="rate_tool", action="allow", rule="rate_tool", argument_keys=[])
    check(105, action="allow")
    assert 3500 < check(106, action="deny", rule="rate_tool")["retry_after"] <= 3600
    assert check(107, action="deny", rule="args_tool")["reason"].startswith("argument path")
    check(108, action="require_approval", rule="approve_tool")
    check(109, action="allow", rule="flaky_tool")
    check(110, tool=None, action="deny")
    check(111, tool="allowed", action="deny")
    refunds = [r for r in records if r["event"] == "refund"]
    assert [(r["tool"], r["request_id"]) for r in refunds] == [("flaky_tool", 109)]
    dropped = [r for r in records if r["event"] == "notification_dropped"]
    assert [r["method"] for r in dropped] == ["tools/call"]
    lists = [r for r in records if r["event"] == "list"]
    assert len(lists) == 1
    assert sorted(lists[0]["hidden"]) == sorted(HIDDEN) and lists[0]["shown"] == len(TOOLS) - len(HIDDEN)


def test_audit_never_holds_argument_values(guarded, tmp_path):
    audit = tmp_path / "audit.jsonl"
    g = guarded(policy={"version": "1", "rules": {"args_tool": {"arguments": {
        "type": "object", "properties": {"token": {"type": "string", "maxLength": 3}}}}}},
        extra=("--audit", str(audit)))
    assert_refused(g.call("args_tool", {"token": "sk-SECRET-123"}), "args_tool", "deny", "args_tool")
    g.barrier()
    assert [r["event"] for r in map(json.loads, audit.read_text().splitlines())] == ["start", "call"]
    assert "sk-SECRET-123" not in audit.read_text()


def test_lone_surrogate_names_without_audit(guarded):
    g = guarded(policy={"version": "1", "default": "deny", "rules": {"allowed": {}}})
    g.proc.send(b'{"jsonrpc":"2.0","id":51,"method":"tools/call","params":{"name":"x\\ud800","arguments":{}}}')
    answer = g.proc.recv(10)
    assert answer["result"]["isError"] is True and answer["result"]["_meta"][DECISION]["action"] == "deny"
    g.proc.send(b'{"jsonrpc":"2.0","id":52,"method":"tools/call","params":{"name":"allowed","arguments":{"\\ud800":1}}}')
    assert upstream_echo(g.proc.recv(10))["tool"] == "allowed"
    assert g.upstream_calls() == ["allowed"]


def test_audit_survives_lone_surrogates(guarded, tmp_path):
    audit = tmp_path / "audit.jsonl"
    g = guarded(policy={"version": "1", "default": "deny", "rules": {"allowed": {}}},
                extra=("--audit", str(audit)))
    g.proc.send(b'{"jsonrpc":"2.0","id":52,"method":"tools/call","params":{"name":"allowed","arguments":{"\\ud800":1}}}')
    assert upstream_echo(g.proc.recv(10))["tool"] == "allowed"
    g.proc.send(b'{"jsonrpc":"2.0","id":51,"method":"tools/call","params":{"name":"x\\ud800","arguments":{}}}')
    answer = g.proc.recv(10)
    assert answer["result"]["_meta"][DECISION]["action"] == "deny", answer
    g.barrier()
    assert [json.loads(line)["event"] for line in audit.read_text().splitlines()] == ["start", "call", "call"]


def test_null_arguments_are_treated_as_none(guarded):
    g = guarded()
    # The argument schema of args_tool is checked against {}: refused, not forwarded.
    assert_refused(g.call("args_tool", None), "args_tool", "deny", "args_tool")
    assert_refused(g.call("llm_job_cancel", None), "llm_job_cancel", "deny", "llm_job_cancel")
    assert upstream_echo(g.call("allowed", None)) == {"tool": "allowed", "arguments": None}
    assert g.upstream_calls() == ["allowed"]


# --- an SDK client through mcp-guard ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_sdk_client_sees_the_policy(tmp_path, mode):
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp.shared.exceptions import MCPError

    sys.path.insert(0, str(Path(__file__).parent))
    from wireclient import guard_command

    record = tmp_path / "record.jsonl"
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    command = guard_command() + ["run", "--policy", str(policy), "--", sys.executable, str(SERVER)]
    params = StdioServerParameters(command=command[0], args=command[1:],
                                   env={**os.environ, "RECORD_FILE": str(record), "TOOLS": ",".join(TOOLS),
                                        "PAGE_SIZE": "3"})

    async def session() -> None:
        with anyio.fail_after(30):
            async with Client(params, mode=mode) as client:
                names: list[str] = []
                cursor = None
                while True:
                    page = await client.list_tools(cursor=cursor)
                    names += [tool.name for tool in page.tools]
                    cursor = page.next_cursor
                    if not cursor:
                        break
                assert names == [t for t in TOOLS if t not in HIDDEN]
                ok = await client.call_tool("allowed", {"x": 1})
                assert ok.is_error is False
                refused = await client.call_tool("llm_job_cancel", {"jobId": "j"})
                assert refused.is_error is True
                assert refused.content[0].text == ("mcp-guard refused the call to llm_job_cancel: "
                                                   "cancelling a job cannot be undone.")
                assert refused.meta[DECISION]["action"] == "deny"
                if mode == "auto":
                    assert refused.result_type == "complete"
                approval = await client.call_tool("approve_tool", {})
                assert approval.is_error is True
                assert approval.meta[DECISION]["action"] == "require_approval"
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("secret_tool", {})
                assert caught.value.error.code == -32602
                assert caught.value.error.message == "Unknown tool: secret_tool"

    anyio.run(session)
    calls = [json.loads(line)["params"]["name"] for line in record.read_bytes().splitlines()
             if json.loads(line).get("method") == "tools/call"]
    assert calls[0] == "allowed" and len(calls) == 2 and PROBE_NAME.fullmatch(calls[1])  # secret_tool's probe
    first = json.loads(record.read_bytes().splitlines()[0])
    assert first["method"] == ("initialize" if mode == "legacy" else "server/discover")


# --- from the security review: parsers that read keys case-insensitively ---------------------------------

CASE_SMUGGLING = [
    # Go's encoding/json matches struct fields case-insensitively (folding ſ to s, K to k) and keeps the
    # last key: each of these is a call to a hidden or denied tool for such a server.
    b'{"jsonrpc":"2.0","id":1,"method":"ping","Method":"tools/call","params":{"name":"llm_job_cancel"}}',
    b'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"allowed","Name":"llm_job_cancel"}}',
    b'{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"allowed"},"paramS":{"name":"secret_tool"}}',
    '{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"allowed"},"param\u017f":{"name":"x"}}'.encode(),
    b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"args_tool","arguments":'
    b'{"path":"/tmp/a","PATH":"/etc/passwd"}}}',
    b'{"jsonrpc":"2.0","id":6,"result":{},"METHOD":"tools/call","params":{"name":"llm_job_cancel"}}',
    b'{"jsonrpc":"2.0","method":"notifications/x","METHOD":"tools/call","ID":7,"params":{"name":"secret_tool"}}',
    b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"allowed","NAME":"secret_tool"}}',
    b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"NAME":"secret_tool","arguments":{}}}',
    # A JSON decoder the Go SDK once used read "key\u0000" as "key" (GHSA-q382-vc8q-7jhj).
    b'{"jsonrpc":"2.0","id":10,"method":"ping","method\\u0000":"tools/call","params":{"name":"secret_tool"}}',
    b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"allowed","name\\u0000":"secret_tool"}}',
    b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"args_tool","arguments":'
    b'{"path\\u0000":"/etc/passwd"}}}',
]


@pytest.mark.parametrize("line", CASE_SMUGGLING, ids=range(len(CASE_SMUGGLING)))
def test_keys_differing_only_in_case_are_refused(guarded, line):
    g = guarded()
    g.proc.send(line)
    answer = g.proc.recv(10)
    assert "error" in answer and answer["error"]["code"] in (-32600, -32602), answer
    recorded = g.recorded_raw()
    assert line not in recorded, "an ambiguous message reached the upstream"
    assert all(b"tools/call" not in entry for entry in recorded)


def test_raw_carriage_returns_are_removed_not_forwarded(guarded):
    # An SDK reading with universal newlines would split the message at a bare CR.
    g = guarded()
    g.proc.send(b'{"jsonrpc":"2.0",\r"id":6,\r"method":"tools/call","params":{"name":"allowed"}}\r')
    answer = g.proc.recv(10)
    assert answer["id"] == 6 and "result" in answer
    assert all(b"\r" not in line for line in g.recorded_raw())


def test_stray_id_inside_a_malformed_upstream_line_fails_no_request(spawn_guard):
    # The server prints `progress: {"id": 1}` (a debug line, not JSON-RPC) before its answer to request 1:
    # the line is dropped, and since the id is not at the head of a message it fails no request.
    noticing = Path(__file__).resolve().parent / "servers" / "noticing_server.py"
    proc = spawn_guard([sys.executable, str(noticing)], policy=POLICY)
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "noisy", "arguments": {}}})
    answer = proc.recv(10)
    assert answer["id"] == 1 and answer["result"]["isError"] is False, answer
    assert proc.request(2, "ping") == {"jsonrpc": "2.0", "id": 2, "result": {}}
    deadline = time.monotonic() + 5  # stderr is read by its own thread: the line was really sent
    while "progress: {" not in proc.stderr and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "dropped a malformed message from the upstream server" in proc.stderr
    assert "progress: {" in proc.stderr


@pytest.mark.parametrize("code", ["-32603", "-32000", "0"])
def test_quota_kept_when_the_error_does_not_say_the_call_never_ran(guarded, code):
    # Only "method not found", "invalid params" and "invalid request" mean the server refused the call;
    # any other error may come after the work (or be one the client provoked, e.g. by answering the
    # server's elicitation with an error).
    g = guarded(env={"ERROR_TOOLS": "flaky_tool", "ERROR_CODE": code})
    assert "error" in g.call("flaky_tool", {})
    assert_refused(g.call("flaky_tool", {}), "flaky_tool", "deny", "flaky_tool")
    assert g.upstream_calls() == ["flaky_tool"]


def test_ids_a_javascript_server_reads_as_one_are_one_id_here(guarded):
    # 2**53 + 1 reaches a JSON.parse server as 2**53: with both in flight, its answer to one could be
    # taken as the answer to the other (an unfiltered listing under a ping's id).
    g = guarded(env={"SLOW_TOOLS": "allowed"})
    g.proc.send(b'{"jsonrpc":"2.0","id":9007199254740993,"method":"tools/call","params":{"name":"allowed",'
                b'"arguments":{"ms":300}}}')
    g.proc.send(b'{"jsonrpc":"2.0","id":9007199254740992,"method":"tools/list"}')
    first = g.proc.recv(10)
    assert first["error"]["code"] == -32600 and "in flight" in first["error"]["message"]
    assert first["id"] == 9007199254740992
    second = g.proc.recv(10)
    assert second["id"] == 9007199254740993 and "result" in second
