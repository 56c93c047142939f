"""The adaptive context-mixing model behind the ``context`` codec (numba, integers only).

Each 10-bit token is split into two 5-bit halves ("nibbles"); each half is a walk down a
binary tree of 31 nodes. For every context (same position in earlier frames, spatial
neighbours, their neighbours in the previous frame, and combinations) a hash selects a
block of 32 adaptive bit counters, one per tree node, so a whole nibble's predictions sit
in one cache line run. Per node the counters' stretched probabilities are mixed by several
online logistic mixers (weight sets selected by tree node, by position, and by whether the
prefix so far still agrees with the previous frame's token), a second mixer combines them,
and an APM/SSE stage refines the result (paq8 style).

Hashed contexts only help when a token value recurs exactly; 63% of tokens change from the
previous frame and rarely into anything seen nearby. What predicts a changed token is the
codebook's similarity structure, learnt online from *count vectors over all 1024 tokens*:
T[a, b] counts how often a became b (or b became a) at one position between frames, and
(T @ T)[a] spreads that over codes two flicker steps away. Each vector enters every tree
node as the Krichevsky-Trofimov estimate from its subtree counts (per-group sums keep this
at 32 numbers per row per nibble); the T @ T row is summed on the fly from T's nonzero
entries, so it is exact without a 1024 x 1024 update per token.

Why nibbles instead of bits: the decoder must interleave model and arithmetic decoder. One
decoder call per nibble (a 32-way categorical built from the 31 node probabilities) keeps
the Python<->numba<->constriction crossings to two per token, which is what makes decoding
fast. Predictions for all 31 nodes of a nibble use the state at the start of the nibble;
the counters and mixers on the coded path are updated once the nibble is known. Encoder and
decoder call the very same ``_step`` function, so they see identical probabilities.

Everything that feeds the coder is integer arithmetic (12-bit probabilities, paq's integer
squash/stretch, int64 mixer weights), so the distributions are bit-identical on every
machine; the only floats are the final products of five dyadic node probabilities, which
IEEE-754 rounds the same way everywhere.
"""

from __future__ import annotations

import numpy as np
from numba import njit

VERSION = 2
ROWS, COLS = 8, 16
TOKENS_PER_FRAME = ROWS * COLS
NONE = 1024  # "no token here" (outside the frame, or before the first frame)

N_CTX = 13  # hashed contexts
N_DIRECT = 2  # directly indexed counters (position x match state, change pattern x match state)
N_DENSE = 4  # count vectors over all 1024 tokens, fed to the tree as subtree counts
O_DENSE_IN = N_CTX + N_DIRECT
N_IN = N_CTX + N_DIRECT + N_DENSE + 1  # + bias
V = 1024
G = 32  # a token's high nibble selects one of 32 groups of 32 tokens
# count tables (int32, row-major) and their per-group sums (so a nibble-0 prediction reads 32
# numbers per row instead of 1024): T[a, b] counts how often token a became b or b became a at
# one position from one frame to the next (symmetric); P[pos, b] counts tokens per position
D_T = 0
D_GT = D_T + V * V
D_P = D_GT + V * G
D_GP = D_P + TOKENS_PER_FRAME * V
DENSE_SIZE = D_GP + TOKENS_PER_FRAME * G
MAX_ROWS = 8 + V  # rows summed into the count vectors of one token (T2 needs up to 1024)
# counters per context table: 2M x 2 bytes, zero-initialised so untouched pages cost nothing
# (22 bits compresses about 0.5% better but decodes 40% slower: more cache misses)
TABLE_BITS = 21
N_MIX = 4  # first-layer mixers
# weight sets per first-layer mixer: node, position, match x change, dense-count confidence
MIX_SETS = (64, 256, 480, 2 * 5 * 8 * 8)
N_MIX2 = 64  # second-layer weight sets (node)
APM_CTX = 2 * 3 * 16 * 5  # nibble x match state x change pattern x depth
N_MO = N_MIX + 1 + 5 + N_MIX + N_DIRECT  # per-node scratch: mixer outputs + bookkeeping
DIRECT_SIZE = (TOKENS_PER_FRAME * 2 * 32 * 3, 16 * 2 * 32 * 3)

