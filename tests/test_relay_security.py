"""Regression tests, through the real binary, for the relay's findings of the security reviews
(issues 13 and 19): cancelled requests, a stderr nobody reads, argument checks that take long, and
long-lived 2026-07-28 streams at shutdown."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from wireclient import WireProcess, guard_command

HERE = Path(__file__).resolve().parent
SERVERS = HERE / "servers"
STREAM_SERVER = [sys.executable, str(SERVERS / "stream_server.py")]
FAULTY_SERVER = [sys.executable, str(SERVERS / "faulty_server.py")]
SCRIPTED_SERVER = [sys.executable, str(SERVERS / "scripted_server.py")]
LISTEN_SERVER = [sys.executable, str(SERVERS / "listen_server.py")]

STATELESS_META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                  "io.modelcontextprotocol/clientInfo": {"name": "wire-test", "version": "1"},
                  "io.modelcontextprotocol/clientCapabilities": {}}

pytestmark = pytest.mark.timeout(120)


def cancel(request_id: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": request_id}}


def call(request_id: Any, name: str, arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


def rest_of(proc: WireProcess, timeout: float = 10.0) -> list[Any]:
    """Every line the process still writes until it closes its stdout."""
    lines = []
    deadline = time.monotonic() + timeout
    while True:
        line = proc.recv_raw(max(0.01, deadline - time.monotonic()))
        if line is None:
            return lines
        lines.append(json.loads(line))


def vm_kib(pid: int, field: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


# --- issue 13 item 2: cancelled requests ----------------------------------------------------------


def test_a_cancelled_request_is_not_waited_for_nor_answered(spawn_guard, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    proc = spawn_guard(STREAM_SERVER, env={"RECORD_FILE": str(record)})  # default --drain-timeout 30 s
    proc.send({"jsonrpc": "2.0", "id": 5, "method": "slow/never"})
    proc.send(cancel(5))
    assert proc.request(6, "ping")["result"] == {}
    started = time.monotonic()
    proc.close_stdin()
    lines = rest_of(proc)
    assert proc.wait(10) == 0
    took = time.monotonic() - started
    # Within the shutdown grace (3 s), not the drain's 30 s; and no -32001 for an id the client gave up on.
    assert took < 3.0, f"took {took:.1f} s"
    assert lines == [], lines
    # The notification itself still reached the server.
    received = [json.loads(line) for line in record.read_text().splitlines()]
    assert {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5}} in received


def test_a_cancelled_id_can_be_used_again(spawn_guard) -> None:
    proc = spawn_guard(STREAM_SERVER)
    proc.send({"jsonrpc": "2.0", "id": "x", "method": "slow/never"})
    busy = proc.request("x", "ping")
    assert busy["error"]["code"] == -32600  # in flight: refused, as before
    proc.send(cancel("x"))
    again = proc.request("x", "tools/list")
    assert again["result"]["tools"][0]["name"] == "echo"
    proc.close_stdin()
    assert rest_of(proc) == []
    assert proc.wait(10) == 0


def test_a_late_answer_to_a_cancelled_request_is_dropped(spawn_guard, tmp_path: Path) -> None:
    # The scripted server holds the answer to 7 back and writes it after the cancel has passed.
    script = [{"action": "hold"}, {"release": "fifo"}]
    proc = spawn_guard(SCRIPTED_SERVER, env={"SCRIPT": json.dumps(script), "IDLE_RELEASE": "30"})
    proc.send({"jsonrpc": "2.0", "id": 7, "method": "ping"})
    proc.send(cancel(7))
    assert proc.request(8, "ping")["result"] == {}
    assert proc.request(9, "ping")["result"] == {}  # the late answer to 7 came before this one
    assert not any(m.get("id") == 7 for m in proc.other if isinstance(m, dict))
    proc.close_stdin()
    assert rest_of(proc) == []
    assert proc.wait(10) == 0
    assert "unknown id" not in proc.stderr  # recognised as the late answer it is (logged at info only)


@pytest.mark.parametrize("late_first", [True, False])
def test_a_late_listing_under_a_reused_id_is_still_filtered(spawn_guard, late_first: bool) -> None:
    """The client cancels a tools/list and reuses its id for a ping; the server answers the listing
    anyway. Whichever answer comes first under that id, a hidden tool never reaches the client."""
    policy = {"version": "1", "hide": ["secret"]}
    # Step 1 (the listing): held back. Step 2 (the ping with the same id): answered or held, then both
    # released in arrival order, so the listing comes first or second.
    second = {"action": "hold", "release": "fifo"} if late_first else {"release": "fifo"}
    script = [{"action": "hold"}, second]
    proc = spawn_guard(SCRIPTED_SERVER, policy=policy,
                       env={"SCRIPT": json.dumps(script), "IDLE_RELEASE": "30", "TOOLS": "echo,secret"})
    proc.send({"jsonrpc": "2.0", "id": 3, "method": "tools/list"})
    proc.send(cancel(3))
    proc.send({"jsonrpc": "2.0", "id": 3, "method": "ping"})
    answer = proc.recv()
    assert answer["id"] == 3
    if late_first:
        assert [tool["name"] for tool in answer["result"]["tools"]] == ["echo"]
    else:
        assert answer["error"]["code"] == -32603  # the ping's answer, checked as a listing: fail closed
    assert proc.request(4, "tools/list")["result"]["tools"] == [{"name": "echo", "description": "the echo tool",
                                                                  "inputSchema": {"type": "object"}}]
    proc.close_stdin()
    everything = json.dumps([answer, *proc.other, *rest_of(proc)])
    assert "secret" not in everything
    assert proc.wait(10) == 0


def test_a_cancel_stops_a_deferred_call_before_it_is_forwarded(spawn_guard, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    policy = {"version": "1", "limits": {"argument_check_seconds": 5},
              "rules": {"echo": {"arguments": {"type": "object",
                                               "properties": {"tags": {"type": "array", "uniqueItems": True}}}}}}
    proc = spawn_guard(STREAM_SERVER, policy=policy, env={"RECORD_FILE": str(record)})
    slow = {"tags": [{"n": n} for n in range(6000)]}  # seconds of checking
    proc.send(call(9, "echo", slow))
    proc.send(cancel(9))
    assert proc.request(10, "ping", timeout=2)["result"] == {}
    # The id is free again at once; a cheap call under it is checked, forwarded and answered.
    answer = proc.request(9, "tools/call", {"name": "echo", "arguments": {"tags": ["a"]}}, timeout=10)
    assert answer["result"]["content"][0]["text"] == '{"tags": ["a"]}'
    time.sleep(0.5)
    proc.close_stdin()
    assert rest_of(proc) == []
    assert proc.wait(10) == 0
    calls = [json.loads(line) for line in record.read_text().splitlines() if b"tools/call" in line.encode()]
    assert len(calls) == 1 and calls[0]["params"]["arguments"] == {"tags": ["a"]}


@pytest.mark.parametrize("charged", [False, True], ids=["no-policy", "rate-limited-calls"])
def test_memory_of_100000_cancel_pairs_stays_bounded(spawn_guard, charged: bool) -> None:
    if charged:
        # Every call is charged and watched by the guard (for a refund): the cancel must end that too.
        policy = {"version": "1", "rules": {"never": {"rate_limit": {"max": 1_000_000_000, "window": 1}}}}
        proc = spawn_guard(STREAM_SERVER, policy=policy)
        request = b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"never","arguments":{}}}\n'
    else:
        proc = spawn_guard(STREAM_SERVER)
        request = b'{"jsonrpc":"2.0","id":%d,"method":"slow/never"}\n'

    def pairs(start: int, count: int) -> None:
        assert proc.proc.stdin is not None
        chunk = []
        for n in range(start, start + count):
            chunk.append(request % n
                         + b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":%d}}\n' % n)
            if len(chunk) == 1000:
                proc.proc.stdin.write(b"".join(chunk))
                chunk = []
        proc.proc.stdin.write(b"".join(chunk))
        proc.proc.stdin.flush()

    pairs(0, 10_000)  # warm up: caches, the cancelled-id memory full
    assert proc.request("sync-1", "ping", timeout=60)["result"] == {}
    before = vm_kib(proc.pid)
    started = time.monotonic()
    pairs(10_000, 100_000)
    assert proc.request("sync-2", "ping", timeout=120)["result"] == {}
    took = time.monotonic() - started
    after = vm_kib(proc.pid)
    print(f"\n100,000 cancel pairs ({'charged calls' if charged else 'no policy'}) in {took:.1f} s: "
          f"VmRSS {before / 1024:.1f} MiB -> {after / 1024:.1f} MiB")
    assert after - before < 4 * 1024, f"VmRSS grew from {before} KiB to {after} KiB"
    assert proc.other == []  # nothing was answered for any cancelled request
    proc.close_stdin()
    assert proc.wait(10) == 0


# --- issue 19 item 4: long-lived streams ---------------------------------------------------------


def test_an_open_listen_stream_does_not_hold_the_shutdown(spawn_guard) -> None:
    """A real SDK server (MCPServer serves subscriptions/listen): its stream is never answered while the
    session lasts, so closing stdin must not wait the 30 s drain, nor answer it with -32001."""
    proc = spawn_guard(LISTEN_SERVER)
    proc.send({"jsonrpc": "2.0", "id": "listen-1", "method": "subscriptions/listen",
               "params": {"_meta": STATELESS_META, "notifications": {"toolsListChanged": True}}})
    ack = proc.recv(timeout=30)
    assert ack["method"] == "notifications/subscriptions/acknowledged"
    echoed = proc.request(2, "tools/call", {"name": "echo", "arguments": {"text": "hi"}, "_meta": STATELESS_META})
    assert echoed["result"]["content"][0]["text"] == "hi"
    started = time.monotonic()
    proc.close_stdin()
    lines = rest_of(proc, timeout=30)
    assert proc.wait(30) == 0
    took = time.monotonic() - started
    assert took < 5.0, f"shutdown took {took:.1f} s"
    assert not any(line.get("error", {}).get("code") == -32001 for line in lines), lines


def test_a_stream_the_server_ends_is_no_longer_pending(spawn_guard) -> None:
    proc = spawn_guard(STREAM_SERVER)
    proc.send({"jsonrpc": "2.0", "id": 1, "method": "subscriptions/listen",
               "params": {"_meta": STATELESS_META, "notifications": {"toolsListChanged": True}}})
    assert proc.recv()["method"] == "notifications/subscriptions/acknowledged"
    # While the stream is open, its id is in use; the server ends it the spec's way (stdio).
    assert proc.request(1, "ping")["error"]["code"] == -32600
    assert proc.request(2, "stream/end", {"id": 1})["result"] == {}
    assert proc.other[-1]["method"] == "notifications/cancelled"  # passed on to the client
    assert proc.request(1, "ping")["result"] == {}
    proc.send({"jsonrpc": "2.0", "id": 3, "method": "subscriptions/listen", "params": {"_meta": STATELESS_META}})
    assert proc.recv()["method"] == "notifications/subscriptions/acknowledged"
    started = time.monotonic()
    proc.close_stdin()
    assert rest_of(proc) == []
    assert proc.wait(10) == 0 and time.monotonic() - started < 3.0


def test_sigterm_fails_requests_but_not_an_open_stream(spawn_guard) -> None:
    proc = spawn_guard(STREAM_SERVER)
    proc.send({"jsonrpc": "2.0", "id": "listen", "method": "subscriptions/listen",
               "params": {"_meta": STATELESS_META, "notifications": {"toolsListChanged": True}}})
    assert proc.recv()["method"] == "notifications/subscriptions/acknowledged"
    proc.send({"jsonrpc": "2.0", "id": "slow", "method": "slow/never"})
    assert proc.request("sync", "ping")["result"] == {}
    os.kill(proc.pid, signal.SIGTERM)
    lines = rest_of(proc)
    assert proc.wait(10) == 128 + signal.SIGTERM
    assert [(line["id"], line["error"]["code"]) for line in lines] == [("slow", -32001)]


# --- issue 13 item 4: a stderr nobody reads --------------------------------------------------------


def _guard_with_unread_stderr(server: list[str], policy_path: Path, env: dict[str, str] | None = None
                              ) -> tuple[subprocess.Popen[bytes], int]:
    read_end, write_end = os.pipe()
    proc = subprocess.Popen(guard_command() + ["run", "--policy", str(policy_path), "--", *server],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=write_end,
                            env={**os.environ, **(env or {})})
    os.close(write_end)
    return proc, read_end


def _read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float) -> list[Any]:
    assert proc.stdout is not None
    answers: list[Any] = []

    def reader() -> None:
        assert proc.stdout is not None
        for _ in range(count):
            line = proc.stdout.readline()
            if not line:
                return
            answers.append(json.loads(line))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    return answers


def test_a_stderr_nobody_reads_stops_neither_the_relay_nor_sigterm(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "rules": {"secret": {"action": "deny"}}}))
    proc, stderr_read = _guard_with_unread_stderr(FAULTY_SERVER, policy)
    try:
        assert proc.stdin is not None
        calls = b"".join(json.dumps(call(n, "secret", {"n": n})).encode() + b"\n" for n in range(3000))
        threading.Thread(target=lambda: (proc.stdin.write(calls), proc.stdin.flush()), daemon=True).start()
        answers = _read_lines(proc, 3000, timeout=60)
        assert len(answers) == 3000, f"{len(answers)} of 3000 refusals answered"
        assert all(a["result"]["isError"] for a in answers)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        took = time.monotonic() - started
        assert took < 2.0, f"SIGTERM took {took:.1f} s"
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(stderr_read)


def test_a_flood_on_the_servers_stderr_nobody_reads_does_not_stop_it(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1"}))
    proc, stderr_read = _guard_with_unread_stderr(FAULTY_SERVER, policy, {"FAULT": "stderr_flood", "STDERR_MB": "1"})
    try:
        assert proc.stdin is not None
        for n in range(20):
            proc.stdin.write(json.dumps(call(n, "echo", {"n": n})).encode() + b"\n")
        proc.stdin.flush()
        answers = _read_lines(proc, 20, timeout=30)
        assert sorted(a["id"] for a in answers) == list(range(20))
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 128 + signal.SIGTERM
        assert time.monotonic() - started < 3.0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(stderr_read)


def test_dropped_diagnostics_are_counted_once_stderr_drains(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"version": "1", "rules": {"secret": {"action": "deny"}}}))
    proc, stderr_read = _guard_with_unread_stderr(FAULTY_SERVER, policy)
    try:
        assert proc.stdin is not None
        # 10,000 refusals log about 800 KB: more than the pipe and mcp-guard's queue hold together.
        calls = b"".join(json.dumps(call(n, "secret", {})).encode() + b"\n" for n in range(10_000))
        threading.Thread(target=lambda: (proc.stdin.write(calls), proc.stdin.flush()), daemon=True).start()
        assert len(_read_lines(proc, 10_000, timeout=60)) == 10_000
        # Now someone reads stderr: what was queued is written, then one line says what was dropped.
        seen = b""
        deadline = time.monotonic() + 10
        # (not just "dropped": the start-up line names the policy file, whose test directory says it too)
        while b"stderr was not being read" not in seen and time.monotonic() < deadline:
            if select.select([stderr_read], [], [], 0.5)[0]:
                seen += os.read(stderr_read, 1 << 20)
        assert b"mcp-guard: warning: stderr was not being read: dropped " in seen, seen[-3000:]
        assert seen.count(b"stderr was not being read") == 1
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(stderr_read)


# --- issue 19 item 1: argument checks off the pump, within a budget ------------------------------------

TAGS_ISSUE = {"type": "object",
              "properties": {"tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}}
TAGS_ANY = {"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}


def _tags_message(request_id: Any, count: int = 8000) -> bytes:
    message = json.dumps(call(request_id, "echo", {"tags": [{"k": n} for n in range(count)]}),
                         separators=(",", ":")).encode()
    return message


@pytest.mark.parametrize("schema", [TAGS_ISSUE, TAGS_ANY], ids=["the-issue's-schema", "items-unconstrained"])
def test_an_expensive_argument_check_stalls_nothing(spawn_guard, schema: dict[str, Any]) -> None:
    proc = spawn_guard(STREAM_SERVER, policy={"version": "1", "rules": {"echo": {"arguments": schema}}})
    assert proc.request(0, "ping")["result"] == {}
    message = _tags_message(1)
    assert 80 * 1024 < len(message) < 100 * 1024  # the 85 KiB message of the report
    started = time.monotonic()
    proc.send(message)
    pong = proc.request(2, "ping", timeout=5)
    ping_took = time.monotonic() - started
    assert pong["result"] == {}
    assert ping_took < 0.5, f"a ping behind the expensive call took {ping_took:.3f} s"
    refusal = proc.recv(timeout=5) if not proc.other else proc.other.pop(0)
    refused_after = time.monotonic() - started
    assert refusal["id"] == 1 and refusal["result"]["isError"] is True
    reason = refusal["result"]["_meta"]["mcp-guard/decision"]["reason"]
    if schema is TAGS_ANY:
        assert reason.startswith("the arguments are too costly to check"), reason
        assert 0.9 < refused_after < 2.0, refused_after  # the default budget, 1 s
    else:
        assert "tags[0]" in reason, reason  # the first error, found at once
        assert refused_after < 1.0
    proc.close_stdin()
    assert proc.wait(10) == 0


def test_sigterm_during_an_expensive_argument_check_ends_mcp_guard_at_once(spawn_guard) -> None:
    policy = {"version": "1", "limits": {"argument_check_seconds": 30},
              "rules": {"echo": {"arguments": TAGS_ANY}}}
    proc = spawn_guard(STREAM_SERVER, policy=policy)
    assert proc.request(0, "ping")["result"] == {}
    proc.send(_tags_message(1))
    time.sleep(0.5)  # the check is running
    assert proc.request(2, "ping", timeout=2)["result"] == {}
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(10) == 128 + signal.SIGTERM
    took = time.monotonic() - started
    assert took < 1.0, f"SIGTERM took {took:.2f} s"
    # The call in flight (its decision not made) was answered, not forwarded.
    lines = [*proc.other, *rest_of(proc)]
    assert [line["id"] for line in lines] == [1] and lines[0]["error"]["code"] == -32001


def test_a_huge_argument_is_refused_by_size_without_being_checked(spawn_guard, tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    schema = {"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}}}}
    proc = spawn_guard(STREAM_SERVER, policy={"version": "1", "rules": {"echo": {"arguments": schema}}},
                       env={"RECORD_FILE": str(record)})
    message = json.dumps(call(1, "echo", {"numbers": [0] * 1_000_000}), separators=(",", ":")).encode()
    assert len(message) > 1.9 * 1024 * 1024  # the report's 1.9 MiB array of a million integers
    assert proc.request(0, "ping")["result"] == {}  # started
    started = time.monotonic()
    proc.send(message)
    refusal = proc.recv(timeout=10)
    assert time.monotonic() - started < 1.0
    reason = refusal["result"]["_meta"]["mcp-guard/decision"]["reason"]
    assert reason.startswith("the arguments are too large to check: the call is"), reason
    assert "limits.max_argument_bytes (1048576)" in reason
    assert proc.request(2, "ping")["result"] == {}
    proc.close_stdin()
    assert proc.wait(10) == 0
    assert b"tools/call" not in record.read_bytes()


def test_the_argument_size_cap_is_the_policys_to_set(spawn_guard) -> None:
    schema = {"type": "object", "properties": {"numbers": {"type": "array", "items": {"type": "integer"}}}}
    proc = spawn_guard(STREAM_SERVER, policy={"version": "1", "limits": {"max_argument_bytes": 20_000},
                                              "rules": {"echo": {"arguments": schema}}})
    small = proc.request(1, "tools/call", {"name": "echo", "arguments": {"numbers": [0] * 4000}})
    assert small["result"]["isError"] is False
    large = proc.request(2, "tools/call", {"name": "echo", "arguments": {"numbers": [0] * 8000}})
    assert "limits.max_argument_bytes (20000)" in large["result"]["_meta"]["mcp-guard/decision"]["reason"]
    proc.close_stdin()
    assert proc.wait(10) == 0


def test_deferred_calls_are_charged_in_the_order_they_arrived(spawn_guard) -> None:
    """Four calls to a constrained, rate-limited tool: the first takes a while to check, the others are
    checked at once. The limit (2) goes to the first two that arrived, as when every call was decided on
    the spot; a call with bad arguments takes nothing."""
    policy = {"version": "1", "limits": {"argument_check_seconds": 10},
              "rules": {"echo": {"rate_limit": {"max": 2, "window": 600}, "arguments": TAGS_ANY}}}
    proc = spawn_guard(STREAM_SERVER, policy=policy)
    proc.send(_tags_message(1, 300))  # about a second to check
    proc.send(call(2, "echo", {"tags": "not an array"}))
    proc.send(call(3, "echo", {"tags": ["a"]}))
    proc.send(call(4, "echo", {"tags": ["b"]}))
    answers = {a["id"]: a for a in (proc.recv(timeout=20) for _ in range(4))}
    assert answers[1]["result"]["isError"] is False
    assert answers[2]["result"]["_meta"]["mcp-guard/decision"]["reason"].startswith("argument tags:")
    assert answers[3]["result"]["isError"] is False
    assert answers[4]["result"]["_meta"]["mcp-guard/decision"]["reason"].startswith("rate limit reached")
    proc.close_stdin()
    assert proc.wait(10) == 0


# --- issue 19 item 1: `check` warns about schemas known to be expensive --------------------------------


def _check(tmp_path: Path, arguments: Any) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1", "rules": {"t": {"arguments": arguments}}}))
    return subprocess.run(guard_command() + ["check", str(policy)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("arguments", [
    TAGS_ANY,
    {"type": "object", "properties": {"x": {"type": "array", "uniqueItems": True, "items": {"type": "object"}}}},
    {"type": "object", "properties": {"x": {"type": "array", "uniqueItems": True,
                                            "items": {"type": ["string", "number"]}}}},
    {"type": "object", "properties": {"x": {"type": "array", "uniqueItems": True, "items": {"type": "string"}}}},
])
def test_check_warns_about_uniqueitems_over_items_that_may_not_sort(tmp_path: Path, arguments: Any) -> None:
    result = _check(tmp_path, arguments)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "uniqueItems" in result.stdout and "every pair" in result.stdout


def test_check_accepts_uniqueitems_checked_after_scalar_items(tmp_path: Path) -> None:
    arguments = {"type": "object", "properties": {"x": {"type": "array", "items": {"type": "string"},
                                                        "uniqueItems": True}}}
    result = _check(tmp_path, arguments)
    assert result.returncode == 0, result.stdout
    assert "uniqueItems" not in result.stdout


def test_check_warns_about_ref_chains_that_multiply(tmp_path: Path) -> None:
    defs = {f"d{n}": {"anyOf": [{"$ref": f"#/$defs/d{n + 1}"}, {"$ref": f"#/$defs/d{n + 1}"}]} for n in range(20)}
    defs["d20"] = {"type": "string"}
    result = _check(tmp_path, {"$defs": defs, "type": "object", "properties": {"x": {"$ref": "#/$defs/d0"}}})
    assert result.returncode == 1, result.stdout
    assert "$ref" in result.stdout and "expands" in result.stdout
