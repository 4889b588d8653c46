"""The relay: moves lines between the client and the upstream server, and knows no policy.

It is four modules (docs/relay.md, "The shape of the relay"): the sans-I/O session core (session.py,
with the pending table in pending.py and the exit reasons in exits.py), the pumps that move bytes
(pump.py, pump_threads.py, over framing.py and streams.py), and the session's life on the event loop
(lifecycle.py). This module is the name the rest of mcp-guard imports them by.
"""

from __future__ import annotations

from .actions import ClientAction, ClientChannel, Defer, Drop, Forward, Interceptor, PassThrough, Reply
from .lifecycle import Relay
from .options import SIGNALS, Options
from .pending import CANCELLED_MEMORY, LONG_LIVED_METHODS
from .session import LARGE_ANSWER_BYTES

__all__ = ["CANCELLED_MEMORY", "LARGE_ANSWER_BYTES", "LONG_LIVED_METHODS", "SIGNALS", "ClientAction",
           "ClientChannel", "Defer", "Drop", "Forward", "Interceptor", "Options", "PassThrough", "Relay", "Reply"]
