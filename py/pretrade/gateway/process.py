"""Process plumbing of the gateway and the exchange: waiting for a stop signal, and publishing
rows to the tickerplant from a background thread so the order path never waits on IPC."""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from typing import Any

log = logging.getLogger(__name__)


def wait_for_signal() -> None:
    """Block until SIGTERM or SIGINT (call from the main thread)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


class TpPublisher:
    """Rows queued by table and published to a tickerplant in batches by one thread.

    `put(table, row)` never blocks the caller. If the tickerplant is down, rows stay queued (up
    to `max_rows`, then the oldest are dropped with an error in the log) and the thread keeps
    reconnecting. With no address, rows are only counted (a gateway run without --tp).
    """

    def __init__(self, addr: str | None, every_s: float = 0.05, max_rows: int = 1_000_000) -> None:
        self.addr = addr
        self.every_s, self.max_rows = every_s, max_rows
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self.published: dict[str, int] = {}
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="gateway-publisher", daemon=True)
        self._thread.start()

    def put(self, table: str, row: dict[str, Any]) -> None:
        """Queue one row of `table` (a dict of column -> value; time may be left out)."""
        self._q.put((table, row))

    def close(self) -> None:
        """Publish what is queued (best effort) and stop."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _drain(self, pending: dict[str, list]) -> None:
        while True:
            try:
                table, row = self._q.get_nowait()
            except queue.Empty:
                return
            pending.setdefault(table, []).append(row)

    def _run(self) -> None:
        from pretrade.client import connect

        conn = None
        pending: dict[str, list] = {}
        last_error = 0.0
        while True:
            stopping = self._stop.wait(self.every_s)
            self._drain(pending)
            if self.addr is None:
                for t, rows in pending.items():
                    self.published[t] = self.published.get(t, 0) + len(rows)
                pending.clear()
            else:
                try:
                    conn = conn or connect(self.addr, timeout=5.0)
                    for t in list(pending):
                        conn.publish(t, pending[t])
                        self.published[t] = self.published.get(t, 0) + len(pending.pop(t))
                except Exception as e:  # noqa: BLE001 - keep the rows, retry, tell the operator
                    if conn is not None:
                        conn.close()
                    conn = None
                    if time.monotonic() - last_error > 10:
                        log.error("publishing to the tickerplant %s failed (%s); rows kept, retrying", self.addr, e)
                        last_error = time.monotonic()
                    n = sum(len(r) for r in pending.values())
                    if n > self.max_rows:
                        for t in pending:
                            cut = len(pending[t]) * (n - self.max_rows) // n + 1
                            del pending[t][:cut]
                            self.dropped += cut
                        log.error("publisher queue over %d rows: dropped the oldest (%d so far)",
                                  self.max_rows, self.dropped)
            if stopping:
                if conn is not None:
                    conn.close()
                return
