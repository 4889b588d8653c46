"""Property: whole sessions where the client *and* the upstream misbehave.

Hypothesis generates (a) what a client sends -- listings with cursors, allowed calls, calls to hidden,
denied and rate-limited tools, batches, tools/call as a notification, ids reused while in flight, malformed
lines, cancellations, answers to the server's own requests -- and (b) a script for the upstream
(tests/servers/scripted_server.py): answers held back and released out of order, garbage lines, requests of
its own, tools/list_changed, ids turned into strings, JSON-RPC errors, and a crash at a random step.
Each example is one mcp-guard process, run with --drain-timeout 2 --shutdown-grace 0.5.

Sending. The client's messages are cut into chunks (at generated "pause" points). A chunk is written with
one write(2) of well under a pipe's capacity, so mcp-guard reads it in one read and decides every line of
it before forwarding any: a crash the chunk triggers can only happen after all of its lines were seen.
Before the next chunk the test waits until everything sent so far is answered; once the upstream has
crashed (an answer says it exited) nothing more is sent, because mcp-guard then ends the session by
itself and lines it never read cannot be answered. With `close_early` the client closes stdin right
after the last chunk, without waiting, which exercises the drain.

Invariants, for every example:
  1. the recording holds no tools/call to a hidden or denied tool, and no more calls to the rate-limited
     tool than the limit allows (plus the quota given back by upstream JSON-RPC errors); no batch, no
     tools/call notification reaches it, and what reaches it is byte for byte what the client sent (but
     for a hidden tool's probe: a call to a random name, with no arguments, under the hidden call's id);
  2. exactly one answer per request. Answers are counted per normalised id (5 and "5" are one id, as
     mcp-guard matches them). For every id key K: answers carrying K == requests the client sent with K,
     less up to one for each notifications/cancelled naming K (a cancelled request is owed nothing; it
     is answered only if its answer was on its way before the cancel: docs/relay.md).
     Duplicates therefore balance exactly: a request refused because its id is in flight gets its own
     -32600 answer, and the request in flight still gets its one answer; an id reused after its first
     request was answered is a new request and gets a new answer. A line whose id cannot be read (not
     JSON, a duplicated "id") or a batch with no request in it is owed exactly one answer with id null.
     Notifications and the client's answers to the server's requests are owed nothing;
  3. no tools/list result the client receives lists a hidden tool;
  4. mcp-guard exits within a bound, with the status docs/relay.md gives, and the upstream (whose pid
     the script server writes to PID_FILE) is not left running.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from wireclient import WireProcess, guard_command, pid_alive  # noqa: E402

SERVER = Path(__file__).resolve().parent / "servers" / "scripted_server.py"

TOOLS = ["allowed", "echo", "secret_a", "rate_tool", "danger", "secret_b", "internal_admin"]
RATE_MAX = 1
POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["secret_*"],
    "rules": {
        "danger": {"action": "deny"},
        "internal_admin": {"action": "hide"},
        "rate_tool": {"rate_limit": {"max": RATE_MAX, "window": 3600}},
        # An argument schema: its calls are decided off the pump (a deferred decision), in arrival order.
        "echo": {"arguments": {"type": "object", "properties": {"x": {"type": "string"}}}},
    },
}
PROBE_NAME = re.compile(r"t[0-9a-f]{24}")  # mcp-guard's stand-in for a hidden tool's name
HIDDEN = {"secret_a", "secret_b", "secret_unlisted", "internal_admin"}
DENIED = {"danger"}
UPSTREAM_EXITED = -32001

# --- the client's side -----------------------------------------------------------------------------

SLOTS = st.integers(0, 3)
STYLES = st.sampled_from(["int", "str", "intstr"])  # 1, "c1", "1": "1" and 1 are one id
CALL_NAMES = st.sampled_from(["allowed", "echo", "rate_tool", "rate_tool", "danger", "secret_a", "secret_b",
                              "secret_unlisted", "internal_admin", "no_such_tool"])
CURSORS = st.sampled_from([None, None, "page-1", "page-2", "page-4", "bogus"])
SERVER_IDS = [1, "srv-1", "srv-2", 7]

request_item = st.one_of(
    st.tuples(st.just("call"), SLOTS, STYLES, CALL_NAMES),
    st.tuples(st.just("call"), SLOTS, STYLES, CALL_NAMES),
    st.tuples(st.just("list"), SLOTS, STYLES, CURSORS),
    st.tuples(st.just("ping"), SLOTS, STYLES),
)
notification_item = st.one_of(
    st.tuples(st.just("note_call"), CALL_NAMES),
    st.tuples(st.just("cancel"), SLOTS, STYLES),
)
client_message = st.one_of(
    request_item, request_item, request_item,
    notification_item,
    st.tuples(st.just("batch"), st.lists(st.one_of(request_item, notification_item), min_size=1, max_size=3)),
    st.tuples(st.just("malformed"), st.sampled_from(["junk", "cut", "nojsonrpc", "floatid", "dupname", "dupid"]),
              SLOTS, STYLES),
    st.tuples(st.just("reply"), st.sampled_from(SERVER_IDS), st.booleans()),
    st.tuples(st.just("pause")),
)

# --- the upstream's side -----------------------------------------------------------------------------

step = st.fixed_dictionaries({}, optional={
    "action": st.sampled_from(["answer", "hold", "hold"]),
    "request": st.fixed_dictionaries({"id": st.sampled_from(SERVER_IDS),
                                      "method": st.sampled_from(["ping", "roots/list"])}),
    "list_changed": st.just(True),
    "garbage": st.sampled_from(["junk", "head"]),
    "string_id": st.just(True),
    "error": st.just(True),
    "release": st.sampled_from(["reverse", "shuffle", "fifo"]),
})
upstream_script = st.tuples(
    st.lists(step, max_size=14),
    st.one_of(st.none(), st.tuples(st.integers(0, 7), st.sampled_from([0, 1, 3, 42]))),  # crash: (step, status)
).map(lambda t: _with_crash(*t))


def _with_crash(steps: list[dict], crash: tuple[int, int] | None) -> list[dict]:
    steps = [dict(s) for s in steps]
    if crash is not None:
        at, status = crash
        steps += [{}] * max(0, at + 1 - len(steps))
        steps[at] = {"action": "crash", "status": status}
    return steps


# --- rendering and bookkeeping ---------------------------------------------------------------------------


def make_id(slot: int, style: str) -> Any:
    return slot + 1 if style == "int" else f"c{slot + 1}" if style == "str" else str(slot + 1)


def id_key(value: Any) -> str | None:
    """How answers are counted: mcp-guard's normalisation (5 and "5" are one id); a float id, which
    mcp-guard refuses but answers under that id, gets a key of its own."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, str)):
        return str(value)
    return f"float:{value!r}"


