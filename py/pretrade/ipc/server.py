"""asyncio TCP server speaking kdb+ IPC: handshake, framing, responses, per-connection output bounds.

A `Handler` gets each message's payload (header stripped, already decompressed) and, for a sync
message, returns the response. The server never decodes payloads itself: a tickerplant can journal
and forward bytes it never turns into Python objects.

Optional handler hooks, used when the handler defines them:
  on_messages(conn, [(msgtype, payload), ...])  one call per run of consecutive async messages
                                                that arrived in one read (journal a chunk at once)
  on_start(server)                              once the server listens (may be a coroutine)
  on_shutdown()                                 on SIGINT/SIGTERM in serve_forever (may be a coroutine)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import logging
import signal
from typing import Any

from pretrade.ipc import codec, wire
from pretrade.ipc.auth import Users

log = logging.getLogger(__name__)

DEFAULT_MAX_BUFFER = 64 << 20  # 64 MiB of unsent output per connection
_DIRECT_WRITE = 1 << 16  # payloads above this are written apart from their header (no copy)


class Handler:
    """What a server calls. Subclass and override what you need; the defaults do nothing."""

    def on_connect(self, conn: Connection) -> None:
        """A client logged in."""

    def on_message(self, conn: Connection, msgtype: int, payload: memoryview) -> Any:
        """One message. For SYNC the return value is the response (bytes = already encoded)."""
        raise codec.QError("nyi")

    def on_disconnect(self, conn: Connection) -> None:
        """The connection is gone (closed by either side)."""


class Connection:
    """One logged-in client: send to it, see how much output it has not read, close it."""

    def __init__(
        self, handle: int, user: str, peer: str, transport: asyncio.Transport, max_buffer: int
    ) -> None:
        self.handle = handle
        self.user = user
        self.peer = peer
        self.transport = transport
        self.max_buffer = max_buffer
        self.closed = False
        self.close_reason = ""

    def __repr__(self) -> str:
        return f"<Connection {self.handle} {self.user or '-'}@{self.peer}>"

    @property
    def name(self) -> str:
        """How logs name this connection: handle, user and peer address."""
        return f"handle {self.handle} ({self.user or 'anonymous'}@{self.peer})"

    def send(self, payload: bytes, msgtype: int = wire.ASYNC) -> bool:
        """Queue one message; False (and the connection closed) if its output backlog is too big."""
        if not self._room():
            return False
        if len(payload) > _DIRECT_WRITE:
            self.transport.write(wire.header(len(payload), msgtype))
            self.transport.write(payload)
        else:
            self.transport.write(wire.frame(payload, msgtype))
        return True

    def send_frame(self, frame: bytes) -> bool:
        """Queue an already-framed message (one frame built once, sent to many subscribers)."""
        if not self._room():
            return False
        self.transport.write(frame)
        return True

    def _room(self) -> bool:
        if self.closed or self.transport.is_closing():
            return False
        backlog = self.transport.get_write_buffer_size()
        if backlog > self.max_buffer:
            self.close(
                f"output backlog {backlog} bytes passed max_buffer {self.max_buffer}"
                " (client not reading); cut off",
                abort=True,
            )
            return False
        return True

    def buffered(self) -> int:
        """Bytes queued in the transport and not yet sent."""
        return 0 if self.closed else self.transport.get_write_buffer_size()

    def close(
        self, reason: str = "closed by server", abort: bool = False, level: int = logging.WARNING
    ) -> None:
        """Close with a log line naming the connection; abort drops unsent output."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        log.log(level, "closing %s: %s", self.name, reason)
        if abort:
            self.transport.abort()
        else:
            self.transport.close()


