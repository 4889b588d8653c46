"""Limit stores: where user- and global-scoped limits are kept, behind one small interface.

The guard asks a store one question, "admit and charge these?" (`LimitStore.admit`), and gives a charge
back with `refund`. Admission and charge are one atomic step in the store, so many mcp-guard processes
sharing it never let more through than the limit. Windows are sliding windows measured with the store's
clock (the wall clock of this machine for SQLite, the server's TIME for Redis), never a session's.

Stores: `memory` (one process; for tests), `sqlite:///path` (the default: a file in the user's state
directory, WAL mode, `BEGIN IMMEDIATE` transactions), `redis://` and `rediss://` (mcp_guard.redisstore).
A store that cannot answer raises StoreUnavailable; the caller decides what that means (fail closed).
"""

from __future__ import annotations

import math
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any, Protocol
from urllib.parse import urlsplit

from .engine import BUCKETS_PER_WINDOW, EXACT_ENTRIES, LimitUsage

STATE_ENV = "MCP_GUARD_STATE"
SCHEMES = ("sqlite", "redis", "rediss", "memory")


class StoreURLError(ValueError):
    """A state URL that names no usable store (unknown scheme, no host, a path that cannot be written)."""


class StoreUnavailable(Exception):
    """The store could not answer (unreachable, locked for too long, corrupt)."""


@dataclass(frozen=True, slots=True)
class StoreCharge:
    """What one call takes from one limit kept in a store, and that limit's terms."""

    key: str
    amount: float
    max: float
    window: float


@dataclass(frozen=True, slots=True)
class Refused:
    """The charge at `index` does not fit: `used` is taken inside its window, `retry_after` seconds until
    it would (None when it never can)."""

    index: int
    used: float
    retry_after: float | None


@dataclass(frozen=True, slots=True)
class Admitted:
    """Every charge was taken; `tokens` give them back (`LimitStore.refund`)."""

    tokens: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit as a store holds it now (for `mcp-guard status`)."""

    key: str
    max: float
    window: float
    used: float
    frees_in: float | None  # seconds until the oldest charge inside the window leaves it


class LimitStore(Protocol):
    url: str

    def admit(self, charges: tuple[StoreCharge, ...]) -> Admitted | Refused: ...

    def refund(self, tokens: tuple[Any, ...]) -> None: ...

    def counters(self, keys: tuple[str, ...] | None = None) -> list[Counter]: ...

    def reset(self, keys: tuple[str, ...]) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Location:
    scheme: str
    path: str = ""  # sqlite
    host: str = ""  # redis
    port: int = 6379
    db: int = 0
    url: str = ""


def default_path(environ: Mapping[str, str] | None = None, platform: str | None = None) -> PurePath:
    """The per-user state file: $XDG_STATE_HOME/mcp-guard/state.db (~/.local/state on Linux), on macOS
    ~/Library/Application Support/mcp-guard/state.db, on Windows %LOCALAPPDATA%\\mcp-guard\\state.db."""
    environ = os.environ if environ is None else environ
    platform = platform or sys.platform
    if platform == "win32":
        home = PureWindowsPath(environ.get("USERPROFILE") or Path.home())
        base: PurePath = PureWindowsPath(environ.get("LOCALAPPDATA") or home / "AppData" / "Local")
    elif platform == "darwin":
        base = Path(environ.get("HOME") or Path.home()) / "Library" / "Application Support"
    else:
        state = environ.get("XDG_STATE_HOME") or ""
        base = Path(state) if os.path.isabs(state) else Path(environ.get("HOME") or Path.home()) / ".local" / "state"
    return base / "mcp-guard" / "state.db"


def default_url(environ: Mapping[str, str] | None = None, platform: str | None = None) -> str:
    """sqlite:///home/u/.local/state/mcp-guard/state.db; on Windows sqlite:///C:/Users/u/AppData/Local/..."""
    return "sqlite:///" + default_path(environ, platform).as_posix().lstrip("/")


