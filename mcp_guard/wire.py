"""JSON-RPC on the wire: parsing lines into messages and building the answers mcp-guard writes itself.

This is the only module that knows message shapes. It does no I/O. Parsing never raises: a bad line
becomes a `Malformed` value that says why, because malformed input is a value, not an exception.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
# Implementation-defined server errors (-32000 to -32099) that mcp-guard itself answers with.
UPSTREAM_EXITED = -32001
MESSAGE_TOO_LARGE = -32002
GUARD_REFUSED = -32003
# mcp-guard could not start (a bad policy, no policy): the answer to the client's first request.
GUARD_NOT_STARTED = -32010

Kind = Literal["request", "notification", "response"]


@dataclass(slots=True)
class Message:
    """One parsed JSON-RPC message, with the exact bytes it arrived as (without the newline)."""

    kind: Kind
    raw: bytes
    body: dict[str, Any]
    method: str | None = None
    id: Any = None
    id_key: str | None = None

    @property
    def params(self) -> Any:
        return self.body.get("params")


@dataclass(slots=True)
class Malformed:
    """A line that is not a usable JSON-RPC message. `id` is the request id when one could be read."""

    reason: str
    code: int = PARSE_ERROR
    id: Any = None
    has_id: bool = False


@dataclass(slots=True)
class Batch:
    """A JSON-RPC batch (a JSON array). MCP since 2025-06-18 has no batches; mcp-guard refuses them."""

    items: list[Any] = field(default_factory=list)


class _DuplicateKey(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # One set of case-folded keys catches both exact duplicates and keys that differ only in case: Go's
    # encoding/json (and so some MCP servers) matches keys case-insensitively, folding ſ to s and K
    # (Kelvin) to k, and keeps the last, so {"name": "a", "Name": "b"} is "b" there.
    if len(pairs) > 1 and len({key.casefold() for key, _ in pairs}) != len(pairs):
        seen: dict[str, str] = {}
        for key, _ in pairs:
            folded = key.casefold()
            if folded in seen:
                other = seen[folded]
                raise _DuplicateKey(f"duplicate key {key!r}" if other == key
                                    else f"keys {other!r} and {key!r} differ only in case")
            seen[folded] = key
    return dict(pairs)


def _strict_object_escaped(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """For lines with escapes: a decoder the Go SDK once used read "name\u0000" as "name"
    (GHSA-q382-vc8q-7jhj), so no control characters in keys at all. JSON strings cannot hold a raw
    control character, so a line without a backslash cannot have one and skips this check."""
    for key, _ in pairs:
        if not key.isprintable() and _CONTROL.search(key):
            raise _DuplicateKey(f"key {key!r} holds a control character")
    return _strict_object(pairs)


_strict_decoder = json.JSONDecoder(object_pairs_hook=_strict_object, parse_constant=_reject_constant)
_strict_escaped_decoder = json.JSONDecoder(object_pairs_hook=_strict_object_escaped, parse_constant=_reject_constant)
_plain_decoder = json.JSONDecoder(parse_constant=_reject_constant)


class AmbiguousObject(dict[str, Any]):
    """A JSON object another reader could read otherwise, as `parse_resolving` builds it: of duplicate
    keys the last is kept (as every reader mcp-guard follows does). `resolved` is False when writing it
    out again cannot remove the ambiguity: keys that differ only in case (Go's encoding/json reads them as
    one) or that hold control characters."""

    __slots__ = ("resolved",)

    def __init__(self, pairs: dict[str, Any], resolved: bool) -> None:
        super().__init__(pairs)
        self.resolved = resolved


def _resolving_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    folded_apart = len(obj) < 2 or len({key.casefold() for key in obj}) == len(obj)
    clean_keys = not any(_CONTROL.search(key) for key in obj)
    if len(obj) == len(pairs) and folded_apart and clean_keys:
        return obj
    return AmbiguousObject(obj, folded_apart and clean_keys)


_resolving_decoder = json.JSONDecoder(object_pairs_hook=_resolving_object, parse_constant=_reject_constant)


def parse_resolving(line: bytes) -> Any:
    """Decode a line that the strict reader refused as ambiguous (raises ValueError or RecursionError
    when it is not JSON at all): every object whose keys another reader could read otherwise is an
    `AmbiguousObject`, so the caller can tell where the ambiguity is and whether writing the value out
    again (`encode`) removes it."""
    return _resolving_decoder.decode(line.decode("utf-8"))


_SURROGATE = re.compile("[\ud800-\udfff]")


def string_content(text: str) -> bytes:
    """`text` as it stands between the quotes of a JSON string, written as the MCP SDKs (Python and
    TypeScript) write it: unicode as is, escapes only where JSON needs them (`\\"`, `\\\\`, control
    characters), and a lone surrogate, which UTF-8 cannot hold, as its `\\u` escape."""
    inner = json.dumps(text, ensure_ascii=False)[1:-1]
    try:
        return inner.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub(lambda match: f"\\u{ord(match.group()):04x}", inner).encode("utf-8")


_SAFE_INTEGER = 2**53
_DECIMAL = re.compile(r"-?[1-9][0-9]{15,}")


def _integer_key(value: int) -> str | None:
    if -_SAFE_INTEGER <= value <= _SAFE_INTEGER:
        return str(value)
    # A JavaScript server reads 9007199254740993 as 9007199254740992: ids that one reads as the same
    # number must be one id here too, or a second request could take the first one's answer.
    try:
        return str(int(float(value)))
    except OverflowError:
        return None


def id_key(value: Any) -> str | None:
    """The key a JSON-RPC id is matched by. SDK clients accept "5" as the answer to 5, so both map to
    "5"; integers beyond 2^53 map as a JavaScript peer rounds them. Returns None for a value that is not
    a usable id: only strings and integers are (the SDKs read 5.0 as no id at all, so a request
    carrying it would never be answered)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        if len(value) > 15 and _DECIMAL.fullmatch(value):
            return _integer_key(int(value)) or value
        return value
    if isinstance(value, int):
        return _integer_key(value)
    return None


