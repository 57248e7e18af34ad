"""The tickerplant journal, in the kdb+ log-file format, so a licensed q can replay it with -11!.

On disk (as `.[L;();:;()]` creates it and `l enlist (`upd;t;x)` appends to it in kdb+):
  8-byte header  ff 01 00 00 00 00 00 00   (the file form of an empty general list)
  records        each a q object serialized as in IPC but without the 8-byte message header,
                 here always a call `(`upd; `table; data)`.
kdb+ does not update a count in the header on append; a reader counts records by walking them
(as `-11!(-2;L)` does), and a torn or corrupt tail is whatever does not parse.

`Journal` appends already-serialized records with one os.write per call (no user-space buffer:
once append returns, a kill -9 of the process loses nothing; the data is in the OS page cache).
fsync is a separate policy (`Journal.sync`, called on a timer by the tickerplant when asked):
without it, a power cut or kernel crash can lose the last seconds, as with kdb+'s own log.
"""

from __future__ import annotations

import argparse
import logging
import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = b"\xff\x01\x00\x00\x00\x00\x00\x00"
HEADER_SIZE = len(HEADER)
_SYMBOL_ATOM = 0xF5  # type -11


class JournalError(Exception):
    """A journal file that cannot be used as one (not a kdb+ log, or a failed write)."""


@dataclass(frozen=True)
class Validation:
    """What a walk of a journal file found: valid records, valid bytes, and the bad tail if any."""

    path: Path
    count: int
    valid_bytes: int
    total_bytes: int
    bad_tail: str | None = None

    @property
    def ok(self) -> bool:
        """True when every byte of the file belongs to a valid record."""
        return self.bad_tail is None


def _record_end(buf: bytes, offset: int) -> int:
    """End offset of the record at `offset`; raises ValueError if it is not a whole, valid call.

    A record must parse as a q object and be a general list whose first item is a symbol
    (the function name): this also rejects a zero-filled tail, which would parse as empty lists.
    """
    from pretrade.ipc.codec import object_size

    if len(buf) - offset < 7:
        raise ValueError("truncated record")
    if buf[offset] != 0 or int.from_bytes(buf[offset + 2 : offset + 6], "little") < 1:
        raise ValueError(f"record is not a call (type byte {buf[offset]}, expected a general list)")
    if buf[offset + 6] != _SYMBOL_ATOM:
        raise ValueError("record does not start with a function name (symbol)")
    try:
        size = object_size(buf, offset)
    except Exception as e:  # the codec's QDecodeError, IndexError on truncation, ...
        raise ValueError(f"record does not parse: {e}") from None
    if offset + size > len(buf):
        raise ValueError("truncated record")
    return offset + size


