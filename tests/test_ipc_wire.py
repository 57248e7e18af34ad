"""Framing, kdb+ IPC compression and the handshake bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pretrade.ipc import codec, wire
from pretrade.ipc.wire import QFrameError


def test_frame_and_parse_header():
    f = wire.frame(b"\xf9" + bytes(8), wire.SYNC)
    assert f[:8] == b"\x01\x01\x00\x00\x11\x00\x00\x00"
    assert wire.parse_header(f) == (wire.SYNC, False, 17)
    assert wire.parse_header(b"xx" + f, offset=2) == (wire.SYNC, False, 17)


@pytest.mark.parametrize(
    "head,msg",
    [
        (b"\x00\x00\x00\x00\x10\x00\x00\x00", "big-endian"),
        (b"\x07\x00\x00\x00\x10\x00\x00\x00", "endianness"),
        (b"\x01\x05\x00\x00\x10\x00\x00\x00", "message type"),
        (b"\x01\x00\x02\x00\x10\x00\x00\x00", "compressed flag"),
        (b"\x01\x00\x00\x00\x08\x00\x00\x00", "length"),
        (b"\x01\x00\x00\x00\xff\xff\xff\xff", "length"),
        (b"\x01\x00\x00", "8 bytes"),
    ],
)
def test_bad_headers(head, msg):
    with pytest.raises(QFrameError, match=msg):
        wire.parse_header(head)


MESSAGES = [
    codec.encode(np.arange(5000)),
    codec.encode(np.array(["AAPL", "MSFT", "IBM"] * 700, dtype=object)),
    b"\x0a\x00" + (3000).to_bytes(4, "little") + b"a" * 3000,  # long self-overlapping runs
    codec.encode(["upd", "trade", [np.arange(100) * 1.5, np.array(["x"] * 100, dtype=object)]]),
]


@pytest.mark.parametrize("payload", MESSAGES)
def test_compress_round_trip(payload):
    msg = wire.frame(payload, wire.ASYNC)
    c = wire.compress(msg)
    assert c[2] == 1 and len(c) < len(msg) // 2
    assert int.from_bytes(c[4:8], "little") == len(c)
    assert wire.decompress(c) == msg


def test_incompressible_is_left_alone():
    rng = np.random.default_rng(0)
    msg = wire.frame(codec.encode(rng.integers(0, 255, 4000).astype(np.uint8)), wire.ASYNC)
    assert wire.compress(msg) == msg


@settings(max_examples=60, deadline=None)
@given(st.binary(min_size=1, max_size=3000), st.integers(min_value=1, max_value=40))
def test_compress_round_trip_property(data, repeat):
    msg = wire.frame(data * repeat, wire.ASYNC)
    c = wire.compress(msg)
    assert (wire.decompress(c) if c[2] else c) == msg
    assert c[2] == 0 or len(c) < len(msg)


def test_corrupt_compressed_is_an_error():
    c = wire.compress(wire.frame(MESSAGES[0], wire.ASYNC))
    for bad in (c[:20], c[:12] + b"\xff" * (len(c) - 12), c[:8] + b"\x00\x00\x00\x00" + c[12:]):
        with pytest.raises(QFrameError):
            wire.decompress(bad)


def test_handshake():
    assert wire.handshake_bytes("u", "p") == b"u:p\x03\x00"
    assert wire.parse_handshake(b"u:p\x03\x00rest") == ("u", "p", 3, 5)
    assert wire.parse_handshake(b"u:p:q\x00") == ("u", "p:q", 0, 6)  # no capability byte
    assert wire.parse_handshake(b"\x06\x00") == ("", "", 6, 2)
    assert wire.parse_handshake(b"u:p") is None
    with pytest.raises(QFrameError):
        wire.parse_handshake(b"x" * 2000)
