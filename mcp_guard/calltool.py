"""`mcp-guard call`: one tool call through the policy, as `run` decides it, for scripts and for people.

Nothing here decides anything. A call goes through the real thing: `mcp-guard run --policy FILE --audit
FILE -- COMMAND` is started as a subprocess (the same relay and guard an MCP client talks to), and this
module is its client: initialize, tools/call, stdin closed. What the policy decided is then read, not
guessed, from two places that must agree:

- the guard's decision record for that request in the audit file (`"event": "call"`, by request id),
  written before the answer is relayed; and
- the answer itself: a refusal carries mcp-guard's decision record in `result._meta["mcp-guard/decision"]`,
  while an allowed call's answer is the server's own. A hidden tool is answered with the server's own
  answer to a tool it does not have, so only the audit record tells it apart.

An answer that contradicts its decision record (a refusal without mcp-guard's `_meta`, or an allowed call
answered with it) is reported as such: it never counts as a pass or as a refusal.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any

from .commandline import Failure, parse_arguments

DECISION_META = "mcp-guard/decision"  # guard.DECISION_META, without importing the relay to read it
RECORD_WAIT_SECONDS = 5.0  # for the decision record of a call already answered (audit.py writes it in a thread)

# What happened to a call, in the words `call` and `mcp-guard test` use.
ALLOWED = "allowed"  # it reached the server, which answered (successfully or not)
HIDDEN = "hidden"
DENIED = "denied"
RATE_LIMITED = "rate_limited"
OVER_BUDGET = "over_budget"
NEEDS_APPROVAL = "needs_approval"
REFUSALS = (HIDDEN, DENIED, RATE_LIMITED, OVER_BUDGET, NEEDS_APPROVAL)


def outcome_of(record: dict[str, Any]) -> str:
    """A decision record's action and kind (engine.Decision.as_record, with `kind` from the audit) in words."""
    action = record.get("action")
    if action == "allow" or record.get("monitor") is True:  # monitor mode: recorded, and forwarded
        return ALLOWED
    if action == "hide":
        return HIDDEN
    if action == "require_approval":
        return NEEDS_APPROVAL
    reason = str(record.get("reason") or "")
    if record.get("kind") == "rate_limit" or reason.startswith("rate limit reached"):
        return RATE_LIMITED
    if record.get("kind") == "budget" or reason.startswith(("budget exhausted", "cost ")):
        return OVER_BUDGET
    return DENIED


@dataclass
class CallOutcome:
    """One call's fate: `outcome` (ALLOWED or one of REFUSALS), the decision record, the answer."""

    tool: str
    outcome: str
    decision: dict[str, Any]
    answer: dict[str, Any]
    server_error: bool = False  # ALLOWED, and the server answered with isError or a JSON-RPC error
    problem: str | None = None  # the answer contradicts the decision record
    texts: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return str(self.decision.get("reason") or "")

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


class SessionError(Exception):
    """The guarded server could not be started or stopped answering: one line, with its stderr's tail."""


