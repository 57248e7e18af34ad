"""`pretrade up`: start the whole stack, supervise it, stop it cleanly.

Each process runs as its own OS process (as it would in production), logging to one file per
process under the logs folder. A process that dies is reported and restarted with backoff; the
others carry on. Ctrl-C (or SIGTERM) stops the market first, runs end of day, then stops the
rest and the tickerplant last, so nothing in flight is lost.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pretrade.config import ROOT, topology

log = logging.getLogger(__name__)

IPC_USER = "pretrade"


@dataclass
class Process:
    """One supervised process: how to start it and what became of it."""

    name: str
    argv: list[str]
    port: int | None = None
    popen: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    logfile: Path | None = None
    env: dict[str, str] = field(default_factory=dict)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="topology file (default config/topology.toml)")
    p.add_argument("--engine", choices=["embedded", "kdb"], default="embedded",
                   help="embedded: the Python processes (default); kdb: the q twins (needs a licensed q)")
    p.add_argument("--data", type=Path, default=None, help="data folder (default: paths.data of the topology)")
    p.add_argument("--scenario", default=None, help="market scenario the exchange plays (default from topology)")
    p.add_argument("--speed", default=None, help="market speed: 1 real time, N times faster (default from topology)")
    p.add_argument("--no-feed", action="store_true",
                   help="the exchange publishes no market data (an idle venue; publish your own with `pretrade feed`)")
    p.add_argument("--skip", nargs="+", default=[], metavar="NAME",
                   help="processes not to start (e.g. --skip gateway exchange api)")
    p.add_argument("--for", dest="duration", type=float, default=None,
                   help="stop by itself after this many seconds (default: run until Ctrl-C)")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (for tests, benchmarks and story runs)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(proc: Process, timeout: float = 30.0) -> None:
    """Block until proc listens on its port; fail with its log tail if it dies first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.port is None or _port_open(proc.port):
            return
        if proc.popen and proc.popen.poll() is not None:
            break
        time.sleep(0.1)
    tail = proc.logfile.read_text()[-2000:] if proc.logfile and proc.logfile.exists() else ""
    raise RuntimeError(f"{proc.name} did not start listening on port {proc.port}:\n{tail}")


def ipc_credentials(data: Path) -> tuple[Path, str]:
    """The stack's users file and its service password, created on first use (secure by default)."""
    from pretrade.ipc.auth import Users, hash_password

    users_file, secret_file = data / "users.toml", data / "ipc-password"
    if secret_file.exists() and users_file.exists():
        password = secret_file.read_text().strip()
        if Users.load(users_file).verify(IPC_USER, password):
            return users_file, password
    password = secrets.token_urlsafe(12)
    secret_file.write_text(password + "\n")
    secret_file.chmod(0o600)
    users_file.write_text(f'[users]\n{IPC_USER} = "{hash_password(password)}"\n')
    return users_file, password


def fix_password(data: Path, name: str = "fix-password") -> str:
    """A FIX client's password (Logon tag 554), random, made once, kept in data/<name>: CLIENT1's
    in fix-password, the hedging process's (HEDGE1) in hedge-fix-password."""
    path = data / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12) + "\n")
        path.chmod(0o600)
    return path.read_text().strip()


def api_tokens(data: Path) -> Path:
    """The stack's API users file with fresh tokens for a risk officer and a trader, made once;
    the tokens themselves are kept in data/api-tokens (mode 600), never in the repository."""
    from pretrade.ops.auth import new_token

    users_file, tokens_file = data / "api_users.toml", data / "api-tokens"
    if users_file.exists() and tokens_file.exists():
        return users_file
    users_file.unlink(missing_ok=True)
    lines = [f"{name} ({role}): {new_token(users_file, name, role)}"
             for name, role in (("risk1", "risk_officer"), ("trader1", "trader"))]
    tokens_file.write_text("\n".join(lines) + "\n")
    tokens_file.chmod(0o600)
    return users_file


