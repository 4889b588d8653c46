"""How a relay session ended, and the one function that turns it into mcp-guard's exit status.

The table in docs/relay.md ("Shutdown and exit status") is this module, in words.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass


class ExitReason(enum.Enum):
    CLIENT_CLOSED = "the client closed its input"  # and every request was answered
    # ... but answers were still owed at --drain-timeout (they got -32001): not a success.
    DRAIN_TIMED_OUT = "the client closed its input, and the drain timed out"
    CLIENT_OUTPUT_CLOSED = "the client closed its output"
    UPSTREAM_EXITED = "the upstream server exited"
    UPSTREAM_CLOSED_OUTPUT = "the upstream server closed its output"
    SIGNAL = "mcp-guard received a signal"
    INTERNAL_ERROR = "mcp-guard failed"  # an exception nothing expected: a bug


# EX_SOFTWARE (sysexits.h): an internal software error.
INTERNAL_ERROR_STATUS = 70


@dataclass(frozen=True, slots=True)
class Ending:
    reason: ExitReason
    child_status: int | None = None  # UPSTREAM_EXITED: the child's shell-style status
    signum: int | None = None  # SIGNAL
    unanswered: int = 0  # requests that got an error instead of their answer

    @property
    def how(self) -> str:
        """In words, for the log and the audit's end record."""
        if self.reason is ExitReason.SIGNAL and self.signum is not None:
            return f"mcp-guard received {signal_name(self.signum)}"
        if self.reason is ExitReason.UPSTREAM_EXITED:
            return f"the upstream server exited with status {self.child_status}"
        return str(self.reason.value)


def exit_status(ending: Ending) -> int:
    reason = ending.reason
    if reason is ExitReason.CLIENT_CLOSED or reason is ExitReason.CLIENT_OUTPUT_CLOSED:
        return 0
    if reason is ExitReason.UPSTREAM_EXITED:
        status = ending.child_status or 0
        # A child that exits 0 with work unanswered has still failed the client.
        return status if status != 0 else (1 if ending.unanswered else 0)
    if reason is ExitReason.SIGNAL:
        return 128 + (ending.signum or 0)
    if reason is ExitReason.INTERNAL_ERROR:
        return INTERNAL_ERROR_STATUS
    return 1  # DRAIN_TIMED_OUT (the client was told -32001 for what was owed), UPSTREAM_CLOSED_OUTPUT


def signal_name(signum: int) -> str:
    # signal.Signals names the signals of whichever OS this is; no signal number is named here (that is
    # oslayer.py's), and the sans-I/O core that imports this module imports no platform layer.
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
