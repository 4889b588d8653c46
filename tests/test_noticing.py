"""Tests that notice: each one fails when a behaviour the docs promise is broken (issue 20).

An outside audit broke important lines of the package one at a time; these are the behaviours whose
breakage the suite let through. Each test here was checked by breaking the line it guards and seeing
it fail (docs/reliability.md, "Tests that notice", says how). Everything but the fail-closed test runs
the real `mcp-guard` binary (tests/conftest.py `spawn_guard`) in front of a small raw server.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from wireclient import pid_alive

SERVERS = Path(__file__).resolve().parent / "servers"
NOTICING = [sys.executable, str(SERVERS / "noticing_server.py")]
FAULTY = [sys.executable, str(SERVERS / "faulty_server.py")]
RAW = [sys.executable, str(SERVERS / "relay_raw_server.py")]
STATELESS = {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}
DECISION = "mcp-guard/decision"

pytestmark = pytest.mark.timeout(120)


def recorded(path: Path) -> list[Any]:
    try:
        lines = path.read_bytes().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def wait_for(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def call(proc: Any, request_id: Any, name: str, arguments: Any = None, **params: Any) -> Any:
    body: dict[str, Any] = {"name": name, **params}
    if arguments is not None:
        body["arguments"] = arguments
    return proc.request(request_id, "tools/call", body, timeout=20)


# --- 1 and 2: signals -------------------------------------------------------------------------------
# (Every request in flight at a signal gets -32001: tests/test_faults.py
# test_signal_stops_child_and_exits_128_plus_signal.)


def test_a_second_signal_during_shutdown_kills_the_group_at_once(spawn_guard):
    """The child ignores stdin's EOF and SIGTERM, and mcp-guard would give it 30 s of grace: a second
    signal cuts that short (SIGKILL to the group, grandchild included), and the exit status is still
    128 + the first signal."""
    proc = spawn_guard(RAW, extra=("--shutdown-grace", "30"),
                       env={"RELAY_IGNORE_EOF": "1", "RELAY_IGNORE_TERM": "1"})
    pids = proc.request(1, "raw/pids", {}, timeout=20)["result"]
    child, grandchild = pids["pid"], pids["grandchild"]
    try:
        proc.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "received SIGTERM" in proc.stderr, what="mcp-guard to take the first signal")
        time.sleep(0.3)  # into the child's grace period
        assert proc.proc.poll() is None and pid_alive(child)
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 128 + signal.SIGTERM
        # Without the second signal this takes the 30 s grace (+ 2 s after an ignored SIGTERM).
        assert time.monotonic() - started < 10
        assert gone(child, 5), "the child outlived the second signal"
        assert gone(grandchild, 5), "the child's process group outlived the second signal"
    finally:
        for pid in (child, grandchild):
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_request_read_after_a_signal_is_answered_and_never_forwarded(spawn_guard, tmp_path):
    """Once a signal has started the shutdown, what the client still sends is answered -32001 and does
    not reach the child: an answer the child gave could be cut off by mcp-guard's exit (the parallel
    sessions stress test lost hundreds of requests this way)."""
    record = tmp_path / "record.jsonl"
    proc = spawn_guard(FAULTY, extra=("--shutdown-grace", "3"),
                       env={"FAULT": "ignore_term", "RECORD_FILE": str(record)})
    proc.initialize()
    assert proc.request(1, "ping", timeout=20) == {"jsonrpc": "2.0", "id": 1, "result": {}}
    proc.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: "received SIGTERM" in proc.stderr, what="mcp-guard to take the signal")
    answer = proc.request(2, "ping", timeout=20)
    assert answer == {"jsonrpc": "2.0", "id": 2, "error": {
        "code": -32001, "message": "mcp-guard received SIGTERM and stopped before the upstream server answered"}}
    assert proc.wait(20) == 128 + signal.SIGTERM
    assert [m.get("id") for m in recorded(record) if "method" in m and "id" in m] == [0, 1]


# --- 3: $ref ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref,problem", [
    ("#/$defs/missing", "points to nothing"),
    ("#/properties/nowhere", "points to nothing"),
    ("https://example.com/schema.json", "points outside the policy"),
    ("other.json#/$defs/x", "points outside the policy"),
])
def test_a_ref_outside_the_schema_or_to_nothing_stops_the_policy_load(spawn_guard, tmp_path, ref, problem):
    started = tmp_path / "server-started"
    server = [sys.executable, "-c", f"open({str(started)!r}, 'w').close()"]
    policy = {"version": "1", "rules": {"t": {"arguments": {"type": "object", "$defs": {"real": {}},
                                                         "properties": {"a": {"$ref": ref}}}}}}
    proc = spawn_guard(server, policy=policy)
    assert proc.wait(20) == 2
    assert proc.recv_raw(5) is None  # nothing on stdout
    assert "$ref" in proc.stderr and problem in proc.stderr, proc.stderr
    assert not started.exists(), "the server was started under a policy that did not load"


def test_a_ref_to_a_real_definition_loads(spawn_guard, tmp_path):
    """The counterpart: a $ref that resolves inside the schema is accepted and enforced."""
    policy = {"version": "1", "rules": {"t": {"arguments": {
        "type": "object", "$defs": {"path": {"type": "string", "pattern": "^/tmp/"}},
        "properties": {"path": {"$ref": "#/$defs/path"}}}}}}
    proc = spawn_guard(NOTICING, policy=policy)
    proc.initialize()
    refused = call(proc, 1, "t", {"path": "/etc/passwd"})
    assert refused["result"]["isError"] is True and refused["result"]["_meta"][DECISION]["action"] == "deny"
    assert json.loads(call(proc, 2, "t", {"path": "/tmp/x"})["result"]["content"][0]["text"])["tool"] == "t"


# --- 4 and 5: listings --------------------------------------------------------------------------------

HIDE_SECRET = {"version": "1", "hide": ["secret_tool"]}


def test_a_listing_over_one_mib_is_still_filtered(spawn_guard):
    """Answers over 1 MiB skip decoding only when nothing pending needs inspecting: a pending tools/list
    does."""
    proc = spawn_guard(NOTICING, policy=HIDE_SECRET, env={"LISTING": "big"})
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    raw = proc.recv_raw(30)
    assert raw is not None and len(raw) > 1024 * 1024  # the server wrote 2 MiB; one third is hidden
    assert b"secret_tool" not in raw
    assert [tool["name"] for tool in json.loads(raw)["result"]["tools"]] == ["allowed", "ask"]
    # A large answer nothing needs to inspect still passes (by the shortcut), whole.
    answer = call(proc, 6, "allowed", {"text": "y" * (2 * 1024 * 1024)})
    assert json.loads(answer["result"]["content"][0]["text"])["arguments"]["text"] == "y" * (2 * 1024 * 1024)


@pytest.mark.parametrize("listing", ["not_a_list", "no_name", "name_number", "not_object"])
def test_a_listing_mcp_guard_cannot_read_is_replaced_by_an_error(spawn_guard, listing):
    proc = spawn_guard(NOTICING, policy=HIDE_SECRET, env={"LISTING": listing})
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "tools/list"})
    raw = proc.recv_raw(20)
    assert raw is not None and b"secret_tool" not in raw, raw
    answer = json.loads(raw)
    assert answer["id"] == 5 and "result" not in answer
    assert answer["error"]["code"] == -32603, answer
    assert proc.request(6, "ping", timeout=20) == {"jsonrpc": "2.0", "id": 6, "result": {}}


# --- 6: fail closed -----------------------------------------------------------------------------------


def test_an_exception_in_the_decision_fails_closed(tmp_path):
    """In process, because no input makes the guard raise today (a bug that did would be fixed, and the
    test would lose its trigger): the relay with an interceptor that raises on one tool, in front of the
    real noticing server over real pipes. The request is answered -32603 and never reaches the server;
    the session goes on. (The relay's interceptor contract is the seam; nothing is patched.)"""
    import anyio

    from mcp_guard import wire
    from mcp_guard.actions import Forward, PassThrough
    from mcp_guard.relay import Options, Relay
    from mcp_guard.upstream import Upstream

    class Raising(PassThrough):
        def client_request(self, msg: wire.Message) -> Any:
            params = msg.params if isinstance(msg.params, dict) else {}
            if params.get("name") == "explodes":
                raise RuntimeError("a bug in the decision")
            return Forward()

    record = tmp_path / "record.jsonl"
    upstream = Upstream.start(NOTICING, env={**os.environ, "RECORD_FILE": str(record)})
    client_r, client_w = os.pipe()
    out_r, out_w = os.pipe()
    relay = Relay(client_r, out_w, upstream, Raising(), Options(drain_timeout=5, shutdown_grace=1))
    answers: list[Any] = []

    def client() -> None:
        with os.fdopen(client_w, "wb", buffering=0) as writer, os.fdopen(out_r, "rb") as reader:
            for request_id, name in ((1, "explodes"), (2, "allowed")):
                writer.write(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                         "params": {"name": name, "arguments": {}}}).encode() + b"\n")
                answers.append(json.loads(reader.readline()))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()

    async def bounded() -> int:
        with anyio.fail_after(30):
            return await relay.run()

    assert anyio.run(bounded) == 0
    thread.join(10)
    assert answers[0] == {"jsonrpc": "2.0", "id": 1, "error": {
        "code": -32603, "message": "mcp-guard could not decide on this request; it was not sent"}}
    assert answers[1]["id"] == 2 and "result" in answers[1]
    assert [m["params"]["name"] for m in recorded(record) if m.get("method") == "tools/call"] == ["allowed"]


