"""Unit tests of the interceptor's hidden-tool probe and its reading of ambiguous listings (no processes).
The end-to-end proofs are in tests/test_hidden_tools.py and tests/test_ambiguous_listings.py."""

from __future__ import annotations

import json
from typing import Any

from mcp_guard import wire
from mcp_guard.actions import Forward, Reply
from mcp_guard.guard import Guard, ListWatch, read_ambiguous_listing
from mcp_guard.policy import loads

POLICY = loads(json.dumps({"version": "1", "hide": ["secret*"]}))


def message(body: Any) -> wire.Message:
    parsed = wire.parse(body if isinstance(body, bytes) else json.dumps(body).encode(), strict=False)
    assert isinstance(parsed, wire.Message)
    return parsed


def hidden_call(guard: Guard, name: str = "secret", request_id: Any = 1) -> tuple[Forward, str]:
    action = guard.client_request(message({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                                           "params": {"name": name, "arguments": {"a": 1}}}))
    assert isinstance(action, Forward) and action.replacement is not None
    probe = json.loads(action.replacement)
    assert probe["id"] == request_id and probe["params"]["arguments"] == {}
    return action, probe["params"]["name"]


def test_a_listing_that_names_the_probe_makes_the_guard_pick_another():
    guard = Guard(POLICY)
    _, first = hidden_call(guard)
    _, again = hidden_call(guard, request_id=2)
    assert again == first  # one per session...
    listing = message({"jsonrpc": "2.0", "id": 3, "result": {"tools": [{"name": first}]}})
    assert guard.upstream_answer(listing, ListWatch(3)) == Forward()  # passed as it is
    _, after = hidden_call(guard, request_id=4)
    assert after != first  # ...until a server turns out to have it


def answer_to(guard: Guard, action: Forward, line: bytes) -> Forward | Reply:
    return guard.upstream_answer(message(line), action.watch)


def test_the_probe_name_is_replaced_in_the_raw_bytes_with_json_escapes():
    guard = Guard(POLICY)
    action, probe = hidden_call(guard, 'secret "x" \\ é\t\ud800')
    line = ('{"result":{"content":[{"type":"text","text":"MCP error -32602: Tool ' + probe + ' not found"}],'
            '"isError":true},"jsonrpc":"2.0","id":1}').encode()
    answer = answer_to(guard, action, line)
    assert isinstance(answer, Forward) and answer.replacement is not None
    assert answer.replacement == line.replace(probe.encode(), b'secret \\"x\\" \\\\ \xc3\xa9\\t\\ud800')
    text = json.loads(answer.replacement)["result"]["content"][0]["text"]
    assert text == 'MCP error -32602: Tool secret "x" \\ é\t\ud800 not found'


def test_an_answer_without_the_probe_name_passes_unchanged():
    guard = Guard(POLICY)
    action, _ = hidden_call(guard)
    assert answer_to(guard, action, b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"no"}}') == Forward()


def test_a_probe_name_in_another_form_falls_back_to_a_plain_unknown_tool():
    # Escaped, upper-cased or cut short: the answer cannot be made the upstream's own without showing
    # the probe, so the client gets the plain JSON-RPC error mcp-guard answered with before.
    for form in (lambda p: "\\u0074" + p[1:], str.upper, lambda p: p[:14] + "..."):
        guard = Guard(POLICY)
        action, probe = hidden_call(guard)
        line = ('{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"Unknown tool: '
                + form(probe) + '"}],"isError":true}}').encode()
        answer = answer_to(guard, action, line)
        assert answer == Reply(b'{"jsonrpc":"2.0","id":1,"error":{"code":-32602,"message":"Unknown tool: secret"}}')


def test_read_ambiguous_listing_levels():
    head = '{"jsonrpc":"2.0","id":1,'
    line = head + '"result":{"tools":[{"name":"s","name":"e","x":{"a":1,"A":2}}]}}'
    resolved = read_ambiguous_listing(line.encode())
    assert resolved == {"jsonrpc": "2.0", "id": 1, "result": {"tools": [{"name": "e", "x": {"a": 1, "A": 2}}]}}
    for line in (head + '"result":{"tools":[{"name":"e","Name":"s"}]}}',
                 head + '"result":{"tools":[],"Tools":[{"name":"s"}]}}',
                 head + '"result":{"tools":[]},"RESULT":{"tools":[]}}',
                 head + '"result":{"tools":[]},"Id":2}'):
        assert isinstance(read_ambiguous_listing(line.encode()), str), line
