"""Decision records: one JSON line per decision, for people and for tests to assert on.

Arguments are never written whole (they may hold secrets): a record names the argument keys only.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any, TextIO

log = logging.getLogger("mcp_guard")


class AuditLog:
    def __init__(self, path: str | None, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._file: TextIO | None = None
        self.session = f"{os.getpid()}-{int(time.time())}"
        self.enabled = bool(path)
        self._failed = False
        if path:
            # Line-buffered append: each record lands whole even if mcp-guard is killed afterwards.
            self._file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115

    def record(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        now = self._clock()  # read once: seconds and milliseconds from two reads can be 1 s apart
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z",
                 "session": self.session, "event": event, **fields}
        line = json.dumps(entry, ensure_ascii=False, default=str)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in a name: escape, never lose the record
            line = json.dumps(entry, ensure_ascii=True, default=str)
        try:
            self._file.write(line + "\n")
        except OSError as exc:
            # The decision stands either way; a full disk must not turn every call into a refusal.
            if not self._failed:
                self._failed = True
                log.error("cannot write the audit file %s: %s", self.path, exc.strerror or exc)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
