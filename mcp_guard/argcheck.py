"""Checking a call's arguments against its rule's schema, off the relay's pump and within a budget.

The engine's argument check is pure but not cheap: its cost grows with the arguments and the schema
(`uniqueItems` over objects compares every pair of items: 8,000 objects, about a minute). Run on the
relay's pump, one small message would stop every other message, and signals, for that long. So the
guard answers such a call with `Defer`: the check runs in a worker thread, and the rest of the decision
(limits, charges, the audit record) is made afterwards, on the relay's pump thread like every decision.

Bounds, all from the policy's `limits` (docs/policy.md):

- a call whose message is larger than `max_argument_bytes` is refused without being checked;
- a check that takes longer than `argument_check_seconds` is given up and the call refused. A check that
  is running Python code (jsonschema's, which is where the time goes) stops itself when the budget is
  spent: a trace hook on the worker thread raises at its next function call. One that is inside C code
  (a regular expression that backtracks) cannot be stopped: its thread is abandoned and finishes on its
  own. At most `CHECK_THREADS` checks run at once, abandoned ones included; a call that finds them all
  busy for its whole budget is refused ("could not be checked in time").

Deferred calls of one rule are settled in the order they arrived, whatever order their checks finish
in, so rate limits and budgets are charged and refused exactly as if each had been decided at once.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import anyio

from .actions import ClientAction, Defer
from .engine import argument_problem
from .policy import Policy, Rule

# Checks running at once, abandoned ones included (each may hold a CPU until it ends).
CHECK_THREADS = 2


class _OverBudget(BaseException):
    """Raised inside a check whose budget is spent. A BaseException, so no `except Exception` in the
    validator swallows it."""


class _Turn:
    """One deferred call's place in its rule's line. Created on the pump; waited for and set on the event
    loop's thread only (an anyio.Event cannot be made in a worker thread)."""

    __slots__ = ("_done", "_event")

    def __init__(self) -> None:
        self._done = False
        self._event: anyio.Event | None = None

    def set(self) -> None:
        self._done = True
        if self._event is not None:
            self._event.set()

    async def wait(self) -> None:
        if self._done:
            return
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()


def _traced(check: Callable[[], str | None], stop: list[bool]) -> str | None:
    """Run `check` in this thread, stopping it (with _OverBudget) at the first Python function call after
    `stop[0]` is set. Only calls are traced (not lines); even so the check costs three to four times
    what it costs untraced, which matters only for checks that are slow anyway."""

    def tracer(frame: FrameType, event: str, arg: Any) -> None:
        if stop[0]:
            raise _OverBudget
        return None

    sys.settrace(tracer)
    try:
        return check()
    finally:
        sys.settrace(None)


class ArgumentChecks:
    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._running = 0  # check threads alive, abandoned ones included
        self._running_lock = threading.Lock()
        self._last_turn: dict[tuple[str, str], _Turn] = {}  # by rule (limits are per rule)

    def defer(self, rule: Rule, arguments: Any, size: int,
              settle: Callable[[str | None], ClientAction]) -> Defer:
        """A `Defer` whose decision checks `arguments` (from a message of `size` bytes) and whose settle
        step is `settle(problem)`. Called on the relay's pump thread, in the order calls arrive."""
        line = (rule.key, rule.origin)
        previous = self._last_turn.get(line)
        mine = self._last_turn[line] = _Turn()

        async def decision(channel: Any) -> str | None:
            try:
                problem = await self.check(rule, arguments, size)
                if previous is not None:
                    await previous.wait()  # the calls before this one are settled first
                return problem
            finally:
                # The relay settles this call right after this returns, before any other task runs, so
                # the next call in line is settled after this one (or this one was not wanted).
                mine.set()

        return Defer(decision, settle)

    async def check(self, rule: Rule, arguments: Any, size: int) -> str | None:
        """The argument problem, or None; a refusal reason when the check is over a limit."""
        limits = self.policy.limits
        if size > limits.max_argument_bytes:
            return (f"the arguments are too large to check: the call is {size} bytes, more than "
                    f"limits.max_argument_bytes ({limits.max_argument_bytes})")
        budget = limits.argument_check_seconds
        too_costly = (f"the arguments are too costly to check (more than {budget:g} s, "
                      "limits.argument_check_seconds)")
        stop = [False]  # set when the budget is spent: the check stops at its next function call
        try:
            with anyio.move_on_after(budget):
                while True:
                    while self._running >= CHECK_THREADS:
                        await anyio.sleep(0.01)
                    verdict = await anyio.to_thread.run_sync(self._run, rule, arguments, stop,
                                                             abandon_on_cancel=True)
                    if verdict is not _BUSY:
                        return too_costly if verdict is _TOO_COSTLY else verdict  # type: ignore[return-value]
        finally:
            stop[0] = True
        if self._running >= CHECK_THREADS:
            return (f"the arguments could not be checked in time: {CHECK_THREADS} argument checks are "
                    "still running")
        return too_costly

    def _run(self, rule: Rule, arguments: Any, stop: list[bool]) -> object:
        with self._running_lock:
            if self._running >= CHECK_THREADS:
                return _BUSY
            self._running += 1
        try:
            self.policy.validator(rule)  # built (and jsonschema imported) outside the traced part
            return _traced(lambda: argument_problem(self.policy, rule, arguments), stop)
        except _OverBudget:
            return _TOO_COSTLY
        finally:
            with self._running_lock:
                self._running -= 1


_BUSY = object()
_TOO_COSTLY = object()
