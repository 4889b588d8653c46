"""The foundation on the wire: mcp-guard as a lossless stdio relay (raw JSON-RPC lines, the real binary,
scripted upstreams in tests/servers/relay_*.py, no mocks)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from wireclient import WireProcess, guard_run, pid_alive

# Run natively and in the forced fallback (tests/conftest.py): the relay's platform paths.
pytestmark = pytest.mark.platform_matrix

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RAW = [sys.executable, str(HERE / "servers" / "relay_raw_server.py")]
GATEWAY = [sys.executable, str(ROOT / "examples" / "llm_gateway_server.py")]
MiB = 1 << 20


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def emit_request(request_id: Any, lines: list[bytes]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "raw/emit", "params": {"lines_b64": [b64(x) for x in lines]}}


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def received_by_upstream(proc: WireProcess, request_id: Any = "dump") -> list[bytes]:
    answer = proc.request(request_id, "raw/received")
    return [base64.b64decode(x) for x in answer["result"]["lines_b64"]]


@pytest.fixture
def raw(spawn_guard):
    def start(extra: tuple[str, ...] = (), env: dict[str, str] | None = None, policy: Any = None) -> WireProcess:
        proc = spawn_guard(RAW, policy=policy, extra=extra, env=env)
        proc.initialize()
        return proc

    return start


# --- byte-exact passthrough --------------------------------------------------------------------------


def test_upstream_answer_is_forwarded_byte_exact(raw) -> None:
    proc = raw()
    # odd key order, unknown fields, raw and escaped unicode, numbers written in unusual ways, spaces
    answer = ('{"id":"req-é✓","result":{"zeta":1,"alpha":"ü\\u00fc😀","unknownField":{"x":[1,2.50,1e3,-0.0]},'
              '"_meta":{"vendor/x":null}} , "jsonrpc":"2.0","extra":true}').encode()
    proc.send(emit_request("req-é✓", [answer]))
    assert proc.recv_raw(10) == answer


def test_server_notifications_and_requests_byte_exact_and_client_answer_too(raw) -> None:
    proc = raw()
    note = b'{"method":"notifications/vendor/thing","jsonrpc":"2.0","params":{"b":2,"a":"\xc3\xa9","unk":[]}}'
    server_request = (b'{"jsonrpc":"2.0","id":"srv-1","method":"elicitation/create",'
                      b'"params":{"message":"\xe2\x9c\x93?","requestedSchema":{"type":"object","properties":{}}},'
                      b'"x-extra":1}')
    done = b'{"jsonrpc":"2.0","id":7,"result":{}}'
    proc.send(emit_request(7, [note, server_request, done]))
    assert proc.recv_raw(10) == note
    assert proc.recv_raw(10) == server_request
    assert proc.recv_raw(10) == done
    client_answer = b'{"result":{"content":{"k":"v\xc3\xa9"},"action":"accept"},"id":"srv-1","jsonrpc":"2.0","zz":0}'
    proc.send(client_answer)
    assert client_answer in received_by_upstream(proc)


def test_client_request_is_forwarded_byte_exact(raw) -> None:
    proc = raw()
    request = ('{"params":{"z":[1.0,2e2],"a":"\\u00e9é😀","nested":{"unknown":true}},"method":"ping",'
               '"id":"ping-é","jsonrpc":"2.0","vendorField":{"k":1}}').encode()
    proc.send(request)
    answer = proc.recv(10)
    assert answer["id"] == "ping-é" and answer["result"] == {}
    assert request in received_by_upstream(proc)


def test_big_integer_id_round_trips_exactly(raw) -> None:
    proc = raw()
    big = 9007199254740993  # 2**53 + 1: not representable as a double
    request = b'{"jsonrpc":"2.0","id":9007199254740993,"method":"raw/emit","params":{"lines_b64":["' + \
        b64(b'{"jsonrpc":"2.0","id":9007199254740993,"result":{"ok":1}}').encode() + b'"]}}'
    proc.send(request)
    line = proc.recv_raw(10)
    assert line == b'{"jsonrpc":"2.0","id":9007199254740993,"result":{"ok":1}}'
    assert json.loads(line)["id"] == big
    assert request in received_by_upstream(proc)
    # the neighbour id (what a float would round to) is a different request: both work side by side
    proc.send(emit_request(9007199254740992, [b'{"jsonrpc":"2.0","id":9007199254740992,"result":{"n":2}}']))
    assert json.loads(proc.recv_raw(10)) == {"jsonrpc": "2.0", "id": 9007199254740992, "result": {"n": 2}}


# --- large single-line messages ---------------------------------------------------------------------


@pytest.mark.parametrize("size,extra", [(8 * MiB, ()), (64 * MiB, ("--max-message-bytes", "100000000"))],
                         ids=["8MiB", "64MiB"])
def test_large_message_upstream_to_client(guard_cmd, size: int, extra: tuple[str, ...]) -> None:
    # Read with a buffered pipe: WireProcess reads stdout unbuffered (bufsize=0), one byte per read(2) call,
    # which takes ~30 s for 64 MiB; that would measure the test client, not mcp-guard.
    proc = subprocess.Popen(guard_run(*extra, "--", *RAW), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    lines: list[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, b"")), daemon=True)
    reader.start()
    try:
        assert proc.stdin is not None
        init = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "1"}}}
        for message in (init, {"jsonrpc": "2.0", "id": 41, "method": "raw/big", "params": {"size": size}},
                        {"jsonrpc": "2.0", "id": 42, "method": "ping"}):
            proc.stdin.write(json.dumps(message).encode() + b"\n")
        proc.stdin.flush()
        wait_until(lambda: len(lines) >= 3, 60, "three answers")
        proc.stdin.close()
        assert proc.wait(30) == 0
        reader.join(10)
        assert not reader.is_alive()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    expected = b'{"jsonrpc":"2.0","id":41,"result":{"data":"' + b"x" * size + b'"}}\n'
    assert len(lines) == 3
    assert len(lines[1]) == len(expected)
    assert lines[1] == expected
    assert json.loads(lines[2]) == {"jsonrpc": "2.0", "id": 42, "result": {}}


@pytest.mark.parametrize("size,extra", [(8 * MiB, ()), (64 * MiB, ("--max-message-bytes", "100000000"))],
                         ids=["8MiB", "64MiB"])
def test_large_message_client_to_upstream(raw, size: int, extra: tuple[str, ...]) -> None:
    proc = raw(extra=extra)
    line = b'{"jsonrpc":"2.0","id":51,"method":"raw/measure","params":{"blob":"' + b"y" * size + b'"}}'
    proc.send(line)
    answer = proc.recv(60)
    assert answer["id"] == 51, answer
    assert answer["result"] == {"len": len(line), "sha256": hashlib.sha256(line).hexdigest()}
    assert proc.request(52, "ping")["result"] == {}


# --- malformed lines --------------------------------------------------------------------------------


def test_malformed_client_line_gets_parse_error_and_session_continues(raw) -> None:
    proc = raw()
    bad = b'{"jsonrpc":"2.0","id":3,"method":'
    proc.send(bad)
    error = proc.recv(10)
    assert error["jsonrpc"] == "2.0" and error["id"] is None and error["error"]["code"] == -32700
    assert proc.request(4, "ping")["result"] == {}
    assert bad not in received_by_upstream(proc)
    proc.send(b"\xff\xfe not even utf-8")
    assert proc.recv(10)["error"]["code"] == -32700
    assert proc.request(5, "ping")["result"] == {}


def test_malformed_upstream_line_is_not_passed_on_and_is_reported(guard_cmd, tmp_path) -> None:
    # stderr goes to a file, read back when needed (independent of WireProcess's stderr reader thread)
    err_path = tmp_path / "stderr.txt"
    with open(err_path, "wb") as err:
        proc = WireProcess(guard_run("--", *RAW), stderr=err)
    try:
        proc.initialize()
        garbage = b'{"this is": not json at all'
        proc.send(emit_request(8, [garbage, b'{"jsonrpc":"2.0","method":"notifications/after","params":{}}',
                                   b'{"jsonrpc":"2.0","id":8,"result":{"fine":true}}']))
        assert proc.recv(10) == {"jsonrpc": "2.0", "method": "notifications/after", "params": {}}
        assert proc.recv(10) == {"jsonrpc": "2.0", "id": 8, "result": {"fine": True}}
        assert proc.request(9, "ping")["result"] == {}
        wait_until(lambda: b"this is" in err_path.read_bytes(), 10, "a stderr report of the malformed upstream line")
        report = err_path.read_text()
        assert "mcp-guard: warning:" in report.lower() and "malformed" in report, report
    finally:
        proc.kill()


def test_malformed_upstream_answer_naming_a_pending_id_fails_that_request(raw) -> None:
    proc = raw()
    proc.send(emit_request(12, [b'{"jsonrpc":"2.0","id":12,"result":{"broken":']))
    answer = proc.recv(10)
    assert answer["id"] == 12 and answer["error"]["code"] == -32603, answer
    assert proc.request(13, "ping")["result"] == {}


# --- piped stdin (printf ... | mcp-guard run -- server) ---------------------------------------------


def test_piped_stdin_all_answers_arrive_before_exit(guard_cmd) -> None:
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "printf", "version": "1"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "llm_long_task", "arguments": {"steps": 4, "delay": 0.25}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call",
         "params": {"name": "llm_request", "arguments": {"prompt": "hi", "model": "m"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/list"},
    ]
    data = b"".join(json.dumps(r).encode() + b"\n" for r in requests)
    started = time.monotonic()
    done = subprocess.run(guard_run("--", *GATEWAY), input=data, capture_output=True, timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()
    answers = {m["id"]: m for m in map(json.loads, done.stdout.splitlines()) if "id" in m}
    assert set(answers) == {1, 2, 3, 4}, done.stdout
    assert answers[2]["result"]["content"][0]["text"] == "done after 4 steps"
    assert answers[3]["result"]["content"][0]["text"] == "[m] echo: hi"
    assert len(answers[4]["result"]["tools"]) == 11
    assert elapsed >= 1.0  # the slow call really ran to the end


def test_answers_owed_reach_a_slow_reader_after_stdin_closes(guard_cmd) -> None:
    proc = subprocess.Popen(guard_run("--", *RAW), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps({"jsonrpc": "2.0", "id": 41, "method": "raw/big",
                                     "params": {"size": 8 * MiB}}).encode() + b"\n")
        proc.stdin.close()
        # A client that is slow to read (or busy): the answers are owed to it all the same. Do not read until
        # mcp-guard has exited or 5 s have passed (a correct mcp-guard waits for us; the buggy one exits).
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        out = proc.stdout.read()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    lines = out.splitlines()
    assert len(lines) == 1, f"got {len(out)} bytes in {len(lines)} line(s)"
    assert len(lines[0]) == 8 * MiB + len(b'{"jsonrpc":"2.0","id":41,"result":{"data":""}}'), len(lines[0])
    assert json.loads(lines[0])["id"] == 41


# --- the child crashes ------------------------------------------------------------------------------


def test_child_crash_mid_call_fails_pending_request_and_exits_nonzero(raw) -> None:
    proc = raw()
    proc.send({"jsonrpc": "2.0", "id": 21, "method": "raw/sleep", "params": {"seconds": 30}})
    proc.send({"jsonrpc": "2.0", "id": 22, "method": "raw/crash", "params": {"code": 3}})
    got = {}
    for _ in range(2):
        message = proc.recv(10)
        got[message["id"]] = message
    for rid in (21, 22):
        assert got[rid]["error"]["code"] == -32001, got
    assert "exited" in got[21]["error"]["message"]
    assert proc.wait(10) != 0
    assert proc.recv_raw(5) is None


# --- signals ----------------------------------------------------------------------------------------


def _pids(proc: WireProcess) -> tuple[int, int]:
    answer = proc.request(31, "raw/pids")["result"]
    return answer["pid"], answer["grandchild"]


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_guard_child_and_grandchild(raw, signum: int) -> None:
    proc = raw(env={"RELAY_IGNORE_EOF": "1"})
    child, grandchild = _pids(proc)
    try:
        assert pid_alive(child) and pid_alive(grandchild)
        os.kill(proc.pid, signum)
        status = proc.wait(15)
        assert status == 128 + signum or status == -signum, status
        wait_until(lambda: not pid_alive(child), 10, "the child to be gone")
        wait_until(lambda: not pid_alive(grandchild), 10, "the grandchild to be gone")
        assert "Traceback" not in proc.stderr
    finally:
        _kill_quietly(child)
        _kill_quietly(grandchild)


def test_sigterm_with_stubborn_child_still_ends_it(raw) -> None:
    proc = raw(env={"RELAY_IGNORE_EOF": "1", "RELAY_IGNORE_TERM": "1"}, extra=("--shutdown-grace", "0.2"))
    child, grandchild = _pids(proc)
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(15)
        wait_until(lambda: not pid_alive(child), 10, "the stubborn child to be killed")
    finally:
        _kill_quietly(child)
        _kill_quietly(grandchild)


def test_sigkill_of_guard_kills_child(raw) -> None:
    proc = raw(env={"RELAY_IGNORE_EOF": "1", "RELAY_IGNORE_TERM": "1"})
    child, grandchild = _pids(proc)
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_until(lambda: not pid_alive(child), 10, "the child to die with its parent (PR_SET_PDEATHSIG)")
    finally:
        _kill_quietly(child)
        _kill_quietly(grandchild)


# --- the two directions are independent ---------------------------------------------------------------


def test_slow_call_does_not_hold_up_a_fast_one(raw) -> None:
    proc = raw()
    proc.send({"jsonrpc": "2.0", "id": 61, "method": "raw/sleep", "params": {"seconds": 3}})
    started = time.monotonic()
    fast = proc.request(62, "ping", timeout=10)
    assert fast["result"] == {}
    assert time.monotonic() - started < 2.0
    assert all(m.get("id") != 61 for m in proc.other)
    slow = proc.recv(10)
    assert slow["id"] == 61 and slow["result"] == {"slept": 3.0}


def test_server_notifications_flow_while_a_client_request_is_pending(raw) -> None:
    proc = raw()
    proc.send({"jsonrpc": "2.0", "id": 71, "method": "raw/sleep", "params": {"seconds": 1.5, "notify": 3}})
    seen = [proc.recv(10) for _ in range(4)]
    assert [m.get("method") for m in seen[:3]] == ["notifications/message"] * 3
    assert [m["params"]["data"] for m in seen[:3]] == ["tick 0", "tick 1", "tick 2"]
    assert seen[3]["id"] == 71


def test_client_requests_flow_while_upstream_is_not_reading_answers(raw) -> None:
    """A request from the server to the client stays unanswered while the client keeps calling."""
    proc = raw()
    server_request = b'{"jsonrpc":"2.0","id":"srv-9","method":"sampling/createMessage","params":{}}'
    proc.send(emit_request(81, [server_request, b'{"jsonrpc":"2.0","id":81,"result":{}}']))
    assert proc.recv_raw(10) == server_request
    assert proc.recv(10)["id"] == 81
    for rid in range(82, 87):
        assert proc.request(rid, "ping")["result"] == {}


# --- errors for people --------------------------------------------------------------------------------


def test_command_not_found(guard_cmd) -> None:
    done = subprocess.run(guard_run("--", "definitely-not-a-command-mcp-guard-xyz"),
                          input=b"", capture_output=True, timeout=20)
    assert done.returncode == 127
    assert done.stdout == b""
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("mcp-guard: error:") and "definitely-not-a-command-mcp-guard-xyz" in err


def test_no_double_dash_and_no_policy(guard_cmd, tmp_path) -> None:
    """`--` is optional, but a policy is not: without one (and without --no-policy) nothing starts."""
    env = {k: v for k, v in os.environ.items() if k != "MCP_GUARD_POLICY"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")  # discovery must find nothing: not the real ~/.config
    done = subprocess.run([*guard_cmd, "run", sys.executable, str(RAW[1])], input=b"", capture_output=True,
                          timeout=20, cwd=tmp_path, env=env)
    assert done.returncode == 2
    assert done.stdout == b""
    err = done.stderr.decode()
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert "--no-policy" in err
