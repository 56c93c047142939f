"""Everything in drivelab that needs a GPU, in one table that fits ten minutes on one H100/H200.

    bash benchmarks/gpu.sh                  # what a lent GPU runs (writes gpu_table.md beside it)
    python benchmarks/gpu.py --smoke        # the same code paths on the CPU with tiny sizes

Each optimised row stands next to the same code with the optimisation off:

- segmentation training images/s, U-Net + EfficientNet-B4 (smp, random init, nothing downloaded)
  at 437x582 and 874x1164 (comma10k-baseline's two stages): fp32 vs AMP bf16 + channels_last, and
  with torch.compile; the training step is drivelab's own (``SemanticTask.loss``: CE + dice).
- predict frames/s at 874x1164, batch 32: ``Predictor`` fp32 vs bf16 (+ channels_last) vs compile.
- instance training and prediction images/s with the ``totes-synth`` preset's model at 512x512.
- gpt2m-shaped commaVQ coding tokens/s (``benchmarks/vq_gpu.py``), when that script is present.

Before any timing, CUDA results are checked against the CPU on one batch (fp32 logits within
1e-3 relative, bf16 argmax agreement >= 99%); a failed check is printed in the table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iters: int, budget_s: float) -> float:
    """Median seconds per call after ``warmup`` calls; stops early at ``budget_s``."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if time.perf_counter() - start > budget_s:
            break
    return statistics.median(times)


def semantic_model(num_classes: int, smoke: bool) -> torch.nn.Module:
    from drivelab.seg.models import build_model

    if smoke:
        return build_model("unet", num_classes, encoder="tu-mobilenetv3_small_050",
                           decoder_channels=[32, 16, 16, 8, 8])
    return build_model("unet", num_classes, encoder="efficientnet-b4")


