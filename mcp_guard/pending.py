"""The pending-request table: the client's requests mcp-guard owes an answer for, by normalised id.

Used by the session core only (session.py), from one thread. A request is either reserved (a deferred
decision is being made: the upstream has never seen it, so no answer can match it) or forwarded (its
answer is awaited). Long-lived streams (LONG_LIVED_METHODS) are pending like any other request but are
not owed: nothing waits for them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

# Requests that by design are not answered until the session (or the stream) ends: 2026-07-28's
# subscriptions/listen, whose answer is a stream of notifications. The drain does not wait for them, and
# mcp-guard never answers them with an error: the end of the session is how a stdio client learns its
# streams ended (the spec: a subscription ends when its transport closes).
LONG_LIVED_METHODS = frozenset({"subscriptions/listen"})

# Ids of cancelled requests remembered, so that a late answer to one is recognised (and dropped quietly)
# and the first answer under a reused id is also checked as the cancelled request's would have been.
CANCELLED_MEMORY = 4096


@dataclass(slots=True, eq=False)
class Pending:
    id: Any
    method: str
    watch: Any = None
    forwarded: bool = True
    stream: bool = False
    # The watches of a cancelled request that had this id before: the first answer under the id may be
    # that request's late answer, so it is shown to them too (a listing must be filtered whoever it is for).
    stale_watches: tuple[Any, ...] = ()
    # A reserved request's deferred decision (session.Deferred), to stop when the request is cancelled.
    decision: Any = None

    @property
    def watches(self) -> tuple[Any, ...]:
        return self.stale_watches + ((self.watch,) if self.watch is not None else ())


class PendingTable:
    __slots__ = ("_entries", "_streams", "_inspected", "_cancelled")

    def __init__(self) -> None:
        self._entries: dict[str, Pending] = {}
        self._streams = 0  # entries that are long-lived streams
        self._inspected = 0  # forwarded entries whose answer an interceptor must see
        self._cancelled: OrderedDict[str, tuple[Any, ...]] = OrderedDict()  # id key -> its watches

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def owed(self) -> int:
        """Requests still owed an answer (streams are not: nothing waits for them)."""
        return len(self._entries) - self._streams

    @property
    def inspecting(self) -> bool:
        """Whether any awaited answer must be shown to the interceptor."""
        return self._inspected > 0

    def reserve(self, key: str, request_id: Any, method: str) -> Pending:
        """Hold an id while a deferred decision is made: a second request with it is refused meanwhile."""
        entry = Pending(request_id, method, forwarded=False)
        self._entries[key] = entry
        return entry

    def is_reserved(self, key: str, entry: Pending) -> bool:
        return self._entries.get(key) is entry

    def forward(self, key: str, request_id: Any, method: str, watch: Any) -> Pending:
        """The request goes upstream now (any reservation of its id is replaced)."""
        self._pop(key)
        # An id the client reused after cancelling the request that had it: the first answer under it
        # may be that request's late answer (the memory is popped: at most one such answer).
        stale = self._cancelled.pop(key, ()) if self._cancelled else ()
        entry = Pending(request_id, method, watch, stream=method in LONG_LIVED_METHODS, stale_watches=stale)
        self._entries[key] = entry
        if entry.stream:
            self._streams += 1
        if watch is not None or stale:
            self._inspected += 1
        return entry

    def take_answer(self, key: str | None) -> Pending | None:
        """The forwarded request an answer under `key` belongs to, off the table; None when there is none
        (a reserved id, a second answer, an id never sent)."""
        entry = self._entries.get(key) if key is not None else None
        if entry is None or not entry.forwarded:
            return None
        return self._pop(key)  # type: ignore[arg-type]

    def lost(self, key: str | None) -> Pending | None:
        """A forwarded request whose answer will never come (it could not be passed on), off the table."""
        return self.take_answer(key)

    def release(self, key: str) -> Pending | None:
        """Take any entry off the table (a reserved one whose decision is settled, say)."""
        return self._pop(key)

    def cancelled(self, key: str) -> Pending | None:
        """The client gave up on a request: it leaves the table, and if it was forwarded its id is
        remembered so that its late answer is recognised."""
        entry = self._pop(key)
        if entry is None or not entry.forwarded:
            return entry
        if len(self._cancelled) >= CANCELLED_MEMORY:
            self._cancelled.popitem(last=False)
        self._cancelled[key] = entry.watches
        return entry

    def late_answer(self, key: str | None) -> bool:
        """Whether an unmatched answer is the late answer to a cancelled request (forgotten once seen)."""
        return key is not None and self._cancelled.pop(key, None) is not None

    def stream(self, key: str | None) -> Pending | None:
        """A long-lived stream the server ended, off the table; None when `key` names no stream."""
        entry = self._entries.get(key) if key is not None else None
        if entry is None or not entry.stream:
            return None
        return self._pop(key)  # type: ignore[arg-type]

    def drain_all(self) -> list[Pending]:
        """Every owed request, off the table (streams stay: they end with the session)."""
        owed = [key for key, entry in self._entries.items() if not entry.stream]
        return [entry for entry in map(self._pop, owed) if entry is not None]

    def _pop(self, key: str) -> Pending | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            if entry.stream:
                self._streams -= 1
            if entry.forwarded and (entry.watch is not None or entry.stale_watches):
                self._inspected -= 1
        return entry