# paq8's integer squash: 12-bit probability from a stretch-domain value in [-2047, 2047].
_SQ = np.array(
    [1, 2, 3, 6, 10, 16, 27, 45, 73, 120, 194, 310, 488, 747, 1101, 1546, 2047, 2549, 2994, 3348, 3607,
     3785, 3901, 3975, 4022, 4050, 4068, 4079, 4085, 4089, 4092, 4093, 4094],
    dtype=np.int64,
)


def _squash_table() -> np.ndarray:
    out = np.empty(4096, dtype=np.int64)
    for i in range(4096):
        d = i - 2048
        if d > 2047:
            out[i] = 4095
        elif d < -2047:
            out[i] = 1
        else:
            w = d & 127
            j = (d >> 7) + 16
            out[i] = (_SQ[j] * (128 - w) + _SQ[j + 1] * w + 64) >> 7
    return np.clip(out, 1, 4095)


def _stretch_table(sq: np.ndarray) -> np.ndarray:
    # inverse of squash: stretch(p) = smallest d with squash(d) >= p (as in paq8)
    out = np.empty(4096, dtype=np.int64)
    pi = 0
    for x in range(-2047, 2048):
        v = int(sq[x + 2048])
        for j in range(pi, v + 1):
            out[j] = x
        pi = v + 1
    out[pi:] = 2047
    return out


SQUASH = _squash_table()
STRETCH = _stretch_table(SQUASH)
# adaptive counter rate 1/(n+1.5) in 16-bit fixed point; the cap keeps the model adaptive
RATE = np.array([int(65536 / (n + 1.5)) for n in range(256)], dtype=np.int64)

# hyper-parameters (chosen on frames 0-299 of the shared half only; see docs/vq.md)
PARAMS = np.array(
    [
        15,  # 0: counter count limit, at most 15 (higher = slower, more stationary)
        24,  # 1: first-layer mixer learning rate
        2,  # 2: second-layer mixer learning rate
        7,  # 3: APM rate shift
        120,  # 4: position/match counter limit
    ],
    dtype=np.int64,
)


def _layout() -> dict[str, tuple[int, int]]:
    # every int64 piece of model state and scratch lives in one flat array, so a decoder step
    # crosses the Python->numba boundary with a handful of plain arrays (tuples are slow to type)
    parts = [
        ("mw", sum(MIX_SETS) * N_IN),
        ("mw2", N_MIX2 * N_MIX),
        ("apm", APM_CTX * 33),
        ("dc", sum(DIRECT_SIZE)),
        ("dn", sum(DIRECT_SIZE)),
        ("st", 32 * N_IN),
        ("mo", 32 * N_MO),
        ("pnode", 32),
        ("dt", N_DENSE * 64),
        ("rows", MAX_ROWS * 4),
        ("bases", N_CTX),
        ("misc", 4),
    ]
    out, off = {}, 0
    for name, size in parts:
        out[name] = (off, size)
        off += size
    out["total"] = (off, 0)
    return out


LAYOUT = _layout()
O_MW, O_MW2, O_APM = LAYOUT["mw"][0], LAYOUT["mw2"][0], LAYOUT["apm"][0]
O_DC, O_DN, O_ST, O_MO = LAYOUT["dc"][0], LAYOUT["dn"][0], LAYOUT["st"][0], LAYOUT["mo"][0]
O_PN, O_BASES, O_MISC = LAYOUT["pnode"][0], LAYOUT["bases"][0], LAYOUT["misc"][0]
O_DT, O_ROWS = LAYOUT["dt"][0], LAYOUT["rows"][0]
MEM_SIZE = LAYOUT["total"][0]


def new_state(table_bits: int = TABLE_BITS) -> tuple[np.ndarray, ...]:
    """Fresh model state ``(tab, cnt, mem, ctx, dense)``; encoder and decoder start from the same one."""
    size = 1 << table_bits
    # a counter is 16 bits: 12-bit probability (stored xor 0x800 so that 0 means p = 1/2) and
    # a 4-bit count; np.zeros maps lazily, so a short input touches only the pages it uses
    tab = np.zeros((N_CTX, size), dtype=np.uint16)
    # one check byte per 32-counter block: a colliding context resets the block instead of
    # inheriting another context's statistics
    cnt = np.zeros((N_CTX, size >> 5), dtype=np.uint8)
    mem = np.zeros(MEM_SIZE, dtype=np.int64)
    mw = mem[O_MW : O_MW + sum(MIX_SETS) * N_IN].reshape(sum(MIX_SETS), N_IN)
    mw[:, : N_IN - 1] = (1 << 16) // 8  # start near a soft average of the counters
    mem[O_MW2 : O_MW2 + N_MIX2 * N_MIX] = (1 << 16) // N_MIX
    apm = mem[O_APM : O_APM + APM_CTX * 33].reshape(APM_CTX, 33)
    for j in range(33):
        apm[:, j] = SQUASH[min(4095, max(0, (j - 16) * 128 + 2048))] * 16
    mem[O_DC : O_DC + sum(DIRECT_SIZE)] = 32768
    ctx = np.zeros(N_CTX + 1, dtype=np.uint64)
    dense = np.zeros(DENSE_SIZE, dtype=np.int32)
    return tab, cnt, mem, ctx, dense