class GuardedSession:
    """A client session with `mcp-guard run --audit` in front of COMMAND."""

    def __init__(self, policy_path: str, command: list[str], timeout: float, cwd: str | None = None,
                 stderr: IO[bytes] | None = None) -> None:
        self.timeout = timeout
        self._directory = tempfile.TemporaryDirectory(prefix="mcp-guard-call-")
        self.audit_path = os.path.join(self._directory.name, "audit.jsonl")
        # Held to show its tail when the session fails, unless the caller takes it (`call` passes it on).
        self._held_stderr: IO[bytes] | None = None if stderr is not None else tempfile.TemporaryFile()  # noqa: SIM115
        argv = [sys.executable, "-m", "mcp_guard", "run", "--policy", os.path.abspath(policy_path),
                "--audit", self.audit_path, "--log-level", "error", "--", *command]
        env = {**os.environ}
        env.pop("MCP_GUARD_AUDIT", None)
        try:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr if stderr is not None else self._held_stderr,
                                            cwd=cwd, env=env)
        except OSError as exc:
            self._directory.cleanup()
            if self._held_stderr is not None:
                self._held_stderr.close()
            raise SessionError(f"cannot start mcp-guard run: {exc.strerror or exc}") from None
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._next_id = 0
        self._closed = False
        self._audit_offset = 0
        self._decisions: dict[Any, dict[str, Any]] = {}

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def stderr_tail(self, lines: int = 5) -> str:
        if self._held_stderr is None:
            return ""
        try:
            self._held_stderr.seek(0)
            text = self._held_stderr.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    def _failed(self, what: str, with_stderr: bool = True) -> SessionError:
        tail = self.stderr_tail() if with_stderr else ""
        return SessionError(what + (f" (stderr: {tail})" if tail else ""))

    def request(self, method: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Send a request; its id and its answer (notifications and server requests are passed over;
        a server request is answered "method not found" so the server does not wait on us)."""
        self._next_id += 1
        request_id = self._next_id
        self._send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise self._failed(f"no answer to {method} within {self.timeout:g} s") from None
            if not line:
                self.process.wait()
                raise self._failed(f"mcp-guard run exited (status {self.process.returncode}) before "
                                   f"answering {method}")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if "method" in message:
                if "id" in message:
                    self._send({"jsonrpc": "2.0", "id": message["id"],
                                "error": {"code": -32601, "message": "Method not found"}})
                continue
            if message.get("id") == request_id:
                return request_id, message

    def _send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(message).encode() + b"\n")
            self.process.stdin.flush()
        except (BrokenPipeError, OSError):
            self.process.wait()
            raise self._failed(f"mcp-guard run exited (status {self.process.returncode})") from None

    def initialize(self) -> None:
        _, answer = self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                                "clientInfo": {"name": "mcp-guard-test", "version": "1"}})
        error = answer.get("error")
        if error is not None:
            message = error.get("message") if isinstance(error, dict) else None
            if isinstance(message, str) and message.startswith("mcp-guard: "):
                # `run` could not start (startup.answer_first_request): it tells its client why.
                raise self._failed(f"mcp-guard run did not start: {message.removeprefix('mcp-guard: ')}",
                                   with_stderr=False)
            raise self._failed(f"the server refused initialize: {json.dumps(error)}")
        self._send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def list_tools(self) -> list[str]:
        names: list[str] = []
        cursor: Any = None
        for _ in range(1000):
            _, answer = self.request("tools/list", {"cursor": cursor} if cursor else {})
            result = answer.get("result")
            if not isinstance(result, dict) or not isinstance(result.get("tools"), list):
                raise self._failed(f"tools/list was not answered with a tool list: {json.dumps(answer)[:200]}")
            names += [t["name"] for t in result["tools"] if isinstance(t, dict) and isinstance(t.get("name"), str)]
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return names

    def call(self, tool: str, arguments: dict[str, Any] | None) -> CallOutcome:
        params: dict[str, Any] = {"name": tool}
        if arguments is not None:
            params["arguments"] = arguments
        request_id, answer = self.request("tools/call", params)
        record = self._decision_record(request_id)
        return judge(tool, record, answer)

    def _decision_record(self, request_id: int) -> dict[str, Any]:
        # The audit's writer thread writes it as the answer passes (a forwarded call's record holds the
        # answer's outcome): looked for again for a moment if it is not there yet.
        deadline = time.monotonic() + RECORD_WAIT_SECONDS
        while True:
            self._read_records()
            found = self._decisions.pop(request_id, None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise self._failed(f"mcp-guard wrote no decision record for request {request_id}")
            time.sleep(0.01)

    def _read_records(self) -> None:
        # Read on from where the last look stopped: a file of many calls is read once, not once per call.
        try:
            with open(self.audit_path, encoding="utf-8") as audit:
                audit.seek(self._audit_offset)
                while line := audit.readline():
                    if not line.endswith("\n"):
                        break  # a record still being written: read it whole next time
                    self._audit_offset = audit.tell()
                    record = json.loads(line)
                    if isinstance(record, dict) and record.get("event") == "call":
                        self._decisions[record.get("request_id")] = record
        except (OSError, ValueError):
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.process.stdin is not None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
        try:
            self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._directory.cleanup()
        if self._held_stderr is not None:
            self._held_stderr.close()

    def __enter__(self) -> GuardedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def judge(tool: str, record: dict[str, Any], answer: dict[str, Any]) -> CallOutcome:
    """What happened, from the decision record and the answer, which must agree."""
    result = answer.get("result")
    meta = result.get("_meta") if isinstance(result, dict) else None
    refusal_record = meta.get(DECISION_META) if isinstance(meta, dict) else None
    outcome = outcome_of(record)
    texts = []
    if isinstance(result, dict) and isinstance(result.get("content"), list):
        texts = [part["text"] for part in result["content"]
                 if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)]
    elif isinstance(answer.get("error"), dict):
        texts = [str(answer["error"].get("message"))]
    called = CallOutcome(tool, outcome, record, answer, texts=texts)
    if outcome == ALLOWED:
        called.server_error = "error" in answer or (isinstance(result, dict) and result.get("isError") is True)
        if refusal_record is not None:
            called.problem = "the decision record says allowed, but the answer carries mcp-guard's refusal"
    elif outcome == HIDDEN:
        if refusal_record is not None:
            called.problem = "a hidden tool was answered with mcp-guard's refusal, not as an unknown tool"
    elif not isinstance(refusal_record, dict) or refusal_record.get("action") != record.get("action"):
        called.problem = (f"the decision record says {outcome}, but the answer carries no matching refusal "
                          "from mcp-guard")
    return called


def call(policy_path: str, tool: str, args_json: str | None, command: tuple[str, ...], as_json: bool,
         timeout: float) -> int:
    """Exit status: 0 ran and succeeded, 1 the server answered with an error, 3 refused, 2 bad input."""
    import click

    from .commandline import load_policy

    arguments = parse_arguments(args_json)
    if not command:
        raise Failure("no server command: use mcp-guard call [--policy FILE] TOOL [--args JSON] -- COMMAND...", 2)
    policy = load_policy(policy_path, False)  # a bad policy is bad input here, said in one line, before anything starts
    try:
        with GuardedSession(policy_path, list(command), timeout, stderr=sys.stderr.buffer) as session:
            session.initialize()
            if policy.pin is not None:
                # Under a pin, run refuses a tool no listing has shown matching it: list, as a client does.
                session.list_tools()
            called = session.call(tool, arguments)
    except SessionError as exc:
        raise Failure(str(exc), 2) from None
    if as_json:
        shown = called.answer["result"] if "result" in called.answer else {"error": called.answer.get("error")}
        click.echo(json.dumps(shown, ensure_ascii=False))
    elif called.text:
        click.echo(called.text)
    if called.problem is not None:
        click.echo(f"mcp-guard: error: {called.problem}", err=True)
        return 1
    if called.outcome != ALLOWED:
        how = "hidden by the policy (answered as the server answers a tool it does not have)" \
            if called.outcome == HIDDEN else f"{called.outcome.replace('_', ' ')}: {called.reason}"
        click.echo(f"mcp-guard: refused: {tool} {how} [rule: {called.decision.get('rule') or 'default'}]",
                   err=True)
        return 3
    return 1 if called.server_error else 0
