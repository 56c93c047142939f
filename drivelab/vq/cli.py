"""`drivelab vq ...`: read, compress, train and imagine commaVQ world-model tokens.

Only typer is imported at module level; numpy/numba/torch load inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from drivelab.errors import DrivelabError

app = typer.Typer(help="commaVQ world-model tokens: read, compress, train, imagine.", no_args_is_help=True)

CODEC_HELP = ("Codec: lzma (challenge baseline), context (adaptive context mixing), prior (trained "
              "neighbourhood network, integer arithmetic), mix (prior network + context model mixed while "
              "coding), gpt (GPT prior).")
MODEL_HELP = ("prior / mix: network checkpoint from `drivelab vq train-prior`; gpt: checkpoint from "
              "`drivelab vq train`.")
START_HELP = "context / mix: trained starting state from `drivelab vq train-context` (shipped once)."
SOURCES_HELP = "Token segments: .npy files, folders of them, tar shards (the dataset's data-XXXX.tar.gz)."


def _options(codec: str, model: Path | None, context: int, embed: bool, start: Path | None = None) -> dict:
    if start is not None and codec not in ("context", "mix"):
        raise DrivelabError(f"--start applies to the context and mix codecs, not {codec}")
    if codec == "gpt":
        return {"model_path": model, "context": context, "embed": embed}
    if model is not None and codec not in ("prior", "mix"):
        raise DrivelabError(f"--model applies to the prior, mix and gpt codecs, not {codec}")
    if codec in ("prior", "mix"):
        return {"model": model, **({"start": start} if codec == "mix" else {})}
    if codec == "context":
        return {"start": start}
    return {}


def _progress(total: int, description: str):
    """A rich progress bar on stderr; returns (context manager, advance callback)."""
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=True)
    task = bar.add_task(description, total=total)
    return bar, lambda n: bar.advance(task, n)


def _write_json(path: Path | None, obj: dict) -> None:
    if path is not None:
        from drivelab.io import write_json

        write_json(path, obj)


@app.command()
def compress(
    src: list[Path] = typer.Argument(..., help=SOURCES_HELP),
    out: Path = typer.Option(..., "--out", "-o", help="A .dlvq file (one .npy segment) or archive folder."),
    codec: str = typer.Option("context", help=CODEC_HELP),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    start: Path | None = typer.Option(None, help=START_HELP),
    context: int = typer.Option(2, help="gpt codec: frames of context per coded frame."),
    embed: bool = typer.Option(True, help="Store shared state (weights, starting state) in the output; "
                               "--no-embed leaves it out (decompress then needs --model FILE)."),
    solid: bool = typer.Option(False, help="Carry the model across segments (one chain per worker)."),
    shard: str = typer.Option("0/1", help="Only segments i, i+n, ... of the sources (i/n), for clusters."),
    workers: int = typer.Option(1, help="Processes (solid: chains) coding segments in parallel."),
    json_out: Path | None = typer.Option(None, "--json", help="Write sizes and rates here as JSON."),
) -> None:
    """Losslessly compress token segments into a .dlvq file or an archive folder."""
    from drivelab.io import write_bytes
    from drivelab.vq import api
    from drivelab.vq.archive import compress_to_folder, prepare_options
    from drivelab.vq.submission import parse_shard
    from drivelab.vq.tokens import SUFFIX, read_all

    opts = _options(codec, model, context, embed, start)
    if len(src) == 1 and src[0].is_file() and src[0].suffix == SUFFIX and out.suffix == ".dlvq":
        seg = read_all(src)[0]
        data = api.compress(seg, codec, inline=embed, **prepare_options(codec, opts))
        write_bytes(out, data)
        rate = seg.tokens.size * 1.25 / len(data)
        _write_json(json_out, {"segments": 1, "bytes": len(data), "tokens": int(seg.tokens.size),
                               "rate": rate})
        typer.echo(f"{src[0]} -> {out}: {len(seg.raw)} -> {len(data)} bytes, rate {rate:.3f}")
        return
    i, n = parse_shard(shard)
    segs = [s for k, s in enumerate(read_all(src)) if k % n == i]
    if not segs:
        raise DrivelabError(f"no segments in shard {shard}")
    bar, advance = _progress(len(segs), "compress")
    with bar:
        w = compress_to_folder(segs, out, codec, workers, solid, embed, opts, advance)
    rate = w.tokens * 1.25 / max(w.bytes, 1)
    _write_json(json_out, {"segments": w.segments, "bytes": w.bytes, "tokens": w.tokens, "rate": rate,
                           "sizes": w.sizes})
    typer.echo(f"{w.segments} segments -> {out}: {w.bytes} bytes, rate {rate:.3f}")


@app.command()
def decompress(
    src: list[Path] = typer.Argument(..., help="Archive folders and/or .dlvq files."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for the restored .npy segments."),
    model: list[Path] = typer.Option([], help="Shared state left out with --no-embed (weights, starting "
                                     "state); checked by SHA-256. Repeatable."),
    workers: int = typer.Option(1, help="Processes (independent segments or solid chains in parallel)."),
) -> None:
    """Restore the original .npy segments byte for byte (checksums verified; nothing written on failure)."""
    from drivelab.vq.archive import decompress_many

    names = decompress_many(src, out, workers, model)
    typer.echo(f"restored {len(names)} segment(s) into {out}")


@app.command()
def info(src: Path = typer.Argument(..., help="A .dlvq file.")) -> None:
    """Print a compressed file's header."""
    from drivelab.vq import api

    if not src.is_file():
        raise DrivelabError("file not found", src)
    typer.echo(api.describe(src.read_bytes(), src))


