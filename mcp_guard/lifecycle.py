"""A relay session's life on the event loop: the task group, signals, the child's exit, the drain, the
shutdown and the settling of what is still being written. It waits on events, never on polled flags.

The pump (pump.py) moves the lines and calls the session core (session.py) on its own thread; what the
core asks of the loop (a deferred decision to run or stop, an answer to one of mcp-guard's own
requests, the drain's clock, the end) arrives here as posted effects, and what the loop tells the core
(a decision made, a signal, the child's exit, the drain's timeout) goes to the pump's thread with
`submit`. Neither side blocks on the other.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from anyio.abc import TaskGroup

from . import oslayer, wire
from .actions import ClientChannel, Interceptor, PassThrough
from .exits import Ending, ExitReason, exit_status
from .options import Options
from .pump import Post, Pump, PumpEvent, pump_kind
from .session import Deferred, Effects, Session
from .upstream import Upstream
from .upstream import exit_status as child_exit_status

log = logging.getLogger("mcp_guard")

# Seconds answers already on their way to the client get to finish after the session ended: after a
# signal (someone wants us gone), and otherwise (at most; the drain timeout when shorter).
SETTLE_AFTER_SIGNAL = 1.0
SETTLE_MAX = 5.0
# Seconds the child gets to report its exit status once its output ended.
EXIT_STATUS_WAIT = 1.0
# While the child is gone but its output is still open, how often the pump's progress is looked at.
PROGRESS_CHECK = 1.0
# Seconds the pump's thread gets to return once stopped (it returns at once unless a peer is wedged).
PUMP_STOP_WAIT = 2.0


@dataclass(eq=False)
class _OwnRequest:
    done: anyio.Event = field(default_factory=anyio.Event)
    answer: wire.Message | None = None


def make_pump(kind: str, core: Session, client_in: int, client_out: int, upstream_in: int, upstream_out: int,
              post: Post, max_line: int) -> Pump:
    """The pump `pump_kind()` chose (pump.py): its module is imported only then."""
    if kind == "poll":
        from .pump_poll import PollPump

        return PollPump(core, client_in, client_out, upstream_in, upstream_out, post, max_line)
    from .pump_threads import ThreadPump

    return ThreadPump(core, client_in, client_out, upstream_in, upstream_out, post, max_line)


class _LoopInbox:
    """What the pump posts for the event loop, from the pump's thread."""

    def __init__(self) -> None:
        self._items: deque[Effects | PumpEvent] = deque()
        self._wakeup = oslayer.Wakeup()  # a socket pair where the loop cannot wait on a pipe (Windows)

    def post(self, item: Effects | PumpEvent) -> None:
        self._items.append(item)
        self._wakeup.wake()

    async def take(self) -> list[Effects | PumpEvent]:
        while True:
            await anyio.wait_readable(self._wakeup.read_fd)
            self._wakeup.clear()
            if self._items:
                items = list(self._items)
                for _ in items:
                    self._items.popleft()
                return items

    def close(self) -> None:
        self._wakeup.close()


