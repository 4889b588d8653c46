"""The interceptor: sees each message, asks the engine, tells the relay forward / reply / drop.

It knows the MCP methods that matter to a policy (tools/list, tools/call) and the two protocol eras,
and nothing of file descriptors or processes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import wire
from .actions import ClientAction, Drop, Forward, Reply
from .argcheck import ArgumentChecks
from .audit import AuditLog
from .engine import Charge, Decision, SessionState, ToolCall, decide, select_rule, visible
from .policy import Policy

log = logging.getLogger("mcp_guard")

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
# Stateless MCP (no initialize; every request carries its version) starts with this revision.
FIRST_STATELESS_VERSION = "2026-07-28"
DECISION_META = "mcp-guard/decision"
# tools/call params in the handshake and stateless eras; anything else is looked at more closely.
CALL_PARAMS = frozenset({"name", "arguments", "_meta", "task", "inputResponses", "requestState"})
# JSON-RPC errors that mean the server did not run the call (method not found, invalid params, invalid
# request): the only answers that give a call's quota back.
REFUND_CODES = frozenset({wire.INVALID_REQUEST, wire.METHOD_NOT_FOUND, wire.INVALID_PARAMS})


@dataclass(slots=True)
class ListWatch:
    """A tools/list in flight: its answer must be filtered before the client sees it."""

    request_id: Any


@dataclass(slots=True)
class CallWatch:
    """An allowed tools/call that took from a limit: a JSON-RPC error answer gives the quota back,
    unless the client cancelled the call (a server answers a cancelled call with an error, after it
    may have done the work)."""

    tool: str
    charges: tuple[Charge, ...]
    id_key: str = ""
    cancelled: bool = False
    started: bool = False  # the server asked the client something while the call was in flight


def _carries_stateless_version(msg: wire.Message) -> bool:
    """Whether a request says, in params._meta, that it speaks 2026-07-28 or later."""
    params = msg.params
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    return isinstance(version, str) and version >= FIRST_STATELESS_VERSION


class Guard:
    def __init__(self, policy: Policy, audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self.audit = audit or AuditLog(None)
        self.clock = clock
        self.state = SessionState()
        self.era: str | None = None  # "handshake" or "stateless", from the client's requests
        self._charged_calls: dict[str, CallWatch] = {}  # by request id, while the call is in flight
        # (tool, requestState) handed out with input_required answers to charged calls: the retry that
        # carries one back is the same call, not charged again. One use each; bounded.
        self._continuations: dict[tuple[str, str], None] = {}
        self._argument_checks = ArgumentChecks(policy)

    # --- client messages -------------------------------------------------------------------------

    def client_request(self, msg: wire.Message) -> ClientAction:
        method = msg.method
        self._note_era(msg)
        if method == "tools/call":
            return self._tools_call(msg)
        if method == "tools/list":
            return Forward(watch=ListWatch(msg.id))
        return Forward()

    def client_notification(self, msg: wire.Message) -> Forward | Drop:
        # Every client notification MCP defines lives under notifications/. Anything else (a
        # tools/call sent without an id, say) is something a lenient server might act on unseen.
        if msg.method is not None and msg.method.startswith("notifications/"):
            if msg.method == "notifications/cancelled" and self._charged_calls:
                params = msg.params
                request_id = params.get("requestId") if isinstance(params, dict) else None
                key = wire.id_key(request_id)
                watch = self._charged_calls.get(key) if key is not None else None
                if watch is not None:
                    watch.cancelled = True
            return Forward()
        self.audit.record("notification_dropped", method=msg.method)
        return Drop(f"{msg.method} is not a notification; requests must carry an id")

    def _note_era(self, msg: wire.Message) -> None:
        if msg.method == "initialize":
            self.era = "handshake"
            return
        if self.era is not None and msg.method != "server/discover":
            return
        if _carries_stateless_version(msg):
            self.era = "stateless"

    def _stateless(self, msg: wire.Message) -> bool:
        return self.era == "stateless" or _carries_stateless_version(msg)

    def _tools_call(self, msg: wire.Message) -> ClientAction:
        params = msg.params
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str):
            self.audit.record("call", request_id=msg.id, tool=None, action="deny",
                              reason="tools/call without a string name")
            return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS,
                                             "Invalid params: tools/call needs a string \"name\""))
        assert isinstance(params, dict)
        for key in () if params.keys() <= CALL_PARAMS else params:
            if key not in ("name", "arguments") and key.casefold() in ("name", "arguments"):
                # A case-insensitive parser upstream would read this key as the real one.
                self.audit.record("call", request_id=msg.id, tool=name, action="deny",
                                  reason=f"ambiguous key {key!r} in params")
                return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS,
                                                 f"Invalid params: key {key!r} is ambiguous"))
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            self.audit.record("call", request_id=msg.id, tool=name, action="deny",
                              reason="arguments is not an object")
            return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS,
                                             "Invalid params: tools/call \"arguments\" must be an object"))
        rule = select_rule(self.policy, name)
        if rule is not None and rule.arguments is not None and rule.action in ("allow", "require_approval"):
            # An argument schema can take long to check (argcheck.py): the check runs off the relay's
            # pump, within the policy's limits, and the decision is made when it is done, as of now.
            now = self.clock()
            return self._argument_checks.defer(
                rule, arguments, len(msg.raw),
                lambda problem: self._decide_call(msg, params, name, arguments, (problem,), now))
        return self._decide_call(msg, params, name, arguments)

    def _decide_call(self, msg: wire.Message, params: dict[str, Any], name: str, arguments: Any,
                     checked: tuple[str | None] | None = None, now: float | None = None) -> ClientAction:
        """The decision on a tools/call; `checked` holds the argument check's finding when it was made."""
        if now is None:
            now = self.clock()
        request_state = params.get("requestState")
        continuation = False
        if isinstance(request_state, str) and (name, request_state) in self._continuations:
            del self._continuations[(name, request_state)]
            continuation = True
        decision = decide(self.policy, ToolCall(name, arguments, continuation, checked is not None,
                                                checked[0] if checked is not None else None), self.state, now)
        if self.audit.enabled:
            self.audit.record("call", request_id=msg.id, tool=name, **decision.as_record(),
                              argument_keys=sorted(arguments) if arguments else [])
        if decision.allowed:
            if decision.charges or continuation:
                self.state.record(decision.charges)
                assert msg.id_key is not None
                watch = CallWatch(name, decision.charges, msg.id_key)
                self._charged_calls[msg.id_key] = watch
                return Forward(watch=watch)
            return Forward()
        if decision.action == "hide":
            log.warning("refused a call to %s: hidden by %s", name, decision.rule or "the default")
            # Exactly what a server answers for a tool it does not have: nothing mentions policy.
            return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS, f"Unknown tool: {name}"))
        log.warning("refused a call to %s (%s): %s", name, decision.rule or "default", decision.reason)
        return Reply(self._refusal(msg, name, decision))

    def _refusal(self, msg: wire.Message, name: str, decision: Decision) -> bytes:
        text = f"mcp-guard refused the call to {name}: {decision.reason}"
        if decision.retry_after is not None:
            # Rounded up: retrying after the time said must not be refused again.
            text += f". Retry after {math.ceil(decision.retry_after)} s"
        text += "."
        result: dict[str, Any] = {
            "content": [{"type": "text", "text": text}],
            "isError": True,
            "_meta": {DECISION_META: decision.as_record()},
        }
        if self._stateless(msg):
            result["resultType"] = "complete"
        return wire.result_response(msg.id, result)

    # --- upstream answers ------------------------------------------------------------------------

    def upstream_answer(self, msg: wire.Message, watch: Any) -> Forward | Reply:
        if isinstance(watch, ListWatch):
            return self._filter_listing(msg, watch)
        if isinstance(watch, CallWatch):
            self._charged_calls.pop(watch.id_key, None)
            result = msg.body.get("result")
            error = msg.body.get("error")
            code = error.get("code") if isinstance(error, dict) else None
            # Refunded only when the server refused the call before running it: a JSON-RPC error of the
            # kinds that mean so (unknown method or tool, invalid params or request), for a call the
            # client did not cancel and during which the server asked the client nothing. Everything
            # else keeps its share: a result with isError (the tool ran and may have done its work
            # first), other errors (a failure after the work, or an error the client itself caused).
            if code in REFUND_CODES and not watch.cancelled and not watch.started:
                self.state.refund(watch.charges)
                self.audit.record("refund", tool=watch.tool, request_id=msg.id)
            elif isinstance(result, dict) and result.get("resultType") == "input_required":
                state = result.get("requestState")
                if isinstance(state, str):
                    if len(self._continuations) >= 1024:
                        self._continuations.pop(next(iter(self._continuations)))
                    self._continuations[(watch.tool, state)] = None
        return Forward()

    def upstream_request(self, msg: wire.Message) -> None:
        # Sampling, elicitation, roots: the server is working on whatever is in flight.
        for watch in self._charged_calls.values():
            watch.started = True

    def upstream_answer_lost(self, watch: Any) -> None:
        # The call may or may not have run: its quota stays taken.
        if isinstance(watch, CallWatch):
            self._charged_calls.pop(watch.id_key, None)

    def _filter_listing(self, msg: wire.Message, watch: ListWatch) -> Forward | Reply:
        if "error" in msg.body:
            return Forward()
        result = msg.body.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list) or not all(
                isinstance(tool, dict) and isinstance(tool.get("name"), str) for tool in tools):
            log.warning("withheld a tools/list answer that mcp-guard could not read")
            return Reply(wire.error_response(watch.request_id, wire.INTERNAL_ERROR,
                                             "mcp-guard could not read the upstream server's tool list"))
        kept: list[Any] = []
        hidden: list[str] = []
        for tool in tools:
            if visible(self.policy, tool["name"]):
                kept.append(tool)
            else:
                hidden.append(tool["name"])
        if not hidden:
            return Forward()
        self.audit.record("list", request_id=msg.id, hidden=hidden, shown=len(kept))
        assert isinstance(result, dict)
        result["tools"] = kept
        return Forward(replacement=wire.encode(msg.body))
