"""mcp-guard's stderr: diagnostics that never block the relay or signal handling.

A stderr that nobody reads (a launcher that pipes it and never drains the pipe) fills up, and a plain
`write` to it then blocks for ever. mcp-guard writes its log, and passes on the server's stderr, through
one `StderrSink`: callers only append to a bounded queue, and one writer thread does the blocking writes.

- mcp-guard's own log lines are never waited for: when the queue is full, the line is dropped and
  counted.
- The server's stderr is passed on byte for byte while stderr is being read (its writes wait for room,
  which is the back-pressure a pipe would give); once the writer has made no progress for
  `STALL_SECONDS`, what the server writes is dropped and counted instead, so the server never blocks
  on its stderr either.
- When the queue drains after drops, one line says how much was dropped.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections import deque

from . import oslayer

QUEUE_BYTES = 256 * 1024  # waiting to be written, at most (mcp-guard's lines and the server's bytes)
STALL_SECONDS = 0.5  # a write that has not progressed for this long means stderr is not being read
_PIECE = 64 * 1024  # written at a time, so that progress is seen at least once per pipe-full
PARTIAL_LINE_WAIT = 0.1  # seconds the rest of a server's stderr line is waited for before passing on a part


class StderrSink:
    """A bounded queue in front of a file descriptor, written by one daemon thread."""

    def __init__(self, fd: int = 2, limit: int = QUEUE_BYTES) -> None:
        self.fd = fd
        self.limit = limit
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._writing = False
        self._last_progress = time.monotonic()
        self._closed = False  # the reader went away (EPIPE) or the descriptor is unusable: drop silently
        self.dropped_lines = 0
        self.dropped_bytes = 0  # of the server's stderr
        self._forwarders: list[threading.Thread] = []
        self._thread: threading.Thread | None = None

    # --- producers ---------------------------------------------------------------------------------

    def put_line(self, data: bytes) -> None:
        """Queue one of mcp-guard's own lines; never waits. Dropped (and counted) when the queue is full."""
        with self._cond:
            if self._closed:
                return
            if self._queued + len(data) > self.limit:
                self.dropped_lines += 1
                return
            self._append(data)

    def put_stream(self, data: bytes) -> None:
        """Queue bytes of the server's stderr. Waits for room while stderr is being read; once the writer
        is stalled, drops them (counted) at once."""
        with self._cond:
            while not self._closed and self._queued + len(data) > self.limit and self._queued > 0:
                if self._stalled():
                    self.dropped_bytes += len(data)
                    return
                self._cond.wait(0.05)
            if not self._closed:
                self._append(data)

    def forward(self, fd: int) -> threading.Thread:
        """Pass what is read from `fd` (the server's stderr) on, in a daemon thread, until EOF. Lines are
        kept whole where possible, so the server's lines and mcp-guard's do not cut into each other."""
        thread = threading.Thread(target=self._forward, args=(fd,), name="mcp-guard stderr forwarder",
                                  daemon=True)
        self._forwarders.append(thread)
        thread.start()
        return thread

    def _append(self, data: bytes) -> None:
        # Called with the condition held.
        self._queue.append(data)
        self._queued += len(data)
        if self._thread is None:
            self._thread = threading.Thread(target=self._write_loop, name="mcp-guard stderr writer", daemon=True)
            self._thread.start()
        self._cond.notify_all()

    def _stalled(self) -> bool:
        return self._writing and time.monotonic() - self._last_progress > STALL_SECONDS

    # --- the writer --------------------------------------------------------------------------------

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                pieces = [self._queue.popleft()]
                size = len(pieces[0])
                while self._queue and size + len(self._queue[0]) <= _PIECE:
                    pieces.append(self._queue.popleft())
                    size += len(pieces[-1])
                self._writing = True
                self._last_progress = time.monotonic()
            data = b"".join(pieces) if len(pieces) > 1 else pieces[0]
            ok = self._write_all(data)
            notice = None
            with self._cond:
                self._queued -= size
                self._writing = False
                self._last_progress = time.monotonic()
                if not ok:
                    self._closed = True
                    self._queue.clear()
                    self._queued = 0
                elif not self._queue and (self.dropped_lines or self.dropped_bytes):
                    notice = self._drop_notice()
                self._cond.notify_all()
            if notice is not None:
                self._write_all(notice)

    def _drop_notice(self) -> bytes:
        parts = []
        if self.dropped_lines:
            parts.append(f"{self.dropped_lines} line(s) of mcp-guard's log")
        if self.dropped_bytes:
            parts.append(f"{self.dropped_bytes} byte(s) of the server's stderr")
        self.dropped_lines = self.dropped_bytes = 0
        return (f"mcp-guard: warning: stderr was not being read: dropped {' and '.join(parts)}\n").encode()

    def _write_all(self, data: bytes) -> bool:
        """Write everything (blocking, in pieces so progress is seen); False when stderr is gone."""
        view = memoryview(data)
        while view:
            try:
                written = os.write(self.fd, view[:_PIECE])
            except InterruptedError:
                continue
            except BlockingIOError:
                # A launcher handed over a non-blocking descriptor: wait for it the plain way.
                oslayer.wait_writable(self.fd, 1.0)
                continue
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.EBADF, errno.EINVAL, errno.ECONNRESET, errno.ENOSPC, errno.EIO):
                    return False
                raise
            view = view[written:]
            with self._cond:
                self._last_progress = time.monotonic()
        return True

    # --- the server's stderr -----------------------------------------------------------------------

    def _forward(self, fd: int) -> None:
        partial = b""
        try:
            while True:
                # Wait a little for the rest of a line; a line without its newline is passed on after 0.1 s.
                if not oslayer.wait_readable(fd, PARTIAL_LINE_WAIT if partial else None):
                    self.put_stream(partial)
                    partial = b""
                    continue
                try:
                    data = os.read(fd, 65536)
                except InterruptedError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    break
                data = partial + data if partial else data
                end = data.rfind(b"\n") + 1
                if end == 0 and len(data) < _PIECE:
                    partial = data
                    continue
                if end == 0:
                    end = len(data)
                self.put_stream(data[:end])
                partial = data[end:]
        finally:
            if partial:
                self.put_stream(partial)
            try:
                os.close(fd)
            except OSError:
                pass

    # --- the end -----------------------------------------------------------------------------------

    def flush(self, timeout: float = 2.0) -> None:
        """Wait, within `timeout`, for the server's stderr to end and everything queued to be written;
        give up at once when stderr is not being read."""
        deadline = time.monotonic() + timeout
        for thread in self._forwarders:
            thread.join(max(0.0, min(deadline - time.monotonic(), STALL_SECONDS * 2)))
        with self._cond:
            while (self._queue or self._writing) and not self._closed and not self._stalled():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))


class NonBlockingHandler(logging.Handler):
    """A logging handler whose `emit` only queues the formatted line in a `StderrSink`."""

    def __init__(self, sink: StderrSink) -> None:
        super().__init__()
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            self.sink.put_line(line.encode("utf-8", "backslashreplace"))
        except Exception:  # noqa: BLE001 - logging must never take the relay down
            self.handleError(record)


_sink: StderrSink | None = None


def sink() -> StderrSink:
    """The process's stderr sink (one per process: there is one stderr)."""
    global _sink
    if _sink is None:
        _sink = StderrSink(2)
    return _sink


def setup_logging(level: str, formatter: logging.Formatter | None = None) -> None:
    """mcp-guard's log lines on stderr (the CLI's formatter: time, `mcp-guard`, level, message),
    written without ever blocking."""
    handler = NonBlockingHandler(sink())
    handler.setFormatter(formatter or logging.Formatter("mcp-guard: %(levelname)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)


def stderr_may_block() -> bool:
    """Whether a write to our stderr can block: a pipe or a socket, which someone must read. A terminal,
    a file or /dev/null takes what it is given."""
    try:
        mode = os.fstat(2).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def flush(timeout: float = 2.0) -> None:
    if _sink is not None:
        _sink.flush(timeout)
