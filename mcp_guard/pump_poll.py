"""The poll pump (pump.py): one thread, both directions, non-blocking descriptors, the core inline."""

from __future__ import annotations

import logging
import os
import stat
from collections import deque
from collections.abc import Callable

from .framing import LineFramer, Oversized
from .oslayer import POLLERR, POLLHUP, POLLIN, POLLOUT, Wakeup, poller, set_blocking
from .pump import CoreCall, Post, PumpEvent
from .session import Effects, Session
from .streams import (
    OUTPUT_HARD_LIMIT,
    OUTPUT_HIGH_WATER,
    READ_CHUNK,
    READ_CHUNK_LARGE,
    OutputBuffer,
    StreamClosed,
    read_chunk,
)

log = logging.getLogger("mcp_guard")

_IN = POLLIN
_OUT = POLLOUT
_HUP = POLLHUP
_ERR = POLLERR


class _Source:
    __slots__ = ("fd", "framer", "eof")

    def __init__(self, fd: int, max_line: int) -> None:
        self.fd = fd
        self.framer = LineFramer(max_line)
        self.eof = False

    def read(self) -> list[bytes | Oversized] | None:
        """The lines of one read; None when there was nothing yet; sets `eof` at the end."""
        data = read_chunk(self.fd, READ_CHUNK_LARGE if self.framer.buffered > READ_CHUNK else READ_CHUNK)
        if data is None:
            return None
        if not data:
            self.eof = True
            return self.framer.end()
        return self.framer.feed(data)