def embedded_stack(topo: dict, data: Path, users: Path, args: argparse.Namespace) -> list[Process]:
    """The embedded engine's processes, in start order."""
    exe = [sys.executable, "-m", "pretrade.cli"]
    tp, rdb, hdb, rte = topo["tp"], topo["rdb"], topo["hdb"], topo["rte"]
    ex_port, gw_port = topo["exchange"]["fix_port"], topo["gateway"]["fix_port"]
    tp_addr = f"{tp['host']}:{tp['port']}"
    # The exchange is the market: it runs the simulation forward and publishes quotes, trades and
    # depth, and the firm's orders trade in the same books, so they move the prices everyone sees.
    sim = topo.get("market", {})
    market = [] if args.no_feed else [
        "--tp", tp_addr, "--scenario", args.scenario or sim.get("scenario", "normal"),
        "--seed", str(sim.get("seed", 1)), "--speed", str(args.speed or sim.get("speed", "1")),
        "--duration", str(sim.get("duration", "6.5h")), "--start", "now"]
    journal, hdb_dir = data / "journal", data / "hdb"
    procs = [
        Process("tp", exe + ["tp", "--port", str(tp["port"]), "--journal", str(journal),
                             "--batch-ms", str(tp.get("batch_ms", 0)), "--users", str(users)], tp["port"]),
        Process("hdb", exe + ["hdb", "--port", str(hdb["port"]), "--dir", str(hdb_dir),
                              "--users", str(users)], hdb["port"]),
        Process("rdb", exe + ["rdb", "--port", str(rdb["port"]), "--tp", tp_addr, "--hdb", str(hdb_dir),
                              "--hdb-addr", f"127.0.0.1:{hdb['port']}", "--users", str(users)], rdb["port"]),
        Process("rte", exe + ["rte", "--port", str(rte["port"]), "--tp", tp_addr,
                              "--models", str(ROOT / "models"), "--users", str(users),
                              # drift thresholds were measured on this ten-instrument market
                              "--drift-action", "takeoff"], rte["port"]),
        Process("exchange", exe + ["exchange", "--fix-port", str(ex_port),
                                   "--workdir", str(data / "fix" / "exchange")] + market, ex_port),
        Process("gateway", exe + ["gateway", "--fix-port", str(gw_port), "--tp", tp_addr,
                                  "--rte", f"127.0.0.1:{rte['port']}", "--exchange", f"127.0.0.1:{ex_port}",
                                  "--rdb", f"127.0.0.1:{rdb['port']}", "--hdb", f"127.0.0.1:{hdb['port']}",
                                  "--port", str(topo["gateway"]["control_port"]), "--users", str(users),
                                  "--workdir", str(data / "fix" / "gateway")], gw_port),
        # the hedging agent's orders: a FIX client of the gateway like any other (no port; a
        # failure is restarted by the supervisor, the rest of the stack carries on)
        Process("hedge", exe + ["hedge", "--tp", tp_addr, "--gateway", f"127.0.0.1:{gw_port}",
                                "--rdb", f"127.0.0.1:{rdb['port']}",
                                "--workdir", str(data / "fix" / "hedge")]),
        Process("api", exe + ["api", "--port", str(topo["api"]["port"]), "--tp", tp_addr,
                              "--rdb", f"127.0.0.1:{rdb['port']}", "--hdb", f"127.0.0.1:{hdb['port']}",
                              "--rte", f"127.0.0.1:{rte['port']}", "--gw", f"127.0.0.1:{topo['gateway']['control_port']}",
                              "--users", str(api_tokens(data)),
                              "--audit", str(data / "log" / "audit.jsonl")], topo["api"]["port"]),
    ]
    return procs