def _walk(buf: bytes, limit: int | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of each valid record in the file's bytes; raises ValueError at a bad one."""
    offset, n = HEADER_SIZE, 0
    while offset < len(buf) and (limit is None or n < limit):
        end = _record_end(buf, offset)
        yield offset, end
        offset, n = end, n + 1


def _check_header(data: bytes, path: Path) -> None:
    """Raise JournalError unless `data` starts like a kdb+ log file (or is a torn header)."""
    head = data[:2]
    if head != HEADER[: len(head)]:
        raise JournalError(f"{path} is not a kdb+ log file (header {head.hex()}, expected ff01...)")


def validate(path: str | os.PathLike) -> Validation:
    """Walk the journal at `path`: how many records are valid, where the valid part ends, and
    what is wrong with the rest. Does not change the file."""
    path = Path(path)
    with _mapped(path) as data:
        if len(data) < HEADER_SIZE:
            return Validation(path, 0, 0, len(data), f"torn header ({len(data)} of 8 bytes)")
        count, end = 0, HEADER_SIZE
        bad = None
        try:
            for _, stop in _walk(data):
                count, end = count + 1, stop
        except ValueError as e:
            bad = f"{len(data) - end} bytes after record {count} at offset {end}: {e}"
        return Validation(path, count, end, len(data), bad)


@contextmanager
def _mapped(path: Path) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, memory-mapped (a journal can be gigabytes), header checked."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            yield b""
            return
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            _check_header(m[:2], path)
            yield m


def recover(path: str | os.PathLike) -> Validation:
    """Validate the journal and, if its tail is bad, move the tail aside to a sibling
    `<name>.badtail.<UTC time>` file and truncate the journal to its valid part.

    Returns the validation done before the repair (count = records kept)."""
    path = Path(path)
    v = validate(path)
    if v.ok:
        return v
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.badtail.{stamp}")
    n = 1
    while aside.exists():
        aside = path.with_name(f"{path.name}.badtail.{stamp}.{n}")
        n += 1
    with open(path, "rb") as f:
        f.seek(v.valid_bytes)
        tail = f.read()
    with open(aside, "xb") as f:
        f.write(tail)
        f.flush()
        os.fsync(f.fileno())
    keep = max(v.valid_bytes, 0)
    with open(path, "r+b") as f:
        f.truncate(keep)
        if keep < HEADER_SIZE:  # a torn header: rewrite it
            f.seek(0)
            f.write(HEADER)
        os.fsync(f.fileno())
    log.warning("journal %s: bad tail (%s); kept %d valid records, moved %d bytes to %s",
                path, v.bad_tail, v.count, len(tail), aside)
    return v


class Journal:
    """An open journal: appends serialized records and counts them (kdb+tick's .u.l and .u.i).

    Opening an existing file recovers it first (`recover`); `recovered` says what was found."""

    def __init__(self, path: str | os.PathLike) -> None:
        self._fd = -1
        self._open(Path(path))

    def _open(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.recovered: Validation | None = None
        self.count = 0
        if self.path.exists() and self.path.stat().st_size > 0:
            self.recovered = recover(self.path)
            self.count = self.recovered.count
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        if self._size == 0:
            self._write(HEADER)

    def _write(self, data: bytes | memoryview) -> None:
        """Write all of `data` at the end; on failure cut the file back so no torn record stays."""
        if self._fd < 0:
            raise JournalError(f"journal {self.path} is closed")
        before = self._size
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            os.ftruncate(self._fd, before)
            raise JournalError(f"journal {self.path}: write failed: {e}") from e
        self._size = before + len(data)

    def append(self, records: bytes | memoryview, n: int = 1) -> int:
        """Append `n` already-serialized records (one os.write); returns the new record count."""
        self._write(records)
        self.count += n
        return self.count

    @property
    def size(self) -> int:
        """Bytes in the file."""
        return self._size

    def sync(self) -> None:
        """fsync the file: what is appended survives a power cut, not only a process crash."""
        os.fsync(self._fd)

    def roll(self, new_path: str | os.PathLike) -> None:
        """Close this file (after an fsync) and continue in `new_path` (recovered if it exists)."""
        self.close()
        self._open(Path(new_path))

    def close(self) -> None:
        """fsync and close the file; safe to call twice."""
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_raw(path: str | os.PathLike, limit: int | None = None) -> Iterator[bytes]:
    """Each valid record's bytes, in order; stops (with a warning) at a bad tail."""
    path = Path(path)
    n = 0
    with _mapped(path) as data:
        try:
            for start, end in _walk(data, limit):
                n += 1
                yield data[start:end]
        except ValueError as e:
            log.warning("journal %s: stopped after %d records at a bad tail: %s", path, n, e)


def iter_records(path: str | os.PathLike, limit: int | None = None) -> Iterator[tuple[str, str, object]]:
    """(function, table, data) of each valid record, decoded, for replay; `limit` records at most
    (as q's -11!(n;L)). Data is what the publisher sent plus the time column: a list of atoms
    (one row) or a list of column vectors."""
    from pretrade.ipc.codec import decode

    for rec in iter_raw(path, limit):
        obj, _ = decode(rec)
        if not isinstance(obj, list | tuple) or len(obj) != 3:
            raise JournalError(f"journal {path}: record is not (function; table; data): {obj!r:.200}")
        yield obj[0], obj[1], obj[2]


def record_rows(rec: bytes | memoryview) -> int:
    """Rows carried by a `(`upd; `table; data)` record, read from its bytes: 1 for a list of
    atoms, else the length of the first column (data may also be a table)."""
    buf = memoryview(rec)
    off = 6
    for _ in range(2):  # skip the function name and the table name (symbol atoms)
        off = bytes(buf[off + 1 : off + 256]).index(0) + off + 2
    if buf[off] == 98:  # a table: 98 attr, then a dict 99 of names (symbol vector) and columns
        from pretrade.ipc.codec import object_size

        cols = off + 3 + object_size(buf, off + 3)
        return int.from_bytes(buf[cols + 8 : cols + 12], "little")
    first = off + 6  # a general list; its first item follows the 6-byte list header
    if buf[first] >= 128:  # negative type byte: an atom, so one row
        return 1
    return int.from_bytes(buf[first + 2 : first + 6], "little")


def table_name(rec: bytes | memoryview) -> str:
    """The table a record is for (its second item)."""
    buf = bytes(rec[:300])
    start = buf.index(0, 7) + 2
    return buf[start : buf.index(0, start)].decode()


def summary(path: str | os.PathLike) -> dict:
    """Count, rows per table and validity of a journal, for the CLI and operators."""
    v = validate(path)
    rows: dict[str, int] = {}
    messages: dict[str, int] = {}
    for rec in iter_raw(path, v.count):
        t = table_name(rec)
        messages[t] = messages.get(t, 0) + 1
        rows[t] = rows.get(t, 0) + record_rows(rec)
    return {"validation": v, "messages": messages, "rows": rows}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `pretrade journal`."""
    parser.add_argument("file", help="journal file, e.g. var/tp/sym2026.11.21")
    parser.add_argument("--validate", action="store_true",
                        help="exit with status 1 when the file has a bad tail (nothing is changed)")
    parser.add_argument("--head", type=int, default=0, metavar="N",
                        help="also print the first N records, decoded")


def run(args: argparse.Namespace) -> int:
    """Print a journal's message count, tables with row counts and validity."""
    s = summary(args.file)
    v: Validation = s["validation"]
    print(f"journal   {v.path}")
    print(f"messages  {v.count}  ({v.valid_bytes} valid bytes of {v.total_bytes})")
    for t in sorted(s["rows"]):
        print(f"  {t:<12} {s['messages'][t]:>10} messages {s['rows'][t]:>12} rows")
    print(f"valid     {'yes' if v.ok else 'NO: ' + str(v.bad_tail)}")
    for i, (fn, t, data) in enumerate(iter_records(args.file, args.head) if args.head else []):
        print(f"[{i}] {fn} {t} {data!r:.300}")
    return 1 if args.validate and not v.ok else 0
