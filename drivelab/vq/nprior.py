"""The ``prior`` network in integer arithmetic: what the ``prior`` and ``mix`` codecs decode with.

``drivelab.vq.prior`` trains the neighbourhood network in torch (float). For coding, its weights
are quantised once, by the encoder, to int16 with a power-of-two scale per tensor (``export``);
the decoder runs only integer operations on those integers (numpy to build lookup tables,
numba per token), so encoder and decoder compute bit-identical frequencies on any CPU and the
decoder needs neither torch nor the encoder's torch build.

Inference, with activations in fixed point (``A`` fractional bits):

* the first layer is linear in each neighbour's embedding, so it is precomputed per slot and
  token: ``tab[s, tok] = W1_s @ (E[tok] + slot_s)``, plus ``pos[p] = W1_pos @ P[p] + b1``; the
  ten past-frame slots are summed once per frame and position, the four current-frame slots per
  token;
* ReLU, ``W2``, ReLU, ``W3`` (integer matrix products, rounding right shifts);
* logits ``E[v] . out + bias[v]`` plus the copy bonuses of the previous-frame, two-back, left and
  up tokens;
* the softmax is integer too: ``f[v] = EXP[(max - logit[v]) / 2^(A-8)] + FLOOR`` with ``EXP[k] =
  2^30 exp(-k/256)`` built by an exact integer recurrence (no libm), so every token keeps a
  nonzero frequency.

The codecs turn ``f`` into one probability per binary decision (ratios of subtree sums, in
``drivelab.vq.cm``).
"""

from __future__ import annotations

import json
import lzma
from typing import Any

import numpy as np
from numba import njit

from drivelab.errors import DrivelabError

MAGIC = b"DLNP"
VERSION = 1
PAD = 1024
SLOTS = 14
N_PAST = 10  # slots 0-8: previous frame's 3x3 (row-major around the token), 9: two frames back
PREV_SLOT, BACK2_SLOT, LEFT_SLOT, UP_SLOT = 4, 9, 10, 11  # the slots with copy bonuses
A = 12  # fractional bits of activations and logits
FLOOR = 64  # added to every token's frequency (the most likely one has 2^30)
EXP_LEN = 256 * 24  # exp(-24) * 2^30 < 1: beyond that only the floor remains
_EXP_STEP = 1095225038176  # round(2^40 * exp(-1/256)), exact to the last digit


def _exp_table() -> np.ndarray:
    e, out = 1 << 40, []
    for _ in range(EXP_LEN):
        out.append(e >> 10)
        e = (e * _EXP_STEP + (1 << 39)) >> 40
    return np.array(out, dtype=np.int64)


EXP = _exp_table()
# cfg fields
C_D, C_H, C_S2, C_S3, C_SE = 0, 1, 2, 3, 4
# offsets into the flat weight array
O_TAB, O_POS, O_W2, O_B2, O_W3, O_B3, O_E, O_BIAS, O_COPY = range(9)


def _quantise(w: np.ndarray, bits: int = 15) -> tuple[np.ndarray, int]:
    """int16 values and shift s with w ~ q / 2^s (the largest |q| just below 2^(bits-1)... 2^bits)."""
    m = float(np.max(np.abs(w))) if w.size else 0.0
    s = 14 if m == 0 else int(np.floor(np.log2((2 ** (bits - 1) - 1) / m)))
    s = max(-8, min(s, 24))
    q = np.round(np.asarray(w, np.float64) * 2.0**s).astype(np.int64)
    return np.clip(q, -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1).astype(np.int16), s


