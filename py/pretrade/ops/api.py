"""The REST API and dashboard (`pretrade api`): what a risk desk reads and the buttons it presses.

Reads come from the processes themselves over kdb+ IPC (the risk engine's current limits and
status, the RDB and HDB by SQL, the gateway's modes) and from a live tickerplant subscription
(scores, alerts, decisions) that also feeds the browsers' event stream. Actions go to the risk
engine (kill switch, reset, reduce, limit override, model on/off) and the gateway (shadow / A/B
mode); a model's lifecycle status goes to the models folder's status log and then to the process
serving the model (ops.lifecycle). Each is written to the audit log before the answer goes back. Bearer tokens: traders
read, risk officers act. A backend that is down gives 503 naming it; the API keeps running.
"""


import argparse
import asyncio
import json
import logging
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pretrade.config import CONFIG_DIR, ROOT

log = logging.getLogger(__name__)

DASHBOARD = Path(__file__).resolve().parent / "dashboard"
PROCESS_NAMES = {"tp": "tickerplant", "rdb": "RDB", "hdb": "HDB", "rte": "risk engine", "gw": "gateway"}
_SYM = re.compile(r"^[A-Za-z0-9_.\-]{0,32}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class Settings:
    """Where the API finds its backends and files."""

    tp: str = "localhost:5010"
    rdb: str = "localhost:5011"
    hdb: str = "localhost:5012"
    rte: str = "localhost:5013"
    gw: str = "localhost:5014"
    users: Path = CONFIG_DIR / "api_users.toml"
    audit: Path = ROOT / "var" / "log" / "audit.jsonl"
    models: Path = ROOT / "models"
    labels: Path = ROOT / "data" / "labels" / "marks.jsonl"  # people's marks (the risk engine's --labels-file)
    ipc_user: str = field(default_factory=lambda: os.environ.get("PRETRADE_USER", ""))
    ipc_password: str = field(default_factory=lambda: os.environ.get("PRETRADE_PASSWORD", ""))
    subscribe: bool = True
    timeout: float = 10.0


class BackendDown(Exception):
    """A process the API needs did not answer."""


class BackendRefused(Exception):
    """A process answered with a q error (e.g. an invalid action)."""


def ipc_call(settings: Settings, process: str, *args: Any) -> Any:
    """One sync query to a backend on a fresh connection; BackendDown / BackendRefused name it."""
    from pretrade.ipc.client import QClient, QError, parse_addr

    addr = getattr(settings, process)
    name = f"{PROCESS_NAMES[process]} ({process} at {addr})"
    try:
        host, port = parse_addr(addr)
        with QClient(host, port, settings.ipc_user, settings.ipc_password, timeout=settings.timeout) as c:
            return c.query(*args)
    except QError as e:
        raise BackendRefused(f"{name} refused: {e.message}") from None
    except (OSError, ConnectionError, TimeoutError) as e:
        raise BackendDown(f"{name} is unavailable: {e}") from None


def frame_rows(table: str, data: Any) -> list[dict[str, Any]]:
    """A query's table answer as JSON-ready rows."""
    from pretrade.ops.live import rows_of

    if data is None or (isinstance(data, list) and not data):
        return []
    return rows_of(table, data)


def decision_call(rows: list[dict[str, Any]]) -> tuple[str, str, str]:
    """(sym, call, limits) of an order from its decision rows: the binding (not shadow) rows give
    "rejected:<rule>" for the first rule that rejected it, else "accepted"."""
    binding = [r for r in rows if not str(r.get("outcome", "")).startswith("shadow-")] or rows
    verdicts = [(str(r.get("outcome", "")).partition("/"), r) for r in binding]
    for (verdict, _, limits), r in verdicts:
        if verdict == "reject":
            return str(r.get("sym", "")), f"rejected:{r.get('rule', '')}", limits
    (_, _, limits), r = verdicts[0]
    return str(r.get("sym", "")), "accepted", limits


def decision_inputs(settings: Settings, clordid: str) -> tuple[dict[str, float], str]:
    """The fat-finger model's inputs behind a decision, from the gateway that made it
    (`.gw.inputs`; it remembers the recent ones), and why there are none when empty."""
    try:
        got = ipc_call(settings, "gw", ".gw.inputs", clordid)
    except (BackendDown, BackendRefused) as e:
        log.warning("decision %s: no model inputs from the gateway: %s", clordid, e)
        return {}, str(e)
    if not isinstance(got, dict):
        return {}, f"the gateway answered {type(got).__name__}, not a dictionary"
    features = {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in got.items()}
    bad = sorted(k for k, v in features.items() if not math.isfinite(v))
    if bad:
        return {}, f"the gateway's inputs are not finite: {', '.join(bad)}"
    return features, ""


def seed_state(settings: Settings, state) -> None:
    """What the live feed cannot replay: the engine's current limits (published only on change)
    and today's latest scores and recent alerts from the RDB. A backend that is down is skipped."""
    steps = (("limits", "rte", (".rte.limits", "")),
             ("riskScore", "rdb", ("s)select * from riskScore qualify row_number() over "
                                   "(partition by sym order by time desc) = 1",)),
             ("riskAlert", "rdb", ("s)select * from (select * from riskAlert order by time desc limit 200) "
                                   "order by time",)))
    for table, process, query in steps:
        try:
            rows = frame_rows(table, ipc_call(settings, process, *query))
        except (BackendDown, BackendRefused) as e:
            log.warning("start-up state: %s", e)
            continue
        with state.lock:
            have_alerts = {(a["time"], a["sym"], a["kind"], a["text"]) for a in state.alerts}
        if table == "riskAlert":
            rows = [a for a in rows if (a["time"], a["sym"], a["kind"], a["text"]) not in have_alerts]
        state.apply(table, rows, fresh=False)
        log.info("start-up state: %d %s rows from the %s", len(rows), table, PROCESS_NAMES[process])


def _check_sym(value: str, what: str = "sym") -> str:
    from fastapi import HTTPException

    if not _SYM.match(value):
        raise HTTPException(422, f"{what} {value!r}: letters, digits, _ . - only (at most 32)")
    return value


def create_app(settings: Settings):
    """The FastAPI app: routes, auth, audit, metrics, and (if settings.subscribe) the live feed."""
    from contextlib import asynccontextmanager

    from fastapi import Depends, FastAPI, HTTPException, Query, Request
    from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from fastapi.staticfiles import StaticFiles
    from pydantic import BaseModel, Field, field_validator

    from pretrade.ops.audit import AuditLog
    from pretrade.ops.auth import Tokens, User
    from pretrade.ops.live import Feed, LiveState, plain
    from pretrade.ops.metrics import Metrics

    tokens = Tokens.load(settings.users)
    audit = AuditLog(settings.audit)
    status_lock = threading.Lock()  # one status change at a time: each is checked against the log it appends to
    metrics = Metrics()
    state = LiveState()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        feed = Feed(state, settings.tp, settings.ipc_user, settings.ipc_password, metrics.observe,
                    lambda st: seed_state(settings, st))
        if settings.subscribe:
            feed.start()
        try:
            yield
        finally:
            feed.close()

    app = FastAPI(title="pretrade API", version="1.0",
                  description="Pre-trade risk: read limits, scores, alerts, models, decisions and history; "
                              "risk officers act (kill switch, reset, overrides, model on/off, model lifecycle status, gateway mode). "
                              "Send `Authorization: Bearer TOKEN` (tokens in config/api_users.toml).",
                  lifespan=lifespan, docs_url=None, redoc_url=None)  # their pages load scripts from a CDN
    app.state.live, app.state.audit, app.state.metrics, app.state.settings = state, audit, metrics, settings

    # ---- errors, metrics middleware ------------------------------------------------------------

    @app.exception_handler(BackendDown)
    async def _down(request: Request, exc: BackendDown):
        return JSONResponse({"detail": str(exc)}, status_code=503)

    @app.exception_handler(BackendRefused)
    async def _refused(request: Request, exc: BackendRefused):
        return JSONResponse({"detail": str(exc)}, status_code=409)

    @app.middleware("http")
    async def _measure(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, request.method, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - t0)
        return response

    # ---- auth ----------------------------------------------------------------------------------

    bearer = HTTPBearer(auto_error=False, description="API token (config/api_users.toml)")

    def reader(request: Request, cred: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> User:
        token = cred.credentials if cred else request.query_params.get("token", "") \
            if request.url.path == "/alerts/stream" else ""
        if not token:
            raise HTTPException(401, "missing bearer token (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})
        user = tokens.user_for(token)
        if user is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return user

    def officer(request: Request, user: Annotated[User, Depends(reader)]) -> User:
        if not user.can_act:
            audit.write(user.name, user.role, request.url.path, {}, "denied", "role may not act")
            metrics.actions.labels(request.url.path, "denied").inc()
            raise HTTPException(403, f"user {user.name} ({user.role}) may read but not act; "
                                     "actions need the risk_officer role")
        return user

    Reader = Annotated[User, Depends(reader)]
    Officer = Annotated[User, Depends(officer)]

    def act(user: User, action: str, target: dict[str, Any], fn) -> dict[str, Any]:
        """Run an action, audit its outcome (ok or error) and answer with the audit entry; a
        lifecycle refusal (StatusError) answers 409 with its reason."""
        from pretrade.models.status import StatusError

        try:
            result = fn()
        except (BackendDown, BackendRefused, StatusError) as e:
            audit.write(user.name, user.role, action, target, "error", str(e))
            metrics.actions.labels(action, "error").inc()
            if isinstance(e, StatusError):
                raise HTTPException(409, f"refused: {e}") from None
            raise
        entry = audit.write(user.name, user.role, action, target, "ok", str(plain(result)))
        metrics.actions.labels(action, "ok").inc()
        return entry

    # ---- models (request and response bodies) --------------------------------------------------

    class Scope(BaseModel):
        sym: str = Field("", description="instrument; empty for every instrument", max_length=32)
        strategy: str = Field("", description="strategy; empty for every strategy", max_length=32)
        note: str = Field("", description="why (goes to the audit log and the engine's alert)", max_length=500)

    class Override(BaseModel):
        sym: str = Field(..., min_length=1, max_length=32)
        strategy: str = Field("", max_length=32)
        field: Literal["maxQty", "maxNotional", "bandBps", "maxPosition", "maxRate"]
        value: float = Field(..., ge=0, description="the new value; must not exceed the static ceiling")
        seconds: float = Field(..., gt=0, le=86400, description="how long the override lasts")
        note: str = Field("", max_length=500)

    class ModelAction(BaseModel):
        note: str = Field("", max_length=500)

    class GatewayMode(BaseModel):
        kind: Literal["sym", "strategy"]
        key: str = Field(..., min_length=1, max_length=32)
        mode: Literal["enforce", "shadow", "ab"]
        share: float | None = Field(None, ge=0, le=1, description="A/B: share of flow on dynamic limits")
        reason: str = Field("", max_length=500)

    class AuditEntry(BaseModel):
        time: str
        who: str
        role: str
        action: str
        target: dict[str, Any]
        outcome: Literal["ok", "error", "denied"]
        detail: str

    class MarkIn(BaseModel):
        target: Literal["alert", "decision"] = Field(..., description="what is marked: an alert or an order's decision")
        verdict: Literal["right", "wrong"] = Field(..., description="was the system's call right or wrong")
        sym: str = Field("", max_length=32, description="alert: its instrument (required); decision: optional check")
        time: str = Field("", max_length=40, description="alert: its riskAlert time, ISO 8601 with nanoseconds "
                                                          "as GET /alerts gives it (required for an alert)")
        clordid: str = Field("", max_length=64, description="decision: the order's ClOrdID (required for a decision)")
        note: str = Field("", max_length=500, description="why (stored with the mark and audited)")

    class MarkOut(BaseModel):
        time: str = Field(..., description="when the mark was made (UTC)")
        who: str
        target: Literal["alert", "decision"]
        ref: str = Field(..., description="the alert's time or the decision's ClOrdID")
        sym: str
        verdict: Literal["right", "wrong"]
        call: str = Field(..., description="what the system said: an alert's tier, or accepted / rejected:<rule>")
        model: str
        note: str
        features: dict[str, float] = Field(..., description="the model's inputs at that moment, when known "
                                                             "(a mark with inputs trains the next model)")

    class StatusSet(BaseModel):
        model_config = {"extra": "forbid"}
        status: Literal["approved", "shadow", "retired"] = Field(
            ..., description="approved: binds; shadow: scored, not binding; retired: not loaded (final)")
        why: str = Field(..., max_length=500,
                         description="the reason (required): goes to the status log, the card and the audit log")

        @field_validator("why")
        @classmethod
        def _reason(cls, v: str) -> str:
            if not v.strip():
                raise ValueError("a status change needs a reason (why), not blank")
            return v.strip()

    class StatusChanged(AuditEntry):
        model: str
        version: str
        old: str = Field(..., description="the status before (from the status log)")
        new: str
        recorded_by: Literal["api", "risk engine"] = Field(
            ..., description="who appended the change to the status log (once): the API, or a risk "
                             "engine started with --write-status")
        applied: bool = Field(..., description="the process serving the model applies it now; false: it "
                                               "applies at that process's next start (see detail)")
        binds: bool | None = Field(None, description="whether the model binds where it is served, afterwards "
                                                     "(null: that process is down or none serves it)")

    class ModelSummary(BaseModel):
        name: str
        kind: str
        version: str
        created: str | None = None
        status: str = Field(..., description="lifecycle status from the status log: candidate, shadow, "
                                             "approved, retired")
        changed: dict[str, str] | None = Field(None, description="the last logged change of this version: "
                                                                  "time, who, why")
        served_by: Literal["rte", "gw"] | None = Field(None, description="the process that applies its status "
                                                                         "at run time (risk engine, gateway)")
        binds: bool | None = Field(None, description="whether it binds there now (risk engine: active; gateway: "
                                                     "model_binds); null when that process is down or none serves it")
        serving: str = Field("", description="what the serving process says, in words")
        artifact: str | None = None

    Rows = list[dict[str, Any]]

    # ---- pages ---------------------------------------------------------------------------------

    app.mount("/static", StaticFiles(directory=DASHBOARD), name="static")

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(DASHBOARD / "index.html")

    @app.get("/health", tags=["ops"], summary="liveness of the API and its tickerplant feed (no token)")
    def health() -> dict[str, Any]:
        return {"ok": True, "feed": state.feed_status()}

    @app.get("/metrics", tags=["ops"], summary="Prometheus metrics (no token)",
             response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        hb = state.heartbeat
        if hb is not None:
            metrics.heartbeat_age.set(time.time() - hb["received"])
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    # ---- reads ---------------------------------------------------------------------------------

    @app.get("/limits", tags=["read"], summary="current limits and state per instrument and strategy (risk engine)",
             response_model=Rows)
    def limits(user: Reader, sym: str = Query("", description="instrument; empty for all"),
               strategy: str | None = Query(None, description="strategy; omit for all, empty for the all-strategies row")) -> Rows:
        _check_sym(sym)
        rows = frame_rows("limits", ipc_call(settings, "rte", ".rte.limits", sym))
        return [r for r in rows if strategy is None or r["strategy"] == strategy]

    @app.get("/status", tags=["read"], summary="risk engine status (halts, kill switches, model), gateway and feed")
    def status(user: Reader) -> dict[str, Any]:
        rte = {k: plain(v) if not isinstance(v, list | dict) else v
               for k, v in ipc_call(settings, "rte", ".rte.status[]").items()}
        for k in ("breakers", "kills"):
            rte[k] = [plain(x) for x in rte.get(k, [])]
        try:
            gw: Any = {k: plain(v) for k, v in ipc_call(settings, "gw", ".gw.status").items()}
        except BackendDown as e:
            gw = {"error": str(e)}
        return {"rte": rte, "gateway": gw, "feed": state.feed_status(), "heartbeat": state.heartbeat}

    @app.get("/whoami", tags=["read"], summary="the token's user and role (the dashboard shows the buttons by it)")
    def whoami(user: Reader) -> dict[str, Any]:
        return {"name": user.name, "role": user.role, "can_act": user.can_act}

    @app.get("/snapshot", tags=["read"], summary="what the dashboard draws first: limits, scores, recent alerts")
    def snapshot(user: Reader) -> dict[str, Any]:
        return state.snapshot()

    @app.get("/scores", tags=["read"], summary="latest anomaly score, tier and top contributing features per instrument",
             response_model=Rows)
    def scores(user: Reader) -> Rows:
        with state.lock:
            return list(state.scores.values())

    @app.get("/scores/{sym}", tags=["read"], summary="one instrument's latest score with its feature values (RDB)")
    def score_of(user: Reader, sym: str) -> dict[str, Any]:
        _check_sym(sym)
        with state.lock:
            latest = state.scores.get(sym)
        feats = frame_rows("features", ipc_call(
            settings, "rdb", f"s)select * from features where sym='{sym}' order by time desc limit 1"))
        if latest is None and not feats:
            raise HTTPException(404, f"no score or features for {sym} yet")
        return {"score": latest, "features": feats[0] if feats else None}

    @app.get("/series/{sym}", tags=["read"], summary="score, tier and max order qty over time (live, for charts)",
             response_model=Rows)
    def series(user: Reader, sym: str, last: int = Query(600, ge=1, le=3000)) -> Rows:
        _check_sym(sym)
        with state.lock:
            return list(state.series.get(sym, []))[-last:]

    @app.get("/alerts", tags=["read"], summary="recent alerts and audited engine actions, newest first",
             response_model=Rows)
    def alerts(user: Reader, sym: str | None = None, severity: str | None = None, limit: int = Query(100, ge=1, le=500)) -> Rows:
        with state.lock:
            rows = list(state.alerts)
        rows = [r for r in rows if (sym is None or r["sym"] == sym) and (severity is None or r["severity"] == severity)]
        return rows[::-1][:limit]

    @app.get("/alerts/stream", tags=["read"],
             summary="live Server-Sent Events: limits, riskScore, riskAlert, heartbeat, decision updates",
             description="EventSource cannot send headers, so the token may also be given as ?token=.",
             response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
    async def stream(user: Reader, request: Request, token: str | None = Query(None, description="the API token, for EventSource")) -> StreamingResponse:
        q = state.listen()

        async def events():
            try:
                yield "retry: 2000\n\n"
                while not await request.is_disconnected():
                    try:
                        ev = await asyncio.wait_for(q.get(), timeout=5.0)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    yield f"event: {ev['table']}\ndata: {json.dumps(ev['rows'], default=str)}\n\n"
            finally:
                state.unlisten(q)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    def cards() -> dict[str, dict]:
        out = {}
        for p in sorted(Path(settings.models).glob("*.json")):
            try:
                out[p.stem] = json.loads(p.read_text())
            except (OSError, ValueError) as e:
                log.warning("model card %s unreadable: %s", p, e)
        return out

    @app.get("/models", tags=["read"], response_model=list[ModelSummary],
             summary="model versions with their lifecycle status (status log) and whether they bind where served")
    def models(user: Reader) -> list[dict]:
        from pretrade.ops.lifecycle import summaries

        return summaries(settings)

    @app.get("/models/{name}", tags=["read"], summary="a model's card (training data, features, thresholds, validation)")
    def model_card(user: Reader, name: str) -> dict[str, Any]:
        c = cards().get(name)
        if c is None:
            raise HTTPException(404, f"no model card {name!r}; known: {', '.join(cards())}")
        return c

    @app.get("/decisions/{clordid}", tags=["read"],
             summary="every pre-trade check outcome of an order (RDB for today, then HDB)", response_model=Rows)
    def decisions(user: Reader, clordid: str) -> Rows:
        return decision_rows(clordid)

    def decision_rows(clordid: str) -> Rows:
        if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,64}", clordid):
            raise HTTPException(422, f"clordid {clordid!r}: letters, digits, _ . : - only")
        sql = f"s)select * from decision where clordid='{clordid}' order by time"
        errors = []
        for process in ("rdb", "hdb"):
            try:
                rows = frame_rows("decision", ipc_call(settings, process, sql))
            except BackendDown as e:
                errors.append(str(e))
                continue
            if rows:
                return rows
        if len(errors) == 2:
            raise BackendDown("; ".join(errors))
        raise HTTPException(404, f"no decisions for clordid {clordid}")

    @app.get("/history/{table}", tags=["read"], summary="rows from the HDB (date-partitioned history)",
             response_model=Rows)
    def history(user: Reader, table: str, sym: str = "", date_from: str = Query("", description="YYYY-MM-DD"),
                date_to: str = Query("", description="YYYY-MM-DD"), limit: int = Query(1000, ge=1, le=100000)) -> Rows:
        from pretrade.schema import TABLES

        if table not in TABLES:
            raise HTTPException(404, f"no table {table!r}; tables: {', '.join(TABLES)}")
        _check_sym(sym)
        where = [f"sym='{sym}'"] if sym else []
        for d, op in ((date_from, ">="), (date_to, "<=")):
            if d:
                if not _DATE.match(d):
                    raise HTTPException(422, f"date {d!r}: expected YYYY-MM-DD")
                where.append(f"date {op} DATE '{d}'")
        sql = f"s)select * from {table}" + (" where " + " and ".join(where) if where else "") + \
            f" order by time limit {limit}"
        return frame_rows(table, ipc_call(settings, "hdb", sql))

    @app.get("/audit", tags=["read"], summary="the audit log of actions, newest first", response_model=list[AuditEntry])
    def audit_log(user: Reader, who: str | None = None, action: str | None = None,
                  outcome: Literal["ok", "error", "denied"] | None = None,
                  since: str | None = Query(None, description="ISO 8601 time; entries at or after it"),
                  limit: int = Query(100, ge=1, le=10000)) -> list[dict]:
        return audit.query(who, action, outcome, since, limit)

    @app.get("/marks", tags=["read"], response_model=list[MarkOut],
             summary="people's marks of alerts and decisions (right or wrong), newest first",
             description="A later mark of the same call replaces the earlier one for training; all are listed.")
    def marks(user: Reader, target: Literal["alert", "decision"] | None = None, sym: str | None = None,
              ref: str | None = Query(None, description="an alert's time or a decision's ClOrdID"),
              limit: int = Query(200, ge=1, le=10000)) -> list[dict]:
        from dataclasses import asdict

        from pretrade.models.labels import read_marks

        rows = [asdict(m) for m in read_marks(settings.labels)
                if (target is None or m.target == target) and (sym is None or m.sym == sym)
                and (ref is None or m.ref == ref)]
        return rows[::-1][:limit]

    # ---- actions (risk officers) ---------------------------------------------------------------

    @app.post("/marks", tags=["act"], response_model=AuditEntry,
              summary="mark an alert or an order's decision right or wrong (a label for the next training)",
              description="An alert (sym + its time) is marked by the risk engine, which stores the model's inputs "
                          "behind it; a decision (clordid) is looked up in the RDB, then the HDB, and stored here with "
                          "the fat-finger model's inputs the gateway kept for it (.gw.inputs; a mark without "
                          "them is stored but cannot train).")
    def mark(user: Officer, body: MarkIn) -> dict:
        import numpy as np

        from pretrade.models.labels import Mark, add_mark

        _check_sym(body.sym)
        if body.target == "alert":
            if not body.sym or not body.time:
                raise HTTPException(422, "an alert mark needs the alert's sym and time")
            try:
                when = np.datetime64(body.time.removesuffix("Z"), "ns")
            except ValueError:
                raise HTTPException(422, f"time {body.time!r}: expected ISO 8601, e.g. "
                                         "2026-11-21T14:30:00.100000000") from None
            if np.isnat(when):
                raise HTTPException(422, "an alert mark needs the alert's time")
            return act(user, "mark", body.model_dump(), lambda: ipc_call(
                settings, "rte", ".rte.mark", body.sym, when, body.verdict, user.name, body.note.encode()))
        if not body.clordid:
            raise HTTPException(422, "a decision mark needs the order's clordid")
        rows = decision_rows(body.clordid)
        sym, call, limits = decision_call(rows)
        if body.sym and body.sym != sym:
            raise HTTPException(422, f"order {body.clordid} is in {sym}, not {body.sym}")

        def store() -> str:
            features, why = decision_inputs(settings, body.clordid)
            m = add_mark(Mark(who=user.name, target="decision", ref=body.clordid, sym=sym, verdict=body.verdict,
                              call=call, model=f"{limits} limits" if limits else "", note=body.note,
                              features=features), settings.labels)
            return (f"decision {body.clordid} ({sym}, {call}) marked {m.verdict} by {m.who}"
                    + (f"; with the fat-finger model's inputs ({len(features)})" if features
                       else f"; without the model's inputs, so it will not train ({why})"))

        return act(user, "mark", body.model_dump(), store)

    def engine_action(kind: str, body: Scope, user: User) -> dict[str, Any]:
        _check_sym(body.sym)
        _check_sym(body.strategy, "strategy")
        return act(user, kind, body.model_dump(), lambda: ipc_call(
            settings, "rte", f".rte.{kind}", body.sym, body.strategy, user.name, body.note.encode()))

    @app.post("/actions/kill", tags=["act"], response_model=AuditEntry,
              summary="kill switch: halt an instrument, a strategy, or everything (empty sym and strategy)")
    def kill(user: Officer, body: Scope) -> dict:
        return engine_action("kill", body, user)

    @app.post("/actions/reset", tags=["act"], response_model=AuditEntry,
              summary="reset a circuit breaker or lift a kill switch of exactly this scope")
    def reset(user: Officer, body: Scope) -> dict:
        return engine_action("reset", body, user)

    @app.post("/actions/reduce", tags=["act"], response_model=AuditEntry,
              summary="put a scope in REDUCING (only position-reducing orders)")
    def reduce(user: Officer, body: Scope) -> dict:
        return engine_action("reduce", body, user)

    @app.post("/limits/override", tags=["act"], response_model=AuditEntry,
              summary="override one limit within its static ceiling for a set time")
    def override(user: Officer, body: Override) -> dict:
        _check_sym(body.sym)
        _check_sym(body.strategy, "strategy")
        return act(user, "override", body.model_dump(), lambda: ipc_call(
            settings, "rte", ".rte.override", body.sym, body.strategy, body.field, float(body.value),
            float(body.seconds), user.name, body.note.encode()))

    @app.post("/models/{name}/status", tags=["act"], response_model=StatusChanged,
              summary="change a model's lifecycle status (approve, to shadow, retire), with a reason",
              description="Checked against the models folder's status log (409 names a transition the lifecycle "
                          "forbids), recorded there once with the caller as who, and applied where the model is "
                          "served: the anomaly model (vae) at the risk engine (.rte.approve / .rte.shadow; retired: "
                          ".rte.deactivate), the fat-finger model at the gateway (.gw.model_status[]). A process "
                          "that is down does not stop it: `applied` is false and the change applies at its next "
                          "start. Audited like every action.")
    def set_status(user: Officer, name: str, body: StatusSet) -> dict:
        from pretrade.models.status import StatusBook
        from pretrade.ops.lifecycle import change_status

        known = StatusBook(settings.models).models()
        if name not in known:
            raise HTTPException(404, f"no model {name!r}; known: {', '.join(known)}")
        done: list = []

        def change() -> str:
            with status_lock:
                done.append(change_status(settings, name, body.status, user.name, body.why))
            return done[0].text

        entry = act(user, "model_status", {"model": name, **body.model_dump()}, change)
        o = done[0]
        return {**entry, "model": o.model, "version": o.version, "old": o.old, "new": o.new,
                "recorded_by": o.recorded_by, "applied": o.applied, "binds": o.serving.binds}

    @app.post("/model/activate", tags=["act"], response_model=AuditEntry,
              summary="put the risk engine's anomaly model back in charge of the limits")
    def activate(user: Officer, body: ModelAction) -> dict:
        return act(user, "activate", body.model_dump(),
                   lambda: ipc_call(settings, "rte", ".rte.activate", user.name, body.note.encode()))

    @app.post("/model/deactivate", tags=["act"], response_model=AuditEntry,
              summary="take the anomaly model off: every instrument on static limits")
    def deactivate(user: Officer, body: ModelAction) -> dict:
        return act(user, "deactivate", body.model_dump(),
                   lambda: ipc_call(settings, "rte", ".rte.deactivate", user.name, body.note.encode()))

    @app.post("/gateway/mode", tags=["act"], response_model=AuditEntry,
              summary="set an instrument's or strategy's enforcement mode at the gateway: enforce, shadow or A/B")
    def gateway_mode(user: Officer, body: GatewayMode) -> dict:
        _check_sym(body.key, "key")
        args: list[Any] = [".gw.mode", body.kind, body.key, body.mode, user.name, body.reason.encode()]
        if body.share is not None:
            args.append(float(body.share))
        return act(user, "gateway_mode", body.model_dump(), lambda: ipc_call(settings, "gw", *args))

    return app


def add_arguments(p: argparse.ArgumentParser) -> None:
    from pretrade.config import topology

    try:
        topo = topology()
    except (FileNotFoundError, ValueError):
        topo = {}

    def port(name: str, default: int) -> str:
        return f"localhost:{topo.get(name, {}).get('port', default)}"

    p.add_argument("--port", type=int, default=topo.get("api", {}).get("port", 8000),
                   help="HTTP port for the API and dashboard (default from config/topology.toml: 8000)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    p.add_argument("--tp", default=port("tp", 5010), help="tickerplant HOST:PORT (live limits, scores, alerts)")
    p.add_argument("--rdb", default=port("rdb", 5011), help="RDB HOST:PORT (today's decisions, features)")
    p.add_argument("--hdb", default=port("hdb", 5012), help="HDB HOST:PORT (history)")
    p.add_argument("--rte", default=port("rte", 5013), help="risk engine HOST:PORT (limits, status, actions)")
    p.add_argument("--gw", default="localhost:5014", help="gateway control HOST:PORT (.gw.status, .gw.mode)")
    p.add_argument("--users", default=str(CONFIG_DIR / "api_users.toml"),
                   help="API users file: hashed tokens and roles (default config/api_users.toml)")
    p.add_argument("--audit", default=str(ROOT / "var" / "log" / "audit.jsonl"),
                   help="append-only audit log, JSON lines (default var/log/audit.jsonl)")
    p.add_argument("--models", default=str(ROOT / "models"), help="folder of model cards (default models)")
    p.add_argument("--labels", default=str(ROOT / "data" / "labels" / "marks.jsonl"),
                   help="people's marks file, shared with the risk engine's --labels-file and read by "
                        "`pretrade train --labels` (default data/labels/marks.jsonl)")
    p.add_argument("--new-token", metavar="NAME",
                   help="add user NAME with a fresh token to --users, print the token once, and exit")
    p.add_argument("--role", choices=["trader", "risk_officer"], default="trader", help="role for --new-token")


def run(args: argparse.Namespace) -> int:
    """`pretrade api`: serve the API and dashboard until stopped (or add a token and exit)."""
    if args.new_token:
        from pretrade.ops.auth import new_token

        try:
            token = new_token(args.users, args.new_token, args.role)
        except ValueError as e:
            log.error("%s", e)
            return 2
        print(f"user {args.new_token} ({args.role}) added to {args.users}; token (shown once):\n{token}")
        return 0
    import uvicorn

    settings = Settings(tp=args.tp, rdb=args.rdb, hdb=args.hdb, rte=args.rte, gw=args.gw,
                        users=Path(args.users), audit=Path(args.audit), models=Path(args.models),
                        labels=Path(args.labels))
    try:
        app = create_app(settings)
    except (FileNotFoundError, ValueError) as e:
        log.error("%s", e)
        return 2
    log.info("API and dashboard on http://%s:%d/ (tickerplant %s, risk engine %s)", args.host, args.port,
             args.tp, args.rte)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0
