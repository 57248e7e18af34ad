"""The IPC users file (config/users.toml) and the `pretrade users` command.

Passwords are stored as `scrypt$<salt-hex>$<hash-hex>` (hashlib.scrypt, n=2**14, r=8, p=1,
32-byte key, 16-byte random salt). scrypt rather than pbkdf2-sha256 because it is memory-hard (a
GPU or ASIC guessing passwords pays for 16 MiB per guess) and it is in the standard library. One
check costs about 50 ms, so servers verify logins off the event loop.

File format:

    [users]
    alice = "scrypt$1f0c...$9ab2..."
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import logging
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_DUMMY_SALT = bytes(16)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)


def hash_password(password: str) -> str:
    """The stored form of a password: `scrypt$<salt-hex>$<hash-hex>` with a fresh random salt."""
    salt = os.urandom(16)
    return f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}"


def _parse_hash(name: str, stored: object) -> tuple[bytes, bytes]:
    if not isinstance(stored, str):
        raise ValueError(f"user {name}: the password hash must be a string")
    parts = stored.split("$")
    if len(parts) != 3 or parts[0] != "scrypt":
        raise ValueError(
            f'user {name}: expected "scrypt$<salt-hex>$<hash-hex>", got {stored[:20]!r}...'
        )
    try:
        salt, digest = bytes.fromhex(parts[1]), bytes.fromhex(parts[2])
    except ValueError:
        raise ValueError(f"user {name}: salt or hash is not hex") from None
    if len(salt) < 8 or len(digest) != _DKLEN:
        raise ValueError(f"user {name}: salt shorter than 8 bytes or hash not {_DKLEN} bytes")
    return salt, digest


@dataclass(frozen=True)
class Users:
    """Who may log in: user name -> (salt, scrypt hash)."""

    entries: dict[str, tuple[bytes, bytes]] = field(default_factory=dict)
    path: str = ""

    @classmethod
    def load(cls, path: str | os.PathLike) -> Users:
        """Read a users file; ValueError naming the file and the entry when it is malformed."""
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"users file {p} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"users file {p}: not valid TOML: {e}") from None
        table = data.get("users", {})
        if not isinstance(table, dict):
            raise ValueError(f'users file {p}: [users] must be a table of name = "scrypt$..."')
        try:
            entries = {name: _parse_hash(name, stored) for name, stored in table.items()}
        except ValueError as e:
            raise ValueError(f"users file {p}: {e}") from None
        return cls(entries, str(p))

    def verify(self, name: str, password: str) -> bool:
        """True when the password is right; the same work is done for an unknown user."""
        salt, digest = self.entries.get(name, (_DUMMY_SALT, b""))
        ok = hmac.compare_digest(_scrypt(password, salt), digest)
        return ok and name in self.entries

    def names(self) -> list[str]:
        """The user names, sorted."""
        return sorted(self.entries)


def set_user(path: str | os.PathLike, name: str, stored: str) -> None:
    """Add or replace one user's line in a users file, leaving every other line as it was."""
    if not _NAME.match(name):
        raise ValueError(f"user name {name!r}: use letters, digits, '_' or '-'")
    p = Path(path)
    lines = p.read_text(encoding="utf-8").splitlines() if p.exists() else []
    entry = f'{name} = "{stored}"'
    section = None
    header_at = None
    for i, line in enumerate(lines):
        s = line.strip()
        if s.startswith("["):
            section = s
            if s == "[users]":
                header_at = i
        elif section == "[users]" and re.match(rf"^{re.escape(name)}\s*=", s):
            lines[i] = entry
            break
    else:
        if header_at is None:
            lines += ([""] if lines else []) + ["[users]", entry]
        else:
            lines.insert(header_at + 1, entry)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, p)
    Users.load(p)  # the file must still parse


# --- `pretrade users` ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`pretrade users add NAME --file F` and `pretrade users list --file F`."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = sub.add_parser(
        "add", help="add a user or change a password (from $PRETRADE_PASSWORD, or asked for)"
    )
    add.add_argument("name", help="user name (letters, digits, '_' or '-')")
    add.add_argument(
        "--file", default="config/users.toml", help="users file (default config/users.toml)"
    )
    ls = sub.add_parser("list", help="list the users in a users file")
    ls.add_argument(
        "--file", default="config/users.toml", help="users file (default config/users.toml)"
    )


def run(args: argparse.Namespace) -> int:
    """Carry out `pretrade users ...`."""
    if args.action == "list":
        for name in Users.load(args.file).names():
            print(name)
        return 0
    password = os.environ.get("PRETRADE_PASSWORD")
    if password is None:
        import getpass

        password = getpass.getpass(f"password for {args.name}: ")
        if password != getpass.getpass("again: "):
            log.error("passwords differ; nothing changed")
            return 1
    if not password:
        log.error("empty password refused")
        return 1
    set_user(args.file, args.name, hash_password(password))
    log.info("user %s saved in %s", args.name, args.file)
    return 0
