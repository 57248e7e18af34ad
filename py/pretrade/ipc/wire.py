"""kdb+ IPC framing: the 8-byte message header, kdb+ IPC compression and the login handshake.

Header: byte 0 endianness (1 = little; big-endian is refused), byte 1 message type (ASYNC=0,
SYNC=1, RESPONSE=2), byte 2 compressed flag, byte 3 reserved, bytes 4-7 the total length (uint32,
header included). A compressed message's body is the uncompressed total length (uint32) followed
by kdb+'s LZ-style stream: a control byte for each 8 items, each item a literal byte or a 2-byte
back-reference (slot of a 256-entry table hashed on byte pairs, and a run length).

Handshake: the client sends b"user:password" + a capability byte + b"\\0"; the server answers one
byte (the agreed capability) or closes the socket when the login is refused, as q does.
"""

from __future__ import annotations

import struct

ASYNC, SYNC, RESPONSE = 0, 1, 2
MSG_TYPE_NAMES = {ASYNC: "async", SYNC: "sync", RESPONSE: "response"}
HEADER_SIZE = 8
MAX_MESSAGE = 1 << 30  # 1 GiB: a larger header is taken as garbage
CAPABILITY = 3  # compression, timestamps, guids; no >2 GB messages
MAX_HANDSHAKE = 1024

_HEADER = struct.Struct("<BBBBI")
_U32 = struct.Struct("<I")


class QFrameError(ValueError):
    """A message header or compressed body that makes no sense (garbage on the socket)."""


def frame(payload: bytes, msgtype: int = ASYNC) -> bytes:
    """A whole message: the 8-byte little-endian header followed by the payload."""
    return _HEADER.pack(1, msgtype, 0, 0, len(payload) + HEADER_SIZE) + payload


def header(payload_len: int, msgtype: int = ASYNC) -> bytes:
    """Just the 8-byte header for a payload of `payload_len` bytes (to send header and body apart)."""
    return _HEADER.pack(1, msgtype, 0, 0, payload_len + HEADER_SIZE)


def parse_header(
    buf: bytes | bytearray | memoryview, max_length: int = MAX_MESSAGE, offset: int = 0
) -> tuple[int, bool, int]:
    """(msgtype, compressed, total length) from the 8 bytes at offset; QFrameError on nonsense."""
    if len(buf) - offset < HEADER_SIZE:
        raise QFrameError(f"header needs 8 bytes, got {len(buf) - offset}")
    endian, msgtype, compressed, _, length = _HEADER.unpack_from(buf, offset)
    if endian != 1:
        if endian == 0:
            raise QFrameError("big-endian messages are not supported (endianness byte 0)")
        raise QFrameError(f"bad endianness byte {endian} (expected 1 = little-endian)")
    if msgtype > RESPONSE:
        raise QFrameError(f"bad message type {msgtype} (expected 0 async, 1 sync, 2 response)")
    if compressed > 1:
        raise QFrameError(f"bad compressed flag {compressed}")
    if length < HEADER_SIZE + 1 or length > max_length:
        raise QFrameError(f"bad message length {length} (must be 9..{max_length})")
    return msgtype, bool(compressed), length


# --- compression -----------------------------------------------------------------------------


