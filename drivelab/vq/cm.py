"""The adaptive context-mixing model behind the ``context`` codec (numba, integers only).

Each 10-bit token is coded as 10 binary decisions: two 5-bit halves ("nibbles"), each a walk
down a binary tree of 31 nodes. For every context (same position in earlier frames, spatial
neighbours, their neighbours in the previous frame, and combinations) a hash selects a block
of 32 adaptive bit counters, one per tree node, so a whole nibble's counters sit in one cache
line run. Per decision the counters' stretched probabilities are mixed by several online
logistic mixers (weight sets selected by tree node, by position, by whether the prefix so far
still agrees with the previous frame's token, by count confidence), a second mixer combines
them, and two APM/SSE stages refine the result (paq8 style).

Hashed contexts only help when a token value recurs exactly; 63% of tokens change from the
previous frame and rarely into anything seen nearby. What predicts a changed token is the
codebook's similarity structure, learnt online from *count vectors over all 1024 tokens*:
T[a, b] counts how often a became b (or b became a) at one position between frames, and
(T @ T)[a] spreads that over codes two flicker steps away. Each vector enters every tree
node as the Krichevsky-Trofimov estimate from its subtree counts (per-group sums keep this
at 32 numbers per row per nibble); the T @ T row is summed on the fly from T's nonzero
entries, so it is exact without a 1024 x 1024 update per token.

Coding. The model and a binary arithmetic coder (32-bit, carry-less, 16-bit probabilities,
as in lpaq) run together in one numba function, ``code``, that encodes or decodes a whole
segment: predict one decision, code it, update on it, next. Encoder and decoder execute the
same function, so they see identical probabilities; a decoder needs numpy and numba only.
(constriction, a well-kept entropy-coder library, cannot be called from inside numba, and a
decoder interleaving Python and numba per decision ran at ~20k tokens/s.)

External predictions. ``code`` can take a neural model's distribution over each token (the
``prior`` network, ``drivelab.vq.nprior``) as integer frequencies; every binary decision
then gets the network's probability of that bit (a ratio of subtree sums) as extra mixer
inputs and its own APM, and a final mixer learns online how far to trust network and
context model: the ``mix`` codec. With the context model switched off the network's bit
probabilities are coded as they are: the ``prior`` codec.

Everything that feeds the coder is integer arithmetic (12-bit probabilities, paq's integer
squash/stretch, int64 mixer weights, integer frequency ratios), so the bits are the same on
every machine.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from drivelab.vq.nprior import probs as _nn_probs

VERSION = 3
ROWS, COLS = 8, 16
TOKENS_PER_FRAME = ROWS * COLS
NONE = 1024  # "no token here" (outside the frame, or before the first frame)

N_CTX = 13  # hashed contexts
N_DIRECT = 2  # directly indexed counters (position x match state, change pattern x match state)
N_DENSE = 4  # count vectors over all 1024 tokens, fed to the tree as subtree counts
N_EXT = 2  # external (neural) inputs: stretch(p) and a confidence-gated copy
O_DENSE_IN = N_CTX + N_DIRECT
O_EXT_IN = O_DENSE_IN + 2 * N_DENSE
N_IN = O_EXT_IN + N_EXT + 1  # + bias
V = 1024
G = 32  # a token's high nibble selects one of 32 groups of 32 tokens
# count tables (int32, row-major) and their per-group sums (so a nibble-0 prediction reads 32
# numbers per row instead of 1024): T[a, b] counts how often token a became b or b became a at
# one position from one frame to the next (symmetric); P[pos, b] counts tokens per position
D_T = 0
D_GT = D_T + V * V
D_P = D_GT + V * G
D_GP = D_P + TOKENS_PER_FRAME * V
DENSE_SIZE = D_GP + TOKENS_PER_FRAME * G  # what a starting state ships
# T's nonzero partners of each token (``DEG[a]`` of them at ``ADJ[a, :]``, in the order they
# appeared): the T @ T row walks these instead of scanning 1024 entries (11% faster, same bits:
# the rows it sums are the same, and integer sums do not depend on their order). Rebuilt from T
# when a state is loaded.
D_ADJ = DENSE_SIZE
D_DEG = D_ADJ + V * V
DENSE_ALL = D_DEG + V
TT_ROWS = 64  # at most this many T rows make up the T @ T vector
MAX_ROWS = 8 + V  # rows summed into the count vectors of one token
# counters per context table: 2M x 2 bytes, zero-initialised so untouched pages cost nothing
TABLE_BITS = 21
N_MIX = 4  # first-layer mixers
# weight sets per first-layer mixer: node, position, match x change, dense-count confidence
MIX_SETS = (64, 256, 480, 2 * 5 * 8 * 8)
N_MIX2 = 64  # second-layer weight sets (node)
APM_CTX = 2 * 3 * 16 * 5  # nibble x match state x change pattern x depth
N_FIN = 4  # final mixer inputs: context model, network, network APM, bias
FIN_SETS = 10 * 3 * 8 * 4  # final mixer weight sets: depth x match state x network and model confidence
NN_APM_CTX = 10 * 3  # network APM: decision depth x match state
DIRECT_SIZE = (TOKENS_PER_FRAME * 2 * 32 * 3, 16 * 2 * 32 * 3)
P_MIN, P_MAX = 32, 65536 - 32  # 16-bit probabilities handed to the coder (at most 11 bits a decision)

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
        6,  # 5: final-mixer learning rate
        6,  # 6: network APM rate shift
    ],
    dtype=np.int64,
)

# mode flags of ``code``
ENCODE, DECODE = 0, 1
USE_CM, USE_NN = 1, 2


# mo (per-decision scratch) slots: N_MIX weight-set rows, N_MIX outputs, then single values
M_ROWS = 0
M_OUT = M_ROWS + N_MIX
(M_S2, M_PM, M_APM_LO, M_APM_W, M_ACTX, M_D0, M_D1, M_FROW, M_PCM, M_PNN, M_NAPM_LO, M_NAPM_W, M_NACTX,
 M_PNA, M_PF) = range(M_OUT + N_MIX, M_OUT + N_MIX + 15)
N_MO = M_PF + 1


def _layout() -> dict[str, tuple[int, int]]:
    # every int64 piece of model state and scratch lives in one flat array, so a call crosses
    # the Python->numba boundary with a handful of plain arrays (tuples are slow to type)
    parts = [
        ("mw", sum(MIX_SETS) * N_IN),
        ("mw2", N_MIX2 * N_MIX),
        ("apm", APM_CTX * 33),
        ("dc", sum(DIRECT_SIZE)),
        ("dn", sum(DIRECT_SIZE)),
        ("fw", FIN_SETS * N_FIN),
        ("napm", NN_APM_CTX * 33),
        ("st", N_IN),
        ("mo", N_MO),
        ("dt", N_DENSE * 64),
        ("rows", MAX_ROWS * 4),
        ("bases", N_CTX),
        ("misc", 4 + 65),
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
O_FW, O_NAPM = LAYOUT["fw"][0], LAYOUT["napm"][0]
O_BASES, O_MISC = LAYOUT["bases"][0], LAYOUT["misc"][0]
O_DT, O_ROWS = LAYOUT["dt"][0], LAYOUT["rows"][0]
# the part of ``mem`` that is learnt state (the rest is per-decision scratch)
LEARNT = (O_MW, O_ST)
MEM_SIZE = LAYOUT["total"][0]



def _apm_init(rows: int) -> np.ndarray:
    apm = np.empty((rows, 33), np.int64)
    for j in range(33):
        apm[:, j] = SQUASH[min(4095, max(0, (j - 16) * 128 + 2048))] * 16
    return apm


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
    mw[:, : O_EXT_IN] = (1 << 16) // 8  # start near a soft average of the counters
    mem[O_MW2 : O_MW2 + N_MIX2 * N_MIX] = (1 << 16) // N_MIX
    mem[O_APM : O_APM + APM_CTX * 33] = _apm_init(APM_CTX).ravel()
    mem[O_NAPM : O_NAPM + NN_APM_CTX * 33] = _apm_init(NN_APM_CTX).ravel()
    fw = mem[O_FW : O_FW + FIN_SETS * N_FIN].reshape(FIN_SETS, N_FIN)
    fw[:, 0] = 1 << 16  # start from the context model alone; the network earns its weight

    mem[O_DC : O_DC + sum(DIRECT_SIZE)] = 32768
    ctx = np.zeros(N_CTX + 1, dtype=np.uint64)
    dense = np.zeros(DENSE_ALL, dtype=np.int32)
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
        if dense[D_T + a * V + b] == 0:  # a new pair (T is symmetric: b has no a either)
            na = dense[D_DEG + a]
            dense[D_ADJ + a * V + na] = b
            dense[D_DEG + a] = na + 1
            nb = dense[D_DEG + b]
            dense[D_ADJ + b * V + nb] = a
            dense[D_DEG + b] = nb + 1
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
        # at most TT_ROWS rows, the heaviest: the cost per token stays bounded however dense T
        # becomes over a long solid chain (exact while T[p1] has at most TT_ROWS partners)
        hist = mem[O_MISC + 4 : O_MISC + 4 + 65]
        hist[:] = 0
        adj = D_ADJ + p1 * V
        deg = int(dense[D_DEG + p1])
        for q in range(deg):
            hist[min(int(dense[o + dense[adj + q]]), 64)] += 1
        nz = deg
        thr = 1  # the smallest weight with at most TT_ROWS partners at or above it
        while nz > TT_ROWS and thr < 64:
            nz -= hist[thr]
            thr += 1
        for q in range(deg):
            v = int(dense[adj + q])
            w = int(dense[o + v])
            if w >= thr:
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


@njit(cache=True, inline="always")
def _apm_read(apm: np.ndarray, row: int, s: int, mo: np.ndarray, o_lo: int, o_w: int) -> int:
    """16-bit probability interpolated between the two buckets around stretch value ``s``."""
    pos = (s + 2048) * 32
    lo = pos >> 12
    w = pos & 4095
    if lo >= 32:
        lo = 31
        w = 4096
    mo[o_lo] = lo
    mo[o_w] = w
    return (apm[row, lo] * (4096 - w) + apm[row, lo + 1] * w) >> 12


@njit(cache=True)
def _bases(nib: int, prefix: int, tab: np.ndarray, cnt: np.ndarray, mem: np.ndarray, ctx: np.ndarray) -> None:
    """Select each context's 32-counter block for this nibble (a colliding block is reset)."""
    nblocks = tab.shape[1] >> 5
    bases = mem[O_BASES : O_BASES + N_CTX]
    for k in range(N_CTX):
        h = _mix(ctx[k], np.uint64(nib * 2048 + prefix + 1))
        b = np.int64(h % np.uint64(nblocks))
        tag = np.uint8((h >> np.uint64(56)) | np.uint64(1))
        if cnt[k, b] != tag:
            cnt[k, b] = tag
            for j in range(32):
                tab[k, b * 32 + j] = 0
        bases[k] = b * 32