@njit(cache=True, inline="always")
def _mix(a: np.uint64, b: np.uint64) -> np.uint64:
    h = a ^ (b + np.uint64(0x9E3779B97F4A7C15) + (a << np.uint64(6)) + (a >> np.uint64(2)))
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    return h


@njit(cache=True, inline="always")
def _tok(x: np.ndarray, t: int, r: int, c: int) -> int:
    if t < 0 or r < 0 or r >= ROWS or c < 0 or c >= COLS:
        return NONE
    return int(x[t * TOKENS_PER_FRAME + r * COLS + c])


@njit(cache=True)
def _contexts(x: np.ndarray, i: int, ctx: np.ndarray) -> None:
    """Hash the neighbourhood of token ``i`` (flat index) into ``N_CTX`` context ids.

    ``ctx[N_CTX]`` gets the change pattern: which of the already-known neighbours kept
    their token from the previous frame. Static neighbours make a static token likely,
    whatever the token is, so this generalises across token values.
    """
    t = i // TOKENS_PER_FRAME
    p = i % TOKENS_PER_FRAME
    r = p // COLS
    c = p % COLS
    p1 = _tok(x, t - 1, r, c)
    p2 = _tok(x, t - 2, r, c)
    lf = _tok(x, t, r, c - 1)
    up = _tok(x, t, r - 1, c)
    ur = _tok(x, t, r - 1, c + 1)
    pl = _tok(x, t - 1, r, c - 1)
    pu = _tok(x, t - 1, r - 1, c)
    pur = _tok(x, t - 1, r - 1, c + 1)
    chg = (
        (1 if (lf == pl and lf != NONE) else 0)
        + (2 if (up == pu and up != NONE) else 0)
        + (4 if (p1 == p2 and p1 != NONE) else 0)
        + (8 if (ur == pur and ur != NONE) else 0)
    )
    vals = (
        (0, 0, 0, 0),
        (1, p, 0, 0),
        (2, p1, 0, 0),
        (3, p1, p, 0),
        (4, p1, p2, 0),
        (5, p1, lf, 0),
        (6, p1, up, 0),
        (7, lf, up, 0),
        (11, lf, pl, p1),
        (12, up, pu, p1),
        (14, p1, r, 0),
        (18, p1, chg, 0),
        (19, chg, p, 0),
    )
    for k in range(N_CTX):
        v = vals[k]
        h = _mix(np.uint64(v[0] + 1), np.uint64(v[1] + 7))
        h = _mix(h, np.uint64(v[2] + 13))
        ctx[k] = _mix(h, np.uint64(v[3] + 17))
    ctx[N_CTX] = np.uint64(chg)


