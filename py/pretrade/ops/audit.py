"""The API's audit log: one JSON line per action (who, role, what, target, when, outcome).

Append-only: each entry is written and flushed before the API answers, so an action that was
answered is on disk. Queries read the file back (an audit log is read rarely and by people).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any


class AuditLog:
    """Append-only JSON-lines file of governance actions."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if self.path.exists() and self.path.stat().st_size:
            with open(self.path, "rb+") as f:  # a line torn by a crash: the next entry starts afresh
                f.seek(-1, 2)
                if f.read(1) != b"\n":
                    f.write(b"\n")

    def write(self, who: str, role: str, action: str, target: dict[str, Any], outcome: str,
              detail: str = "") -> dict[str, Any]:
        """Record one action; outcome is "ok", "error" or "denied". Returns the entry."""
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z",
                 "who": who, "role": role, "action": action, "target": target, "outcome": outcome,
                 "detail": detail}
        line = json.dumps(entry, default=str) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
        return entry

    def query(self, who: str | None = None, action: str | None = None, outcome: str | None = None,
              since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Entries matching every filter given, newest first; `since` is an ISO time prefix-compared."""
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except ValueError:
                    continue  # a torn last line after a crash: skip it, keep the rest
                if (who and e.get("who") != who) or (action and e.get("action") != action) \
                        or (outcome and e.get("outcome") != outcome) or (since and e.get("time", "") < since):
                    continue
                out.append(e)
        return out[::-1][:limit]
