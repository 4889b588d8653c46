"""The decision engine: `decide(policy, ToolCall, SessionState, now)` and `visible(policy, name)`.

Policies are built from dicts through the real loader (`policy.loads`), so every table here is also a
policy a user could write. The clock is injected: `now` is passed in, charges are recorded with
`state.record(decision.charges)` exactly as mcp_guard/guard.py does.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
from typing import Any

import jsonschema  # noqa: F401 - loaded up front so policy.loads validates in-process (no fork per policy)
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_guard.engine import Decision, SessionState, ToolCall, decide, select_rule, visible
from mcp_guard.policy import Policy, loads

RANK = {"allow": 0, "require_approval": 1, "deny": 2, "hide": 3}


def policy(**body: Any) -> Policy:
    return loads(json.dumps({"version": "1", **body}), "test.json")


def windows(p: Policy) -> dict[tuple[str, str], float]:
    """The same map guard.Guard builds: (rule key, limit kind) -> window."""
    return {
        (rule.key, kind): limit.window
        for rule in p.rules
        for kind, limit in (("rate_limit", rule.rate_limit), ("budget", rule.budget))
        if limit is not None
    }


class Session:
    """decide + record, the way the guard drives the engine, with a hand-held clock."""

    def __init__(self, p: Policy) -> None:
        self.policy = p
        self.state = SessionState()
        self.windows = windows(p)

    def call(self, name: str, arguments: Any = None, *, at: float) -> Decision:
        decision = decide(self.policy, ToolCall(name, arguments), self.state, at)
        if decision.allowed and decision.charges:
            self.state.record(decision.charges)
        return decision


def act(p: Policy, name: str, arguments: Any = None) -> Decision:
    return decide(p, ToolCall(name, arguments), SessionState(), 0.0)


# --- precedence ---------------------------------------------------------------------------------

PRECEDENCE = [
    # (policy body, tool name, expected action, expected deciding rule key)
    pytest.param({"rules": {"llm_job_cancel": {"action": "allow"}, "llm_job_*": {"action": "deny"}}},
                 "llm_job_cancel", "allow", "llm_job_cancel", id="exact-allow-beats-glob-deny"),
    pytest.param({"rules": {"llm_job_cancel": {"action": "deny"}, "llm_job_*": {"action": "allow"}}},
                 "llm_job_cancel", "deny", "llm_job_cancel", id="exact-deny-beats-glob-allow"),
    pytest.param({"rules": {"llm_job_cancel": {"action": "deny"}, "llm_job_*": {"action": "allow"}}},
                 "llm_job_status", "allow", "llm_job_*", id="glob-decides-the-others"),
    pytest.param({"hide": ["llm_*"], "rules": {"llm_job_status": {"action": "allow"}}},
                 "llm_job_status", "allow", "llm_job_status", id="exact-allow-beats-hide-glob"),
    pytest.param({"hide": ["llm_*"], "rules": {"llm_job_status": {"action": "allow"}}},
                 "llm_job_cancel", "hide", "llm_*", id="hide-glob-for-the-rest"),
    pytest.param({"rules": {"llm_*": {"action": "deny"}, "llm_job_*": {"action": "allow"}}},
                 "llm_job_result", "allow", "llm_job_*", id="longer-glob-beats-shorter"),
    pytest.param({"rules": {"llm_*": {"action": "deny"}, "llm_job_*": {"action": "allow"}}},
                 "llm_request_result", "deny", "llm_*", id="shorter-glob-when-longer-does-not-match"),
    pytest.param({"rules": {"*": {"action": "allow"}, "*_request": {"action": "require_approval"}}},
                 "codex_request", "require_approval", "*_request", id="longer-glob-beats-star"),
    pytest.param({"hide": ["llm_*"], "rules": {"llm_job_*": {"action": "allow"}}},
                 "llm_job_cancel", "allow", "llm_job_*", id="longer-allow-glob-beats-shorter-hide-glob"),
    pytest.param({"hide": ["llm_job_*"], "rules": {"llm_*": {"action": "allow"}}},
                 "llm_job_cancel", "hide", "llm_job_*", id="longer-hide-glob-beats-shorter-allow-glob"),
    # Length is the key's length in characters, not how "specific" it looks.
    pytest.param({"rules": {"[abcdefgh]*": {"action": "deny"}, "abc_*": {"action": "allow"}}},
                 "abc_1", "deny", "[abcdefgh]*", id="length-is-key-length"),
    # Ties: the more restrictive action wins.
    pytest.param({"hide": ["x"], "rules": {"x": {"action": "allow"}}}, "x", "hide", "x", id="tie-exact-hide-vs-allow"),
    pytest.param({"hide": ["x"], "rules": {"x": {"action": "deny"}}}, "x", "hide", "x", id="tie-exact-hide-vs-deny"),
    pytest.param({"rules": {"a*c": {"action": "allow"}, "ab*": {"action": "deny"}}}, "abc", "deny", "ab*",
                 id="tie-globs-deny-vs-allow"),
    pytest.param({"rules": {"a*c": {"action": "require_approval"}, "ab*": {"action": "allow"}}}, "abc",
                 "require_approval", "a*c", id="tie-globs-approval-vs-allow"),
    pytest.param({"rules": {"a*c": {"action": "require_approval"}, "ab*": {"action": "deny"}}}, "abc", "deny",
                 "ab*", id="tie-globs-deny-vs-approval"),
    pytest.param({"hide": ["a*c"], "rules": {"ab*": {"action": "deny"}}}, "abc", "hide", "a*c",
                 id="tie-globs-hide-entry-vs-deny"),
    pytest.param({"rules": {"a*c": {"action": "hide"}, "ab*": {"action": "deny"}}}, "abc", "hide", "a*c",
                 id="tie-globs-hide-rule-vs-deny"),
    pytest.param({"rules": {"?": {"action": "allow"}, "*": {"action": "deny"}}}, "q", "deny", "*",
                 id="tie-single-char-globs"),
    # No match: the default.
    pytest.param({"rules": {"x": {"action": "deny"}}}, "y", "allow", None, id="default-allow-implicit"),
    pytest.param({"default": "allow", "rules": {"x": {"action": "deny"}}}, "y", "allow", None, id="default-allow"),
    pytest.param({"default": "deny", "rules": {"x": {"action": "allow"}}}, "y", "deny", None, id="default-deny"),
    pytest.param({"default": "hide", "rules": {"x": {"action": "allow"}}}, "y", "hide", None, id="default-hide"),
    pytest.param({"default": "require_approval"}, "y", "require_approval", None, id="default-approval"),
    pytest.param({"default": "deny", "rules": {"x": {"action": "allow"}}}, "x", "allow", "x",
                 id="allow-list-hit"),
    pytest.param({}, "anything", "allow", None, id="empty-policy"),
]


@pytest.mark.parametrize(("body", "name", "action", "rule"), PRECEDENCE)
def test_precedence(body: dict[str, Any], name: str, action: str, rule: str | None) -> None:
    p = policy(**body)
    decision = act(p, name)
    assert (decision.action, decision.rule) == (action, rule)
    assert visible(p, name) == (action != "hide")


ACTIONS = ["allow", "require_approval", "deny", "hide"]


@pytest.mark.parametrize("first", ACTIONS)
@pytest.mark.parametrize("second", ACTIONS)
def test_every_tie_goes_to_the_more_restrictive_action(first: str, second: str) -> None:
    # Insertion order must not matter either: try both orders of the two equally long globs.
    for rules in ({"t?": {"action": first}, "?x": {"action": second}},
                  {"?x": {"action": second}, "t?": {"action": first}}):
        decision = act(policy(rules=rules), "tx")
        assert decision.action == max(first, second, key=RANK.__getitem__)


@pytest.mark.parametrize(("default", "reason_part"), [
    ("deny", "not on this policy's list of allowed tools"),
    ("require_approval", "need a human's approval"),
])
def test_default_refusals_have_reasons(default: str, reason_part: str) -> None:
    decision = act(policy(default=default), "some_tool")
    assert decision.rule is None
    assert decision.kind == "default"
    assert reason_part in (decision.reason or "")
    assert "some_tool" in (decision.reason or "")


def test_default_reason_is_used() -> None:
    p = policy(default="deny", default_reason="only the read-only tools are allowed here")
    assert act(p, "x").reason == "only the read-only tools are allowed here"


def test_default_hide_says_unknown_tool() -> None:
    decision = act(policy(default="hide", default_reason="ignored"), "x")
    assert decision.action == "hide" and decision.reason == "Unknown tool"


def test_rule_reason_and_generated_reasons() -> None:
    p = policy(rules={"a": {"action": "deny", "reason": "not for agents"}, "b": {"action": "deny"},
                      "c": {"action": "require_approval"}, "d": {"action": "hide", "reason": "secret"}})
    assert act(p, "a").reason == "not for agents"
    assert act(p, "b").reason == "calls to b are denied by policy"
    assert "need a human's approval" in (act(p, "c").reason or "")
    assert act(p, "d").reason == "Unknown tool"  # a hidden tool never explains itself


# --- globs --------------------------------------------------------------------------------------

GLOBS = [
    ("*", "", True),
    ("*", "anything at all", True),
    ("llm_*", "llm_job_cancel", True),
    ("llm_*", "llm_", True),
    ("llm_*", "llm", False),
    ("llm_*", "xllm_job", False),  # globs match the whole name, not a part
    ("*_request", "codex_request", True),
    ("*_request", "codex_request_async", False),
    ("tool_?", "tool_1", True),
    ("tool_?", "tool_12", False),
    ("tool_?", "tool_", False),
    ("tool_[0-9]", "tool_7", True),
    ("tool_[0-9]", "tool_x", False),
    ("tool_[!0-9]", "tool_x", True),
    ("tool_[!0-9]", "tool_7", False),
    ("[ab]_*", "a_x", True),
    ("[ab]_*", "c_x", False),
    ("a*", "a/b", True),  # no path semantics: * crosses /
    ("a*", "a\nb", True),  # ... and newlines
    ("a*", "a.b", True),
    ("tool[1]", "tool1", True),  # [1] is a character class ...
    ("tool[1]", "tool[1]", False),  # ... so a literal bracket needs [[]
    ("tool[[]1]", "tool[1]", True),
    # Case-sensitive, and every odd character is a character of its own.
    ("llm_*", "LLM_JOB_CANCEL", False),
    ("llm_*", "Llm_job", False),
    ("LLM_*", "LLM_JOB_CANCEL", True),
    ("llm_job_?", "llm_job_\u00e9", True),  # one code point
    ("llm_job_cancel*", "llm_job_cancel ", True),
    ("llm_job_cancel*", "llm_job_cancel\u200b", True),
]


@pytest.mark.parametrize(("glob", "name", "matches"), GLOBS)
def test_glob_matching(glob: str, name: str, matches: bool) -> None:
    p = policy(default="allow", rules={glob: {"action": "deny"}})
    assert (act(p, name).action == "deny") is matches
    assert (act(p, name).rule == glob) is matches


@pytest.mark.parametrize("other", [
    "LLM_JOB_CANCEL",
    "Llm_job_cancel",
    "llm_job_cancel ",
    " llm_job_cancel",
    "llm_job_cancel\u200b",
    "llm_job_\u200bcancel",
    "llm_job_cancel\n",
    "llm_job_cance1",
    "llm\u2010job\u2010cancel",  # unicode hyphen look-alike
    "llm_job_cancel\x00",
])
def test_look_alike_names_are_other_names(other: str) -> None:
    """An exact rule names exactly one tool: a look-alike is a different name, decided by the default."""
    for default in ("allow", "deny", "hide"):
        p = policy(default=default, hide=["llm_job_cancel"], rules={"session_delete": {"action": "deny"}})
        assert act(p, "llm_job_cancel").action == "hide"
        decision = act(p, other)
        assert decision.rule is None
        assert decision.action == default
        assert visible(p, other) == (default != "hide")


def test_exact_key_with_odd_characters_matches_only_itself() -> None:
    p = policy(default="deny", rules={"tool name with spaces ": {"action": "allow"}, "\u00e9t\u00e9": {}})
    assert act(p, "tool name with spaces ").action == "allow"
    assert act(p, "tool name with spaces").action == "deny"
    assert act(p, "\u00e9t\u00e9").action == "allow"
    assert act(p, "e\u0301te\u0301").action == "deny"  # not normalised: NFD is another name


# --- visible() ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "shown", "hidden"), [
    ({"hide": ["llm_job_cancel", "session_*"]}, ["llm_job_status", "list_models"],
     ["llm_job_cancel", "session_get", "session_clear_all"]),
    ({"default": "hide", "rules": {"list_models": {}, "llm_job_*": {"action": "deny"}}},
     ["list_models", "llm_job_cancel"], ["ask_model", "LIST_MODELS"]),
    ({"rules": {"x*": {"action": "hide"}, "xy": {"action": "require_approval"}}}, ["xy", "y"], ["x", "xz"]),
    ({"default": "deny", "hide": ["*"], "rules": {"keep": {"action": "deny"}}}, ["keep"], ["other", ""]),
])
def test_visible(body: dict[str, Any], shown: list[str], hidden: list[str]) -> None:
    p = policy(**body)
    for name in shown:
        assert visible(p, name), name
        assert act(p, name).action != "hide"
    for name in hidden:
        assert not visible(p, name), name
        decision = act(p, name)
        assert decision.action == "hide" and decision.reason == "Unknown tool"


# --- rate limits --------------------------------------------------------------------------------

def test_rate_limit_sliding_window_with_retry_after() -> None:
    s = Session(policy(rules={"req_*": {"rate_limit": {"max": 2, "window": 10}}}))
    assert s.call("req_a", at=0.0).allowed
    assert s.call("req_a", at=1.0).allowed
    refused = s.call("req_a", at=2.0)
    assert refused.action == "deny" and refused.kind == "rate_limit" and refused.rule == "req_*"
    assert refused.reason == "rate limit reached: at most 2 call(s) per 10 s"
    assert refused.retry_after == pytest.approx(8.0)
    assert refused.charges == ()
    assert s.call("req_a", at=9.5).retry_after == pytest.approx(0.5)
    # The first call leaves the window exactly `window` seconds after it was made.
    assert s.call("req_a", at=10.0).allowed
    later = s.call("req_a", at=10.25)
    assert later.action == "deny" and later.retry_after == pytest.approx(0.75)  # waits for the call at 1.0
    assert s.call("req_a", at=11.0).allowed
    assert s.call("req_a", at=100.0).allowed
    assert s.call("req_a", at=100.0).allowed
    assert s.call("req_a", at=100.0).retry_after == pytest.approx(10.0)


def test_refused_calls_do_not_use_the_limit() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 1, "window": 10}}}))
    assert s.call("t", at=0.0).allowed
    for at in (1.0, 2.0, 5.0, 9.0):
        assert not s.call("t", at=at).allowed
    assert s.call("t", at=10.0).allowed  # refusals at 1..9 did not push the window forward


def test_glob_rule_limit_is_shared_by_its_tools_and_rules_are_separate() -> None:
    s = Session(policy(rules={"*_request": {"rate_limit": {"max": 2, "window": 60}},
                              "ask_model": {"rate_limit": {"max": 1, "window": 60}}}))
    assert s.call("claude_request", at=0.0).allowed
    assert s.call("codex_request", at=1.0).allowed
    refused = s.call("gemini_request", at=2.0)
    assert refused.kind == "rate_limit" and refused.retry_after == pytest.approx(58.0)
    assert s.call("ask_model", at=2.0).allowed  # another rule, another counter
    assert not s.call("ask_model", at=3.0).allowed
    assert s.call("unlimited", at=3.0).allowed


def test_decide_is_pure_until_charges_are_recorded() -> None:
    p = policy(rules={"t": {"rate_limit": {"max": 1, "window": 10}}})
    state = SessionState()
    for _ in range(5):
        decision = decide(p, ToolCall("t", {}), state, 0.0)
        assert decision.allowed
        assert [(c.rule, c.limit, c.amount, c.at) for c in decision.charges] == [("t", "rate_limit", 1, 0.0)]
    assert state.usage == {}


def test_refund_gives_the_call_back() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 1, "window": 10}}}))
    first = s.call("t", at=0.0)
    assert first.allowed
    assert not s.call("t", at=1.0).allowed
    s.state.refund(first.charges)  # the upstream answered with an error
    assert s.call("t", at=1.0).allowed
    s.state.refund(first.charges)  # refunding twice gives back nothing more
    assert not s.call("t", at=2.0).allowed


def test_refund_of_one_call_keeps_the_others() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 2, "window": 10}}}))
    a = s.call("t", at=0.0)
    s.call("t", at=1.0)
    s.state.refund(a.charges)
    assert s.call("t", at=2.0).allowed
    refused = s.call("t", at=3.0)
    assert refused.retry_after == pytest.approx(8.0)  # the call at 1.0 is the oldest left


def test_rate_limit_max_zero_refuses_everything_without_retry_after() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 0, "window": 60}}}))
    decision = s.call("t", at=0.0)
    assert decision.action == "deny" and decision.kind == "rate_limit"
    assert decision.retry_after is None


def test_rate_limit_window_zero_limits_nothing() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 1, "window": 0}}}))
    assert all(s.call("t", at=0.0).allowed for _ in range(20))


def test_fractional_windows_and_large_limits() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 1000, "window": 0.5}}}))
    for i in range(1000):
        assert s.call("t", at=i * 0.0001).allowed
    refused = s.call("t", at=0.2)
    assert refused.retry_after == pytest.approx(0.3)
    assert s.call("t", at=0.5).allowed


def test_require_approval_rule_is_refused_and_takes_nothing() -> None:
    s = Session(policy(rules={"t": {"action": "require_approval", "rate_limit": {"max": 1, "window": 10}}}))
    for at in (0.0, 1.0):
        decision = s.call("t", at=at)
        assert decision.action == "require_approval" and decision.charges == ()
    assert s.state.usage == {}


def test_deny_and_hide_rules_ignore_their_limits() -> None:
    p = policy(rules={"d": {"action": "deny", "rate_limit": {"max": 5, "window": 10}},
                      "h": {"action": "hide", "budget": {"max": 5, "window": 10, "cost": "/n"}}})
    assert act(p, "d").kind == "policy" and act(p, "d").charges == ()
    assert act(p, "h", {}).action == "hide"


# --- budgets ------------------------------------------------------------------------------------

BUDGET = {"spend": {"budget": {"max": 10, "window": 60, "cost": "/amount"}}}


def test_budget_sliding_window_with_retry_after() -> None:
    s = Session(policy(rules=BUDGET))
    assert s.call("spend", {"amount": 4}, at=0.0).allowed
    assert s.call("spend", {"amount": 4}, at=1.0).allowed
    refused = s.call("spend", {"amount": 4}, at=2.0)
    assert refused.action == "deny" and refused.kind == "budget" and refused.rule == "spend"
    assert refused.reason == "budget exhausted: 8 of 10 spent in the last 60 s, this call costs 4"
    assert refused.retry_after == pytest.approx(58.0)  # once the 4 spent at 0 leaves, 4 fits
    assert s.call("spend", {"amount": 2}, at=2.0).allowed  # exactly the whole budget is fine
    refused = s.call("spend", {"amount": 9}, at=3.0)
    assert refused.retry_after == pytest.approx(59.0)  # 9 fits only once all of 4 + 4 + 2 have left (at 62)
    assert s.call("spend", {"amount": 0}, at=3.0).allowed
    assert not s.call("spend", {"amount": 5}, at=60.0).allowed  # 4 + 2 still inside the window
    assert s.call("spend", {"amount": 4}, at=60.0).allowed  # the 4 spent at 0 has left it


def test_budget_charges_the_cost() -> None:
    decision = act(policy(rules=BUDGET), "spend", {"amount": 2.5})
    assert [(c.limit, c.amount) for c in decision.charges] == [("budget", 2.5)]


def test_cost_larger_than_the_whole_budget_has_no_retry_after() -> None:
    decision = act(policy(rules=BUDGET), "spend", {"amount": 10.5})
    assert decision.action == "deny" and decision.kind == "budget"
    assert decision.reason == "cost 10.5 is more than the whole budget of 10 per 60 s"
    assert decision.retry_after is None


@pytest.mark.parametrize(("arguments", "problem"), [
    (None, "the call has no cost at /amount in its arguments"),
    ({}, "the call has no cost at /amount in its arguments"),
    ({"Amount": 1}, "the call has no cost at /amount in its arguments"),
    ({"amount": "4"}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": True}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": None}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": [4]}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": {"value": 4}}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": math.nan}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": math.inf}, "the cost at /amount in the call's arguments is not a number"),
    ({"amount": -1}, "the cost at /amount in the call's arguments is negative"),
    ({"amount": -0.001}, "the cost at /amount in the call's arguments is negative"),
])
def test_calls_without_a_usable_cost_are_refused(arguments: Any, problem: str) -> None:
    s = Session(policy(rules=BUDGET))
    decision = s.call("spend", arguments, at=0.0)
    assert decision.action == "deny" and decision.kind == "budget"
    assert decision.reason == problem
    assert decision.charges == ()


def test_huge_integer_cost_is_refused_not_a_crash() -> None:
    arguments = json.loads('{"amount": 1' + "0" * 400 + "}")
    decision = act(policy(rules=BUDGET), "spend", arguments)
    assert decision.action == "deny" and decision.kind == "budget"


@pytest.mark.parametrize(("pointer", "arguments", "cost"), [
    ("/a/b", {"a": {"b": 3}}, 3.0),
    ("/a/1", {"a": [1, 7]}, 7.0),
    ("/x~1y", {"x/y": 2}, 2.0),
    ("/x~0y", {"x~y": 5}, 5.0),
    ("/", {"": 6}, 6.0),
])
def test_cost_json_pointers(pointer: str, arguments: Any, cost: float) -> None:
    p = policy(rules={"t": {"budget": {"max": 100, "window": 60, "cost": pointer}}})
    decision = act(p, "t", arguments)
    assert decision.allowed
    assert decision.charges[0].amount == cost


def test_budget_refund() -> None:
    s = Session(policy(rules=BUDGET))
    big = s.call("spend", {"amount": 9}, at=0.0)
    assert not s.call("spend", {"amount": 2}, at=1.0).allowed
    s.state.refund(big.charges)
    assert s.call("spend", {"amount": 2}, at=1.0).allowed


def test_rate_limit_and_budget_together() -> None:
    s = Session(policy(rules={"t": {"rate_limit": {"max": 3, "window": 60},
                                    "budget": {"max": 10, "window": 60, "cost": "/n"}}}))
    first = s.call("t", {"n": 6}, at=0.0)
    assert sorted(c.limit for c in first.charges) == ["budget", "rate_limit"]
    refused = s.call("t", {"n": 6}, at=1.0)
    assert refused.kind == "budget" and refused.charges == ()
    # The budget refusal did not take a call from the rate limit: two more calls still fit.
    assert s.call("t", {"n": 1}, at=2.0).allowed
    assert s.call("t", {"n": 1}, at=3.0).allowed
    assert s.call("t", {"n": 1}, at=4.0).kind == "rate_limit"


# --- argument constraints -----------------------------------------------------------------------

RUN = {"run": {"arguments": {
    "type": "object",
    "properties": {"cmd": {"enum": ["ls", "pwd"]}, "paths": {"type": "array", "items": {"type": "string"}},
                   "opts": {"type": "object", "properties": {"depth": {"type": "integer", "maximum": 3}}}},
    "required": ["cmd"],
    "additionalProperties": False,
}}}


@pytest.mark.parametrize(("arguments", "fragments"), [
    ({"cmd": "rm"}, ["argument cmd", "the value is not one of ['ls', 'pwd']"]),
    ({}, ["the arguments", "'cmd' is a required property"]),
    (None, ["the arguments", "'cmd' is a required property"]),
    ({"cmd": "ls", "sudo": True}, ["the arguments", "Additional properties", "'sudo'"]),
    ({"cmd": "ls", "paths": ["a", 7]}, ["argument paths[1]", "the value is not of type 'string'"]),
    ({"cmd": "ls", "opts": {"depth": 9}}, ["argument opts.depth", "the value is greater than the maximum of 3"]),
])
def test_argument_violation_is_named_in_the_reason(arguments: Any, fragments: list[str]) -> None:
    decision = act(policy(rules=RUN), "run", arguments)
    assert decision.action == "deny" and decision.kind == "arguments" and decision.rule == "run"
    for fragment in fragments:
        assert fragment in (decision.reason or ""), decision.reason


@pytest.mark.parametrize("arguments", [{"cmd": "ls"}, {"cmd": "pwd", "paths": ["/tmp"], "opts": {"depth": 3}}])
def test_arguments_that_satisfy_the_schema_pass(arguments: Any) -> None:
    assert act(policy(rules=RUN), "run", arguments).allowed


def test_argument_rule_with_reason_says_the_reason() -> None:
    rules = {"run": {**RUN["run"], "reason": "only ls and pwd"}}
    # The policy's reason first, then the violation, so the agent can still see what to change.
    assert act(policy(rules=rules), "run", {"cmd": "rm"}).reason == (
        "only ls and pwd (argument cmd: the value is not one of ['ls', 'pwd'])")


def test_boolean_argument_schemas() -> None:
    p = policy(rules={"never": {"arguments": False}, "always": {"arguments": True}})
    assert act(p, "never", {}).kind == "arguments"
    assert act(p, "always", {"anything": [1]}).allowed


def test_bad_arguments_do_not_use_the_rate_limit() -> None:
    rules = {"run": {**RUN["run"], "rate_limit": {"max": 1, "window": 60}}}
    s = Session(policy(rules=rules))
    for _ in range(3):
        assert s.call("run", {"cmd": "rm"}, at=0.0).kind == "arguments"
    assert s.call("run", {"cmd": "ls"}, at=0.0).allowed
    assert s.call("run", {"cmd": "ls"}, at=0.0).kind == "rate_limit"


def test_argument_schema_applies_per_rule_through_globs() -> None:
    p = policy(rules={"*_request": {"arguments": {"properties": {"model": {"const": "small"}}}}})
    assert act(p, "codex_request", {"model": "small"}).allowed
    assert act(p, "claude_request", {"model": "big"}).kind == "arguments"
    assert act(p, "ask_model", {"model": "big"}).allowed  # not matched by the rule


@pytest.mark.parametrize("ref,problem", [("#/$defs/missing", "points to nothing"),
                                         ("https://example.com/s.json", "points outside the policy")])
def test_unresolvable_ref_is_a_load_error_not_a_crash_per_call(ref: str, problem: str) -> None:
    from mcp_guard.policy import PolicyError

    with pytest.raises(PolicyError, match=re.escape(problem)):
        policy(rules={"t": {"arguments": {"$ref": ref}}})


def test_cost_pointer_with_unicode_digit_token_does_not_crash() -> None:
    p = policy(rules={"t": {"budget": {"max": 10, "window": 60, "cost": "/items/\u00b2"}}})
    decision = act(p, "t", {"items": [1, 2, 3]})
    assert decision.action == "deny" and decision.kind == "budget"


# --- properties ---------------------------------------------------------------------------------

NAME_ALPHABET = st.sampled_from(list("ab_") + ["A", " ", "\u200b", "\n", "["])
KEY_PARTS = st.sampled_from(["a", "b", "_", "A", "*", "?", "[ab]", "[!a]", " ", "\u200b"])
keys = st.lists(KEY_PARTS, min_size=1, max_size=5).map("".join)
names = st.lists(NAME_ALPHABET, min_size=0, max_size=6).map("".join)
actions = st.sampled_from(ACTIONS)


@st.composite
def policies(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"default": draw(actions)}
    rules = draw(st.dictionaries(keys, st.fixed_dictionaries({"action": actions}), max_size=6))
    for spec in rules.values():
        if spec["action"] in ("allow", "require_approval") and draw(st.booleans()):
            spec["rate_limit"] = {"max": draw(st.integers(0, 2)), "window": 10}
    body["rules"] = rules
    body["hide"] = draw(st.lists(keys, max_size=3))
    return body


def reference_decider(body: dict[str, Any], name: str) -> tuple[str, set[str | None]]:
    """An independent statement of the precedence rules, with fnmatch as the glob matcher."""
    entries = [(key, spec.get("action", "allow")) for key, spec in body["rules"].items()]
    entries += [(key, "hide") for key in body["hide"]]
    matching = []
    for key, action in entries:
        glob = any(ch in key for ch in "*?[")
        if (fnmatch.fnmatchcase(name, key) if glob else name == key):
            matching.append(((0 if glob else 1, len(key), RANK[action]), key, action))
    if not matching:
        return body["default"], {None}
    best = max(rank for rank, _, _ in matching)
    # Two equally long keys with the same action: either may be named as the deciding rule.
    action = next(a for r, _, a in matching if r == best)
    return action, {k for r, k, _ in matching if r == best}


PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(policies(), st.lists(names, min_size=1, max_size=8))
def test_visible_iff_decide_hides(body: dict[str, Any], tool_names: list[str]) -> None:
    p = policy(**body)
    for name in tool_names:
        assert visible(p, name) == (act(p, name).action != "hide")


@PROPERTY
@given(policies(), st.lists(names, min_size=1, max_size=8), st.lists(st.floats(0, 30), max_size=6))
def test_hidden_or_denied_names_are_never_allowed(body: dict[str, Any], tool_names: list[str],
                                                  times: list[float]) -> None:
    p = policy(**body)
    s = Session(p)
    for at in sorted(times):  # whatever has been used already
        for name in tool_names:
            s.call(name, {}, at=at)
    for name in tool_names:
        rule = select_rule(p, name)
        action = rule.action if rule else p.default
        decision = s.call(name, {}, at=31.0)
        if not visible(p, name) or action in ("deny", "hide"):
            assert not decision.allowed
            assert decision.action == action
        if decision.allowed:
            assert visible(p, name)


@PROPERTY
@given(policies(), names)
def test_precedence_matches_a_reference(body: dict[str, Any], name: str) -> None:
    p = policy(**body)
    decision = act(p, name)
    expected_action, expected_keys = reference_decider(body, name)
    assert decision.rule in expected_keys
    if decision.kind == "rate_limit":  # max 0: an allow rule that refuses everything
        assert expected_action in ("allow", "require_approval")
    else:
        assert decision.action == expected_action


def test_an_argument_key_in_another_case_than_a_constrained_property_is_refused() -> None:
    # JSON Schema sees "Path" as another, unconstrained property; Go's encoding/json reads it as "path".
    p = policy(rules={"read": {"arguments": {"type": "object", "properties": {
        "path": {"type": "string", "pattern": "^/tmp/"},
        "opts": {"type": "object", "properties": {"mode": {"enum": ["r"]}}}}}}})
    assert act(p, "read", {"path": "/tmp/x"}).allowed
    refused = act(p, "read", {"Path": "/etc/shadow"})
    assert refused.action == "deny" and "differs only in case" in (refused.reason or "")
    assert act(p, "read", {"path": "/tmp/x", "opts": {"MODE": "w"}}).action == "deny"
    assert act(p, "read", {"path": "/tmp/x", "other": 1}).allowed  # not a constrained name: the schema decides


def test_zero_cost_calls_leave_no_entries() -> None:
    p = policy(rules={"spend": {"budget": {"max": 10, "window": 60, "cost": "/c"}}})
    state = SessionState()
    for i in range(1000):
        decision = decide(p, ToolCall("spend", {"c": 0}), state, float(i) / 1000)
        assert decision.allowed and decision.charges == ()
        state.record(decision.charges)
    assert not state.usage.get(("spend", "budget"))