def kdb_stack(topo: dict, data: Path) -> list[Process]:
    """The q twins (tickerplant/*.q); needs a licensed q on the PATH."""
    q = shutil.which("q")
    if not q:
        raise SystemExit("--engine kdb needs q on the PATH (a licensed kdb+); none was found. "
                         "Use the default embedded engine.")
    tick = ROOT / "tickerplant"
    tp, rdb, hdb = topo["tp"], topo["rdb"], topo["hdb"]
    journal, hdb_dir = data / "journal", data / "hdb"
    journal.mkdir(parents=True, exist_ok=True)
    hdb_dir.mkdir(parents=True, exist_ok=True)
    batch = ["-t", str(tp["batch_ms"])] if tp.get("batch_ms") else []
    return [
        Process("tp", [q, str(tick / "tick.q"), "sym", str(journal), "-p", str(tp["port"])] + batch, tp["port"]),
        Process("hdb", [q, str(tick / "hdb.q"), str(hdb_dir), "-p", str(hdb["port"])], hdb["port"]),
        Process("rdb", [q, str(tick / "r.q"), f":{tp['port']}", f":{hdb['port']}", "-p", str(rdb["port"])],
                rdb["port"]),
    ]


def _start(proc: Process, logs: Path, env: dict[str, str]) -> None:
    proc.logfile = logs / f"{proc.name}.log"
    out = proc.logfile.open("ab")
    proc.popen = subprocess.Popen(proc.argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                  cwd=ROOT, start_new_session=True)
    out.close()
    log.info("started %s (pid %d), log %s", proc.name, proc.popen.pid, proc.logfile)


def _stop(proc: Process, timeout: float = 15.0) -> None:
    if not proc.popen or proc.popen.poll() is not None:
        return
    proc.popen.send_signal(signal.SIGTERM)
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop within %.0fs of SIGTERM; killing it", proc.name, timeout)
        proc.popen.kill()
        proc.popen.wait()
    log.info("stopped %s (exit %s)", proc.name, proc.popen.returncode)


def supervise(procs: list[Process], logs: Path, env: dict[str, str], duration: float | None) -> None:
    """Restart any process that dies (backoff 1, 2, 4 .. 30 s) until told to stop."""
    stopping = False

    def _on_signal(signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    deadline = time.monotonic() + duration if duration else None
    while not stopping and (deadline is None or time.monotonic() < deadline):
        now = time.monotonic()
        for p in procs:
            code = p.popen.poll() if p.popen else None
            if p.popen and code is not None and p.next_start == 0.0:
                delay = min(30.0, 2.0 ** p.restarts)
                log.error("%s exited with code %s; restarting in %.0fs (see %s)", p.name, code, delay, p.logfile)
                p.next_start = now + delay
            elif p.next_start and now >= p.next_start:
                p.restarts += 1
                p.next_start = 0.0
                _start(p, logs, env)
        time.sleep(0.2)


def run(args: argparse.Namespace) -> int:
    topo = topology(args.config)
    data = (args.data or Path(topo["paths"]["data"]))
    data = data if data.is_absolute() else ROOT / data
    logs = data / "log"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYKX_UNLICENSED="true", PYKX_SUPPRESS_WARNINGS="true")
    if args.engine == "kdb":
        procs = kdb_stack(topo, data)
    else:
        users, password = ipc_credentials(data)
        env.update(PRETRADE_USER=IPC_USER, PRETRADE_PASSWORD=password,
                   PRETRADE_FIX_PASSWORD=env.get("PRETRADE_FIX_PASSWORD") or fix_password(data),
                   PRETRADE_HEDGE_PASSWORD=env.get("PRETRADE_HEDGE_PASSWORD") or fix_password(data, "hedge-fix-password"))
        procs = embedded_stack(topo, data, users, args)
    unknown = set(args.skip) - {p.name for p in procs}
    if unknown:
        raise SystemExit(f"--skip: no process called {', '.join(sorted(unknown))}; "
                         f"the stack has {', '.join(p.name for p in procs)}")
    skip = set(args.skip)
    if "gateway" in skip and "hedge" not in skip and any(p.name == "hedge" for p in procs):
        log.info("not starting hedge: its orders go through the gateway, which is skipped")
        skip.add("hedge")
    procs = [p for p in procs if p.name not in skip]
    for p in procs:
        if p.port and _port_open(p.port):
            raise SystemExit(f"port {p.port} for {p.name} is already in use: is another stack running?")
    try:
        for p in procs:
            _start(p, logs, env)
            _wait_port(p)
        _print_banner(topo, data, args.engine)
        supervise(procs, logs, env, args.duration)
    except RuntimeError as e:  # a process that would not start: say which and why, stop the rest
        log.error("%s", e)
        for p in reversed(procs):
            _stop(p)
        return 1
    shutdown(procs, topo, data, env, end_day=args.engine == "embedded")
    return 0