# --- 7: Retry after N s -------------------------------------------------------------------------------


def test_retry_after_is_rounded_up(spawn_guard):
    """Three windows whose fractions are 0.3 apart: whatever the time between the charge and the refusal,
    at least one retry_after has a fraction below 0.5, so rounding to nearest (or down) is caught."""
    windows = {"w1": 1000.1, "w2": 1000.4, "w3": 1000.7}
    policy = {"version": "1", "rules": {name: {"rate_limit": {"max": 1, "window": window}}
                                        for name, window in windows.items()}}
    proc = spawn_guard(NOTICING, policy=policy)
    proc.initialize()
    for index, name in enumerate(windows):
        assert call(proc, 10 + index, name, {})["result"]["isError"] is False
    for index, name in enumerate(windows):
        result = call(proc, 20 + index, name, {})["result"]
        retry_after = result["_meta"][DECISION]["retry_after"]
        assert 990 < retry_after <= windows[name]
        text = result["content"][0]["text"]
        match = re.fullmatch(r"mcp-guard refused the call to \w+: rate limit reached: at most 1 call\(s\) per "
                             r"[0-9.]+ s\. Retry after (\d+) s\.", text)
        assert match is not None, text
        assert int(match.group(1)) == math.ceil(retry_after), (text, retry_after)