def _decode(line: bytes, strict: bool) -> Any:
    if line.startswith(b"\xef\xbb\xbf"):
        raise ValueError("a byte-order mark is not allowed in a JSON-RPC message")
    text = line.decode("utf-8")  # raises UnicodeDecodeError, a ValueError, on invalid UTF-8
    if not strict:
        return _plain_decoder.decode(text)
    return (_strict_escaped_decoder if "\\" in text else _strict_decoder).decode(text)


def parse(line: bytes, *, strict: bool = True) -> Message | Malformed | Batch:
    """Parse one line. `strict` (used for everything the client sends) also refuses duplicate keys,
    because another parser may keep the other value and so read another message than we did."""
    try:
        body = _decode(line, strict)
    except _DuplicateKey as exc:
        request_id = _unambiguous_id(line)
        return Malformed(f"{exc}: the message is ambiguous", INVALID_REQUEST, request_id,
                         request_id is not None)
    except RecursionError:
        return Malformed("JSON nested too deeply")
    except ValueError as exc:
        return Malformed(f"not valid JSON ({_short(exc)})")
    if isinstance(body, list):
        return Batch(body)
    return classify(body, line, strict)


_top_level_pairs = json.JSONDecoder(object_pairs_hook=lambda pairs: pairs, parse_constant=_reject_constant)