@app.command()
def submission(
    src: list[Path] = typer.Argument(..., help=SOURCES_HELP),
    out: Path = typer.Option(Path("submission.zip"), "--out", "-o", help="The zip to write."),
    codec: str = typer.Option("context", help=CODEC_HELP),
    model: Path | None = typer.Option(None, help=MODEL_HELP),
    start: Path | None = typer.Option(None, help=START_HELP),
    context: int = typer.Option(2, help="gpt codec: frames of context per coded frame."),
    solid: bool = typer.Option(False, help="Carry the model across segments (one chain per worker)."),
    workers: int = typer.Option(1, help="Processes (solid: chains) coding segments in parallel."),
    json_out: Path | None = typer.Option(None, "--json", help="Write sizes and the rate here as JSON."),
) -> None:
    """Write the zip comma's compression-challenge evaluator expects (archive + decompress.py + decoder)."""
    from drivelab.vq.submission import write_submission
    from drivelab.vq.tokens import read_all

    segs = read_all(src)
    bar, advance = _progress(len(segs), "compress")
    with bar:
        w = write_submission(out, segs, codec, workers, solid, _options(codec, model, context, True, start),
                             advance)
    rate = w.tokens * 1.25 / w.bytes
    _write_json(json_out, {"segments": w.segments, "zip_bytes": w.bytes, "tokens": w.tokens, "rate": rate})
    typer.echo(f"{out}: {w.segments} segments, {w.bytes} bytes, rate {rate:.3f}")


