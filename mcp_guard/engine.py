"""The decision: `decide(policy, call, state, now) -> Decision`.

Pure: no I/O, no clock reads, no globals. The caller passes the time and the per-session usage, and
applies the decision's charges to the state itself. The same matching serves tools/list (`visible`) and
tools/call (`decide`), so a tool that is hidden can never be called.
"""

from __future__ import annotations

import json
import math
import sys
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

from .policy import Action, Policy, Rule

HIDDEN_REASON = "Unknown tool"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: Any = None  # the call's `arguments`; None when the call has none
    # The retry of a call that was charged already (2026-07-28: it carries the requestState the server
    # handed out with input_required, and the very arguments of the charged call): the policy still
    # decides, but limits are not charged again. Deciding what is a continuation is the caller's job.
    continuation: bool = False
    # The argument check, when the caller ran it already (the guard runs it off the relay's pump, with a
    # time budget: argcheck.py): `arguments_problem` is then what it found (None: the arguments passed).
    arguments_checked: bool = False
    arguments_problem: str | None = None
    # A human approved this call (approval.py): a require_approval rule then decides as allow, its limits
    # charged now, when the call is about to be forwarded. Obtaining the approval is the caller's job.
    approved: bool = False


@dataclass(frozen=True, slots=True)
class Charge:
    """What an allowed call takes from a limit: 1 for a rate limit, its cost for a budget."""

    rule: str
    limit: str  # "rate_limit" or "budget"
    amount: float
    at: float
    window: float = 0.0  # the limit's window, which sizes how its usage is kept
    # "session": checked here, against the SessionState. "user" or "global": not checked here; the caller
    # must have a limit store admit it (limitstore.py) before the call is allowed, against `max`.
    scope: str = "session"
    max: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    rule: str | None  # the key of the rule that decided; None when the policy's default did
    reason: str | None = None
    retry_after: float | None = None
    kind: str = "policy"  # policy | arguments | rate_limit | budget | default
    charges: tuple[Charge, ...] = ()

    @property
    def allowed(self) -> bool:
        return self.action == "allow"

    def as_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"action": self.action, "rule": self.rule, "reason": self.reason}
        if self.retry_after is not None:
            # Rounded up to a tenth of a second: 59.99989999 s reads as 60.0, and waiting as long as
            # the record says never meets a refusal again.
            record["retry_after"] = math.ceil(round(self.retry_after * 10, 6)) / 10
        return record


# A limit keeps one entry per charge while it has fewer than EXACT_ENTRIES inside its window; past that,
# charges made within the same 1/BUCKETS_PER_WINDOW of the window share one entry, which leaves the window
# when the last of them does. So a limit holds at most about 2 x 1,024 entries, however small its costs
# and however many calls it allows, and a call is at most window/1,024 late to leave (stricter, never
# looser than exact).
EXACT_ENTRIES = 1024
BUCKETS_PER_WINDOW = 1024


