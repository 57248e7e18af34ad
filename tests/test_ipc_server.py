"""The IPC server and client through real TCP: queries, errors, framing, bad input, slow consumers."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import threading
import time

import numpy as np
import pytest

from pretrade.ipc import codec, wire
from pretrade.ipc.auth import Users, hash_password
from pretrade.ipc.client import QAuthError, QClient, parse_addr
from pretrade.ipc.codec import QError
from pretrade.ipc.server import BackgroundServer, Handler


class Recorder(Handler):
    """Answers ("echo"; x) with x, ("fail"; msg) with an error; remembers async messages."""

    def __init__(self) -> None:
        self.received: list = []
        self.batches: list[int] = []
        self.subscribers: list = []
        self.connected: list = []
        self.disconnected: list = []
        self.sent = 0
        self.tasks: list = []

    def on_connect(self, conn):
        self.connected.append(conn)

    def on_disconnect(self, conn):
        self.disconnected.append(conn.handle)

    def on_message(self, conn, msgtype, payload):
        msg = codec.loads(payload)
        if msgtype == wire.ASYNC:
            self.received.append(msg)
            return None
        if isinstance(msg, bytes) and msg != b"1+1":  # a one-word expression: a call
            msg = [msg.decode()]
        if isinstance(msg, list) and msg and msg[0] == "echo":
            return msg[1]
        if isinstance(msg, list) and msg and msg[0] == "fail":
            raise QError(msg[1])
        if isinstance(msg, list) and msg and msg[0] == "boom":
            raise RuntimeError("handler bug")
        if isinstance(msg, list) and msg and msg[0] == "raw":
            return codec.encode_row(["abc"], "s")  # bytes: sent as they are
        if msg == ["sub"]:
            self.subscribers.append(conn)
            return conn.handle
        if isinstance(msg, list) and msg and msg[0] == "pub":
            # publish on the event loop, a round at a time, as a tickerplant does per update
            count, size = msg[1], msg[2]
            self.tasks.append(asyncio.get_running_loop().create_task(self._publish(count, size)))
            return count
        raise QError("nyi")

    async def _publish(self, count, size):
        frame = wire.frame(codec.encode(np.zeros(size, dtype=np.uint8)), wire.ASYNC)
        for i in range(count):
            for c in list(self.subscribers):
                if c.send_frame(frame):
                    self.sent += 1
            await asyncio.sleep(0.001 if i % 10 == 0 else 0)


class BatchRecorder(Recorder):
    """Also takes async messages in batches (one call per run of async messages in a read)."""

    def on_messages(self, conn, messages):
        self.batches.append(len(messages))
        for _, payload in messages:
            self.received.append(codec.loads(payload))


@pytest.fixture
def server():
    h = Recorder()
    with BackgroundServer(h, "127.0.0.1", 0) as srv:
        yield srv


def raw_login(port: int, creds: bytes = b"u:p\x03\x00") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(creds)
    assert s.recv(1) == b"\x03"
    return s


def recv_all_until_closed(s: socket.socket) -> bytes:
    out = b""
    s.settimeout(5)
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_sync_query_async_send_and_errors(server):
    with QClient("127.0.0.1", server.port) as q:
        assert q.capability == 3
        assert q.query("echo", 42) == 42
        frame = q.query("echo", {"a": np.arange(3)})
        assert list(frame) == ["a"] and frame["a"].tolist() == [0, 1, 2]
        assert q.query("raw") == ["abc"]
        with pytest.raises(QError, match="limit exceeded"):
            q.query("fail", "limit exceeded")
        with pytest.raises(QError, match="handler bug"):
            q.query("boom")
        with pytest.raises(QError, match="nyi"):
            q.query("1+1")
        q.send_async("upd", "trade", [1, 2])
        assert q.query("echo", 1) == 1  # the async message was handled before this answer
        assert server.handler.received == [["upd", "trade", [1, 2]]]


def test_handles_are_unique_and_disconnect_is_seen(server):
    with QClient("127.0.0.1", server.port) as a, QClient("127.0.0.1", server.port) as b:
        ha, hb = a.query("sub"), b.query("sub")
        assert ha != hb
    assert wait_for(lambda: sorted(server.handler.disconnected) == sorted([ha, hb]))


def test_partial_frames_and_many_frames_per_read():
    h = BatchRecorder()
    with BackgroundServer(h, "127.0.0.1", 0) as srv:
        s = raw_login(srv.port)
        msgs = [wire.frame(codec.encode(["upd", "t", i]), wire.ASYNC) for i in range(200)]
        blob = b"".join(msgs)
        # byte by byte for the first two messages, then the rest in one write
        cut = len(msgs[0]) + len(msgs[1])
        for i in range(cut):
            s.sendall(blob[i : i + 1])
            if i % 7 == 0:
                time.sleep(0.001)
        s.sendall(blob[cut:] + wire.frame(codec.encode(["echo", 5]), wire.SYNC))
        head = s.recv(8)
        msgtype, _, length = wire.parse_header(head)
        body = b""
        while len(body) < length - 8:
            body += s.recv(length - 8 - len(body))
        assert msgtype == wire.RESPONSE and codec.loads(body) == 5
        assert [m[2] for m in h.received] == list(range(200))
        assert max(h.batches) > 10  # the bulk write arrived as few large batches
        s.close()


def test_compressed_messages_are_accepted(server):
    with QClient("127.0.0.1", server.port) as q:
        payload = codec.encode(["echo", np.arange(2000) % 7])
        frame = wire.compress(wire.frame(payload, wire.SYNC))
        assert frame[2] == 1 and len(frame) < len(payload)
        q.sock.sendall(frame)
        _, body = q._read(5)
        assert codec.loads(body).tolist() == (np.arange(2000) % 7).tolist()


@pytest.mark.parametrize(
    "bad,what",
    [
        (b"\x00" * 64, "bad message header"),  # garbage
        (b"\x01\x01\x00\x00\x04\x00\x00\x00", "bad message length"),  # length < 9
        (b"\x00\x01\x00\x00\x10\x00\x00\x00" + b"x" * 8, "big-endian"),  # big-endian
        (wire.frame(b"\x70\x00\x00", wire.SYNC), "undecodable message"),  # unknown type
        (wire.frame(b"\x07\x00\xff\xff\x00\x00", wire.SYNC), "undecodable"),  # bad vector length
        (b"\x01\x01\x01\x00\x10\x00\x00\x00\xff\xff\x00\x00" + b"\xff" * 4, "bad compressed"),
    ],
)
def test_bad_input_closes_only_that_connection(server, caplog, bad, what):
    caplog.set_level(logging.WARNING, logger="pretrade.ipc.server")
    with QClient("127.0.0.1", server.port) as good:
        s = raw_login(server.port)
        s.sendall(bad)
        assert recv_all_until_closed(s) == b""  # closed without an answer
        s.close()
        assert good.query("echo", "still here") == "still here"
    assert wait_for(lambda: any(what in r.getMessage() for r in caplog.records)), caplog.text
    line = next(r.getMessage() for r in caplog.records if what in r.getMessage())
    assert "127.0.0.1:" in line and "handle" in line


def test_garbage_handshake_is_refused(server, caplog):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"x" * 5000)
    assert recv_all_until_closed(s) == b""
    s.close()
    with QClient("127.0.0.1", server.port) as q:
        assert q.query("echo", 1) == 1


def test_slow_consumer_is_cut_off_while_others_are_served(caplog):
    caplog.set_level(logging.WARNING, logger="pretrade.ipc.server")
    h = Recorder()
    with BackgroundServer(h, "127.0.0.1", 0, max_buffer=2 << 20) as srv:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", srv.port))
        slow.sendall(b"slow:\x03\x00")
        assert slow.recv(1) == b"\x03"
        slow.sendall(wire.frame(codec.encode(["sub"]), wire.SYNC))
        fast = QClient("127.0.0.1", srv.port)
        fast.query("sub")
        slow.recv(64)  # its "sub" answer; after that it reads nothing

        got = {"bytes": 0, "msgs": 0}

        def reader():
            while got["msgs"] < 300:
                got["bytes"] += len(fast.receive_raw(timeout=10)[1])
                got["msgs"] += 1

        t = threading.Thread(target=reader)
        t.start()
        publisher = QClient("127.0.0.1", srv.port)
        publisher.query("pub", 300, 64 * 1024)  # 300 x 64 KiB to each subscriber
        t.join(20)
        assert got["msgs"] == 300  # the reading subscriber got everything
        assert h.sent < 600  # the slow one was cut off part way
        assert (
            "closing handle 1 (slow@127.0.0.1:" in caplog.text
            and "passed max_buffer" in caplog.text
        )
        assert wait_for(lambda: len(srv.call(lambda: dict(srv.connections))) == 2)
        assert publisher.query("echo", 1) == 1
        for c in (fast, publisher):
            c.close()
        slow.close()


# --- authentication ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> Users:
    path = tmp_path_factory.mktemp("auth") / "users.toml"
    path.write_text(f'[users]\nalice = "{hash_password("s3cret")}"\n')
    return Users.load(path)


def test_right_password_accepted_wrong_refused(users, caplog):
    caplog.set_level(logging.INFO, logger="pretrade.ipc.server")
    with BackgroundServer(Recorder(), "127.0.0.1", 0, users=users) as srv:
        with QClient("127.0.0.1", srv.port, "alice", "s3cret") as q:
            assert q.query("echo", "in") == "in"
        for user, pw in [("alice", "wrong"), ("mallory", "s3cret"), ("", "")]:
            with pytest.raises(QAuthError):
                QClient("127.0.0.1", srv.port, user, pw)
    assert "login refused for user 'alice'" in caplog.text
    assert "NO users file" not in caplog.text


def test_no_users_file_accepts_anyone_with_a_warning(caplog):
    caplog.set_level(logging.WARNING, logger="pretrade.ipc.server")
    with (
        BackgroundServer(Recorder(), "127.0.0.1", 0) as srv,
        QClient("127.0.0.1", srv.port, "anyone", "anything") as q,
    ):
        assert q.query("echo", 3) == 3
    assert "NO users file" in caplog.text


def test_old_style_login_without_capability_byte(server):
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    s.sendall(b"user:pw\x00")
    assert s.recv(1) == b"\x00"  # min(client's 0, 3)
    s.close()


# --- client helpers ----------------------------------------------------------------------------


def test_parse_addr():
    assert parse_addr("host:5010") == ("host", 5010)
    assert parse_addr(":5010") == ("localhost", 5010)
    assert parse_addr("5010") == ("localhost", 5010)
    for bad in ("host:", "host:x", "h:70000", ""):
        with pytest.raises(ValueError):
            parse_addr(bad)


def test_client_receives_published_messages_around_a_query(server):
    with QClient("127.0.0.1", server.port) as sub, QClient("127.0.0.1", server.port) as pub:
        sub.query("sub")
        pub.query("pub", 2, 3)
        # a query's answer may queue behind published messages; they are kept for receive()
        assert sub.query("echo", "x") == "x"
        first = sub.receive(timeout=5)
        assert isinstance(first, np.ndarray) and first.dtype == np.uint8 and len(first) == 3
        assert sub.receive_raw(timeout=5)[0] == wire.ASYNC
        with pytest.raises(TimeoutError):
            sub.receive(timeout=0.2)


def test_connection_refused_is_a_clear_error(port):
    with pytest.raises(ConnectionRefusedError):
        QClient("127.0.0.1", port, timeout=2)


def test_response_header_is_little_endian_response(server):
    s = raw_login(server.port)
    s.sendall(wire.frame(codec.encode(["echo", 7]), wire.SYNC))
    head = s.recv(8)
    assert head[:4] == b"\x01\x02\x00\x00"
    assert struct.unpack("<I", head[4:])[0] == 8 + 9
    s.close()


def test_serve_forever_stops_cleanly_on_sigterm(port, tmp_path):
    import signal
    import subprocess
    import sys

    marker = tmp_path / "shutdown"
    code = f"""
import logging, sys
logging.basicConfig(level=logging.INFO)
from pretrade.ipc.dispatch import Dispatcher
from pretrade.ipc.server import serve_forever
class D(Dispatcher):
    def on_shutdown(self):
        open({str(marker)!r}, "w").write("done")
serve_forever(D({{"echo": lambda conn, x: x}}), "127.0.0.1", {port})
"""
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                q = QClient("127.0.0.1", port, timeout=5)
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
                time.sleep(0.05)
        assert q.query("echo", 5) == 5
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        err = proc.stderr.read()
        assert "stopping: signal received" in err and "stopped" in err
        assert marker.read_text() == "done"
        with pytest.raises(ConnectionError):
            q.receive(timeout=5)  # the server closed our connection
        q.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
