"""The same train command under torchrun: 2 processes on the CPU (gloo), only rank 0 writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from drivelab.seg.checkpoint import read_checkpoint
from tests.seg.conftest import REPO_ROOT, tiny_overrides


def test_torchrun_two_processes_on_cpu(synth_comma10k: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    over = tiny_overrides(synth_comma10k, out, name="ddp", max_steps=3, eval_every=3)
    args = [f"{k}={v}" for k, v in over.items() if not isinstance(v, (dict, list))]
    args += ["size=[64,128]", "model_kwargs={base: 4, depth: 3}"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "drivelab.cli", "train", "synth", *args, "--no-progress"]
    res = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert [p.name for p in out.iterdir() if p.name != "cache"] == ["ddp"]  # one run folder: rank 0 only
    run = out / "ddp"
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["world_size"] == 2 and ckpt["step"] == 3
    assert (run / "best.pt").exists() and (run / "config.yaml").exists()
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics["step"]) == [3]
    # 2 processes x batch 2 per step.
    assert metrics["images_per_s"].iloc[0] > 0
