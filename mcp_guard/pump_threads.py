"""The threaded pump: the fallback where descriptors cannot be polled (pump.py chooses).

Blocking reads and writes, each in a thread of its own (a reader per source, a writer per destination),
and one thread, `run`'s, that calls the session core for all of them, fed from a queue: the core is still
called from one thread only, and no lock is held while anything is read, written or decided. A reader
waits while the destinations it feeds hold more than the bounds of streams.py (back-pressure); a writer
blocked on a peer that does not read blocks only itself. Each thread that owns a duplicate of the child's
descriptors closes it itself, when it is done with it.
"""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Callable

from .framing import LineFramer, Oversized
from .oslayer import set_blocking, wait_writable
from .pump import CoreCall, Post, PumpEvent
from .session import Effects, Session
from .streams import (
    OUTPUT_HARD_LIMIT,
    OUTPUT_HIGH_WATER,
    READ_CHUNK,
    READ_CHUNK_LARGE,
    OutputBuffer,
    StreamClosed,
    read_chunk_blocking,
)

log = logging.getLogger("mcp_guard")

# Bytes read and not yet through the core, at most (a few reads: the core keeps up with a reader).
BACKLOG_LIMIT = 4 * READ_CHUNK


class _Outlet:
    """One destination: lines queued by the core's thread, written by a thread of its own."""

    def __init__(self, fd: int, owned: bool, room: threading.Condition) -> None:
        self.fd = fd
        self.owned = owned  # a duplicate of ours: closed by the writer thread when it is done
        self.room = room  # shared by every outlet and reader: notified whenever an outlet drains
        self.buffer = OutputBuffer()
        self.in_flight = 0
        self.released = False
        self.written = 0

    @property
    def size(self) -> int:
        return self.buffer.size + self.in_flight

    def add(self, lines: list[bytes]) -> None:
        with self.room:
            self.buffer.add(lines)
            self.room.notify_all()

    def release(self) -> None:
        with self.room:
            self.released = True
            self.buffer.close()
            self.room.notify_all()

    def write_forever(self, on_closed: Callable[[], None], on_idle: Callable[[], None]) -> None:
        try:
            while True:
                with self.room:
                    while not self.buffer and not self.released:
                        on_idle()
                        self.room.wait()
                    if self.released:
                        return
                    taken, self.buffer = self.buffer, OutputBuffer()
                    self.in_flight = taken.size
                try:
                    while taken:
                        written = taken.write_to(self.fd)
                        self.written += written
                        if not written and taken:
                            wait_writable(self.fd, None)  # someone handed us a non-blocking descriptor
                except StreamClosed:
                    with self.room:
                        self.buffer.close()
                        self.in_flight = 0
                        self.room.notify_all()
                    on_closed()
                    return
                finally:
                    with self.room:
                        self.in_flight = 0
                        self.room.notify_all()
        finally:
            if self.owned:
                os.close(self.fd)