def export(sd: dict[str, np.ndarray], cfg: dict[str, Any]) -> bytes:
    """Float weights of ``drivelab.vq.prior.NeighbourPrior`` -> the integer blob codecs ship."""
    arrays: dict[str, np.ndarray] = {}
    shifts: dict[str, int] = {}
    es = np.concatenate([sd["tokens.weight"].ravel(), sd["slot"].ravel()])
    _, s_e = _quantise(es)  # embedding and slot offsets share a scale (they are added)
    for key, s in (("tokens.weight", s_e), ("slot", s_e)):
        arrays[key] = np.clip(np.round(sd[key].astype(np.float64) * 2.0**s), -32767, 32767).astype(np.int16)
        shifts[key] = s
    for key in ("pos.weight", "mlp.0.weight", "mlp.3.weight", "mlp.5.weight"):
        arrays[key], shifts[key] = _quantise(sd[key])
    for key in ("mlp.0.bias", "mlp.3.bias", "mlp.5.bias", "bias", "copy"):
        # biases are added to activations: stored in the activations' own fixed point (int32 range)
        arrays[key] = np.round(sd[key].astype(np.float64) * 2.0**A).astype(np.int32)
    meta = {"version": VERSION, "config": cfg, "shifts": shifts,
            "arrays": {k: [v.dtype.str, list(v.shape)] for k, v in arrays.items()}}
    head = json.dumps(meta, sort_keys=True).encode()
    body = b"".join(arrays[k].tobytes() for k in sorted(arrays))
    return MAGIC + len(head).to_bytes(4, "little") + head + lzma.compress(body, preset=9)


def _read(blob: bytes, path: Any = None) -> tuple[dict, dict[str, np.ndarray]]:
    try:
        if blob[:4] != MAGIC:
            raise ValueError("not an exported prior network")
        n = int.from_bytes(blob[4:8], "little")
        meta = json.loads(blob[8 : 8 + n])
        if meta.get("version") != VERSION:
            raise ValueError(f"network format {meta.get('version')}, this drivelab reads {VERSION}")
        body = lzma.decompress(blob[8 + n :])
        arrays, off = {}, 0
        for k in sorted(meta["arrays"]):
            dtype, shape = meta["arrays"][k]
            size = int(np.prod(shape)) * np.dtype(dtype).itemsize
            arrays[k] = np.frombuffer(body[off : off + size], dtype).reshape(shape).astype(np.int64)
            off += size
        if off != len(body):
            raise ValueError("wrong size")
    except (ValueError, KeyError, TypeError, lzma.LZMAError) as e:
        raise DrivelabError(f"cannot load the prior network ({e})", path) from None
    return meta, arrays


def _rshift(v: np.ndarray, s: int) -> np.ndarray:
    """Rounding arithmetic right shift (exact integers; left shift when s < 0)."""
    if s <= 0:
        return v << -s
    return (v + (1 << (s - 1))) >> s