def _unambiguous_id(line: bytes) -> Any:
    """The id of a message refused for a duplicate key deeper down, when its top level has none: its
    answer can then carry the id, so the client is not left waiting."""
    try:
        pairs = _top_level_pairs.decode(line.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(pairs, list) or not all(isinstance(p, tuple) for p in pairs):
        return None
    keys = [key for key, _ in pairs]
    if len({key.casefold() for key in keys}) != len(keys):
        return None
    value = dict(pairs).get("id")
    return value if id_key(value) is not None else None


MEMBERS = frozenset({"jsonrpc", "id", "method", "params", "result", "error"})


def classify(body: Any, raw: bytes, strict: bool = False) -> Message | Malformed:
    """Sort a decoded value into request, notification or response, refusing anything else. `strict`
    also refuses a top-level key that is a JSON-RPC member name in another case ("Method", "ID"),
    which a case-insensitive parser upstream would read as that member."""
    if not isinstance(body, dict):
        return Malformed("a JSON-RPC message must be an object", INVALID_REQUEST)
    has_id = "id" in body
    msg_id = body.get("id")
    key = id_key(msg_id) if has_id else None
    # The id to answer a refusal under: any usable one, the empty string included.
    echo_id = msg_id if key is not None else None
    if strict and not body.keys() <= MEMBERS:
        for name in body:
            if name not in MEMBERS and name.casefold() in MEMBERS:
                return Malformed(f"key {name!r} is not {name.casefold()!r}: the message is ambiguous",
                                 INVALID_REQUEST, echo_id, key is not None)
    if body.get("jsonrpc") != "2.0":
        return Malformed('"jsonrpc" must be "2.0"', INVALID_REQUEST, echo_id, key is not None)
    if "method" in body:
        method = body["method"]
        if not isinstance(method, str):
            return Malformed('"method" must be a string', INVALID_REQUEST, echo_id, key is not None)
        if "result" in body or "error" in body:
            return Malformed("a request cannot carry a result or an error", INVALID_REQUEST,
                             echo_id, key is not None)
        if not has_id:
            return Message("notification", raw, body, method)
        if key is None:
            # A float id is answered under that id (the sender can match it) but never forwarded: the
            # SDKs read 5.0 as no id at all, so the upstream would never answer it.
            echo = isinstance(msg_id, float) and math.isfinite(msg_id)
            return Malformed("a request id must be a string or an integer", INVALID_REQUEST,
                             msg_id if echo else None, echo)
        return Message("request", raw, body, method, msg_id, key)
    if has_id and (("result" in body) != ("error" in body)):
        if key is None and msg_id is not None:
            return Malformed("a response id must be a string or a number", INVALID_REQUEST)
        return Message("response", raw, body, None, msg_id, key)
    return Malformed("neither a request, a notification nor a response", INVALID_REQUEST,
                     echo_id, key is not None)


# The start of a message whose id is structurally certain: {"jsonrpc":"2.0","id":ID or {"id":ID.
_ID_HEAD = rb'\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?(?:0|[1-9]\d{0,30})|"(?:[^"\\]|\\.){0,256}")'
_RESPONSE_HEAD = re.compile(_ID_HEAD + rb'\s*,\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"(?:result|error)"\s*:')


_HEAD_ID = re.compile(_ID_HEAD + rb'\s*[,}]')


def head_id(head: bytes) -> Any:
    """Best effort, for a line that cannot be parsed whole (too long, or cut off): its id, but only when
    the line starts the way a message does ({"jsonrpc":"2.0","id":...), so that an "id" somewhere
    inside it (a stray debug print, a nested object) is never taken for it."""
    match = _HEAD_ID.match(head)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if id_key(value) is not None else None


def response_id(line: bytes) -> tuple[Any] | None:
    """The id of a response, read from its first bytes alone, or None when the line does not start
    like a response. This lets a multi-megabyte answer that nothing needs to inspect pass without being
    decoded: the keys before "result" are structurally certain, whatever the rest holds."""
    match = _RESPONSE_HEAD.match(line)
    if match is None or not line.rstrip().endswith(b"}"):
        return None
    token = match.group(1)
    try:
        return (json.loads(token),)
    except ValueError:
        return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:117] + "..."


def encode(body: Any) -> bytes:
    """Serialise a message mcp-guard builds or changes: compact, unicode kept as is. A lone surrogate
    (valid as a JSON escape, not encodable as UTF-8) makes it fall back to escaping everything."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def error_response(request_id: Any, code: int, message: str, data: Any = None) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "id": request_id, "error": error})


def result_response(request_id: Any, result: dict[str, Any]) -> bytes:
    return encode({"jsonrpc": "2.0", "id": request_id, "result": result})


def request(request_id: Any, method: str, params: dict[str, Any] | None = None) -> bytes:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
    if params is not None:
        body["params"] = params
    return encode(body)


class _NumberText(str):
    """A JSON number exactly as it was written: to a server that keeps numbers as text or as decimals,
    1, 1.0, 1e0 and 1.00000000000000001 are four values, so a comparison of arguments must be too."""


_literal_decoder = json.JSONDecoder(parse_float=_NumberText, parse_int=_NumberText,
                                    parse_constant=_reject_constant)


def _canonical(value: Any) -> str:
    if isinstance(value, _NumberText):
        return str.__str__(value)
    if isinstance(value, str):
        return json.dumps(value)  # by value: "\u0041" and "A" are one string to every JSON parser
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(key) + ":" + _canonical(value[key]) for key in sorted(value)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(item) for item in value) + "]"
    return json.dumps(value)  # true, false, null


def call_arguments_fingerprint(line: bytes) -> str | None:
    """The `arguments` of the tools/call in `line` in a canonical form, to tell whether two calls carry
    identical arguments: keys sorted, strings compared by value, numbers exactly as written (any
    difference in how a number is spelled makes another value). A call without `arguments` is one with
    `{}`, as servers and the policy read it. None when the line cannot be read so (the caller then treats
    the calls as different)."""
    try:
        body = _literal_decoder.decode(line.decode("utf-8"))
        params = body.get("params") if isinstance(body, dict) else None
        if not isinstance(params, dict):
            return None
        if "arguments" not in params:
            return "{}"
        return _canonical(params["arguments"])
    except (ValueError, RecursionError):
        return None