class ThreadPump:
    def __init__(self, core: Session, client_in: int, client_out: int, upstream_in: int, upstream_out: int,
                 post: Post, max_line: int) -> None:
        self.core = core
        self._post = post
        self._max_line = max_line
        self._client_in = client_in
        self._upstream_out = os.dup(upstream_out)
        self._room = threading.Condition()
        self._to_client = _Outlet(client_out, False, self._room)
        self._to_upstream = _Outlet(os.dup(upstream_in), True, self._room)
        self._calls: queue.SimpleQueue[Callable[[], bool]] = queue.SimpleQueue()
        self._flush_wanted = False
        self._backlog = 0  # bytes read and not yet through the core (bounded like an outlet)

    @property
    def client_written(self) -> int:
        return self._to_client.written

    # --- called from other threads ------------------------------------------------------------------

    def submit(self, call: CoreCall) -> None:
        self._calls.put(lambda: self._apply(call(self.core)))

    def stop(self) -> None:
        self._calls.put(lambda: False)

    def release_upstream_input(self) -> None:
        self._to_upstream.release()

    def notify_when_flushed(self) -> None:
        self._calls.put(self._want_flush)

    def close(self) -> None:
        # Each thread closes what it owns; the client's writer is told to end (what it had is written,
        # or given up on by the settle's bound). A reader blocked on a peer that never closes stays.
        self._to_client.release()

    # --- the core's thread -----------------------------------------------------------------------------

    def run(self) -> None:
        for fd in (self._upstream_out, self._to_upstream.fd):
            set_blocking(fd, True)
        to_client, to_upstream = self._to_client, self._to_upstream
        def client_room() -> bool:
            return (to_upstream.size < OUTPUT_HIGH_WATER and to_client.size < OUTPUT_HARD_LIMIT
                    and self._backlog < BACKLOG_LIMIT)

        def upstream_room() -> bool:
            return to_client.size < OUTPUT_HIGH_WATER and self._backlog < BACKLOG_LIMIT

        loops: list[Callable[[], None]] = [
            lambda: self._read_forever(self._client_in, False, self._client_lines, self._client_eof, client_room),
            lambda: self._read_forever(self._upstream_out, True, self._upstream_lines, self._upstream_eof,
                                       upstream_room),
            lambda: to_client.write_forever(self._client_gone, self._flushed_maybe),
            lambda: to_upstream.write_forever(self._upstream_gone, lambda: None),
        ]
        for loop in loops:
            threading.Thread(target=loop, name="mcp-guard-pump", daemon=True).start()
        while self._calls.get()():
            pass

    def _apply(self, fx: Effects) -> bool:
        if fx.to_client:
            self._to_client.add(fx.to_client)
        if fx.to_upstream:
            self._to_upstream.add(fx.to_upstream)
        if fx.for_loop:
            self._post(fx)
        return True

    def _client_lines(self, lines: list[bytes | Oversized]) -> bool:
        return self._apply(self.core.client_lines(lines))

    def _upstream_lines(self, lines: list[bytes | Oversized]) -> bool:
        return self._apply(self.core.upstream_lines(lines))

    def _client_eof(self) -> bool:
        return self._apply(self.core.client_closed())

    def _upstream_eof(self) -> bool:
        self._post(PumpEvent.UPSTREAM_EOF)
        return True

    # --- readers and writers ----------------------------------------------------------------------------

    def _read_forever(self, fd: int, owned: bool, on_lines: Callable[[list[bytes | Oversized]], bool],
                      on_eof: Callable[[], bool], room_for_more: Callable[[], bool]) -> None:
        framer = LineFramer(self._max_line)
        try:
            while True:
                with self._room:
                    while not room_for_more():
                        self._room.wait()
                data = read_chunk_blocking(fd, READ_CHUNK_LARGE if framer.buffered > READ_CHUNK else READ_CHUNK)
                lines = framer.feed(data) if data else framer.end()
                if lines:
                    size = len(data)
                    with self._room:
                        self._backlog += size
                    self._calls.put(functools.partial(self._through, on_lines, lines, size))
                if not data:
                    self._calls.put(on_eof)
                    return
        finally:
            if owned:
                os.close(fd)

    def _through(self, on_lines: Callable[[list[bytes | Oversized]], bool], lines: list[bytes | Oversized],
                 size: int) -> bool:
        on_lines(lines)
        with self._room:
            self._backlog -= size
            self._room.notify_all()
        return True

    def _client_gone(self) -> None:
        self.submit(lambda core: core.client_output_closed())
        self._calls.put(self._check_flushed)

    def _upstream_gone(self) -> None:
        log.info("the upstream server closed its input")

    # Everything posted to the event loop is posted by the core's thread, while `run` runs: after it
    # returns, the loop may close its wake-up descriptor, and no other thread could know.

    def _want_flush(self) -> bool:
        self._flush_wanted = True
        return self._check_flushed()

    def _check_flushed(self) -> bool:
        with self._room:
            flushed = self._flush_wanted and not self._to_client.size
        if flushed:
            self._flush_wanted = False
            self._post(PumpEvent.FLUSHED)
        return True

    def _flushed_maybe(self) -> None:
        """The client's writer has nothing left (called with the room's lock held)."""
        if self._flush_wanted:
            self._calls.put(self._check_flushed)