class LimitUsage:
    """What one limit of one rule has taken inside its window, oldest first. Entries are parallel lists
    (from `head` on; the dead prefix is dropped in bulk) with running sums, so that a refusal finds the
    time it must wait by bisection rather than by walking the entries."""

    __slots__ = ("granularity", "first", "last", "amounts", "cumulative", "head", "total", "last_bucket")

    def __init__(self, window: float) -> None:
        self.granularity = window / BUCKETS_PER_WINDOW if window > 0 else 0.0
        self.first: list[float] = []  # when the entry's earliest charge was made
        self.last: list[float] = []  # when its latest was: the entry leaves the window `window` after that
        self.amounts: list[float] = []
        self.cumulative: list[float] = []  # the amounts summed up to and including each entry
        self.head = 0
        self.total = 0.0  # what is inside the window: the sum of amounts[head:]
        self.last_bucket: int | None = None

    def __len__(self) -> int:
        return len(self.last) - self.head

    def forget(self, now: float, window: float) -> None:
        """Drop the entries that have left the window (amortised O(1): each leaves once)."""
        last, head = self.last, self.head
        while head < len(last) and now - last[head] >= window:
            self.total -= self.amounts[head]
            head += 1
        self.head = head
        if head == len(last):
            for entries in (self.first, last, self.amounts, self.cumulative):
                entries.clear()
            self.head, self.total, self.last_bucket = 0, 0.0, None  # no drift from float sums
        elif head > 64 and 2 * head > len(last):
            base = self.cumulative[head - 1]
            del self.first[:head], last[:head], self.amounts[:head], self.cumulative[:head]
            self.cumulative[:] = [value - base for value in self.cumulative]
            self.head = 0

    def add(self, at: float, amount: float) -> None:
        last = self.last
        bucket = math.floor(at / self.granularity) if self.granularity > 0 else None
        if len(self) and at < last[-1]:
            at = last[-1]  # out of order (a deferred decision): kept as late as the latest, never earlier
        if len(self) >= EXACT_ENTRIES and bucket is not None and bucket == self.last_bucket:
            last[-1] = at
            self.amounts[-1] += amount
            self.cumulative[-1] += amount
        else:
            self.first.append(at)
            last.append(at)
            self.amounts.append(amount)
            self.cumulative.append((self.cumulative[-1] if self.cumulative else 0.0) + amount)
        self.last_bucket = bucket
        self.total += amount

    def remove(self, at: float, amount: float) -> bool:
        """Give back a charge made at `at` (a refund). Each charge is given back at most once by the caller;
        an entry that holds one charge goes with it, so a second refund of that charge finds nothing."""
        for index in range(len(self.last) - 1, self.head - 1, -1):  # refunds are for recent calls
            if self.first[index] <= at <= self.last[index] and self.amounts[index] > 0:
                taken = min(amount, self.amounts[index])
                self.amounts[index] -= taken
                for later in range(index, len(self.cumulative)):
                    self.cumulative[later] -= taken
                self.total -= taken
                if self.amounts[index] <= 0:
                    del self.first[index], self.last[index], self.amounts[index], self.cumulative[index]
                    if index == len(self.last):
                        self.last_bucket = None
                if not len(self):
                    self.forget(math.inf, 0.0)
                return True
        return False

    def retry_after(self, room: float, now: float, window: float) -> float:
        """Seconds until at most `room` is left inside the window: bisection over the running sums."""
        if self.total <= room:
            return 0.0
        base = self.cumulative[self.head - 1] if self.head else 0.0
        index = bisect_left(self.cumulative, base + self.total - room, self.head)
        index = min(index, len(self.last) - 1)  # float sums a hair short: the newest entry must leave
        return max(0.0, self.last[index] + window - now)


@dataclass
class SessionState:
    """What one session (one mcp-guard process) has used of each limit, per (rule, limit kind). Bounded
    per limit (see LimitUsage); a decision costs O(1) amortised and a refusal O(log n)."""

    usage: dict[tuple[str, str], LimitUsage] = field(default_factory=dict)

    def entries(self, rule: str, limit: str, now: float, window: float) -> LimitUsage:
        """The limit's usage inside the window. Entries that have left it are forgotten here (that changes
        no decision); a limit that has taken nothing yet is not added to the state."""
        usage = self.usage.get((rule, limit))
        if usage is None:
            return LimitUsage(window)
        usage.forget(now, window)
        return usage

    def spent(self, rule: str, limit: str, now: float, window: float) -> float:
        return self.entries(rule, limit, now, window).total

    def record(self, charges: tuple[Charge, ...]) -> None:
        """Take what an allowed call charges (old entries are forgotten by `entries`, at each decision)."""
        for charge in charges:
            if charge.scope != "session":
                continue
            key = (charge.rule, charge.limit)
            usage = self.usage.get(key)
            if usage is None:
                usage = self.usage[key] = LimitUsage(charge.window)
            usage.add(charge.at, charge.amount)

    def refund(self, charges: tuple[Charge, ...]) -> None:
        """A call the upstream refused gives back what it took."""
        for charge in charges:
            if charge.scope != "session":
                continue
            usage = self.usage.get((charge.rule, charge.limit))
            if usage is not None:
                usage.remove(charge.at, charge.amount)


