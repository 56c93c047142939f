"""Benchmark the vq codecs on the shared real commaVQ half segment (600 frames).

    python benchmarks/vq_compress.py [--gpt-steps 2000] [--skip-gpt] [--prior-steps 5000] [--skip-prior]

Rates use the challenge's formula: frames x 128 x 10/8 bytes / compressed bytes.
Rows: lzma (challenge recipe), zpaq level 5 (single thread, transposed int16, as a peer),
``context`` on all 600 frames and on frames 300-599, and ``gpt`` whose prior is trained only
on frames 0-299 and scored on frames 300-599 (rate with and without its weights), and ``prior``
(the small neighbourhood predictor, adapted while coding) trained and scored the same way.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from drivelab.vq import api
from drivelab.vq.tokens import Segment, npy_bytes

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "commavq" / "segment_first_half.npy"


def _seg(tokens: np.ndarray) -> Segment:
    return Segment("bench.npy", tokens, npy_bytes(tokens))


def _row(name: str, tokens: np.ndarray, codec: str, **opts) -> tuple:
    seg = _seg(tokens)
    t = time.perf_counter()
    data = api.compress(seg, codec, **opts)
    t1 = time.perf_counter()
    # the gpt codec's external weights are named again when decoding (the archive holds their hash)
    back = api.decompress(data, model=opts.get("model_path")) if codec == "gpt" else api.decompress(data)
    t2 = time.perf_counter()
    assert back.raw == seg.raw, f"{name}: round trip is not bit-exact"
    n = tokens.size
    return name, n * 1.25 / len(data), n / (t1 - t), n / (t2 - t1), len(data)


def _zpaq_row(name: str, tokens: np.ndarray) -> tuple:
    import zpaq

    raw = tokens.reshape(-1, 128).astype(np.int16).T.copy().tobytes()
    t = time.perf_counter()
    data = zpaq.compress(raw, 5, threads=1)
    t1 = time.perf_counter()
    assert zpaq.decompress(data) == raw
    t2 = time.perf_counter()
    n = tokens.size
    return name, n * 1.25 / len(data), n / (t1 - t), n / (t2 - t1), len(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpt-steps", type=int, default=2000)
    ap.add_argument("--skip-gpt", action="store_true")
    ap.add_argument("--prior-steps", type=int, default=5000)
    ap.add_argument("--skip-prior", action="store_true")
    args = ap.parse_args()
    tokens = np.load(DATA)
    second = tokens[300:]
    # warm the numba cache so compile time is not counted as coding time
    api.decompress(api.compress(_seg(tokens[:3]), "context"))
    rows = [
        _row("lzma (challenge recipe), 600 frames", tokens, "lzma"),
        _zpaq_row("zpaq -5, 1 thread, 600 frames", tokens),
        _row("context, 600 frames", tokens, "context"),
        _row("lzma, frames 300-599", second, "lzma"),
        _zpaq_row("zpaq -5, frames 300-599", second),
        _row("context, frames 300-599", second, "context"),
    ]
    if not args.skip_gpt:
        from drivelab.vq.train import TrainConfig, save_checkpoint, split_holdout, train, world_config

        flat = tokens.reshape(-1, 128).astype(np.int64)
        cfg = world_config()  # `drivelab vq train`'s defaults
        t = time.perf_counter()
        # frames 0-299 only: 0-269 train, 270-299 pick the best weights (early stopping)
        tr, va = split_holdout([flat[:300]], cfg.frames, 0.1)
        model, rep = train(tr, va, cfg, TrainConfig(steps=args.gpt_steps))
        print(
            f"gpt world model: {model.num_params()} params, trained in {time.perf_counter() - t:.0f}s "
            f"on frames 0-269, val (270-299) {rep['val_bits_per_token']:.3f} bits/token"
        )
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "world.pt"
            save_checkpoint(ckpt, model)
            for embed in (True, False):
                label = "weights in archive" if embed else "weights not counted"
                rows.append(_row(f"gpt ({label}), frames 300-599", second, "gpt", model_path=ckpt,
                                 embed=embed, device="cpu"))
    if not args.skip_prior:
        import torch

        from drivelab.vq.prior import save_prior, train_prior

        torch.set_num_threads(1)
        t = time.perf_counter()
        # frames 0-299 only: 0-269 train, 270-299 pick the best weights
        model, bits = train_prior([tokens.reshape(-1, 128)[:300].astype(np.int64)], steps=args.prior_steps)
        print(
            f"prior: {sum(p.numel() for p in model.parameters())} params, trained in "
            f"{time.perf_counter() - t:.0f}s on frames 0-269, val (270-299) {bits:.3f} bits/token"
        )
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "prior.pt"
            save_prior(ckpt, model)
            for embed in (True, False):
                label = "weights in archive" if embed else "weights not counted"
                rows.append(_row(f"prior ({label}), frames 300-599", second, "prior", model_path=ckpt,
                                 embed=embed))
    print()
    print("| codec | rate | compress tok/s | decompress tok/s | bytes |")
    print("|---|---:|---:|---:|---:|")
    for name, rate, ct, dt, size in rows:
        print(f"| {name} | {rate:.3f} | {ct:,.0f} | {dt:,.0f} | {size:,} |")


if __name__ == "__main__":
    main()
