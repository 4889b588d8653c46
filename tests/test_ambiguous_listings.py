"""An upstream tools/list answer with duplicate or case-variant keys never reaches the client as the bytes
the upstream wrote (issue 13, item 6). Through the real binary, with a raw upstream whose listings the
test writes byte for byte (tests/servers/listing_server.py).

The policy hides `secret`. Where writing the listing out again as mcp-guard read it (the last of duplicate
keys kept) leaves no other reading of which tools it lists, the client gets that re-serialised, filtered
listing; where it cannot (keys that differ only in case, or hold control characters, in the message, its
result or a tool: Go's encoding/json reads them as one key), the client gets -32603.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wireclient import guard_command

SERVER = Path(__file__).resolve().parent / "servers" / "listing_server.py"
POLICY = {"version": "1", "default": "allow", "hide": ["secret"]}
HEAD = '{"jsonrpc":"2.0","id":__ID__,'
ECHO = '{"name":"echo","inputSchema":{"type":"object"}}'
SECRET = '{"name":"secret","inputSchema":{"type":"object"}}'

# (case, the upstream's answer, the tool names the client must see, or None for a -32603 refusal)
REWRITTEN = [
    ("tool: name twice, hidden first", HEAD + '"result":{"tools":[{"name":"secret","name":"echo"}]}}', ["echo"]),
    ("tool: name twice, hidden last", HEAD + '"result":{"tools":[{"name":"echo","name":"secret"}]}}', []),
    ("tool: schema keys twice", HEAD + '"result":{"tools":[' + SECRET + ',{"name":"echo","inputSchema":'
     '{"type":"object","type":"object"}}]}}', ["echo"]),
    ("result: tools twice", HEAD + '"result":{"tools":[' + SECRET + '],"tools":[' + ECHO + ']}}', ["echo"]),
    ("result: nextCursor twice", HEAD + '"result":{"tools":[' + ECHO + '],"nextCursor":"a","nextCursor":"b"}}',
     ["echo"]),
    ("message: result twice", HEAD + '"result":{"tools":[' + SECRET + ']},"result":{"tools":[' + ECHO + ']}}',
     ["echo"]),
    ("message: jsonrpc twice", '{"jsonrpc":"2.0","jsonrpc":"2.0","id":__ID__,"result":{"tools":[' + ECHO + ']}}',
     ["echo"]),
    ("deep: schema properties differ in case", HEAD + '"result":{"tools":[{"name":"echo","inputSchema":'
     '{"type":"object","properties":{"id":{"type":"string"},"ID":{"type":"string"}}}}]}}', ["echo"]),
]
REFUSED = [
    ("tool: Name and name", HEAD + '"result":{"tools":[{"name":"echo","Name":"secret"}]}}'),
    ("tool: name and NAME, hidden first", HEAD + '"result":{"tools":[{"name":"secret","NAME":"echo"}]}}'),
    ("tool: a control character in a key", HEAD + '"result":{"tools":[{"name\\u0000":"secret","name":"echo"}]}}'),
    ("result: tools and Tools", HEAD + '"result":{"tools":[' + ECHO + '],"Tools":[' + SECRET + ']}}'),
    ("result: tools and toolſ", HEAD + '"result":{"tools":[' + ECHO + '],"toolſ":[' + SECRET + ']}}'),
    ("message: result and Result", HEAD + '"result":{"tools":[' + ECHO + ']},"Result":{"tools":[' + SECRET + ']}}'),
    ("message: Error beside result", HEAD + '"result":{"tools":[' + ECHO + ']},"Error":{"code":1,"message":"x"}}'),
]


def listing_session(spawn_guard: Any, tmp_path: Path, listing: str, stateless: bool = False) -> tuple[Any, Path]:
    sent = tmp_path / "sent.jsonl"
    proc = spawn_guard([sys.executable, str(SERVER)], policy=POLICY,
                       env={"LISTINGS": json.dumps([listing]), "SENT_FILE": str(sent)})
    if not stateless:
        assert "result" in proc.initialize()
    return proc, sent


def list_raw(proc: Any, request_id: Any, params: dict[str, Any] | None = None) -> bytes:
    proc.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/list", "params": params or {}})
    while True:
        line = proc.recv_raw(20)
        assert line is not None, proc.stderr
        message = json.loads(line)
        if isinstance(message, dict) and message.get("id") == request_id and "method" not in message:
            return line


def upstream_listing(sent: Path) -> bytes:
    return [line for line in sent.read_bytes().splitlines() if b'"tools"' in line or b'"Tools"' in line][-1]


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        obj.setdefault(key, value)
    return obj


@pytest.mark.parametrize(("case", "listing", "shown"), REWRITTEN, ids=[c[0] for c in REWRITTEN])
def test_an_ambiguous_listing_is_rewritten_as_read(spawn_guard, tmp_path, case, listing, shown):
    proc, sent = listing_session(spawn_guard, tmp_path, listing)
    raw = list_raw(proc, 4)
    upstream = upstream_listing(sent)
    if json.loads(upstream) != json.loads(upstream, object_pairs_hook=_first_key_wins):
        assert raw != upstream  # never the upstream's bytes when readers could disagree
    # One reading only: a reader that keeps the first of duplicate keys reads what one keeping the last does.
    assert json.loads(raw) == json.loads(raw, object_pairs_hook=_first_key_wins)
    answer = json.loads(raw)
    assert answer["id"] == 4 and [tool["name"] for tool in answer["result"]["tools"]] == shown
    assert b"secret" not in raw


@pytest.mark.parametrize(("case", "listing"), REFUSED, ids=[c[0] for c in REFUSED])
def test_a_listing_that_stays_ambiguous_is_refused(spawn_guard, tmp_path, case, listing):
    proc, _ = listing_session(spawn_guard, tmp_path, listing)
    answer = json.loads(list_raw(proc, "l-1"))
    assert answer == {"jsonrpc": "2.0", "id": "l-1", "error": {
        "code": -32603, "message": "mcp-guard could not read the upstream server's tool list"}}
    # The session goes on.
    assert proc.request(5, "ping", {}) == {"jsonrpc": "2.0", "id": 5, "result": {}}


def test_a_stateless_ambiguous_listing_keeps_its_other_fields(spawn_guard, tmp_path):
    listing = (HEAD + '"result":{"tools":[{"name":"secret","name":"echo"}],"ttlMs":60000,"cacheScope":"session",'
               '"resultType":"complete","_meta":{"k":1,"k":2}}}')
    proc, _ = listing_session(spawn_guard, tmp_path, listing, stateless=True)
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {}}
    raw = list_raw(proc, 2, {"_meta": meta})
    assert json.loads(raw) == json.loads(raw, object_pairs_hook=_first_key_wins)
    answer = json.loads(raw)
    # ttlMs 60000 is cut to a second (live reload: guard.MAX_TTL_MS); the other fields are kept.
    assert answer["result"] == {"tools": [{"name": "echo"}], "ttlMs": 1000, "cacheScope": "session",
                                "resultType": "complete", "_meta": {"k": 2}}


def test_an_ambiguous_error_answer_to_a_listing_is_rewritten(spawn_guard, tmp_path):
    listing = HEAD + '"error":{"code":-32603,"message":"secret","message":"down"}}'
    proc, _ = listing_session(spawn_guard, tmp_path, listing)
    raw = list_raw(proc, 3)
    assert raw == b'{"jsonrpc":"2.0","id":3,"error":{"code":-32603,"message":"down"}}'


def test_a_clean_listing_still_passes_byte_for_byte(spawn_guard, tmp_path):
    listing = '{"id": __ID__, "jsonrpc": "2.0", "result": {"tools": [' + ECHO + '], "x": "\\u00e9"}}'
    proc, sent = listing_session(spawn_guard, tmp_path, listing)
    assert list_raw(proc, 6) == upstream_listing(sent)


def test_check_reports_a_listing_that_stays_ambiguous(tmp_path):
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    listing = HEAD + '"result":{"tools":[{"name":"echo","Name":"secret"}]}}'
    result = subprocess.run([*guard_command(), "check", str(policy), "--", sys.executable, str(SERVER)],
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "LISTINGS": json.dumps([listing])})
    assert result.returncode != 0
    assert "ambiguous" in result.stdout + result.stderr
    assert "will see" not in result.stdout
