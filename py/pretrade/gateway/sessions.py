"""QuickFIX session settings and the allowed clients, shared by the gateway and the exchange.

Settings come from the templates in config/fix/ (string.Template `${name}` placeholders), with
one [SESSION] per counterparty appended, written next to the session store so an operator can
read exactly what QuickFIX was given. The data dictionary is the FIX44.xml QuickFIX ships.
"""

from __future__ import annotations

import hmac
import logging
import os
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pretrade.config import CONFIG_DIR, load_toml

log = logging.getLogger(__name__)

BEGIN_STRING = "FIX.4.4"
GATEWAY_ID = "PRETRADE"
CLIENT_ID = "CLIENT1"
EXCHANGE_ID = "EXCH"
PASSWORD_ENV = "PRETRADE_FIX_PASSWORD"
GATEWAY_PORT = 9876
EXCHANGE_PORT = 9877


def data_dictionary() -> Path:
    """The FIX 4.4 data dictionary the quickfix package installs (share/quickfix/FIX44.xml)."""
    candidates = [Path(sys.prefix) / "share" / "quickfix" / "FIX44.xml"]
    try:
        import quickfix

        here = Path(quickfix.__file__).resolve().parent
        candidates += [here / "quickfix" / "FIX44.xml", here.parents[2] / "share" / "quickfix" / "FIX44.xml"]
    except ImportError:
        pass
    for p in candidates:
        if p.is_file():
            return p
    raise FileNotFoundError(f"FIX44.xml not found (looked in {', '.join(map(str, candidates))}); "
                            "install the quickfix package: pip install -e '.[fix]'")


def render(template: str, sessions: list[str], **values: object) -> str:
    """The settings text of config/fix/<template>.cfg with `values` filled in and one
    [SESSION] per TargetCompID in `sessions`."""
    text = (CONFIG_DIR / "fix" / f"{template}.cfg").read_text()
    text = string.Template(text).substitute({k: str(v) for k, v in values.items()})
    for target in sessions:
        text += f"\n[SESSION]\nTargetCompID={target}\n"
    return text


def settings(template: str, workdir: Path, sessions: list[str], **values: object):
    """A quickfix.SessionSettings from the template, written to workdir/<template>.cfg; the
    store and log folders are made under workdir."""
    import quickfix as fix

    workdir = Path(workdir)
    store, logs = workdir / "store", workdir / "log"
    store.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    values = {"store": store, "log": logs, "dictionary": data_dictionary(), **values}
    path = workdir / f"{template}.cfg"
    path.write_text(render(template, sessions, **values))
    return fix.SessionSettings(str(path))


@dataclass(frozen=True)
class FixClient:
    """A client allowed to log on: its CompID, its password (None: cannot log on), account."""

    comp_id: str
    password: str | None
    account: str

    def accepts(self, given: str) -> bool:
        """True if `given` is this client's password (compared in constant time)."""
        return self.password is not None and hmac.compare_digest(self.password.encode(), given.encode())


def load_clients(path: str | Path | None = None, env: dict[str, str] | None = None,
                 warn: bool = True) -> dict[str, FixClient]:
    """The allowed clients of config/fix_clients.toml (or `path`), passwords from `env`; `warn`:
    log each client whose password variable is unset (the gateway; a client process checks its own)."""
    env = os.environ if env is None else env
    p = Path(path) if path else CONFIG_DIR / "fix_clients.toml"
    data = load_toml(p).get("client", {})
    if not data:
        raise ValueError(f"{p}: no [client.COMPID] sections: no client could log on")
    out = {}
    for comp_id, c in data.items():
        var = c.get("password_env")
        if not var:
            raise ValueError(f"{p} [client.{comp_id}]: password_env (an environment variable name) is required")
        password = env.get(var) or None
        if password is None and warn:
            log.warning("FIX client %s cannot log on: environment variable %s is not set", comp_id, var)
        out[comp_id] = FixClient(comp_id, password, str(c.get("account", comp_id)))
    return out


def _nothing(*_: object) -> None:
    return None


def application(on_create=None, on_logon=None, on_logout=None, to_admin=None, from_admin=None,
                from_app=None):
    """A QuickFIX Application whose callbacks are these functions, each taking QuickFIX's own
    arguments ((sid), or (msg, sid)); a missing one does nothing. One adapter for every FIX party
    here, so each names only what it does. An exception raised (e.g. quickfix.RejectLogon)
    reaches QuickFIX as it would from the method."""
    import quickfix as fix

    create, logon, logout = on_create or _nothing, on_logon or _nothing, on_logout or _nothing
    to_adm, from_adm, from_ap = to_admin or _nothing, from_admin or _nothing, from_app or _nothing

    class _App(fix.Application):
        def onCreate(s, sid):  # noqa: N802, N805 (QuickFIX's names)
            create(sid)

        def onLogon(s, sid):  # noqa: N802, N805
            logon(sid)

        def onLogout(s, sid):  # noqa: N802, N805
            logout(sid)

        def toAdmin(s, msg, sid):  # noqa: N802, N805
            to_adm(msg, sid)

        def fromAdmin(s, msg, sid):  # noqa: N802, N805
            from_adm(msg, sid)

        def toApp(s, msg, sid):  # noqa: N802, N805
            pass

        def fromApp(s, msg, sid):  # noqa: N802, N805
            from_ap(msg, sid)

    return _App()


class FixEngine:
    """A QuickFIX acceptor or initiator, started and stopped safely.

    The threaded variants (a thread per session): the single-threaded SocketAcceptor of
    quickfix 1.16 crashed here in stop() (SocketServer::close racing its own thread) whenever a
    peer was still connected. The application, settings and factories are held for the life of
    the engine, which points to them.
    """

    engine: object | None

    def __init__(self, kind: str, app, session_settings) -> None:
        import quickfix as fix

        self.app, self.settings = app, session_settings
        self.store = fix.FileStoreFactory(session_settings)
        self.logs = fix.FileLogFactory(session_settings)
        cls = fix.ThreadedSocketAcceptor if kind == "acceptor" else fix.ThreadedSocketInitiator
        self.engine = cls(app, self.store, session_settings, self.logs)

    def start(self) -> FixEngine:
        self.engine.start()
        return self

    def stop(self) -> None:
        """Log the sessions out and wait (up to 5 s) until they are, then stop, then destroy the
        engine. QuickFIX's stop() closes sockets that its own thread may still be disconnecting
        (a crash seen here when a peer was mid-logout), so the logouts are done first, with the
        GIL free for the callbacks. The engine is destroyed at once: a stopped engine left alive
        keeps its session IDs in QuickFIX's process-wide registry and shadows a new session."""
        import quickfix as fix

        if self.engine is None:
            return
        for sid in self.engine.getSessions():
            session = fix.Session.lookupSession(sid)
            if session is not None and session.isLoggedOn():
                session.logout("shutting down")
        end = time.monotonic() + 5
        while self.engine.isLoggedOn() and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.1)  # the engine's thread finishes the disconnects
        self.engine.stop()
        self.engine = None
