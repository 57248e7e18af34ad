"""A Handler for ordinary processes: calls registered functions by name, expressions, or SQL.

What a message may be (anything else answers q's 'nyi error, as q would for what it cannot do):
  (`name; arg; ...)          a general list whose first item is a symbol: functions[name](conn, *args)
  "s)select ..."             a char vector starting with s): sql(conn, "select ...")
  "<registered expression>"  a char vector equal to a key of `expressions`: expressions[text](conn)
  "name[arg;arg]", "name arg"  the simple call forms a person types, with literals: symbols
                             (`a, `, `a`b), numbers (1, -2.5, 1 2 3, 7i, 1.5e), booleans (1b),
                             "strings", dates (2026.11.21) and timestamps (2026.11.21D10:00:00.5)
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from typing import Any

import numpy as np

from pretrade.ipc import codec
from pretrade.ipc.codec import QError
from pretrade.ipc.server import Connection, Handler

log = logging.getLogger(__name__)

_NAME = r"[.A-Za-z][.\w]*"
_CALL_BRACKETS = re.compile(rf"^\s*({_NAME})\s*\[(.*)\]\s*;?\s*$", re.S)
_CALL_SPACE = re.compile(rf"^\s*({_NAME})\s+(\S.*?)\s*;?\s*$", re.S)
_SYMBOLS = re.compile(r"^(`[.\w:/]*)+$")
_NUMBER = r"-?(?:\d+\.?\d*(?:e-?\d+)?|\.\d+(?:e-?\d+)?)"
_NUM = re.compile(rf"^({_NUMBER})([ijfeh]?)$")
_NUMS = re.compile(rf"^{_NUMBER}(?:\s+{_NUMBER})+[ijfeh]?$")
_DATE = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})$")
_TIMESTAMP = re.compile(r"^(\d{4})\.(\d{2})\.(\d{2})D(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")
_BOOLS = re.compile(r"^([01]+)b$")


class Dispatcher(Handler):
    """Decode each message and call what it names; return values become sync responses."""

    def __init__(
        self,
        functions: dict[str, Callable[..., Any]],
        expressions: dict[str, Callable[[Connection], Any]] | None = None,
        sql: Callable[[Connection, str], Any] | None = None,
    ) -> None:
        self.functions = dict(functions)
        self.expressions = dict(expressions or {})
        self.sql = sql

    def on_message(self, conn: Connection, msgtype: int, payload: memoryview) -> Any:
        """Decode (QDecodeError closes the connection, in the server) and dispatch."""
        return self.dispatch(conn, codec.loads(payload))

    def dispatch(self, conn: Connection, msg: Any) -> Any:
        """Call what a decoded message names; QError for what cannot be done."""
        if isinstance(msg, list) and msg and isinstance(msg[0], str):
            return self.call(conn, msg[0], msg[1:])
        if isinstance(msg, str):  # a symbol atom: a name, as if typed
            msg = msg.encode("utf-8")
        if isinstance(msg, bytes):
            return self.evaluate(conn, msg.decode("utf-8", "replace"))
        raise QError("nyi")

    def call(self, conn: Connection, name: str, args: list) -> Any:
        """functions[name](conn, *args), or a QError naming the unknown function."""
        f = self.functions.get(name)
        if f is None:
            raise QError(f"{name}: no such function")
        return f(conn, *args)

    def evaluate(self, conn: Connection, text: str) -> Any:
        """A text message: SQL, a registered expression, or a simple call form."""
        if text.startswith("s)"):
            if self.sql is None:
                raise QError("nyi: no SQL here")
            return self.sql(conn, text[2:])
        key = text.strip()
        f = self.expressions.get(key) or self.expressions.get(text)
        if f is not None:
            return f(conn)
        parsed = parse_call(key)
        if parsed is None:
            raise QError("nyi")
        name, args = parsed
        return self.call(conn, name, args)


def parse_call(text: str) -> tuple[str, list] | None:
    """`name[a;b]` or `name a` with literal arguments -> (name, args); None if it is not that."""
    m = _CALL_BRACKETS.match(text)
    if m:
        name, inner = m.group(1), m.group(2)
        parts = _split_args(inner)
        if parts is None:
            return None
        if parts == [""]:
            return name, []
        args = [parse_literal(p) for p in parts]
    else:
        m = _CALL_SPACE.match(text)
        if not m:
            return None
        name = m.group(1)
        args = [parse_literal(m.group(2))]
    if any(a is _NOT_LITERAL for a in args):
        return None
    return name, args


def _split_args(inner: str) -> list[str] | None:
    """Split on ';' outside "strings"; None if a string is unterminated."""
    parts, cur, in_str, i = [], [], False, 0
    while i < len(inner):
        ch = inner[i]
        if in_str:
            cur.append(ch)
            if ch == "\\" and i + 1 < len(inner):
                cur.append(inner[i + 1])
                i += 1
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
            cur.append(ch)
        elif ch == ";":
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
        i += 1
    if in_str:
        return None
    parts.append("".join(cur).strip())
    return parts


_NOT_LITERAL = object()
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"'}
_NUM_DTYPES = {"i": np.int32, "j": np.int64, "h": np.int16, "f": np.float64, "e": np.float32}


def parse_literal(text: str) -> Any:
    """A q literal as the Python value the codec would decode it to; _NOT_LITERAL if not one."""
    t = text.strip()
    if _SYMBOLS.match(t):
        syms = t.split("`")[1:]
        return syms[0] if len(syms) == 1 else np.array(syms, dtype=object)
    if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
        body = re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), t[1:-1])
        return body.encode("utf-8")
    m = _NUM.match(t)
    if m:
        num, suffix = m.groups()
        is_float = suffix in ("f", "e") or (not suffix and ("." in num or "e" in num))
        if is_float:
            return np.float32(num) if suffix == "e" else float(num)
        if "." in num or "e" in num:
            return _NOT_LITERAL
        v = int(num)
        return v if suffix in ("", "j") else _NUM_DTYPES[suffix](v)
    if _NUMS.match(t):
        suffix = t[-1] if t[-1] in "ijfeh" else ""
        items = t.rstrip("ijfeh").split()
        if suffix:
            return np.array(items, dtype=_NUM_DTYPES[suffix])
        if any("." in x or "e" in x for x in items):
            return np.array(items, dtype=np.float64)
        return np.array(items, dtype=np.int64)
    m = _BOOLS.match(t)
    if m:
        bits = [c == "1" for c in m.group(1)]
        return bits[0] if len(bits) == 1 else np.array(bits)
    m = _DATE.match(t)
    if m:
        try:
            return dt.date(*map(int, m.groups()))
        except ValueError:
            return _NOT_LITERAL
    m = _TIMESTAMP.match(t)
    if m:
        y, mo, d, hh, mi, ss, frac = m.groups()
        try:
            day = np.datetime64(dt.date(int(y), int(mo), int(d)), "ns")
        except ValueError:
            return _NOT_LITERAL
        ns = ((int(hh) * 60 + int(mi)) * 60 + int(ss or 0)) * 1_000_000_000 + int(
            (frac or "").ljust(9, "0")
        )
        return day + np.timedelta64(ns, "ns")
    if t == "::":
        return None
    return _NOT_LITERAL


__all__ = ["Dispatcher", "parse_call", "parse_literal"]
