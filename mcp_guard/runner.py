"""Wires a relay to our own stdin/stdout and a child process. The CLI calls this; tests may too."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import anyio

from . import oslayer
from .exits import Ending, ExitReason, exit_status
from .relay import Interceptor, Options, Relay
from .upstream import Upstream

log = logging.getLogger("mcp_guard")


def run_relay(command: Sequence[str], interceptor: Interceptor | None, options: Options,
              stdin_fd: int = 0, stdout_fd: int = 1, started: Callable[[], None] | None = None,
              ended: Callable[[int, str], None] | None = None) -> int:
    """Start `command` and relay between (stdin_fd, stdout_fd) and it; the exit status. Raises StartError.
    `started()` is called once the child runs; `ended(status, how)` when the session is over.

    An exception nothing expected (a bug) is logged and becomes an exit status (exits.INTERNAL_ERROR):
    the relay has stopped the child by then, and the caller ends the process with os._exit, which does
    not wait for a thread still blocked on a peer that is gone."""
    # From before the child starts until the relay listens for them, signals are noted, not fatal: a
    # SIGTERM in that window would otherwise kill mcp-guard and leave what the child started behind.
    with oslayer.signals_noted(oslayer.STOP_SIGNALS) as early:
        oslayer.binary_mode(stdin_fd, stdout_fd)
        upstream = Upstream.start(command)
        if started is not None:
            started()
        relay = Relay(stdin_fd, stdout_fd, upstream, interceptor, options)
        # A signal that does not end the session (SIGHUP, when it reloads the policy) is not replayed.
        relay.early_signals = [signum for signum in early if signum in options.stop_signals]
        try:
            status = anyio.run(relay.run)
            how = relay.ended_by or "the session ended"
        except Exception:
            log.critical("mcp-guard failed (a bug: please report it); the session is over", exc_info=True)
            ending = Ending(ExitReason.INTERNAL_ERROR)
            status, how = exit_status(ending), ending.how
            upstream.kill_group()  # stopped already on every path but a broken one
        if ended is not None:
            ended(status, how)
        return status
