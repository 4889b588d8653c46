"""The interceptor: sees each message, asks the engine, tells the relay forward / reply / drop.

It knows the MCP methods that matter to a policy (tools/list, tools/call) and the two protocol eras,
and nothing of file descriptors or processes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import wire
from .actions import ClientAction, Defer, Drop, Forward, Reply
from .approval import Outcome, refusal, without_own_parts
from .approver import Approver, own_state
from .argcheck import ArgumentChecks
from .audit import MONITOR_NAMES, AuditLog, decision_name
from .engine import Decision, SessionState, ToolCall, decide, select_rule, visible
from .policy import Approval, Policy
from .watches import (
    MAX_CONTINUATIONS,
    PROBE_PARAMS,
    PROBE_PREFIX_CHARS,
    CallWatch,
    InitWatch,
    ListenWatch,
    ListWatch,
    ProbeWatch,
    TimedCall,
    read_ambiguous_listing,
)
from .watches import log_call as _log_call
from .watches import new_probe_name as _new_probe_name
from .watches import outcome_text as _outcome
from .watches import wants_tool_changes as _wants_tool_changes

if TYPE_CHECKING:
    from .actions import ClientChannel
    from .pinning import PinAction, PinCheck
    from .reload import PolicyReloader, Prepared
    from .sharedlimits import SharedLimits

log = logging.getLogger("mcp_guard")

PROTOCOL_VERSION_META = "io.modelcontextprotocol/protocolVersion"
SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"
# Stateless MCP (no initialize; every request carries its version) starts with this revision.
FIRST_STATELESS_VERSION = "2026-07-28"
DECISION_META = "mcp-guard/decision"
# tools/call params in the handshake and stateless eras; anything else is looked at more closely.
CALL_PARAMS = frozenset({"name", "arguments", "_meta", "task", "inputResponses", "requestState"})
# With live reload, a listing's ttlMs (2026-07-28 caching) is cut to this: a client that opened no
# subscription must not keep a listing fresh for long after the policy that filtered it changed.
MAX_TTL_MS = 1000
# JSON-RPC errors that mean the server did not run the call (method not found, invalid params, invalid
# request): the only answers that give a call's quota back.
REFUND_CODES = frozenset({wire.INVALID_REQUEST, wire.METHOD_NOT_FOUND, wire.INVALID_PARAMS})


def _carries_stateless_version(msg: wire.Message) -> bool:
    """Whether a request says, in params._meta, that it speaks 2026-07-28 or later."""
    params = msg.params
    meta = params.get("_meta") if isinstance(params, dict) else None
    version = meta.get(PROTOCOL_VERSION_META) if isinstance(meta, dict) else None
    return isinstance(version, str) and version >= FIRST_STATELESS_VERSION


class Guard:
    def __init__(self, policy: Policy, audit: AuditLog | None = None,
                 clock: Callable[[], float] = time.monotonic, shared: SharedLimits | None = None,
                 pins: PinCheck | None = None, monitor: bool = False, approval_command: str | None = None,
                 server_command: tuple[str, ...] | list[str] = ()) -> None:
        self.policy = policy
        self.monitor = monitor  # --monitor: the whole policy in monitor mode, whatever it says
        self.pins = pins  # the policy's tool pin (pinning.py), its lock file read at start
        if shared is None and policy.shared_limits:
            from .sharedlimits import in_memory

            shared = in_memory(policy)
        self.shared = shared  # the limit stores of user- and global-scoped limits
        self.audit = audit or AuditLog(None)
        self.clock = clock
        self.state = SessionState()
        self.era: str | None = None  # "handshake" or "stateless", from the client's requests
        self._charged_calls: dict[str, CallWatch] = {}  # by request id, while the call is in flight
        # (tool, requestState) handed out with input_required answers to charged calls, with the canonical
        # form of the charged call's arguments: the retry that carries the state back with identical
        # arguments is the same call, not charged again. One use each, whatever the retry carries; bounded.
        self._continuations: dict[tuple[str, str], str] = {}
        self._probe_name = _new_probe_name()
        self.counts: dict[str, int] = {}  # tools/call decisions by action, for the session's end record
        # One line per call at info level (tool, decision, rule, ms); decided once, it costs a watch.
        self.log_calls = log.isEnabledFor(logging.INFO)
        self._argument_checks = ArgumentChecks(policy)
        # Live reload (reload.py): the next policy, taken up at the next message; what the client was shown.
        self.reloader: PolicyReloader | None = None
        self._next: Prepared | None = None
        self.listed: frozenset[str] = frozenset()  # every tool name a listing has shown so far
        self.initialized = False  # the handshake's initialize was answered (list_changed can be sent)
        self._tool_listeners: dict[str, Any] = {}  # open listen streams that want list changes, by id key
        # Asks a human about require_approval calls (approver.py); the command line's command wins.
        self.approver = Approver(self.audit, clock, approval_command or policy.approval_command, server_command)
        self._approval_command = approval_command  # the command line's (or environment's): a reload keeps it

    # --- client messages -------------------------------------------------------------------------

    def client_request(self, msg: wire.Message) -> ClientAction:
        if self._next is not None:
            self._take_next()
        method = msg.method
        self._note_era(msg)
        if method == "tools/call":
            return self._tools_call(msg)
        if method == "tools/list":
            return Forward(watch=ListWatch(msg.id))
        if method in ("initialize", "server/discover"):
            if method == "initialize":
                self.approver.note_initialize(msg.params)
            return Forward(watch=InitWatch(msg.id))
        if method == "subscriptions/listen" and self.reloader is not None and _wants_tool_changes(msg):
            assert msg.id_key is not None
            self._tool_listeners = {**self._tool_listeners, msg.id_key: msg.id}  # read by the reloader
            return Forward(watch=ListenWatch(msg.id_key))
        return Forward()

    def client_notification(self, msg: wire.Message) -> Forward | Drop:
        if self._next is not None:
            self._take_next()
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
            self.era = self.audit.era = "handshake"
            return
        if self.era is not None and msg.method != "server/discover":
            return
        if _carries_stateless_version(msg):
            self.era = self.audit.era = "stateless"

    def _stateless(self, msg: wire.Message) -> bool:
        return self.era == "stateless" or _carries_stateless_version(msg)

    def _tools_call(self, msg: wire.Message) -> ClientAction:
        params = msg.params
        name = params.get("name") if isinstance(params, dict) else None
        if not isinstance(name, str):
            self.audit.record("call", request_id=msg.id, tool=None, action="deny", kind="malformed",
                              reason="tools/call without a string name")
            return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS,
                                             "Invalid params: tools/call needs a string \"name\""))
        assert isinstance(params, dict)
        for key in () if params.keys() <= CALL_PARAMS else params:
            if key not in ("name", "arguments") and key.casefold() in ("name", "arguments"):
                # A case-insensitive parser upstream would read this key as the real one.
                self.audit.record("call", request_id=msg.id, tool=name, action="deny", kind="malformed",
                                  reason=f"ambiguous key {key!r} in params")
                return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS,
                                                 f"Invalid params: key {key!r} is ambiguous"))
        arguments = params.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            self.audit.record("call", request_id=msg.id, tool=name, action="deny", kind="malformed",
                              reason="arguments is not an object")
            return Reply(wire.error_response(msg.id, wire.INVALID_PARAMS,
                                             "Invalid params: tools/call \"arguments\" must be an object"))
        if self.pins is not None and visible(self.policy, name):
            # (A tool the policy hides is never compared with the pin: it stays answered as unknown.)
            refused = self.pins.refusal(name)
            if refused is not None and refused[0] == "require_approval":
                # A tool changed since it was pinned, listed under "on_pin_mismatch": "require_approval":
                # the person is asked about that first; approved, the policy decides as for any call (a
                # require_approval rule of its own counts as approved by the same answer).
                return self._ask(msg, params, name, arguments, None,
                                 Decision("require_approval", None, refused[1], kind="pin"),
                                 lambda replacement: self._after_pin(msg, params, name, arguments, (replacement,)))
            if refused is not None:
                return self._pin_refusal(msg, name, params, *refused)
        return self._after_pin(msg, params, name, arguments)

    def _after_pin(self, msg: wire.Message, params: dict[str, Any], name: str, arguments: Any,
                   approval: tuple[bytes | None] | None = None) -> ClientAction:
        self._latest()
        policy = self.policy
        rule = select_rule(policy, name)
        if rule is not None and rule.arguments is not None and rule.action in ("allow", "require_approval"):
            # An argument schema can take long to check (argcheck.py): the check runs off the relay's
            # pump, within the policy's limits, and the decision is made when it is done, as of now
            # (checked again when a reload replaced the policy meanwhile: never an old schema's verdict).
            now = self.clock()
            return self._argument_checks.defer(
                rule, arguments, len(msg.raw),
                lambda problem: self._decide_call(msg, params, name, arguments, (problem,), now, approval)
                if self._latest() is policy else self._after_pin(msg, params, name, arguments, approval))
        return self._decide_call(msg, params, name, arguments, approval=approval)

    def _latest(self) -> Policy:
        """The policy in force now: a reload waiting to be taken up is taken up first (a deferred call is
        settled without a message of its own, and must not be decided under a policy already replaced)."""
        if self._next is not None:
            self._take_next()
        return self.policy

    def _decide_call(self, msg: wire.Message, params: dict[str, Any], name: str, arguments: Any,
                     checked: tuple[str | None] | None = None, now: float | None = None,
                     approval: tuple[bytes | None] | None = None) -> ClientAction:
        """The decision on a tools/call; `checked` holds the argument check's finding when it was made;
        `approval`, when a human approved the call, the line to forward instead (None: the call's own)."""
        if now is None:
            now = self.clock()
        request_state = params.get("requestState")
        continuation = False
        if isinstance(request_state, str) and self._continuations:
            charged_arguments = self._continuations.pop((name, request_state), None)
            # A server need not seal its state to the arguments (the SDK's lowlevel Server does not): a retry
            # with other arguments is another call, decided and charged in full.
            continuation = (charged_arguments is not None
                            and wire.call_arguments_fingerprint(msg.raw) == charged_arguments)
        # The retry of an approved call that the upstream itself answered input_required is that call.
        approved = approval is not None or self.approver.continues_approved(name, params, msg.raw)
        decision = decide(self.policy, ToolCall(name, arguments, continuation, checked is not None,
                                                checked[0] if checked is not None else None, approved),
                          self.state, now)
        if decision.action == "require_approval" and not self._monitored(decision, name):
            return self._ask(msg, params, name, arguments, checked, decision)
        replacement = approval[0] if approval is not None else None
        if replacement is None and decision.allowed and own_state(params):
            # Approved once, no longer needing it (the policy changed): mcp-guard's state stays its own.
            replacement = without_own_parts(msg.raw)
            if replacement is None:
                decision = Decision("deny", decision.rule, "the call could not be rewritten for the server",
                                    kind="approval")
        self.counts[decision.action] = self.counts.get(decision.action, 0) + 1
        if decision.allowed and self.shared is not None and any(c.scope != "session" for c in decision.charges):
            return self._shared_call(msg, name, arguments, decision, now, replacement, approved)
        if not decision.allowed and self._monitored(decision, name):
            return self._monitor_forward(msg, name, arguments, decision, now)
        pending = None
        if self.audit.enabled:
            fields = {"request_id": msg.id, "tool": name, **decision.as_record(), "kind": decision.kind,
                      **self.audit.arguments(arguments)}
            if decision.allowed:
                pending = self.audit.pending("call", **fields)  # written with the answer's outcome
            else:
                self.audit.record("call", **fields)
        if decision.allowed:
            if decision.charges or continuation or approved:
                self.state.record(decision.charges)
                assert msg.id_key is not None
                watch = CallWatch(name, decision.charges, msg.id_key, request_line=msg.raw, rule=decision.rule,
                                  since=now if self.log_calls else None, refund=self._refund_mode(name),
                                  audit=pending, approved=approved)
                self._charged_calls[msg.id_key] = watch
                return Forward(watch=watch, replacement=replacement)
            if self.log_calls or pending is not None:
                return Forward(watch=TimedCall(name, decision.rule, now if self.log_calls else None, pending),
                               replacement=replacement)
            return Forward(replacement=replacement)
        elapsed = self.clock() - now
        if decision.action == "hide":
            _log_call(logging.WARNING, name, "hide", decision.rule, elapsed,
                      "answered as the server answers a tool it does not have")
            return self._hidden_call(msg, name, params)
        _log_call(logging.WARNING, name, decision.action, decision.rule, elapsed, f"refused: {decision.reason}")
        return Reply(self._refusal(msg, name, decision))

    def _ask(self, msg: wire.Message, params: dict[str, Any], name: str, arguments: Any,
             checked: tuple[str | None] | None, decision: Decision,
             then: Callable[[bytes | None], ClientAction] | None = None) -> ClientAction:
        """A call the policy (or the pin) says a human must approve: asked through the session's channel
        (approver.py). Approved, it is decided again (limits charged then), or goes on to `then`;
        refused, the answer says why."""
        policy = self.policy
        rule = select_rule(policy, name)
        settings = rule.approval if rule is not None and decision.kind != "pin" else Approval()

        def approved(replacement: bytes | None) -> ClientAction:
            if then is not None:
                return then(replacement)
            if self._latest() is not policy:
                # A reload while the human was asked: decided (arguments checked) under the new policy.
                return self._after_pin(msg, params, name, arguments, (replacement,))
            return self._decide_call(msg, params, name, arguments, checked, self.clock(), (replacement,))

        def refused(outcome: Outcome) -> ClientAction:
            said = refusal(outcome, settings.timeout, self.approver.command is not None)
            final = Decision("require_approval", decision.rule, f"{decision.reason}: {said}",
                             kind=decision.kind if outcome.status == "unavailable" else "approval")
            self.counts[final.action] = self.counts.get(final.action, 0) + 1
            if self.audit.enabled:
                self.audit.record("call", request_id=msg.id, tool=name, **final.as_record(),
                                  argument_keys=sorted(arguments) if arguments else [])
            _log_call(logging.WARNING, name, final.action, final.rule, outcome.waited, f"refused: {said}")
            return Reply(self._refusal(msg, name, final))

        # A handshake session asks as its initialize said (elicitation or the command): a call claiming the
        # 2026-07-28 envelope there must not switch to the form whose answer the client itself carries.
        stateless = not self.approver.handshake and self._stateless(msg)
        return self.approver.consider(msg, params, name, arguments, decision, settings, stateless,
                                      approved, refused)

    def _pin_refusal(self, msg: wire.Message, name: str, params: dict[str, Any], action: PinAction,
                     reason: str) -> ClientAction:
        """A call the pin stops before the policy is asked: a tool new or changed since it was pinned,
        or not yet seen matching it."""
        decision = Decision(action, None, reason, kind="pin")
        self.counts[action] = self.counts.get(action, 0) + 1
        if self._monitored(decision, name):
            return self._monitor_forward(msg, name, params.get("arguments"), decision, self.clock())
        self.audit.record("call", request_id=msg.id, tool=name, **decision.as_record(), kind="pin",
                          **self.audit.arguments(params.get("arguments")))
        _log_call(logging.WARNING, name, action, None, 0.0, f"refused: {reason}")
        if action == "hide":
            return self._hidden_call(msg, name, params)
        return Reply(self._refusal(msg, name, decision))

    def _pinned(self, tool: dict[str, Any]) -> bool:
        """Whether a listed tool may be shown as far as the pin goes; a mismatch is warned about once."""
        if self.pins is None:
            return True
        status = self.pins.observe(tool)
        if status is None:
            return True
        name = tool["name"]
        if self.pins.first_warning(name, status):
            what = "is new" if status == "added" else "changed its definition"
            then = "hidden" if self.pins.mode == "hide" else "listed; its calls need approval"
            log.warning("tool %s %s since it was pinned in %s: %s", name if name.isprintable() else repr(name),
                        what, self.pins.lock.path, then)
            self.audit.record("pin_mismatch", tool=name, status=status, action=self.pins.mode)
        return self.pins.mode != "hide"

    def _refund_mode(self, name: str) -> str:
        rule = select_rule(self.policy, name)
        return rule.refund if rule is not None else "protocol_error"

    def _shared_call(self, msg: wire.Message, name: str, arguments: Any, decision: Decision, now: float,
                     replacement: bytes | None = None, approved: bool = False) -> Defer:
        """A call under a user- or global-scoped limit: the store's round trip is I/O, so it is made by the
        limits' worker thread, in the order the calls came, while the relay moves other messages (Defer);
        what it changes here is changed when it is settled, with the relay's lock held like every other
        interceptor call. Session limits of the same rule are taken now, and given back if the store
        refuses."""
        shared = self.shared
        assert shared is not None and msg.id_key is not None
        self.state.record(decision.charges)
        id_key = msg.id_key
        pending = shared.submit(decision.charges)

        async def admit(channel: Any) -> Any:
            import anyio.to_thread

            return await anyio.to_thread.run_sync(pending.result)

        def settle(admission: Any) -> ClientAction:
            final = admission.refusal or decision
            if admission.refusal is not None and self._monitored(admission.refusal, name):
                self.counts[decision.action] -= 1
                self.counts[final.action] = self.counts.get(final.action, 0) + 1
                self.state.refund(decision.charges)
                return self._monitor_forward(msg, name, arguments, final, now)
            pending = None
            if self.audit.enabled:
                extra: dict[str, Any] = {"store_error": admission.store_error} if admission.store_error else {}
                fields = {"request_id": msg.id, "tool": name, **final.as_record(), "kind": final.kind,
                          **self.audit.arguments(arguments), **extra}
                if admission.refusal is None:
                    pending = self.audit.pending("call", **fields)
                else:
                    self.audit.record("call", **fields)
            if admission.refusal is not None:
                self.counts[decision.action] -= 1
                self.counts[final.action] = self.counts.get(final.action, 0) + 1
                self.state.refund(decision.charges)
                _log_call(logging.WARNING, name, final.action, final.rule, self.clock() - now,
                          f"refused: {final.reason}")
                return Reply(self._refusal(msg, name, final))
            watch = CallWatch(name, decision.charges, id_key, request_line=msg.raw, rule=decision.rule,
                              since=now if self.log_calls else None, refund=self._refund_mode(name),
                              shared_tokens=admission.tokens, audit=pending, approved=approved)
            self._charged_calls[id_key] = watch
            return Forward(watch=watch, replacement=replacement)

        return Defer(admit, settle)

    # --- monitor (shadow) mode -------------------------------------------------------------------------

    def _monitored(self, decision: Decision, name: str) -> bool:
        """Whether a refusal is only to be recorded: --monitor, the policy's "mode": "monitor", or the
        deciding rule's "monitor": true (a pin's refusal has no rule: only the first two apply). The
        deciding rule is the one selected for `name`, not any rule of that key: a `hide` entry may share
        its key with a monitored entry under `rules`."""
        if self._monitoring_all():
            return True
        if decision.rule is None or decision.kind == "pin":
            return False
        rule = select_rule(self.policy, name)
        return rule is not None and rule.key == decision.rule and rule.monitor

    def _monitoring_all(self) -> bool:
        return self.monitor or self.policy.mode == "monitor"

    def _rule_monitored(self, name: str) -> bool:
        rule = select_rule(self.policy, name)
        return rule is not None and rule.monitor

    def _monitor_forward(self, msg: wire.Message, name: str, arguments: Any, decision: Decision,
                         now: float) -> Forward:
        """A refusal in monitor mode: recorded as it would have been (monitor_would_deny, ...), warned
        about, and the call forwarded as it came (a hidden tool's too: it was listed). Nothing is charged,
        as a refused call takes nothing from a limit: the limits count what enforcing would let through."""
        would = MONITOR_NAMES.get(decision_name(decision.action, decision.kind, decision.reason), "monitor_would_deny")
        _log_call(logging.WARNING, name, would, decision.rule, self.clock() - now,
                  f"forwarded (monitor mode); enforcing would answer: {decision.reason}")
        pending = None
        if self.audit.enabled:
            pending = self.audit.pending("call", request_id=msg.id, tool=name, **decision.as_record(),
                                         kind=decision.kind, decision=would, monitor=True,
                                         **self.audit.arguments(arguments))
        return Forward(watch=TimedCall(name, decision.rule, now if self.log_calls else None, pending))

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

    def _hidden_call(self, msg: wire.Message, name: str, params: dict[str, Any]) -> Forward:
        """Answer a hidden tool exactly as this upstream answers a name it does not have, by asking it:
        the call goes on, under its own id, as a call to a name that cannot exist, with no arguments,
        and the answer comes back with that name turned into the hidden one. The hidden name and what
        was meant for it never reach the upstream."""
        probe: dict[str, Any] = {"name": self._probe_name}
        if "arguments" in params:
            probe["arguments"] = {}
        probe.update((key, params[key]) for key in PROBE_PARAMS if key in params)
        return Forward(watch=ProbeWatch(name, self._probe_name, msg.id),
                       replacement=wire.request(msg.id, "tools/call", probe))

    # --- upstream answers ------------------------------------------------------------------------

    def upstream_answer(self, msg: wire.Message, watch: Any) -> Forward | Reply:
        if self._next is not None:
            self._take_next()
        if isinstance(watch, ListenWatch):
            self._stream_closed(watch)
            return Forward()
        if isinstance(watch, ListWatch):
            return self._filter_listing(msg, watch)
        if isinstance(watch, ProbeWatch):
            return self._answer_as_unknown(msg, watch)
        if isinstance(watch, InitWatch):
            self.approver.note_server_answer(msg.body)
            return self._server_answer(msg)
        if isinstance(watch, (CallWatch, TimedCall)) and watch.since is not None:
            _log_call(logging.INFO, watch.tool, "allow", watch.rule, self.clock() - watch.since, _outcome(msg))
        if isinstance(watch, (CallWatch, TimedCall)) and watch.audit is not None:
            self.audit.finish(watch.audit, msg.body)
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
            failed = code in REFUND_CODES or (watch.refund == "error" and (
                error is not None or (isinstance(result, dict) and result.get("isError") is True)))
            if failed and not watch.cancelled and not watch.started and (watch.charges or watch.shared_tokens):
                self.state.refund(watch.charges)
                if watch.shared_tokens and self.shared is not None:
                    self.shared.refund_later(watch.shared_tokens)
                self.audit.record("refund", tool=watch.tool, request_id=msg.id)
            elif isinstance(result, dict) and result.get("resultType") == "input_required":
                state = result.get("requestState")
                charged_arguments = (wire.call_arguments_fingerprint(watch.request_line)
                                     if isinstance(state, str) else None)
                if isinstance(state, str) and charged_arguments is not None:
                    if len(self._continuations) >= MAX_CONTINUATIONS:
                        self._continuations.pop(next(iter(self._continuations)))
                    self._continuations[(watch.tool, state)] = charged_arguments
                if isinstance(state, str) and watch.approved:
                    self.approver.note_upstream_state(watch.tool, state, watch.request_line)
        return Forward()

    def upstream_request(self, msg: wire.Message) -> None:
        # Sampling, elicitation, roots: the server is working on whatever is in flight.
        for watch in tuple(self._charged_calls.values()):  # a deferred decision may add one meanwhile
            watch.started = True

    def upstream_answer_lost(self, watch: Any) -> None:
        if isinstance(watch, ListenWatch):
            self._stream_closed(watch)
        if isinstance(watch, (CallWatch, TimedCall)) and watch.since is not None:
            _log_call(logging.INFO, watch.tool, "allow", watch.rule, self.clock() - watch.since, "no answer")
        if isinstance(watch, (CallWatch, TimedCall)) and watch.audit is not None:
            self.audit.finish(watch.audit, None)
        # The call may or may not have run: its quota stays taken.
        if isinstance(watch, CallWatch):
            self._charged_calls.pop(watch.id_key, None)

    def _server_answer(self, msg: wire.Message) -> Forward:
        """The answer to initialize or server/discover: its serverInfo names the server in audit records.
        With live reload, it advertises tools.listChanged: mcp-guard itself tells the client when a new
        policy changes what it may see (a client acts on list_changed only from a server that says so)."""
        result = msg.body.get("result")
        if self.era == "handshake" and isinstance(result, dict):
            self.initialized = True
        info = result.get("serverInfo") if isinstance(result, dict) else None
        if info is None and isinstance(result, dict) and isinstance(result.get("_meta"), dict):
            info = result["_meta"].get(SERVER_INFO_META)  # 2026-07-28: server/discover's stamp
        name = info.get("name") if isinstance(info, dict) else None
        if isinstance(name, str):
            self.audit.server = name
        capabilities = result.get("capabilities") if isinstance(result, dict) else None
        tools = capabilities.get("tools") if isinstance(capabilities, dict) else None
        if self.reloader is not None and isinstance(tools, dict) and tools.get("listChanged") is not True:
            tools["listChanged"] = True
            return Forward(replacement=wire.encode(msg.body))
        return Forward()

    # --- live reload (reload.py) -----------------------------------------------------------------------

    async def serve(self, channel: ClientChannel) -> None:
        """Run by the relay for the whole session: the policy file's watcher and the SIGHUP receiver."""
        if self.reloader is not None:
            try:
                await self.reloader.run(channel)
            except Exception:  # never the session's end: the policy in force stays in force
                log.exception("the policy reloader stopped; the policy in force stays, without reloads")

    def replace_policy(self, prepared: Prepared) -> None:
        """Called from the reloader's task: one reference, taken up by the next message (never mid-way)."""
        self._next = prepared

    def latest_policy(self) -> Policy:
        waiting = self._next
        return waiting.policy if waiting is not None else self.policy

    def latest_pins(self) -> Any:
        waiting = self._next
        return waiting.pins if waiting is not None else self.pins

    def shown_names(self, policy: Policy) -> frozenset[str]:
        """Which of the tools listed so far `policy` lets the agent see (monitor mode included)."""
        if self.monitor or policy.mode == "monitor":
            return self.listed
        return frozenset(name for name in self.listed if visible(policy, name)
                         or getattr(select_rule(policy, name), "monitor", False))

    def tool_listeners(self) -> list[Any]:
        """The ids of the open listen streams that asked for tool list changes."""
        return list(self._tool_listeners.values())

    def _stream_closed(self, watch: ListenWatch) -> None:
        if watch.id_key in self._tool_listeners:
            self._tool_listeners = {k: v for k, v in self._tool_listeners.items() if k != watch.id_key}

    def _take_next(self) -> None:
        """Swap in the reloaded policy, between two messages. The usage of a limit whose rule is gone or
        whose limit changed is forgotten; the counters of unchanged rules go on."""
        from .reload import keep_counters

        prepared, self._next = self._next, None
        if prepared is None:
            return
        keep_counters(self.state, self.policy, prepared.policy)
        self.policy = prepared.policy
        self._argument_checks = prepared.argument_checks
        self.pins = prepared.pins
        # The policy's "approval_command" is the policy's like the rest: a reload that changes or removes it
        # must not leave the old one deciding.
        self.approver.command = self._approval_command or prepared.policy.approval_command or None

    def _answer_as_unknown(self, msg: wire.Message, watch: ProbeWatch) -> Forward | Reply:
        """The upstream's answer to a probe, with the probe's name turned into the hidden one in the raw
        bytes (so everything else stays exactly as the upstream wrote it). When the probe's name is still
        to be seen afterwards (written in another form: escaped, cut short, in other case), the answer
        could not be made the upstream's own, and the client gets a plain "Unknown tool" error instead."""
        probe = watch.probe_name.encode()
        rewritten = msg.raw.replace(probe, wire.string_content(watch.hidden_name))
        parsed = wire.parse(rewritten, strict=False)
        if (isinstance(parsed, wire.Message) and parsed.id_key == msg.id_key
                and probe[:PROBE_PREFIX_CHARS] not in wire.encode(parsed.body).lower()):
            return Forward(replacement=None if rewritten == msg.raw else rewritten)
        log.warning("could not turn the upstream's answer about an unknown tool into one about %s",
                    watch.hidden_name)
        return Reply(wire.error_response(watch.request_id, wire.INVALID_PARAMS,
                                         f"Unknown tool: {watch.hidden_name}"))

    def _filter_listing(self, msg: wire.Message, watch: ListWatch) -> Forward | Reply:
        body = msg.body
        rewrite = False
        if not isinstance(wire.parse(msg.raw, strict=True), wire.Message):
            # Duplicate or case-variant keys: a client could read other tools than mcp-guard does, so
            # these bytes never pass. Written out again as read here when that removes the ambiguity.
            read = read_ambiguous_listing(msg.raw)
            if isinstance(read, str):
                log.warning("withheld an ambiguous tools/list answer: %s", read)
                return Reply(wire.error_response(watch.request_id, wire.INTERNAL_ERROR,
                                                 "mcp-guard could not read the upstream server's tool list"))
            log.warning("rewrote an ambiguous tools/list answer as mcp-guard read it (duplicate keys kept last)")
            body, rewrite = read, True
        if "error" in body:
            return Forward(replacement=wire.encode(body)) if rewrite else Forward()
        result = body.get("result")
        tools = result.get("tools") if isinstance(result, dict) else None
        if not isinstance(tools, list) or not all(
                isinstance(tool, dict) and isinstance(tool.get("name"), str) for tool in tools):
            log.warning("withheld a tools/list answer that mcp-guard could not read")
            return Reply(wire.error_response(watch.request_id, wire.INTERNAL_ERROR,
                                             "mcp-guard could not read the upstream server's tool list"))
        kept: list[Any] = []
        hidden: list[str] = []
        would_hide: list[str] = []  # monitor mode: listed all the same
        for tool in tools:
            policy_shows = visible(self.policy, tool["name"])
            if policy_shows and self._pinned(tool):
                kept.append(tool)
            elif self._monitoring_all() or (not policy_shows and self._rule_monitored(tool["name"])):
                kept.append(tool)
                would_hide.append(tool["name"])
            else:
                hidden.append(tool["name"])
            if tool["name"] == self._probe_name:  # never, in practice: a probe must name no real tool
                self._probe_name = _new_probe_name()
        if would_hide:
            log.warning("tools/list: %d tool(s) listed that enforcing would hide (monitor mode): %s",
                        len(would_hide), ", ".join(name if name.isprintable() else repr(name) for name in would_hide))
        if hidden or would_hide or rewrite:
            extra = {"would_hide": would_hide, "monitor": True} if would_hide else {}
            self.audit.record("list", request_id=msg.id, hidden=hidden, shown=len(kept), **extra)
        if self.reloader is not None:
            if len(self.listed) < 65536:
                self.listed = self.listed | {tool["name"] for tool in tools}  # read by the reloader's task
            ttl = result.get("ttlMs") if isinstance(result, dict) else None
            if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl > MAX_TTL_MS:
                assert isinstance(result, dict)
                result["ttlMs"] = MAX_TTL_MS
                rewrite = True
        if not hidden and not rewrite:
            return Forward()
        assert isinstance(result, dict)
        result["tools"] = kept
        return Forward(replacement=wire.encode(body))