@app.command()
def evaluate(
    zip_path: Path = typer.Argument(..., help="submission.zip"),
    src: list[Path] = typer.Argument(..., help="The original segments: .npy files, folders, tar shards."),
    workers: int = typer.Option(1, help="WORKERS for decompress.py."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the result here as JSON."),
) -> None:
    """comma's evaluate.sh in a fresh venv: unzip, OUTPUT_DIR=... python decompress.py, compare, rate."""
    import sys

    from drivelab.vq.submission import evaluate as run

    r = run(zip_path, src, workers, log=lambda msg: print(msg, file=sys.stderr))
    _write_json(json_out, r)
    typer.echo(f"{r['segments']} segments restored exactly in a fresh venv; {r['zip_bytes']} bytes; "
               f"rate {r['rate']:.4f}")


@app.command("train-context")
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
    typer.echo(f"{out}: {len(blob)} bytes, learnt on {sum(len(s) for s in segs)} frames "
               f"({bits:.3f} bits/token while learning)")


@app.command()
def train(
    tokens_dir: Path = typer.Argument(..., help="Token segments (.npy file, folder, or .tar shard)."),
    out: Path = typer.Option(Path("vq_gpt.pt"), "--out", "-o", help="Checkpoint to write."),
    frames: int = typer.Option(3, help="Frames per training window (context + 1)."),
    layers: int = typer.Option(2, help="Transformer layers."),
    heads: int = typer.Option(2, help="Attention heads."),
    width: int = typer.Option(64, help="Embedding width."),
    steps: int = typer.Option(500, help="Optimiser steps."),
    batch_size: int = typer.Option(8, help="Windows per step."),
    lr: float = typer.Option(3e-3, help="Peak learning rate (cosine decay)."),
    val_frac: float = typer.Option(0.1, help="Fraction of frames (at the end) held out for validation."),
    train_frames: str = typer.Option(
        "", help="Use only frames a:b of every segment for training (e.g. 0:300)."
    ),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Train the token GPT (causal over each frame's 128 tokens) and report validation bits/token."""
    import torch
    from tqdm import tqdm

    from drivelab.vq.gpt import GPTConfig
    from drivelab.vq.tokens import iter_segments
    from drivelab.vq.train import save_checkpoint
    from drivelab.vq.train import train as run

    torch.set_num_threads(max(1, torch.get_num_threads()))
    segs = [s.flat for s in iter_segments(tokens_dir)]
    if train_frames:
        a, b = (int(v) if v else None for v in train_frames.split(":"))
        segs = [s[a:b] for s in segs]
    tr, va = [], []
    for s in segs:
        cut = max(frames, int(len(s) * (1 - val_frac)))
        tr.append(s[:cut])
        va.append(s[max(0, cut - frames + 1) :])
    if all(len(s) < frames for s in tr):
        raise DrivelabError(f"segments are shorter than --frames {frames}", tokens_dir)
    cfg = GPTConfig(frames=frames, n_layer=layers, n_head=heads, n_embd=width)
    bar = tqdm(total=steps, desc="train")

    def log(step: int, bits: float) -> None:
        bar.update(1)
        bar.set_postfix(bits=f"{bits:.3f}")

    model, bits = run(tr, va, cfg, steps=steps, batch_size=batch_size, lr=lr, seed=seed, log=log)
    bar.close()
    save_checkpoint(out, model, {"val_bits_per_token": bits})
    n = sum(p.numel() for p in model.parameters())
    typer.echo(f"{out}: {n} parameters, validation {bits:.3f} bits/token")


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
    model: Path = typer.Option(..., help="Checkpoint from `drivelab vq train`."),
    frames: int = typer.Option(10, "--frames", "-k", help="Future frames to roll out."),
    out: Path = typer.Option(
        Path("imagined.npy"), "--out", "-o", help="Where to write (K, 8, 16) int16 tokens."
    ),
    temperature: float = typer.Option(1.0, help="Sampling temperature."),
    seed: int = typer.Option(0, help="Random seed."),
) -> None:
    """Roll out K future frames of tokens with the world model."""
    from drivelab.io import write_bytes
    from drivelab.vq.tokens import npy_bytes, read_segment
    from drivelab.vq.train import imagine as run
    from drivelab.vq.train import load_checkpoint

    if not model.is_file():
        raise DrivelabError("checkpoint not found", model)
    if frames < 1:
        raise DrivelabError("--frames must be at least 1")
    seg = read_segment(segment)
    future = run(load_checkpoint(model), seg.flat, frames, temperature, seed)
    write_bytes(out, npy_bytes(future.reshape(-1, 8, 16)))
    typer.echo(f"{out}: {frames} imagined frames")
