#!/usr/bin/env python3
"""An approval command for mcp-guard that asks a team through a webhook (docs/approval.md).

    MCP_GUARD_WEBHOOK_URL=https://approvals.example.com/ask \\
    mcp-guard run --policy POLICY --approval-command "python3 examples/approval/webhook.py" -- SERVER...

mcp-guard writes the call as JSON on stdin (server, tool, arguments, rule, reason). This POSTs it, as
JSON, to $MCP_GUARD_WEBHOOK_URL: `text` (a message written for a chat channel, which Slack, Mattermost
and Discord-compatible incoming webhooks show as is) and `mcp_guard` (the call itself, for a bot).

The answer decides. A service that holds the request until someone clicks answers with a JSON object
`{"approved": true | false, "reason": "..."}`: exit status 0 approves, 1 declines, with the reason as
the first line. Any other answer (a plain chat webhook answers "ok") only tells the channel: the call
is declined, saying so, because nobody approved it. mcp-guard kills this command when the rule's
approval timeout passes, so a service that never answers refuses the call.

Uses only the standard library (urllib). $MCP_GUARD_WEBHOOK_TOKEN, when set, is sent as a bearer token.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

MAX_VALUE = 300


def message(call: dict[str, object]) -> str:
    arguments = json.dumps(call.get("arguments") or {}, ensure_ascii=True)
    if len(arguments) > MAX_VALUE:
        arguments = arguments[:MAX_VALUE] + "..."
    return (f"mcp-guard: an agent wants to call `{call.get('tool')}` on `{call.get('server')}`\n"
            f"Arguments: `{arguments}`\nWhy asked: {call.get('reason') or '(no reason given)'}")


def main() -> int:
    url = os.environ.get("MCP_GUARD_WEBHOOK_URL")
    if not url:
        print("MCP_GUARD_WEBHOOK_URL is not set; declined")
        return 2
    try:
        call = json.load(sys.stdin)
    except ValueError:
        print("the call's description could not be read")
        return 2
    body = json.dumps({"text": message(call), "mcp_guard": call}).encode()
    headers = {"Content-Type": "application/json"}
    if os.environ.get("MCP_GUARD_WEBHOOK_TOKEN"):
        headers["Authorization"] = f"Bearer {os.environ['MCP_GUARD_WEBHOOK_TOKEN']}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    wait = float(os.environ.get("MCP_GUARD_WEBHOOK_TIMEOUT", "3600"))  # mcp-guard's own timeout kills it sooner
    try:
        with urllib.request.urlopen(request, timeout=wait) as answer:  # noqa: S310 - the user's own URL
            raw = answer.read(65536)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"the webhook could not be reached ({getattr(exc, 'reason', exc)}); declined")
        return 1
    try:
        verdict = json.loads(raw)
    except ValueError:
        verdict = None
    if not isinstance(verdict, dict) or not isinstance(verdict.get("approved"), bool):
        print("posted to the team channel, but a plain chat webhook cannot approve; declined")
        return 1
    reason = str(verdict.get("reason") or ("approved through the webhook" if verdict["approved"]
                                           else "declined through the webhook")).splitlines()[0]
    print(reason)
    return 0 if verdict["approved"] else 1


if __name__ == "__main__":
    sys.exit(main())
