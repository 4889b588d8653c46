"""The approval commands shipped in examples/approval/: the webhook poster (against a local HTTP service
that approves or declines, and a plain chat webhook that cannot) through the binary, and the desktop
dialog where no dialog can be shown (it must decline, never approve unseen)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEBHOOK = ROOT / "examples" / "approval" / "webhook.py"
DIALOG = ROOT / "examples" / "approval" / "desktop_dialog.py"
SERVER = [sys.executable, str(Path(__file__).resolve().parent / "servers" / "approval_server.py")]
POLICY = {"version": "1", "rules": {"delete_file": {"action": "require_approval", "reason": "ask the team"}}}
CALL = {"server": "s", "tool": "delete_file", "arguments": {"path": "a"}, "rule": "delete_file", "reason": "r"}


class Service:
    """A local approval service: remembers what was posted, answers with `reply`."""

    def __init__(self, reply: bytes) -> None:
        posted: list[Any] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                posted.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                return None

        self.posted = posted
        self.http = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}/ask"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()


@pytest.mark.parametrize(("reply", "approved", "said"), [
    (b'{"approved": true, "reason": "ok from #ops"}', True, None),
    (b'{"approved": false, "reason": "not during the freeze"}', False, "not during the freeze"),
    (b"ok", False, "a plain chat webhook cannot approve"),
])
def test_webhook_through_the_binary(spawn_guard, tmp_path: Path, reply: bytes, approved: bool,
                                    said: str | None) -> None:
    service = Service(reply)
    try:
        command = f"{shlex.quote(sys.executable)} {shlex.quote(str(WEBHOOK))}"
        proc = spawn_guard(SERVER, POLICY, extra=("--approval-command", command),
                           env={"MCP_GUARD_WEBHOOK_URL": service.url})
        proc.initialize()
        answer = proc.request(2, "tools/call", {"name": "delete_file", "arguments": {"path": "/srv/x"}}, timeout=30)
    finally:
        service.close()
    [posted] = service.posted
    assert posted["mcp_guard"]["tool"] == "delete_file" and posted["mcp_guard"]["arguments"] == {"path": "/srv/x"}
    assert "`delete_file`" in posted["text"] and "ask the team" in posted["text"]
    result = answer["result"]
    if approved:
        assert result.get("isError") is not True and result["content"][0]["text"] == "deleted /srv/x"
    else:
        assert result["isError"] is True and said in result["content"][0]["text"]


def test_webhook_unreachable_declines() -> None:
    done = subprocess.run([sys.executable, str(WEBHOOK)], input=json.dumps(CALL), capture_output=True, text=True,
                          env={**os.environ, "MCP_GUARD_WEBHOOK_URL": "http://127.0.0.1:9/nothing"}, timeout=30)
    assert done.returncode == 1 and "could not be reached" in done.stdout


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS would show the dialog")
def test_desktop_dialog_without_a_display_declines() -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    done = subprocess.run([sys.executable, str(DIALOG)], input=json.dumps(CALL), capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 1
    assert done.stdout.splitlines()[0].startswith("no desktop dialog could be shown")
