"""File-descriptor plumbing shared by the relay's pumps: reading a chunk, bounded output buffers written
without blocking, wake-ups between threads, bigger pipes. Framing is framing.py's (sans-I/O)."""

from __future__ import annotations

import errno
import fcntl
import os
import select
from collections import deque

READ_CHUNK = 64 * 1024  # bytes asked of one read (bigger ones cost an mmap per read)
READ_CHUNK_LARGE = 1024 * 1024  # while a line longer than READ_CHUNK is being assembled
# Output queued for one destination above which its sources stop being read (back-pressure); a single
# line longer than this is still queued whole, so the bound is this plus one message.
OUTPUT_HIGH_WATER = 1024 * 1024
# A source whose own destination is fine, but which also queues lines for a destination that does not
# drain (the client's refusals, while the client does not read), stops above this.
OUTPUT_HARD_LIMIT = 4 * OUTPUT_HIGH_WATER
PIPE_SIZE = 1024 * 1024  # asked of Linux for the child's pipes
_IOV_MAX = 512  # buffers per writev (Linux allows 1024)
_NEWLINE = b"\n"
_JOIN_BELOW = 64 * 1024  # a line shorter than this is queued with its newline in one buffer
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.EBADF, errno.EINVAL)


class StreamClosed(Exception):
    """The other end of a file descriptor went away (EPIPE on write)."""


def grow_pipe(fd: int, size: int = PIPE_SIZE) -> None:
    """Ask Linux for a bigger pipe buffer: fewer wake-ups for multi-megabyte messages."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    try:
        fcntl.fcntl(fd, set_size, size)
    except OSError:
        pass


def set_blocking(fd: int, blocking: bool) -> bool:
    """Set O_NONBLOCK off or on; returns whether the descriptor was blocking before."""
    try:
        was = os.get_blocking(fd)
        if was != blocking:
            os.set_blocking(fd, blocking)
        return was
    except OSError:
        return True


def read_chunk(fd: int, size: int) -> bytes | None:
    """Up to `size` bytes; b"" at EOF (or when the descriptor is unusable); None when a non-blocking
    descriptor has nothing yet."""
    while True:
        try:
            return os.read(fd, size)
        except InterruptedError:
            continue
        except BlockingIOError:
            return None
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET, errno.EBADF):
                return b""
            raise


def read_chunk_blocking(fd: int, size: int) -> bytes:
    while True:
        data = read_chunk(fd, size)
        if data is not None:
            return data
        select.select([fd], [], [])  # someone handed us a non-blocking descriptor: wait the plain way


class OutputBuffer:
    """Lines waiting for one destination, written with as few system calls as possible and never more
    than the descriptor takes at once. Lines are not joined (a 256 MiB line is never copied)."""

    __slots__ = ("size", "closed", "_chunks")

    def __init__(self) -> None:
        self.size = 0
        self.closed = False
        self._chunks: deque[bytes | memoryview] = deque()

    def __bool__(self) -> bool:
        return self.size > 0

    def add(self, lines: list[bytes]) -> None:
        if self.closed:
            return
        chunks = self._chunks
        for line in lines:
            if len(line) < _JOIN_BELOW:
                chunks.append(line + _NEWLINE)  # a small copy beats a second buffer in every writev
            else:
                chunks.append(line)
                chunks.append(_NEWLINE)
            self.size += len(line) + 1

    def discard(self) -> None:
        self._chunks.clear()
        self.size = 0

    def close(self) -> None:
        self.closed = True
        self.discard()

    def write_to(self, fd: int) -> int:
        """Write what the descriptor takes now (a non-blocking one returns at once; a blocking one
        blocks until all of one writev is taken). Returns the bytes written. Raises StreamClosed."""
        chunks = self._chunks
        written_total = 0
        while chunks:
            try:
                if len(chunks) == 1:
                    offered = len(chunks[0])
                    written = os.write(fd, chunks[0])
                else:
                    batch = list(chunks) if len(chunks) <= _IOV_MAX else [chunks[i] for i in range(_IOV_MAX)]
                    offered = sum(len(b) for b in batch)
                    written = os.writev(fd, batch)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in _GONE:
                    self.close()
                    raise StreamClosed from exc
                raise
            written_total += written
            self.size -= written
            left = written
            while left:
                first = chunks[0]
                if len(first) <= left:
                    left -= len(first)
                    chunks.popleft()
                else:
                    chunks[0] = memoryview(first)[left:]
                    left = 0
            if written < offered:
                break  # the descriptor took less than offered: it is full for now
        return written_total


class Wakeup:
    """Wakes a thread that waits on a descriptor (poll, or the event loop's wait_readable) when work is
    queued for it from another thread. One byte per batch of work, not per item."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._signalled = False

    def wake(self) -> None:
        # Read after the work was queued: if the flag is still set, the waiter has not yet cleared it,
        # so it will see the work; if not, this byte wakes it. No wake-up is ever lost.
        if not self._signalled:
            self._signalled = True
            try:
                os.write(self.write_fd, b"\0")
            except (BlockingIOError, OSError):
                pass  # full (it is awake anyway) or closed (nobody waits any more)

    def clear(self) -> None:
        """Called by the waiter before it takes the queued work. The pipe is emptied before the flag is
        lowered: the other way round, a byte written in between would be read here with the flag left
        raised, and the next `wake` would write nothing (a lost wake-up)."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._signalled = False

    def close(self) -> None:
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
