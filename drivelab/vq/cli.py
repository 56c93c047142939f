"""`drivelab vq ...`: read, compress, train and imagine commaVQ world-model tokens.

Only typer is imported at module level; numpy/numba/torch load inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from drivelab.errors import DrivelabError

app = typer.Typer(help="commaVQ world-model tokens: read, compress, train, imagine.", no_args_is_help=True)

CODEC_HELP = ("Codec: lzma (challenge baseline), context (adaptive context mixing), gpt (GPT prior), "
              "prior (small neighbourhood predictor adapted while coding).")


def _options(codec: str, model: Path | None, context: int, embed: bool, stride: int = 0,
             device: str = "auto") -> dict:
    if codec == "gpt":
        return {"model_path": model, "context": context, "stride": stride, "embed": embed, "device": device}
    if codec == "prior":
        return {"model_path": model, "embed": embed}
    return {}


CONTEXT_HELP = "gpt codec: frames per window, context + coded (0 = the model's window; gpt2m: 20)."
STRIDE_HELP = "gpt codec: frames coded per window after the first (0 = window / 4; gpt2m: 5)."
DEVICE_HELP = "gpt codec: auto (cuda when available, else cpu), cuda or cpu."


@app.command()
def compress(
    src: Path = typer.Argument(..., help="A token segment (.npy), a folder of them, or a .tar shard."),
    out: Path = typer.Option(..., "--out", "-o", help="Output file (one segment) or folder (many)."),
    codec: str = typer.Option("context", help=CODEC_HELP),
    model: Path | None = typer.Option(None, help="gpt codec: comma's gpt2m (pytorch_model.bin, "
                                   "model.safetensors or their folder) or a `drivelab vq train` checkpoint; "
                                   "prior codec: a `drivelab vq train-prior` checkpoint."),
    context: int = typer.Option(0, help=CONTEXT_HELP),
    stride: int = typer.Option(0, help=STRIDE_HELP),
    batch: int = typer.Option(16, "--batch", help="gpt codec: segments coded together in one batch."),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    embed: bool = typer.Option(True, help="gpt / prior codec: store the (fp16) weights in the file."),
    shard: str = typer.Option("0/1", help="Only segments i, i+n, ... of a folder (i/n), for clusters."),
    workers: int = typer.Option(1, help="Processes to compress segments in parallel (not gpt: it batches)."),
) -> None:
    """Losslessly compress token segments into drivelab .dlvq files."""
    from rich.progress import track

    from drivelab.io import write_bytes
    from drivelab.vq import api
    from drivelab.vq.submission import compress_many, parse_shard
    from drivelab.vq.tokens import SUFFIX, iter_segments, read_segment

    opts = _options(codec, model, context, embed, stride, device)
    if src.is_file() and src.suffix == SUFFIX:
        seg = read_segment(src)
        data = api.compress(seg, codec, **opts)
        write_bytes(out, data)
        rate = seg.tokens.size * 1.25 / len(data)
        typer.echo(f"{src} -> {out}: {len(seg.raw)} -> {len(data)} bytes, rate {rate:.3f}")
        return
    i, n = parse_shard(shard)
    segs = [s for k, s in enumerate(iter_segments(src)) if k % n == i]
    total = 0
    if codec == "gpt":
        total = _compress_gpt(segs, out, batch, opts)
    else:
        for name, data in track(
            compress_many(segs, codec, workers, opts), total=len(segs), description="compress"
        ):
            write_bytes(out / f"{name}.dlvq", data)
            total += len(data)
    total_tok = sum(s.tokens.size for s in segs)
    typer.echo(f"{len(segs)} segments -> {out}: {total} bytes, rate {total_tok * 1.25 / max(total, 1):.3f}")


def _compress_gpt(segs: list, out: Path, batch: int, opts: dict) -> int:
    """Code ``segs`` in batches of ``batch`` (one forward pass serves a whole batch)."""
    from rich.progress import Progress

    from drivelab.io import write_bytes
    from drivelab.vq import api

    if batch < 1:
        raise DrivelabError("--batch must be at least 1")
    total = 0
    with Progress(transient=True) as bar:
        task = bar.add_task("compress (gpt)", total=sum(s.tokens.size for s in segs))
        for k in range(0, len(segs), batch):
            group = segs[k : k + batch]
            coded = api.compress_batch(group, "gpt", progress=lambda n: bar.advance(task, n), **opts)
            for seg, data in zip(group, coded, strict=True):
                write_bytes(out / f"{seg.name}.dlvq", data)
                total += len(data)
    return total


@app.command()
def decompress(
    src: Path = typer.Argument(..., help="A .dlvq file or a folder of them."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the restored .npy segments."),
    model: Path | None = typer.Option(None, help="gpt codec: the external weights the archive was coded with "
                                   "(checked by SHA-256)."),
    device: str = typer.Option("auto", help="gpt codec: auto (where it was coded), cuda or cpu."),
) -> None:
    """Restore the original .npy segments byte for byte (the checksum is verified)."""
    from rich.progress import track

    from drivelab.vq import api
    from drivelab.vq.tokens import write_segment

    if src.is_dir():
        files = sorted(src.rglob("*.dlvq"))
        if not files:
            raise DrivelabError("no .dlvq files in this folder", src)
    elif src.is_file():
        files = [src]
    else:
        raise DrivelabError("not found", src)
    # gpt files coded in one batch decode together: one forward pass serves every member
    groups: dict[str | None, list[tuple[bytes, Path]]] = {}
    singles = []
    for f in files:
        data = f.read_bytes()
        key = api.batch_key(data, f)
        if key is None:
            singles.append((data, f))
        else:
            groups.setdefault(key, []).append((data, f))
    opts = {"model": model, "device": device}
    for data, f in track(singles, description="decompress", disable=not singles):
        seg = api.decompress(data, f, **opts)
        write_segment(out / seg.name, seg)
    for items in track(list(groups.values()), description="decompress (gpt batches)", disable=not groups):
        for seg in api.decompress_batch(items, **opts):
            write_segment(out / seg.name, seg)
    typer.echo(f"restored {len(files)} segment(s) into {out}")


@app.command()
def info(src: Path = typer.Argument(..., help="A .dlvq file.")) -> None:
    """Print a compressed file's header."""
    from drivelab.vq import api

    if not src.is_file():
        raise DrivelabError("file not found", src)
    typer.echo(api.describe(src.read_bytes(), src))


