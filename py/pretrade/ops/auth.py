"""API tokens and roles (config/api_users.toml): who may read and who may act.

Tokens are long random strings, so a plain SHA-256 of each is stored (a slow password hash buys
nothing against 256 bits of entropy, and would cost every request ~50 ms). File format:

    [users.alice]
    role = "risk_officer"          # or "trader"
    token_sha256 = "9f86d0..."

Roles: a trader reads; a risk officer reads and acts (kill switch, reset, overrides, models,
gateway modes). `pretrade api --new-token NAME --role ROLE` adds a user and prints the token once.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROLES = ("trader", "risk_officer")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class User:
    """An authenticated caller."""

    name: str
    role: str

    @property
    def can_act(self) -> bool:
        return self.role == "risk_officer"


def token_hash(token: str) -> str:
    """The stored form of a token: its SHA-256, hex."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Tokens:
    """The users file: token hash -> user."""

    by_hash: dict[str, User]

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        """Read and validate the users file; ValueError naming the file and the user if bad."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"API users file not found: {path}") from None
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML: {e}") from None
        by_hash: dict[str, User] = {}
        for name, entry in (data.get("users") or {}).items():
            if not _NAME.match(name) or not isinstance(entry, dict):
                raise ValueError(f"{path}: user {name!r}: expected [users.NAME] with role and token_sha256")
            role, h = entry.get("role"), str(entry.get("token_sha256", ""))
            if role not in ROLES:
                raise ValueError(f"{path}: user {name}: role {role!r}, expected one of {', '.join(ROLES)}")
            if not re.fullmatch(r"[0-9a-f]{64}", h):
                raise ValueError(f"{path}: user {name}: token_sha256 must be 64 hex digits")
            by_hash[h] = User(name, role)
        return cls(by_hash)

    def user_for(self, token: str) -> User | None:
        """The user holding `token`, or None (compared in constant time)."""
        h = token_hash(token)
        for stored, user in self.by_hash.items():
            if hmac.compare_digest(stored, h):
                return user
        return None


def new_token(path: str | Path, name: str, role: str) -> str:
    """Append a user with a fresh random token to the users file; returns the token (shown once)."""
    if not _NAME.match(name):
        raise ValueError(f"user name {name!r}: letters, digits, _ . - only")
    if role not in ROLES:
        raise ValueError(f"role {role!r}: expected one of {', '.join(ROLES)}")
    path = Path(path)
    if path.exists() and name in (tomllib.loads(path.read_text()).get("users") or {}):
        raise ValueError(f"{path}: user {name} already exists; remove its section first")
    token = secrets.token_urlsafe(32)
    with open(path, "a") as f:
        f.write(f'\n[users.{name}]\nrole = "{role}"\ntoken_sha256 = "{token_hash(token)}"\n')
    return token