@njit(cache=True)
def _predict(i, nib, node, depth, m, s_nn, tab, mem, ctx):
    """The context model's 16-bit probability that the next bit at ``node`` is 1 (mixers + APM);
    ``s_nn`` is the network's stretched probability (0 without one)."""
    st = mem[O_ST : O_ST + N_IN]
    mo = mem[O_MO : O_MO + N_MO]
    mw = mem[O_MW : O_MW + sum(MIX_SETS) * N_IN].reshape(sum(MIX_SETS), N_IN)
    mw2 = mem[O_MW2 : O_MW2 + N_MIX2 * N_MIX].reshape(N_MIX2, N_MIX)
    apm = mem[O_APM : O_APM + APM_CTX * 33].reshape(APM_CTX, 33)
    bases = mem[O_BASES : O_BASES + N_CTX]
    dt = mem[O_DT : O_DT + N_DENSE * 64].reshape(N_DENSE, 64)
    chg = int(ctx[N_CTX])
    p = i % TOKENS_PER_FRAME
    for k in range(N_CTX):
        st[k] = STRETCH[(tab[k, bases[k] + node] >> 4) ^ 0x800]
    d0 = ((p * 2 + nib) * 32 + node) * 3 + m
    d1 = DIRECT_SIZE[0] + ((chg * 2 + nib) * 32 + node) * 3 + m
    st[N_CTX] = STRETCH[mem[O_DC + d0] >> 4]
    st[N_CTX + 1] = STRETCH[mem[O_DC + d1] >> 4]
    for k in range(N_DENSE):
        # Krichevsky-Trofimov estimate of the next bit from the subtree counts
        q = ((2 * dt[k, 2 * node + 1] + 1) * 4096) // (2 * dt[k, node] + 2)
        st[O_DENSE_IN + k] = STRETCH[_clamp(q, 1, 4095)]
        # a sharper estimate too (pseudo-count 1/8): the mixer weighs the two by how much data there is
        q = ((8 * dt[k, 2 * node + 1] + 1) * 4096) // (8 * dt[k, node] + 2)
        st[O_DENSE_IN + N_DENSE + k] = STRETCH[_clamp(q, 1, 4095)]
    st[O_EXT_IN] = s_nn
    st[O_EXT_IN + 1] = s_nn if m == 0 else 0  # where the previous frame's token no longer fits
    st[N_IN - 1] = 256
    mo[M_D0] = d0
    mo[M_D1] = d1
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
            dot += st[k] * mw[row, k]
        mo[M_OUT + j] = _clamp(dot >> 16, -2047, 2047)
        mo[M_ROWS + j] = row
    row2 = nib * 32 + node
    s2 = 0
    for j in range(N_MIX):
        s2 += mo[M_OUT + j] * mw2[row2, j]
    s2 = _clamp(s2 >> 16, -2047, 2047)
    mo[M_S2] = s2
    pm = SQUASH[s2 + 2048]
    mo[M_PM] = pm
    actx = ((nib * 3 + m) * 16 + chg) * 5 + depth
    mo[M_ACTX] = actx
    pa = _apm_read(apm, actx, s2, mo, M_APM_LO, M_APM_W)
    return _clamp((pm * 16 + 3 * pa) >> 2, P_MIN, P_MAX)


