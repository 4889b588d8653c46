"""Live policy reload: watch the policy file (and SIGHUP), load it off the relay, swap it in between messages.

The guard's `serve(channel)` runs `PolicyReloader.run` for the whole session. A change is noticed by a
cheap `stat` of the file every `interval` seconds, in this task (never on the relay's pump), or at once
on SIGHUP. The new policy is read, validated and made ready (its argument checks, its pin's lock file) in
a worker thread; the guard is handed the result as one reference, which it takes up at its next message
(`Guard.replace_policy`): a message is decided wholly under the old policy or wholly under the new.

An invalid policy is rejected with one line on stderr and a `reload_rejected` audit record, and the old
policy stays in force. So is one that changes what cannot change under a running session: user- and
global-scoped limits (their store was opened at start), the policy's name, state or on_store_error.

When what the agent may see changed, the client is told: `notifications/tools/list_changed` in the
handshake era (mcp-guard advertises `tools.listChanged` in the initialize answer it passes on), and on
every open 2026-07-28 `subscriptions/listen` stream that asked for tool list changes. Listings handed out
meanwhile carry a `ttlMs` of at most `MAX_TTL_MS` (guard.py), so no cached listing outlives a change by
more than that.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from . import oslayer
from .engine import SessionState
from .policy import Policy, PolicyError

if TYPE_CHECKING:
    from .actions import ClientChannel
    from .guard import Guard

log = logging.getLogger("mcp_guard")

INTERVAL = 0.5  # seconds between two looks at the policy file
SUBSCRIPTION_ID_META = "io.modelcontextprotocol/subscriptionId"


@dataclass(frozen=True, slots=True)
class Prepared:
    """A policy ready to be swapped in: everything the guard derives from it, built off the relay."""

    policy: Policy
    argument_checks: Any
    pins: Any


def shared_setup(policy: Policy) -> Any:
    """What a running session cannot change: its shared limits and their store."""
    rules = []
    for rule in policy.rules:
        rate = rule.rate_limit if rule.rate_limit is not None and rule.rate_limit.scope != "session" else None
        budget = rule.budget if rule.budget is not None and rule.budget.scope != "session" else None
        if rate is not None or budget is not None:
            rules.append((rule.key, rule.origin, repr(rate), repr(budget)))
    return (sorted(rules), policy.name, policy.state, policy.on_store_error) if rules else ()


def prepare(path: str, current: Policy, current_pins: Any) -> Prepared:
    """Load and validate the policy at `path` (raises PolicyError), with what the guard needs of it."""
    import jsonschema  # noqa: F401 - validated in this thread, never in a forked child (policy.py)

    from .argcheck import ArgumentChecks
    from .policy import load

    policy = load(path)
    if shared_setup(policy) != shared_setup(current):
        raise PolicyError(path, "its user- or global-scoped limits (or name, state, on_store_error) differ "
                                "from the running policy's; they take effect on a restart")
    pins = current_pins
    if policy.pin != current.pin or policy.on_pin_mismatch != current.on_pin_mismatch:
        pins = None
        if policy.pin is not None:
            from .pinning import PinCheck, PinError, load_lock

            try:
                pins = PinCheck(load_lock(policy.pin), policy.on_pin_mismatch)
            except PinError as exc:
                raise PolicyError(path, str(exc)) from None
    return Prepared(policy, ArgumentChecks(policy), pins)


def keep_counters(state: SessionState, old: Policy, new: Policy) -> None:
    """Forget the usage of each limit whose rule is gone or whose limit changed; the others go on."""
    def limits(policy: Policy) -> dict[tuple[str, str], Any]:
        found: dict[tuple[str, str], Any] = {(r.key, "rate_limit"): r.rate_limit for r in policy.rules if r.rate_limit}
        found |= {(rule.key, "budget"): rule.budget for rule in policy.rules if rule.budget is not None}
        return found

    before, after = limits(old), limits(new)
    for key in list(state.usage):
        if key not in after or after[key] != before.get(key):
            del state.usage[key]


def _signature(path: str) -> tuple[int, int, int, int] | None:
    try:
        found = os.stat(path)
    except OSError:
        return None  # being replaced (an editor's save): looked at again next time
    return (found.st_ino, found.st_dev, found.st_size, found.st_mtime_ns)


class PolicyReloader:
    def __init__(self, path: str, guard: Guard, sighup: bool = True, interval: float = INTERVAL) -> None:
        self.path = path
        self.guard = guard
        self.sighup = sighup
        self.interval = interval
        self._seen = _signature(path)

    async def run(self, channel: ClientChannel) -> None:
        async with anyio.create_task_group() as tg:
            if self.sighup and oslayer.SIGHUP is not None:  # Windows has none: the file's change alone
                tg.start_soon(self._on_sighup, channel)
            await self._watch(channel)

    async def _watch(self, channel: ClientChannel) -> None:
        while True:
            await anyio.sleep(self.interval)
            seen = await anyio.to_thread.run_sync(_signature, self.path)
            if seen is None or seen == self._seen:
                continue
            await anyio.sleep(0.05)  # let a writer finish: the file is read once it stops changing
            again = await anyio.to_thread.run_sync(_signature, self.path)
            if again != seen:
                continue
            self._seen = seen
            await self.reload(channel, "the file changed")

    async def _on_sighup(self, channel: ClientChannel) -> None:
        assert oslayer.SIGHUP is not None
        with oslayer.signal_receiver(oslayer.SIGHUP) as signals:
            async for _ in signals:
                self._seen = await anyio.to_thread.run_sync(_signature, self.path)
                await self.reload(channel, "SIGHUP")

    async def reload(self, channel: ClientChannel, why: str) -> bool:
        """Load the policy file and swap it in; False (the old policy stays) when it is unusable."""
        guard = self.guard
        current = guard.latest_policy()
        try:
            prepared = await anyio.to_thread.run_sync(prepare, self.path, current, guard.latest_pins())
        except PolicyError as exc:
            log.error("policy reload (%s) rejected: %s; the old policy stays in force", why, exc)
            guard.audit.record("reload_rejected", policy=self.path, why=why, problem=str(exc))
            return False
        except Exception as exc:  # noqa: BLE001 - fail closed: whatever went wrong, the old policy stays
            log.error("policy reload (%s) failed: %r; the old policy stays in force", why, exc)
            guard.audit.record("reload_rejected", policy=self.path, why=why, problem=repr(exc))
            return False
        changed = guard.shown_names(current) != guard.shown_names(prepared.policy) or prepared.pins is not (
            guard.latest_pins())
        guard.replace_policy(prepared)
        told = await self._tell_client(channel) if changed else []
        from .commandline import policy_summary

        log.warning("policy reloaded (%s): %s%s", why, policy_summary(prepared.policy, monitor=guard.monitor),
                    f"; told the client its tools changed ({', '.join(told)})" if told else "")
        guard.audit.record("reload", policy=self.path, why=why, tools_changed=changed, told=told,
                           mode="monitor" if guard.monitor or prepared.policy.mode == "monitor" else "enforce")
        return True

    async def _tell_client(self, channel: ClientChannel) -> list[str]:
        """notifications/tools/list_changed where the client can receive it; what was sent, in words."""
        told: list[str] = []
        guard = self.guard
        if guard.era == "handshake" and guard.initialized:
            await channel.notify("notifications/tools/list_changed", None)
            told.append("notifications/tools/list_changed")
        for subscription in guard.tool_listeners():
            await channel.notify("notifications/tools/list_changed",
                                 {"_meta": {SUBSCRIPTION_ID_META: subscription}})
            told.append(f"subscription {subscription!r}")
        return told