def parse_url(url: str) -> Location:
    """Where a state URL points, without touching it. Raises StoreURLError."""
    if url == "memory" or url == "memory://":
        return Location("memory", url="memory://")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise StoreURLError(f"the state URL {url!r} has an unknown scheme; use sqlite:///path/to/state.db, "
                            "redis://host:port/db or rediss://host:port/db")
    if scheme == "sqlite":
        if parts.netloc:
            raise StoreURLError(f"the state URL {url!r} names a host; a SQLite file is sqlite:///path "
                                "(three slashes, then an absolute path)")
        if not parts.path or parts.path == "/":
            raise StoreURLError(f"the state URL {url!r} names no file")
        path = parts.path
        if os.name == "nt" and len(path) > 2 and path[0] == "/" and path[2] == ":":
            path = path[1:]  # sqlite:///C:/Users/... names C:/Users/...
        return Location("sqlite", path=path, url=url)
    if scheme == "memory":
        return Location("memory", url="memory://")
    if not parts.hostname:
        raise StoreURLError(f"the state URL {url!r} names no host")
    try:
        port = parts.port or 6379
    except ValueError:
        raise StoreURLError(f"the state URL {url!r} has an invalid port") from None
    db_text = parts.path.lstrip("/") or "0"
    if not db_text.isdigit():
        raise StoreURLError(f"the state URL {url!r} names the database {db_text!r}; a Redis database is a number")
    return Location(scheme, host=parts.hostname, port=port, db=int(db_text), url=url)


def open_store(url: str) -> LimitStore:
    """The store a URL names, checked enough to refuse before anything starts: a file that cannot be
    written, a scheme without its client. Raises StoreURLError. A store that is merely down (a Redis that
    is not up yet, a corrupt file) opens and fails closed at each call until it answers."""
    location = parse_url(url)
    if location.scheme == "memory":
        return MemoryStore()
    if location.scheme == "sqlite":
        return SqliteStore.open(location.path, url)
    from .redisstore import RedisStore

    store: LimitStore = RedisStore.open(location)
    return store


def _retry_after(entries: list[tuple[float, float]], total: float, room: float, now: float,
                 window: float) -> float | None:
    """Seconds until at most `room` is left inside the window, given its (last, amount) oldest first."""
    if room < 0:
        return None
    taken = 0.0
    for last, amount in entries:
        taken += amount
        if total - taken <= room:
            return max(0.0, last + window - now)
    return max(0.0, entries[-1][0] + window - now) if entries else 0.0  # float sums a hair short


