"""Newline-delimited framing over raw file descriptors, driven by anyio.

Measured, not guessed: anyio's process and file streams cost a thread hop or an asyncio StreamReader per
message. Non-blocking file descriptors with `anyio.wait_readable`/`wait_writable` keep the pass-through
path at one read and one write system call per message, and never block the event loop, so one
direction can never hold up the other.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

_SMALL_READ = 64 * 1024
_LARGE_READ = 1024 * 1024
_HEAD_BYTES = 512


class StreamClosed(Exception):
    """The other end of a file descriptor went away (EOF on write, EPIPE)."""


@dataclass(slots=True)
class Oversized:
    """A line longer than the limit. Only its first bytes were kept (to find its id); the rest was
    skipped without ever being held in memory whole."""

    size: int
    head: bytes


def open_nonblocking(fd: int) -> tuple[int, Callable[[], None]]:
    """Return a non-blocking descriptor for `fd` and a function that undoes what was done.

    Our stdin/stdout may be shared with the process that started us (a shell, a terminal), and
    O_NONBLOCK lives on the shared open file description. So for a pipe we open a fresh description of
    the same pipe through /proc; elsewhere we set the flag and restore it at exit.
    """
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return fd, lambda: None
    if stat.S_ISFIFO(mode):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        try:
            new_fd = os.open(f"/proc/self/fd/{fd}", flags | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            pass
        else:
            return new_fd, lambda: _close_quietly(new_fd)
    old = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not old & os.O_NONBLOCK:
        fcntl.fcntl(fd, fcntl.F_SETFL, old | os.O_NONBLOCK)
    return fd, lambda: _restore_flags(fd, old)


def _restore_flags(fd: int, flags: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    except OSError:
        pass


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


def grow_pipe(fd: int, size: int = 1024 * 1024) -> None:
    """Ask Linux for a bigger pipe buffer: fewer wake-ups for multi-megabyte messages."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", 1031)
    try:
        fcntl.fcntl(fd, set_size, size)
    except OSError:
        pass


async def _read_some(fd: int, size: int) -> bytes:
    while True:
        try:
            return os.read(fd, size)
        except BlockingIOError:
            await anyio.wait_readable(fd)
        except InterruptedError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.ECONNRESET, errno.EBADF):
                return b""
            raise


async def read_lines(
    fd: int,
    on_line: Callable[[bytes | Oversized], Awaitable[None]],
    max_line: int,
) -> None:
    """Call `on_line` for every newline-terminated line read from non-blocking `fd`, until EOF.

    A final line without a newline is delivered too. There is no limit on line length below
    `max_line`; longer lines arrive as `Oversized`.
    """
    parts: list[bytes] = []
    parts_len = 0
    skipping = False
    skipped = 0
    head = b""
    while True:
        data = await _read_some(fd, _LARGE_READ if parts_len > _SMALL_READ else _SMALL_READ)
        if not data:
            break
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                rest = data[start:] if start else data
                if not rest:
                    break
                if skipping:
                    skipped += len(rest)
                else:
                    parts.append(rest)
                    parts_len += len(rest)
                    if parts_len > max_line:
                        head = b"".join(parts)[:_HEAD_BYTES]
                        skipping, skipped = True, parts_len
                        parts, parts_len = [], 0
                break
            piece = data[start:nl]
            start = nl + 1
            if skipping:
                size = skipped + len(piece)
                skipping, skipped = False, 0
                await on_line(Oversized(size, head))
                continue
            if parts:
                parts.append(piece)
                line = b"".join(parts)
                parts, parts_len = [], 0
            else:
                line = piece
            if len(line) > max_line:
                await on_line(Oversized(len(line), line[:_HEAD_BYTES]))
            else:
                await on_line(line)
    if skipping:
        await on_line(Oversized(skipped, head))
    elif parts:
        await on_line(b"".join(parts))


class LineWriter:
    """Writes whole lines to a non-blocking descriptor. Several tasks may write (relayed messages and
    mcp-guard's own answers share the client's stdout), so a line is never interleaved with another."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.closed = False
        self._lock = anyio.Lock(fast_acquire=True)

    async def write_line(self, line: bytes) -> None:
        if self.closed:
            raise StreamClosed
        async with self._lock:
            try:
                written = os.writev(self.fd, (line, b"\n"))
            except BlockingIOError:
                written = 0
            except (BrokenPipeError, ConnectionResetError) as exc:
                self.closed = True
                raise StreamClosed from exc
            total = len(line) + 1
            if written < total:
                await self._write_rest(memoryview(line + b"\n")[written:])

    async def _write_rest(self, view: memoryview) -> None:
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                await anyio.wait_writable(self.fd)
                continue
            except InterruptedError:
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                self.closed = True
                raise StreamClosed from exc
            view = view[n:]