@njit(cache=True, inline="always")
def _adapt(v: int, n: int, y: int) -> int:
    v += (((y << 16) - v) * RATE[n]) >> 16
    return _clamp(v, 32, 65535 - 32)


@njit(cache=True)
def _update(y, nib, node, tab, mem, params):
    limit, lr1, lr2, ashift, dlimit = params[0], params[1], params[2], params[3], params[4]
    st = mem[O_ST : O_ST + N_IN]
    mo = mem[O_MO : O_MO + N_MO]
    mw = mem[O_MW : O_MW + sum(MIX_SETS) * N_IN].reshape(sum(MIX_SETS), N_IN)
    mw2 = mem[O_MW2 : O_MW2 + N_MIX2 * N_MIX].reshape(N_MIX2, N_MIX)
    apm = mem[O_APM : O_APM + APM_CTX * 33].reshape(APM_CTX, 33)
    bases = mem[O_BASES : O_BASES + N_CTX]
    for k in range(N_CTX):
        a = bases[k] + node
        v = int(tab[k, a])
        n = v & 15
        pv = _adapt((((v >> 4) ^ 0x800) << 4) | 8, n, y) >> 4
        tab[k, a] = ((pv ^ 0x800) << 4) | (n + 1 if n < limit else n)
    for j in range(N_DIRECT):
        a = mo[M_D0 + j]
        n = mem[O_DN + a]
        mem[O_DC + a] = _adapt(mem[O_DC + a], n, y)
        if n < dlimit:
            mem[O_DN + a] = n + 1
    # first-layer mixers learn from their own output, the second layer from its own
    for j in range(N_MIX):
        row = mo[M_ROWS + j]
        err = ((y << 12) - SQUASH[mo[M_OUT + j] + 2048]) * lr1
        for k in range(N_IN):
            mw[row, k] += (st[k] * err) >> 14
    row2 = nib * 32 + node
    err2 = ((y << 12) - mo[M_PM]) * lr2
    for j in range(N_MIX):
        mw2[row2, j] += (mo[M_OUT + j] * err2) >> 14
    actx = mo[M_ACTX]
    lo = mo[M_APM_LO] + (1 if mo[M_APM_W] >= 2048 else 0)
    apm[actx, lo] += ((y << 16) - apm[actx, lo]) >> ashift