# --- 8: eras and start-up -----------------------------------------------------------------------------


def test_server_discover_then_initialize_is_a_handshake_connection(spawn_guard):
    """An SDK client in auto mode probes server/discover, then falls back to initialize: from then on the
    connection is a handshake one, and refusals carry no stateless resultType."""
    proc = spawn_guard(NOTICING, policy={"version": "1", "rules": {"blocked": {"action": "deny", "reason": "no"}}})
    assert "result" in proc.request(1, "server/discover", {"_meta": STATELESS}, timeout=20)
    stateless = call(proc, 2, "blocked", {})["result"]
    assert stateless["isError"] is True and stateless["resultType"] == "complete"
    assert "result" in proc.initialize()
    handshake = call(proc, 3, "blocked", {})["result"]
    assert handshake["isError"] is True and "resultType" not in handshake, handshake


def test_a_command_that_is_not_executable_exits_126(spawn_guard, tmp_path):
    script = tmp_path / "server.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    proc = spawn_guard([str(script)])
    assert proc.wait(20) == 126
    assert "not executable" in proc.stderr, proc.stderr
    assert proc.recv_raw(5) is None


# --- stateless retries --------------------------------------------------------------------------------


def test_a_stateless_retry_with_its_request_state_is_not_charged_again_and_only_once(spawn_guard, tmp_path):
    """2026-07-28: a tool that needs input answers input_required with a requestState; the client retries
    the same call with the input and that requestState. The retry is the same call, not charged again
    (the limit is 1), and the requestState is good for one retry only."""
    record = tmp_path / "record.jsonl"
    policy = {"version": "1", "rules": {"ask": {"rate_limit": {"max": 1, "window": 3600}}}}
    proc = spawn_guard(NOTICING, policy=policy, env={"RECORD_FILE": str(record)})
    meta = {"_meta": STATELESS}
    arguments = {"question": "go?"}
    first = call(proc, 1, "ask", arguments, **meta)["result"]
    assert first["resultType"] == "input_required" and first["requestState"] == "state-1"
    responses = {"confirm": {"action": "accept", "content": {}}}
    retry = call(proc, 2, "ask", arguments, inputResponses=responses, requestState="state-1", **meta)["result"]
    assert retry["isError"] is False, retry
    assert json.loads(retry["content"][0]["text"])["requestState"] == "state-1"
    again = call(proc, 3, "ask", arguments, inputResponses=responses, requestState="state-1", **meta)["result"]
    assert again["isError"] is True and again["_meta"][DECISION]["reason"].startswith("rate limit reached"), again
    made_up = call(proc, 4, "ask", arguments, inputResponses=responses, requestState="state-9", **meta)["result"]
    assert made_up["isError"] is True and DECISION in made_up["_meta"], made_up
    calls = [m for m in recorded(record) if m.get("method") == "tools/call"]
    assert [(m["id"], m["params"].get("requestState")) for m in calls] == [(1, None), (2, "state-1")]


