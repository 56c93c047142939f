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


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(rank: int, port: int, args: list[str], cwd: Path) -> subprocess.Popen:
    """One 'node' of a two-node torchrun launch on this machine (gloo over 127.0.0.1); its output
    goes to a file (two pipes read one after the other could fill and deadlock)."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(rank),
           "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port", str(port),
           "-m", "drivelab.cli", "train", *args, "--no-progress"]
    log = open(cwd / f"node{rank}-{port}.log", "w")  # noqa: SIM115 (closed in _finish)
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _kill_node(proc: subprocess.Popen) -> None:
    """SIGKILL a torchrun agent and its workers (torchrun starts each worker in its own session, so
    killing the agent's process group would leave the workers running)."""
    import signal

    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                              text=True).stdout.split()
    for pid in [proc.pid, *map(int, children)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _finish(procs: list[subprocess.Popen], timeout: float = 300) -> list[tuple[int, str]]:
    out = []
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_node(p)
            p.wait()
        p.log.close()
        out.append((p.returncode, Path(p.log.name).read_text()[-3000:]))
    return out


def _wait_for_step(run: Path, at_least: int, procs: list[subprocess.Popen], seconds: float = 240) -> int:
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        if (run / "last.pt").exists():
            step = int(read_checkpoint(run / "last.pt")["step"])
            if step >= at_least:
                return step
        assert all(p.poll() is None for p in procs), _finish(procs)
        time.sleep(0.2)
    raise AssertionError(f"no step {at_least} within {seconds} s: {_finish(procs)}")


def test_two_nodes_resume_after_one_dies(synth_comma10k: Path, tmp_path: Path) -> None:
    """``--nnodes 2 --node_rank 0/1`` on one machine. Node 1 is killed mid-run: node 0 stops. Both
    nodes resume from last.pt and train on; then node 0 dies too, and the run finishes on a single
    process with the same global batch (accumulate doubles)."""
    out = tmp_path / "runs"
    # Many steps and a save after each, so every kill lands mid-run.
    over = tiny_overrides(synth_comma10k, out, name="nodes", max_steps=5000, eval_every=5000, save_every=1,
                          batch_size=2, global_batch=4, log_every=1, schedule="constant")
    args = [f"{k}={v}" for k, v in over.items() if not isinstance(v, (dict, list))]
    args += ["size=[64,128]", "model_kwargs={base: 4, depth: 3}"]
    run = out / "nodes"
    port = _free_port()
    nodes = [_node(r, port, ["synth", *args], tmp_path) for r in (0, 1)]
    _wait_for_step(run, 3, nodes)
    _kill_node(nodes[1])
    assert _finish(nodes)[0][0] != 0  # node 0 cannot go on alone
    first = int(read_checkpoint(run / "last.pt")["step"])
    assert 3 <= first < 5000

    port = _free_port()
    nodes = [_node(r, port, [str(run), "--resume"], tmp_path) for r in (0, 1)]
    second = _wait_for_step(run, first + 3, nodes)
    assert read_checkpoint(run / "last.pt")["world_size"] == 2
    for n in nodes:
        _kill_node(n)
    _finish(nodes)
    second = int(read_checkpoint(run / "last.pt")["step"])

    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "drivelab.cli", "train", str(run), f"max_steps={second + 2}",
                          "--resume", "--no-progress"], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "resuming a run of 2 process(es) on 1: global_batch 4 kept (accumulate 2)" in res.stderr
    done = read_checkpoint(run / "last.pt")
    assert done["step"] == second + 2 and done["world_size"] == 1
    assert list(pd.read_csv(run / "metrics.csv")["step"])[-1] == second + 2