class _Protocol(asyncio.Protocol):
    """One TCP connection: handshake, then frames handed to the handler."""

    def __init__(self, ctx: _ServerContext) -> None:
        self.ctx = ctx
        self.transport: asyncio.Transport | None = None
        self.conn: Connection | None = None
        self.peer = "?"
        self.buf = bytearray()
        self.need = 1  # bytes needed in buf before there is anything to do
        self.authenticating = False

    # --- asyncio callbacks ---

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.ctx.pending.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.ctx.pending.discard(self)
        conn = self.conn
        if conn is None:
            return
        conn.closed = True
        self.ctx.connections.pop(conn.handle, None)
        log.info(
            "disconnected %s%s", conn.name, f": {conn.close_reason}" if conn.close_reason else ""
        )
        try:
            self.ctx.handler.on_disconnect(conn)
        except Exception:
            log.exception("handler.on_disconnect failed for %s", conn.name)

    def data_received(self, data: bytes) -> None:
        if self.conn is not None and self.conn.closed:
            return  # closed by us; what is still in flight is dropped
        if self.buf or self.authenticating:
            self.buf += data
            if self.authenticating or len(self.buf) < self.need:
                return
            data = bytes(self.buf)
            self.buf = bytearray()
        if self.conn is None:
            self._handshake(data)
        else:
            self._frames(data)

    # --- handshake ---

    def _handshake(self, data: bytes) -> None:
        try:
            parsed = wire.parse_handshake(data)
        except wire.QFrameError as e:
            log.warning("refusing connection from %s: %s", self.peer, e)
            self.transport.close()
            return
        if parsed is None:
            self.buf = bytearray(data)
            self.need = len(data) + 1
            return
        user, password, capability, used = parsed
        rest = data[used:]
        users = self.ctx.users
        if users is None:
            self._logged_in(user, capability, rest)
            return
        self.authenticating = True
        self.buf = bytearray(rest)
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(None, users.verify, user, password)
        fut.add_done_callback(lambda f: self._verified(f, user, capability))

    def _verified(self, fut: asyncio.Future, user: str, capability: int) -> None:
        self.authenticating = False
        ok = not fut.cancelled() and fut.exception() is None and fut.result()
        if self.transport.is_closing():
            return
        if not ok:
            log.warning(
                "login refused for user %r from %s (wrong user or password)", user, self.peer
            )
            self.transport.close()
            return
        rest = bytes(self.buf)
        self.buf = bytearray()
        self._logged_in(user, capability, rest)

    def _logged_in(self, user: str, capability: int, rest: bytes) -> None:
        ctx = self.ctx
        self.transport.write(bytes([min(capability, wire.CAPABILITY)]))
        self.conn = Connection(next(ctx.handles), user, self.peer, self.transport, ctx.max_buffer)
        ctx.pending.discard(self)
        ctx.connections[self.conn.handle] = self.conn
        log.info("connected %s", self.conn.name)
        try:
            ctx.handler.on_connect(self.conn)
        except Exception as e:
            self.conn.close(f"handler refused the connection: {e}")
            return
        self.need = wire.HEADER_SIZE
        if rest:
            self.data_received(rest)

    # --- messages ---

    def _frames(self, data: bytes) -> None:
        conn = self.conn
        handler = self.ctx.handler
        batch_hook = self.ctx.batch_hook
        mv = memoryview(data)
        n = len(data)
        pos = 0
        batch: list[tuple[int, memoryview]] = []
        while n - pos >= wire.HEADER_SIZE:
            try:
                msgtype, compressed, length = wire.parse_header(data, self.ctx.max_message, pos)
            except wire.QFrameError as e:
                self._flush(batch)
                conn.close(f"bad message header: {e}", abort=True)
                return
            if n - pos < length:
                break
            if compressed:
                try:
                    payload = memoryview(wire.decompress(mv[pos : pos + length]))[
                        wire.HEADER_SIZE :
                    ]
                except wire.QFrameError as e:
                    self._flush(batch)
                    conn.close(f"bad compressed message: {e}", abort=True)
                    return
            else:
                payload = mv[pos + wire.HEADER_SIZE : pos + length]
            pos += length
            if batch_hook is not None and msgtype == wire.ASYNC:
                batch.append((msgtype, payload))
                continue
            if batch and not self._flush(batch):
                return
            batch = []
            if not self._one(handler, conn, msgtype, payload):
                return
        if batch and not self._flush(batch):
            return
        if pos < n:
            self.buf = bytearray(mv[pos:])
            self.need = (
                wire.parse_header(self.buf)[2] if n - pos >= wire.HEADER_SIZE else wire.HEADER_SIZE
            )

    def _flush(self, batch: list[tuple[int, memoryview]]) -> bool:
        """Hand a run of async messages to on_messages; False if the connection got closed."""
        if not batch or self.conn.closed:
            return not self.conn.closed
        try:
            self.ctx.batch_hook(self.conn, batch)
        except codec.QDecodeError as e:
            self.conn.close(f"undecodable message: {e}", abort=True)
        except Exception as e:
            log.warning("async messages from %s failed: %s", self.conn.name, _describe(e))
        return not self.conn.closed

    def _one(self, handler: Handler, conn: Connection, msgtype: int, payload: memoryview) -> bool:
        """Handle one message (answering a sync one); False if the connection got closed."""
        try:
            result = handler.on_message(conn, msgtype, payload)
        except codec.QDecodeError as e:
            conn.close(f"undecodable message: {e}", abort=True)
            return False
        except codec.QError as e:
            result = e
        except Exception as e:
            if msgtype == wire.SYNC:
                log.warning("query from %s failed: %s", conn.name, _describe(e))
            result = codec.QError(_describe(e))
        if msgtype == wire.SYNC and not conn.closed:
            try:
                body = result if isinstance(result, bytes) else codec.encode(result)
            except codec.QEncodeError as e:
                body = codec.encode(codec.QError(f"cannot send the result: {e}"))
            conn.send(body, wire.RESPONSE)
        elif msgtype == wire.ASYNC and isinstance(result, codec.QError):
            log.warning("async message from %s failed: %s", conn.name, result.message)
        return not conn.closed


def _describe(e: BaseException) -> str:
    text = str(e) if not isinstance(e, KeyError) else str(e.args[0]) if e.args else ""
    return text or type(e).__name__


