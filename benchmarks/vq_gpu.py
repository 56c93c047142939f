"""Coded tokens/s of the gpt codec, and the projected time for comma's 5,000-segment set.

    python benchmarks/vq_gpu.py                        # CUDA when present: gpt2m-shaped model
    python benchmarks/vq_gpu.py --device cpu           # small model on the CPU (says so)
    python benchmarks/vq_gpu.py --device cuda --batch 128 --frames 40

The model has gpt2m's shape (24 layers, width 1024, 16 heads, MLP 4096, vocab 1025, 20 x 129
positions, untied head) with random weights: speed does not depend on what the weights say.
On the CPU the default is a small model of the same layout (the gpt2m shape codes a few
tokens/s there). Tokens are the shared real segment (random tokens if it is absent).

Each row codes ``--batch`` segments of ``--frames`` frames through the real codec path
(``codecs.gpt.encode_with`` / ``decode_with``: windows, KV cache, per-segment range coders),
checks that decoding restores every token, and times two lengths: the first window alone
(``window`` frames) and ``--frames`` frames. Their difference gives the steady cost per
frame of the later windows, from which a 1,200-frame segment's time and the 5,000-segment
projection follow: t(1200) = t(window) + (1200 - window) x steady cost per frame.
A "no KV cache" row (CPU only) times the naive loop (the whole window re-run for every token)
on a few tokens, for comparison.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from drivelab.vq.codecs import gpt as codec
from drivelab.vq.gpt import GPT, GPTConfig, frames_to_sequence

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "commavq" / "segment_first_half.npy"
SEGMENT_FRAMES, SEGMENTS = 1200, 5000


def _tokens(batch: int, frames: int) -> list[np.ndarray]:
    if DATA.exists():
        x = np.load(DATA).reshape(-1, 128).astype(np.int64)
    else:
        x = np.random.default_rng(0).integers(0, 1024, (600, 128))
    starts = np.linspace(0, len(x) - frames, batch).astype(int)
    return [x[s : s + frames] for s in starts]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time_encode(w: codec.Weights, segs: list[np.ndarray], window: int, stride: int, rt: codec.Runtime):
    _sync(rt.device)
    t = time.perf_counter()
    coded = codec.encode_with(w, segs, "random", window, stride, False, rt)
    _sync(rt.device)
    return coded, time.perf_counter() - t


def _no_cache_tok_s(model: GPT, segs: list[np.ndarray], window: int, n_tokens: int = 16) -> float:
    """The naive loop: for every token, run the whole window so far again (no KV cache)."""
    x = torch.from_numpy(np.stack(segs)[:, :window])
    seq = frames_to_sequence(x)
    start = (window - 1) * 129 + 1
    t = time.perf_counter()
    with torch.inference_mode():
        for i in range(n_tokens):
            model(seq[:, : start + i])
    return len(segs) * n_tokens / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cuda or cpu")
    ap.add_argument("--batch", type=int, default=0, help="segments per batch (default: 128 cuda, 4 cpu)")
    ap.add_argument("--frames", type=int, default=0, help="frames timed (default window + 2 x stride)")
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--stride", type=int, default=5)
    ap.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on cuda, fp32 on cpu)")
    ap.add_argument("--gpt2m", action="store_true", help="gpt2m's shape on the CPU too (very slow)")
    args = ap.parse_args()

    rt = codec.runtime(args.device, args.dtype)
    big = rt.device == "cuda" or args.gpt2m
    cfg = GPTConfig() if big else GPTConfig(n_layer=4, n_head=4, n_embd=128)
    batch = args.batch or (128 if rt.device == "cuda" else 4)
    frames = args.frames or args.window + 2 * args.stride
    torch.manual_seed(0)
    model = GPT(cfg).eval()
    w = codec.Weights(model, "random", "drivelab", None)
    segs = _tokens(batch, frames)
    shape = f"{cfg.n_layer}L x {cfg.n_embd}, {cfg.n_head} heads, {model.num_params() / 1e6:.1f}M params"
    print(f"device: {rt.device} ({rt.device_name}), {rt.dtype}, torch {rt.torch}; model {shape}")
    if rt.device == "cpu":
        print(f"CPU row{'' if big else ' with a small model'}: no GPU here, the GPU bar is not measured")

    if rt.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _, t_first = _time_encode(w, [s[: args.window] for s in segs], args.window, args.stride, rt)
    coded, t_all = _time_encode(w, segs, args.window, args.stride, rt)
    steady = (t_all - t_first) / max(frames - args.window, 1)  # seconds per frame (whole batch)
    t0 = time.perf_counter()
    members = [(p, e, len(s)) for (p, e), s in zip(coded, segs, strict=True)]
    back = codec.decode_with(model, members, rt)
    _sync(rt.device)
    t_dec = time.perf_counter() - t0
    exact = all(np.array_equal(a, b) for a, b in zip(back, segs, strict=True))
    mem = ""
    if rt.device == "cuda":
        mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"

    t_seg = t_first + (SEGMENT_FRAMES - args.window) * steady  # one batch of 1,200-frame segments
    tok_s = batch * SEGMENT_FRAMES * 128 / t_seg
    hours = SEGMENTS / batch * t_seg / 3600
    rows = [
        ("encode, first window only", batch * args.window * 128 / t_first),
        (f"encode, steady windows ({args.window}/{args.stride})", batch * 128 / steady),
        ("encode, projected 1,200-frame segment", tok_s),
        (f"decode, {frames} frames", batch * frames * 128 / t_dec),
    ]
    if rt.device == "cpu":
        rows.append(("no KV cache: whole window per token", _no_cache_tok_s(model, segs, args.window)))
    print(f"\nbatch {batch} segments x {frames} frames, window {args.window}, stride {args.stride}; "
          f"decoded exactly: {exact}{mem}")
    print(f"{'what':<45} {'tokens/s':>12}")
    for name, v in rows:
        print(f"{name:<45} {v:>12,.0f}")
    print(f"\nprojected: {SEGMENTS:,} segments x {SEGMENT_FRAMES} frames = {hours:.2f} h on this device "
          f"({tok_s:,.0f} tok/s; bar on one H100/H200: >= 100,000 tok/s, about 2 h)")
    if not exact:
        raise SystemExit("decoding did not restore the tokens")


if __name__ == "__main__":
    main()