class PollPump:
    def __init__(self, core: Session, client_in: int, client_out: int, upstream_in: int, upstream_out: int,
                 post: Post, max_line: int) -> None:
        self.core = core
        self._post = post
        # The child's descriptors are duplicated: these are ours alone, closed by this thread.
        self._client = _Source(client_in, max_line)
        self._upstream = _Source(os.dup(upstream_out), max_line)
        self._client_out_fd = client_out
        self._upstream_in_fd = os.dup(upstream_in)
        self._to_client = OutputBuffer()
        self._to_upstream = OutputBuffer()
        self._commands: deque[Callable[[], None]] = deque()
        self._wakeup = Wakeup(sockets=False)  # this pump runs only where pipes can be polled
        self._running = True
        self._flush_wanted = False
        self._client_hung_up = False
        self._client_is_file = _is_file(client_in)
        self.client_written = 0

    # --- called from other threads ------------------------------------------------------------------

    def submit(self, call: CoreCall) -> None:
        self._commands.append(lambda: self._apply(call(self.core)))
        self._wakeup.wake()

    def stop(self) -> None:
        self._commands.append(self._stop)
        self._wakeup.wake()

    def release_upstream_input(self) -> None:
        self._commands.append(self._release_upstream_input)
        self._wakeup.wake()

    def notify_when_flushed(self) -> None:
        self._commands.append(self._want_flush)
        self._wakeup.wake()

    # --- the pump's thread ----------------------------------------------------------------------------

    def run(self) -> None:
        client_in, client_out = self._client.fd, self._client_out_fd
        restore = {client_in: set_blocking(client_in, False)}
        if client_out not in restore:  # one descriptor both ways (a socket): its first state is the one
            restore[client_out] = set_blocking(client_out, False)
        set_blocking(self._upstream.fd, False)
        set_blocking(self._upstream_in_fd, False)
        poll = poller()
        interest: dict[int, int] = {}
        wake_fd = self._wakeup.read_fd
        idle_state: tuple[bool, bool] | None = None  # (client EOF, upstream EOF) of idle_interest
        idle_interest: dict[int, int] = {}
        try:
            while self._running:
                if self._to_client.size or self._to_upstream.size:
                    wanted = self._interest()
                else:
                    # Nothing waits to be written (the usual case between messages): the interest
                    # depends on the two EOFs only, so it is computed again only when one changes.
                    state = (self._client.eof, self._upstream.eof)
                    if state != idle_state:
                        idle_state, idle_interest = state, self._interest()
                    wanted = idle_interest
                if wanted is not interest and wanted != interest:
                    for fd, mask in wanted.items():
                        if interest.get(fd) != mask:
                            (poll.modify if fd in interest else poll.register)(fd, mask)
                    for fd in [fd for fd in interest if fd not in wanted]:
                        poll.unregister(fd)
                    interest = wanted
                for fd, events in poll.poll():
                    if fd == wake_fd:
                        self._run_commands()
                    elif fd == self._client.fd and not self._client.eof:
                        if interest.get(fd, 0) & _IN:
                            self._read_client()
                        elif events & (_HUP | _ERR) and not self._client_hung_up:
                            # Not read (its destination is full), but the client has closed its end:
                            # the drain's clock starts, or a child that never reads would keep the
                            # session alive for ever.
                            self._client_hung_up = True
                            self._post(PumpEvent.CLIENT_HUNG_UP)
                    elif fd == self._upstream.fd and not self._upstream.eof:
                        self._read_upstream()
                    # A writable destination is written below, with whatever this round produced.
                self._write()
        finally:
            for fd, was_blocking in restore.items():
                set_blocking(fd, was_blocking)
            for fd in (self._upstream.fd, self._upstream_in_fd):
                if fd >= 0:
                    os.close(fd)
            self._upstream_in_fd = -1

    def close(self) -> None:
        self._wakeup.close()

    def _interest(self) -> dict[int, int]:
        wanted: dict[int, int] = {self._wakeup.read_fd: _IN}
        to_client, to_upstream = self._to_client.size, self._to_upstream.size
        if not self._client.eof:
            if to_upstream < OUTPUT_HIGH_WATER and to_client < OUTPUT_HARD_LIMIT:
                wanted[self._client.fd] = _IN
            elif self._client_is_file and not self._client_hung_up:
                # A file on stdin has nothing more to come than what is in it: as good as hung up.
                self._client_hung_up = True
                self._post(PumpEvent.CLIENT_HUNG_UP)
            elif not self._client_hung_up:
                wanted[self._client.fd] = 0  # paused, but its hang-up is still reported
        if not self._upstream.eof and to_client < OUTPUT_HIGH_WATER:
            wanted[self._upstream.fd] = _IN
        if to_client:
            wanted[self._client_out_fd] = wanted.get(self._client_out_fd, 0) | _OUT
        if to_upstream and self._upstream_in_fd >= 0:
            wanted[self._upstream_in_fd] = wanted.get(self._upstream_in_fd, 0) | _OUT
        return wanted

    def _run_commands(self) -> None:
        self._wakeup.clear()
        commands = self._commands
        while commands:
            commands.popleft()()

    def _read_client(self) -> None:
        lines = self._client.read()
        if lines:
            self._apply(self.core.client_lines(lines))
        if self._client.eof:
            self._apply(self.core.client_closed())

    def _read_upstream(self) -> None:
        lines = self._upstream.read()
        if lines:
            self._apply(self.core.upstream_lines(lines))
        if self._upstream.eof:
            self._post(PumpEvent.UPSTREAM_EOF)

    def _apply(self, fx: Effects) -> None:
        if fx.to_client:
            self._to_client.add(fx.to_client)
        if fx.to_upstream:
            self._to_upstream.add(fx.to_upstream)
        if fx.for_loop:
            self._post(fx)

    def _write(self) -> None:
        if self._to_upstream and self._upstream_in_fd >= 0:
            try:
                self._to_upstream.write_to(self._upstream_in_fd)
            except StreamClosed:
                # The child stopped reading; its stdout EOF ends the session and answers what is pending.
                log.info("the upstream server closed its input")
        if self._to_client:
            try:
                self.client_written += self._to_client.write_to(self._client_out_fd)
            except StreamClosed:
                self._apply(self.core.client_output_closed())
        if self._flush_wanted and not self._to_client:
            self._flush_wanted = False
            self._post(PumpEvent.FLUSHED)

    def _want_flush(self) -> None:
        self._flush_wanted = True

    def _release_upstream_input(self) -> None:
        self._to_upstream.close()
        if self._upstream_in_fd >= 0:
            os.close(self._upstream_in_fd)
            self._upstream_in_fd = -1

    def _stop(self) -> None:
        self._running = False


def _is_file(fd: int) -> bool:
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        return False
