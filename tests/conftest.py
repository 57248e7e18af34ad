"""Shared test fixtures: free ports, temporary data folders, and the kdb marker's skip rule."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
