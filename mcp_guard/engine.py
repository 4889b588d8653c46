"""The decision: `decide(policy, call, state, now) -> Decision`.

Pure: no I/O, no clock reads, no globals. The caller passes the time and the per-session usage, and
applies the decision's charges to the state itself. The same matching serves tools/list (`visible`) and
tools/call (`decide`), so a tool that is hidden can never be called.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .policy import Action, Policy, Rule

HIDDEN_REASON = "Unknown tool"


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str
    arguments: Any = None  # the call's `arguments`; None when the call has none
    # The retry of a call that was charged already (2026-07-28: it carries the requestState the server
    # handed out with input_required): the policy still decides, but limits are not charged again.
    continuation: bool = False


@dataclass(frozen=True, slots=True)
class Charge:
    """What an allowed call takes from a limit: 1 for a rate limit, its cost for a budget."""

    rule: str
    limit: str  # "rate_limit" or "budget"
    amount: float
    at: float


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
            record["retry_after"] = self.retry_after
        return record


@dataclass
class SessionState:
    """What one session (one mcp-guard process) has used of each limit: (time, amount) per rule, oldest
    first, with a running total so that a decision costs O(1) however many entries there are."""

    usage: dict[tuple[str, str], deque[tuple[float, float]]] = field(default_factory=dict)
    totals: dict[tuple[str, str], float] = field(default_factory=dict)

    def entries(self, rule: str, limit: str, now: float, window: float) -> deque[tuple[float, float]]:
        """The entries still inside the window, oldest first. Entries that have left it are forgotten
        here (that changes no decision)."""
        key = (rule, limit)
        queue = self.usage.get(key)
        if queue is None:
            return deque()
        while queue and now - queue[0][0] >= window:
            self.totals[key] -= queue.popleft()[1]
        if not queue:
            self.totals[key] = 0.0  # no drift from float sums
        return queue

    def spent(self, rule: str, limit: str, now: float, window: float) -> float:
        self.entries(rule, limit, now, window)
        return self.totals.get((rule, limit), 0.0)

    def record(self, charges: tuple[Charge, ...]) -> None:
        """Take what an allowed call charges (old entries are forgotten by `entries`, at each decision)."""
        for charge in charges:
            key = (charge.rule, charge.limit)
            queue = self.usage.get(key)
            if queue is None:
                queue = self.usage[key] = deque()
                self.totals[key] = 0.0
            queue.append((charge.at, charge.amount))
            self.totals[key] += charge.amount

    def refund(self, charges: tuple[Charge, ...]) -> None:
        """A call the upstream refused gives back what it took."""
        for charge in charges:
            key = (charge.rule, charge.limit)
            queue = self.usage.get(key)
            if queue is not None:
                try:
                    queue.remove((charge.at, charge.amount))
                except ValueError:
                    continue
                self.totals[key] -= charge.amount


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
        problem = _case_variant_key(rule.arguments, arguments, "") or _argument_problem(policy, rule, arguments)
        if problem is not None:
            reason = f"{rule.reason} ({problem})" if rule.reason else problem
            return Decision("deny", rule.key, reason, kind="arguments")
    charges: list[Charge] = []
    if call.continuation:
        pass  # charged when the call began; its retry with the input is the same call
    elif rule.rate_limit is not None:
        limit = rule.rate_limit
        used = state.entries(rule.key, "rate_limit", now, limit.window)
        if len(used) + 1 > limit.max:
            retry = _retry_after(used, limit.max - 1, now, limit.window) if limit.max > 0 else None
            return Decision("deny", rule.key,
                            f"rate limit reached: at most {limit.max} call(s) per {limit.window:g} s",
                            retry, "rate_limit")
        charges.append(Charge(rule.key, "rate_limit", 1, now))
    if rule.budget is not None and not call.continuation:
        budget = rule.budget
        cost = _cost(arguments, budget.cost)
        if isinstance(cost, str):
            return Decision("deny", rule.key, cost, kind="budget")
        used = state.entries(rule.key, "budget", now, budget.window)
        spent = state.spent(rule.key, "budget", now, budget.window)
        if cost > budget.max:
            return Decision("deny", rule.key,
                            f"cost {cost:g} is more than the whole budget of {budget.max:g} per "
                            f"{budget.window:g} s", None, "budget")
        if spent + cost > budget.max:
            retry = _budget_retry_after(used, budget.max - cost, now, budget.window)
            return Decision("deny", rule.key,
                            f"budget exhausted: {spent:g} of {budget.max:g} spent in the last "
                            f"{budget.window:g} s, this call costs {cost:g}", retry, "budget")
        if cost > 0:  # a free call takes nothing, and leaves no entry to keep
            charges.append(Charge(rule.key, "budget", cost, now))
    if rule.action == "require_approval":
        return Decision("require_approval", rule.key,
                        rule.reason or f"calls to {call.name} need a human's approval, and mcp-guard "
                                       "cannot obtain approval yet", kind="policy", charges=())
    return Decision("allow", rule.key, charges=tuple(charges))


def _default_decision(policy: Policy, call: ToolCall) -> Decision:
    action = policy.default
    if action == "hide":
        return Decision("hide", None, HIDDEN_REASON, kind="default")
    if action == "deny":
        return Decision("deny", None, policy.default_reason or
                        f"{call.name} is not on this policy's list of allowed tools", kind="default")
    if action == "require_approval":
        return Decision("require_approval", None, policy.default_reason or
                        f"calls to {call.name} need a human's approval, and mcp-guard cannot obtain "
                        "approval yet", kind="default")
    return Decision("allow", None, kind="default")


def _case_variant_key(schema: Any, value: Any, where: str) -> str | None:
    """An argument key that is a property of the schema in another case ("Path" for "path"). JSON Schema
    sees another property, unconstrained; a server decoding with Go's encoding/json reads it as the
    constrained one. Refused wherever the schema names properties."""
    if not isinstance(schema, dict) or not isinstance(value, dict):
        return None
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return None
    folded = {name.casefold(): name for name in properties}
    for key, item in value.items():
        if key not in properties:
            other = folded.get(key.casefold())
            if other is not None:
                return (f"argument {where}{key} differs only in case from the constrained argument "
                        f"{where}{other}")
        else:
            problem = _case_variant_key(properties[key], item, f"{where}{key}.")
            if problem is not None:
                return problem
    return None


def _argument_problem(policy: Policy, rule: Rule, arguments: Any) -> str | None:
    """The first violation in words an agent can act on. The offending value itself is not quoted:
    the agent knows what it sent, and the reason also goes to the audit log, which holds no values."""
    from jsonschema.exceptions import best_match

    try:
        error = best_match(policy.validator(rule).iter_errors(arguments))
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
    return float(value)


def _retry_after(used: deque[tuple[float, float]], keep: int, now: float, window: float) -> float:
    """Seconds until enough of the oldest entries leave the window that only `keep` remain."""
    index = len(used) - keep - 1  # entries are oldest first
    if index < 0:
        return 0.0
    return max(0.0, used[index][0] + window - now)


def _budget_retry_after(used: deque[tuple[float, float]], room: float, now: float, window: float) -> float:
    spent = sum(a for _, a in used)
    for t, amount in used:  # oldest first
        spent -= amount
        if spent <= room:
            return max(0.0, t + window - now)
    # Float sums drift (0.1 + 0.2 - 0.1 - 0.2 > 0): once every entry has left, nothing is spent.
    return max(0.0, used[-1][0] + window - now) if used else 0.0