def render_item(item: tuple) -> tuple[dict, Any]:
    """A message object of a batch or a plain line, and its id (... for a notification)."""
    kind = item[0]
    if kind == "call":
        rid = make_id(item[1], item[2])
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/call",
                "params": {"name": item[3], "arguments": {}}}, rid
    if kind == "list":
        rid = make_id(item[1], item[2])
        return {"jsonrpc": "2.0", "id": rid, "method": "tools/list",
                "params": {} if item[3] is None else {"cursor": item[3]}}, rid
    if kind == "ping":
        rid = make_id(item[1], item[2])
        return {"jsonrpc": "2.0", "id": rid, "method": "ping"}, rid
    if kind == "note_call":
        return {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": item[1], "arguments": {}}}, ...
    assert kind == "cancel"
    return {"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": make_id(item[1], item[2]), "reason": "changed my mind"}}, ...


class Owed:
    def __init__(self) -> None:
        self.by_key: Counter[str] = Counter()
        self.cancelled: Counter[str] = Counter()  # notifications/cancelled per id key: answers that may not come
        self.null = 0

    def request(self, rid: Any) -> None:
        key = id_key(rid)
        assert key is not None
        self.by_key[key] += 1


def render(message: tuple, owed: Owed) -> bytes:
    """One client line, and what it is owed."""
    kind = message[0]
    if kind == "batch":
        rendered = [render_item(item) for item in message[1]]
        ids = [rid for _, rid in rendered if rid is not ...]
        for rid in ids:
            owed.request(rid)
        if not ids:
            owed.null += 1
        return json.dumps([body for body, _ in rendered]).encode()
    if kind == "malformed":
        variant, rid = message[1], make_id(message[2], message[3])
        if variant == "junk":
            owed.null += 1
            return b"this is not json {"
        if variant == "cut":
            owed.null += 1
            return b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode()
        if variant == "nojsonrpc":
            owed.request(rid)
            return json.dumps({"id": rid, "method": "tools/call", "params": {"name": "allowed"}}).encode()
        if variant == "floatid":
            owed.request(1.5)
            return b'{"jsonrpc":"2.0","id":1.5,"method":"tools/call","params":{"name":"allowed"}}'
        if variant == "dupname":
            owed.request(rid)
            return (b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode()
                    + b',"method":"tools/call","params":{"name":"allowed","name":"danger"}}')
        assert variant == "dupid"
        owed.null += 1
        return b'{"jsonrpc":"2.0","id":' + json.dumps(rid).encode() + b',"id":99,"method":"ping"}'
    if kind == "reply":
        sid, ok = message[1], message[2]
        body = {"result": {"roots": []}} if ok else {"error": {"code": -32601, "message": "no"}}
        return json.dumps({"jsonrpc": "2.0", "id": sid, **body}).encode()
    body, rid = render_item(message)
    if rid is not ...:
        owed.request(rid)
    elif kind == "cancel":
        owed.cancelled[id_key(body["params"]["requestId"]) or ""] += 1
    return json.dumps(body).encode()


INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                         "params": {"protocolVersion": "2025-11-25", "capabilities": {"roots": {}},
                                    "clientInfo": {"name": "prop", "version": "1"}}}).encode()
INITIALIZED = b'{"jsonrpc":"2.0","method":"notifications/initialized"}'


def chunks_of(messages: list[tuple]) -> list[list[tuple]]:
    chunks: list[list[tuple]] = [[]]
    for message in messages:
        if message[0] == "pause":
            if chunks[-1]:
                chunks.append([])
        else:
            chunks[-1].append(message)
    return [chunk for chunk in chunks if chunk] or [[]]


# --- one session ------------------------------------------------------------------------------------------

_counter = itertools.count()


class Session:
    def __init__(self, tmp: Path, script: list[dict], page_size: int, seed: int) -> None:
        self.dir = tmp / f"session-{next(_counter)}"
        self.dir.mkdir()
        self.record = self.dir / "record.jsonl"
        self.sent_file = self.dir / "sent.jsonl"
        self.pid_file = self.dir / "server.pid"
        policy = self.dir / "policy.json"
        policy.write_text(json.dumps(POLICY))
        self.script = script
        env = {**os.environ, "SCRIPT": json.dumps(script), "TOOLS": ",".join(TOOLS),
               "PAGE_SIZE": str(page_size), "RECORD_FILE": str(self.record), "SENT_FILE": str(self.sent_file),
               "PID_FILE": str(self.pid_file), "SEED": str(seed)}
        self.proc = WireProcess(guard_command() + ["run", "--policy", str(policy), "--drain-timeout", "2",
                                                   "--shutdown-grace", "0.5", "--", sys.executable, str(SERVER)],
                                env=env)
        self.owed = Owed()
        self.sent_lines: set[bytes] = set()
        self.answers: Counter[str] = Counter()
        self.null_answers = 0
        self.received: list[Any] = []
        self.eof = False
        self.crash_seen = False

    def write(self, lines: list[bytes]) -> None:
        data = b"".join(line + b"\n" for line in lines)
        assert len(data) < 32 * 1024  # one write, one read on the other side
        self.sent_lines.update(lines)
        fd = self.proc.proc.stdin.fileno()  # type: ignore[union-attr]
        try:
            written = os.write(fd, data)
        except BrokenPipeError:
            written = len(data)
        assert written == len(data)

    def _take(self, raw: bytes | None) -> None:
        if raw is None:
            self.eof = True
            return
        message = json.loads(raw)
        self.received.append(message)
        for item in message if isinstance(message, list) else [message]:
            assert isinstance(item, dict), raw
            if "method" in item:
                continue  # the server's own requests and notifications
            assert ("result" in item) != ("error" in item), raw
            key = id_key(item.get("id"))
            if key is None:
                self.null_answers += 1
            else:
                self.answers[key] += 1
            error = item.get("error")
            if (isinstance(error, dict) and error.get("code") == UPSTREAM_EXITED
                    and "exited" in error.get("message", "")):
                self.crash_seen = True
            # Invariant 3: no listing shows a hidden tool.
            result = item.get("result")
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                shown = {tool.get("name") for tool in result["tools"] if isinstance(tool, dict)}
                assert not shown & HIDDEN, f"a listing shows hidden tools {shown & HIDDEN}: {raw!r}"

    def settled(self) -> bool:
        return (all(self.answers[k] >= n - self.owed.cancelled[k] for k, n in self.owed.by_key.items())
                and self.null_answers >= self.owed.null)

    def read_until(self, done, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not done() and not self.eof:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            try:
                self._take(self.proc.lines.get(timeout=remaining))
            except queue.Empty:
                return False
        return done()

    def run(self, messages: list[tuple], close_early: bool) -> None:
        chunks = chunks_of(messages)
        for index, chunk in enumerate(chunks):
            lines = [INITIALIZE, INITIALIZED] if index == 0 else []
            if index == 0:
                self.owed.request("init")
            lines += [render(message, self.owed) for message in chunk]
            self.write(lines)
            if close_early and index == len(chunks) - 1:
                break
            ok = self.read_until(self.settled, 6.0)
            assert ok or self.eof, self.owed_report("answers still owed 6 s after the chunk was sent")
            if self.crash_seen or self.eof:
                break  # the upstream is gone: mcp-guard ends the session by itself
        self.crashed_before_close = self.crash_seen or self.eof
        if self.crashed_before_close:
            # The child exited first: mcp-guard must end the session without the client's EOF.
            assert self.read_until(lambda: False, 5.0) is False and self.eof, "no EOF after the upstream crashed"
        self.proc.close_stdin()
        started = time.monotonic()
        self.read_until(lambda: False, 8.0)
        assert self.eof, self.owed_report("mcp-guard did not close its stdout within 8 s of stdin's EOF")
        try:
            self.status = self.proc.wait(3.0)
        except Exception:
            raise AssertionError(f"mcp-guard did not exit; stderr: {self.proc.stderr[-3000:]}") from None
        self.close_seconds = time.monotonic() - started

    def owed_report(self, what: str) -> str:
        return (f"{what}: owed {dict(self.owed.by_key)} null {self.owed.null}; got {dict(self.answers)} "
                f"null {self.null_answers}; stderr: {self.proc.stderr[-3000:]}")

    # --- the invariants -------------------------------------------------------------------------------

    def check_answers(self) -> None:
        for key in set(self.owed.by_key) | set(self.answers):
            owed, cancels = self.owed.by_key[key], self.owed.cancelled[key]
            assert owed - cancels <= self.answers[key] <= owed, self.owed_report(
                f"id {key!r}: {self.answers[key]} answer(s) for {owed} request(s) and {cancels} cancel(s)")
        assert self.null_answers == self.owed.null, self.owed_report("answers with id null")

    def check_recording(self) -> None:
        requests = 0
        rate_calls = 0
        refundable = 0
        for raw in self.record.read_bytes().splitlines() if self.record.exists() else []:
            if not raw.strip():
                continue
            msg = json.loads(raw)
            if raw not in self.sent_lines:
                # The one line of mcp-guard's own: a hidden tool's probe, a call to a random name that
                # cannot exist, with no arguments (its answer, with the hidden name put in, is the client's).
                params = msg.get("params") if isinstance(msg, dict) else None
                assert (msg.get("method") == "tools/call" and isinstance(params, dict)
                        and PROBE_NAME.fullmatch(params.get("name", "")) and params.get("arguments", {}) == {}
                        and set(params) <= {"name", "arguments", "_meta"}), \
                    f"the upstream got a line the client never sent: {raw!r}"
            assert isinstance(msg, dict), f"a batch reached the upstream: {raw!r}"
            method = msg.get("method")
            if method is not None and "id" not in msg:
                assert method.startswith("notifications/"), f"a non-notification notification got through: {raw!r}"
            if method is not None and "id" in msg:
                this_step = self.script[requests] if requests < len(self.script) else {}
                requests += 1
                if method == "tools/call":
                    name = msg["params"]["name"]
                    assert name not in HIDDEN, f"a call to hidden {name} reached the upstream: {raw!r}"
                    assert name not in DENIED, f"a call to denied {name} reached the upstream: {raw!r}"
                    if name == "rate_tool":
                        rate_calls += 1
                        if this_step.get("error") and this_step.get("action") != "crash":
                            refundable += 1  # an upstream JSON-RPC error gives the quota back
        assert rate_calls <= RATE_MAX + refundable, (
            f"{rate_calls} calls to rate_tool reached the upstream; limit {RATE_MAX}, {refundable} refundable")

    def check_exit(self) -> None:
        crash = next((s for s in self.script if s.get("action") == "crash"), None)
        if self.crashed_before_close:
            status = crash["status"] if crash else 1
            # The child exited first with N; N == 0 with the crashed request unanswered makes it 1 (0 when
            # that request had been cancelled: nothing was left unanswered).
            assert self.status == (status or 1) or (self.status == status == 0 and self.owed.cancelled), (
                self.status, status, self.proc.stderr[-2000:])
        elif self.crash_seen:
            # The client closed stdin, then the upstream crashed during the drain with the crashing request
            # unanswered: as if the child ended first (docs/relay.md), N, or 1 for 0.
            status = crash["status"] if crash else 1
            assert self.status == (status or 1), (self.status, status, self.proc.stderr[-2000:])
        else:
            # The client closed stdin first and everything was answered: 0, whatever the child then does.
            assert self.status == 0, (self.status, self.proc.stderr[-2000:])
        assert self.pid_file.exists(), "the server never started"
        server_pid = int(self.pid_file.read_text())
        deadline = time.monotonic() + 2.0
        while pid_alive(server_pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not pid_alive(server_pid), "the upstream server outlived mcp-guard"

    def events(self) -> set[str]:
        """What the example exercised, for --hypothesis-show-statistics."""
        seen = set()
        text = json.dumps(self.received)
        for needle, label in [("already used by a request in flight", "duplicate id refused"),
                              ("rate limit reached", "rate limit refused"),
                              ("Unknown tool: ", "unknown/hidden tool refused"),
                              ("malformed answer", "upstream garbage failed a request"),
                              ("exited with status", "crash answered"), ("batches are not supported", "batch"),
                              ("notifications/tools/list_changed", "list_changed"), ('"method": "roots/list"',
                                                                                     "server request")]:
            if needle in text:
                seen.add(label)
        if "refund" in self.proc.stderr or any(s.get("error") for s in self.script):
            seen.add("upstream errors scripted")
        if "dropped an upstream answer with unknown id" in self.proc.stderr:
            seen.add("late upstream answer dropped")
        seen.add(f"exit {self.status}")
        return seen

    def close(self) -> None:
        self.proc.kill()


def run_example(tmp_path: Path, messages: list[tuple], script: list[dict], page_size: int, close_early: bool,
                seed: int) -> None:
    session = Session(tmp_path, script, page_size, seed)
    try:
        session.run(messages, close_early)
        session.check_answers()
        session.check_recording()
        session.check_exit()
        for label in session.events():
            event(label)
    finally:
        session.close()


SESSION = dict(
    messages=st.lists(client_message, min_size=4, max_size=24),
    script=upstream_script,
    page_size=st.sampled_from([0, 1, 2, 3]),
    close_early=st.booleans(),
    seed=st.integers(0, 1000),
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(**SESSION)
def test_sessions_with_a_hostile_upstream(tmp_path, messages, script, page_size, close_early, seed):
    run_example(tmp_path, messages, script, page_size, close_early, seed)


# --- bugs found by the property, kept as explicit examples ---------------------------------------------------


@settings(max_examples=1, deadline=None, database=None, phases=[Phase.explicit],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(**SESSION)
@example(messages=[("ping", 0, "int")], script=[{"action": "crash", "status": 3}], page_size=0, close_early=True,
         seed=0)
@example(messages=[("ping", 0, "int")], script=[{"action": "crash", "status": 0}], page_size=0, close_early=True,
         seed=0)
def test_exit_status_when_the_upstream_dies_during_the_drain(tmp_path, messages, script, page_size,
                                                            close_early, seed):
    # Found by the property: the status used to be a race between the drain and the child's end. It is
    # now the child's (1 for 0, since a request was left unanswered); five runs, as it was timing-bound.
    for _ in range(5):
        run_example(tmp_path, messages, script, page_size, close_early, seed)
