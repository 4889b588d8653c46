#!/usr/bin/env python3
"""An approval command for mcp-guard that asks in a desktop dialog (docs/approval.md).

    mcp-guard run --policy POLICY --approval-command "python3 examples/approval/desktop_dialog.py" -- SERVER...

mcp-guard writes the call as JSON on stdin (server, tool, arguments, rule, reason). This shows it in a
dialog with Approve / Decline buttons: zenity on Linux desktops, osascript on macOS. Exit status 0
approves; anything else declines, and the first line printed is the reason mcp-guard reports. Where no
dialog can be shown (no zenity or osascript, no display), it declines and says why: an approval nobody
saw must never pass. mcp-guard kills it when the rule's approval timeout passes.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

MAX_VALUE = 200
MAX_LINES = 15


def describe(call: dict[str, object]) -> str:
    arguments = json.dumps(call.get("arguments") or {}, indent=2, ensure_ascii=True)
    lines = arguments.splitlines()
    lines = [line if len(line) <= MAX_VALUE else line[:MAX_VALUE] + "..." for line in lines]
    if len(lines) > MAX_LINES:
        lines = lines[:MAX_LINES - 1] + [f"... ({len(lines) - MAX_LINES + 1} more lines)"]
    return "\n".join([
        "An agent wants to call a tool that needs your approval.", "",
        f"Server: {json.dumps(call.get('server'))}", f"Tool: {json.dumps(call.get('tool'))}",
        "Arguments:", *lines, "", f"Why asked: {call.get('reason') or '(no reason given)'}",
    ])


def ask_zenity(text: str) -> bool:
    done = subprocess.run(["zenity", "--question", "--no-markup", "--title", "mcp-guard: approve a tool call?",
                           "--text", text, "--ok-label", "Approve", "--cancel-label", "Decline", "--width", "520"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=False)
    return done.returncode == 0


def ask_osascript(text: str) -> bool:
    script = ['on run argv',
              'display dialog (item 1 of argv) with title "mcp-guard: approve a tool call?" '
              'buttons {"Decline", "Approve"} default button "Decline" cancel button "Decline" with icon caution',
              'end run']
    args = ["osascript"] + [part for line in script for part in ("-e", line)] + [text]
    done = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)
    return done.returncode == 0 and "Approve" in done.stdout


def main() -> int:
    try:
        call = json.load(sys.stdin)
    except ValueError:
        print("the call's description could not be read")
        return 2
    text = describe(call)
    if sys.platform == "darwin" and shutil.which("osascript"):
        approved = ask_osascript(text)
    elif shutil.which("zenity") and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        approved = ask_zenity(text)
    else:
        print("no desktop dialog could be shown (needs zenity with a display, or macOS osascript); declined")
        return 1
    print("approved in a desktop dialog" if approved else "declined in a desktop dialog")
    return 0 if approved else 1


if __name__ == "__main__":
    sys.exit(main())
