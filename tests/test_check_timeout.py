"""`check --timeout` bounds the whole command: a server that never answers tools/list but keeps writing
notifications must not keep `check` alive (issue 19 item 5)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from wireclient import guard_command

TRICKLE = Path(__file__).resolve().parent / "servers" / "trickle_server.py"


def test_check_timeout_is_a_total_limit_against_a_chatty_server(tmp_path: Path) -> None:
    policy = tmp_path / "p.json"
    policy.write_text(json.dumps({"version": "1"}))
    started = time.monotonic()
    proc = subprocess.run([*guard_command(), "check", "--timeout", "2", str(policy), "--", sys.executable,
                           str(TRICKLE)], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, (proc.stdout, proc.stderr)  # not a warning: check could not do its job
    assert "cannot list the server's tools: no tool list within 2 s" in proc.stderr
    # 2 s of listing, then at most ~0.5 s to stop a server that ignores its input's end and SIGTERM,
    # plus start-up; the old per-line timeout never ended (a line every 0.5 s restarted it).
    assert 1.9 <= elapsed < 6.0, elapsed