class Relay:
    def __init__(self, client_in: int, client_out: int, upstream: Upstream, interceptor: Interceptor | None = None,
                 options: Options | None = None) -> None:
        self.upstream = upstream
        self.interceptor: Interceptor = interceptor or PassThrough()
        self.options = options or Options()
        self.core = Session(self.interceptor, self.options.max_message_bytes)
        self._inbox = _LoopInbox()
        self.pump: Pump = make_pump(pump_kind(), self.core, client_in, client_out, upstream.stdin_fd,
                                    upstream.stdout_fd, self._inbox.post, self.options.max_message_bytes)
        self.ended_by = ""  # how the session ended, in words (for the audit's end record)
        # Signals that arrived before the relay's receiver was installed (the runner catches them).
        self.early_signals: list[int] = []
        self._ending: Ending | None = None
        self._finished = anyio.Event()
        self._flushed = anyio.Event()
        self._upstream_eof = anyio.Event()
        self._pump_done = anyio.Event()
        self._upstream_ending = False
        self._draining = False
        self._session: TaskGroup | None = None

    # --- running ---------------------------------------------------------------------------------

    async def run(self) -> int:
        """Relay until the session ends; returns mcp-guard's exit status. The child is stopped on every
        path out of here, cancellation and errors included; signals are handled for the whole of it, the
        child's shutdown included (one during the shutdown kills the child at once)."""
        with oslayer.signal_receiver(*self.options.stop_signals) as signals:
            async with anyio.create_task_group() as outer:
                outer.start_soon(self._run_pump)
                outer.start_soon(self._serve_inbox)
                outer.start_soon(self._watch_signals, signals)
                for signum in self.early_signals:  # arrived before the receiver was listening
                    self._signalled(signum)
                try:
                    async with anyio.create_task_group() as session:
                        self._session = session
                        session.start_soon(self._watch_child)
                        serve = getattr(self.interceptor, "serve", None)
                        if serve is not None:
                            session.start_soon(serve, self.client_channel)
                        await self._finished.wait()
                        session.cancel_scope.cancel()
                finally:
                    self._session = None
                    with anyio.CancelScope(shield=True):
                        await self._shut_down()
                    outer.cancel_scope.cancel()
        if self._pump_done.is_set():
            # Only now that no task submits and the pump no longer posts: a descriptor closed earlier
            # could be reused by then and written to by a late wake-up.
            self._inbox.close()
            self.pump.close()
        # The core's word, read now that its thread is done: it may have refined the ending after the
        # fact (a client that left during the drain was owed nothing it could still read).
        ending = self.core.ending or self._ending or Ending(ExitReason.INTERNAL_ERROR)
        self.ended_by = ending.how
        return exit_status(ending)

    async def _shut_down(self) -> None:
        if self._ending is None:  # an error or a cancellation from outside: no effect said why
            self.pump.submit(lambda core: core.fail())
        self.pump.release_upstream_input()
        code = await self.upstream.stop(self.options.shutdown_grace)
        log.info("upstream exited with status %s", child_exit_status(code))
        # A line cut by the process's exit is worse than a late one, but a client that does not read is
        # not waited for.
        ending = self._ending
        signalled = ending is not None and ending.reason is ExitReason.SIGNAL
        self.pump.notify_when_flushed()
        with anyio.move_on_after(SETTLE_AFTER_SIGNAL if signalled else min(self.options.drain_timeout, SETTLE_MAX)):
            await self._flushed.wait()
        self.pump.stop()
        with anyio.move_on_after(PUMP_STOP_WAIT):
            await self._pump_done.wait()

    async def _run_pump(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.pump.run, abandon_on_cancel=True)
        finally:
            self._pump_done.set()

    async def _serve_inbox(self) -> None:
        while True:
            for item in await self._inbox.take():
                if isinstance(item, PumpEvent):
                    if item is PumpEvent.UPSTREAM_EOF:
                        self._upstream_eof.set()
                        self._start(self._upstream_ended)
                    elif item is PumpEvent.CLIENT_HUNG_UP:
                        self._start_drain()
                    else:
                        self._flushed.set()
                else:
                    self._on_effects(item)

    def _on_effects(self, fx: Effects) -> None:
        for token, answer in fx.own_answers:
            token.answer = answer
            token.done.set()
        for deferred in fx.cancel:
            deferred.cancel_requested = True
            if deferred.scope is not None:
                deferred.scope.cancel()
        for deferred in fx.start:
            if not self._start(self._decide, deferred):
                deferred.cancel_requested = True
        if fx.draining:
            self._start_drain()
        if fx.kill_upstream:
            self.upstream.kill_group()
        if fx.finish is not None:
            self._ending = fx.finish
            self._finished.set()

    def _start(self, task: Any, *args: Any) -> bool:
        if self._session is None:
            return False
        self._session.start_soon(task, *args)
        return True

    async def _watch_signals(self, signals: Any) -> None:
        async for signum in signals:
            self._signalled(signum)

    def _signalled(self, signum: int) -> None:
        self.pump.submit(lambda core: core.signalled(signum))

    def _start_drain(self) -> None:
        if not self._draining:
            self._draining = self._start(self._drain)

    async def _drain(self) -> None:
        """The client closed our stdin: the core ends the session once nothing is owed; this is the
        bound on how long that may take."""
        seconds = self.options.drain_timeout
        with anyio.move_on_after(seconds):
            await self._finished.wait()
        if not self._finished.is_set():
            self.pump.submit(lambda core: core.drain_timed_out(seconds))

    async def _decide(self, deferred: Deferred) -> None:
        result: Any = None
        failed = False
        with anyio.CancelScope() as scope:
            deferred.scope = scope
            if deferred.cancel_requested:
                # No longer wanted before it started: it still runs (cancelled at once), so that whatever
                # it must clean up is cleaned up.
                scope.cancel()
            try:
                result = await deferred.defer.decision(self.client_channel)
            except Exception:
                log.exception("mcp-guard could not decide on %s; refusing it", deferred.msg.method)
                failed = True
        if scope.cancel_called:
            return  # the client cancelled the request, or the session is ending: never forwarded
        # No await between the decision's return and its hand-over: settles are applied in this order.
        self.pump.submit(lambda core: core.decision_settled(deferred, result, failed))

    async def _watch_child(self) -> None:
        """The child's exit, seen directly: its stdout EOF is not enough, because something it started
        (npx and uvx launchers start the real server) may hold that stdout open after it is gone."""
        await self.upstream.wait(None)  # oslayer.Child: a pidfd on Linux, the wait thread elsewhere
        # Its last answers may still be in the pipe, or being written to a slow client: let the pump
        # finish them first (while it makes progress, within the drain bound).
        with anyio.move_on_after(self.options.drain_timeout):
            while not self._upstream_eof.is_set():
                before = self.pump.client_written
                with anyio.move_on_after(PROGRESS_CHECK):
                    await self._upstream_eof.wait()
                if self.pump.client_written == before:
                    break
        if not self._upstream_eof.is_set():
            log.warning("the upstream server exited, but something it started still holds its stdout")
            await self._upstream_ended()

    async def _upstream_ended(self) -> None:
        if self._upstream_ending:
            return
        self._upstream_ending = True
        code = await self.upstream.wait(EXIT_STATUS_WAIT)
        status = None if code is None else child_exit_status(code)
        self.pump.submit(lambda core: core.upstream_ended(status))

    # --- mcp-guard's own messages to the client ------------------------------------------------

    @property
    def client_channel(self) -> ClientChannel:
        return _Channel(self)

    async def notify_client(self, method: str, params: dict[str, Any] | None) -> None:
        """Send a notification of mcp-guard's own to the client (queued at once: no cancellation
        point comes before it, so it is never lost half-way)."""
        self.pump.submit(lambda core: core.notify(method, params))
        await anyio.lowlevel.checkpoint()

    async def request_client(self, method: str, params: dict[str, Any] | None,
                             timeout: float) -> wire.Message | None:
        """Send a request of mcp-guard's own to the client and wait for its answer (None on timeout).
        The answer is consumed here and never forwarded to the upstream."""
        own = _OwnRequest()
        self.pump.submit(lambda core: core.own_request(own, method, params))
        given_up = False
        try:
            with anyio.move_on_after(timeout):
                await own.done.wait()
            return own.answer
        except anyio.get_cancelled_exc_class():
            # Whoever asked gave up (the client cancelled the call that waits on this): the client is
            # told to stop asking its human.
            given_up = True
            raise
        finally:
            self.pump.submit(lambda core: core.own_request_done(own, given_up))


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