class _ServerContext:
    """What every connection of one server shares."""

    def __init__(
        self, handler: Handler, users: Users | None, max_buffer: int, max_message: int
    ) -> None:
        self.handler = handler
        self.batch_hook = getattr(handler, "on_messages", None)
        self.users = users
        self.max_buffer = max_buffer
        self.max_message = max_message
        self.handles = itertools.count(1)
        self.connections: dict[int, Connection] = {}
        self.pending: set[_Protocol] = set()

    def close_all(self, reason: str) -> None:
        for conn in list(self.connections.values()):
            conn.close(reason, level=logging.INFO)
        for proto in list(self.pending):
            if proto.transport is not None:
                proto.transport.close()


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    users: Users | None = None,
    max_buffer: int = DEFAULT_MAX_BUFFER,
    max_message: int = wire.MAX_MESSAGE,
) -> asyncio.Server:
    """Listen on host:port; returns the asyncio.Server (its `.connections`: handle -> Connection)."""
    ctx = _ServerContext(handler, users, max_buffer, max_message)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(ctx), host, port, reuse_address=True)
    server.connections = ctx.connections  # type: ignore[attr-defined]
    server.pretrade_close_all = ctx.close_all  # type: ignore[attr-defined]
    where = ", ".join(f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in server.sockets)
    if users is None:
        log.warning(
            "listening on %s with NO users file: every login is accepted (kdb+'s default);"
            " pass a users file to require passwords",
            where,
        )
    else:
        log.info(
            "listening on %s; logins checked against %s (%d users)",
            where,
            users.path or "users",
            len(users.entries),
        )
    hook = getattr(handler, "on_start", None)
    if hook is not None:
        await _maybe_await(hook(server))
    return server


async def stop_server(server: asyncio.Server, reason: str = "server stopping") -> None:
    """Stop listening and close every connection (unsent output is still flushed)."""
    server.close()
    close_all = getattr(server, "pretrade_close_all", None)
    if close_all is not None:
        close_all(reason)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(server.wait_closed(), 5)


async def _maybe_await(x: Any) -> Any:
    if inspect.isawaitable(x):
        return await x
    return x


class BackgroundServer:
    """A server on its own event loop in a daemon thread (tests, notebooks, embedding).

    with BackgroundServer(handler, "127.0.0.1", port) as srv:
        ...  # handler methods run on srv's thread; srv.call(fn) runs fn there too
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        users: Users | None = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        max_message: int = wire.MAX_MESSAGE,
    ) -> None:
        self.handler, self.host, self.port, self.users = handler, host, port, users
        self.max_buffer, self.max_message = max_buffer, max_message
        self.loop: asyncio.AbstractEventLoop | None = None
        self.server: asyncio.Server | None = None
        self._thread: Any = None

    def start(self, timeout: float = 10.0) -> BackgroundServer:
        """Start listening; returns once the port is open (self.port is the real port)."""
        import threading

        started = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self.loop = loop
            try:
                self.server = loop.run_until_complete(
                    start_server(
                        self.handler,
                        self.host,
                        self.port,
                        self.users,
                        self.max_buffer,
                        self.max_message,
                    )
                )
                self.port = self.server.sockets[0].getsockname()[1]
            except BaseException as e:  # reported to the starting thread
                failure.append(e)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"ipc-server-{self.port}", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError("server did not start in time")
        if failure:
            raise failure[0]
        return self

    def call(self, fn: Any, *args: Any, timeout: float = 10.0) -> Any:
        """Run fn(*args) on the server's thread (coroutines awaited) and return its result."""

        async def wrapper() -> Any:
            return await _maybe_await(fn(*args))

        return asyncio.run_coroutine_threadsafe(wrapper(), self.loop).result(timeout)

    @property
    def connections(self) -> dict[int, Connection]:
        """handle -> Connection of the logged-in clients (read it through call() to be exact)."""
        return self.server.connections  # type: ignore[union-attr,attr-defined]

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection, stop listening and end the thread."""
        if self.loop is None or self._thread is None or not self._thread.is_alive():
            return
        hook = getattr(self.handler, "on_shutdown", None)
        if hook is not None:
            self.call(hook, timeout=timeout)
        self.call(stop_server, self.server, timeout=timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)

    def __enter__(self) -> BackgroundServer:
        return self.start() if self.server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_forever(
    handler: Handler,
    host: str,
    port: int,
    users: Users | None = None,
    max_buffer: int = DEFAULT_MAX_BUFFER,
    max_message: int = wire.MAX_MESSAGE,
) -> None:
    """Run a server until SIGINT/SIGTERM, then call handler.on_shutdown() and close cleanly."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        server = await start_server(handler, host, port, users, max_buffer, max_message)
        try:
            await stop.wait()
            log.info("stopping: signal received")
        finally:
            hook = getattr(handler, "on_shutdown", None)
            if hook is not None:
                try:
                    await _maybe_await(hook())
                except Exception:
                    log.exception("handler.on_shutdown failed")
            await stop_server(server)
            log.info("stopped")

    asyncio.run(main())
