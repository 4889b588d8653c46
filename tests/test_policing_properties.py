"""Property: whatever a client sends, what the policy forbids never reaches the upstream, and every request
with an id gets exactly one answer. One long-lived mcp-guard (and recording server) serves all examples."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))

from wireclient import WireProcess, guard_command  # noqa: E402

SERVER = Path(__file__).resolve().parent / "servers" / "recording_server.py"

TOOLS = ["allowed", "other_tool", "llm_job_cancel", "secret_a", "secret_b", "approve_tool", "rate_tool",
         "args_tool"]
POLICY = {
    "version": "1",
    "default": "allow",
    "hide": ["secret_*"],
    "rules": {
        "llm_job_cancel": {"action": "deny", "reason": "irreversible"},
        "approve_tool": {"action": "require_approval"},
        "rate_tool": {"rate_limit": {"max": 3, "window": 3600}},
        "args_tool": {"arguments": {"type": "object", "required": ["path"]}},
    },
}
FORBIDDEN = {"llm_job_cancel", "secret_a", "secret_b", "secret_zz", "approve_tool"}
HIDDEN_LISTED = {"secret_a", "secret_b"}
PROBE_NAME = re.compile(r"t[0-9a-f]{24}")  # mcp-guard's stand-in for a hidden tool's name
RATE_MAX = 3
ODD = ["LLM_JOB_CANCEL", "llm_job_cancel ", "llm_job_cancel\u200b", "llm_job_\u0441ancel", "secret_A",
       "Secret_a", "\uff53ecret_a"]

names = st.sampled_from(["allowed", "other_tool", "rate_tool", "args_tool", "unknown_tool", *FORBIDDEN, *ODD])
arguments = st.one_of(st.just(...), st.just({}), st.just({"path": "/tmp/x"}), st.just({"x": [1, {"y": None}]}),
                      st.just(None), st.just([1]), st.just("s"))


def call_params(name: Any, args: Any) -> dict:
    params: dict[str, Any] = {"name": name}
    if args is not ...:
        params["arguments"] = args
    return params


# A message template: (kind, payload). Ids are drawn from a small per-example pool (slot numbers), so
# duplicates happen; a slot is mapped to an int or a string id (and "N" collides with N).
slot = st.integers(0, 4)
id_style = st.sampled_from(["int", "str", "intstr"])
request_item = st.one_of(
    st.tuples(st.just("call"), slot, id_style, names, arguments),
    st.tuples(st.just("badname"), slot, id_style, st.sampled_from([None, 5, ["allowed"], {"n": 1}, ...])),
    st.tuples(st.just("list"), slot, id_style),
    st.tuples(st.just("ping"), slot, id_style),
)
notification_item = st.one_of(
    st.tuples(st.just("note_call"), names),
    st.tuples(st.just("note_ok")),
)
message = st.one_of(
    request_item,
    notification_item,
    st.tuples(st.just("batch"), st.lists(st.one_of(request_item, notification_item), min_size=1, max_size=3)),
    st.tuples(st.just("dupkey"), slot, id_style, st.sampled_from(["allowed", "other_tool"]),
              st.sampled_from(sorted(FORBIDDEN))),
    st.tuples(st.just("dupid"), slot, st.sampled_from(["allowed", "llm_job_cancel"])),
    st.tuples(st.just("garbage")),
)


def id_key(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, str)):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


class Session:
    def __init__(self, tmp: Path) -> None:
        self.record = tmp / "record.jsonl"
        policy = tmp / "policy.json"
        policy.write_text(json.dumps(POLICY))
        env = {**os.environ, "RECORD_FILE": str(self.record), "TOOLS": ",".join(TOOLS)}
        self.proc = WireProcess(guard_command() + ["run", "--policy", str(policy), "--", sys.executable,
                                                   str(SERVER)], env=env)
        self.sent_lines: set[bytes] = set()
        self.expected: Counter[str] = Counter()  # answers owed per id key
        self.flex: Counter[str] = Counter()  # answers owed per id key, or with id null instead
        self.expected_null = 0
        self.answers: Counter[str] = Counter()
        self.null_answers = 0
        self.base = itertools.count(1)
        self.send(json.dumps({"jsonrpc": "2.0", "id": "init", "method": "initialize",
                              "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                         "clientInfo": {"name": "prop", "version": "1"}}}).encode())
        answer = self.proc.recv(10)
        assert answer["id"] == "init" and "result" in answer, answer
        self.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')

    def send(self, line: bytes) -> None:
        self.sent_lines.add(line)
        self.proc.send(line)

    def take(self, message: Any) -> None:
        items = message if isinstance(message, list) else [message]
        for item in items:
            if not isinstance(item, dict):
                continue
            if "id" in item and "method" not in item:
                key = id_key(item["id"])
                if key is None:
                    self.null_answers += 1
                else:
                    self.answers[key] += 1
            # A tools/list answer must never show a hidden tool.
            result = item.get("result")
            if isinstance(result, dict) and isinstance(result.get("tools"), list):
                shown = {tool.get("name") for tool in result["tools"]}
                assert not shown & HIDDEN_LISTED, item

    def settled(self) -> bool:
        for key, owed in self.expected.items():
            if self.answers[key] < owed:
                return False
        flex_missing = sum(max(0, owed - (self.answers[key] - self.expected[key]))
                           for key, owed in self.flex.items())
        return self.null_answers >= self.expected_null + flex_missing

    def wait_settled(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.settled():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"answers still owed: expected {dict(self.expected)} flex {dict(self.flex)} "
                                     f"null {self.expected_null}; got {dict(self.answers)} null {self.null_answers}"
                                     f"; stderr: {self.proc.stderr[-2000:]}")
            self.take(self.proc.recv(remaining))
        # Give a surplus answer a moment to show itself, then check exactness.
        end = time.monotonic() + 0.05
        while True:
            try:
                self.take(self.proc.recv(max(0.001, end - time.monotonic())))
            except TimeoutError:
                break
        for key in set(self.expected) | set(self.answers) | set(self.flex):
            extra = self.answers[key] - self.expected[key]
            assert 0 <= extra <= self.flex[key], (key, self.answers[key], self.expected[key], self.flex[key])
        flex_to_null = sum(self.flex[key] - (self.answers[key] - self.expected[key]) for key in self.flex)
        assert self.null_answers == self.expected_null + flex_to_null, (self.null_answers, self.expected_null,
                                                                       flex_to_null)

    def check_recording(self) -> None:
        rate_calls = 0
        for raw in self.record.read_bytes().splitlines():
            if not raw.strip():
                continue
            msg = json.loads(raw, object_pairs_hook=_no_duplicates)
            if raw not in self.sent_lines:
                # Else forwarded as the exact bytes the client sent. The one line of mcp-guard's own: a hidden
                # tool's probe, a call to a random name that cannot exist, with nothing of the hidden call.
                assert msg.get("method") == "tools/call" and PROBE_NAME.fullmatch(msg["params"]["name"]), raw
                assert msg["params"].get("arguments", {}) == {} and set(msg["params"]) <= {"name", "arguments"}, raw
                continue
            assert isinstance(msg, dict), raw  # never a batch
            method = msg.get("method")
            if "id" not in msg:
                assert method.startswith("notifications/"), raw
            if method == "tools/call":
                params = msg["params"]
                assert isinstance(params["name"], str) and params["name"] not in FORBIDDEN, raw
                args = params.get("arguments")
                assert args is None or isinstance(args, dict), raw
                if params["name"] == "args_tool":
                    assert isinstance(args, dict) and "path" in args, raw
                if params["name"] == "rate_tool":
                    rate_calls += 1
        assert rate_calls <= RATE_MAX

    def close(self) -> None:
        self.proc.kill()


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"a message with duplicate keys reached the upstream: {keys}"
    return dict(pairs)


def make_id(base: int, slot_no: int, style: str) -> Any:
    number = base * 10 + slot_no
    return number if style == "int" else f"s{number}" if style == "str" else str(number)


def render(item: tuple, base: int) -> tuple[dict, Any]:
    """A message object and its id (or ... for a notification)."""
    kind = item[0]
    if kind == "call":
        _, slot_no, style, name, args = item
        request_id = make_id(base, slot_no, style)
        return ({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                 "params": call_params(name, args)}, request_id)
    if kind == "badname":
        _, slot_no, style, name = item
        request_id = make_id(base, slot_no, style)
        params = {} if name is ... else {"name": name}
        return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}, request_id
    if kind in ("list", "ping"):
        request_id = make_id(base, item[1], item[2])
        method = "tools/list" if kind == "list" else "ping"
        return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}}, request_id
    if kind == "note_call":
        return {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": item[1]}}, ...
    assert kind == "note_ok"
    return {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"}, ...


def test_policy_holds_for_any_message_sequence(tmp_path):
    session = Session(tmp_path)
    try:
        @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                  derandomize=False)
        @given(st.lists(message, min_size=1, max_size=12))
        def run(messages: list[tuple]) -> None:
            base = next(session.base)
            for message_ in messages:
                kind = message_[0]
                if kind == "batch":
                    rendered = [render(item, base) for item in message_[1]]
                    owed = [rid for _, rid in rendered if rid is not ...]
                    if owed:
                        for rid in owed:
                            session.expected[id_key(rid)] += 1
                    else:
                        session.expected_null += 1
                    session.send(json.dumps([body for body, _ in rendered]).encode())
                elif kind == "dupkey":
                    _, slot_no, style, good, bad = message_
                    rid = make_id(base, slot_no, style)
                    line = (f'{{"jsonrpc":"2.0","id":{json.dumps(rid)},"method":"tools/call",'
                            f'"params":{{"name":{json.dumps(good)},"name":{json.dumps(bad)}}}}}')
                    session.flex[id_key(rid)] += 1
                    session.send(line.encode())
                elif kind == "dupid":
                    _, slot_no, name = message_
                    line = (f'{{"jsonrpc":"2.0","id":{base * 10 + slot_no},"id":{base * 10 + 9},'
                            f'"method":"tools/call","params":{{"name":{json.dumps(name)}}}}}')
                    session.expected_null += 1
                    session.send(line.encode())
                elif kind == "garbage":
                    session.expected_null += 1
                    session.send(b'{"jsonrpc":"2.0","id":')
                else:
                    body, rid = render(message_, base)
                    if rid is not ...:
                        session.expected[id_key(rid)] += 1
                    session.send(json.dumps(body).encode())
            session.wait_settled()
            # A ping through the upstream: everything forwarded before it is in the recording after.
            barrier = f"barrier-{base}"
            session.expected[barrier] += 1
            session.send(json.dumps({"jsonrpc": "2.0", "id": barrier, "method": "ping"}).encode())
            session.wait_settled()
            session.check_recording()

        run()
        assert session.proc.proc.poll() is None, session.proc.stderr
    finally:
        session.close()
