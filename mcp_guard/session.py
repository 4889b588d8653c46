"""The relay's session core, sans-I/O: lines in, effects out. No threads, no event loop, no descriptors.

It owns the pending-request table (pending.py), mcp-guard's own request ids, and every call to the
interceptor. Each entry point takes what happened (lines read from the client or the upstream, a deferred
decision settled, a signal, the child's exit, the drain's timeout) and returns an `Effects`: the lines to
write to each side, the deferred decisions to start or stop, the answers to mcp-guard's own requests, and
whether (and why) the session is over. Whoever calls it (a pump) does the I/O; the core is called from one
thread at a time and never holds a lock, so an interceptor call never waits on another thread's I/O.

Every client line is parsed (the interceptor must see every client message) and, unless the interceptor
changes it, forwarded as the exact bytes received. Upstream lines are parsed to match answers to requests;
they too pass byte for byte unless the interceptor asked to see the answer.
"""

from __future__ import annotations

import logging
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from . import wire
from .actions import ClientAction, Defer, Forward, Interceptor, Reply
from .exits import Ending, ExitReason, signal_name
from .framing import Oversized
from .pending import Pending, PendingTable

log = logging.getLogger("mcp_guard")

# Above this size an upstream answer that nothing needs to inspect is matched by the id at its head and
# passed on without being decoded (docs/relay.md, "Framing and losslessness").
LARGE_ANSWER_BYTES = 1024 * 1024
# Bytes of an unparseable upstream line searched for the id of the request it may have answered.
MALFORMED_HEAD_BYTES = 512

_NOT_SENT = "mcp-guard could not decide on this request; it was not sent"


@dataclass(slots=True, eq=False)
class Deferred:
    """A decision to make off the pump (Defer). The core fills the first three fields; `scope` and
    `cancel_requested` belong to whoever runs the decision (the event loop's thread)."""

    msg: wire.Message
    defer: Defer
    entry: Pending
    scope: Any = None
    cancel_requested: bool = False


@dataclass(slots=True)
class Effects:
    to_client: list[bytes] = field(default_factory=list)
    to_upstream: list[bytes] = field(default_factory=list)
    start: list[Deferred] = field(default_factory=list)  # decisions to run
    cancel: list[Deferred] = field(default_factory=list)  # decisions no longer wanted
    own_answers: list[tuple[Any, wire.Message]] = field(default_factory=list)  # (token, the client's answer)
    draining: bool = False  # the client closed its input: start the drain's clock
    kill_upstream: bool = False  # a signal during the shutdown: the child goes now
    finish: Ending | None = None  # the session is over (set once per session)

    @property
    def for_loop(self) -> bool:
        """Whether anything here is the event loop's business rather than the pump's."""
        return bool(self.start or self.cancel or self.own_answers or self.draining or self.kill_upstream
                    or self.finish)