@njit(cache=True)
def _nn_bit(cum: np.ndarray, level: int, path: int) -> int:
    """The network's 16-bit probability that decision ``level`` (0..9) is 1, given the bits ``path``
    so far: a ratio of subtree sums of its token frequencies (``cum``: cumulative, 1025 long)."""
    a = path << (10 - level)
    mid = (2 * path + 1) << (9 - level)
    b = (path + 1) << (10 - level)
    tot = cum[b] - cum[a]
    one = cum[b] - cum[mid]
    return _clamp((one * 65536 + tot // 2) // tot, 1, 65535)


@njit(cache=True)
def _final(p_cm, p_nn16, level, m, mem, flags):
    """Combine the context model's and the network's bit probabilities (16-bit)."""
    if flags & USE_NN == 0:
        return p_cm
    if flags & USE_CM == 0:
        return _clamp(p_nn16, P_MIN, P_MAX)
    mo = mem[O_MO : O_MO + N_MO]
    fw = mem[O_FW : O_FW + FIN_SETS * N_FIN].reshape(FIN_SETS, N_FIN)
    napm = mem[O_NAPM : O_NAPM + NN_APM_CTX * 33].reshape(NN_APM_CTX, 33)
    s_nn = STRETCH[_clamp(p_nn16 >> 4, 1, 4095)]
    s_cm = STRETCH[_clamp(p_cm >> 4, 1, 4095)]
    nctx = level * 3 + m
    pna = _apm_read(napm, nctx, s_nn, mo, M_NAPM_LO, M_NAPM_W)
    s_na = STRETCH[_clamp(pna >> 4, 1, 4095)]
    conf = abs(s_nn) >> 8  # 0..7
    row = ((level * 3 + m) * 8 + conf) * 4 + min(3, abs(s_cm) >> 9)
    dot = s_cm * fw[row, 0] + s_nn * fw[row, 1] + s_na * fw[row, 2] + 256 * fw[row, 3]
    s = _clamp(dot >> 16, -2047, 2047)
    mo[M_FROW] = row
    mo[M_PCM] = s_cm
    mo[M_PNN] = s_nn
    mo[M_PNA] = s_na
    mo[M_NACTX] = nctx
    pf = SQUASH[s + 2048]
    mo[M_PF] = pf
    return _clamp(pf * 16, P_MIN, P_MAX)


@njit(cache=True)
def _final_update(y, mem, params, flags):
    if flags & USE_NN == 0 or flags & USE_CM == 0:
        return
    mo = mem[O_MO : O_MO + N_MO]
    fw = mem[O_FW : O_FW + FIN_SETS * N_FIN].reshape(FIN_SETS, N_FIN)
    napm = mem[O_NAPM : O_NAPM + NN_APM_CTX * 33].reshape(NN_APM_CTX, 33)
    row = mo[M_FROW]
    err = ((y << 12) - mo[M_PF]) * params[5]
    fw[row, 0] += (mo[M_PCM] * err) >> 14
    fw[row, 1] += (mo[M_PNN] * err) >> 14
    fw[row, 2] += (mo[M_PNA] * err) >> 14
    fw[row, 3] += (256 * err) >> 14
    nctx = mo[M_NACTX]
    lo = mo[M_NAPM_LO] + (1 if mo[M_NAPM_W] >= 2048 else 0)
    napm[nctx, lo] += ((y << 16) - napm[nctx, lo]) >> params[6]


@njit(cache=True, inline="always")
def _enc_bit(io: np.ndarray, buf: np.ndarray, y: int, p: int) -> None:
    """Binary arithmetic coder (carry-less, 32-bit range, ``p`` = 16-bit probability of a 1)."""
    x1 = io[0]
    x2 = io[1]
    r = x2 - x1
    xmid = x1 + (r >> 16) * p + (((r & 0xFFFF) * p) >> 16)
    if y:
        x2 = xmid
    else:
        x1 = xmid + 1
    while ((x1 ^ x2) & 0xFF000000) == 0:
        buf[io[3]] = x2 >> 24
        io[3] += 1
        x1 = (x1 << 8) & 0xFFFFFFFF
        x2 = ((x2 << 8) & 0xFFFFFFFF) | 255
    io[0] = x1
    io[1] = x2


@njit(cache=True, inline="always")
def _dec_bit(io: np.ndarray, buf: np.ndarray, p: int) -> int:
    x1 = io[0]
    x2 = io[1]
    r = x2 - x1
    xmid = x1 + (r >> 16) * p + (((r & 0xFFFF) * p) >> 16)
    y = 1 if io[2] <= xmid else 0
    if y:
        x2 = xmid
    else:
        x1 = xmid + 1
    while ((x1 ^ x2) & 0xFF000000) == 0:
        x1 = (x1 << 8) & 0xFFFFFFFF
        x2 = ((x2 << 8) & 0xFFFFFFFF) | 255
        nxt = int(buf[io[3]]) if io[3] < buf.shape[0] else 0  # past the end: zeros
        io[3] += 1
        io[2] = ((io[2] << 8) & 0xFFFFFFFF) | nxt
    io[0] = x1
    io[1] = x2
    return y


def new_coder(mode: int, payload: bytes | None = None, n_tokens: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(io, buf) for ``code``: io = [x1, x2, x, byte position]."""
    io = np.zeros(4, np.int64)
    io[1] = 0xFFFFFFFF
    if mode == ENCODE:
        # worst case 11 bits per decision, 10 decisions per token, + the 4 flush bytes
        return io, np.zeros(n_tokens * 14 + 8, np.uint8)
    # a writable copy: encoder and decoder then share one compiled signature
    buf = np.frombuffer(payload or b"", np.uint8).copy()
    for k in range(4):
        io[2] = (io[2] << 8) | (int(buf[k]) if k < len(buf) else 0)
    io[3] = 4
    return io, buf


def finish(io: np.ndarray, buf: np.ndarray) -> bytes:
    """Flush the encoder: the 4 bytes of x1 pin a value inside the final interval."""
    x1 = int(io[0])
    n = int(io[3])
    return buf[:n].tobytes() + x1.to_bytes(4, "big")


@njit(cache=True)
def code(x, n, mode, flags, io, buf, tab, cnt, mem, ctx, dense, params, nn_w, nn_off, nn_cfg, cum, frame_acc,
         cost):
    """Encode (``mode`` 0: ``x`` holds the tokens) or decode (1: fills ``x``) ``n`` tokens.

    ``flags``: USE_CM (context model) and/or USE_NN (network ``nn_*``, drivelab.vq.nprior).
    The model state arrays carry over from call to call (solid mode). With ``cost`` as long as
    ``x`` it receives each token's ideal code length in bits (for analysis; coding ignores it)."""
    track = cost.shape[0] == n
    for i in range(n):
        if flags & USE_CM:
            if i > 0:
                _dense_update(x, i - 1, dense)
            _contexts(x, i, ctx)
            _dense_rows(x, i, dense, mem)
        if flags & USE_NN:
            _nn_probs(x, i, nn_w, nn_off, nn_cfg, cum, frame_acc)
        t = i // TOKENS_PER_FRAME
        p1 = int(x[i - TOKENS_PER_FRAME]) if t > 0 else NONE
        tok = int(x[i]) if mode == ENCODE else 0
        path = 0  # the bits coded so far (the full-tree prefix)
        for nib in range(2):
            prefix = path  # after nibble 0 this is the high nibble
            if flags & USE_CM:
                _bases(nib, prefix, tab, cnt, mem, ctx)
                _dense_tree(mem, dense, nib, prefix)
            if p1 == NONE:
                hi_ok = False
            elif nib == 0:
                hi_ok = True
            else:
                hi_ok = (p1 >> 5) == prefix
            p1nib = (p1 >> 5) if nib == 0 else (p1 & 31)
            node = 1
            for depth in range(5):
                # match state: 0 = no previous token or already diverged, 1/2 = it predicts bit 0/1
                m = 0
                if hi_ok and (p1nib >> (5 - depth)) == node - (1 << depth):
                    m = 1 + ((p1nib >> (4 - depth)) & 1)
                level = nib * 5 + depth
                pn = _nn_bit(cum, level, path) if flags & USE_NN else 32768
                s_nn = STRETCH[_clamp(pn >> 4, 1, 4095)] if flags & USE_NN else 0
                pc = _predict(i, nib, node, depth, m, s_nn, tab, mem, ctx) if flags & USE_CM else 32768
                pr = _final(pc, pn, level, m, mem, flags)
                if mode == ENCODE:
                    y = (tok >> (9 - level)) & 1
                    _enc_bit(io, buf, y, pr)
                else:
                    y = _dec_bit(io, buf, pr)
                if track:
                    cost[i] -= np.log2((pr if y else 65536 - pr) / 65536.0)
                if flags & USE_CM:
                    _update(y, nib, node, tab, mem, params)
                _final_update(y, mem, params, flags)
                node = node * 2 + y
                path = path * 2 + y
        if mode == DECODE:
            x[i] = path
    if flags & USE_CM and n > 0:
        _dense_update(x, n - 1, dense)  # the last token too: a solid chain carries on from here


def run(x: np.ndarray, mode: int, flags: int, state: tuple[np.ndarray, ...], payload: bytes | None = None,
        net: tuple[np.ndarray, ...] | None = None, cost: np.ndarray | None = None
        ) -> tuple[np.ndarray, bytes]:
    """Code the flat int16 tokens ``x`` (decoding: a zero array to fill) with ``state``; returns
    (x, payload). ``cost`` (float64, len(x), zeros): filled with per-token code lengths."""
    n = x.shape[0]
    io, buf = new_coder(mode, payload, n)
    if net is None:
        net = empty_network()
    code(x, n, mode, flags, io, buf, *state, PARAMS, *net, np.zeros(1) if cost is None else cost)
    return x, (finish(io, buf) if mode == ENCODE else b"")


def empty_network() -> tuple[np.ndarray, ...]:
    """Placeholder network arrays when ``flags`` has no USE_NN (one compiled signature for all)."""
    return (np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(5, np.int64),
            np.zeros(V + 1, np.int64), np.zeros((1, 1), np.int64))


STATE_MAGIC = b"DLCS"


def state_bytes(state: tuple[np.ndarray, ...]) -> bytes:
    """The learnt, shippable part of a model state: mixers, APMs, direct counters and the count
    tables (not the hashed context tables: megabytes, and specific to what was coded)."""
    import json
    import lzma

    _, _, mem, _, dense = state
    meta = json.dumps({"model": VERSION, "table_bits": TABLE_BITS, "mem": MEM_SIZE,
                       "dense": DENSE_SIZE}).encode()
    body = mem[LEARNT[0] : LEARNT[1]].astype("<i8").tobytes() + dense[:DENSE_SIZE].astype("<i4").tobytes()
    return STATE_MAGIC + len(meta).to_bytes(4, "little") + meta + lzma.compress(body, preset=9)


def load_state(blob: bytes, path: object = None) -> tuple[np.ndarray, ...]:
    """A fresh state with the learnt parts of ``state_bytes`` filled in."""
    import json
    import lzma

    from drivelab.errors import DrivelabError

    try:
        if blob[:4] != STATE_MAGIC:
            raise ValueError("not a context starting state (make one with `drivelab vq train-context`)")
        n = int.from_bytes(blob[4:8], "little")
        meta = json.loads(blob[8 : 8 + n])
        if meta != {"model": VERSION, "table_bits": TABLE_BITS, "mem": MEM_SIZE, "dense": DENSE_SIZE}:
            raise ValueError(f"made for context model {meta.get('model')}, this is model {VERSION}")
        body = lzma.decompress(blob[8 + n :])
        k = (LEARNT[1] - LEARNT[0]) * 8
        if len(body) != k + DENSE_SIZE * 4:
            raise ValueError("wrong size")
    except (ValueError, lzma.LZMAError, IndexError) as e:
        raise DrivelabError(f"cannot load the starting state ({e})", path) from None
    state = new_state()
    state[2][LEARNT[0] : LEARNT[1]] = np.frombuffer(body[:k], "<i8")
    state[4][:DENSE_SIZE] = np.frombuffer(body[k:], "<i4")
    _rebuild_partners(state[4])
    return state


@njit(cache=True)
def _rebuild_partners(dense: np.ndarray) -> None:
    """The partner lists of T's nonzero entries (after loading T)."""
    for a in range(V):
        n = 0
        for b in range(V):
            if dense[D_T + a * V + b] != 0:
                dense[D_ADJ + a * V + n] = b
                n += 1
        dense[D_DEG + a] = n


def train_state(segments: list[np.ndarray], net: tuple[np.ndarray, ...] | None = None) -> tuple[bytes, float]:
    """Run the model over ``segments`` (each (frames, 128)) in order, as one solid chain, and
    return the learnt starting state and the bits/token spent while learning. With ``net`` (the
    prior network's arrays) the state is learnt mixing with it: a starting state for ``mix``."""
    state = new_state()
    bits = tokens = 0
    flags = USE_CM | (USE_NN if net is not None else 0)
    for seg in segments:
        x = np.ascontiguousarray(np.asarray(seg).reshape(-1), dtype=np.int16)
        _, payload = run(x, ENCODE, flags, state, net=net)
        bits += 8 * len(payload)
        tokens += x.size
    return state_bytes(state), bits / max(tokens, 1)


def warm_up() -> None:
    """Compile (or load from numba's cache) the coder for both directions."""
    x = np.zeros(TOKENS_PER_FRAME, np.int16)
    _, payload = run(x, ENCODE, USE_CM, new_state(12))
    run(np.zeros_like(x), DECODE, USE_CM, new_state(12), payload)
