"""q/risk.q against the same golden cases as the Python checks (needs a licensed q: marker kdb)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.kdb

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "checks.json"


def test_q_checks_match_the_golden_cases():
    out = subprocess.run(["q", str(ROOT / "q" / "risk.q"), "-golden", str(GOLDEN)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    got = {r["name"]: r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    for case in json.loads(GOLDEN.read_text())["cases"]:
        r = got[case["name"]]
        assert r["code"] == case["expect"], (case["name"], r)
        if "text" in case:
            assert r["text"] == case["text"], case["name"]
