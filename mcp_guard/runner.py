"""Wires a relay to our own stdin/stdout and a child process. The CLI calls this; tests may too."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio

from . import oslayer
from .relay import Interceptor, Options, Relay
from .upstream import Upstream


def run_relay(command: Sequence[str], interceptor: Interceptor | None, options: Options,
              stdin_fd: int = 0, stdout_fd: int = 1, started: Callable[[], None] | None = None,
              ended: Callable[[int, str], None] | None = None) -> int:
    """Start `command` and relay between (stdin_fd, stdout_fd) and it; the exit status. Raises StartError.
    `started()` is called once the child runs; `ended(status, how)` when the session is over.

    The pump threads may still be blocked reading a peer that is gone when this returns: end the
    process with os._exit rather than waiting for them."""
    # From before the child starts until the relay listens for them, signals are noted, not fatal: a
    # SIGTERM in that window would otherwise kill mcp-guard and leave what the child started behind.
    with oslayer.signals_noted(oslayer.STOP_SIGNALS) as early:
        oslayer.binary_mode(stdin_fd, stdout_fd)
        upstream = Upstream.start(command)
        if started is not None:
            started()
        relay = Relay(stdin_fd, stdout_fd, upstream, interceptor, options)
        relay.early_signals = early
        status = anyio.run(relay.run)
        if ended is not None:
            ended(status, relay.ended_by or "the session ended")
        return status