class Session:
    def __init__(self, interceptor: Interceptor, max_message_bytes: int, own_prefix: str | None = None) -> None:
        self.interceptor = interceptor
        self.max_message_bytes = max_message_bytes
        self.pending = PendingTable()
        # mcp-guard's own request ids carry a per-process random nonce: the upstream can neither use nor
        # guess them, so the client's answers to them are never confused with the upstream's traffic.
        self.own_prefix = own_prefix or f"mcp-guard-{secrets.token_hex(8)}-"
        self._own_counter = 0
        self._own: dict[str, Any] = {}  # id -> the token of whoever waits for the answer
        self._own_ids: dict[Any, str] = {}
        # Set when a signal starts the shutdown: what the client sends from then on is answered with
        # this, never forwarded (the child is being stopped, so its answer could be cut off by the exit).
        self._stopping: str | None = None
        self._upstream_gone = False
        self._draining = False
        self.ending: Ending | None = None
        self._fx = Effects()

    # --- entry points ----------------------------------------------------------------------------

    def client_lines(self, lines: list[bytes | Oversized]) -> Effects:
        for line in lines:
            self._client_line(line)
        return self._take()

    def upstream_lines(self, lines: list[bytes | Oversized]) -> Effects:
        for line in lines:
            self._upstream_line(line)
        return self._take()

    def client_closed(self) -> Effects:
        """EOF on the client's input: the drain starts. The child's stdin is closed only once every
        forwarded request is answered (many servers cancel in-flight work on EOF), within the drain's
        timeout; long-lived streams are not waited for."""
        log.info("client closed its input; %d request(s) still in flight", len(self.pending))
        self._draining = True
        self._fx.draining = True
        return self._take()

    def drain_timed_out(self, seconds: float) -> Effects:
        """The drain's bound passed. Also when the client closed its input while it was not being read
        (the child does not read what was already forwarded): what it sent after is never answered."""
        if self.ending is None:
            unanswered = self.pending.owed
            if unanswered:
                self._fail_pending(f"mcp-guard stopped waiting for the upstream server's answer {seconds:g} s "
                                   "after the client closed its input")
            self._finish(Ending(ExitReason.DRAIN_TIMED_OUT, unanswered=unanswered))
        return self._take()

    def client_output_closed(self) -> Effects:
        if self.ending is None:
            log.info("the client closed its output; ending the session")
            self._finish(Ending(ExitReason.CLIENT_OUTPUT_CLOSED))
        elif self.ending.reason is ExitReason.DRAIN_TIMED_OUT:
            # The client that was owed those answers is gone (it closed both ends): nobody was failed.
            self.ending = Ending(ExitReason.CLIENT_OUTPUT_CLOSED)
        return self._take()

    def upstream_ended(self, child_status: int | None) -> Effects:
        """The upstream is gone: its output ended (`child_status` None when it still runs) or it exited
        and something it started holds its output. What it owes gets -32001."""
        if self.ending is not None or self._upstream_gone:
            return self._take()
        self._upstream_gone = True
        if child_status is None:
            what, ending = "the upstream server closed its output", Ending(ExitReason.UPSTREAM_CLOSED_OUTPUT)
        else:
            what = f"the upstream server exited with status {child_status}"
            ending = Ending(ExitReason.UPSTREAM_EXITED, child_status=child_status)
        unanswered = self.pending.owed  # a stream is not work left undone
        if unanswered:
            log.warning("%s with %d request(s) unanswered", what, unanswered)
            self._fail_pending(f"{what} before answering")
            ending = Ending(ending.reason, ending.child_status, unanswered=unanswered)
        else:
            log.warning("%s", what)
        self._finish(ending)
        return self._take()

    def signalled(self, signum: int) -> Effects:
        name = signal_name(signum)
        if self.ending is not None:
            # Already ending (perhaps waiting out the server's grace): a signal now means now.
            if self.ending.reason is ExitReason.SIGNAL:
                log.warning("received %s again: killing the upstream server", name)
            else:
                log.warning("received %s while shutting down (%s): killing the upstream server", name,
                            self.ending.how)
            self._fx.kill_upstream = True
            return self._take()
        log.warning("received %s: stopping the upstream server", name)
        self._stopping = f"mcp-guard received {name} and stopped before the upstream server answered"
        unanswered = self.pending.owed
        self._fail_pending(self._stopping)
        self._finish(Ending(ExitReason.SIGNAL, signum=signum, unanswered=unanswered))
        return self._take()

    def fail(self) -> Effects:
        """Something nothing expected went wrong (a bug): the session ends."""
        if self.ending is None:
            self._finish(Ending(ExitReason.INTERNAL_ERROR))
        return self._take()

    def decision_settled(self, deferred: Deferred, result: Any, failed: bool) -> Effects:
        """A deferred decision returned (`failed`: it raised). `settle` runs here, and only while the
        request is still wanted; it may return another Defer."""
        msg = deferred.msg
        key = msg.id_key
        assert key is not None
        if not self.pending.is_reserved(key, deferred.entry):
            return self._take()  # answered meanwhile (the child died, the drain gave up) or cancelled
        self.pending.release(key)
        action: ClientAction
        if failed:
            action = Reply(wire.error_response(msg.id, wire.INTERNAL_ERROR, _NOT_SENT))
        elif deferred.defer.settle is not None:
            try:
                action = deferred.defer.settle(result)
            except Exception:
                log.exception("mcp-guard could not decide on %s; refusing it", msg.method)
                action = Reply(wire.error_response(msg.id, wire.INTERNAL_ERROR, _NOT_SENT))
        else:
            action = result
        self._act(msg, action)
        return self._take()

    def own_request(self, token: Any, method: str, params: dict[str, Any] | None) -> Effects:
        """Send a request of mcp-guard's own to the client; its answer comes back as (token, answer)."""
        self._own_counter += 1
        request_id = f"{self.own_prefix}{self._own_counter}"
        self._own[request_id] = token
        self._own_ids[token] = request_id
        self._fx.to_client.append(wire.request(request_id, method, params))
        return self._take()

    def own_request_done(self, token: Any, tell_client: bool) -> Effects:
        """Whoever asked stopped waiting. With `tell_client` (they gave up, rather than timing out or being
        answered) the client is told to stop asking its human (notifications/cancelled)."""
        request_id = self._own_ids.pop(token, None)
        if request_id is not None:
            self._own.pop(request_id, None)
            if tell_client:
                self._notify("notifications/cancelled", {"requestId": request_id, "reason": "no longer needed"})
        return self._take()

    def notify(self, method: str, params: dict[str, Any] | None) -> Effects:
        """Send a notification of mcp-guard's own to the client."""
        self._notify(method, params)
        return self._take()

    def _notify(self, method: str, params: dict[str, Any] | None) -> None:
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        self._fx.to_client.append(wire.encode(message))

    # --- bookkeeping -----------------------------------------------------------------------------

    def _take(self) -> Effects:
        fx = self._fx
        if self._draining and self.ending is None and not self.pending.owed:
            self._finish(Ending(ExitReason.CLIENT_CLOSED))
        if fx.to_client or fx.to_upstream or fx.for_loop:
            self._fx = Effects()
            return fx
        return _NOTHING

    def _finish(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending
            self._fx.finish = ending

    def _fail_pending(self, message: str) -> None:
        """Answer every owed request with -32001; long-lived streams are left to end with the session."""
        for entry in self.pending.drain_all():
            self._lose(entry)
            if entry.decision is not None:
                self._fx.cancel.append(entry.decision)
            self._fx.to_client.append(wire.error_response(entry.id, wire.UPSTREAM_EXITED, message))

    def _lose(self, entry: Pending) -> None:
        """Tell the interceptor that the answer it asked to see will never come. (The stale watches were
        told when their own request was cancelled.)"""
        if entry.watch is not None:
            self._call_lost(entry.watch)

    def _call_lost(self, watch: Any) -> None:
        try:
            self.interceptor.upstream_answer_lost(watch)
        except Exception:
            log.exception("mcp-guard could not note a lost answer")

    # --- client -> upstream ----------------------------------------------------------------------

    def _client_line(self, line: bytes | Oversized) -> None:
        if isinstance(line, Oversized):
            log.warning("refused a client message of %d bytes (limit %d)", line.size, self.max_message_bytes)
            self._fx.to_client.append(wire.error_response(
                wire.head_id(line.head), wire.MESSAGE_TOO_LARGE,
                f"message of {line.size} bytes exceeds mcp-guard's limit of "
                f"{self.max_message_bytes} bytes (--max-message-bytes)"))
            return
        if not line or line.isspace():  # isspace stops at the first other byte; strip() would copy
            return
        if b"\r" in line:
            # A raw CR can only be whitespace between tokens (strings cannot hold one), but an SDK reading
            # with universal newlines would split the message there: drop it, meaning unchanged.
            line = line.replace(b"\r", b"")
            if not line or line.isspace():
                return
        parsed = wire.parse(line, strict=True)
        if isinstance(parsed, wire.Message):
            if parsed.kind == "request":
                self._client_request(parsed)
            elif parsed.kind == "notification":
                self._client_notification(parsed)
            else:
                self._client_response(parsed)
        elif isinstance(parsed, wire.Malformed):
            log.warning("malformed message from the client: %s", parsed.reason)
            self._fx.to_client.append(wire.error_response(parsed.id if parsed.has_id else None, parsed.code,
                                                          parsed.reason))
        else:
            self._refuse_batch(parsed)

    def _refuse_batch(self, batch: wire.Batch) -> None:
        # Batches were removed from MCP in 2025-06-18, and a batch is an easy place to hide a call: it is
        # never forwarded. Each request in it gets its own error, so none is left without an answer.
        reason = "JSON-RPC batches are not supported by mcp-guard; send each message on its own line"
        log.warning("refused a JSON-RPC batch of %d item(s)", len(batch.items))
        answers = [
            wire.encode({"jsonrpc": "2.0", "id": item["id"],
                         "error": {"code": wire.INVALID_REQUEST, "message": reason}})
            for item in batch.items
            if isinstance(item, dict) and "method" in item and wire.id_key(item.get("id")) is not None
        ]
        if answers:
            self._fx.to_client.append(b"[" + b",".join(answers) + b"]")
        else:
            self._fx.to_client.append(wire.error_response(None, wire.INVALID_REQUEST, reason))

    def _client_request(self, msg: wire.Message) -> None:
        assert msg.id_key is not None and msg.method is not None
        if msg.id_key in self.pending or msg.id_key.startswith(self.own_prefix):
            self._fx.to_client.append(wire.error_response(
                msg.id, wire.INVALID_REQUEST, f"request id {msg.id!r} is already used by a request in flight"))
            return
        try:
            action = self.interceptor.client_request(msg)
        except Exception:
            # Fail closed: when the guard cannot decide, the request does not reach the upstream.
            log.exception("mcp-guard could not decide on %s; refusing it", msg.method)
            self._fx.to_client.append(wire.error_response(msg.id, wire.INTERNAL_ERROR, _NOT_SENT))
            return
        self._act(msg, action)

    def _act(self, msg: wire.Message, action: ClientAction) -> None:
        key = msg.id_key
        assert key is not None and msg.method is not None
        if isinstance(action, Defer):
            # The id stays reserved (a second request with it is refused) while the decision is made.
            entry = self.pending.reserve(key, msg.id, msg.method)
            entry.decision = Deferred(msg, action, entry)
            self._fx.start.append(entry.decision)
        elif isinstance(action, Forward):
            if self._upstream_gone or self._stopping is not None:
                self._fx.to_client.append(wire.error_response(
                    msg.id, wire.UPSTREAM_EXITED, self._stopping or "the upstream server has exited"))
                if action.watch is not None:
                    self._call_lost(action.watch)
                return
            self.pending.forward(key, msg.id, msg.method, action.watch)
            self._fx.to_upstream.append(action.replacement if action.replacement is not None else msg.raw)
        elif isinstance(action, Reply):
            self._fx.to_client.append(action.answer)
        else:
            log.warning("dropped request %s: %s", msg.method, getattr(action, "reason", ""))
            self._fx.to_client.append(wire.error_response(msg.id, wire.INVALID_REQUEST, "request refused"))

    def _client_notification(self, msg: wire.Message) -> None:
        try:
            action = self.interceptor.client_notification(msg)
        except Exception:
            log.exception("mcp-guard could not decide on notification %s; dropping it", msg.method)
            action = None
        if msg.method == "notifications/cancelled":
            # After the interceptor saw it (the guard notes a cancelled call there, which keeps its quota).
            if self._client_cancelled(msg):
                return  # it names a request of mcp-guard's own: its id is never the upstream's to learn
        if isinstance(action, Forward):
            self._fx.to_upstream.append(action.replacement if action.replacement is not None else msg.raw)
        elif action is not None:
            log.warning("dropped a %s notification from the client: %s", msg.method, action.reason)

    def _client_cancelled(self, msg: wire.Message) -> bool:
        """The client gave up on a request: it leaves the pending table (the drain does not wait for it,
        and no error is sent for it), its id can be used again, and a late answer to it is dropped.
        True when the id is one of mcp-guard's own (nothing to do, and nothing to forward)."""
        params = msg.params
        key = wire.id_key(params.get("requestId")) if isinstance(params, dict) else None
        if key is None:
            return False
        if key.startswith(self.own_prefix):
            return True
        entry = self.pending.cancelled(key)
        if entry is None:
            return False  # answered already, never sent, or someone else's id: nothing to do
        if entry.decision is not None:
            self._fx.cancel.append(entry.decision)  # never forwarded, nor answered
        else:
            self._lose(entry)
        return False

    def _client_response(self, msg: wire.Message) -> None:
        token = self._own.get(msg.id_key) if msg.id_key is not None else None
        if token is not None:
            self._fx.own_answers.append((token, msg))
            return
        if msg.id_key is not None and msg.id_key.startswith(self.own_prefix):
            log.info("dropped a late answer to mcp-guard's own request %s", msg.id_key)
            return  # ours, after we stopped waiting: never the upstream's business
        self._fx.to_upstream.append(msg.raw)

    # --- upstream -> client ----------------------------------------------------------------------

    def _upstream_line(self, line: bytes | Oversized) -> None:
        if isinstance(line, Oversized):
            log.warning("dropped a message of %d bytes from the upstream (limit %d)", line.size,
                        self.max_message_bytes)
            self._answer_lost(wire.head_id(line.head), wire.MESSAGE_TOO_LARGE,
                              f"the upstream server's answer of {line.size} bytes exceeds mcp-guard's "
                              f"limit of {self.max_message_bytes} bytes (--max-message-bytes)")
            return
        if len(line) > LARGE_ANSWER_BYTES and not self.pending.inspecting and self._large_answer(line):
            return
        if not line or line.isspace():  # isspace stops at the first other byte; strip() would copy
            return
        parsed = wire.parse(line, strict=False)
        if not isinstance(parsed, wire.Message):
            reason = parsed.reason if isinstance(parsed, wire.Malformed) else "a batch"
            log.warning("dropped a malformed message from the upstream server (%s): %.200r", reason, line)
            if isinstance(parsed, wire.Batch):  # MCP has no batches: fail what they answer, visibly
                ids = [item.get("id") for item in parsed.items if isinstance(item, dict)]
            else:
                ids = [wire.head_id(line[:MALFORMED_HEAD_BYTES])]
            for request_id in ids:
                self._answer_lost(request_id, wire.INTERNAL_ERROR, "the upstream server sent a malformed answer")
            return
        if parsed.kind != "response":
            if parsed.kind == "request" and parsed.id_key is not None and parsed.id_key.startswith(self.own_prefix):
                # The client's answer to it would be taken as the answer to mcp-guard's own request.
                log.warning("refused a request from the upstream server under one of mcp-guard's own ids")
                self._fx.to_upstream.append(wire.error_response(
                    parsed.id, wire.INVALID_REQUEST, "this request id is reserved by mcp-guard"))
                return
            if parsed.kind == "request":
                try:
                    self.interceptor.upstream_request(parsed)
                except Exception:
                    log.exception("mcp-guard could not note the upstream's request %s", parsed.method)
            elif parsed.method == "notifications/cancelled":
                self._stream_ended(parsed)
            self._fx.to_client.append(line)
            return
        entry = self.pending.take_answer(parsed.id_key)
        if entry is None:
            # An answer to nothing we forwarded (a second answer, an id we never sent): passing it on
            # could hand the client an unfiltered listing under a reused id.
            self._drop_unmatched(parsed.id_key, parsed.id)
            return
        watches = entry.watches
        if not watches:
            self._fx.to_client.append(line)
            return
        answer = line
        for index, watch in enumerate(watches):
            try:
                action = self.interceptor.upstream_answer(parsed, watch)
            except Exception:
                log.exception("mcp-guard could not check the answer to %s; withholding it", entry.method)
                action = Reply(wire.error_response(entry.id, wire.INTERNAL_ERROR,
                                                   "mcp-guard could not check the upstream server's answer"))
            if isinstance(action, Reply) or action.replacement is not None:
                # The first watch that changes the answer decides what the client gets; the others
                # (only ever after a cancelled request's id was reused) will not see it.
                answer = action.answer if isinstance(action, Reply) else action.replacement  # type: ignore[assignment]
                for other in watches[index + 1:]:
                    self._call_lost(other)
                break
        self._fx.to_client.append(answer)

    def _large_answer(self, line: bytes) -> bool:
        """Decoding a multi-megabyte answer costs more time and memory than the rest of the relay; when no
        pending request needs inspecting, the id at its head is all that is needed. The frame is checked,
        not the body (docs/relay.md): the head, the closing brace, and no second `"id"` anywhere in the
        line, however spelt ("i\\u0064", "ID"): one could be a second top-level id, which a reader keeping
        the last would match to another request. Such a line is parsed in full like a small one. False:
        take the slow path."""
        head = wire.response_id(line)
        first = _ID_KEY.search(line) if head is not None else None
        if head is None or first is None or _ID_KEY.search(line, first.end()) is not None:
            return False
        key = wire.id_key(head[0])
        entry = self.pending.take_answer(key)
        if entry is None:
            self._drop_unmatched(key, head[0])
        else:
            self._fx.to_client.append(line)
        return True

    def _drop_unmatched(self, key: str | None, request_id: Any) -> None:
        if self.pending.late_answer(key):
            log.info("dropped the upstream's late answer to cancelled request %.100r", request_id)
        else:
            log.warning("dropped an upstream answer with unknown id %.100r", request_id)

    def _stream_ended(self, msg: wire.Message) -> None:
        """The server ended a long-lived stream (it sends notifications/cancelled naming the listen
        request): nothing is owed for it any more. Requests of other kinds are not touched: a server's
        notifications/cancelled names, in the handshake era, requests of its own."""
        params = msg.params
        entry = self.pending.stream(wire.id_key(params.get("requestId")) if isinstance(params, dict) else None)
        if entry is not None:
            self._lose(entry)

    def _answer_lost(self, request_id: Any, code: int, message: str) -> None:
        """An upstream line we could not pass on may have been the answer to a pending request: if its
        head names one, the client gets an error for it instead of waiting for ever."""
        entry = self.pending.lost(wire.id_key(request_id))
        if entry is not None:
            self._lose(entry)
            self._fx.to_client.append(wire.error_response(entry.id, code, message))


# An "id" key as any reader may read it: escaped ("i\u0064") or in another case (Go's encoding/json).
_ID_KEY = re.compile(rb'"(?:i|I|\\u00[46]9)(?:d|D|\\u00[46]4)"')

_NOTHING = Effects()  # returned when an entry point produced nothing (never mutated by callers)