def select_rule(policy: Policy, name: str) -> Rule | None:
    """The rule that decides for `name`, or None when the default does."""
    rules = policy.matching_rules(name)
    return rules[0] if rules else None


def visible(policy: Policy, name: str) -> bool:
    rule = select_rule(policy, name)
    return (rule.action if rule else policy.default) != "hide"


def decide(policy: Policy, call: ToolCall, state: SessionState, now: float) -> Decision:
    rule = select_rule(policy, call.name)
    if rule is None:
        return _default_decision(policy, call)
    if rule.action == "hide":
        return Decision("hide", rule.key, HIDDEN_REASON)
    if rule.action == "deny":
        return Decision("deny", rule.key, rule.reason or f"calls to {call.name} are denied by policy")
    arguments = {} if call.arguments is None else call.arguments
    if rule.arguments is not None:
        problem = call.arguments_problem if call.arguments_checked else argument_problem(policy, rule, arguments)
        if problem is not None:
            reason = f"{rule.reason} ({problem})" if rule.reason else problem
            return Decision("deny", rule.key, reason, kind="arguments")
    charges: list[Charge] = []
    # A continuation (the retry, with identical arguments, of a call already charged) is decided like any
    # call but charged nothing again; a cost that could never fit is refused in every round.
    if rule.rate_limit is not None and not call.continuation:
        limit = rule.rate_limit
        if limit.scope != "session":
            charges.append(Charge(rule.key, "rate_limit", 1, now, limit.window, limit.scope, limit.max))
        else:
            used = state.entries(rule.key, "rate_limit", now, limit.window)
            if used.total + 1 > limit.max:
                retry = used.retry_after(limit.max - 1, now, limit.window) if limit.max > 0 else None
                return limit_refusal(rule, "rate_limit", used.total, 1, retry)
            charges.append(Charge(rule.key, "rate_limit", 1, now, limit.window))
    if rule.budget is not None:
        budget = rule.budget
        cost = _cost(arguments, budget.cost)
        if isinstance(cost, str):
            return Decision("deny", rule.key, cost, kind="budget")
        if cost > budget.max:
            return Decision("deny", rule.key,
                            f"cost {cost:g} is more than the whole budget of {budget.max:g} per "
                            f"{budget.window:g} s", None, "budget")
        if not call.continuation and budget.scope != "session":
            if cost > 0:
                charges.append(Charge(rule.key, "budget", cost, now, budget.window, budget.scope, budget.max))
        elif not call.continuation:
            used = state.entries(rule.key, "budget", now, budget.window)
            if used.total + cost > budget.max:
                retry = used.retry_after(budget.max - cost, now, budget.window)
                return limit_refusal(rule, "budget", used.total, cost, retry)
            if cost > 0:  # a free call takes nothing, and leaves no entry to keep
                charges.append(Charge(rule.key, "budget", cost, now, budget.window))
    if rule.action == "require_approval" and not call.approved:
        # Limits are checked first (a call they refuse is never put to a human) but charged only when
        # the approved call is decided again, and forwarded.
        return Decision("require_approval", rule.key, rule.reason or approval_reason(call.name),
                        kind="policy", charges=())
    return Decision("allow", rule.key, charges=tuple(charges))


def approval_reason(name: str) -> str:
    return f"calls to {name} need a human's approval"


def limit_refusal(rule: Rule, limit: str, used: float, amount: float, retry_after: float | None) -> Decision:
    """The refusal of a call that does not fit in a limit, whichever scope keeps it (a limit store's
    answer is worded like the session's)."""
    if limit == "rate_limit":
        assert rule.rate_limit is not None
        return Decision("deny", rule.key, f"rate limit reached: at most {rule.rate_limit.max} call(s) per "
                                          f"{rule.rate_limit.window:g} s{_scope_words(rule.rate_limit.scope)}",
                        retry_after, "rate_limit")
    assert rule.budget is not None
    budget = rule.budget
    return Decision("deny", rule.key,
                    f"budget exhausted: {used:g} of {budget.max:g} spent in the last {budget.window:g} s"
                    f"{_scope_words(budget.scope)}, this call costs {amount:g}", retry_after, "budget")