# --- tests written for mutants that survived scripts/mutation.py (docs/reliability.md) -------------------

RECORDING = [sys.executable, str(SERVERS / "recording_server.py")]
BLOCKED = {"version": "1", "rules": {"blocked": {"action": "deny", "reason": "no"}}}


def test_only_notifications_cancelled_cancels_a_call(spawn_guard, tmp_path):
    """Another notification that names a call in flight does not cancel it: the server's -32602 still
    gives the call's quota back."""
    policy = {"version": "1", "rules": {"flaky": {"rate_limit": {"max": 1, "window": 3600}}}}
    proc = spawn_guard(RECORDING, policy=policy, env={"TOOLS": "flaky", "ERROR_TOOLS": "flaky", "SLOW_TOOLS": "flaky",
                                                      "RECORD_FILE": str(tmp_path / "record.jsonl")})
    proc.initialize()
    proc.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call",
               "params": {"name": "flaky", "arguments": {"ms": 300}}})
    proc.send({"jsonrpc": "2.0", "method": "notifications/progress",
               "params": {"progressToken": 7, "progress": 1, "requestId": 7}})
    assert proc.recv(20)["error"]["code"] == -32602
    again = call(proc, 8, "flaky", {})
    assert again["error"]["code"] == -32602, again  # the server's answer again, not mcp-guard's refusal


def test_a_first_stateless_request_that_is_not_discover_makes_the_connection_stateless(spawn_guard):
    proc = spawn_guard(NOTICING, policy=BLOCKED)
    assert "result" in proc.request(1, "tools/list", {"_meta": STATELESS}, timeout=20)
    refused = call(proc, 2, "blocked", {})["result"]  # no _meta: the connection's era answers
    assert refused["isError"] is True and refused["resultType"] == "complete", refused


def test_after_initialize_only_server_discover_can_make_the_connection_stateless(spawn_guard):
    """The era is read from the client's first requests: after initialize, a request that carries a
    stateless version is answered in that era itself, but the connection stays a handshake one."""
    proc = spawn_guard(NOTICING, policy=BLOCKED)
    assert "result" in proc.initialize()
    assert call(proc, 1, "blocked", {}, _meta=STATELESS)["result"]["resultType"] == "complete"
    handshake = call(proc, 2, "blocked", {})["result"]
    assert handshake["isError"] is True and "resultType" not in handshake, handshake


def test_unknown_call_params_pass(spawn_guard):
    """Only a key that is "name" or "arguments" in another case is ambiguous; others are the server's."""
    proc = spawn_guard(NOTICING, policy=BLOCKED)
    proc.initialize()
    answer = call(proc, 1, "allowed", {}, **{"x-trace": "abc"})
    assert answer["result"]["isError"] is False, answer


