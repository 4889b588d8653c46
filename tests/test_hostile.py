"""Hostile client input, through the real `mcp-guard run` binary.

Every case: mcp-guard answers with a clear JSON-RPC error (or the documented answer), does not crash,
never forwards what it refused (the upstream records every line it receives), and the session goes on:
a normal request right after it still works.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from wireclient import WireProcess, guard_run  # noqa: E402

SERVER = Path(__file__).resolve().parent / "servers" / "faulty_server.py"
MiB = 1024 * 1024

pytestmark = pytest.mark.timeout(60)


class Guarded(WireProcess):
    """A WireProcess whose stderr reader works on an unbuffered pipe (FileIO has no read1)."""

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            self.stderr_chunks.append(chunk)


class Session:
    def __init__(self, tmp_path: Path, policy: dict[str, Any] | None = None, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        self.record_file = tmp_path / f"record-{time.monotonic_ns()}.jsonl"
        args = ["--shutdown-grace", "0.5", "--drain-timeout", "2"]
        if policy is not None:
            path = tmp_path / f"policy-{time.monotonic_ns()}.json"
            path.write_text(json.dumps(policy))
            args += ["--policy", str(path)]
        args += [*extra, "--", sys.executable, str(SERVER)]
        self.p = Guarded(guard_run(*args), env={**os.environ, "FAULT": "none", "RECORD_FILE": str(self.record_file),
                                    **(env or {})})
        self.counter = 1000

    def received(self) -> list[bytes]:
        """Every line the upstream server read so far."""
        try:
            return self.record_file.read_bytes().splitlines()
        except FileNotFoundError:
            return []

    def answer_to(self, line: bytes, timeout: float = 10.0) -> Any:
        """Send one raw line; return the next line mcp-guard writes, parsed (it must be valid UTF-8 JSON)."""
        self.p.send(line)
        raw = self.p.recv_raw(timeout)
        assert raw is not None, f"mcp-guard closed its stdout; stderr: {self.p.stderr[-2000:]}"
        return json.loads(raw.decode("utf-8"))

    def still_works(self) -> None:
        """A normal request right after: answered by the upstream, and mcp-guard is alive."""
        self.counter += 1
        answer = self.p.request(self.counter, "tools/call", {"name": "echo", "arguments": {"n": self.counter}})
        assert answer["result"]["content"][0]["text"] == json.dumps({"n": self.counter})
        assert self.p.proc.poll() is None

    def close(self) -> int:
        self.p.close_stdin()
        return self.p.wait(15)


@pytest.fixture
def session(tmp_path):
    made: list[Session] = []

    def make(**kwargs: Any) -> Session:
        s = Session(tmp_path, **kwargs)
        made.append(s)
        s.p.initialize()
        return s

    yield make
    for s in made:
        s.p.kill()


def _not_forwarded(s: Session, marker: bytes) -> None:
    s.still_works()  # the upstream has read everything sent before this request
    assert not any(marker in line for line in s.received()), "a refused message reached the upstream"


# --- malformed JSON ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["arrays", "objects", "inside_params"])
def test_nested_100000_levels(session, shape):
    s = session()
    depth = 100_000
    if shape == "arrays":
        line = b"[" * depth + b"]" * depth
    elif shape == "objects":
        line = b'{"a":' * depth + b"1" + b"}" * depth
    else:
        line = (b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"deep":'
                + b"[" * depth + b"]" * depth + b"}}}")
    answer = s.answer_to(line)
    assert answer["error"]["code"] in (-32700, -32600)
    assert answer["id"] is None
    assert "deep" in answer["error"]["message"] or "nest" in answer["error"]["message"]
    _not_forwarded(s, b"[[[[[[")


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_refused(session, literal):
    s = session()
    line = (b'{"jsonrpc":"2.0","id":8,"method":"tools/call","params":{"name":"echo","arguments":{"marker_nan":'
            + literal + b"}}}")
    answer = s.answer_to(line)
    assert answer["error"]["code"] == -32700
    assert answer["id"] is None
    _not_forwarded(s, b"marker_nan")


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf"])
def test_invalid_utf8_refused(session, bad):
    s = session()
    line = (b'{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"echo","arguments":{"marker_utf8":"'
            + bad + b'"}}}')
    answer = s.answer_to(line)
    assert answer["error"]["code"] == -32700
    assert "UTF-8" in answer["error"]["message"] or "utf-8" in answer["error"]["message"]
    _not_forwarded(s, b"marker_utf8")


def test_byte_order_mark_refused(session):
    s = session()
    line = (b'\xef\xbb\xbf{"jsonrpc":"2.0","id":10,"method":"tools/call",'
            b'"params":{"name":"echo","arguments":{"marker_bom":1}}}')
    answer = s.answer_to(line)
    assert answer["error"]["code"] == -32700
    assert "byte-order mark" in answer["error"]["message"]
    _not_forwarded(s, b"marker_bom")


def test_empty_and_blank_lines_ignored(session):
    s = session()
    s.p.send(b"\n")
    s.p.send(b"   \t \r\n")
    s.p.send(b"\r\n")
    # Nothing comes back for them: the next line out is the answer to the next request.
    s.p.send({"jsonrpc": "2.0", "id": 11, "method": "ping"})
    assert s.p.recv(10) == {"jsonrpc": "2.0", "id": 11, "result": {}}
    s.still_works()


@pytest.mark.parametrize("value", [b"42", b'"a string"', b"null", b"true", b"{}"])
def test_not_a_message(session, value):
    s = session()
    answer = s.answer_to(value)
    assert answer["error"]["code"] == -32600
    assert answer["id"] is None
    s.still_works()


def test_truncated_json(session):
    s = session()
    answer = s.answer_to(
        b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"echo","arguments":{"marker_trunc"')
    assert answer["error"]["code"] == -32700
    _not_forwarded(s, b"marker_trunc")


def test_batch_never_forwarded(session):
    s = session()
    batch = [{"jsonrpc": "2.0", "id": 13, "method": "tools/call",
              "params": {"name": "echo", "arguments": {"marker_batch": 1}}},
             {"jsonrpc": "2.0", "id": 14, "method": "ping"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    answer = s.answer_to(json.dumps(batch).encode())
    assert isinstance(answer, list)
    assert sorted(a["id"] for a in answer) == [13, 14]
    assert all(a["error"]["code"] == -32600 for a in answer)
    _not_forwarded(s, b"marker_batch")


# --- lone surrogates ----------------------------------------------------------------------------------------


def test_lone_surrogate_in_arguments_passes_byte_exact(session):
    """A lone surrogate escape is valid JSON text: an allowed call carrying one is forwarded unchanged."""
    s = session()
    line = (b'{"jsonrpc":"2.0","id":15,"method":"tools/call",'
            b'"params":{"name":"echo","arguments":{"s":"\\ud800 \\udfff"}}}')
    answer = s.answer_to(line)
    assert answer["id"] == 15 and "result" in answer
    assert line in s.received()
    s.still_works()


@pytest.mark.parametrize("policy", [
    {"version": "1", "default": "deny", "default_reason": "no", "rules": {"echo": {"action": "allow"}}},
    {"version": "1", "default": "allow", "hide": ["\ud800*"]}], ids=["deny", "hide"])
def test_lone_surrogate_tool_name_refusal_is_valid_utf8(session, policy):
    """Regression: wire.encode() used ensure_ascii=False + 'surrogatepass', so a refusal quoting a tool name
    holding a lone surrogate escape wrote the bytes ED A0 80 (invalid UTF-8) to the client."""
    s = session(policy=policy)
    s.p.send(b'{"jsonrpc":"2.0","id":17,"method":"tools/call","params":{"name":"\\ud800","arguments":{}}}')
    raw = s.p.recv_raw(10)
    assert raw is not None
    assert b"\xed\xa0\x80" not in raw  # what surrogatepass makes of U+D800
    answer = json.loads(raw.decode("utf-8"))  # a client reading strict UTF-8 must be able to read it
    assert answer["id"] == 17
    s.still_works()


def test_lone_surrogate_argument_key_with_audit(session, tmp_path):
    """Regression: with --audit, the audit write of a lone surrogate raised UnicodeEncodeError inside the
    interceptor, so an allowed call was refused with -32603 'could not decide' and left no record."""
    audit = tmp_path / "audit.jsonl"
    s = session(extra=("--audit", str(audit)), policy={"version": "1", "default": "allow"})
    line = b'{"jsonrpc":"2.0","id":18,"method":"tools/call","params":{"name":"echo","arguments":{"\\ud800":1}}}'
    answer = s.answer_to(line)
    assert answer["id"] == 18 and "result" in answer, answer
    # The record of a forwarded call is written when its answer passes, by the audit's writer thread
    # (docs/audit.md): it lands a moment after the answer.
    deadline = time.monotonic() + 10
    while True:
        text = audit.read_text(encoding="utf-8", errors="surrogateescape") if audit.exists() else ""
        records = [json.loads(x) for x in text.splitlines()]
        if any(r["event"] == "call" and r.get("request_id") == 18 for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert any(r["event"] == "call" and r.get("request_id") == 18 for r in records), records


def test_lone_surrogate_with_audit_never_crashes(session, tmp_path):
    """Whatever the audit does with it, the call gets one answer and the session goes on."""
    audit = tmp_path / "audit.jsonl"
    s = session(extra=("--audit", str(audit)), policy={"version": "1", "default": "deny"})
    answer = s.answer_to(b'{"jsonrpc":"2.0","id":19,"method":"tools/call","params":{"name":"\\udc00","arguments":{}}}')
    assert answer["id"] == 19
    s.p.send({"jsonrpc": "2.0", "id": 20, "method": "ping"})
    assert s.p.recv(10) == {"jsonrpc": "2.0", "id": 20, "result": {}}


# --- a 256 MiB line ---------------------------------------------------------------------------------------


def _vm_hwm_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _send_huge(s: Session, request_id: str, size: int) -> Any:
    """Stream a tools/call of `size` bytes in 1 MiB chunks (never held whole by the test either)."""
    stdin = s.p.proc.stdin
    assert stdin is not None
    head = (b'{"jsonrpc":"2.0","id":"' + request_id.encode()
            + b'","method":"tools/call","params":{"name":"echo","arguments":{"marker_huge":"')
    tail = b'"}}}\n'
    stdin.write(head)
    chunk = b"a" * MiB
    remaining = size - len(head) - len(tail)
    while remaining > 0:
        n = min(remaining, MiB)
        stdin.write(chunk if n == MiB else chunk[:n])
        remaining -= n
    stdin.write(tail)
    stdin.flush()
    return s.p.recv(60)


@pytest.mark.timeout(120)
def test_256_mib_line_refused_and_memory_bounded(session):
    s = session()
    before = _vm_hwm_kib(s.p.pid)
    answer = _send_huge(s, "huge", 256 * MiB)
    assert answer["id"] == "huge"
    assert answer["error"]["code"] == -32002
    assert "exceeds" in answer["error"]["message"]
    peak = _vm_hwm_kib(s.p.pid)
    # Never the whole line: the default limit (64 MiB) is all that may be buffered.
    assert peak < 200 * 1024, f"VmHWM {peak} KiB (before: {before} KiB)"
    _not_forwarded(s, b"marker_huge")
    assert s.close() == 0


@pytest.mark.timeout(120)
def test_256_mib_line_peak_is_one_limit_not_two(session):
    """Regression: the 512-byte head of an oversized line was taken with b''.join(parts)[:512], a copy of
    everything buffered: the peak was about 2 x --max-message-bytes."""
    s = session()
    before = _vm_hwm_kib(s.p.pid)
    answer = _send_huge(s, "huge2", 256 * MiB)
    assert answer["error"]["code"] == -32002
    peak = _vm_hwm_kib(s.p.pid)
    assert peak - before < 96 * 1024, f"VmHWM grew by {peak - before} KiB"


@pytest.mark.timeout(120)
def test_256_mib_line_with_small_limit_never_buffered(session):
    s = session(extra=("--max-message-bytes", str(MiB)))
    before = _vm_hwm_kib(s.p.pid)
    answer = _send_huge(s, "huge3", 256 * MiB)
    assert answer == {"jsonrpc": "2.0", "id": "huge3", "error": {"code": -32002, "message": answer["error"]["message"]}}
    assert answer["error"]["code"] == -32002
    peak = _vm_hwm_kib(s.p.pid)
    assert peak - before < 16 * 1024, f"VmHWM grew by {peak - before} KiB"
    _not_forwarded(s, b"marker_huge")


# --- duplicate keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b'{"jsonrpc":"2.0","id":21,"method":"ping","method":"tools/call","params":{"name":"echo","arguments":{"marker_dup":1}}}',
    b'{"jsonrpc":"2.0","id":21,"method":"tools/call","method":"ping","params":{"name":"echo","arguments":{"marker_dup":1}}}',
    b'{"jsonrpc":"2.0","id":21,"id":22,"method":"tools/call","params":{"name":"echo","arguments":{"marker_dup":1}}}',
    b'{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"echo","name":"secret","arguments":{"marker_dup":1}}}',
    b'{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"echo","arguments":{"marker_dup":1}},"params":{}}',
    b'{"jsonrpc":"2.0","id":21,"method":"tools/call","params":{"name":"echo","arguments":{"marker_dup":1,"marker_dup":2}}}',
    b'{"jsonrpc":"2.0","jsonrpc":"1.0","id":21,"method":"tools/call","params":{"name":"echo","arguments":{"marker_dup":1}}}',
], ids=["method1", "method2", "id", "params.name", "params", "arguments", "jsonrpc"])
def test_duplicate_keys_refused_never_forwarded(session, line):
    s = session(policy={"version": "1", "default": "allow", "rules": {"secret": {"action": "deny"}}})
    answer = s.answer_to(line)
    assert answer["error"]["code"] == -32600
    assert "duplicate key" in answer["error"]["message"]
    assert answer["id"] in (None, 21)
    if b'"id":21,"id"' in line:
        assert answer["id"] is None  # which id? neither
    _not_forwarded(s, b"marker_dup")


def test_duplicate_params_name_answer_carries_the_id(session):
    """Regression: the -32600 answer to a duplicate key below the top level carried id null although the
    id was unambiguous, so a client waiting on its id never got an answer."""
    s = session()
    answer = s.answer_to(
        b'{"jsonrpc":"2.0","id":23,"method":"tools/call","params":{"name":"echo","name":"secret","arguments":{}}}')
    assert answer["id"] == 23


# --- ids -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw_id", [b"null", b"[1]", b'{"a":1}', b"true", b"1e400", b"[]", b"{}"])
def test_unusable_ids_refused(session, raw_id):
    s = session()
    line = (b'{"jsonrpc":"2.0","id":' + raw_id
            + b',"method":"tools/call","params":{"name":"echo","arguments":{"marker_id":1}}}')
    answer = s.answer_to(line)
    assert answer["error"]["code"] == -32600
    assert answer["id"] is None
    _not_forwarded(s, b"marker_id")


@pytest.mark.parametrize("raw_id", [b"1.5", b"5.0", b"-0.0"])
def test_float_ids_refused_under_their_own_id(session, raw_id):
    """The SDKs read a float id as no id at all, so the upstream would never answer: refused, never
    forwarded, and answered under the id as sent so the sender can match it."""
    s = session()
    line = (b'{"jsonrpc":"2.0","id":' + raw_id
            + b',"method":"tools/call","params":{"name":"echo","arguments":{"marker_float":1}}}')
    answer = s.answer_to(line)
    assert answer["error"]["code"] == -32600 and "integer" in answer["error"]["message"]
    assert answer["id"] == json.loads(raw_id)
    _not_forwarded(s, b"marker_float")
    s.still_works()


@pytest.mark.parametrize("raw_id,expected", [(b"-7", -7), (b"1000000000000000000000000000000", 10**30),
                                             (b'"\\u0000"', "\x00"), (b'""', "")])
def test_odd_but_valid_ids_answered(session, raw_id, expected):
    s = session()
    line = b'{"jsonrpc":"2.0","id":' + raw_id + b',"method":"tools/call","params":{"name":"echo","arguments":{}}}'
    answer = s.answer_to(line)
    assert answer["id"] == expected and "result" in answer
    s.still_works()


@pytest.mark.parametrize("second", [b"30", b'"30"'])
def test_same_id_twice_in_flight(session, second):
    s = session()
    s.p.send({"jsonrpc": "2.0", "id": 30, "method": "tools/call",
              "params": {"name": "echo", "arguments": {"delay": 1.0}}})
    s.p.send(b'{"jsonrpc":"2.0","id":' + second
             + b',"method":"tools/call","params":{"name":"echo","arguments":{"marker_twice":1}}}')
    first = s.p.recv(10)
    assert first["error"]["code"] == -32600 and "in flight" in first["error"]["message"]
    assert first["id"] == json.loads(second)
    later = s.p.recv(10)
    assert later["id"] == 30 and json.loads(later["result"]["content"][0]["text"]) == {"delay": 1.0}
    _not_forwarded(s, b"marker_twice")
    # Once answered, the id may be used again.
    again = s.p.request(30, "ping")
    assert again == {"jsonrpc": "2.0", "id": 30, "result": {}}


def test_call_without_id_dropped(session):
    s = session()
    s.p.send({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "echo", "arguments": {"marker_noid": 1}}})
    _not_forwarded(s, b"marker_noid")
    assert not s.p.other, s.p.other  # no answer to a notification


@pytest.mark.parametrize("params", [{"name": 5}, {"arguments": {}}, {"name": "echo", "arguments": [1]},
                                    {"name": "echo", "arguments": "x"}])
def test_bad_tools_call_params(session, params):
    s = session()
    answer = s.p.request(40, "tools/call", {**params, "marker_params": 1})
    assert answer["error"]["code"] == -32602
    _not_forwarded(s, b"marker_params")
