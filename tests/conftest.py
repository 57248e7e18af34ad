"""Shared test fixtures: free ports, temporary data folders, and the kdb marker's skip rule."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

from pretrade.up import free_port  # noqa: E402  (tests import it from here)

ROOT = Path(__file__).resolve().parents[1]


def start_pretrade(args: list[str], log: Path, port: int | None = None,
                   timeout: float = 60.0) -> subprocess.Popen:
    """A `pretrade` subprocess logging to `log`; with a port, wait until it listens (or fail
    with the tail of its log)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "py"), PYKX_UNLICENSED="true",
               PYKX_SUPPRESS_WARNINGS="true")
    with open(log, "ab") as err:
        p = subprocess.Popen([sys.executable, "-m", "pretrade.cli", *args], stdout=subprocess.DEVNULL,
                             stderr=err, env=env, cwd=ROOT)
    if port is None:
        return p
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            if p.poll() is not None:
                break
            time.sleep(0.1)
    p.kill()
    raise RuntimeError(f"{args[0]} did not start:\n{Path(log).read_text()[-3000:]}")


def stop_process(p: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if it has not stopped within `timeout`."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def licensed_q() -> str | None:
    """Why q cannot run here, or None when a licensed q is on the PATH."""
    if not shutil.which("q"):
        return "no q binary on the PATH (kdb+ is not installed on this machine)"
    if not (os.environ.get("QLIC") or os.path.exists(os.path.expanduser("~/q/kc.lic"))
            or os.path.exists(os.path.expanduser("~/q/k4.lic"))):
        return "q is on the PATH but no kdb+ licence (QLIC, ~/q/kc.lic or k4.lic) was found"
    return None


def pytest_collection_modifyitems(config, items):
    reason = licensed_q()
    if reason:
        skip = pytest.mark.skip(reason=f"kdb test skipped: {reason}")
        for item in items:
            if "kdb" in item.keywords:
                item.add_marker(skip)


@pytest.fixture
def port() -> int:
    return free_port()