def load(blob: bytes, path: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer blob -> (w, off, cfg) for ``probs``: flat int64 tables, their offsets, the sizes."""
    meta, a = _read(blob, path)
    sh = meta["shifts"]
    d = a["tokens.weight"].shape[1]
    h = a["mlp.0.weight"].shape[0]
    se, s1 = sh["tokens.weight"], sh["mlp.0.weight"]
    w1 = a["mlp.0.weight"]
    emb = a["tokens.weight"]  # (1025, d) at 2^se
    tab = np.empty((SLOTS, PAD + 1, h), np.int64)
    for s in range(SLOTS):
        e = emb + a["slot"][s]  # exact: one scale
        tab[s] = _rshift(e @ w1[:, s * d : (s + 1) * d].T, se + s1 - A)
    pos = _rshift(a["pos.weight"] @ w1[:, SLOTS * d :].T, sh["pos.weight"] + s1 - A) + a["mlp.0.bias"]
    parts = [tab.ravel(), pos.ravel(), a["mlp.3.weight"].ravel(), a["mlp.3.bias"].ravel(),
             a["mlp.5.weight"].ravel(), a["mlp.5.bias"].ravel(), emb[:PAD].ravel(), a["bias"].ravel(),
             a["copy"].ravel()]
    off = np.cumsum([0] + [p.size for p in parts])[:-1].astype(np.int64)
    cfg = np.array([d, h, sh["mlp.3.weight"], sh["mlp.5.weight"], se], np.int64)
    return np.concatenate(parts).astype(np.int64), off, cfg


def new_scratch(cfg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cum, frame accumulator) arrays ``probs`` fills."""
    return np.zeros(PAD + 1, np.int64), np.zeros((128, int(cfg[C_H]) * 3 + int(cfg[C_D])), np.int64)


@njit(cache=True, inline="always")
def _tok(x: np.ndarray, t: int, r: int, c: int) -> int:
    if t < 0 or r < 0 or r >= 8 or c < 0 or c >= 16:
        return PAD
    return int(x[t * 128 + r * 16 + c])


@njit(cache=True)
def probs(x: np.ndarray, i: int, w: np.ndarray, off: np.ndarray, cfg: np.ndarray, cum: np.ndarray,
          acc: np.ndarray) -> None:
    """Cumulative integer frequencies (``cum``, 1025 long) of token ``i`` of the flat tokens ``x``
    (only tokens before ``i`` are read). ``acc`` holds per-frame partial sums between calls."""
    d = cfg[C_D]
    h = cfg[C_H]
    s2 = cfg[C_S2]
    s3 = cfg[C_S3]
    se = cfg[C_SE]
    t = i // 128
    j = i % 128
    r = j // 16
    c = j % 16
    nslot = (PAD + 1) * h
    if j == 0:
        # the ten past-frame slots and the position do not depend on the frame being coded
        for jj in range(128):
            rr = jj // 16
            cc = jj % 16
            for k in range(h):
                acc[jj, k] = w[off[O_POS] + jj * h + k]
            for s in range(N_PAST):
                if s < 9:
                    tok = _tok(x, t - 1, rr + s // 3 - 1, cc + s % 3 - 1)
                else:
                    tok = _tok(x, t - 2, rr, cc)
                base = off[O_TAB] + s * nslot + tok * h
                for k in range(h):
                    acc[jj, k] += w[base + k]
    h1 = acc[j, h : 2 * h]
    h2 = acc[j, 2 * h : 3 * h]
    o = acc[j, 3 * h : 3 * h + d]
    cur = (_tok(x, t, r, c - 1), _tok(x, t, r - 1, c), _tok(x, t, r - 1, c - 1), _tok(x, t, r - 1, c + 1))
    for k in range(h):
        h1[k] = acc[j, k]
    for s in range(4):
        base = off[O_TAB] + (N_PAST + s) * nslot + cur[s] * h
        for k in range(h):
            h1[k] += w[base + k]
    for k in range(h):
        if h1[k] < 0:
            h1[k] = 0
    r2 = (1 << (s2 - 1)) if s2 > 0 else 0
    for k in range(h):
        v = 0
        row = off[O_W2] + k * h
        for q in range(h):
            v += w[row + q] * h1[q]
        v = ((v + r2) >> s2) + w[off[O_B2] + k]
        h2[k] = v if v > 0 else 0
    r3 = (1 << (s3 - 1)) if s3 > 0 else 0
    for k in range(d):
        v = 0
        row = off[O_W3] + k * h
        for q in range(h):
            v += w[row + q] * h2[q]
        o[k] = ((v + r3) >> s3) + w[off[O_B3] + k]
    re = (1 << (se - 1)) if se > 0 else 0
    # logits into cum[1:] first (cum[0] = 0), then frequencies, then the running sum
    mx = -(1 << 62)
    for v in range(PAD):
        acc_v = 0
        row = off[O_E] + v * d
        for k in range(d):
            acc_v += w[row + k] * o[k]
        cum[v + 1] = ((acc_v + re) >> se) + w[off[O_BIAS] + v]
    prev = _tok(x, t - 1, r, c)
    back2 = _tok(x, t - 2, r, c)
    for k in range(4):
        tok = prev if k == 0 else (back2 if k == 1 else cur[k - 2])
        if tok < PAD:
            cum[tok + 1] += w[off[O_COPY] + k]
    for v in range(PAD):
        if cum[v + 1] > mx:
            mx = cum[v + 1]
    cum[0] = 0
    for v in range(PAD):
        dlt = (mx - cum[v + 1]) >> (A - 8)
        f = (EXP[dlt] if dlt < EXP_LEN else 0) + FLOOR
        cum[v + 1] = cum[v] + f