def decompress(msg: bytes | bytearray | memoryview) -> bytes:
    """The uncompressed message (header included, compressed flag cleared) of a compressed one."""
    src = bytes(msg)
    if len(src) < 12:
        raise QFrameError("compressed message shorter than 12 bytes")
    total = _U32.unpack_from(src, 8)[0]
    # each control byte and its 8 items (at most 16 bytes) yield at most 8 * 257 bytes
    bound = HEADER_SIZE + (len(src) - 12) * 129
    if total < HEADER_SIZE + 1 or total > min(MAX_MESSAGE, bound):
        raise QFrameError(f"bad uncompressed length {total} for {len(src)} compressed bytes")
    dst = bytearray(total)
    dst[0:8] = src[0:8]
    dst[2] = 0
    dst[4:8] = _U32.pack(total)
    table = [0] * 256
    d = 12  # read position in src
    s = 8  # write position in dst
    p = 8  # next position whose byte pair goes into the table
    flags = bit = 0
    end = len(src)
    try:
        while s < total:
            if bit == 0:
                flags = src[d]
                d += 1
                bit = 1
            if flags & bit:
                r = table[src[d]]
                n = src[d + 1] + 2
                d += 2
                if r + n <= s:
                    dst[s : s + n] = dst[r : r + n]
                else:  # the run overlaps its own output: copy byte by byte
                    for m in range(n):
                        dst[s + m] = dst[r + m]
                while p < s + 1:
                    table[dst[p] ^ dst[p + 1]] = p
                    p += 1
                s += n
                p = s
            else:
                dst[s] = src[d]
                d += 1
                s += 1
                while p < s - 1:
                    table[dst[p] ^ dst[p + 1]] = p
                    p += 1
            bit = (bit << 1) & 0xFF
    except IndexError:
        raise QFrameError("compressed message is truncated or corrupt") from None
    if s != total or d > end:
        raise QFrameError("compressed message is corrupt (lengths disagree)")
    return bytes(dst)


def compress(msg: bytes | bytearray | memoryview) -> bytes:
    """kdb+ IPC compression of a whole message; returns it unchanged when compressing does not pay."""
    b = bytes(msg)
    t = len(b)
    if t < 32:
        return b
    out = bytearray(t // 2)
    out[0:8] = b[0:8]
    out[2] = 1
    out[8:12] = _U32.pack(t)
    table = [0] * 256
    c = 12  # where the current control byte goes
    d = 13  # write position
    e = len(out)
    flags = 0
    bit = 1
    s = 8
    s0 = 0
    h0 = 0
    h = 0
    while s < t:
        if bit == 0:
            if d > e - 17:
                return b  # not worth it
            out[c] = flags
            c = d
            d += 1
            flags = 0
            bit = 1
        literal = s > t - 3
        if not literal:
            h = b[s] ^ b[s + 1]
            p = table[h]
            literal = p == 0 or b[s] != b[p]
        if s0 > 0:
            table[h0] = s0
            s0 = 0
        if literal:
            h0 = h
            s0 = s
            if d >= e:
                return b
            out[d] = b[s]
            d += 1
            s += 1
        else:
            table[h] = s
            flags |= bit
            p += 2
            s += 2
            r = s
            q = min(s + 255, t)
            while s < q and b[p] == b[s]:
                p += 1
                s += 1
            if d + 2 > e:
                return b
            out[d] = h
            out[d + 1] = s - r
            d += 2
        bit = (bit << 1) & 0xFF
    out[c] = flags
    out[4:8] = _U32.pack(d)
    return bytes(out[:d])


# --- handshake -------------------------------------------------------------------------------


def parse_handshake(buf: bytes | bytearray) -> tuple[str, str, int, int] | None:
    """(user, password, capability, bytes used) once the NUL arrives, else None; QFrameError if junk."""
    end = buf.find(b"\x00")
    if end < 0:
        if len(buf) > MAX_HANDSHAKE:
            raise QFrameError(f"no handshake terminator in the first {MAX_HANDSHAKE} bytes")
        return None
    creds = bytes(buf[:end])
    capability = 0
    if creds and creds[-1] < 32:  # the capability byte (old clients send none)
        capability = creds[-1]
        creds = creds[:-1]
    text = creds.decode("utf-8", "replace")
    user, _, password = text.partition(":")
    return user, password, capability, end + 1


def handshake_bytes(user: str = "", password: str = "", capability: int = CAPABILITY) -> bytes:
    """What a client sends to log in."""
    creds = f"{user}:{password}" if password else user
    return creds.encode("utf-8") + bytes([capability]) + b"\x00"