class MemoryStore:
    """One process's store, with the session scope's own bookkeeping (engine.LimitUsage). For tests, and
    for `memory://` (a store that dies with the process)."""

    url = "memory://"

    def __init__(self, clock: Any = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._usage: dict[str, tuple[LimitUsage, float, float]] = {}

    def _entries(self, charge: StoreCharge, now: float) -> LimitUsage:
        held = self._usage.get(charge.key)
        if held is None or held[2] != charge.window:
            usage = LimitUsage(charge.window)
        else:
            usage = held[0]
        self._usage[charge.key] = (usage, charge.max, charge.window)
        usage.forget(now, charge.window)
        return usage

    def admit(self, charges: tuple[StoreCharge, ...]) -> Admitted | Refused:
        with self._lock:
            now = self.clock()
            usages = [self._entries(charge, now) for charge in charges]
            for index, (charge, usage) in enumerate(zip(charges, usages, strict=True)):
                if usage.total + charge.amount > charge.max:
                    room = charge.max - charge.amount
                    retry = usage.retry_after(room, now, charge.window) if room >= 0 else None
                    return Refused(index, usage.total, retry)
            for charge, usage in zip(charges, usages, strict=True):
                usage.add(now, charge.amount)
            return Admitted(tuple((charge.key, now, charge.amount) for charge in charges))

    def refund(self, tokens: tuple[Any, ...]) -> None:
        with self._lock:
            for key, at, amount in tokens:
                held = self._usage.get(key)
                if held is not None:
                    held[0].remove(at, amount)

    def counters(self, keys: tuple[str, ...] | None = None) -> list[Counter]:
        with self._lock:
            now = self.clock()
            found = []
            for key, (usage, maximum, window) in sorted(self._usage.items()):
                if keys is not None and key not in keys:
                    continue
                usage.forget(now, window)
                frees = usage.last[usage.head] + window - now if len(usage) else None
                found.append(Counter(key, maximum, window, usage.total, frees))
            return found

    def reset(self, keys: tuple[str, ...]) -> int:
        with self._lock:
            return sum(1 for key in keys if self._usage.pop(key, None) is not None)

    def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS limits (
    key TEXT PRIMARY KEY, max REAL NOT NULL, window REAL NOT NULL,
    total REAL NOT NULL DEFAULT 0, entries INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS charges (
    id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL,
    first REAL NOT NULL, last REAL NOT NULL, amount REAL NOT NULL);
CREATE INDEX IF NOT EXISTS charges_by_key ON charges (key, last);
"""


class SqliteStore:
    """Counters in a SQLite file shared by every process that opens it. Each admission is one
    `BEGIN IMMEDIATE` transaction (the write lock is taken before reading, so two processes cannot both
    read "one left" and both take it); WAL lets readers run meanwhile. One row per charge while a limit
    holds fewer than EXACT_ENTRIES inside its window, then charges within the same 1/BUCKETS_PER_WINDOW
    of the window share a row, as in the session scope. A connection that failed is dropped and opened
    again at the next call, so a file that comes back (or is replaced) is used without a restart."""

    def __init__(self, path: str, url: str, clock: Any = time.time) -> None:
        self.path, self.url, self.clock = path, url, clock
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None  # the file the connection has open (device, inode)

    @classmethod
    def open(cls, path: str, url: str) -> SqliteStore:
        store = cls(path, url)
        try:
            # Private when mcp-guard creates it: the counters name the user's policies and tools.
            Path(path).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreURLError(f"cannot create the directory of the state file {path}: "
                                f"{exc.strerror or exc}") from None
        try:
            store._connect()
            store._write_probe()
        except sqlite3.DatabaseError as exc:
            store.close()
            if _unusable(exc):
                raise StoreURLError(f"cannot write the state file {path}: {exc}") from None
            # A corrupt file: start anyway and refuse the calls it would decide (fail closed), until it
            # is repaired or removed.
        return store

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None and self._identity != _identity(self.path):
            # The file was removed or replaced (an operator's reset, a restore): an open connection would
            # keep counting in the old one, unseen by every process that opens the path from now on.
            self._drop()
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            try:
                connection.execute("PRAGMA busy_timeout = 10000")
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
                connection.executescript(_SCHEMA)
            except BaseException:
                connection.close()
                raise
            self._connection = connection
            self._identity = _identity(self.path)
        return self._connection

    def _write_probe(self) -> None:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("COMMIT")

    def _transaction(self, work: Any) -> Any:
        with self._lock:
            try:
                connection = self._connect()
                connection.execute("BEGIN IMMEDIATE")
                try:
                    result = work(connection)
                except BaseException:
                    connection.execute("ROLLBACK")
                    raise
                connection.execute("COMMIT")
                return result
            except sqlite3.Error as exc:
                self._drop()
                raise StoreUnavailable(f"{self.path}: {exc}") from None

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.close()
            except sqlite3.Error:
                pass
            self._connection = None

    def admit(self, charges: tuple[StoreCharge, ...]) -> Admitted | Refused:
        # A running total per limit (limits.total, limits.entries) keeps an admission O(expired + log n):
        # summing a limit's rows at every call would cost O(n), up to ~2,048 rows.
        def work(db: sqlite3.Connection) -> Admitted | Refused:
            now = self.clock()
            seen: list[tuple[int, int | None, float | None]] = []
            for index, charge in enumerate(charges):
                total, count = _forget(db, charge.key, now - charge.window)
                if total + charge.amount > charge.max:
                    entries = db.execute("SELECT last, amount FROM charges WHERE key = ? ORDER BY last, id",
                                         (charge.key,)).fetchall()
                    return Refused(index, total,
                                   _retry_after(entries, total, charge.max - charge.amount, now, charge.window))
                newest = db.execute("SELECT id, last FROM charges WHERE key = ? ORDER BY last DESC, id DESC LIMIT 1",
                                    (charge.key,)).fetchone()
                seen.append((count, newest[0] if newest else None, newest[1] if newest else None))
            tokens = []
            for charge, (count, newest_id, newest_last) in zip(charges, seen, strict=True):
                at = max(now, newest_last) if newest_last is not None else now  # never earlier than the newest
                granularity = charge.window / BUCKETS_PER_WINDOW
                added = 1
                if (count >= EXACT_ENTRIES and granularity > 0 and newest_id is not None and newest_last is not None
                        and math.floor(at / granularity) == math.floor(newest_last / granularity)):
                    db.execute("UPDATE charges SET last = ?, amount = amount + ? WHERE id = ?",
                               (at, charge.amount, newest_id))
                    row, added = newest_id, 0
                else:
                    cursor = db.execute("INSERT INTO charges (key, first, last, amount) VALUES (?, ?, ?, ?)",
                                        (charge.key, at, at, charge.amount))
                    row = int(cursor.lastrowid or 0)
                db.execute("INSERT INTO limits (key, max, window, total, entries) VALUES (?, ?, ?, ?, ?) "
                           "ON CONFLICT (key) DO UPDATE SET max = excluded.max, window = excluded.window, "
                           "total = total + excluded.total, entries = entries + excluded.entries",
                           (charge.key, charge.max, charge.window, charge.amount, added))
                tokens.append((charge.key, row, charge.amount))
            return Admitted(tuple(tokens))

        result: Admitted | Refused = self._transaction(work)
        return result

    def refund(self, tokens: tuple[Any, ...]) -> None:
        def work(db: sqlite3.Connection) -> None:
            for key, row, amount in tokens:
                found = db.execute("SELECT amount FROM charges WHERE id = ? AND key = ?", (row, key)).fetchone()
                if found is None:
                    continue  # left the window meanwhile, or given back already
                taken = min(amount, found[0])
                gone = 1 if found[0] - taken <= 0 else 0
                if gone:
                    db.execute("DELETE FROM charges WHERE id = ?", (row,))
                else:
                    db.execute("UPDATE charges SET amount = amount - ? WHERE id = ?", (taken, row))
                db.execute("UPDATE limits SET total = CASE WHEN entries - ? <= 0 THEN 0 ELSE total - ? END, "
                           "entries = MAX(0, entries - ?) WHERE key = ?", (gone, taken, gone, key))

        self._transaction(work)

    def counters(self, keys: tuple[str, ...] | None = None) -> list[Counter]:
        def work(db: sqlite3.Connection) -> list[Counter]:
            now = self.clock()
            limits = db.execute("SELECT key, max, window FROM limits ORDER BY key").fetchall()
            found = []
            for key, maximum, window in limits:
                if keys is not None and key not in keys:
                    continue
                used, oldest = db.execute("SELECT COALESCE(SUM(amount), 0), MIN(last) FROM charges "
                                          "WHERE key = ? AND last > ?", (key, now - window)).fetchone()
                found.append(Counter(key, maximum, window, float(used),
                                     max(0.0, oldest + window - now) if oldest is not None else None))
            return found

        result: list[Counter] = self._transaction(work)
        return result

    def reset(self, keys: tuple[str, ...]) -> int:
        def work(db: sqlite3.Connection) -> int:
            removed = 0
            for key in keys:
                removed += db.execute("DELETE FROM charges WHERE key = ?", (key,)).rowcount
                db.execute("UPDATE limits SET total = 0, entries = 0 WHERE key = ?", (key,))
            return removed

        result: int = self._transaction(work)
        return result

    def close(self) -> None:
        with self._lock:
            self._drop()


def _forget(db: sqlite3.Connection, key: str, before: float) -> tuple[float, int]:
    """Drop a limit's charges that have left its window (last <= before); what is left: (total, entries)."""
    gone_total, gone_count = db.execute("SELECT COALESCE(SUM(amount), 0), COUNT(*) FROM charges "
                                        "WHERE key = ? AND last <= ?", (key, before)).fetchone()
    held = db.execute("SELECT total, entries FROM limits WHERE key = ?", (key,)).fetchone()
    total, count = (float(held[0]), int(held[1])) if held else (0.0, 0)
    if gone_count:
        db.execute("DELETE FROM charges WHERE key = ? AND last <= ?", (key, before))
        total, count = total - float(gone_total), count - int(gone_count)
        if count <= 0:
            total, count = 0.0, 0  # no drift from float sums
        db.execute("UPDATE limits SET total = ?, entries = ? WHERE key = ?", (total, count, key))
    return total, count


def _identity(path: str) -> tuple[int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


def _unusable(exc: sqlite3.DatabaseError) -> bool:
    """Whether an error at open means the path can never be used (rather than a corrupt file)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        part in text for part in ("readonly", "read-only", "unable to open", "disk i/o", "permission"))
