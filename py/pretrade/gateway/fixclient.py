"""A small QuickFIX initiator: log on (with a password in tag 554), send orders, collect the
answers. The tests and scripts/bench_gateway.py use it as "the client"; an operator can too."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

from pretrade.gateway import messages as m


class FixInitiator:
    """One FIX 4.4 initiator session SENDER -> TARGET at host:port."""

    def __init__(self, workdir: Path, port: int, sender: str, target: str, password: str | None = None,
                 host: str = "127.0.0.1") -> None:
        from pretrade.gateway.sessions import FixEngine, application, settings

        self.received: queue.Queue = queue.Queue()
        self.admin: queue.Queue = queue.Queue()
        self.logged_on = threading.Event()
        self.logged_out = threading.Event()
        self.sid = None
        outer = self

        def on_create(sid):
            outer.sid = sid

        def on_logon(sid):
            outer.logged_out.clear()
            outer.logged_on.set()

        def on_logout(sid):
            outer.logged_on.clear()
            outer.logged_out.set()

        def to_admin(msg, sid):
            if password is not None and m.msg_type(msg) == m.LOGON:
                msg.setField(m.PASSWORD, password)

        self.app = application(on_create, on_logon, on_logout, to_admin,
                               from_admin=lambda msg, sid: outer.admin.put(msg.toString()),
                               from_app=lambda msg, sid: outer.received.put(m.parse_fields(msg)))
        s = settings("initiator", Path(workdir), [], sender=sender, target=target, host=host, port=port)
        self.initiator = FixEngine("initiator", self.app, s).start()

    def wait_logon(self, timeout: float = 10.0) -> bool:
        """True once the session is logged on (False after `timeout` seconds)."""
        return self.logged_on.wait(timeout)

    def send(self, msg_type: str, fields: dict[int, Any]) -> None:
        """Send one application message."""
        import quickfix as fix

        fix.Session.sendToTarget(m.build(msg_type, fields), self.sid)

    def next(self, timeout: float = 5.0) -> dict[int, str]:
        """The next application message received, as {tag: value}; queue.Empty after timeout."""
        return self.received.get(timeout=timeout)

    def until(self, pred, timeout: float = 5.0) -> dict[int, str]:
        """The first message received for which pred(msg) is true (others are dropped)."""
        end = time.monotonic() + timeout
        while True:
            msg = self.received.get(timeout=max(0.0, end - time.monotonic()))
            if pred(msg):
                return msg

    def stop(self) -> None:
        """Log out and stop the initiator."""
        self.initiator.stop()

