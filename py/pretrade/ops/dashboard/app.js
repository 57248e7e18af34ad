// pretrade dashboard: a grid of instruments, charts, the live alert feed and the governance buttons.
// Plain JS and canvas, no build step: data from the API (/snapshot, /series, /audit) and its
// Server-Sent Events stream (/alerts/stream).
"use strict";

const STALE_S = 5;          // a row (or the engine) not heard from for this long is shown as stale
const TIER_COLOR = { NORMAL: "#2e9d57", ELEVATED: "#d6a319", HIGH_ALERT: "#e36b1c", CRITICAL: "#d9302c" };
const $ = (id) => document.getElementById(id);

const st = {
  token: sessionStorage.getItem("pretrade.token") || "",
  user: null, rows: new Map(), series: new Map(), selected: null, alerts: [], marks: new Map(),
  heartbeatAt: 0, source: null, dirty: true,
};

function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${st.token}`, ...(opts.body ? { "Content-Type": "application/json" } : {}) };
  return fetch(path, { ...opts, headers }).then(async (r) => {
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`${r.status}: ${typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail)}`);
    return body;
  });
}

const fmt = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toLocaleString("en-US", { maximumFractionDigits: d }));
const hms = (iso) => (iso ? iso.slice(11, 23) : "-");

function rowOf(sym) {
  if (!st.rows.has(sym)) st.rows.set(sym, { sym, limit: null, score: null, at: 0 });
  return st.rows.get(sym);
}

function point(sym, p) {
  if (!st.series.has(sym)) st.series.set(sym, []);
  const s = st.series.get(sym);
  const last = s.length ? s[s.length - 1] : { score: null, maxQty: null, tier: "NORMAL" };
  s.push({ ...last, ...p });
  if (s.length > 3000) s.splice(0, s.length - 3000);
}

function onLimits(rows, live = true) {
  for (const r of rows) {
    if (r.strategy !== "") continue;                     // the grid shows the all-strategies row
    const row = rowOf(r.sym);
    if (!row.limit || r.seq >= row.limit.seq) row.limit = r;
    if (live) row.at = Date.now();
    point(r.sym, { time: r.time, maxQty: r.maxQty, tier: r.tier });
  }
  st.dirty = true;
}

function onScores(rows, live = true) {
  for (const r of rows) {
    const row = rowOf(r.sym);
    row.score = r;
    if (live) row.at = Date.now();
    point(r.sym, { time: r.time, score: r.score, tier: r.tier });
  }
  st.dirty = true;
}

function onAlerts(rows) {
  st.alerts = rows.slice().reverse().concat(st.alerts).slice(0, 300);
  st.dirty = true;
}

// ---- drawing ----------------------------------------------------------------------------------

function drawGrid() {
  const body = document.querySelector("#grid tbody");
  const syms = [...st.rows.keys()].sort();
  $("grid-empty").style.display = syms.length ? "none" : "";
  const now = Date.now();
  body.replaceChildren(...syms.map((sym) => {
    const { limit: l, score: s, at } = st.rows.get(sym);
    const tier = (l && l.tier) || (s && s.tier) || "NORMAL";
    const tr = document.createElement("tr");
    tr.dataset.sym = sym;
    tr.dataset.tier = tier;
    tr.className = (sym === st.selected ? "selected " : "") + (now - at > STALE_S * 1000 ? "stale" : "");
    const cells = [
      sym, `<span class="tier tier-${tier}">${tier}</span>`,
      `<span class="state state-${l ? l.state : ""}">${l ? l.state : "-"}${l && l.halt ? ` (${l.halt})` : ""}</span>`,
      s ? fmt(s.score, 3) : "-", l ? fmt(l.maxQty) : "-", l ? fmt(l.maxNotional) : "-",
      l ? fmt(l.bandBps, 1) : "-", l ? fmt(l.maxPosition) : "-", l ? fmt(l.maxRate) : "-",
      ((s && s.top) || (l && l.top) || "-").replaceAll(",", ", "), l ? l.seq : "-",
      at ? new Date(at).toISOString().slice(11, 19) : "-",
    ];
    const cls = ["sym", "tier-cell", "state-cell", "score", "maxQty", "maxNotional", "bandBps", "maxPosition", "maxRate", "top", "seq", "updated"];
    tr.innerHTML = cells.map((c, i) => `<td class="${cls[i]}">${c}</td>`).join("");
    tr.title = l ? l.reason : "";
    tr.onclick = () => select(sym);
    return tr;
  }));
}

function drawLine(canvas, pts, key, step) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 34;
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui"; ctx.fillStyle = "#7d8896";
  const vals = pts.map((p) => p[key]).filter((v) => v !== null && v !== undefined);
  if (!vals.length) { ctx.fillText("no data yet", pad, h / 2); return; }
  const lo = Math.min(0, ...vals), hi = Math.max(...vals) || 1;
  const x = (i) => pad + (i / Math.max(1, pts.length - 1)) * (w - pad - 6);
  const y = (v) => h - 16 - ((v - lo) / (hi - lo || 1)) * (h - 26);
  ctx.strokeStyle = "#263040"; ctx.beginPath(); ctx.moveTo(pad, y(lo)); ctx.lineTo(w, y(lo)); ctx.stroke();
  ctx.fillText(fmt(hi, key === "score" ? 2 : 0), 2, y(hi) + 10); ctx.fillText(fmt(lo, 0), 2, y(lo));
  ctx.fillText(hms(pts[0].time), pad, h - 2); ctx.fillText(hms(pts[pts.length - 1].time), w - 80, h - 2);
  ctx.lineWidth = 2;
  for (let i = 1; i < pts.length; i++) {
    const a = pts[i - 1][key], b = pts[i][key];
    if (a === null || b === null || a === undefined || b === undefined) continue;
    ctx.strokeStyle = TIER_COLOR[pts[i].tier] || "#4b8bd6";
    ctx.beginPath(); ctx.moveTo(x(i - 1), y(a));
    if (step) ctx.lineTo(x(i), y(a));
    ctx.lineTo(x(i), y(b)); ctx.stroke();
  }
}

function drawCharts() {
  $("chart-sym").textContent = st.selected || "-";
  const pts = (st.selected && st.series.get(st.selected)) || [];
  drawLine($("chart-score"), pts, "score", false);
  drawLine($("chart-limit"), pts, "maxQty", true);
}

function drawAlerts() {
  $("alerts").replaceChildren(...st.alerts.slice(0, 200).map((a) => {
    const li = document.createElement("li");
    li.className = `sev-${a.severity}`;
    li.dataset.kind = a.kind;
    li.innerHTML = `<span class="when">${hms(a.time)}</span><b>${a.sym || "*"}</b> ${a.kind} <span class="muted">(${a.who})</span><br>`;
    li.append(document.createTextNode(a.text));
    if (MARKABLE.has(a.kind) && a.sym) li.append(markControl(a));
    return li;
  }));
}

// ---- people's marks of alerts (right / wrong): labels for the next training ----------------------

const MARKABLE = new Set(["tier", "breaker"]);   // the model's calls; actions and notes are not marked
const markKey = (sym, time) => `${sym}|${time}`;

function markControl(a) {
  const box = document.createElement("div");
  box.className = "mark";
  box.dataset.sym = a.sym;
  box.dataset.time = a.time;
  const m = st.marks.get(markKey(a.sym, a.time));
  if (m) {
    const tag = document.createElement("span");
    tag.className = `marked marked-${m.verdict}`;
    tag.textContent = `marked ${m.verdict} by ${m.who}`;
    box.append(tag);
  }
  if (st.user && st.user.can_act) {
    for (const verdict of ["right", "wrong"]) {
      const b = document.createElement("button");
      b.className = `mark-btn mark-${verdict}`;
      b.dataset.verdict = verdict;
      b.textContent = verdict;
      b.title = `mark this call ${verdict} (a label for the next training)`;
      box.append(b);
    }
  }
  return box;
}

async function loadMarks() {
  try {
    const marks = await api("/marks?target=alert&limit=2000");
    for (const m of marks.slice().reverse()) st.marks.set(markKey(m.sym, m.ref), m);
    st.dirty = true;
  } catch (e) { /* marks are shown when they can be read */ }
}

async function markAlert(sym, time, verdict) {
  const out = $("act-result");
  try {
    await api("/marks", { method: "POST", body: JSON.stringify({ target: "alert", sym, time, verdict, note: $("act-note").value.trim() }) });
    st.marks.set(markKey(sym, time), { sym, ref: time, verdict, who: st.user.name });
    out.textContent = `done: alert on ${sym} at ${hms(time)} marked ${verdict}`;
    out.className = "ok";
  } catch (e) {
    out.textContent = `mark refused: ${e.message}`;
    out.className = "err";
  }
  st.dirty = true;
  refreshAudit();
}

$("alerts").onclick = (e) => {
  const b = e.target.closest("button.mark-btn");
  if (!b) return;
  const box = b.closest(".mark");
  markAlert(box.dataset.sym, box.dataset.time, b.dataset.verdict);
};

function drawStatus() {
  const age = (Date.now() - st.heartbeatAt) / 1000;
  const eng = $("engine-status");
  eng.textContent = st.heartbeatAt ? `engine ${age < STALE_S ? "live" : `STALE ${age.toFixed(0)} s`}` : "engine ?";
  eng.classList.toggle("stale", !st.heartbeatAt || age >= STALE_S);
  $("clock").textContent = `updated ${new Date().toISOString().slice(11, 19)} UTC`;
}

function frame() {
  if (st.dirty) { drawGrid(); drawCharts(); drawAlerts(); st.dirty = false; }
  requestAnimationFrame(frame);
}
setInterval(() => { drawStatus(); st.dirty = true; }, 1000);

// ---- data ---------------------------------------------------------------------------------------

async function select(sym) {
  st.selected = sym;
  try { st.series.set(sym, await api(`/series/${encodeURIComponent(sym)}?last=3000`)); } catch (e) { /* keep live points */ }
  st.dirty = true;
}

function connect() {
  if (st.source) st.source.close();
  const src = new EventSource(`/alerts/stream?token=${encodeURIComponent(st.token)}`);
  st.source = src;
  const pill = $("feed-status");
  src.onopen = () => { pill.textContent = "live"; pill.classList.remove("stale"); };
  src.onerror = () => { pill.textContent = "reconnecting"; pill.classList.add("stale"); };
  src.addEventListener("limits", (e) => onLimits(JSON.parse(e.data)));
  src.addEventListener("riskScore", (e) => onScores(JSON.parse(e.data)));
  src.addEventListener("riskAlert", (e) => onAlerts(JSON.parse(e.data)));
  src.addEventListener("heartbeat", () => { st.heartbeatAt = Date.now(); });
}

async function signIn() {
  try {
    st.user = await api("/whoami");
  } catch (e) {
    $("whoami").textContent = `sign-in failed (${e.message})`;
    return;
  }
  sessionStorage.setItem("pretrade.token", st.token);
  $("whoami").textContent = `${st.user.name} (${st.user.role})`;
  document.querySelectorAll("button.act").forEach((b) => { b.disabled = !st.user.can_act; });
  const snap = await api("/snapshot");
  const now = Date.now();
  onLimits(snap.limits, false); onScores(snap.scores, false); onAlerts(snap.alerts);
  for (const r of st.rows.values()) r.at = r.at || now - (snap.feed.age_s.limits || 0) * 1000;
  if (snap.heartbeat) st.heartbeatAt = now - (snap.feed.age_s.heartbeat || 0) * 1000;
  if (!st.selected && st.rows.size) select([...st.rows.keys()].sort()[0]);
  connect();
  refreshAudit();
  refreshModels();
  loadMarks();
}

async function refreshAudit() {
  try {
    const entries = await api("/audit?limit=20");
    $("audit").replaceChildren(...entries.map((e) => {
      const li = document.createElement("li");
      li.innerHTML = `<span class="when">${e.time.slice(11, 19)}</span>`;
      li.append(document.createTextNode(`${e.who}: ${e.action} ${JSON.stringify(e.target)} -> ${e.outcome} ${e.detail}`));
      return li;
    }));
  } catch (e) { /* a trader still reads; the list stays as it was */ }
}

// ---- models: lifecycle status and, for a risk officer, approve / to shadow with a reason -----------

const MOVES = { approved: { label: "Approve", from: ["candidate", "shadow"] },
                shadow: { label: "To shadow", from: ["candidate", "approved"] } };
const SERVED = { rte: "risk engine", gw: "gateway" };
const esc = (t) => String(t ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

async function refreshModels() {
  let models;
  try { models = await api("/models"); } catch (e) { return; /* shown when it can be read */ }
  $("models").querySelector("tbody").replaceChildren(...models.map((m) => {
    const tr = document.createElement("tr");
    tr.dataset.model = m.name;
    tr.dataset.status = m.status;
    const c = m.changed;
    // "-": no process applies its status at run time; "?": its process did not answer
    const binds = !m.served_by ? "-" : m.binds === null ? "?" : m.binds ? "yes" : "no";
    tr.innerHTML = `<td>${esc(m.name)}</td><td class="version">${esc(m.version)}</td>`
      + `<td class="status-cell"><span class="status status-${esc(m.status)}">${esc(m.status)}</span></td>`
      + `<td class="when">${c ? `${esc(c.time.slice(0, 19))} ${esc(c.who)}: ${esc(c.why)}` : "-"}</td>`
      + `<td class="serving" title="${esc(m.serving)}">${m.served_by ? esc(SERVED[m.served_by]) : "-"}</td>`
      + `<td class="binds" title="${esc(m.serving)}">${binds}</td><td class="moves"></td>`;
    if (st.user && st.user.can_act) {
      for (const [to, mv] of Object.entries(MOVES)) {
        if (!mv.from.includes(m.status)) continue;
        const b = document.createElement("button");
        b.className = `model-btn model-${to}`;
        b.dataset.to = to;
        b.textContent = mv.label;
        b.title = `${mv.label} ${m.name} ${m.version} (asks for a reason; audited)`;
        tr.querySelector(".moves").append(b);
      }
    }
    return tr;
  }));
}

async function setModelStatus(name, to) {
  const why = window.prompt(`${MOVES[to].label} ${name}? Reason (required, goes to the status log and the audit log):`);
  if (why === null) return;
  const out = $("models-result");
  if (!why.trim()) { out.textContent = "not changed: a reason is required"; out.className = "err"; return; }
  try {
    const r = await api(`/models/${encodeURIComponent(name)}/status`, { method: "POST", body: JSON.stringify({ status: to, why }) });
    out.textContent = `done: ${r.detail}`;
    out.className = r.applied ? "ok" : "";
  } catch (e) {
    out.textContent = `refused: ${e.message}`;
    out.className = "err";
  }
  refreshModels();
  refreshAudit();
}

$("models").onclick = (e) => {
  const b = e.target.closest("button.model-btn");
  if (b) setModelStatus(b.closest("tr").dataset.model, b.dataset.to);
};
setInterval(() => { if (st.user) refreshModels(); }, 10000);

// ---- actions ------------------------------------------------------------------------------------

function scope() {
  return { sym: $("act-sym").value.trim(), strategy: $("act-strategy").value.trim(), note: $("act-note").value.trim() };
}

async function act(path, body, question) {
  if (question && !window.confirm(question)) return;
  const out = $("act-result");
  try {
    const entry = await api(path, { method: "POST", body: JSON.stringify(body) });
    out.textContent = `done: ${entry.action} by ${entry.who} at ${entry.time}: ${entry.detail}`;
    out.className = "ok";
  } catch (e) {
    out.textContent = `refused: ${e.message}`;
    out.className = "err";
  }
  refreshAudit();
}

$("btn-kill").onclick = () => { const s = scope(); act("/actions/kill", s, `Kill switch on ${s.sym || "EVERY instrument"}/${s.strategy || "every strategy"}?`); };
$("btn-reset").onclick = () => { const s = scope(); act("/actions/reset", s, `Reset ${s.sym || "every instrument"}/${s.strategy || "every strategy"}?`); };
$("btn-reduce").onclick = () => act("/actions/reduce", scope());
$("btn-deactivate").onclick = () => act("/model/deactivate", { note: scope().note }, "Take the model off? Every instrument goes to static limits.");
$("btn-activate").onclick = () => act("/model/activate", { note: scope().note });
$("btn-override").onclick = () => {
  const s = scope();
  act("/limits/override", { sym: s.sym, strategy: s.strategy, note: s.note, field: $("ov-field").value,
    value: Number($("ov-value").value), seconds: Number($("ov-seconds").value) });
};
$("btn-gw").onclick = () => {
  const mode = $("gw-mode").value;
  act("/gateway/mode", { kind: $("gw-kind").value, key: $("gw-key").value.trim(), mode,
    share: mode === "ab" ? Number($("gw-share").value) : null, reason: scope().note });
};
$("login").onsubmit = (e) => { e.preventDefault(); st.token = $("token").value.trim(); signIn(); };

document.querySelectorAll("button.act").forEach((b) => { b.disabled = true; });
if (st.token) { $("token").value = st.token; signIn(); }
requestAnimationFrame(frame);
drawStatus();
