"""`drivelab vq ...`: read, compress, train and imagine commaVQ world-model tokens.

Only typer is imported at module level; numpy/numba/torch load inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from drivelab import cliutil as cu
from drivelab.errors import DrivelabError

CODEC_HELP = ("Codec: lzma (challenge baseline), context (adaptive context mixing), prior (trained "
              "neighbourhood network, integer arithmetic), mix (prior network + context model mixed while "
              "coding), gpt (GPT prior).")
MODEL_HELP = ("prior / mix: network checkpoint from `drivelab vq train-prior`; gpt: checkpoint from "
              "`drivelab vq train`.")
START_HELP = "context / mix: trained starting state from `drivelab vq train-context` (shipped once)."
SOURCES_HELP = "Token segments: .npy files, folders of them, tar shards (the dataset's data-XXXX.tar.gz)."


CONTEXT_HELP = "gpt codec: frames per window, context + coded (0 = the model's window; gpt2m: 20)."
STRIDE_HELP = "gpt codec: frames coded per window after the first (0 = window / 4; gpt2m: 5)."
GPT_MODEL_HELP = ("gpt codec: comma's gpt2m (pytorch_model.bin, model.safetensors or their folder) or a "
                  "`drivelab vq train` checkpoint. ")


def _options(codec: str, model: Path | None, context: int, embed: bool, start: Path | None = None,
             stride: int = 0, device: str = "auto", batch: int = 16) -> dict:
    if start is not None and codec not in ("context", "mix"):
        raise DrivelabError(f"--start applies to the context and mix codecs, not {codec}")
    if codec == "gpt":
        if batch < 1:
            raise DrivelabError("--batch must be at least 1")
        return {"model_path": model, "context": context, "stride": stride, "embed": embed, "device": device,
                "batch": batch}
    if model is not None and codec not in ("prior", "mix"):
        raise DrivelabError(f"--model applies to the prior, mix and gpt codecs, not {codec}")
    if codec in ("prior", "mix"):
        return {"model": model, **({"start": start} if codec == "mix" else {})}
    if codec == "context":
        return {"start": start}
    return {}


def _progress(total: int, description: str, show: bool = True):
    """A rich progress bar on stderr; returns (context manager, advance callback)."""
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True, disable=not show)
    task = bar.add_task(description, total=total)
    return bar, lambda n: bar.advance(task, n)


def compress(
    src: list[Path] = typer.Argument(..., help=SOURCES_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="A .dlvq file (one .npy segment) or archive folder."),
    codec: str = typer.Option("context", help=CODEC_HELP),
    model: Path | None = typer.Option(None, help=GPT_MODEL_HELP + MODEL_HELP),
    start: Path | None = typer.Option(None, help=START_HELP),
    context: int = typer.Option(0, help=CONTEXT_HELP),
    stride: int = typer.Option(0, help=STRIDE_HELP),
    batch: int = cu.batch_option(16, "gpt codec: segments coded together in one batch."),
    device: str = cu.device_option("gpt codec: auto (cuda when available, else cpu), cuda or cpu."),
    embed: bool = typer.Option(True, help="Store shared state (weights, starting state) in the output; "
                               "--no-embed leaves it out (decompress then needs --model FILE)."),
    solid: bool = typer.Option(False, help="Carry the model across segments (one chain per worker)."),
    shard: str | None = cu.shard_option(),
    workers: int = cu.workers_option(1, "Processes (solid: chains) coding segments in parallel."),
    json_out: Path | None = cu.json_option("Write sizes and rates here as JSON ('-' for stdout)."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    progress: bool = cu.progress_option(),
) -> None:
    """Losslessly compress token segments into a .dlvq file or an archive folder."""
    from drivelab.io import write_bytes
    from drivelab.vq import api
    from drivelab.vq.archive import compress_to_folder, prepare_options
    from drivelab.vq.tokens import SUFFIX, read_all

    opts = _options(codec, model, context, embed, start, stride, device, batch)
    if len(src) == 1 and src[0].is_file() and src[0].suffix == SUFFIX and out.suffix == ".dlvq":
        seg = read_all(src)[0]
        single = {k: v for k, v in opts.items() if k != "batch"}
        data = api.compress(seg, codec, inline=embed, **prepare_options(codec, single))
        write_bytes(out, data)
        rate = seg.tokens.size * 1.25 / len(data)
        cu.write_json_output(json_out, {"segments": 1, "bytes": len(data), "tokens": int(seg.tokens.size),
                               "rate": rate})
        cu.result(f"{src[0]} -> {out}: {len(seg.raw)} -> {len(data)} bytes, rate {rate:.3f}")
        return
    from drivelab.cluster import take_shard

    segs = take_shard(read_all(src), shard)
    if not segs:
        raise DrivelabError(f"no segments in shard {shard}")
    bar, advance = _progress(len(segs), "compress", progress)
    with bar:
        w = compress_to_folder(segs, out, codec, workers, solid, embed, opts, advance,
                               ray=cu.ray_options(ray, concurrency))
    rate = w.tokens * 1.25 / max(w.bytes, 1)
    cu.write_json_output(json_out, {"segments": w.segments, "bytes": w.bytes, "tokens": w.tokens,
                                    "rate": rate, "sizes": w.sizes})
    cu.result(f"{w.segments} segments -> {out}: {w.bytes} bytes, rate {rate:.3f}")


def decompress(
    src: list[Path] = typer.Argument(..., help="Archive folders and/or .dlvq files."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the restored .npy segments."),
    model: list[Path] = typer.Option([], help="Shared state left out with --no-embed (weights, starting "
                                     "state; gpt: the weights file the archive names); checked by SHA-256. "
                                     "Repeatable."),
    device: str = cu.device_option("gpt codec: auto (where it was coded), cuda or cpu."),
    workers: int = cu.workers_option(1, "Processes (independent segments or solid chains in parallel)."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
) -> None:
    """Restore the original .npy segments byte for byte (checksums verified; nothing written on failure)."""
    from drivelab.vq.archive import decompress_many

    names = decompress_many(src, out, workers, model, device=device, ray=cu.ray_options(ray, concurrency))
    cu.result(f"restored {len(names)} segment(s) into {out}")


def info(src: Path = typer.Argument(..., help="A .dlvq file.")) -> None:
    """Print a compressed file's header."""
    from drivelab.vq import api

    if not src.is_file():
        raise DrivelabError("file not found", src)
    cu.result(api.describe(src.read_bytes(), src))


