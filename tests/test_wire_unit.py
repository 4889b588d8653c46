"""Unit tests of wire.py: parsing never raises, and refuses what another parser could read differently."""

from __future__ import annotations

import pytest

from mcp_guard import wire


@pytest.mark.parametrize("line,reason", [
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","method\\u0000":"tools/call"}', "control character"),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"arguments":{"path\\u0000":"/etc"}}}', "control character"),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}', "duplicate key 'method'"),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":1,"x":2}}', "duplicate key 'x'"),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","params":{"x":1,"X":2}}', "differ only in case"),
    ('{"jsonrpc":"2.0","id":1,"method":"a","params":{"s":1,"\u017f":2}}'.encode(), "differ only in case"),
    ('{"jsonrpc":"2.0","id":1,"method":"a","params":{"k":1,"\u212a":2}}'.encode(), "differ only in case"),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","Method":"b"}', "differ only in case"),
    (b'{"jsonrpc":"2.0","id":1,"method":"a","METHOD":"b"}', "differ only in case"),
    (b'{"jsonrpc":"2.0","id":1,"result":{},"METHOD":"tools/call"}', "is not 'method'"),
    (b'{"jsonrpc":"2.0","method":"notifications/x","ID":7}', "is not 'id'"),
])
def test_ambiguous_messages_are_refused(line: bytes, reason: str) -> None:
    parsed = wire.parse(line)
    assert isinstance(parsed, wire.Malformed) and parsed.code == wire.INVALID_REQUEST
    assert reason in parsed.reason


def test_a_duplicate_below_the_top_level_keeps_the_id() -> None:
    parsed = wire.parse(b'{"jsonrpc":"2.0","id":23,"method":"a","params":{"name":"x","name":"y"}}')
    assert isinstance(parsed, wire.Malformed) and parsed.id == 23 and parsed.has_id


def test_the_plain_parser_used_for_upstream_lines_keeps_keys_as_they_are() -> None:
    parsed = wire.parse(b'{"jsonrpc":"2.0","id":1,"result":{"a":1,"A":2}}', strict=False)
    assert isinstance(parsed, wire.Message) and parsed.body["result"] == {"a": 1, "A": 2}


@pytest.mark.parametrize("line", [b"", b"{", b"\xff", b"\xef\xbb\xbf{}", b"NaN", b'{"a":NaN}', b"[" * 100000,
                                  b'{"jsonrpc":"2.0","id":1,"method":"a","params":' + b"[" * 100000])
def test_parse_never_raises(line: bytes) -> None:
    assert isinstance(wire.parse(line), (wire.Malformed, wire.Batch, wire.Message))


@pytest.mark.parametrize("value,key", [(5, "5"), ("5", "5"), (2**53, "9007199254740992"),
                                       # as a JavaScript peer reads it: the same id as 2**53
                                       (2**53 + 1, "9007199254740992"), ("9007199254740993", "9007199254740992"),
                                       (10**400, None), ("1" * 400, "1" * 400), ("",  ""),
                                       (5.0, None), (1.5, None), (True, None), (None, None), ([1], None)])
def test_id_key(value: object, key: str | None) -> None:
    assert wire.id_key(value) == key


@pytest.mark.parametrize("head,expected", [
    (b'{"jsonrpc":"2.0","id":7,"result":{"x', 7),
    (b'{"id":"a\\"b","jsonrpc":"2.0"', 'a"b'),
    (b'progress: {"id": 1}', None),
    (b'{"jsonrpc":"2.0","method":"x","params":{"id":1}}', None),
    (b'{"jsonrpc":"2.0","id":5.5,"result":{}}', None),
])
def test_head_id_only_trusts_a_message_shaped_head(head: bytes, expected: object) -> None:
    assert wire.head_id(head) == expected


def test_encode_keeps_lone_surrogates_valid_utf8() -> None:
    data = wire.error_response(1, wire.INVALID_PARAMS, "Unknown tool: \ud800")
    data.decode("utf-8")
    assert b"\\ud800" in data