def shutdown(procs: list[Process], topo: dict, data: Path, env: dict[str, str], end_day: bool) -> None:
    """Stop cleanly: the market first (nothing new arrives), then end of day (the RDB writes
    today's partition), then the others, then the tickerplant. Every update was journaled on
    arrival, so nothing is lost even if end of day cannot run."""
    by_name = {p.name: p for p in procs}
    for name in ("hedge", "api", "gateway", "exchange"):
        if name in by_name:
            _stop(by_name[name])
    if end_day and all(by_name[n].popen and by_name[n].popen.poll() is None for n in ("tp", "rdb")):
        _end_of_day(topo, data, env)
    log.info("stopping: consumers, then the tickerplant")
    for p in reversed(procs):
        _stop(p)


def _end_of_day(topo: dict, data: Path, env: dict[str, str], timeout: float = 60.0) -> None:
    """Ask the tickerplant for end of day and wait until the RDB has written the partition."""
    from pretrade.tick.eod import end_of_day

    try:
        ended = end_of_day(topo["tp"]["host"], topo["tp"]["port"], env.get("PRETRADE_USER", ""),
                           env.get("PRETRADE_PASSWORD", ""))
    except Exception as e:  # noqa: BLE001 - the journal still holds the day: report, carry on stopping
        log.error("end of day failed (%s); today's data stays in the journal and replays on restart", e)
        return
    partition = data / "hdb" / f"date={ended:%Y-%m-%d}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not partition.exists():
        time.sleep(0.2)
    if partition.exists():
        log.info("end of day %s written to %s", ended, partition)
    else:
        log.error("the RDB did not write %s within %.0fs; the journal still holds the day", partition, timeout)


def _print_banner(topo: dict, data: Path, engine: str) -> None:
    creds = (f"user {IPC_USER}, password in {data / 'ipc-password'}" if engine == "embedded"
             else "as configured for q")
    print(
        f"\npretrade is up ({engine} engine). Ctrl-C stops it cleanly.\n"
        f"  tickerplant  kdb+ IPC  127.0.0.1:{topo['tp']['port']}\n"
        f"  rdb          kdb+ IPC  127.0.0.1:{topo['rdb']['port']}   e.g. pretrade query :{topo['rdb']['port']} "
        f"\"s)select sym, count(*) from trade group by sym\"\n"
        f"  hdb          kdb+ IPC  127.0.0.1:{topo['hdb']['port']}\n"
        f"  risk engine  kdb+ IPC  127.0.0.1:{topo['rte']['port']}   e.g. pretrade query :{topo['rte']['port']} "
        f"\".rte.status[]\"\n"
        f"  dashboard    http://127.0.0.1:{topo['api']['port']}/   (REST API: /openapi.json; tokens in {data / 'api-tokens'})\n"
        f"  FIX gateway  127.0.0.1:{topo['gateway']['fix_port']}   FIX 4.4, TargetCompID PRETRADE, "
        f"SenderCompID CLIENT1, password (tag 554) in {data / 'fix-password'}\n"
        f"  hedging      FIX client HEDGE1 of the gateway (positions in config/hedge.toml), log {data / 'log' / 'hedge.log'}\n"
        f"  credentials  {creds}\n"
        f"  logs         {data / 'log'}\n",
        flush=True,
    )
