"""The compiled feature kernel: per-instrument state machines, advanced tick by tick and step by step.

Every feature is defined here once. `advance` applies ticks in time order and, at each grid time,
steps every instrument: it rolls the 100 ms windows, computes the raw features, normalises them
against the instrument's own baseline and writes one row per instrument. The batch path calls it
once over a day; the live path calls it every 100 ms with what arrived: same code, same numbers.

State lives in plain numpy arrays indexed by instrument (layout below), so the kernel vectorises
across instruments in compiled loops and the Python side can grow, save or inspect it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from pretrade.features.spec import CFG_INDEX, LOG_EPS, LOG_TRANSFORM, N_FEATURES, STD_FLOOR

# Tables, in the order ties in time are applied (a trade before the book update that shows it).
T_TRADE, T_L3, T_QUOTE, T_BOOK, T_NEWS = 0, 1, 2, 3, 4
N_TABLES = 5
L3_ADD, L3_MODIFY, L3_DELETE, L3_TRADE = 0, 1, 2, 3

# Float state per instrument: S[i, k]
BID, ASK, BSZ, ASZ = 0, 1, 2, 3
DEPTH_B, DEPTH_A, WB, WA = 4, 5, 6, 7  # top-N depth and 1/level-weighted depth
MID_PREV = 8
TS_EWMA, TS_N = 9, 10  # usual trade size and trades seen
EP_ACTIVE, EP_PRE_DEPTH, LD_VALUE = 11, 12, 13  # liquidity-decay episode
NEWS = 14
VP_VOL, VP_BUY, VP_SIZE = 15, 16, 17  # the open VPIN bucket
VR_S, VR_W = 18, 19  # EWMA of volume per step (sizes the buckets)
ACC_VOL, ACC_L3T, ACC_L3M, ACC_TR, ACC_QU = 20, 21, 22, 23, 24  # this step's counts
HAS_L3, HAS_BOOK = 25, 26
C_W, C_X, C_Y, C_XX, C_YY, C_XY = 27, 28, 29, 30, 31, 32  # EWMA moments for cross_corr
N_SF = 33

# Integer state per instrument: IS[i, k]
EP_T0, FIRST_STEP, STARTED, N_STEPS, VP_COUNT = 0, 1, 2, 3, 4
N_SI = 5

# Ring series per instrument: R[i, s, pos], one slot per grid step
R_R, R_R2, R_VOL, R_L3T, R_L3M, R_TR, R_QU = range(7)
N_RING = 7

# Running window sums per instrument: Q[i, k]
Q_R, Q_R2, Q_R2B, Q_VOL, Q_L3T, Q_L3M, Q_TR, Q_QU, Q_R1 = range(9)
N_SUMS = 9

# Normaliser state per instrument and feature: NS[i, f, k] (EWMA weight, sum, sum of squares)
N_NORM = 3

# Global integer state: G[k]
G_STEP, G_BAD = 0, 1
N_GLOBAL = 2

(
    F_RV,
    F_BURST,
    F_SPREAD,
    F_IMB,
    F_IMBD,
    F_PRESS,
    F_TOR,
    F_LD,
    F_VOL,
    F_DEPTH,
    F_RET,
    F_CORR,
    F_NEWS,
    F_VPIN,
) = range(14)

_C_STEP = CFG_INDEX["step_ns"]
_C_W = CFG_INDEX["window_steps"]
_C_BURST = CFG_INDEX["burst_steps"]
_C_ACT = CFG_INDEX["activity_steps"]
_C_LEVELS = CFG_INDEX["depth_levels"]
_C_CRET = CFG_INDEX["corr_return_steps"]
_C_CHL = CFG_INDEX["corr_halflife_steps"]
_C_LARGE = CFG_INDEX["large_trade_mult"]
_C_TSA = CFG_INDEX["trade_size_alpha"]
_C_MINTR = CFG_INDEX["min_trades"]
_C_RFRAC = CFG_INDEX["recovery_frac"]
_C_RCAP = CFG_INDEX["recovery_cap_s"]
_C_NEWSHL = CFG_INDEX["news_halflife_s"]
_C_NB = CFG_INDEX["vpin_buckets"]
_C_VBS = CFG_INDEX["vpin_bucket_steps"]
_C_NHL = CFG_INDEX["norm_halflife_steps"]
_C_WARM = CFG_INDEX["warmup_steps"]
_C_ZCLIP = CFG_INDEX["z_clip"]

_LOG_T = LOG_TRANSFORM.copy()
_LOG_EPS = LOG_EPS.copy()
_FLOOR = STD_FLOOR.copy()
assert N_FEATURES == 14


def new_state(n: int, cfg: np.ndarray) -> dict[str, np.ndarray]:
    """Fresh state arrays for n instruments."""
    w = int(cfg[_C_W])
    nb = int(cfg[_C_NB])
    s = np.zeros((n, N_SF))
    s[:, MID_PREV] = np.nan
    i = np.zeros((n, N_SI), dtype=np.int64)
    i[:, FIRST_STEP] = -1
    return {
        "S": s,
        "I": i,
        "R": np.zeros((n, N_RING, w)),
        "Q": np.zeros((n, N_SUMS)),
        "VB": np.zeros((n, 2, nb)),  # per VPIN bucket: |buy - sell| and volume
        "NS": np.zeros((n, N_FEATURES, N_NORM)),
    }


@njit(cache=True)
def _start(S, IS, i):
    if IS[i, STARTED] == 0:
        IS[i, STARTED] = 1


@njit(cache=True)
def _check_recovery(S, IS, i, t, cfg):
    if (
        S[i, EP_ACTIVE] > 0.0
        and S[i, DEPTH_B] + S[i, DEPTH_A] >= cfg[_C_RFRAC] * S[i, EP_PRE_DEPTH]
    ):
        S[i, LD_VALUE] = (t - IS[i, EP_T0]) / 1e9
        S[i, EP_ACTIVE] = 0.0


@njit(cache=True)
def _set_top(S, i, bid, ask, bsz, asz):
    """Top of book from a quote or level 1 of a book; False if the row is unusable.

    A one-sided row (one side empty) sets that side's size to 0 and keeps its last price, so
    depth and imbalance show the missing side while mid and spread stay defined.
    """
    okb = bid > 0.0 and bsz >= 0.0
    oka = ask > 0.0 and asz >= 0.0
    if okb and oka:
        if bid > ask:
            return False  # crossed
        S[i, BID] = bid
        S[i, ASK] = ask
        S[i, BSZ] = bsz
        S[i, ASZ] = asz
        return True
    if not (okb or oka) or not S[i, BID] > 0.0:
        return False  # empty, or one-sided before any two-sided quote
    if okb:
        if bid <= S[i, ASK]:
            S[i, BID] = bid
        S[i, BSZ] = bsz
        S[i, ASZ] = 0.0
    else:
        if ask >= S[i, BID]:
            S[i, ASK] = ask
        S[i, ASZ] = asz
        S[i, BSZ] = 0.0
    return True


@njit(cache=True)
def _apply_trade(S, IS, VB, i, t, price, size, side, cfg):
    if not (price > 0.0 and size > 0.0):
        return False
    _start(S, IS, i)
    S[i, ACC_VOL] += size
    S[i, ACC_TR] += 1.0
    if (
        S[i, TS_N] >= cfg[_C_MINTR]
        and S[i, EP_ACTIVE] == 0.0
        and size > cfg[_C_LARGE] * S[i, TS_EWMA]
        and S[i, DEPTH_B] + S[i, DEPTH_A] > 0.0
    ):
        S[i, EP_ACTIVE] = 1.0
        S[i, EP_PRE_DEPTH] = S[i, DEPTH_B] + S[i, DEPTH_A]
        IS[i, EP_T0] = t
    if S[i, TS_N] == 0.0:
        S[i, TS_EWMA] = size
    else:
        S[i, TS_EWMA] += cfg[_C_TSA] * (size - S[i, TS_EWMA])
    S[i, TS_N] += 1.0
    # VPIN: fill volume buckets of a fixed size, splitting the trade across bucket boundaries.
    buy_frac = 1.0 if side > 0 else (0.0 if side < 0 else 0.5)
    nb = VB.shape[2]
    left = size
    while left > 0.0:
        if S[i, VP_SIZE] <= 0.0:
            rate = S[i, VR_S] / S[i, VR_W] if S[i, VR_W] > 0.0 else 0.0
            S[i, VP_SIZE] = rate * cfg[_C_VBS] if rate > 0.0 else 50.0 * size
        take = min(left, S[i, VP_SIZE] - S[i, VP_VOL])
        S[i, VP_VOL] += take
        S[i, VP_BUY] += take * buy_frac
        left -= take
        if S[i, VP_VOL] >= S[i, VP_SIZE]:
            k = IS[i, VP_COUNT] % nb
            VB[i, 0, k] = abs(2.0 * S[i, VP_BUY] - S[i, VP_VOL])
            VB[i, 1, k] = S[i, VP_VOL]
            IS[i, VP_COUNT] += 1
            S[i, VP_VOL] = 0.0
            S[i, VP_BUY] = 0.0
            S[i, VP_SIZE] = 0.0
    return True


@njit(cache=True)
def _apply_quote(S, IS, i, t, bid, ask, bsz, asz, cfg):
    if not _set_top(S, i, bid, ask, bsz, asz):
        return False
    _start(S, IS, i)
    if S[i, HAS_BOOK] == 0.0:
        S[i, DEPTH_B] = bsz
        S[i, DEPTH_A] = asz
        S[i, WB] = bsz
        S[i, WA] = asz
    S[i, ACC_QU] += 1.0
    _check_recovery(S, IS, i, t, cfg)
    return True


@njit(cache=True)
def _apply_book(S, IS, i, t, row, cfg):
    lv = row.shape[0] // 4
    if not _set_top(S, i, row[0], row[2 * lv], row[lv], row[3 * lv]):
        return False
    _start(S, IS, i)
    n = int(cfg[_C_LEVELS])
    db = 0.0
    da = 0.0
    wb = 0.0
    wa = 0.0
    for k in range(lv):
        bp, bs, ap, az = row[k], row[lv + k], row[2 * lv + k], row[3 * lv + k]
        if bp > 0.0 and bs > 0.0:
            wb += bs / (k + 1)
            if k < n:
                db += bs
        if ap > 0.0 and az > 0.0:
            wa += az / (k + 1)
            if k < n:
                da += az
    S[i, DEPTH_B] = db
    S[i, DEPTH_A] = da
    S[i, WB] = wb
    S[i, WA] = wa
    S[i, HAS_BOOK] = 1.0
    S[i, ACC_QU] += 1.0
    _check_recovery(S, IS, i, t, cfg)
    return True


@njit(cache=True)
def _apply_l3(S, IS, i, event):
    if event < 0:
        return False
    _start(S, IS, i)
    S[i, HAS_L3] = 1.0
    if event == L3_TRADE:
        S[i, ACC_L3T] += 1.0
    else:
        S[i, ACC_L3M] += 1.0
    return True


@njit(cache=True)
def _apply_news(S, IS, i, sentiment):
    if not np.isfinite(sentiment):
        return False
    s = min(1.0, max(-1.0, sentiment))
    if i >= 0:
        _start(S, IS, i)
        S[i, NEWS] += s
    else:  # market-wide news: every started instrument
        for j in range(S.shape[0]):
            if IS[j, STARTED] == 1:
                S[j, NEWS] += s
    return True


@njit(cache=True)
def _push(R, Q, i, series, pos, w, value, qsum, window):
    """Add value to a running window sum (the caller then stores it in the ring)."""
    Q[i, qsum] += value - R[i, series, (pos - window) % w]


@njit(cache=True)
def _step(S, IS, R, Q, VB, NS, G, cfg, t, out_raw, out_z, out_ready, row):
    n = S.shape[0]
    w = R.shape[2]
    step = G[G_STEP]
    pos = step % w
    burst = int(cfg[_C_BURST])
    act = int(cfg[_C_ACT])
    step_s = cfg[_C_STEP] / 1e9
    news_decay = 0.5 ** (step_s / cfg[_C_NEWSHL])
    vr_decay = 0.5 ** (1.0 / cfg[_C_NHL])
    nrm_decay = vr_decay
    zclip = cfg[_C_ZCLIP]

    cret = int(cfg[_C_CRET])
    corr_decay = 0.5 ** (1.0 / cfg[_C_CHL])

    # Pass 1: mid returns of this step and over the last cret steps; the cross-sectional sum of
    # the latter is the market factor of cross_corr.
    rets = np.zeros(n)
    valid = np.zeros(n, dtype=np.bool_)
    msum = 0.0
    mcount = 0
    for i in range(n):
        if IS[i, STARTED] == 0:
            continue
        if S[i, BID] > 0.0:
            mid = 0.5 * (S[i, BID] + S[i, ASK])
            if IS[i, FIRST_STEP] < 0:
                IS[i, FIRST_STEP] = step
            if S[i, MID_PREV] > 0.0:
                rets[i] = np.log(mid / S[i, MID_PREV])
                valid[i] = True
            S[i, MID_PREV] = mid
        _push(R, Q, i, R_R, pos, w, rets[i], Q_R1, cret)
        if valid[i]:
            msum += Q[i, Q_R1]
            mcount += 1

    for i in range(n):
        raw = out_raw[row, i]
        z = out_z[row, i]
        if IS[i, STARTED] == 0:
            raw[:] = np.nan
            z[:] = 0.0
            out_ready[row, i] = False
            continue
        r = rets[i]
        vals = (r, r * r, S[i, ACC_VOL], S[i, ACC_L3T], S[i, ACC_L3M], S[i, ACC_TR], S[i, ACC_QU])
        _push(R, Q, i, R_R, pos, w, r, Q_R, w)
        _push(R, Q, i, R_R2, pos, w, r * r, Q_R2, w)
        _push(R, Q, i, R_R2, pos, w, r * r, Q_R2B, burst)
        _push(R, Q, i, R_VOL, pos, w, vals[2], Q_VOL, w)
        _push(R, Q, i, R_L3T, pos, w, vals[3], Q_L3T, act)
        _push(R, Q, i, R_L3M, pos, w, vals[4], Q_L3M, act)
        _push(R, Q, i, R_TR, pos, w, vals[5], Q_TR, act)
        _push(R, Q, i, R_QU, pos, w, vals[6], Q_QU, act)
        R[i, R_R, pos] = vals[0]
        R[i, R_R2, pos] = vals[1]
        R[i, R_VOL, pos] = vals[2]
        R[i, R_L3T, pos] = vals[3]
        R[i, R_L3M, pos] = vals[4]
        R[i, R_TR, pos] = vals[5]
        R[i, R_QU, pos] = vals[6]
        if valid[i] and mcount > 1:
            x = Q[i, Q_R1]
            y = (msum - x) / (mcount - 1)
            S[i, C_W] = corr_decay * S[i, C_W] + 1.0
            S[i, C_X] = corr_decay * S[i, C_X] + x
            S[i, C_Y] = corr_decay * S[i, C_Y] + y
            S[i, C_XX] = corr_decay * S[i, C_XX] + x * x
            S[i, C_YY] = corr_decay * S[i, C_YY] + y * y
            S[i, C_XY] = corr_decay * S[i, C_XY] + x * y
        IS[i, N_STEPS] += 1
        S[i, VR_S] = vr_decay * S[i, VR_S] + S[i, ACC_VOL]
        S[i, VR_W] = vr_decay * S[i, VR_W] + 1.0
        S[i, ACC_VOL] = 0.0
        S[i, ACC_L3T] = 0.0
        S[i, ACC_L3M] = 0.0
        S[i, ACC_TR] = 0.0
        S[i, ACC_QU] = 0.0
        S[i, NEWS] *= news_decay

        # Raw features.
        raw[:] = np.nan
        have_top = S[i, BID] > 0.0
        if have_top:
            mid = 0.5 * (S[i, BID] + S[i, ASK])
            raw[F_RV] = np.sqrt(Q[i, Q_R2]) if Q[i, Q_R2] > 1e-18 else 0.0
            raw[F_BURST] = np.sqrt(Q[i, Q_R2B] * w / burst) if Q[i, Q_R2B] > 1e-18 else 0.0
            raw[F_SPREAD] = (S[i, ASK] - S[i, BID]) / mid * 1e4
            tob = S[i, BSZ] + S[i, ASZ]
            if tob > 0.0:
                raw[F_IMB] = (S[i, BSZ] - S[i, ASZ]) / tob
            depth = S[i, DEPTH_B] + S[i, DEPTH_A]
            if depth > 0.0:
                raw[F_IMBD] = (S[i, DEPTH_B] - S[i, DEPTH_A]) / depth
            raw[F_PRESS] = np.log((S[i, WB] + 1.0) / (S[i, WA] + 1.0))
            raw[F_DEPTH] = tob
            raw[F_RET] = Q[i, Q_R]
        if S[i, HAS_L3] > 0.0:
            if Q[i, Q_L3M] > 0.0:
                raw[F_TOR] = Q[i, Q_L3T] / Q[i, Q_L3M]
        elif Q[i, Q_QU] > 0.0:
            raw[F_TOR] = Q[i, Q_TR] / Q[i, Q_QU]
        if S[i, EP_ACTIVE] > 0.0:
            elapsed = (t - IS[i, EP_T0]) / 1e9
            if elapsed >= cfg[_C_RCAP]:
                S[i, LD_VALUE] = cfg[_C_RCAP]
                S[i, EP_ACTIVE] = 0.0
                raw[F_LD] = cfg[_C_RCAP]
            else:
                raw[F_LD] = max(elapsed, 0.0)
        elif S[i, TS_N] >= cfg[_C_MINTR]:
            raw[F_LD] = S[i, LD_VALUE]
        raw[F_VOL] = max(Q[i, Q_VOL], 0.0)
        cw = S[i, C_W]
        if cw > 0.0:
            mx = S[i, C_X] / cw
            my = S[i, C_Y] / cw
            vx = S[i, C_XX] / cw - mx * mx
            vy = S[i, C_YY] / cw - my * my
            if vx > 1e-14 and vy > 1e-14:
                c = (S[i, C_XY] / cw - mx * my) / np.sqrt(vx * vy)
                raw[F_CORR] = min(1.0, max(-1.0, c))
        raw[F_NEWS] = S[i, NEWS]
        nbk = min(IS[i, VP_COUNT], VB.shape[2])
        if nbk > 0:
            imb = 0.0
            vol = 0.0
            for k in range(nbk):
                imb += VB[i, 0, k]
                vol += VB[i, 1, k]
            raw[F_VPIN] = imb / vol

        # Normalise against the instrument's own baseline, then fold this value into it.
        for f in range(raw.shape[0]):
            x = raw[f]
            if _LOG_T[f] > 0.0:
                x = np.log(max(x, 0.0) + _LOG_EPS[f])
            if not np.isfinite(x):
                z[f] = 0.0
                continue
            wsum = NS[i, f, 0]
            if wsum > 0.0:
                mean = NS[i, f, 1] / wsum
                var = max(NS[i, f, 2] / wsum - mean * mean, 0.0)
                zz = (x - mean) / np.sqrt(var + _FLOOR[f] * _FLOOR[f])
                z[f] = min(zclip, max(-zclip, zz))
            else:
                z[f] = 0.0
            NS[i, f, 0] = nrm_decay * wsum + 1.0
            NS[i, f, 1] = nrm_decay * NS[i, f, 1] + x
            NS[i, f, 2] = nrm_decay * NS[i, f, 2] + x * x
        out_ready[row, i] = IS[i, FIRST_STEP] >= 0 and step - IS[i, FIRST_STEP] >= cfg[_C_WARM]
    G[G_STEP] += 1


@njit(cache=True)
def advance(
    S,
    IS,
    R,
    Q,
    VB,
    NS,
    G,
    cfg,
    tr_t,
    tr_i,
    tr_p,
    tr_q,
    tr_s,
    l3_t,
    l3_i,
    l3_e,
    qu_t,
    qu_i,
    qu_v,
    bk_t,
    bk_i,
    bk_v,
    nw_t,
    nw_i,
    nw_s,
    grid,
    out_raw,
    out_z,
    out_ready,
    consumed,
):
    """Apply ticks with time <= each grid time in time order, then step; one output row per grid time.

    consumed[table] returns how many rows of each table were applied (the rest are later ticks).
    """
    times = (tr_t, l3_t, qu_t, bk_t, nw_t)
    cur = np.zeros(N_TABLES, dtype=np.int64)
    lens = np.array([tr_t.shape[0], l3_t.shape[0], qu_t.shape[0], bk_t.shape[0], nw_t.shape[0]])
    for row in range(grid.shape[0]):
        g = grid[row]
        while True:
            best = -1
            bt = g
            for k in range(N_TABLES):
                if cur[k] < lens[k]:
                    tk = times[k][cur[k]]
                    if tk <= g and (best < 0 or tk < bt):
                        best = k
                        bt = tk
            if best < 0:
                break
            j = cur[best]
            ok = True
            if best == T_TRADE:
                ok = _apply_trade(S, IS, VB, tr_i[j], tr_t[j], tr_p[j], tr_q[j], tr_s[j], cfg)
            elif best == T_L3:
                ok = _apply_l3(S, IS, l3_i[j], l3_e[j])
            elif best == T_QUOTE:
                ok = _apply_quote(
                    S, IS, qu_i[j], qu_t[j], qu_v[j, 0], qu_v[j, 1], qu_v[j, 2], qu_v[j, 3], cfg
                )
            elif best == T_BOOK:
                ok = _apply_book(S, IS, bk_i[j], bk_t[j], bk_v[j], cfg)
            else:
                ok = _apply_news(S, IS, nw_i[j], nw_s[j])
            if not ok:
                G[G_BAD] += 1
            cur[best] += 1
        _step(S, IS, R, Q, VB, NS, G, cfg, g, out_raw, out_z, out_ready, row)
    for k in range(N_TABLES):
        consumed[k] = cur[k]
