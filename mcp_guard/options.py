"""The relay's options and their defaults: the one place they are written (cli.py's flags read them)."""

from __future__ import annotations

import signal
from dataclasses import dataclass

from . import oslayer

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
DEFAULT_DRAIN_TIMEOUT = 30.0  # seconds the client's EOF waits for owed answers
DEFAULT_SHUTDOWN_GRACE = 3.0  # seconds the child gets after its stdin closes, before SIGTERM

# Those of SIGINT, SIGTERM, SIGHUP and SIGBREAK this OS has (oslayer.py).
SIGNALS = oslayer.STOP_SIGNALS


@dataclass
class Options:
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    # The signals that end the session. One left out (SIGHUP, when the policy reloads on it) is not
    # the relay's: whoever wants it opens its own receiver (Interceptor.serve).
    stop_signals: tuple[signal.Signals, ...] = SIGNALS
