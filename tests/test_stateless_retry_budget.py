"""A 2026-07-28 retry is the same logical call only when it carries the very arguments of the call that was
charged (issue 13 item 1). Through the binary, in front of a server written with the SDK's lowlevel
`Server`, whose `requestState` is not sealed to the arguments: a first round costing 0.01 must not buy a
retry costing 1000."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

SERVER = Path(__file__).resolve().parent / "servers" / "lowlevel_input_server.py"
META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {"elicitation": {"form": {}}},
    "io.modelcontextprotocol/clientInfo": {"name": "retry-test", "version": "1"},
}
CONFIRM = {"confirm": {"action": "accept", "content": {"ok": True}}}


def budget_policy(maximum: float) -> dict[str, Any]:
    return {"version": "1", "rules": {"spend": {"budget": {"max": maximum, "window": 3600, "cost": "/amount"}}}}


class Session:
    def __init__(self, spawn_guard: Any, tmp_path: Path, maximum: float) -> None:
        self.spent_log = tmp_path / "spent.log"
        self.proc = spawn_guard([sys.executable, str(SERVER)], budget_policy(maximum),
                                env={"SPENT_LOG": str(self.spent_log)})
        self.next_id = 100
        answer = self.proc.request(1, "server/discover", {"_meta": META}, timeout=30)
        assert answer["result"]["supportedVersions"] == ["2026-07-28"], answer

    def call(self, amount_json: str, state: str | None = None) -> dict[str, Any]:
        """A tools/call whose amount is written exactly as `amount_json` (the spelling matters)."""
        self.next_id += 1
        extra = ("" if state is None
                 else f', "requestState": {json.dumps(state)}, "inputResponses": {json.dumps(CONFIRM)}')
        line = (f'{{"jsonrpc": "2.0", "id": {self.next_id}, "method": "tools/call", "params": {{"name": "spend", '
                f'"arguments": {{"amount": {amount_json}}}, "_meta": {json.dumps(META)}{extra}}}}}')
        self.proc.send(line)
        while True:
            message = self.proc.recv(30)
            if message.get("id") == self.next_id:
                return message

    def first_round(self, amount_json: str) -> str:
        answer = self.call(amount_json)
        result = answer["result"]
        assert result["resultType"] == "input_required", answer
        return result["requestState"]

    def spent(self) -> list[str]:
        return self.spent_log.read_text().split() if self.spent_log.exists() else []


def refusal_reason(answer: dict[str, Any]) -> str:
    result = answer["result"]
    assert result["isError"] is True, answer
    return result["_meta"]["mcp-guard/decision"]["reason"]


def test_a_retry_with_a_larger_cost_is_a_new_call_refused_by_the_whole_budget(spawn_guard, tmp_path):
    s = Session(spawn_guard, tmp_path, 10)
    state = s.first_round("0.01")
    answer = s.call("1000", state)
    assert refusal_reason(answer) == "cost 1000 is more than the whole budget of 10 per 3600 s"
    assert s.spent() == [], "the retry reached the upstream"


def test_a_retry_with_other_arguments_is_charged_in_full(spawn_guard, tmp_path):
    s = Session(spawn_guard, tmp_path, 10)
    state = s.first_round("0.01")
    answer = s.call("6", state)  # fits the budget as a new call: charged 6, and it runs
    assert answer["result"]["content"][0]["text"] == "spent 6", answer
    assert s.spent() == ["6"]
    refused = s.call("5")
    assert refusal_reason(refused) == ("budget exhausted: 6.01 of 10 spent in the last 3600 s, "
                                       "this call costs 5")


def test_the_retry_with_identical_arguments_is_not_charged_again_and_only_once(spawn_guard, tmp_path):
    s = Session(spawn_guard, tmp_path, 10)
    state = s.first_round("4")
    # Same arguments, keys and spelling: the same logical call, its cost taken once.
    assert s.call("4", state)["result"]["content"][0]["text"] == "spent 4"
    assert s.first_round("6")  # 4 + 6 = 10: fits only because the retry took nothing
    # The state was good for one retry: presented again it is a new call, and the budget is spent.
    refused = s.call("4", state)
    assert refusal_reason(refused) == "budget exhausted: 10 of 10 spent in the last 3600 s, this call costs 4"
    assert s.spent() == ["4"]


@pytest.mark.parametrize("retry_spelling", ["1.0", "1e0", "1.00000000000000001"])
def test_numbers_compare_by_their_exact_spelling(spawn_guard, tmp_path, retry_spelling):
    # 1 and 1.0 are one double, but a server that keeps numbers as text or decimals may read them apart:
    # any difference in spelling makes another call, charged in full.
    s = Session(spawn_guard, tmp_path, 2)
    state = s.first_round("1")
    assert "result" in s.call(retry_spelling, state)
    refused = s.call("1")
    assert refusal_reason(refused) == "budget exhausted: 2 of 2 spent in the last 3600 s, this call costs 1"


def test_engine_a_continuation_takes_nothing_but_a_cost_beyond_the_whole_budget_is_refused() -> None:
    from mcp_guard.engine import SessionState, ToolCall, decide
    from mcp_guard.policy import loads

    p = loads(json.dumps({"version": "1", "rules": {"spend": {
        "rate_limit": {"max": 1, "window": 60}, "budget": {"max": 10, "window": 60, "cost": "/amount"}}}}))
    state = SessionState()
    first = decide(p, ToolCall("spend", {"amount": 4}), state, 0.0)
    assert first.allowed and len(first.charges) == 2
    state.record(first.charges)
    retry = decide(p, ToolCall("spend", {"amount": 4}, continuation=True), state, 1.0)
    assert retry.allowed and retry.charges == ()  # the rate limit (1 a minute) is not asked again
    too_big = decide(p, ToolCall("spend", {"amount": 11}, continuation=True), state, 1.0)
    assert too_big.action == "deny" and too_big.reason == "cost 11 is more than the whole budget of 10 per 60 s"
    no_cost = decide(p, ToolCall("spend", {}, continuation=True), state, 1.0)
    assert no_cost.action == "deny" and no_cost.kind == "budget"
