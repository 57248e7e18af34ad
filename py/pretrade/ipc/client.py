"""Blocking kdb+ IPC client: log in, query (sync), send async, receive published messages.

    with QClient("localhost", 5010) as q:
        q.query(".u.sub", "trade", "")        # (`.u.sub; `trade; `): a function call
        q.query("s)select count(*) from trade")  # one str: sent as a char vector expression
        msg = q.receive(timeout=1.0)          # next async message, e.g. ["upd", "trade", df]

Argument shapes: one str is an expression (a char vector); several arguments are a call whose
first item is the function name (a symbol) and whose str arguments are symbols; pass bytes for a
string argument.
"""

from __future__ import annotations

import collections
import socket
from typing import Any

from pretrade.ipc import codec, wire
from pretrade.ipc.codec import QError

__all__ = ["QClient", "QAuthError", "QError", "parse_addr"]


class QAuthError(ConnectionError):
    """The server closed the connection during the handshake: wrong user or password."""


def parse_addr(addr: str) -> tuple[str, int]:
    """ "host:port" -> (host, port); ":5010" and "5010" mean localhost. ValueError if malformed."""
    text = str(addr).strip()
    if text.startswith(":"):
        text = text[1:]
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host or "localhost"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad address {addr!r}: expected host:port, :port or port")
    return host, int(port)


def payload_of(args: tuple) -> bytes:
    """The q object for a query's arguments (see the module docstring for the shapes)."""
    if not args:
        raise ValueError("nothing to send")
    if len(args) == 1:
        a = args[0]
        return codec.encode(a.encode("utf-8") if isinstance(a, str) else a)
    return codec.encode(list(args))


class QClient:
    """One connection to a kdb+ IPC server (q, or a pretrade process). Not thread-safe."""

    def __init__(
        self,
        host: str = "localhost",
        port: int = 5010,
        user: str = "",
        password: str = "",
        timeout: float | None = 10.0,
    ) -> None:
        self.host, self.port, self.user, self.timeout = host, port, user, timeout
        self._pending: collections.deque[tuple[int, bytes]] = collections.deque()
        self.sock = socket.create_connection((host, port), timeout=timeout)
        try:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sock.sendall(wire.handshake_bytes(user, password))
            answer = self.sock.recv(1)
        except OSError:
            self.sock.close()
            raise
        if not answer:
            self.sock.close()
            raise QAuthError(
                f"{host}:{port} refused the login for user {user!r}"
                " (it closed the connection during the handshake)"
            )
        self.capability = answer[0]

    def __enter__(self) -> QClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (safe to call twice)."""
        if self.sock is not None:
            self.sock.close()
            self.sock = None  # type: ignore[assignment]

    # --- sending ---

    def send_raw(self, payload: bytes, msgtype: int = wire.ASYNC) -> None:
        """Send an already-encoded payload as one message."""
        if self.sock is None:
            raise ConnectionError("client is closed")
        self.sock.sendall(wire.frame(payload, msgtype))

    def send_async(self, *args: Any) -> None:
        """Send a message and do not wait (q's neg[h])."""
        self.send_raw(payload_of(args), wire.ASYNC)

    def query(self, *args: Any) -> Any:
        """Send a sync message and return the decoded response; QError if the server answers one."""
        result = codec.loads(self.query_raw(payload_of(args)))
        if isinstance(result, QError):
            raise result
        return result

    def query_raw(self, payload: bytes) -> bytes:
        """Send an encoded sync message; the response's payload, undecoded (errors included)."""
        self.send_raw(payload, wire.SYNC)
        while True:
            msgtype, body = self._read(self.timeout)
            if msgtype == wire.RESPONSE:
                return body
            self._pending.append((msgtype, body))  # a published message that came first

    # --- receiving ---

    def receive_raw(self, timeout: float | None = None) -> tuple[int, bytes]:
        """The next incoming message as (msgtype, payload bytes); TimeoutError if none in time."""
        if self._pending:
            return self._pending.popleft()
        return self._read(timeout if timeout is not None else self.timeout)

    def receive(self, timeout: float | None = None) -> Any:
        """The next incoming message, decoded (for subscribers: ["upd", table, data])."""
        return codec.loads(self.receive_raw(timeout)[1])

    def _read(self, timeout: float | None) -> tuple[int, bytes]:
        if self.sock is None:
            raise ConnectionError("client is closed")
        self.sock.settimeout(timeout)
        head = self._recv_exact(wire.HEADER_SIZE)
        msgtype, compressed, length = wire.parse_header(head)
        body = self._recv_exact(length - wire.HEADER_SIZE)
        if compressed:
            return msgtype, wire.decompress(head + body)[wire.HEADER_SIZE :]
        return msgtype, body

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except TimeoutError:
                if got:  # half a message read: the stream can no longer be trusted
                    self.close()
                    raise ConnectionError(
                        "timed out in the middle of a message; connection closed"
                    ) from None
                raise
            if k == 0:
                self.close()
                raise ConnectionError(f"{self.host}:{self.port} closed the connection")
            got += k
        return bytes(buf)
