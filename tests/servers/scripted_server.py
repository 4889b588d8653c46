"""A raw (no SDK) stdio JSON-RPC server that misbehaves on cue: the upstream of the session properties.

Every line received is appended (exact bytes) to RECORD_FILE before anything else is done with it. Each
received *request* (a message with a method and an id, in order of arrival) consumes the next step of the
script; requests beyond the end of the script are simply answered. Notifications and responses (the
client's answers to this server's own requests) are recorded and otherwise ignored: never answered.

Environment:
  SCRIPT       JSON list of steps (default []). A step is an object; every key is optional:
                 "action":   "answer" (default) | "hold" (keep the answer back until released) |
                             "crash" (os._exit(status) at once, before answering or writing anything)
                 "status":   the exit status of a crash (default 1)
                 "request":  {"id": ID, "method": "ping" | "roots/list" | ...}: first write a request of the
                             server's own to the client
                 "list_changed": true: first send notifications/tools/list_changed
                 "garbage":  "junk" (first write a line that is not JSON) | "head" (first write a line cut
                             off after this request's id: {"jsonrpc":"2.0","id":ID,"result":{"tools":[ )
                 "string_id": true: answer with the id turned into a string (5 -> "5")
                 "error":    true: answer a tools/call with a JSON-RPC error (-32000) instead of a result
                 "release":  "reverse" | "shuffle" | "fifo": after this request, write every held answer,
                             in that order
  TOOLS        comma-separated tool names (default "allowed")
  PAGE_SIZE    tools per tools/list page (default 0: one page); cursors are "page-N"
  RECORD_FILE  append every received line here
  SENT_FILE    append every line written to stdout here (optional)
  PID_FILE     write this process's pid here at start (optional)
  IDLE_RELEASE seconds without input after which held answers are written anyway, in reverse order
               (default 0.15): a held answer is late, never lost, so a session does not wait on a drain
  SEED         seed for the "shuffle" order (default 0)

At EOF on stdin, held answers are written (reverse order) and the server exits 0.
"""

from __future__ import annotations

import json
import os
import random
import select
import sys

SCRIPT = json.loads(os.environ.get("SCRIPT") or "[]")
TOOLS = [name for name in (os.environ.get("TOOLS") or "allowed").split(",") if name]
PAGE_SIZE = int(os.environ.get("PAGE_SIZE") or 0)
IDLE_RELEASE = float(os.environ.get("IDLE_RELEASE") or 0.15)
RNG = random.Random(int(os.environ.get("SEED") or 0))

_record = open(os.environ["RECORD_FILE"], "ab", buffering=0) if os.environ.get("RECORD_FILE") else None  # noqa: SIM115
_sent = open(os.environ["SENT_FILE"], "ab", buffering=0) if os.environ.get("SENT_FILE") else None  # noqa: SIM115
if os.environ.get("PID_FILE"):
    with open(os.environ["PID_FILE"], "w") as f:
        f.write(str(os.getpid()))

OUT = sys.stdout.fileno()
IN = sys.stdin.fileno()

held: list[bytes] = []
step_no = 0


def write_line(data: bytes) -> None:
    data += b"\n"
    if _sent is not None:
        _sent.write(data)
    view = memoryview(data)
    while view:
        view = view[os.write(OUT, view):]


def send(obj: dict) -> None:
    write_line(json.dumps(obj).encode())


def tool_def(name: str) -> dict:
    return {"name": name, "description": f"the {name} tool", "inputSchema": {"type": "object"}}


def answer_for(msg: dict, step: dict) -> bytes:
    method = msg["method"]
    request_id = msg["id"]
    params = msg.get("params") if isinstance(msg.get("params"), dict) else {}
    answer_id = str(request_id) if step.get("string_id") else request_id

    def result(body: dict) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": answer_id, "result": body}).encode()

    def error(code: int, message: str) -> bytes:
        return json.dumps({"jsonrpc": "2.0", "id": answer_id, "error": {"code": code, "message": message}}).encode()

    if method == "initialize":
        return result({"protocolVersion": params.get("protocolVersion", "2025-11-25"),
                       "capabilities": {"tools": {"listChanged": True}},
                       "serverInfo": {"name": "scripted-server", "version": "1"}})
    if method == "ping":
        return result({})
    if method == "tools/list":
        cursor = params.get("cursor")
        start = 0
        if cursor is not None:
            if not (isinstance(cursor, str) and cursor.startswith("page-") and cursor[5:].isdigit()):
                return error(-32602, "Invalid cursor")
            start = int(cursor[5:])
        size = PAGE_SIZE if PAGE_SIZE > 0 else max(1, len(TOOLS))
        body: dict = {"tools": [tool_def(name) for name in TOOLS[start:start + size]]}
        if start + size < len(TOOLS):
            body["nextCursor"] = f"page-{start + size}"
        return result(body)
    if method == "tools/call":
        name = params.get("name")
        if name not in TOOLS:
            return error(-32602, f"Unknown tool: {name}")
        if step.get("error"):
            return error(-32000, f"{name} failed upstream")
        return result({"content": [{"type": "text", "text": json.dumps({"tool": name})}], "isError": False})
    return error(-32601, f"Method not found: {method}")


def release(order: str) -> None:
    global held
    answers, held = held, []
    if order == "reverse":
        answers.reverse()
    elif order == "shuffle":
        RNG.shuffle(answers)
    for line in answers:
        write_line(line)


def handle(line: bytes) -> None:
    global step_no
    try:
        msg = json.loads(line)
    except ValueError:
        return
    if not isinstance(msg, dict) or not isinstance(msg.get("method"), str) or "id" not in msg:
        return  # a notification, or the client's answer to one of our requests: nothing to say
    step = SCRIPT[step_no] if step_no < len(SCRIPT) and isinstance(SCRIPT[step_no], dict) else {}
    step_no += 1
    action = step.get("action", "answer")
    if action == "crash":
        os._exit(int(step.get("status", 1)))
    if isinstance(step.get("request"), dict):
        own = step["request"]
        send({"jsonrpc": "2.0", "id": own.get("id", "srv-0"), "method": own.get("method", "ping"),
              **({"params": own["params"]} if "params" in own else {})})
    if step.get("list_changed"):
        send({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
    if step.get("garbage") == "junk":
        write_line(b"DEBUG: handling a request, id=" + json.dumps(msg["id"]).encode() + b" {not json")
    elif step.get("garbage") == "head":
        write_line(b'{"jsonrpc":"2.0","id":' + json.dumps(msg["id"]).encode() + b',"result":{"tools":[')
    answer = answer_for(msg, step)
    if action == "hold":
        held.append(answer)
    else:
        write_line(answer)
    if step.get("release"):
        release(step["release"])


def main() -> None:
    buffer = b""
    while True:
        if held:
            ready, _, _ = select.select([IN], [], [], IDLE_RELEASE)
            if not ready:
                release("reverse")
                continue
        data = os.read(IN, 65536)
        if not data:
            break
        buffer += data
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if _record is not None:
                _record.write(line + b"\n")
            handle(line)
    if buffer:
        if _record is not None:
            _record.write(buffer + b"\n")
        handle(buffer)
    release("reverse")
    os._exit(0)


if __name__ == "__main__":
    main()
