"""The training loop, written once for every Task (semantic, instance).

    run folder   <out>/<name>/: config.yaml, metrics.csv, tb/ (TensorBoard), last.pt, best.pt,
                 stage<k>_best.pt (multi-stage runs); only rank 0 writes
    resume       train(cfg, resume=True) continues from last.pt; the result equals an
                 uninterrupted run: the torch RNG is reseeded from (seed, stage, step, rank) at
                 every step, augmentation is seeded per (seed, epoch, index) by the sampler, and
                 the sampler skips the part of the epoch already seen
    stages       each stage (its own size/epochs/lr...) starts from the previous stage's best weights
    devices      AMP (bf16, or fp16 with a GradScaler) and channels_last on CUDA only; DDP when
                 launched by torchrun (nccl on CUDA, gloo on CPU)
    NaN guard    a non-finite loss stops the run before the step; last.pt keeps the last good state

Python API: ``train(cfg) -> run folder``.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes, write_table, write_text
from drivelab.seg.checkpoint import read_checkpoint, save_checkpoint
from drivelab.seg.config import TrainConfig, dump_config


# --------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_distributed(cfg: TrainConfig) -> Dist:
    """Single process, or one process of a torchrun launch (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    from drivelab.device import resolve_device

    device = resolve_device(cfg.device)
    if device.type == "cuda" and (world > 1 or cfg.device == "auto"):
        device = torch.device(f"cuda:{local_rank}")  # under torchrun: this process's GPU
    if device.type == "cuda":  # resolve_device has refused CUDA where there is none
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank, device)


def _broadcast(obj: Any, d: Dist) -> Any:
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _agree(flag: bool, d: Dist) -> bool:
    """True when any rank says so (ranks with their own clocks must stop at the same step)."""
    if d.world == 1:
        return flag
    t = torch.tensor([float(flag)], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


# --------------------------------------------------------------------------- helpers
def step_seed(seed: int, stage: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + stage * 100_003 + step * 101 + rank) % (2**63 - 1)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer, total: int) -> Any:
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=max(total, 2))
    warm = max(0, int(cfg.warmup_steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warm) / max(1, total - warm))
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    from drivelab.device import amp_dtype

    return amp_dtype(device) if cfg.amp else None


def run_folder(cfg: TrainConfig, resume: bool, d: Dist) -> Path:
    """<out>/<name>; a fresh run never reuses a folder that holds a run (adds -2, -3 ...)."""
    name = cfg.name or (f"{cfg.model}-{cfg.encoder}" if cfg.encoder else cfg.model)
    base = Path(cfg.out) / name
    if resume:
        if not (base / "last.pt").exists():
            raise DrivelabError("nothing to resume: no last.pt (set name= to the run to resume)", base)
        return base
    run = base
    if d.main:
        k = 2
        while (run / "last.pt").exists() or (run / "config.yaml").exists():
            run = base.with_name(f"{name}-{k}")
            k += 1
    return Path(_broadcast(str(run), d))


class Log:
    """metrics.csv (rewritten atomically at each validation) + TensorBoard scalars, rank 0 only."""

    def __init__(self, run: Path, enabled: bool, keep_until: tuple[int, int] | None) -> None:
        import pandas as pd

        self.run, self.enabled, self.rows = run, enabled, []
        self._tb: Any = None
        if not enabled:
            return
        csv = run / "metrics.csv"
        if keep_until is not None and csv.exists():
            df = pd.read_csv(csv)
            stage, step = keep_until
            keep = (df["stage"] < stage) | ((df["stage"] == stage) & (df["step"] <= step))
            self.rows = df[keep].to_dict("records")

    @property
    def tb(self) -> Any:
        """The TensorBoard writer, opened on first use (it creates its folder)."""
        if self._tb is None and self.enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.run / "tb"))
            except ImportError:  # tensorboard is optional at runtime
                self._tb = False
        return self._tb or None

    def scalars(self, values: dict, global_step: int, prefix: str) -> None:
        if self.enabled and self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, global_step)

    def row(self, values: dict) -> None:
        import pandas as pd

        if not self.enabled:
            return
        self.rows.append(values)
        write_table(self.run / "metrics.csv", pd.DataFrame(self.rows))
        if self._tb:
            self._tb.flush()

    def close(self) -> None:
        if self._tb:
            self._tb.close()


