"""The relay's pumps: read, frame, call the session core, write what it says. Nothing else.

Two implementations behind one interface (`Pump`), chosen by `pump_kind()`:

- "poll" (pump_poll.py, POSIX): one thread polls both directions on non-blocking descriptors, reads big chunks,
  runs the core inline and writes through bounded per-destination buffers. A destination that does not
  drain stops the reading of the sources that feed it (back-pressure); the other direction goes on.
- "threads" (pump_threads.py; Windows, where pipes cannot be polled, and Linux in forced fallback,
  MCP_GUARD_FORCE_FALLBACK=1, which oslayer.py reads): blocking reads and writes
  in threads of their own, the core run by one thread fed from a queue.

Either way the core is called from one thread only (the pump's `run` thread), and what the event loop
wants of it (a deferred decision settled, mcp-guard's own requests) is queued with `submit` and a
wake-up; what the core wants of the loop is posted back the same way (`post`). Neither side waits for
the other. The pump owns duplicates of the child's descriptors and closes them itself, so no thread
ever touches a descriptor number that someone else closed (and the kernel may have reused).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from . import oslayer
from .session import Effects, Session


class PumpEvent(enum.Enum):
    UPSTREAM_EOF = "the upstream's output ended"
    FLUSHED = "everything queued for the client was written (or the client is gone)"
    CLIENT_HUNG_UP = "the client closed its input, which is not being read (its destination is full)"


CoreCall = Callable[[Session], Effects]
Post = Callable[["Effects | PumpEvent"], None]


class Pump(Protocol):
    def submit(self, call: CoreCall) -> None:
        """Run `call(core)` on the pump's thread, after what was submitted before; apply its effects."""

    def run(self) -> None:
        """The pump's thread: until `stop`."""

    def stop(self) -> None: ...

    def release_upstream_input(self) -> None:
        """Write nothing more to the child and let go of its stdin (so it sees EOF once the owner closes
        the original)."""

    def notify_when_flushed(self) -> None:
        """Post FLUSHED once nothing is left to write to the client (at once if nothing is)."""

    def close(self) -> None:
        """Let go of what the pump holds, once `run` has returned and nothing will `submit` any more
        (a descriptor closed earlier could be reused and then written to by a late wake-up)."""

    @property
    def client_written(self) -> int:
        """Bytes written to the client so far (read from other threads to see progress)."""


def pump_kind() -> str:
    """"poll" where pipes can be polled (POSIX), "threads" elsewhere (Windows) and in forced fallback."""
    return "poll" if oslayer.can_poll() and not oslayer.force_fallback() else "threads"