@app.command()
def submission(
    tokens_dir: Path = typer.Argument(..., help="Folder (or .tar shard) of token segments to compress."),
    out: Path = typer.Option(Path("submission.zip"), "--out", "-o", help="The zip to write."),
    codec: str = typer.Option("context", help=CODEC_HELP),
    model: Path | None = typer.Option(None, help="gpt / prior codec: checkpoint from `drivelab vq train` / "
                                   "`drivelab vq train-prior`."),
    context: int = typer.Option(0, help=CONTEXT_HELP),
    workers: int = typer.Option(1, help="Processes to compress segments in parallel."),
) -> None:
    """Write the zip comma's compression-challenge evaluator expects (data + decompress.py)."""
    from rich.progress import track

    from drivelab.vq.submission import compress_many, write_submission
    from drivelab.vq.tokens import iter_segments

    segs = list(iter_segments(tokens_dir))
    items = track(
        compress_many(segs, codec, workers, _options(codec, model, context, True)),
        total=len(segs),
        description="compress",
    )
    size = write_submission(out, items)
    tokens = sum(s.tokens.size for s in segs)
    typer.echo(f"{out}: {len(segs)} segments, {size} bytes, rate {tokens * 1.25 / size:.3f}")


@app.command()
def evaluate(
    zip_path: Path = typer.Argument(..., help="submission.zip"),
    tokens_dir: Path = typer.Argument(..., help="The original token segments."),
    workers: int = typer.Option(1, help="Processes for decompress.py."),
) -> None:
    """Reproduce comma's evaluation: restore, compare exactly, print the rate."""
    from drivelab.vq.submission import evaluate as run

    r = run(zip_path, tokens_dir, workers)
    typer.echo(f"{r['segments']} segments restored exactly; {r['zip_bytes']} bytes; rate {r['rate']:.4f}")


