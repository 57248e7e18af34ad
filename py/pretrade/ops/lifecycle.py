"""Model lifecycle from the API: each model's status (the models folder's status log) beside what
the process serving it does, and a person's status change recorded once and applied there.

Where a model is served: the anomaly model (vae) by the risk engine, the fat-finger model by the
gateway; the others are read at start by whatever loads them. A change is checked against the
status log (pretrade.models.status: only a person approves, retired is final), then:

- risk engine: applied first (`.rte.approve`, `.rte.shadow`, or `.rte.deactivate` for retired),
  because an engine started with --write-status appends the change to the same log itself; the
  API appends it only if the log does not show it afterwards, so it is recorded once.
- gateway: recorded first (the gateway never writes the log), then `.gw.model_status[]` makes
  the gateway re-read and apply it.

A process that is down, or serves another version, does not stop the change: it is recorded and
applies at that process's next start (the answer says so).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pretrade.models.status import StatusBook, StatusError, check_transition
from pretrade.ops.api import BackendDown, BackendRefused, Settings, ipc_call
from pretrade.ops.live import plain

log = logging.getLogger(__name__)


class StatusLogDown(BackendDown):
    """The models folder's status log could not be read or written (503, audited); for the risk
    engine, which applies before the API records, the engine's journal still has the change."""


SERVED_BY = {"vae": "rte", "fatfinger": "gw"}  # model name -> the process that applies its status live
PROCESS = {"rte": "risk engine", "gw": "gateway"}


@dataclass(frozen=True)
class Serving:
    """What the process serving a model says about it now."""

    process: str | None      # "rte", "gw", or None (no process applies it at run time)
    version: str | None      # the version that process has loaded ("" none; None unknown)
    status: str | None       # the status it applies (None unknown)
    binds: bool | None       # whether the model sets limits / rejects orders there (None unknown)
    text: str                # one line for people


def serving(settings: Settings, name: str, version: str) -> Serving:
    """Ask the process that serves `name` (if any) what it has loaded and whether it binds; a
    process that is down gives unknowns and says so."""
    process = SERVED_BY.get(name)
    if process is None:
        return Serving(None, None, None, None, "no running process applies its status (read at start)")
    where = PROCESS[process]
    try:
        if process == "rte":
            st = ipc_call(settings, "rte", ".rte.status[]")
            served, status = str(plain(st.get("model")) or ""), str(plain(st.get("modelStatus")) or "")
            binds = bool(st.get("modelActive")) and served == version
            on = "active" if binds else "deactivated (static limits)"
        else:
            st = ipc_call(settings, "gw", ".gw.status")
            served, status = str(plain(st.get("model")) or ""), str(plain(st.get("model_status")) or "")
            binds = bool(st.get("model_binds")) and served == version
            on = "binding" if binds else "not binding"
    except (BackendDown, BackendRefused) as e:
        return Serving(process, None, None, None, str(e))
    if served != version:
        return Serving(process, served, status, False,
                       f"the {where} serves {served or 'no model'} ({status}), not {version}")
    return Serving(process, served, status, binds, f"{on} at the {where} ({status})")


@dataclass(frozen=True)
class Outcome:
    """A status change as recorded and applied."""

    model: str
    version: str
    old: str
    new: str
    recorded_by: str   # "api" or "risk engine" (an engine with --write-status appends it itself)
    applied: bool      # the serving process applies it now
    serving: Serving   # what that process says afterwards
    text: str          # one line for people and the audit log


def change_status(settings: Settings, name: str, new: str, who: str, why: str) -> Outcome:
    """Move model `name` to `new` for person `who`: checked against the status log (StatusError),
    recorded once in it, and applied where the model is served (BackendRefused if that process
    refuses; a process that is down leaves the change recorded, to apply at its next start)."""
    book = StatusBook(settings.models)
    try:
        version = str(book.card(name).get("version", ""))
        old = book.status(name, version)
    except OSError as e:
        raise StatusLogDown(f"status log in {book.dir} unreadable: {e}") from None
    check_transition(old, new, who, why)
    process = SERVED_BY.get(name)
    if process == "rte":
        applied, how = _apply_at_engine(settings, name, version, new, who, why)
        recorded_by = "risk engine"
        if book.status(name, version) != new:  # the engine does not write this log (no --write-status)
            _record(book, name, new, who, why, version)
            recorded_by = "api"
    else:
        _record(book, name, new, who, why, version)
        recorded_by = "api"
        applied, how = _apply_at_gateway(settings, version, new) if process == "gw" else \
            (False, "no running process applies it: it takes effect where the model is next loaded")
    now = serving(settings, name, version)
    text = f"{name} {version}: {old} -> {new} by {who} (recorded by the {recorded_by}); {how}"
    log.warning("model status change through the API: %s", text)
    return Outcome(name, version, old, new, recorded_by, applied, now, text)


