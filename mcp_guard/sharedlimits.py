"""User- and global-scoped limits: the guard's side of the limit store.

The engine decides as always and hands back the charges of limits it does not keep itself (scope "user"
or "global"); this module asks the right store to admit and charge them, off the relay's threads (the
guard answers Defer, and the store's round trip runs in a worker thread). It names the counters (the
policy's name, the OS user for the user scope), turns a store's refusal into the engine's words, and
fails closed while a store cannot answer (unless the policy says `"on_store_error": "allow"`).
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .engine import Charge, Decision, limit_refusal, select_rule
from .limitstore import (
    STATE_ENV,
    Admitted,
    Counter,
    LimitStore,
    MemoryStore,
    StoreCharge,
    StoreUnavailable,
    default_url,
    open_store,
)
from .policy import Policy, Rule

log = logging.getLogger("mcp_guard")

UNAVAILABLE_REASON = "the limit store is unavailable"


def os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container without passwd entry): the uid
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def namespace(policy: Policy) -> str:
    """Whose counters: the policy's name, or its file's real path (two policies never share by accident;
    give both the same name to share)."""
    if policy.name:
        return policy.name
    return "file:" + os.path.realpath(policy.source)


def counter_key(space: str, scope: str, rule: str, limit: str, user: str | None = None) -> str:
    owner = f"user:{user or os_user()}" if scope == "user" else "global"
    return json.dumps([space, owner, rule, limit], ensure_ascii=False)


def state_url(option: str | None, policy: Policy) -> str:
    """The store of global-scoped limits: --state, else $MCP_GUARD_STATE, else the policy's "state",
    else the per-user SQLite file."""
    return option or os.environ.get(STATE_ENV) or policy.state or default_url()


@dataclass(frozen=True, slots=True)
class Admission:
    """A store's answer for one call: `refusal` when it does not fit; otherwise the tokens that give the
    charges back, and whether the call passes only because the store could not answer."""

    refusal: Decision | None
    tokens: tuple[tuple[LimitStore, tuple[Any, ...]], ...] = ()
    store_error: str | None = None


class SharedLimits:
    def __init__(self, policy: Policy, global_store: LimitStore, user_store: LimitStore | None = None) -> None:
        self.policy = policy
        self.global_store = global_store
        self.user_store = user_store or global_store
        self.namespace = namespace(policy)
        self.user = os_user()
        self._down: set[str] = set()  # the stores whose outage has been reported
        # One worker thread takes admissions and refunds in the order the relay saw the calls and answers:
        # pipelined calls of one session are admitted first come, first served, and a refund is given back
        # before a later call is decided.
        self._work: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()

    def store_for(self, scope: str) -> LimitStore:
        return self.user_store if scope == "user" else self.global_store

    def admit(self, charges: tuple[Charge, ...]) -> Admission:
        """Blocking: have the stores admit and charge the call's shared charges (run in a worker thread).
        Charges in two stores (a user-scoped rate limit and a global budget) are taken one store after the
        other; a refusal by the second gives the first back."""
        shared = [charge for charge in charges if charge.scope != "session"]
        taken: list[tuple[LimitStore, tuple[Any, ...]]] = []
        for scope in ("user", "global"):
            mine = [charge for charge in shared if charge.scope == scope]
            if not mine:
                continue
            store = self.store_for(scope)
            request = tuple(StoreCharge(counter_key(self.namespace, scope, charge.rule, charge.limit, self.user),
                                        charge.amount, charge.max, charge.window) for charge in mine)
            try:
                answer = store.admit(request)
            except StoreUnavailable as exc:
                self._give_back(taken)
                return self._unavailable(store, str(exc), mine[0].rule)
            self._back(store)
            if not isinstance(answer, Admitted):
                self._give_back(taken)
                refused = mine[answer.index]
                rule = self._rule(refused.rule)
                return Admission(limit_refusal(rule, refused.limit, answer.used, refused.amount, answer.retry_after))
            taken.append((store, answer.tokens))
        return Admission(None, tuple(taken))

    def _rule(self, key: str) -> Rule:
        for rule in self.policy.rules:
            if rule.key == key and rule.origin == "rules":
                return rule
        found = select_rule(self.policy, key)
        assert found is not None
        return found

    def _unavailable(self, store: LimitStore, problem: str, rule: str) -> Admission:
        allow = self.policy.on_store_error == "allow"
        if store.url not in self._down:
            self._down.add(store.url)
            if allow:
                log.error("the limit store %s is unavailable (%s); calls under shared limits pass UNLIMITED "
                          "until it answers (on_store_error: allow)", store.url, problem)
            else:
                log.error("the limit store %s is unavailable (%s); calls under shared limits are refused "
                          "until it answers", store.url, problem)
        if allow:
            return Admission(None, (), problem)
        return Admission(Decision("deny", rule, UNAVAILABLE_REASON, kind="store"), (), problem)

    def _back(self, store: LimitStore) -> None:
        if store.url in self._down:
            self._down.discard(store.url)
            log.warning("the limit store %s answers again", store.url)

    def _give_back(self, taken: list[tuple[LimitStore, tuple[Any, ...]]]) -> None:
        for store, tokens in taken:
            try:
                store.refund(tokens)
            except StoreUnavailable:
                pass  # kept taken: stricter, never looser

    def submit(self, charges: tuple[Charge, ...]) -> Future[Admission]:
        """Queue an admission (called on a relay thread: it never waits); the future holds its answer."""
        future: Future[Admission] = Future()
        self._put(("admit", charges, future))
        return future

    def refund_later(self, tokens: tuple[tuple[LimitStore, tuple[Any, ...]], ...]) -> None:
        """Queue charges to give back (called on a relay thread, which must not wait on I/O). A refund that
        fails is dropped: the quota stays taken, stricter, never looser."""
        for store, store_tokens in tokens:
            self._put(("refund", store, store_tokens))

    def _put(self, item: Any) -> None:
        if self._worker is None:
            with self._worker_lock:
                if self._worker is None:
                    self._worker = threading.Thread(target=self._work_loop, name="mcp-guard-limits", daemon=True)
                    self._worker.start()
        self._work.put(item)

    def _work_loop(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            if item[0] == "admit":
                _, charges, future = item
                try:
                    future.set_result(self.admit(charges))
                except BaseException as exc:  # noqa: BLE001 - handed to the waiting call, which refuses
                    future.set_exception(exc)
                continue
            _, store, tokens = item
            try:
                store.refund(tokens)
            except StoreUnavailable as exc:
                log.warning("could not give a charge back to the limit store %s: %s", store.url, exc)

    def close(self) -> None:
        self._work.put(None)
        for store in {id(self.global_store): self.global_store, id(self.user_store): self.user_store}.values():
            store.close()


def open_shared(policy: Policy, option: str | None) -> SharedLimits | None:
    """The stores a policy needs, opened (and checked) before anything starts; None when every limit is
    session-scoped (such a policy never touches a store). Raises limitstore.StoreURLError."""
    scopes = {limit.scope for rule in policy.rules for limit in (rule.rate_limit, rule.budget)
              if limit is not None}
    if not scopes - {"session"}:
        return None
    url = state_url(option, policy)
    global_store = open_store(url) if "global" in scopes else None
    user_store = None
    if "user" in scopes:
        user_url = default_url()
        user_store = global_store if global_store is not None and global_store.url == user_url else open_store(user_url)
    first = global_store or user_store
    assert first is not None
    return SharedLimits(policy, global_store or first, user_store)


def in_memory(policy: Policy) -> SharedLimits:
    """For a Guard built without stores (in-process tests): a store that lives as long as the process."""
    return SharedLimits(policy, MemoryStore())


def status(policy: Policy | None, store: LimitStore, user_store: LimitStore | None = None) -> list[dict[str, Any]]:
    """The counters in force: per shared limit of the policy (or every counter in the store without one),
    what is taken and left in its window and when the oldest charge leaves it."""
    rows: list[dict[str, Any]] = []
    if policy is None:
        for counter in store.counters():
            rows.append(_row(counter, *_parse_key(counter.key)))
        return rows
    space = namespace(policy)
    for rule in policy.rules:
        for limit_name, limit in (("rate_limit", rule.rate_limit), ("budget", rule.budget)):
            if limit is None or limit.scope == "session":
                continue
            source = user_store if limit.scope == "user" and user_store is not None else store
            key = counter_key(space, limit.scope, rule.key, limit_name)
            found = source.counters((key,))
            counter = found[0] if found else Counter(key, float(limit.max), limit.window, 0.0, None)
            rows.append(_row(counter, space, "user" if limit.scope == "user" else "global", rule.key, limit_name,
                             source.url))
    return rows


def _parse_key(key: str) -> tuple[str, str, str, str]:
    try:
        space, owner, rule, limit = json.loads(key)
        return str(space), str(owner), str(rule), str(limit)
    except (ValueError, TypeError):
        return "?", "?", key, "?"


def _row(counter: Counter, space: str, owner: str, rule: str, limit: str, url: str | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "policy": space, "scope": "user" if owner.startswith("user") else owner, "rule": rule, "limit": limit,
        "used": counter.used, "max": counter.max, "left": max(0.0, counter.max - counter.used),
        "window": counter.window, "frees_in": counter.frees_in,
    }
    if owner.startswith("user:"):
        row["user"] = owner[5:]
    if url is not None:
        row["store"] = url
    return row


def reset(policy: Policy, rule_key: str, store: LimitStore, user_store: LimitStore | None = None) -> int:
    """Forget what a rule's shared limits have taken (an operator's reset). The number of entries removed."""
    space = namespace(policy)
    removed = 0
    for rule in policy.rules:
        if rule.key != rule_key:
            continue
        for limit_name, limit in (("rate_limit", rule.rate_limit), ("budget", rule.budget)):
            if limit is None or limit.scope == "session":
                continue
            source = user_store if limit.scope == "user" and user_store is not None else store
            removed += source.reset((counter_key(space, limit.scope, rule.key, limit_name),))
    return removed
