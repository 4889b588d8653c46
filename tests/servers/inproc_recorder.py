"""A raw stdio JSON-RPC server for the in-process relay tests: records every line it receives to the file
named by RECORD_FILE and answers each request with {"echo": <its params>}."""

import json
import os
import sys

record = open(os.environ["RECORD_FILE"], "ab", buffering=0)  # noqa: SIM115
for line in sys.stdin.buffer:
    record.write(line)
    message = json.loads(line)
    if isinstance(message, dict) and "method" in message and "id" in message:
        answer = {"jsonrpc": "2.0", "id": message["id"], "result": {"echo": message.get("params")}}
        sys.stdout.buffer.write(json.dumps(answer).encode() + b"\n")
        sys.stdout.buffer.flush()
