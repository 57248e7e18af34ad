"""Benchmark: pretrade's q codec against PyKX (unlicensed) on the tickerplant's messages.

Messages: a one-row `.u.upd[`trade; (time; sym; price; size; side)]` and a 100-row column update
of the same table. For each: decode (ours -> Python/numpy objects; PyKX deserialize alone, and
deserialize + conversion to Python/numpy), encode (ours; PyKX toq + serialize), and our
object_size walk (what the journal and the tickerplant use to find and check records).

    .venv/bin/python scripts/bench_codec.py [--seconds 0.3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("PYKX_UNLICENSED", "true")
os.environ.setdefault("PYKX_SUPPRESS_WARNINGS", "true")

import numpy as np  # noqa: E402
import pykx as kx  # noqa: E402

from pretrade.ipc import codec  # noqa: E402

TS = np.datetime64("2026-11-21T14:30:22.123456789", "ns")


def per_call_us(fn, seconds: float) -> float:
    """Median over 5 runs of the time per call, in microseconds."""
    n = 1
    while True:  # calibrate: enough calls for ~seconds/5 per run
        t = time.perf_counter()
        for _ in range(n):
            fn()
        el = time.perf_counter() - t
        if el > seconds / 5 or n > 1 << 22:
            break
        n *= 2
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return statistics.median(runs)


def messages() -> dict[str, tuple[object, object]]:
    """name -> (Python value, equivalent PyKX object)."""
    one_py = [".u.upd", "trade", [TS, "AAPL", 101.25, 300, "buy"]]
    one_kx = kx.List(
        [
            kx.SymbolAtom(".u.upd"),
            kx.SymbolAtom("trade"),
            kx.List(
                [
                    kx.toq(TS),
                    kx.SymbolAtom("AAPL"),
                    kx.FloatAtom(101.25),
                    kx.LongAtom(300),
                    kx.SymbolAtom("buy"),
                ]
            ),
        ]
    )
    n = 100
    cols = [
        TS + np.arange(n).astype("timedelta64[ns]"),
        np.array([f"S{i % 10}" for i in range(n)], dtype=object),
        100 + np.arange(n) / 100.0,
        np.arange(n, dtype=np.int64) * 10,
        np.array(["buy", "sell"] * (n // 2), dtype=object),
    ]
    many_py = [".u.upd", "trade", cols]
    many_kx = kx.List(
        [kx.SymbolAtom(".u.upd"), kx.SymbolAtom("trade"), kx.List([kx.toq(c) for c in cols])]
    )
    return {"1-row .u.upd": (one_py, one_kx), "100-row .u.upd": (many_py, many_kx)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.3, help="time per measurement (default 0.3)")
    args = ap.parse_args()
    s = args.seconds
    print(
        f"pykx {kx.__version__} (unlicensed), numpy {np.__version__}; microseconds per message, median of 5"
    )
    print(f"{'message':16} {'operation':44} {'us':>9} {'vs ours':>8}")
    for name, (py, kobj) in messages().items():
        raw = codec.encode(py)
        assert raw == bytes(kx.serialize(kobj))[8:], "codecs disagree on the bytes"
        framed = bytes(kx.serialize(kobj))
        ours_dec = per_call_us(lambda raw=raw: codec.loads(raw), s)
        ours_enc = per_call_us(lambda py=py: codec.encode(py), s)
        rows = [
            ("decode: pretrade codec.loads -> Python/numpy", ours_dec, ours_dec),
            (
                "decode: pykx.deserialize (q object only)",
                per_call_us(lambda f=framed: kx.deserialize(f), s),
                ours_dec,
            ),
            (
                "decode: pykx.deserialize + .py()",
                per_call_us(lambda f=framed: kx.deserialize(f).py(), s),
                ours_dec,
            ),
            (
                "decode: pykx.deserialize + .np()",
                per_call_us(lambda f=framed: kx.deserialize(f).np(), s),
                ours_dec,
            ),
            (
                "size:   pretrade codec.object_size",
                per_call_us(lambda raw=raw: codec.object_size(raw), s),
                ours_dec,
            ),
            ("encode: pretrade codec.encode", ours_enc, ours_enc),
            (
                "encode: pykx.serialize(pykx.toq(value))",
                per_call_us(lambda py=py: kx.serialize(kx.toq(py)), s),
                ours_enc,
            ),
            (
                "encode: pykx.serialize(q object)",
                per_call_us(lambda k=kobj: kx.serialize(k), s),
                ours_enc,
            ),
        ]
        for op, us, base in rows:
            print(f"{name:16} {op:44} {us:9.2f} {us / base:7.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