def test_request_states_are_remembered_for_the_last_1024_calls(spawn_guard):
    """The continuations are bounded: 1025 calls answered input_required leave the last 1024 states good
    (a retry with one is free) and the first one forgotten (its retry is charged as a new call)."""
    policy = {"version": "1", "rules": {"ask": {"rate_limit": {"max": 1026, "window": 3600}}}}
    proc = spawn_guard(NOTICING, policy=policy)
    proc.initialize()
    proc.send(b"".join(json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call",
                                   "params": {"name": "ask", "arguments": {}}}).encode() + b"\n"
                       for i in range(1, 1026)))
    states = {proc.recv(30)["result"]["requestState"] for _ in range(1025)}
    assert len(states) == 1025 and "state-1" in states
    responses = {"confirm": {"action": "accept", "content": {}}}

    def retry(request_id: int, state: str) -> Any:
        return call(proc, request_id, "ask", {}, inputResponses=responses, requestState=state)["result"]

    assert retry(2001, "state-2")["isError"] is False  # remembered: free
    assert retry(2002, "state-1")["isError"] is False  # forgotten: charged, the 1026th
    assert retry(2003, "state-3")["isError"] is False  # remembered: free
    full = call(proc, 2004, "ask", {})["result"]
    assert full["isError"] is True and full["_meta"][DECISION]["reason"].startswith("rate limit reached"), full


def test_an_oversized_listing_is_answered_with_an_error(spawn_guard):
    proc = spawn_guard(NOTICING, policy=HIDE_SECRET, extra=("--max-message-bytes", str(1024 * 1024)),
                       env={"LISTING": "big"})
    proc.initialize()
    answer = proc.request(5, "tools/list", timeout=30)
    assert answer["error"]["code"] == -32002 and "result" not in answer, answer
    assert proc.request(6, "ping", timeout=20) == {"jsonrpc": "2.0", "id": 6, "result": {}}


def test_the_audit_log_holds_no_argument_value_of_any_shape(spawn_guard, tmp_path):
    """An object argument that breaks the schema, or too many arguments: the refusal's reason and the audit
    record name the argument, never its value (objects and the whole arguments used to be quoted)."""
    audit = tmp_path / "audit.jsonl"
    policy = {"version": "1", "rules": {"t": {"arguments": {
        "type": "object", "maxProperties": 1, "properties": {"x": {"type": "string"}}}}}}
    proc = spawn_guard(NOTICING, policy=policy, extra=("--audit", str(audit)))
    proc.initialize()
    for request_id, arguments in ((1, {"x": {"secret": "hunter2"}}), (2, {"x": "a", "y": "hunter2"})):
        answer = call(proc, request_id, "t", arguments)
        assert answer["result"]["isError"] is True and "hunter2" not in json.dumps(answer), answer
    assert proc.request(3, "ping", timeout=20)["result"] == {}
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["event"] for r in records if r["event"] == "call"] == ["call", "call"]
    assert "hunter2" not in audit.read_text()


@pytest.mark.parametrize("key", ["Arguments", "ARGUMENTS", "argument\u017f"])
def test_a_call_param_that_is_name_or_arguments_in_another_case_is_refused(spawn_guard, tmp_path, key):
    """Alone (no exact duplicate for the parser to catch), "Arguments" or "argument\\u017f" would be read as the
    arguments by a case-insensitive server, unchecked by the policy's schema: refused, never forwarded."""
    record = tmp_path / "record.jsonl"
    policy = {"version": "1", "rules": {"t": {"arguments": {"properties": {"path": {"pattern": "^/tmp/"}}}}}}
    proc = spawn_guard(NOTICING, policy=policy, env={"RECORD_FILE": str(record)})
    proc.initialize()
    answer = proc.request(1, "tools/call", {"name": "t", key: {"path": "/etc/passwd"}}, timeout=20)
    assert answer["error"]["code"] == -32602 and "ambiguous" in answer["error"]["message"], answer
    assert proc.request(2, "ping", timeout=20)["result"] == {}
    assert [m for m in recorded(record) if m.get("method") == "tools/call"] == []


def test_a_connection_that_never_says_stateless_is_not_stateless(spawn_guard):
    """No initialize and no protocol version in _meta (a client that skips the handshake): refusals carry
    no stateless resultType."""
    proc = spawn_guard(NOTICING, policy=BLOCKED)
    for request_id in (1, 2):
        refused = call(proc, request_id, "blocked", {})["result"]
        assert refused["isError"] is True and "resultType" not in refused, refused