def submission(
    src: list[Path] = typer.Argument(..., help=SOURCES_HELP),
    out: Path = typer.Option(Path("submission.zip"), "--out", "-o", help="The zip to write."),
    codec: str = typer.Option("context", help=CODEC_HELP),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    start: Path | None = typer.Option(None, help=START_HELP),
    context: int = typer.Option(0, help=CONTEXT_HELP),
    solid: bool = typer.Option(False, help="Carry the model across segments (one chain per worker)."),
    workers: int = cu.workers_option(1, "Processes (solid: chains) coding segments in parallel."),
    json_out: Path | None = cu.json_option("Write sizes and the rate here as JSON ('-' for stdout)."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    progress: bool = cu.progress_option(),
) -> None:
    """Write the zip comma's compression-challenge evaluator expects (archive + decompress.py + decoder)."""
    from drivelab.vq.submission import write_submission
    from drivelab.vq.tokens import read_all

    segs = read_all(src)
    bar, advance = _progress(len(segs), "compress", progress)
    with bar:
        w = write_submission(out, segs, codec, workers, solid, _options(codec, model, context, True, start),
                             advance, ray=cu.ray_options(ray, concurrency))
    rate = w.tokens * 1.25 / w.bytes
    cu.write_json_output(json_out, {"segments": w.segments, "zip_bytes": w.bytes, "tokens": w.tokens,
                                    "rate": rate})
    cu.result(f"{out}: {w.segments} segments, {w.bytes} bytes, rate {rate:.3f}")


def evaluate(
    zip_path: Path = typer.Argument(..., help="submission.zip"),
    src: list[Path] = typer.Argument(..., help="The original segments: .npy files, folders, tar shards."),
    workers: int = cu.workers_option(1, "WORKERS for decompress.py."),
    json_out: Path | None = cu.json_option("Write the result here as JSON ('-' for stdout)."),
    ray: str | None = cu.ray_option(),
    concurrency: int | None = cu.concurrency_option(),
    work_dir: Path | None = typer.Option(None, help="Where to unzip and build the fresh venv (with --ray "
                                         "across machines: a folder every node sees)."),
) -> None:
    """comma's evaluate.sh in a fresh venv: unzip, OUTPUT_DIR=... python decompress.py, compare, rate.

    With --ray, decompress.py runs as one Ray task per shard (SHARD=i/n, as the script reads it)."""
    import sys

    from drivelab.vq.submission import evaluate as run

    r = run(zip_path, src, workers, log=lambda msg: print(msg, file=sys.stderr),
            ray=cu.ray_options(ray, concurrency), work_dir=work_dir)
    cu.write_json_output(json_out, r)
    cu.result(f"{r['segments']} segments restored exactly in a fresh venv; {r['zip_bytes']} bytes; "
               f"rate {r['rate']:.4f}")


def train_context_cmd(
    src: list[Path] = typer.Argument(..., help=SOURCES_HELP),
    out: Path = typer.Option(Path("context_start.dlcs"), "--out", "-o", help="Starting state to write."),
    train_frames: str = typer.Option("", help="Use only frames a:b of every segment (e.g. 0:300)."),
    model: Path | None = typer.Option(None, help="A `train-prior` network: learn a starting state for "
                                      "the mix codec (mixing with it) instead of context."),
) -> None:
    """Learn the context model's starting state on token segments (mixers, APMs, count tables)."""
    from drivelab.io import write_bytes
    from drivelab.vq.cm import train_state
    from drivelab.vq.tokens import read_all

    net = None
    if model is not None:
        from drivelab.vq.codecs.prior import network, network_blob

        net = network(network_blob(model))

    segs = [s.flat for s in read_all(src)]
    if train_frames:
        a, b = (int(v) if v else None for v in train_frames.split(":"))
        segs = [s[a:b] for s in segs if len(s[a:b])]
    if not segs:
        raise DrivelabError("no frames to learn from")
    blob, bits = train_state(segs, net)
    write_bytes(out, blob)
    cu.result(f"{out}: {len(blob)} bytes, learnt on {sum(len(s) for s in segs)} frames "
               f"({bits:.3f} bits/token while learning)")


def train(
    tokens_dir: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    out: Path = typer.Option(Path("vq_gpt.pt"), "--out", "-o", help="Checkpoint to write (fp16)."),
    frames: int = typer.Option(1, help="Frames per window (1: earlier frames come in as conditioning only)."),
    layers: int = typer.Option(2, help="Transformer layers."),
    heads: int = typer.Option(2, help="Attention heads."),
    width: int = typer.Option(64, "--embed-width", help="Embedding width."),
    token_dim: int = typer.Option(16, help="Width of the one token table shared by input, conditioning and "
                                  "output (0: GPT-2's separate wte / lm_head)."),
    cond: bool = typer.Option(True, help="Condition every position on the previous frames' neighbourhood "
                              "of its target, as the prior codec does."),
    dropout: float = typer.Option(0.3, help="Dropout on embeddings, attention and residual branches."),
    weight_decay: float = typer.Option(0.5, help="AdamW weight decay (matrices only)."),
    cond_drop: float = typer.Option(0.3, help="Share of conditioning tokens hidden while training."),
    rollout_share: float = typer.Option(
        0.5, help="Share of training windows that see the model's own sample of the previous frame, "
        "flagged, so `vq imagine` rollouts keep moving (0: real frames only)."),
    steps: int = typer.Option(2000, help="Most optimiser steps (early stopping may end sooner)."),
    batch: int = cu.batch_option(8, "Windows per step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (warm-up, cosine decay)."),
    val_frac: float = typer.Option(0.1, help="Last share of each segment's frames held out."),
    eval_every: int = typer.Option(250, help="Steps between held-out evaluations."),
    patience: int = typer.Option(4, help="Evaluations without improvement before stopping."),
    train_frames: str = typer.Option("", help="Use only frames a:b of every segment (e.g. 0:450)."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = cu.device_option("auto (cuda when available, else cpu), cuda or cpu."),
    json_out: Path | None = cu.json_option("Write the training report here ('-' for stdout)."),
) -> None:
    """Train the token GPT world model; the best held-out weights are kept (early stopping)."""
    from rich.console import Console

    from drivelab.vq.codecs.gpt import resolve_device
    from drivelab.vq.gpt import GPTConfig
    from drivelab.vq.tokens import iter_segments
    from drivelab.vq.train import TrainConfig, save_checkpoint, split_holdout
    from drivelab.vq.train import train as run

    err = Console(stderr=True)
    dev = resolve_device(device)
    segs = [s.flat.astype("int64") for s in iter_segments(tokens_dir)]
    segs = [s[_frame_slice(train_frames)] for s in segs] if train_frames else segs
    if not 0 <= val_frac < 1:
        raise DrivelabError("--val-frac must be in [0, 1)")
    if not 0 <= rollout_share <= 1:
        raise DrivelabError("--rollout-share must be in [0, 1]")
    tr, va = split_holdout(segs, frames, val_frac)
    if all(len(s) < frames for s in tr):
        raise DrivelabError(f"segments are shorter than --frames {frames}", tokens_dir)
    try:
        cfg = GPTConfig(frames=frames, n_layer=layers, n_head=heads, n_embd=width, token_dim=token_dim,
                        tied=not token_dim, dropout=dropout, cond=cond, rollout=cond)
        tc = TrainConfig(steps=steps, batch_size=batch, lr=lr, weight_decay=weight_decay, cond_drop=cond_drop,
                         rollout_share=rollout_share,
                         val_frac=val_frac, eval_every=eval_every, patience=patience, seed=seed)
    except ValueError as e:
        raise DrivelabError(str(e)) from None

    def log(step: int, train_bits: float, val_bits: float | None) -> None:
        v = "" if val_bits is None else f", held-out {val_bits:.3f}"
        err.print(f"step {step}: train {train_bits:.3f} bits/token{v}")

    model, report = run(tr, va, cfg, tc, log=log, device=dev)
    report["parameters"] = model.num_params()
    save_checkpoint(out, model, report)
    cu.write_json_output(json_out, {"checkpoint": str(out), "config": cfg.to_dict(), **report})
    held = report["val_bits_per_token"]
    held_s = "no held-out frames"
    if held is not None:
        held_s = f"held-out {held:.3f} bits/token at step {report['best_step']}"
    cu.result(f"{out}: {report['parameters']} parameters, {held_s}")


def _frame_slice(spec: str) -> slice:
    try:
        a, b = (int(v) if v else None for v in spec.split(":"))
    except ValueError:
        raise DrivelabError(f"frames must look like a:b, got {spec!r}") from None
    return slice(a, b)


def score(
    model: Path = typer.Argument(..., help="A `drivelab vq train` checkpoint or comma's gpt2m files."),
    tokens: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    frames: str = typer.Option("", help="Score only frames a:b of every segment (they are all its context)."),
    context: int = typer.Option(0, help=CONTEXT_HELP),
    stride: int = typer.Option(0, help=STRIDE_HELP),
    device: str = cu.device_option("auto (cuda when available, else cpu), cuda or cpu."),
    json_out: Path | None = cu.json_option("Write the per-segment scores here ('-' for stdout)."),
) -> None:
    """Bits per token the gpt codec would spend on TOKENS with MODEL (held-out score)."""

    from drivelab.vq.codecs.gpt import load_weights, resolve_device, window_of
    from drivelab.vq.score import score as run
    from drivelab.vq.tokens import iter_segments

    dev = resolve_device(device)
    net = load_weights(model, keep_bytes=False).model
    window, stride = window_of(net.cfg, context, stride)
    rows = []
    for seg in iter_segments(tokens):
        x = seg.flat.astype("int64")[_frame_slice(frames)] if frames else seg.flat.astype("int64")
        if not len(x):
            raise DrivelabError(f"--frames {frames} selects no frame", seg.name)
        rows.append({"segment": seg.name, **run(net, x, window, stride, dev)})
    n = sum(r["tokens"] for r in rows)
    bits = sum(r["bits_per_token"] * r["tokens"] for r in rows) / n
    cu.write_json_output(json_out, {"model": str(model), "tokens": str(tokens), "frames": frames or "all",
                                    "bits_per_token": bits, "window": window, "stride": stride,
                                    "segments": rows})
    cu.result(f"{model} on {tokens}{' frames ' + frames if frames else ''}: {bits:.4f} bits/token "
               f"over {len(rows)} segment(s), {n} tokens (window {window}, stride {stride})")


def train_prior_cmd(
    tokens_dir: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    out: Path = typer.Option(Path("vq_prior.pt"), "--out", "-o", help="Checkpoint to write (fp16)."),
    steps: int = typer.Option(5000, help="Optimiser steps (batch 512 tokens)."),
    width: int = typer.Option(16, "--embed-width", help="Token embedding width."),
    hidden: int = typer.Option(64, help="MLP width."),
    lr: float = typer.Option(2e-3, help="AdamW learning rate."),
    val_frac: float = typer.Option(0.1, help="Fraction of frames (at the end) that picks the best weights."),
    train_frames: str = typer.Option("", help="Use only frames a:b of every segment (e.g. 0:300)."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train the small neighbourhood prior of the `prior` codec; report validation bits/token."""
    import torch
    from tqdm import tqdm

    from drivelab.vq.prior import PriorConfig, save_prior, train_prior
    from drivelab.vq.tokens import iter_segments

    torch.set_num_threads(1)
    segs = [s.flat.astype("int64") for s in iter_segments(tokens_dir)]
    if train_frames:
        a, b = (int(v) if v else None for v in train_frames.split(":"))
        segs = [s[a:b] for s in segs]
    bar = tqdm(total=steps, desc="train-prior")

    def log(step: int, bits: float) -> None:
        bar.update(step - bar.n)
        bar.set_postfix(val_bits=f"{bits:.3f}")

    model, bits = train_prior(segs, PriorConfig(width=width, hidden=hidden), steps=steps, lr=lr,
                              val_frac=val_frac, seed=seed, log=log)
    bar.close()
    save_prior(out, model, {"val_bits_per_token": bits})
    n = sum(p.numel() for p in model.parameters())
    cu.result(f"{out}: {n} parameters, validation {bits:.3f} bits/token")


def imagine(
    segment: Path = typer.Argument(..., help="Token segment to continue (.npy)."),
    model: Path = typer.Option(..., help="A `drivelab vq train` checkpoint or comma's gpt2m files."),
    frames: int = typer.Option(10, "--frames", "-k", help="Future frames to roll out."),
    out: Path = typer.Option(
        Path("imagined.npy"), "--out", "-o", help="Where to write (K, 8, 16) int16 tokens."
    ),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = cu.device_option("auto (cuda when available, else cpu), cuda or cpu."),
    json_out: Path | None = cu.json_option("Write the repeat rates here ('-' for stdout)."),
) -> None:
    """Roll out K future frames; report how often they repeat the previous frame's tokens, and the real rate.

    The rate is the share of positions whose token equals the one at the same position in the
    previous frame; the real segment's rate is printed beside it."""
    from drivelab.io import write_bytes
    from drivelab.vq.codecs.gpt import load_weights, resolve_device
    from drivelab.vq.tokens import npy_bytes, read_segment
    from drivelab.vq.train import imagine as run
    from drivelab.vq.train import repeat_rate

    if frames < 1:
        raise DrivelabError("--frames must be at least 1")
    dev = resolve_device(device)
    net = load_weights(model, keep_bytes=False).model
    seg = read_segment(segment)
    future = run(net, seg.flat, frames, temperature, seed, dev)
    write_bytes(out, npy_bytes(future.reshape(-1, 8, 16)))
    gen, real = repeat_rate(future, seg.flat), repeat_rate(seg.flat)
    cu.write_json_output(json_out, {"frames": frames, "temperature": temperature, "seed": seed,
                                    "repeat_rate_imagined": gen, "repeat_rate_real": real,
                                    "points_apart": 100 * abs(gen - real)})
    cu.result(f"{out}: {frames} imagined frames; they repeat the previous frame's token at "
               f"{100 * gen:.1f}% of positions, the real segment at {100 * real:.1f}% "
               f"({100 * abs(gen - real):.1f} points apart)")


COMMANDS = {"compress": compress, "decompress": decompress, "info": info, "submission": submission,
            "evaluate": evaluate, "train": train, "score": score, "imagine": imagine,
            "train-context": train_context_cmd, "train-prior": train_prior_cmd}

app = typer.Typer(help="commaVQ world-model tokens: read, compress, train, imagine.", no_args_is_help=True)
for _name, _fn in COMMANDS.items():
    app.command(_name)(_fn)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="vq", rich_help_panel=cu.VQ)