# --------------------------------------------------------------------------- checks
def check_cuda_against_cpu(device: torch.device, size: tuple[int, int], smoke: bool) -> str:
    torch.manual_seed(0)
    model = semantic_model(5, smoke).eval()
    x = torch.rand(2, 3, *(-(-s // 32) * 32 for s in size))
    with torch.no_grad():
        ref = model(x)
        gpu = model.to(device)
        got = gpu(x.to(device)).float().cpu()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            low = gpu.to(memory_format=torch.channels_last)(
                x.to(device).contiguous(memory_format=torch.channels_last)).float().cpu()
    rel = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-9))
    agree = float((low.argmax(1) == ref.argmax(1)).float().mean())
    ok = rel < 1e-3 and agree >= 0.99
    return f"{'ok' if ok else 'FAILED'}: fp32 max rel diff {rel:.1e}, bf16 argmax agreement {agree:.4f}"


# --------------------------------------------------------------------------- rows
def _train_step(task, net, opt, amp: bool, batch, device: torch.device):
    """One optimizer step of drivelab's semantic loss (CE + dice), as a closure to time."""
    def step() -> None:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with ctx:
            loss = task.loss(net, batch, device)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def train_rows(device: torch.device, size: tuple[int, int], batch: int, smoke: bool, budget: float) -> list:
    from types import SimpleNamespace

    from drivelab.seg.semantic import SemanticTask

    task = SemanticTask()
    task.configure(SimpleNamespace(loss="ce+dice", dice_weight=1.0))
    h, w = (-(-s // 32) * 32 for s in size)
    images = torch.randint(0, 256, (batch, 3, h, w), dtype=torch.uint8)
    masks = torch.randint(0, 5, (batch, h, w), dtype=torch.uint8)
    rows = []
    for label, amp, channels_last, compiled in (
        ("fp32", False, False, False),
        ("bf16 + channels_last", True, True, False),
        ("bf16 + channels_last + compile", True, True, True),
    ):
        if compiled and device.type != "cuda":
            continue
        torch.manual_seed(0)
        model = semantic_model(5, smoke).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if compiled else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step = _train_step(task, net, opt, amp, (images, masks), device)
        sec = timed(step, device, warmup=3 if compiled else 2, iters=20, budget_s=budget)
        rows.append((f"train U-Net EffNet-B4 {size[0]}x{size[1]} batch {batch}", label, batch / sec, "img/s"))
        del model, net, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def predict_rows(device: torch.device, size: tuple[int, int], batch: int, smoke: bool, budget: float) -> list:
    from drivelab.schema import comma10k
    from drivelab.seg.inference import Predictor

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(batch)]
    rows = []
    for label, precision, channels_last, compiled in (
        ("fp32", "fp32", False, False),
        ("bf16 + channels_last", "bf16", True, False),
        ("bf16 + channels_last + compile", "bf16", True, True),
    ):
        if device.type != "cuda" and (precision == "bf16" or compiled):
            continue
        torch.manual_seed(0)
        pred = Predictor(semantic_model(5, smoke), device=device, schema=comma10k(), size=size,
                         precision=precision, channels_last=channels_last, compile=compiled)
        sec = timed(lambda p=pred: p.predict_batch(frames), device, warmup=2, iters=10, budget_s=budget)
        rows.append((f"predict {size[0]}x{size[1]} batch {batch}", label, batch / sec, "frames/s"))
    return rows


def instance_rows(device: torch.device, smoke: bool, budget: float) -> list:
    from drivelab.seg.config import load_config
    from drivelab.seg.tasks import get_task

    cfg = load_config("totes-synth")
    size = 128 if smoke else 512
    spec = {**cfg.model_kwargs}
    task = get_task("instance")
    rows = []
    try:
        from drivelab.schema import coco

        schema = coco([{"id": i, "name": f"c{i}"} for i in range(1, 5)])
        cfg.size = [size, size]
        model = task.build_model(cfg, schema).to(device)
    except Exception as e:  # the instance task's model API is its own; report, don't crash
        return [("instance", "not run", float("nan"), f"{type(e).__name__}: {e}")]
    del spec
    images = [torch.rand(3, size, size, device=device) for _ in range(4)]
    targets = []
    for _ in images:
        m = torch.zeros(3, size, size, dtype=torch.uint8, device=device)
        boxes = []
        for k in range(3):
            y, x = 8 + 30 * k, 10 + 20 * k
            m[k, y:y + 24, x:x + 24] = 1
            boxes.append([x, y, x + 24, y + 24])
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32, device=device),
                        "labels": torch.tensor([1, 2, 3], device=device), "masks": m})
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def train_step() -> None:
        model.train()
        losses = model(images, targets)
        sum(losses.values()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    sec = timed(train_step, device, warmup=2, iters=10, budget_s=budget)
    rows.append((f"instance train {size}x{size} batch 4", "fp32", 4 / sec, "img/s"))
    model.eval()

    @torch.no_grad()
    def infer() -> None:
        model(images)

    sec = timed(infer, device, warmup=2, iters=10, budget_s=budget)
    rows.append((f"instance predict {size}x{size} batch 4", "fp32", 4 / sec, "img/s"))
    return rows


def vq_rows(device: torch.device, smoke: bool) -> list:
    script = ROOT / "benchmarks" / "vq_gpu.py"
    if not script.exists():
        return [("gpt2m-shaped vq coding", "not run", float("nan"), "benchmarks/vq_gpu.py missing")]
    cmd = [sys.executable, str(script), "--device", device.type] + (["--smoke"] if smoke else [])
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    last = (res.stdout.strip().splitlines() or ["(no output)"])[-1]
    return [("gpt2m-shaped vq coding", "see vq_gpu.py", float("nan"), last if res.returncode == 0
             else f"failed: {res.stderr.strip().splitlines()[-1:]}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on whatever device there is")
    ap.add_argument("--budget", type=float, default=25.0, help="seconds per timed row at most")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (no GPU: smoke only)"
    if device.type != "cuda" and not args.smoke:
        print("no CUDA device: GPU rows not measured (run with --smoke to exercise the code on the CPU)")
        return
    t0 = time.perf_counter()
    small, large = ((64, 96), (96, 128)) if args.smoke else ((437, 582), (874, 1164))
    lines = [f"device: {name}; torch {torch.__version__}",
             f"CUDA vs CPU check: {check_cuda_against_cpu(device, small, args.smoke)}", "",
             "| what | setting | value | unit |", "|---|---|---|---|"]
    rows = []
    rows += train_rows(device, small, 2 if args.smoke else 16, args.smoke, args.budget)
    rows += train_rows(device, large, 2 if args.smoke else 4, args.smoke, args.budget)
    rows += predict_rows(device, large, 4 if args.smoke else 32, args.smoke, args.budget)
    rows += instance_rows(device, args.smoke, args.budget)
    rows += vq_rows(device, args.smoke)
    for what, setting, value, unit in rows:
        lines.append(f"| {what} | {setting} | {value:.1f} | {unit} |" if np.isfinite(value)
                     else f"| {what} | {setting} | - | {unit} |")
    lines.append(f"\ntotal {time.perf_counter() - t0:.0f} s")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
