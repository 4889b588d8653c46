"""The relay: two directions, the pending-request tables, shutdown. It knows nothing of policy.

Every client line is parsed (the interceptor must see every client message) and, unless the
interceptor changes it, forwarded as the exact bytes received. Upstream lines are parsed to match answers
to requests; they too pass through byte for byte unless the interceptor asked to see the answer.

mcp-guard can also speak for itself: answer a client request (a refusal), and send its own requests to
the client (ids that carry a per-process random nonce, so they never collide with the upstream's),
whose answers it consumes instead of forwarding.

Each direction is a blocking loop in an anyio worker thread (read a batch of lines, handle them under
one lock, write what they produced outside it), so a peer that does not read blocks only its own
direction. The event loop keeps what is not per-message: signals, timeouts, shutdown, deferred decisions.
Nothing is logged while the lock is held (records made then are emitted after it is released), and the
log handler itself never blocks (diagnostics.py): a stderr nobody reads cannot stop the relay.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from . import diagnostics, wire
from .actions import ClientAction, ClientChannel, Defer, Drop, Forward, Interceptor, PassThrough, Reply
from .streams import LineWriter, Oversized, ReadDone, StreamClosed, iter_lines
from .upstream import Upstream, exit_status

log = logging.getLogger("mcp_guard")

__all__ = ["ClientAction", "ClientChannel", "Defer", "Drop", "Forward", "Interceptor", "Options", "PassThrough",
           "Relay", "Reply"]


@dataclass(slots=True)
class Pending:
    """A client request forwarded upstream and not yet answered (or, `forwarded` False, one whose id is
    reserved while a deferred decision is made: the upstream has never seen it, so no answer can match)."""

    id: Any
    method: str
    watch: Any = None
    forwarded: bool = True
    # A long-lived stream (LONG_LIVED_METHODS): answered only when it ends, so nothing waits for it.
    stream: bool = False
    # The watches of a cancelled request that had this id before: the first answer under the id may be
    # that request's late answer, so it is shown to them too (a listing must be filtered whoever it is for).
    stale_watches: tuple[Any, ...] = ()
    # A deferred decision's cancel scope (set by its task): a cancel from the client stops the decision.
    scope: Any = None


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class Options:
    max_message_bytes: int = 64 * 1024 * 1024
    drain_timeout: float = 30.0
    shutdown_grace: float = 3.0
    # The signals that end the session. One left out (SIGHUP, when the policy reloads on it) is not
    # the relay's: whoever wants it opens its own receiver (Interceptor.serve).
    stop_signals: tuple[signal.Signals, ...] = SIGNALS


@dataclass
class _OwnRequest:
    done: anyio.Event = field(default_factory=anyio.Event)
    answer: wire.Message | None = None


# Above this size an upstream answer that nothing needs to inspect is passed on by its id alone.
LARGE_ANSWER_BYTES = 1024 * 1024

# Requests that by design are not answered until the session (or the stream) ends: 2026-07-28's
# subscriptions/listen, whose answer is a stream of notifications. The drain does not wait for them, and
# mcp-guard never answers them with an error: the end of the session is how a stdio client learns its
# streams ended (the spec: a subscription ends when its transport closes).
LONG_LIVED_METHODS = frozenset({"subscriptions/listen"})

# Ids of cancelled requests remembered, so that a late answer to one is recognised (and dropped quietly)
# and the first answer under a reused id is also checked as the cancelled request's would have been.
CANCELLED_MEMORY = 4096


class Relay:
    def __init__(
        self,
        client_in: int,
        client_out: int,
        upstream: Upstream,
        interceptor: Interceptor | None = None,
        options: Options | None = None,
    ) -> None:
        self.client_in = client_in
        self.client_out = LineWriter(client_out)
        self.upstream = upstream
        self.upstream_in = LineWriter(upstream.stdin_fd)
        self.interceptor: Interceptor = interceptor or PassThrough()
        self.options = options or Options()
        self.pending_requests: dict[str, Pending] = {}
        self._open_streams = 0  # how many of pending_requests are long-lived streams
        self._cancelled: OrderedDict[str, tuple[Any, ...]] = OrderedDict()  # id key -> its watches
        self.own_requests: dict[str, _OwnRequest] = {}
        self._own_prefix = f"mcp-guard-{secrets.token_hex(8)}-"
        self._own_counter = 0
        self._draining = False
        self._done = anyio.Event()
        self._upstream_eof = anyio.Event()
        self._client_lines_unwritten = 0
        self._upstream_gone = False
        # Set when a signal starts the shutdown: what the client sends from then on is answered with this,
        # never forwarded (the child is being stopped, so its answer could be cut off by the exit).
        self._stopping: str | None = None
        self._exit_code = 0
        self.ended_by = ""  # how the session ended, in words (for the audit's end record)
        self._tg: TaskGroup | None = None
        # Guards the pending tables and the interceptor; held for microseconds, never across I/O, never
        # while logging (see _locked and _pump).
        self._lock = threading.Lock()
        self._outbox = threading.local()
        # Signals that arrived before the relay's receiver was installed (the runner catches them).
        self.early_signals: list[int] = []

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Relay until the session ends; returns mcp-guard's exit status. The child is stopped on
        every path out of here, cancellation included. Signals are handled for the whole of it, the
        child's shutdown included (a second signal then cuts the shutdown short). A pump thread blocked
        on a peer that is gone is abandoned: the caller ends the process."""
        self._outbox.client, self._outbox.upstream, self._outbox.deferred = [], [], []
        with anyio.open_signal_receiver(*self.options.stop_signals) as signals:
            async with anyio.create_task_group() as watchers:
                watchers.start_soon(self._watch_signals, signals)
                for signum in self.early_signals:  # arrived before the receiver was listening
                    await self._on_signal(signum)
                try:
                    async with anyio.create_task_group() as tg:
                        self._tg = tg
                        tg.start_soon(self._client_side)
                        tg.start_soon(self._upstream_side)
                        tg.start_soon(self._watch_child)
                        serve = getattr(self.interceptor, "serve", None)
                        if serve is not None:
                            tg.start_soon(serve, self.client_channel)
                        await self._done.wait()
                        tg.cancel_scope.cancel()
                finally:
                    with anyio.CancelScope(shield=True):
                        code = await self.upstream.stop(self.options.shutdown_grace)
                        log.info("upstream exited with status %s", exit_status(code))
                        await self._settle_output()
                watchers.cancel_scope.cancel()
        return self._exit_code

    async def _settle_output(self) -> None:
        """Let answers already on their way to the client finish (a line cut by the process's exit is
        worse than a late one), within a bound: a client that does not read is not waited for."""
        signalled = self._exit_code > 128 and self._exit_code - 128 in SIGNALS
        with anyio.move_on_after(1.0 if signalled else min(self.options.drain_timeout, 5.0)):
            while self._client_lines_unwritten > 0 or self.client_out.busy:
                if self.client_out.closed:
                    break
                await anyio.sleep(0.005)

    def _finish(self, code: int, how: str = "") -> None:
        if not self._done.is_set():
            self._exit_code = code
            self.ended_by = how
            self._done.set()

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            await self._on_signal(signum)

    async def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._done.is_set():
            # Already ending (perhaps waiting out the server's grace): a second signal means now.
            log.warning("received %s again: killing the upstream server", name)
            self.upstream.signal_group(signal.SIGKILL)
            return
        log.warning("received %s: stopping the upstream server", name)
        reason = f"mcp-guard received {name} and stopped before the upstream server answered"
        with self._locked():
            # From now on a request read is answered with this, never forwarded: the session is ending.
            self._stopping = reason
            failed = len(self.pending_requests) > self._open_streams
            if failed:
                self._fail_pending(wire.UPSTREAM_EXITED, reason)
        if failed:
            await self._write_from_loop(bound=1.0)
        self._finish(128 + signum, f"mcp-guard received {name}")

    async def _watch_child(self) -> None:
        """The child's exit, seen directly: its stdout EOF is not enough, because something it started
        (npx and uvx launchers start the real server) may hold that stdout open after it is gone."""
        pid = self.upstream.pid
        pidfd = -1
        if hasattr(os, "pidfd_open"):
            try:
                pidfd = os.pidfd_open(pid)
            except OSError:
                pidfd = -1
        try:
            if pidfd >= 0:
                await anyio.wait_readable(pidfd)
            else:
                while self.upstream.poll() is None:
                    await anyio.sleep(0.1)
        finally:
            if pidfd >= 0:
                os.close(pidfd)
        # Its last answers may still be in the pipe, or being written to a slow client: let the pump
        # finish them first (while it makes progress, within the drain bound).
        with anyio.move_on_after(self.options.drain_timeout):
            while not self._upstream_eof.is_set():
                with anyio.move_on_after(1.0):
                    await self._upstream_eof.wait()
                if not self.client_out.busy:
                    break
        if not self._upstream_eof.is_set():
            log.warning("the upstream server exited, but something it started still holds its stdout")
            await self._upstream_ended()

    # --- the pumps (worker threads) ----------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, for code on the event loop's thread: what is logged meanwhile waits for its release."""
        diagnostics.hold_logs()
        try:
            with self._lock:
                yield
        finally:
            diagnostics.release_logs()

    def _pump(self, fd: int, on_line: Callable[[bytes | Oversized], None]) -> None:
        outbox = self._outbox
        outbox.client, outbox.upstream, outbox.deferred = [], [], []
        # This thread's log records wait until its lock is released: they are emitted by _write_outbox,
        # which runs outside the lock after the lines of each read.
        diagnostics.hold_logs()
        try:
            for item in iter_lines(fd, self.options.max_message_bytes):
                if isinstance(item, ReadDone):
                    self._write_outbox()
                    continue
                with self._lock:
                    on_line(item)
            self._write_outbox()
        finally:
            diagnostics.release_logs()

    def _write_outbox(self) -> None:
        diagnostics.release_logs(keep_holding=True)
        try:
            self._write_outbox_unlogged()
        finally:
            diagnostics.release_logs(keep_holding=True)

    def _write_outbox_unlogged(self) -> None:
        outbox = self._outbox
        if outbox.upstream:
            lines, outbox.upstream = outbox.upstream, []
            try:
                self.upstream_in.write_lines(lines)
            except StreamClosed:
                # The child stopped reading; its stdout EOF ends the session and answers what is pending.
                log.info("the upstream server closed its input")
        if outbox.client:
            lines, outbox.client = outbox.client, []
            count = len(lines)
            try:
                self.client_out.write_lines(lines)
            except StreamClosed:
                log.info("the client closed its output; ending the session")
                anyio.from_thread.run_sync(self._finish, 0, "the client closed its output")
            finally:
                with self._lock:  # nothing is logged here
                    self._client_lines_unwritten -= count
        if outbox.deferred:
            # Work for the event loop, handed over only now that the lock is released: the loop may be
            # waiting for that lock, and from_thread waits for the loop.
            deferred, outbox.deferred = outbox.deferred, []
            for call in deferred:
                anyio.from_thread.run_sync(call)

    def _to_upstream(self, line: bytes) -> None:
        self._outbox.upstream.append(line)

    def _to_client(self, line: bytes) -> None:
        # Called with the lock held. Counted until written: the drain must not end the session while an
        # answer already taken off the pending table is still on its way to the client.
        self._client_lines_unwritten += 1
        self._outbox.client.append(line)

    async def _write_from_loop(self, bound: float | None = None) -> None:
        """Write what a handler run on the event loop's thread produced, without blocking the loop.
        With a bound, give up waiting after that many seconds (the write goes on in its thread)."""
        taken = self._take_outbox()
        if bound is None:
            await anyio.to_thread.run_sync(self._write_outbox_of, taken)
            return
        with anyio.move_on_after(bound):
            await anyio.to_thread.run_sync(self._write_outbox_of, taken, abandon_on_cancel=True)

    def _take_outbox(self) -> tuple[list[bytes], list[bytes]]:
        outbox = self._outbox
        taken = (getattr(outbox, "client", []), getattr(outbox, "upstream", []))
        outbox.client, outbox.upstream, outbox.deferred = [], [], []
        return taken

    def _write_outbox_of(self, taken: tuple[list[bytes], list[bytes]]) -> None:
        self._outbox.client, self._outbox.upstream, self._outbox.deferred = taken[0], taken[1], []
        self._write_outbox()

    # --- client -> upstream ------------------------------------------------------------------------

    async def _client_side(self) -> None:
        await anyio.to_thread.run_sync(self._pump, self.client_in, self._on_client_line,
                                       abandon_on_cancel=True)
        log.info("client closed its input; %d request(s) still in flight", len(self.pending_requests))
        await self._drain()

    async def _drain(self) -> None:
        """The client closed our stdin. Before closing the child's stdin (many servers cancel in-flight
        work on EOF), wait until every forwarded request has been answered, within drain_timeout.
        Long-lived streams are not waited for: they are answered only when the session ends."""
        self._draining = True
        with anyio.move_on_after(self.options.drain_timeout):
            while ((len(self.pending_requests) > self._open_streams or self._client_lines_unwritten)
                   and not self._upstream_gone and not self.client_out.closed):
                await anyio.sleep(0.005)
        if len(self.pending_requests) > self._open_streams and not self._upstream_gone:
            with self._locked():
                self._fail_pending(
                    wire.UPSTREAM_EXITED,
                    f"mcp-guard stopped waiting for the upstream server's answer "
                    f"{self.options.drain_timeout:g} s after the client closed its input",
                )
            await self._write_from_loop(bound=self.options.shutdown_grace + 2.0)
        if self._upstream_gone:
            return  # the child ended with requests unanswered: _upstream_ended gives its status
        self._finish(0, "the client closed its input")

    def _on_client_line(self, line: bytes | Oversized) -> None:
        if isinstance(line, Oversized):
            request_id = wire.head_id(line.head)
            log.warning("refused a client message of %d bytes (limit %d)", line.size,
                        self.options.max_message_bytes)
            self._to_client(wire.error_response(
                request_id, wire.MESSAGE_TOO_LARGE,
                f"message of {line.size} bytes exceeds mcp-guard's limit of "
                f"{self.options.max_message_bytes} bytes (--max-message-bytes)"))
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
                self._on_client_request(parsed)
            elif parsed.kind == "notification":
                self._on_client_notification(parsed)
            else:
                self._on_client_response(parsed)
        elif isinstance(parsed, wire.Malformed):
            log.warning("malformed message from the client: %s", parsed.reason)
            self._to_client(wire.error_response(
                parsed.id if parsed.has_id else None, parsed.code, parsed.reason))
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
            self._to_client(b"[" + b",".join(answers) + b"]")
        else:
            self._to_client(wire.error_response(None, wire.INVALID_REQUEST, reason))

    def _on_client_request(self, msg: wire.Message) -> None:
        assert msg.id_key is not None and msg.method is not None
        if msg.id_key in self.pending_requests or msg.id_key.startswith(self._own_prefix):
            self._to_client(wire.error_response(
                msg.id, wire.INVALID_REQUEST,
                f"request id {msg.id!r} is already used by a request in flight"))
            return
        try:
            action = self.interceptor.client_request(msg)
        except Exception:
            # Fail closed: when the guard cannot decide, the request does not reach the upstream.
            log.exception("mcp-guard could not decide on %s; refusing it", msg.method)
            self._to_client(wire.error_response(
                msg.id, wire.INTERNAL_ERROR, "mcp-guard could not decide on this request; it was not sent"))
            return
        if isinstance(action, Defer):
            # Reserve the id so a second request with it is refused while the decision is pending.
            entry = Pending(msg.id, msg.method, forwarded=False)
            self._add_pending(msg.id_key, entry)
            tg = self._tg
            assert tg is not None
            self._outbox.deferred.append(lambda: tg.start_soon(self._decide_later, msg, action, entry))
            return
        self._apply(msg, action)

    async def _decide_later(self, msg: wire.Message, deferred: Defer, entry: Pending) -> None:
        key = msg.id_key
        assert key is not None
        while True:
            result: Any = None
            failed = False
            with anyio.CancelScope() as scope:
                entry.scope = scope
                if self.pending_requests.get(key) is not entry:
                    # Cancelled by the client before this task started: the decision still runs (cancelled at
                    # once), so that whatever it must clean up is cleaned up.
                    scope.cancel()
                try:
                    result = await deferred.decision(self.client_channel)
                except Exception:
                    log.exception("mcp-guard could not decide on %s; refusing it", msg.method)
                    failed = True
            if scope.cancel_called:
                return  # the client cancelled the request: it is never forwarded, nor answered
            # No await between the decision's return and its settling (Defer's contract).
            with self._locked():
                if self.pending_requests.get(key) is not entry:
                    return  # answered meanwhile (the upstream died, the drain gave up, or the client cancelled)
                self._pop_pending(key)
                action: ClientAction
                if failed:
                    action = Reply(wire.error_response(
                        msg.id, wire.INTERNAL_ERROR, "mcp-guard could not decide on this request; it was not sent"))
                elif deferred.settle is not None:
                    try:
                        action = deferred.settle(result)
                    except Exception:
                        log.exception("mcp-guard could not decide on %s; refusing it", msg.method)
                        action = Reply(wire.error_response(
                            msg.id, wire.INTERNAL_ERROR, "mcp-guard could not decide on this request; it was not sent"))
                else:
                    action = result
                if isinstance(action, Defer):
                    # Settled into another wait (an argument check done, a limit store still to ask): the id
                    # stays reserved, and this task waits again.
                    assert msg.method is not None
                    entry = Pending(msg.id, msg.method, forwarded=False)
                    self._add_pending(key, entry)
                    deferred = action
                    continue
                self._apply(msg, action)
            await self._write_from_loop()
            return

    def _apply(self, msg: wire.Message, action: ClientAction) -> None:
        assert msg.id_key is not None and msg.method is not None
        if isinstance(action, Forward):
            if self._upstream_gone or self._stopping is not None:
                self._to_client(wire.error_response(
                    msg.id, wire.UPSTREAM_EXITED, self._stopping or "the upstream server has exited"))
                if action.watch is not None:
                    self.interceptor.upstream_answer_lost(action.watch)
                return
            # An id the client reused after cancelling the request that had it: the first answer under
            # it may be that request's late answer (the memory is popped: at most one such answer).
            stale = self._cancelled.pop(msg.id_key, ()) if self._cancelled else ()
            self._add_pending(msg.id_key, Pending(msg.id, msg.method, action.watch,
                                                  stream=msg.method in LONG_LIVED_METHODS,
                                                  stale_watches=stale))
            self._to_upstream(action.replacement if action.replacement is not None else msg.raw)
        elif isinstance(action, Reply):
            self._to_client(action.answer)
        else:
            log.warning("dropped request %s: %s", msg.method, getattr(action, "reason", ""))
            self._to_client(wire.error_response(msg.id, wire.INVALID_REQUEST, "request refused"))

    def _on_client_notification(self, msg: wire.Message) -> None:
        try:
            action = self.interceptor.client_notification(msg)
        except Exception:
            log.exception("mcp-guard could not decide on notification %s; dropping it", msg.method)
            action = None
        if msg.method == "notifications/cancelled":
            # After the interceptor saw it (the guard notes a cancelled call there, which keeps its quota).
            self._client_cancelled(msg)
        if isinstance(action, Forward):
            self._to_upstream(action.replacement if action.replacement is not None else msg.raw)
        elif action is not None:
            log.warning("dropped a %s notification from the client: %s", msg.method, action.reason)

    def _client_cancelled(self, msg: wire.Message) -> None:
        """The client gave up on a request: it leaves the pending table (the drain does not wait for it,
        and no error is sent for it), its id can be used again, and a late answer to it is dropped."""
        params = msg.params
        key = wire.id_key(params.get("requestId")) if isinstance(params, dict) else None
        if key is None:
            return
        entry = self._pop_pending(key)
        if entry is None:
            return  # answered already, never sent, or someone else's id: nothing to do
        if not entry.forwarded:
            # Its decision is still being made: stop it. _decide_later sees the entry gone and never
            # forwards the request.
            scope = entry.scope
            if scope is not None:
                self._outbox.deferred.append(scope.cancel)  # a cancel scope belongs to the loop's thread
            return
        self._lose(entry)
        if len(self._cancelled) >= CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        self._cancelled[key] = entry.stale_watches + ((entry.watch,) if entry.watch is not None else ())

    def _on_client_response(self, msg: wire.Message) -> None:
        own = self.own_requests.get(msg.id_key) if msg.id_key is not None else None
        if own is not None:
            own.answer = msg
            self._outbox.deferred.append(own.done.set)  # an anyio.Event is set on the loop's thread
            return
        if msg.id_key is not None and msg.id_key.startswith(self._own_prefix):
            log.info("dropped a late answer to mcp-guard's own request %s", msg.id_key)
            return  # ours, after we stopped waiting: never the upstream's business
        self._to_upstream(msg.raw)

    # --- mcp-guard's own requests to the client -------------------------------------------------

    @property
    def client_channel(self) -> ClientChannel:
        return _Channel(self)

    async def notify_client(self, method: str, params: dict[str, Any] | None) -> None:
        """Send a notification of mcp-guard's own to the client."""
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            message["params"] = params
        with self._locked():
            self._to_client(wire.encode(message))
        await self._write_from_loop()

    async def request_client(self, method: str, params: dict[str, Any] | None,
                             timeout: float) -> wire.Message | None:
        """Send a request of mcp-guard's own to the client and wait for its answer (None on timeout).
        The answer is consumed here and never forwarded to the upstream."""
        self._own_counter += 1
        request_id = f"{self._own_prefix}{self._own_counter}"
        own = _OwnRequest()
        self.own_requests[request_id] = own
        try:
            with self._locked():
                self._to_client(wire.request(request_id, method, params))
            await self._write_from_loop()
            with anyio.move_on_after(timeout):
                await own.done.wait()
            return own.answer
        except anyio.get_cancelled_exc_class():
            # Whoever asked gave up (the client cancelled the call that waits on this): the client is
            # told to stop asking its human.
            with anyio.CancelScope(shield=True), anyio.move_on_after(1.0):
                await self.notify_client("notifications/cancelled",
                                         {"requestId": request_id, "reason": "no longer needed"})
            raise
        finally:
            del self.own_requests[request_id]

    # --- upstream -> client --------------------------------------------------------------------------

    async def _upstream_side(self) -> None:
        try:
            await anyio.to_thread.run_sync(self._pump, self.upstream.stdout_fd, self._on_upstream_line,
                                           abandon_on_cancel=True)
        finally:
            self._upstream_eof.set()
            with anyio.CancelScope(shield=True):
                await self._upstream_ended()

    async def _upstream_ended(self) -> None:
        if self._done.is_set() or self._upstream_gone:
            return
        self._upstream_gone = True
        code = await self.upstream.wait(1.0)
        if code is None:
            what = "the upstream server closed its output"
            status = 1
        else:
            status = exit_status(code)
            what = f"the upstream server exited with status {status}"
        unanswered = len(self.pending_requests) - self._open_streams  # a stream is not work left undone
        left_unanswered = unanswered > 0
        if left_unanswered:
            log.warning("%s with %d request(s) unanswered", what, unanswered)
            with self._locked():
                self._fail_pending(wire.UPSTREAM_EXITED, f"{what} before answering")
            await self._write_from_loop(bound=self.options.drain_timeout)
        else:
            log.warning("%s", what)
        # The child's status; but a child that exits 0 with work unanswered has still failed the client.
        self._finish(status if status != 0 else (1 if left_unanswered else 0), what)

    def _fail_pending(self, code: int, message: str) -> None:
        """Answer every pending request with an error; long-lived streams are left to end with the session
        (their client learns it from the end of the session, and waits for nothing)."""
        pending = list(self.pending_requests.items())
        for key, entry in pending:
            if entry.stream:
                continue
            self._pop_pending(key)
            self._lose(entry)
            self._to_client(wire.error_response(entry.id, code, message))

    def _add_pending(self, key: str, entry: Pending) -> None:
        self.pending_requests[key] = entry
        if entry.stream:
            self._open_streams += 1

    def _pop_pending(self, key: str) -> Pending | None:
        entry = self.pending_requests.pop(key, None)
        if entry is not None and entry.stream:
            self._open_streams -= 1
        return entry

    def _lose(self, entry: Pending) -> None:
        """Tell the interceptor that the answer it asked to see will never come. (The stale watches were
        told when their own request was cancelled.)"""
        if entry.watch is not None:
            self.interceptor.upstream_answer_lost(entry.watch)

    def _on_upstream_line(self, line: bytes | Oversized) -> None:
        if isinstance(line, Oversized):
            log.warning("dropped a message of %d bytes from the upstream (limit %d)", line.size,
                        self.options.max_message_bytes)
            self._answer_lost(wire.head_id(line.head), wire.MESSAGE_TOO_LARGE,
                                    f"the upstream server's answer of {line.size} bytes exceeds mcp-guard's "
                                    f"limit of {self.options.max_message_bytes} bytes (--max-message-bytes)")
            return
        if len(line) > LARGE_ANSWER_BYTES and not any(
                p.watch is not None or p.stale_watches for p in self.pending_requests.values()):
            # Decoding a multi-megabyte answer costs more time and memory than the rest of the relay;
            # when no pending request needs inspecting, its id is all that is needed.
            head = wire.response_id(line)
            if head is not None:
                key = wire.id_key(head[0])
                entry = self.pending_requests.get(key) if key is not None else None
                if entry is not None and entry.forwarded:
                    self._pop_pending(key)  # type: ignore[arg-type]
                    self._to_client(line)
                else:
                    self._drop_unmatched(key, head[0])
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
                ids = [wire.head_id(line[:512])]
            for request_id in ids:
                self._answer_lost(request_id, wire.INTERNAL_ERROR, "the upstream server sent a malformed answer")
            return
        if parsed.kind != "response":
            if parsed.kind == "request":
                try:
                    self.interceptor.upstream_request(parsed)
                except Exception:
                    log.exception("mcp-guard could not note the upstream's request %s", parsed.method)
            elif self._open_streams and parsed.method == "notifications/cancelled":
                self._stream_ended(parsed)
            self._to_client(line)
            return
        entry = self.pending_requests.get(parsed.id_key) if parsed.id_key is not None else None
        if entry is not None and entry.forwarded:
            self._pop_pending(parsed.id_key)  # type: ignore[arg-type]
        else:
            entry = None
        if entry is None:
            # An answer to nothing we forwarded (a second answer, an id we never sent): passing it on
            # could hand the client an unfiltered listing under a reused id.
            self._drop_unmatched(parsed.id_key, parsed.id)
            return
        watches = entry.stale_watches + ((entry.watch,) if entry.watch is not None else ())
        if not watches:
            self._to_client(line)
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
                    self.interceptor.upstream_answer_lost(other)
                break
        self._to_client(answer)

    def _drop_unmatched(self, key: str | None, request_id: Any) -> None:
        if key is not None and self._cancelled.pop(key, None) is not None:
            log.info("dropped the upstream's late answer to cancelled request %.100r", request_id)
        else:
            log.warning("dropped an upstream answer with unknown id %.100r", request_id)

    def _stream_ended(self, msg: wire.Message) -> None:
        """The server ended a long-lived stream (it sends notifications/cancelled naming the listen
        request): nothing is owed for it any more. Requests of other kinds are not touched: a server's
        notifications/cancelled names, in the handshake era, requests of its own."""
        params = msg.params
        key = wire.id_key(params.get("requestId")) if isinstance(params, dict) else None
        entry = self.pending_requests.get(key) if key is not None else None
        if entry is not None and entry.stream:
            self._pop_pending(key)  # type: ignore[arg-type]
            self._lose(entry)

    def _answer_lost(self, request_id: Any, code: int, message: str) -> None:
        """An upstream line we could not pass on may have been the answer to a pending request: if its
        head names one, the client gets an error for it instead of waiting for ever."""
        key = wire.id_key(request_id)
        entry = self.pending_requests.get(key) if key is not None else None
        if entry is None or not entry.forwarded:
            return
        self._pop_pending(key)  # type: ignore[arg-type]
        self._lose(entry)
        self._to_client(wire.error_response(entry.id, code, message))


class _Channel:
    """The relay's ClientChannel."""

    __slots__ = ("_relay",)

    def __init__(self, relay: Relay) -> None:
        self._relay = relay

    async def request(self, method: str, params: dict[str, Any] | None,
                      timeout: float) -> wire.Message | None:
        return await self._relay.request_client(method, params, timeout)

    async def notify(self, method: str, params: dict[str, Any] | None) -> None:
        await self._relay.notify_client(method, params)
