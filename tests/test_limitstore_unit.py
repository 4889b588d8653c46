"""The limit store interface, with an injected clock: the memory and SQLite stores (and Redis when a
redis-server is installed) answer alike, with the session scope's semantics (sliding windows, retry_after,
refunds, bounded entries). And the engine: shared-scope limits are handed to the caller, not checked."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_guard.engine import EXACT_ENTRIES, SessionState, ToolCall, decide
from mcp_guard.limitstore import (
    Admitted,
    MemoryStore,
    Refused,
    SqliteStore,
    StoreCharge,
    StoreUnavailable,
    StoreURLError,
    open_store,
    parse_url,
)
from mcp_guard.policy import loads


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryStore(clock), clock
        return
    sqlite = SqliteStore.open(str(tmp_path / "state.db"), f"sqlite://{tmp_path}/state.db")
    sqlite.clock = clock
    yield sqlite, clock
    sqlite.close()


@pytest.fixture(params=["memory", "sqlite", "redis"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Every store, for the tests that need no clock of their own (Redis measures with the server's)."""
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "sqlite":
        store = SqliteStore.open(str(tmp_path / "state.db"), f"sqlite://{tmp_path}/state.db")
        yield store
        store.close()
    else:
        import sys

        sys.path.insert(0, str(Path(__file__).parent))
        from test_shared_limits import RedisServer

        if shutil.which("redis-server") is None:
            pytest.skip("redis-server is not installed (scripts/test.sh installs Debian's redis-server)")
        server = RedisServer(tmp_path)
        server.start()
        store = open_store(server.url)
        yield store
        store.close()
        server.stop()


def charge(amount: float = 1, maximum: float = 3, window: float = 60, key: str = "k") -> StoreCharge:
    return StoreCharge(key, amount, maximum, window)


def test_sliding_window_and_retry_after(store: tuple[Any, Clock]) -> None:
    limits, clock = store
    for _ in range(3):
        assert isinstance(limits.admit((charge(),)), Admitted)
        clock.now += 10
    refused = limits.admit((charge(),))  # taken at 0, 10, 20; now 30: the first leaves at 60
    assert isinstance(refused, Refused) and refused.used == 3 and refused.retry_after == pytest.approx(30)
    clock.now += 30
    assert isinstance(limits.admit((charge(),)), Admitted)
    assert isinstance(limits.admit((charge(),)), Refused)
    [counter] = limits.counters()
    assert counter.used == 3 and counter.max == 3 and counter.frees_in == pytest.approx(10)


def test_a_cost_that_can_never_fit_has_no_retry(any_store: Any) -> None:
    limits = any_store
    refused = limits.admit((charge(amount=5, maximum=3),))
    assert isinstance(refused, Refused) and refused.retry_after is None


def test_refund_gives_back_exactly_once(any_store: Any) -> None:
    limits = any_store
    first = limits.admit((charge(amount=2),))
    assert isinstance(first, Admitted)
    assert isinstance(limits.admit((charge(amount=2),)), Refused)
    limits.refund(first.tokens)
    limits.refund(first.tokens)  # a second refund of the same charge finds nothing
    assert isinstance(limits.admit((charge(amount=2),)), Admitted)
    assert isinstance(limits.admit((charge(amount=2),)), Refused)  # 2 taken, not 0


def test_charges_are_all_or_nothing(any_store: Any) -> None:
    limits = any_store
    assert isinstance(limits.admit((charge(key="b", amount=3),)), Admitted)
    refused = limits.admit((charge(key="a"), charge(key="b")))
    assert isinstance(refused, Refused) and refused.index == 1
    assert [c.used for c in limits.counters(("a",))] in ([], [0.0])  # "a" was not charged


def test_entries_stay_bounded_and_never_looser(store: tuple[Any, Clock]) -> None:
    limits, clock = store
    window = 1024.0
    for _ in range(3 * EXACT_ENTRIES):
        assert isinstance(limits.admit((charge(amount=1, maximum=10**9, window=window),)), Admitted)
        clock.now += 0.01
    assert limits.counters()[0].used == 3 * EXACT_ENTRIES
    if isinstance(limits, SqliteStore):
        rows = sqlite3.connect(limits.path).execute("SELECT COUNT(*) FROM charges").fetchone()[0]
        assert rows <= EXACT_ENTRIES + 64
    clock.now += window - 0.5  # every charge but the latest ~50 has left the window
    assert limits.counters()[0].used <= 3 * EXACT_ENTRIES


def test_sqlite_reset_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore.open(str(path), f"sqlite://{path}")
    assert isinstance(store.admit((charge(),)), Admitted)
    store.close()
    again = SqliteStore.open(str(path), f"sqlite://{path}")
    assert again.counters()[0].used == 1  # kept across processes and restarts
    assert again.reset(("k",)) == 1
    assert again.counters()[0].used == 0
    path.unlink()
    Path(str(path) + "-wal").unlink(missing_ok=True)
    assert again.counters() == []  # the file went away: a fresh one is opened
    again.close()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    path.write_bytes(b"not a database" * 100)
    fresh = SqliteStore(str(path), "x")
    with pytest.raises(StoreUnavailable):
        fresh.admit((charge(),))


@pytest.mark.parametrize(("url", "problem"), [
    ("http://x", "unknown scheme"), ("redis://", "no host"), ("rediss://h:notaport/0", "invalid port"),
    ("redis://h/abc", "a Redis database is a number"), ("sqlite://", "names no file"),
])
def test_parse_url_refuses(url: str, problem: str) -> None:
    with pytest.raises(StoreURLError, match=problem):
        parse_url(url)


def test_parse_url_accepts() -> None:
    assert parse_url("sqlite:///var/lib/x.db").path == "/var/lib/x.db"
    location = parse_url("rediss://cache.internal:6380/2")
    assert (location.scheme, location.host, location.port, location.db) == ("rediss", "cache.internal", 6380, 2)


def test_engine_hands_shared_limits_to_the_caller() -> None:
    policy = loads('{"version": "1", "rules": {"t": {"rate_limit": {"max": 1, "window": 60, "scope": "global"},'
                   ' "budget": {"max": 5, "window": 60, "cost": "/c", "scope": "user"}}}}')
    state = SessionState()
    for _ in range(3):  # the engine never refuses a shared limit by itself: the store does
        decision = decide(policy, ToolCall("t", {"c": 2}), state, 0.0)
        assert decision.allowed
        assert [(c.limit, c.scope, c.max, c.amount) for c in decision.charges] == [
            ("rate_limit", "global", 1, 1), ("budget", "user", 5, 2)]
        state.record(decision.charges)
    assert state.usage == {}  # nothing of a shared limit is kept in the session
    too_big = decide(policy, ToolCall("t", {"c": 6}), state, 0.0)
    assert not too_big.allowed and "more than the whole budget" in (too_big.reason or "")


def test_retry_after_and_reset_in_every_store(any_store: Any) -> None:
    limits = any_store
    assert isinstance(limits.admit((charge(maximum=1, window=30),)), Admitted)
    refused = limits.admit((charge(maximum=1, window=30),))
    assert isinstance(refused, Refused) and 25 < (refused.retry_after or 0) <= 30
    [counter] = limits.counters(("k",))
    assert counter.used == 1 and counter.max == 1 and counter.window == 30
    assert limits.reset(("k",)) == 1
    assert isinstance(limits.admit((charge(maximum=1, window=30),)), Admitted)