def _record(book: StatusBook, name: str, new: str, who: str, why: str, version: str) -> None:
    try:
        book.change(name, new, who, why, version)
    except OSError as e:
        raise StatusLogDown(f"status log {book.path} not written: {e}") from None


def _apply_at_engine(settings: Settings, name: str, version: str, new: str, who: str,
                     why: str) -> tuple[bool, str]:
    """Apply a status change at the risk engine: (applied now, what happened)."""
    try:
        st = ipc_call(settings, "rte", ".rte.status[]")
    except BackendDown as e:
        return False, f"not applied now ({e}): the risk engine applies it at its next start"
    served, status = str(plain(st.get("model")) or ""), str(plain(st.get("modelStatus")) or "")
    if served != version:
        return False, (f"the risk engine serves {served or 'no model'}, not {version}: "
                       "it applies when the engine loads this version (next start)")
    note = why.encode()
    if new == "approved":
        answer = ipc_call(settings, "rte", ".rte.approve", name, who, note)
    elif new == "shadow" and status != "shadow":
        answer = ipc_call(settings, "rte", ".rte.shadow", name, who, note)
    elif new == "retired" and st.get("modelActive"):
        answer = ipc_call(settings, "rte", ".rte.deactivate", who, f"retire {version}: {why}".encode())
    elif new == "retired":
        return True, f"the risk engine already does not bind it ({status}); it is not loaded at its next start"
    else:
        return True, f"the risk engine already has it {status}"
    tail = "; not loaded at its next start" if new == "retired" else ""
    return True, f"applied at the risk engine: {plain(answer)}{tail}"


def _apply_at_gateway(settings: Settings, version: str, new: str) -> tuple[bool, str]:
    """Ask the gateway to re-read the status log (.gw.model_status[]): (applied now, what happened)."""
    later = "the gateway applies it at its next start, or on .gw.model_status[]"
    try:
        st = ipc_call(settings, "gw", ".gw.status")
        served = str(plain(st.get("model")) or "")
        if served != version:
            return False, f"the gateway serves {served or 'no fat-finger model'}, not {version}: {later}"
        answer = ipc_call(settings, "gw", ".gw.model_status[]")
        after = str(plain(ipc_call(settings, "gw", ".gw.status").get("model_status")) or "")
    except (BackendDown, BackendRefused) as e:
        return False, f"not applied now ({e}): {later}"
    if after != new:
        return False, f"the gateway re-read its log and applies {after}, not {new} " \
                      f"(does it read another models folder?): {plain(answer)}"
    return True, f"applied at the gateway: {plain(answer)}"


def summaries(settings: Settings) -> list[dict[str, Any]]:
    """Every model in the folder: name, kind, version, status from the status log (with its last
    change), and what the process serving it says (whether it binds)."""
    book = StatusBook(settings.models)
    out = []
    for name in book.models():
        try:
            card = book.card(name)
            version = str(card.get("version", ""))
            status = book.status(name, version)
            last = [c for c in book.history(name) if c.version == version]
        except StatusError as e:  # removed while listing
            log.warning("%s", e)
            continue
        except OSError as e:
            raise StatusLogDown(f"status log in {book.dir} unreadable: {e}") from None
        s = serving(settings, name, version)
        out.append({"name": name, "kind": str(card.get("kind", "")), "version": version,
                    "created": card.get("created"), "artifact": card.get("artifact"),
                    "status": status,
                    "changed": {"time": last[-1].time, "who": last[-1].who, "why": last[-1].why} if last else None,
                    "served_by": s.process, "binds": s.binds, "serving": s.text})
    return out