# --------------------------------------------------------------------------- training
def train_from_cli(source: str, overrides: list[str], resume: bool = False, progress: bool = True) -> Path:
    """``drivelab train SOURCE key=value...``: a preset, YAML file or run folder plus overrides.
    A run folder trains in place (so ``--resume`` finds its last.pt)."""
    from drivelab.seg.config import load_config, parse_overrides

    values = parse_overrides(overrides)
    folder = Path(source)
    if folder.is_dir() and (folder / "config.yaml").exists():
        values.setdefault("out", str(folder.resolve().parent))
        values.setdefault("name", folder.resolve().name)
    return train(load_config(source, values), resume=resume, progress=progress)


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train ``cfg`` (all its stages); returns the run folder. ``resume`` continues from last.pt."""
    from drivelab.seg.tasks import get_task

    cfg.validate()
    d = setup_distributed(cfg)
    try:
        task = get_task(cfg.task)
        stages = cfg.stage_configs()
        # Everything that can fail on user input fails here, before any training or file.
        schema = task.schema(stages[0])
        task.build_model(stages[0], schema)
        run = run_folder(cfg, resume, d)
        state: dict | None = None
        if resume:
            state = read_checkpoint(run / "last.pt", map_location="cpu")
            saved = state.get("schema", {}).get("classes", [])
            if len(saved) != schema.num_classes:
                raise DrivelabError(f"class count mismatch: last.pt has {len(saved)} classes, the dataset "
                                    f"{schema.num_classes}", run / "last.pt")
        start_stage = int(state.get("stage", 0)) if state else 0
        if state and state.get("stage_done"):
            start_stage += 1
            state = None
            if d.main and start_stage < len(stages) and not (run / f"stage{start_stage}_best.pt").exists():
                write_bytes(run / f"stage{start_stage}_best.pt", (run / "best.pt").read_bytes())
        if resume and start_stage >= len(stages) and d.main:
            print(f"note: {run} finished all its stages; nothing to resume (raise epochs/max_steps in a new "
                  "stage, or train from its best.pt with weights=)", file=sys.stderr)
        log = Log(run, d.main, (start_stage, int(state["step"])) if state else
                  ((start_stage, -1) if resume else None))
        try:
            for si in range(start_stage, len(stages)):
                init = run / f"stage{si}_best.pt" if si > 0 else None
                run_stage(task, stages[si], schema, si, len(stages), run, d, log, state, init, progress,
                          config_text=dump_config(cfg))
                state = None
        finally:
            log.close()
        return run
    finally:
        if d.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def accumulation(cfg: TrainConfig, world: int) -> int:
    """Micro-batches per optimizer step on each process: ``accumulate``, or what keeps
    ``global_batch`` images per step with ``world`` processes of ``batch_size``."""
    if cfg.global_batch is None:
        return int(cfg.accumulate)
    per_round = int(cfg.batch_size) * world
    if int(cfg.global_batch) % per_round:
        raise DrivelabError(f"global_batch={cfg.global_batch} is not a multiple of batch_size="
                            f"{cfg.batch_size} x {world} process(es)")
    return int(cfg.global_batch) // per_round


def run_stage(task: Any, cfg: TrainConfig, schema: Any, stage: int, n_stages: int, run: Path, d: Dist,
              log: Log, state: dict | None, init: Path | None, progress: bool, config_text: str = "") -> None:
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
    from tqdm import tqdm

    device = d.device
    size = (int(cfg.size[0]), int(cfg.size[1]))
    if hasattr(task, "configure"):
        task.configure(cfg)
    # Rank 0 builds caches first; the others then find them.
    if d.main:
        train_ds, val_ds = task.datasets(cfg, size)
    d.barrier()
    if not d.main:
        train_ds, val_ds = task.datasets(cfg, size)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    model = task.build_model(cfg, schema)
    if init is not None and state is None:
        model.load_state_dict(read_checkpoint(init)["model"])
    model.to(device)
    if device.type == "cuda" and cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    raw = model
    if d.world > 1:
        if device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw = model
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    base = DistributedSampler(train_ds, num_replicas=d.world, rank=d.rank, shuffle=True, seed=cfg.seed,
                              drop_last=True)
    from drivelab.seg.dataset import SeededSampler

    sampler = SeededSampler(base, cfg.seed)
    accumulate = accumulation(cfg, d.world)
    micro_per_epoch = len(base) // cfg.batch_size
    if micro_per_epoch < accumulate:
        raise DrivelabError(f"batch_size={cfg.batch_size} x accumulate={accumulate} x {d.world} "
                            f"process(es) needs more than the {len(train_ds)} training images")
    steps_per_epoch = micro_per_epoch // accumulate
    total = int(cfg.max_steps) if cfg.max_steps else cfg.epochs * steps_per_epoch
    eval_every = int(cfg.eval_every or steps_per_epoch)
    save_every = int(cfg.save_every or eval_every)

    decay = [p for n, p in raw.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in raw.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = make_scheduler(cfg, optimizer, total)
    amp_dtype = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    ema = AveragedModel(raw, multi_avg_fn=get_ema_multi_avg_fn(float(cfg.ema)), use_buffers=True) \
        if cfg.ema else None

    step, epoch, epoch_step = 0, 0, 0
    best = -math.inf if task.best_mode == "max" else math.inf
    if state is not None:
        raw.load_state_dict(state.get("train_model", state["model"]))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        step, epoch, epoch_step = int(state["step"]), int(state["epoch"]), int(state["epoch_step"])
        was = int(state.get("world_size", d.world))
        if was != d.world and d.main:
            same = cfg.global_batch is not None
            print(f"warning: resuming a run of {was} process(es) on {d.world}: "
                  + (f"global_batch {cfg.global_batch} kept (accumulate {accumulate}); the sample order "
                     "differs from the interrupted run" if same else
                     f"images per step change from {cfg.batch_size * cfg.accumulate * was} to "
                     f"{cfg.batch_size * cfg.accumulate * d.world} (set global_batch to keep them)"),
                  file=sys.stderr)
        best = float(state.get("best", best))
        set_rng_state(state["rng"])
        if epoch_step >= steps_per_epoch:
            epoch, epoch_step = epoch + 1, 0

    loader_gen = torch.Generator().manual_seed(cfg.seed)  # keeps DataLoader seeding off the global RNG
    loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.workers,
                        collate_fn=getattr(task, "collate", None),
                        pin_memory=device.type == "cuda", drop_last=True, generator=loader_gen,
                        persistent_workers=False)
    spec = task.model_spec(cfg, schema)
    cfg_dict = cfg.to_dict()
    images_per_step = cfg.batch_size * accumulate * d.world
    global_offset = stage * 10**7  # TensorBoard x axis: stages one after another

    def checkpoint(path: Path, done: bool = False, metrics: dict | None = None) -> None:
        eval_model = ema.module if ema is not None else raw
        extra = {"train_model": raw.state_dict(), "ema": ema.state_dict()} if ema is not None else {}
        save_checkpoint(path, eval_model, spec, schema, task=task.name, config=cfg_dict,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict(), step=step, epoch=epoch, epoch_step=epoch_step,
                        stage=stage, stage_done=done, best=best, rng=rng_state(), metrics=metrics or {},
                        world_size=d.world, **extra)

    def validate() -> dict:
        eval_model = ema.module if ema is not None else raw
        metrics = task.evaluate(eval_model, val_ds, cfg, device) if d.main else {}
        d.barrier()
        return metrics

    # Data, model and weights are in place: only now does the run folder appear.
    if d.main:
        write_text(run / "config.yaml", config_text)
    label = f"stage {stage + 1}/{n_stages} " if n_stages > 1 else ""
    # Redirected to a file (CI, nohup), a bar redrawn every few seconds would flood the log.
    bar = tqdm(total=total, initial=step, desc=f"{label}train {size[0]}x{size[1]}", dynamic_ncols=True,
               disable=not (progress and d.main), mininterval=0.2 if sys.stderr.isatty() else 30)
    model.train()
    seen_loss, seen_n, t0, seen_img = 0.0, 0, time.perf_counter(), 0
    last_metrics: dict = {}
    while step < total:
        sampler.set_epoch(epoch, skip=epoch_step * accumulate * cfg.batch_size)
        micro = 0
        optimizer.zero_grad(set_to_none=True)
        for batch in loader:
            if micro % accumulate == 0:
                # Dropout etc. depend only on (seed, stage, step): resumed runs match exactly.
                torch.manual_seed(step_seed(cfg.seed, stage, step, d.rank))
            micro += 1
            sync = micro % accumulate == 0
            ctx = model.no_sync() if (d.world > 1 and not sync) else contextlib.nullcontext()
            with ctx:
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    loss = task.loss(model, batch, device)
                value = loss.detach().float().clone()
                if d.world > 1:
                    dist.all_reduce(value)
                    value /= d.world
                value = float(value)
                if not math.isfinite(value):
                    bar.close()
                    kept = run / "last.pt"
                    where = (f"{kept} (step {int(read_checkpoint(kept)['step'])})" if kept.exists()
                             else "none yet")
                    raise DrivelabError(f"loss is {value} at stage {stage + 1} step {step + 1}: training "
                                        f"stopped; last good checkpoint: {where}")
                scaler.scale(loss / accumulate).backward()
            seen_loss += value
            seen_n += 1
            if not sync:
                continue
            if cfg.grad_clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            if ema is not None:
                ema.update_parameters(raw)
            step += 1
            epoch_step += 1
            seen_img += images_per_step
            bar.update(1)
            elapsed = time.perf_counter() - t0
            ips = seen_img / elapsed if elapsed > 0 else 0.0
            if step % cfg.log_every == 0 or step == total:
                bar.set_postfix(loss=f"{seen_loss / max(seen_n, 1):.4f}", img_s=f"{ips:.1f}")
                if d.main:
                    log.scalars({"loss": seen_loss / max(seen_n, 1), "lr": scheduler.get_last_lr()[0],
                                 "images_per_s": ips}, global_offset + step, "train")
            end_of_epoch = epoch_step >= steps_per_epoch
            if cfg.max_minutes and step < total and _agree(elapsed > 60 * cfg.max_minutes, d):
                total = step  # out of time: this step is the last (validate, save, stop)
                bar.total = total
            if step % eval_every == 0 or step == total:
                metrics = validate()
                last_metrics = metrics
                if d.main:
                    score = metrics.get(task.best_metric, float("nan"))
                    better = math.isfinite(score) and (score > best if task.best_mode == "max"
                                                       else score < best)
                    row = {"stage": stage, "step": step, "epoch": epoch + epoch_step / steps_per_epoch,
                           "seconds": round(elapsed, 2), "lr": scheduler.get_last_lr()[0],
                           "train_loss": seen_loss / max(seen_n, 1), "images_per_s": ips,
                           **{k: v for k, v in metrics.items() if isinstance(v, (int, float))}}
                    if better:
                        best = score
                        checkpoint(run / "best.pt", metrics=metrics)
                    log.row(row)
                    log.scalars(metrics, global_offset + step, "val")
                    bar.write(f"{label}step {step}/{total}  train loss {row['train_loss']:.4f}  "
                              + "  ".join(f"val {k} {metrics[k]:.4f}" for k in ("loss", task.best_metric)
                                          if k in metrics))
                best = _broadcast(best, d)
                seen_loss, seen_n = 0.0, 0
            if d.main and (step % save_every == 0 or step == total):
                checkpoint(run / "last.pt", done=step == total, metrics=last_metrics)
            if step >= total or end_of_epoch:
                break
        if step < total:
            epoch, epoch_step = epoch + 1, 0
    bar.close()
    if d.main and not (run / "best.pt").exists():  # no finite validation score: keep the last weights
        checkpoint(run / "best.pt", done=True, metrics=last_metrics)
    if d.main and stage + 1 < n_stages:
        write_bytes(run / f"stage{stage + 1}_best.pt", (run / "best.pt").read_bytes())
    d.barrier()

