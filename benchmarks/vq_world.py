"""The world model against the `prior` codec on frames it never saw, and how its rollouts move.

    python benchmarks/vq_world.py            # ~10 min of one CPU core
    python benchmarks/vq_world.py --json w.json

Real data: ``shared/data/commavq/segment_first_half.npy`` (600 frames of one drive). Everything
trains on frames 0-449 (the last 10% of them held out for early stopping, as `drivelab vq train`
and `train-prior` do) and is scored on frames 450-599, frame 450 cold:

* `vq train` defaults (rollout training on), and the same with ``--rollout-share 0``: held-out
  bits/token under the gpt codec's windows and integer frequencies (`vq score`), split into
  tokens that repeat the previous frame's token and tokens that change;
* the `prior` network (`train-prior` defaults): static (its float softmax) and as the `prior`
  codec codes (integer network, adapted while coding): the coded payload's bits/token;
* `vq imagine`: 20 frames after frames 449, 499 and 559 (3 sampling seeds after 449), the share of
  tokens repeating the previous frame's token at their position, next to the real rate of the
  frames before.

Bars (issue 14): held-out bits/token below the prior codec's; imagined repeat rate within 10
points of real data.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from drivelab.vq import cm
from drivelab.vq.codecs import prior as prior_codec
from drivelab.vq.prior import PriorConfig, bits_per_token, network_blob, train_prior
from drivelab.vq.score import score
from drivelab.vq.train import TrainConfig, imagine, repeat_rate, split_holdout, train, world_config

ROOT = Path(__file__).resolve().parents[1]
TOKENS = ROOT.parent / "shared" / "data" / "commavq" / "segment_first_half.npy"
TRAIN, TEST = slice(0, 450), slice(450, 600)


def world_rows(x: np.ndarray, share: float) -> tuple[dict, torch.nn.Module]:
    tr, va = split_holdout([x[TRAIN]], 1, 0.1)
    t0 = time.time()
    model, rep = train(tr, va, world_config(rollout=share > 0), TrainConfig(rollout_share=share))
    s = score(model, x[TEST], 1, 1)
    return {"bits": s["bits_per_token"], "repeat": s["bits_repeat"], "change": s["bits_change"],
            "held_out": rep["val_bits_per_token"], "best_step": rep["best_step"],
            "train_s": time.time() - t0}, model


def prior_rows(x: np.ndarray) -> dict:
    t0 = time.time()
    net, _ = train_prior([x[TRAIN]], PriorConfig())
    static = bits_per_token(net, x[TEST])
    seg = np.ascontiguousarray(x[TEST].reshape(-1), dtype=np.int16)
    _, payload = cm.run(seg, cm.ENCODE, prior_codec.FLAGS, cm.new_state(5),
                        net=prior_codec.network(network_blob(net)))
    return {"static": static, "codec": 8 * len(payload) / seg.size, "train_s": time.time() - t0}


def rollouts(model: torch.nn.Module, x: np.ndarray) -> list[dict]:
    rows = []
    for after, seeds in ((450, (0, 1, 2)), (500, (0,)), (560, (0,))):
        for seed in seeds:
            future = imagine(model, x[:after], 20, 1.0, seed)
            rows.append({"after": after - 1, "seed": seed, "imagined": repeat_rate(future, x[:after]),
                         "real": repeat_rate(x[:after])})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokens", type=Path, default=TOKENS)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    if not args.tokens.is_file():
        raise SystemExit(f"{args.tokens}: not found (the shared commaVQ segment)")
    torch.set_num_threads(args.threads)
    x = np.load(args.tokens).reshape(-1, 128).astype(np.int64)
    out: dict = {"prior": prior_rows(x)}
    out["world"], model = world_rows(x, TrainConfig.rollout_share)
    out["world_real_only"], plain = world_rows(x, 0.0)
    out["imagine"] = rollouts(model, x)
    out["imagine_real_only"] = rollouts(plain, x)

    pr, wm, wr = out["prior"], out["world"], out["world_real_only"]
    print("\nframes 450-599 (trained on 0-449), bits/token")
    print(f"{'model':48s} {'all':>7s} {'repeated':>9s} {'changed':>8s}")
    for name, r in (("vq train defaults (rollout share 0.5)", wm),
                    ("vq train --rollout-share 0 (real frames only)", wr)):
        print(f"{name:48s} {r['bits']:7.3f} {r['repeat']:9.3f} {r['change']:8.3f}")
    print(f"{'prior network, static':48s} {pr['static']:7.3f}")
    print(f"{'prior codec, adapted while coding (payload)':48s} {pr['codec']:7.3f}")
    best = min(wm["bits"], wr["bits"])
    print(f"bar (world model below the prior codec): {best:.3f} vs {pr['codec']:.3f} "
          + ("MET" if best < pr["codec"] else f"MISSED by {best - pr['codec']:.3f}"))
    print("\nvq imagine, 20 frames: share of tokens repeating the previous frame's token")
    print(f"{'after frame':>11s} {'seed':>4s} {'defaults':>9s} {'real only':>10s} {'real':>6s}")
    for a, b in zip(out["imagine"], out["imagine_real_only"], strict=True):
        print(f"{a['after']:11d} {a['seed']:4d} {a['imagined']:9.1%} {b['imagined']:10.1%} {a['real']:6.1%}")
    worst = max(abs(r["imagined"] - r["real"]) for r in out["imagine"])
    print(f"bar (within 10 points of real, every rollout): worst {100 * worst:.1f} points "
          + ("MET" if worst <= 0.10 else "MISSED"))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