@njit(cache=True)
def _dense_update(x: np.ndarray, j: int, dense: np.ndarray) -> None:
    """Learn from the completed token ``j``: its change from the previous frame, its position."""
    t = j // TOKENS_PER_FRAME
    p = j % TOKENS_PER_FRAME
    b = int(x[j])
    a = _tok(x, t - 1, p // COLS, p % COLS)
    if a != NONE and a != b:
        dense[D_T + a * V + b] += 1
        dense[D_T + b * V + a] += 1
        dense[D_GT + a * G + (b >> 5)] += 1
        dense[D_GT + b * G + (a >> 5)] += 1
    dense[D_P + p * V + b] += 1
    dense[D_GP + p * G + (b >> 5)] += 1


@njit(cache=True, inline="always")
def _add_row(rows: np.ndarray, n: int, k: int, off: int, goff: int, w: int) -> int:
    rows[n, 0] = k
    rows[n, 1] = off
    rows[n, 2] = goff
    rows[n, 3] = w
    return n + 1


@njit(cache=True)
def _dense_rows(x: np.ndarray, i: int, dense: np.ndarray, mem: np.ndarray) -> None:
    """List the weighted table rows whose sum is each count vector of token ``i``.

    0: T[p1], what the previous token at this position flickers with;
    1: T rows of the previous frame's 4 neighbours and of this position two frames back;
    2: P[pos];
    3: (T @ T)[p1] without its diagonal: tokens two flicker steps away from p1. Two codes that
       flicker with the same third code are probably similar, which fills in the sparse T
       (worth ~0.5 bits per changed token). Computed exactly from T's nonzero entries.
    """
    rows = mem[O_ROWS : O_ROWS + MAX_ROWS * 4].reshape(MAX_ROWS, 4)
    t = i // TOKENS_PER_FRAME
    p = i % TOKENS_PER_FRAME
    r = p // COLS
    c = p % COLS
    p1 = _tok(x, t - 1, r, c)
    n = 0
    diag = 0
    if p1 != NONE:
        n = _add_row(rows, n, 0, D_T + p1 * V, D_GT + p1 * G, 1)
    for dr, dc in ((0, -1), (0, 1), (-1, 0), (1, 0), (0, 0)):
        q = _tok(x, t - 2, r, c) if (dr == 0 and dc == 0) else _tok(x, t - 1, r + dr, c + dc)
        if q != NONE:
            n = _add_row(rows, n, 1, D_T + q * V, D_GT + q * G, 1)
    n = _add_row(rows, n, 2, D_P + p * V, D_GP + p * G, 1)
    if p1 != NONE:
        o = D_T + p1 * V
        for v in range(V):
            w = int(dense[o + v])
            if w != 0:
                n = _add_row(rows, n, 3, D_T + v * V, D_GT + v * G, w)
                diag += w * w  # (T @ T)[p1, p1] = sum_v T[p1, v]^2 since T is symmetric
    mem[O_MISC] = n
    mem[O_MISC + 1] = p1
    mem[O_MISC + 2] = diag


@njit(cache=True)
def _dense_tree(mem: np.ndarray, dense: np.ndarray, nib: int, prefix: int) -> None:
    """Subtree sums of every count vector over the 31-node tree of nibble ``nib`` (leaves 32..63)."""
    rows = mem[O_ROWS : O_ROWS + MAX_ROWS * 4].reshape(MAX_ROWS, 4)
    dt = mem[O_DT : O_DT + N_DENSE * 64].reshape(N_DENSE, 64)
    dt[:, :] = 0
    for j in range(mem[O_MISC]):
        k = rows[j, 0]
        w = rows[j, 3]
        o = rows[j, 2] if nib == 0 else rows[j, 1] + prefix * G
        for g in range(G):
            dt[k, 32 + g] += w * dense[o + g]
    p1 = mem[O_MISC + 1]
    if p1 != NONE:
        if nib == 0:
            dt[3, 32 + (p1 >> 5)] -= mem[O_MISC + 2]
        elif prefix == (p1 >> 5):
            dt[3, 32 + (p1 & 31)] -= mem[O_MISC + 2]
    for k in range(N_DENSE):
        for nd in range(31, 0, -1):
            dt[k, nd] = dt[k, 2 * nd] + dt[k, 2 * nd + 1]


@njit(cache=True, inline="always")
def _bucket(s: int) -> int:
    b = 0
    while s > 0 and b < 7:
        s >>= 1
        b += 1
    return b


@njit(cache=True, inline="always")
def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else (hi if v > hi else v)


@njit(cache=True)
def _predict(x, i, nib, prefix, tab, cnt, mem, ctx, probs):
    """Predict all 31 nodes of nibble ``nib`` (0 = high 5 bits) and the 32-way distribution."""
    nblocks = tab.shape[1] >> 5
    st = mem[O_ST : O_ST + 32 * N_IN].reshape(32, N_IN)
    mo = mem[O_MO : O_MO + 32 * N_MO].reshape(32, N_MO)
    mw = mem[O_MW : O_MW + sum(MIX_SETS) * N_IN].reshape(sum(MIX_SETS), N_IN)
    mw2 = mem[O_MW2 : O_MW2 + N_MIX2 * N_MIX].reshape(N_MIX2, N_MIX)
    apm = mem[O_APM : O_APM + APM_CTX * 33].reshape(APM_CTX, 33)
    pnode = mem[O_PN : O_PN + 32]
    bases = mem[O_BASES : O_BASES + N_CTX]
    dt = mem[O_DT : O_DT + N_DENSE * 64].reshape(N_DENSE, 64)
    for k in range(N_CTX):
        h = _mix(ctx[k], np.uint64(nib * 2048 + prefix + 1))
        b = np.int64(h % np.uint64(nblocks))
        tag = np.uint8((h >> np.uint64(56)) | np.uint64(1))
        if cnt[k, b] != tag:
            cnt[k, b] = tag
            for j in range(32):
                tab[k, b * 32 + j] = 0
        bases[k] = b * 32
    chg = int(ctx[N_CTX])
    p = i % TOKENS_PER_FRAME
    t = i // TOKENS_PER_FRAME
    p1 = int(x[i - TOKENS_PER_FRAME]) if t > 0 else NONE
    # does the token so far still agree with the previous frame's token at this position?
    if p1 == NONE:
        hi_ok = False
    elif nib == 0:
        hi_ok = True
    else:
        hi_ok = (p1 >> 5) == prefix
    p1nib = (p1 >> 5) if nib == 0 else (p1 & 31)
    for node in range(1, 32):
        depth = 0
        while (node >> (depth + 1)) > 0:
            depth += 1
        # match state: 0 = no previous token or already diverged, 1/2 = it predicts bit 0/1
        m = 0
        if hi_ok:
            path = node - (1 << depth)
            if (p1nib >> (5 - depth)) == path:
                m = 1 + ((p1nib >> (4 - depth)) & 1)
        for k in range(N_CTX):
            st[node, k] = STRETCH[(tab[k, bases[k] + node] >> 4) ^ 0x800]
        d0 = ((p * 2 + nib) * 32 + node) * 3 + m
        d1 = DIRECT_SIZE[0] + ((chg * 2 + nib) * 32 + node) * 3 + m
        st[node, N_CTX] = STRETCH[mem[O_DC + d0] >> 4]
        st[node, N_CTX + 1] = STRETCH[mem[O_DC + d1] >> 4]
        for k in range(N_DENSE):
            # Krichevsky-Trofimov estimate of the next bit from the subtree counts
            q = ((2 * dt[k, 2 * node + 1] + 1) * 4096) // (2 * dt[k, node] + 2)
            st[node, O_DENSE_IN + k] = STRETCH[_clamp(q, 1, 4095)]
        st[node, N_IN - 1] = 256
        mo[node, N_MIX + 6 + N_MIX] = d0
        mo[node, N_MIX + 6 + N_MIX + 1] = d1
        for j in range(N_MIX):
            if j == 0:
                row = nib * 32 + node
            elif j == 1:
                row = MIX_SETS[0] + p * 2 + nib
            elif j == 2:
                row = MIX_SETS[0] + MIX_SETS[1] + (((nib * 5 + depth) * 3 + m) * 16 + chg)
            else:
                row = MIX_SETS[0] + MIX_SETS[1] + MIX_SETS[2] + (
                    ((nib * 5 + depth) * 8 + _bucket(dt[0, node])) * 8 + _bucket(dt[3, node] >> 8)
                )
            dot = 0
            for k in range(N_IN):
                dot += st[node, k] * mw[row, k]
            mo[node, j] = _clamp(dot >> 16, -2047, 2047)
            mo[node, N_MIX + 6 + j] = row
        row2 = nib * 32 + node
        s2 = 0
        for j in range(N_MIX):
            s2 += mo[node, j] * mw2[row2, j]
        s2 = _clamp(s2 >> 16, -2047, 2047)
        mo[node, N_MIX] = s2
        pm = SQUASH[s2 + 2048]
        # APM/SSE: interpolate between the two buckets around the stretched probability
        actx = ((nib * 3 + m) * 16 + chg) * 5 + depth
        pos = (s2 + 2048) * 32
        lo = pos >> 12
        w = pos & 4095
        if lo >= 32:
            lo = 31
            w = 4096
        pa = (apm[actx, lo] * (4096 - w) + apm[actx, lo + 1] * w) >> 16
        pnode[node] = _clamp((pm + 3 * pa) >> 2, 1, 4095)
        mo[node, N_MIX + 1] = lo
        mo[node, N_MIX + 2] = w
        mo[node, N_MIX + 3] = actx
        mo[node, N_MIX + 5] = pm
    # the 32-way distribution is the product of node probabilities along each path
    for s in range(32):
        q = 1.0
        node = 1
        for d in range(5):
            b = (s >> (4 - d)) & 1
            pn = pnode[node] / 4096.0
            q *= pn if b else 1.0 - pn
            node = node * 2 + b
        probs[s] = q


@njit(cache=True, inline="always")
def _adapt(v: int, n: int, y: int) -> int:
    v += (((y << 16) - v) * RATE[n]) >> 16
    return _clamp(v, 32, 65535 - 32)


@njit(cache=True)
def _update(sym, nib, tab, cnt, mem, params):
    limit, lr1, lr2, ashift, dlimit = params[0], params[1], params[2], params[3], params[4]
    st = mem[O_ST : O_ST + 32 * N_IN].reshape(32, N_IN)
    mo = mem[O_MO : O_MO + 32 * N_MO].reshape(32, N_MO)
    mw = mem[O_MW : O_MW + sum(MIX_SETS) * N_IN].reshape(sum(MIX_SETS), N_IN)
    mw2 = mem[O_MW2 : O_MW2 + N_MIX2 * N_MIX].reshape(N_MIX2, N_MIX)
    apm = mem[O_APM : O_APM + APM_CTX * 33].reshape(APM_CTX, 33)
    bases = mem[O_BASES : O_BASES + N_CTX]
    node = 1
    for d in range(5):
        y = (sym >> (4 - d)) & 1
        for k in range(N_CTX):
            a = bases[k] + node
            v = int(tab[k, a])
            n = v & 15
            pv = _adapt((((v >> 4) ^ 0x800) << 4) | 8, n, y) >> 4
            tab[k, a] = ((pv ^ 0x800) << 4) | (n + 1 if n < limit else n)
        for j in range(N_DIRECT):
            a = mo[node, N_MIX + 6 + N_MIX + j]
            n = mem[O_DN + a]
            mem[O_DC + a] = _adapt(mem[O_DC + a], n, y)
            if n < dlimit:
                mem[O_DN + a] = n + 1
        # first-layer mixers learn from their own output, the second layer from its own
        for j in range(N_MIX):
            row = mo[node, N_MIX + 6 + j]
            err = ((y << 12) - SQUASH[mo[node, j] + 2048]) * lr1
            for k in range(N_IN):
                mw[row, k] += (st[node, k] * err) >> 14
        row2 = nib * 32 + node
        err2 = ((y << 12) - mo[node, N_MIX + 5]) * lr2
        for j in range(N_MIX):
            mw2[row2, j] += (mo[node, j] * err2) >> 14
        actx = mo[node, N_MIX + 3]
        lo = mo[node, N_MIX + 1] + (1 if mo[node, N_MIX + 2] >= 2048 else 0)
        apm[actx, lo] += ((y << 16) - apm[actx, lo]) >> ashift
        node = node * 2 + y


@njit(cache=True)
def step(x, i, nib, prev_sym, prefix, tab, cnt, mem, ctx, dense, params, probs):
    """One coder step: learn the previous nibble (when ``prev_sym`` >= 0), then predict the next.

    ``i`` is the flat token index and ``nib`` the nibble about to be predicted; ``prefix`` is the
    token's high nibble when ``nib`` is 1. ``x`` must hold every token before ``i``.
    """
    if prev_sym >= 0:
        _update(prev_sym, 1 - nib, tab, cnt, mem, params)
    if nib == 0:
        if i > 0:
            _dense_update(x, i - 1, dense)
        _contexts(x, i, ctx)
        _dense_rows(x, i, dense, mem)
    _dense_tree(mem, dense, nib, prefix)
    _predict(x, i, nib, prefix, tab, cnt, mem, ctx, probs)


@njit(cache=True)
def encode_all(x, tab, cnt, mem, ctx, dense, params, probs_out, syms_out):
    """Run the model over all (known) tokens ``x``; fill per-nibble distributions and symbols."""
    probs = np.empty(32)
    prev = -1
    for i in range(x.shape[0]):
        tok = int(x[i])
        hi = tok >> 5
        lo = tok & 31
        step(x, i, 0, prev, 0, tab, cnt, mem, ctx, dense, params, probs)
        probs_out[2 * i, :] = probs
        syms_out[2 * i] = hi
        step(x, i, 1, hi, hi, tab, cnt, mem, ctx, dense, params, probs)
        probs_out[2 * i + 1, :] = probs
        syms_out[2 * i + 1] = lo
        prev = lo
