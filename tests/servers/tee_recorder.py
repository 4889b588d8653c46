"""Runs COMMAND [ARGS...] as its child and copies every line the child is sent on stdin to the file
RECORD_FILE first; the child's stdout and stderr are this process's own. Put in front of a real server
(llm-cli-gateway), it shows exactly what reached that server.

    RECORD_FILE=/tmp/seen.jsonl python tee_recorder.py node dist/index.js
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any


def main() -> int:
    record = open(os.environ["RECORD_FILE"], "ab", buffering=0)  # noqa: SIM115
    child = subprocess.Popen(sys.argv[1:], stdin=subprocess.PIPE)
    assert child.stdin is not None

    def stop(signum: int, frame: Any) -> None:  # mcp-guard's SIGTERM goes on to the server
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    for line in sys.stdin.buffer:
        record.write(line if line.endswith(b"\n") else line + b"\n")
        try:
            child.stdin.write(line)
            child.stdin.flush()
        except BrokenPipeError:
            break
    try:
        child.stdin.close()
    except BrokenPipeError:
        pass
    return child.wait()


if __name__ == "__main__":
    sys.exit(main())
