"""Engine cases written for mutants that survived scripts/mutation.py over engine.py (in process, like
tests/test_engine.py; docs/reliability.md lists each survivor and what kills it)."""

from __future__ import annotations

import json
from typing import Any

from mcp_guard.engine import Decision, SessionState, ToolCall, decide
from mcp_guard.policy import Policy, loads


def policy(**body: Any) -> Policy:
    return loads(json.dumps({"version": "1", **body}), "test.json")


def allowed(p: Policy, state: SessionState, name: str, arguments: Any, at: float) -> Decision:
    decision = decide(p, ToolCall(name, arguments), state, at)
    if decision.allowed:
        state.record(decision.charges)
    return decision


def test_the_record_carries_retry_after_only_when_there_is_one() -> None:
    assert Decision("deny", "t", "r", retry_after=3.5).as_record() == {
        "action": "deny", "rule": "t", "reason": "r", "retry_after": 3.5}
    assert Decision("deny", "t", "r").as_record() == {"action": "deny", "rule": "t", "reason": "r"}


def test_a_refund_gives_the_budget_back_when_the_rate_entry_has_already_left_its_window() -> None:
    """A call charged to a rate limit (10 s) and a budget (100 s), refunded after the rate entry has left
    its window: the budget part still comes back."""
    p = policy(rules={"t": {"rate_limit": {"max": 5, "window": 10},
                            "budget": {"max": 5, "window": 100, "cost": "/cost"}}})
    state = SessionState()
    first = allowed(p, state, "t", {"cost": 5}, 0.0)
    assert first.allowed and [c.limit for c in first.charges] == ["rate_limit", "budget"]
    assert not allowed(p, state, "t", {"cost": 5}, 20.0).allowed  # the budget is spent; the rate entry is gone
    state.refund(first.charges)
    assert allowed(p, state, "t", {"cost": 5}, 21.0).allowed


def test_only_the_offending_value_is_replaced_in_an_argument_reason() -> None:
    """The value is not quoted back ("the value"), but the limit that happens to read the same is kept."""
    p = policy(rules={"t": {"arguments": {"type": "object", "properties": {"n": {"exclusiveMaximum": 5}}}}})
    reason = decide(p, ToolCall("t", {"n": 5}), SessionState(), 0.0).reason
    assert reason is not None and reason.startswith("argument n: the value ") and reason.endswith(" 5"), reason


def test_no_argument_value_is_quoted_in_a_reason_whatever_its_shape() -> None:
    """Reasons go to the audit log, which holds no values: an object or array argument, or the whole
    arguments object, is not quoted either (they were, secrets included)."""
    p = policy(rules={"t": {"arguments": {"type": "object", "maxProperties": 1,
                                          "properties": {"x": {"type": "string"}, "l": {"maxItems": 1}}}}})
    for arguments in ({"x": {"secret": "hunter2"}}, {"x": "a", "y": "hunter2"}, {"l": ["hunter2", "b"]}):
        reason = decide(p, ToolCall("t", arguments), SessionState(), 0.0).reason
        assert reason is not None and "hunter2" not in reason and "the value" in reason, reason


def test_a_budget_refusal_waits_for_the_last_entry_despite_float_drift() -> None:
    """0.1 + 0.2 spent, then a call costing the whole budget: it fits once both have left the window
    (at 61 s), not at once (the float sum never came back to 0, and the refusal said retry after 0 s)."""
    p = policy(rules={"t": {"budget": {"max": 1, "window": 60, "cost": "/c"}}})
    state = SessionState()
    assert allowed(p, state, "t", {"c": 0.1}, 0.0).allowed
    assert allowed(p, state, "t", {"c": 0.2}, 1.0).allowed
    refused = allowed(p, state, "t", {"c": 1}, 2.0)
    assert not refused.allowed and refused.retry_after == 59.0


def test_a_budget_refusal_says_when_just_enough_has_left() -> None:
    """5 + 5 spent of 10; a call costing 5 fits as soon as the first 5 leaves, not the second."""
    p = policy(rules={"t": {"budget": {"max": 10, "window": 100, "cost": "/c"}}})
    state = SessionState()
    assert allowed(p, state, "t", {"c": 5}, 0.0).allowed
    assert allowed(p, state, "t", {"c": 5}, 10.0).allowed
    assert allowed(p, state, "t", {"c": 5}, 20.0).retry_after == 80.0


def test_a_retry_after_under_a_second_is_said_as_it_is() -> None:
    p = policy(rules={"t": {"budget": {"max": 10, "window": 10, "cost": "/c"}}})
    state = SessionState()
    assert allowed(p, state, "t", {"c": 10}, 0.0).allowed
    assert allowed(p, state, "t", {"c": 1}, 9.5).retry_after == 0.5


def test_a_spent_budget_is_whole_again_once_its_window_has_passed() -> None:
    p = policy(rules={"t": {"budget": {"max": 10, "window": 10, "cost": "/c"}}})
    state = SessionState()
    assert allowed(p, state, "t", {"c": 10}, 0.0).allowed
    assert allowed(p, state, "t", {"c": 10}, 20.0).allowed  # all of it, again
    assert not allowed(p, state, "t", {"c": 1}, 21.0).allowed  # and not a unit more


def test_a_rate_limit_of_one_says_when_to_retry() -> None:
    p = policy(rules={"t": {"rate_limit": {"max": 1, "window": 60}}})
    state = SessionState()
    assert allowed(p, state, "t", {}, 0.0).allowed
    assert allowed(p, state, "t", {}, 1.0).retry_after == 59.0


def test_a_schema_that_cannot_be_evaluated_refuses_the_call() -> None:
    """A recursive schema and an argument nested deeper than the validator can follow: refused with a
    reason (fail closed inside the engine), not an exception."""
    schema = {"$defs": {"n": {"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"}
    p = policy(rules={"t": {"arguments": schema}})
    deep: dict[str, Any] = {}
    for _ in range(600):
        deep = {"a": deep}
    decision = decide(p, ToolCall("t", deep), SessionState(), 0.0)
    assert decision.action == "deny" and decision.reason == "the arguments could not be checked (RecursionError)"


def test_a_cost_pointer_one_past_the_end_of_an_array_is_no_cost() -> None:
    p = policy(rules={"t": {"budget": {"max": 10, "window": 60, "cost": "/items/3"}}})
    decision = decide(p, ToolCall("t", {"items": [1, 2, 3]}), SessionState(), 0.0)
    assert decision.action == "deny" and decision.reason == "the call has no cost at /items/3 in its arguments"