def _scope_words(scope: str) -> str:
    return {"user": " by this user's sessions", "global": " by every session sharing the limit"}.get(scope, "")


def _default_decision(policy: Policy, call: ToolCall) -> Decision:
    action = policy.default
    if action == "hide":
        return Decision("hide", None, HIDDEN_REASON, kind="default")
    if action == "deny":
        return Decision("deny", None, policy.default_reason or
                        f"{call.name} is not on this policy's list of allowed tools", kind="default")
    if action == "require_approval" and not call.approved:
        return Decision("require_approval", None, policy.default_reason or approval_reason(call.name),
                        kind="default")
    return Decision("allow", None, kind="default")


def _case_variant_key(policy: Policy, rule: Rule, arguments: Any) -> str | None:
    """An argument key that is a key the schema constrains, in another case ("Path" for "path"). JSON
    Schema sees another key, unconstrained; a server decoding with Go's encoding/json reads it as the
    constrained one. Refused wherever the schema constrains keys (argschema.KeyPlan)."""
    try:
        problem: str | None = policy.key_plan(rule).problem(arguments)
    except RecursionError:  # arguments nested past what can be walked: refused (fail closed)
        return "the arguments are nested too deeply to be checked"
    return problem


def argument_problem(policy: Policy, rule: Rule, arguments: Any) -> str | None:
    """Why the arguments do not satisfy the rule's `arguments` schema, or None. Pure, but its cost grows
    with the arguments and the schema (a `uniqueItems` over objects compares every pair): the guard
    runs it off the relay's pump, with a time budget."""
    return _case_variant_key(policy, rule, arguments) or _argument_problem(policy, rule, arguments)


def _argument_problem(policy: Policy, rule: Rule, arguments: Any) -> str | None:
    """The first violation in words an agent can act on. The offending value itself is not quoted:
    the agent knows what it sent, and the reason also goes to the audit log, which holds no values."""
    from jsonschema.exceptions import best_match

    try:
        # The first error only: collecting them all (to choose the most relevant) walks every item of
        # every array, which is what made one small message cost minutes. best_match still chooses
        # within that one error's own alternatives (anyOf, oneOf).
        first = next(iter(policy.validator(rule).iter_errors(arguments)), None)
        error = best_match([first]) if first is not None else None
    except Exception as exc:  # noqa: BLE001 - a schema that cannot be evaluated refuses (fail closed)
        return f"the arguments could not be checked ({type(exc).__name__})"
    if error is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    subject = f"argument {where[1:] if where.startswith('.') else where}" if where else "the arguments"
    message = str(error.message)
    # Objects and arrays too (an object argument, or the whole arguments for maxProperties): their text
    # is argument values, and so may hold secrets.
    message = message.replace(repr(error.instance), "the value", 1)
    if isinstance(error.instance, str):
        message = message.replace(json.dumps(error.instance), "the value", 1)
    return f"{subject}: {message}"


def _cost(arguments: Any, pointer: str) -> float | str:
    """The number at JSON Pointer `pointer` in the arguments, or a reason why there is none."""
    value = arguments
    if pointer:
        for token in pointer[1:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and token in value:
                value = value[token]
            elif isinstance(value, list) and token.isascii() and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                return f"the call has no cost at {pointer} in its arguments"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"the cost at {pointer} in the call's arguments is not a number"
    try:
        value = float(value)
    except OverflowError:  # an integer with hundreds of digits
        return f"the cost at {pointer} in the call's arguments is too large"
    if not math.isfinite(value):
        return f"the cost at {pointer} in the call's arguments is not a number"
    if value < 0:
        return f"the cost at {pointer} in the call's arguments is negative"
    if 0 < value < sys.float_info.min:
        # Subnormal: too small to add up to anything, and a flood of them would only fill the state.
        return f"the cost at {pointer} in the call's arguments is too small to count (below {sys.float_info.min:g})"
    return float(value)