@app.command()
def train(
    tokens_dir: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    out: Path = typer.Option(Path("vq_gpt.pt"), "--out", "-o", help="Checkpoint to write (fp16)."),
    frames: int = typer.Option(1, help="Frames per window (1: earlier frames come in as conditioning only)."),
    layers: int = typer.Option(2, help="Transformer layers."),
    heads: int = typer.Option(2, help="Attention heads."),
    width: int = typer.Option(64, help="Embedding width."),
    token_dim: int = typer.Option(16, help="Width of the one token table shared by input, conditioning and "
                                  "output (0: GPT-2's separate wte / lm_head)."),
    cond: bool = typer.Option(True, help="Condition every position on the previous frames' neighbourhood "
                              "of its target, as the prior codec does."),
    dropout: float = typer.Option(0.3, help="Dropout on embeddings, attention and residual branches."),
    weight_decay: float = typer.Option(0.5, help="AdamW weight decay (matrices only)."),
    cond_drop: float = typer.Option(0.3, help="Share of conditioning tokens hidden while training."),
    steps: int = typer.Option(2000, help="Most optimiser steps (early stopping may end sooner)."),
    batch: int = typer.Option(8, "--batch", help="Windows per step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (warm-up, cosine decay)."),
    val_frac: float = typer.Option(0.1, help="Last share of each segment's frames held out."),
    eval_every: int = typer.Option(250, help="Steps between held-out evaluations."),
    patience: int = typer.Option(4, help="Evaluations without improvement before stopping."),
    train_frames: str = typer.Option("", help="Use only frames a:b of every segment (e.g. 0:450)."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto (cuda when available, else cpu), cuda or cpu."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the training report here."),
) -> None:
    """Train the token GPT world model; the best held-out weights are kept (early stopping)."""
    from rich.console import Console

    from drivelab.io import write_json
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
    tr, va = split_holdout(segs, frames, val_frac)
    if all(len(s) < frames for s in tr):
        raise DrivelabError(f"segments are shorter than --frames {frames}", tokens_dir)
    try:
        cfg = GPTConfig(frames=frames, n_layer=layers, n_head=heads, n_embd=width, token_dim=token_dim,
                        tied=not token_dim, dropout=dropout, cond=cond)
        tc = TrainConfig(steps=steps, batch_size=batch, lr=lr, weight_decay=weight_decay, cond_drop=cond_drop,
                         val_frac=val_frac, eval_every=eval_every, patience=patience, seed=seed)
    except ValueError as e:
        raise DrivelabError(str(e)) from None

    def log(step: int, train_bits: float, val_bits: float | None) -> None:
        v = "" if val_bits is None else f", held-out {val_bits:.3f}"
        err.print(f"step {step}: train {train_bits:.3f} bits/token{v}")

    model, report = run(tr, va, cfg, tc, log=log, device=dev)
    report["parameters"] = model.num_params()
    save_checkpoint(out, model, report)
    if json_out is not None:
        write_json(json_out, {"checkpoint": str(out), "config": cfg.to_dict(), **report})
    held = report["val_bits_per_token"]
    held_s = "no held-out frames"
    if held is not None:
        held_s = f"held-out {held:.3f} bits/token at step {report['best_step']}"
    typer.echo(f"{out}: {report['parameters']} parameters, {held_s}")


def _frame_slice(spec: str) -> slice:
    try:
        a, b = (int(v) if v else None for v in spec.split(":"))
    except ValueError:
        raise DrivelabError(f"frames must look like a:b, got {spec!r}") from None
    return slice(a, b)


@app.command()
def score(
    model: Path = typer.Argument(..., help="A `drivelab vq train` checkpoint or comma's gpt2m files."),
    tokens: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    frames: str = typer.Option("", help="Score only frames a:b of every segment (they are all its context)."),
    context: int = typer.Option(0, help=CONTEXT_HELP),
    stride: int = typer.Option(0, help=STRIDE_HELP),
    device: str = typer.Option("auto", help="auto (cuda when available, else cpu), cuda or cpu."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the per-segment scores here."),
) -> None:
    """Bits per token the gpt codec would spend on TOKENS with MODEL (held-out score)."""
    from drivelab.io import write_json
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
    if json_out is not None:
        write_json(json_out, {"model": str(model), "tokens": str(tokens), "frames": frames or "all",
                              "bits_per_token": bits, "window": window, "stride": stride, "segments": rows})
    typer.echo(f"{model} on {tokens}{' frames ' + frames if frames else ''}: {bits:.4f} bits/token "
               f"over {len(rows)} segment(s), {n} tokens (window {window}, stride {stride})")


@app.command("train-prior")
def train_prior_cmd(
    tokens_dir: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    out: Path = typer.Option(Path("vq_prior.pt"), "--out", "-o", help="Checkpoint to write (fp16)."),
    steps: int = typer.Option(5000, help="Optimiser steps (batch 512 tokens)."),
    width: int = typer.Option(16, help="Token embedding width."),
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
    typer.echo(f"{out}: {n} parameters, validation {bits:.3f} bits/token")


@app.command()
def imagine(
    segment: Path = typer.Argument(..., help="Token segment to continue (.npy)."),
    model: Path = typer.Option(..., help="A `drivelab vq train` checkpoint or comma's gpt2m files."),
    frames: int = typer.Option(10, "--frames", "-k", help="Future frames to roll out."),
    out: Path = typer.Option(
        Path("imagined.npy"), "--out", "-o", help="Where to write (K, 8, 16) int16 tokens."
    ),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    seed: int = typer.Option(0, help="Random seed."),
    device: str = typer.Option("auto", help="auto (cuda when available, else cpu), cuda or cpu."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the repeat rates here."),
) -> None:
    """Roll out K future frames; report how often they repeat the previous frame's tokens, and the real rate.

    The rate is the share of positions whose token equals the one at the same position in the
    previous frame; the real segment's rate is printed beside it."""
    from drivelab.io import write_bytes, write_json
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
    if json_out is not None:
        write_json(json_out, {"frames": frames, "temperature": temperature, "seed": seed,
                              "repeat_rate_imagined": gen, "repeat_rate_real": real,
                              "points_apart": 100 * abs(gen - real)})
    typer.echo(f"{out}: {frames} imagined frames; they repeat the previous frame's token at "
               f"{100 * gen:.1f}% of positions, the real segment at {100 * real:.1f}% "
               f"({100 * abs(gen - real):.1f} points apart)")
