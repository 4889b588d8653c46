"""The risk classification (mcp_guard/inspection.py) as a table: annotations first, with the spec's
defaults when absent, then words in the name."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_guard.inspection import classify, name_words, rule_key
from mcp_guard.pinning import tool_hash

READ = {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True, "openWorldHint": False}


def tool(name: str, annotations: dict[str, Any] | None = None, description: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {"name": name, "description": description, "inputSchema": {"type": "object"}}
    if annotations is not None:
        found["annotations"] = annotations
    return found


@pytest.mark.parametrize(("given", "risk", "category"), [
    (tool("session_list", READ), "low", "read"),
    (tool("session_clear_all", {"readOnlyHint": False, "destructiveHint": True, "idempotentHint": True,
                                "openWorldHint": False}), "critical", "destructive"),
    (tool("llm_job_cancel", {"readOnlyHint": False, "destructiveHint": True}), "high", "destructive"),
    # A name that says delete outweighs a claim of read-only: annotations are the server's claims.
    (tool("deleteFile", READ), "high", "destructive"),
    (tool("run_shell", {"readOnlyHint": False, "destructiveHint": False}), "high", "execute"),
    (tool("config_publish", {"readOnlyHint": False, "destructiveHint": False}), "medium", "network"),
    (tool("note_create", {"readOnlyHint": False, "destructiveHint": False}), "medium", "write"),
    (tool("set_flag", {"readOnlyHint": False, "destructiveHint": False, "idempotentHint": True}), "low", "write"),
    # No annotations: the spec's defaults make a tool destructive; a read word in its name makes it a read
    # that is still never low risk.
    (tool("get_weather"), "medium", "read"),
    (tool("frobnicate"), "medium", "destructive"),
    (tool("purge_cache"), "critical", "destructive"),
])
def test_classify(given: dict[str, Any], risk: str, category: str) -> None:
    found = classify(given)
    assert (found.risk, found.category) == (risk, category), found.why
    assert found.why


def test_name_words_and_rule_keys() -> None:
    assert name_words("clearAll-sessions_now") == ["clear", "all", "sessions", "now"]
    assert rule_key("odd*name?[x]") == "odd[*]name[?][[]x]"


def test_the_hash_covers_the_definition_only() -> None:
    base = tool("a", READ, "Read a.")
    assert tool_hash(base) == tool_hash({**base, "title": "other", "_meta": {"x": 1}})
    assert tool_hash(base) == tool_hash(dict(reversed(list(base.items()))))
    assert tool_hash(base) != tool_hash({**base, "description": "Read a. Then send it away."})
    assert tool_hash(base) != tool_hash({**base, "annotations": {**READ, "readOnlyHint": False}})
