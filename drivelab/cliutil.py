"""What every verb's command line shares: one vocabulary of options (same names, same defaults),
one way to print (progress and tables on stderr through rich, the result on stdout, ``--json``
for machines), and one way to fail (``error: path: problem``, exit 2).

The vocabulary, declared here once and used by every pillar's CLI:

    --out/-o PATH   where results go          --device auto|cpu|cuda[:N]   (default auto)
    --batch N       images per forward pass   --workers N                  decode threads / processes
    --size HxW      image size                --json PATH                  metrics as JSON ('-' = stdout)

Like ultralytics' ``key=value``, any of a verb's options may also be written ``name=value``
(``drivelab evaluate runs/a data/x device=cpu batch=4``). Old spellings keep working for one
release and print a deprecation line (``DEPRECATED``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from drivelab.errors import DrivelabError

# Help panels: ``drivelab --help`` groups verbs by pillar.
DATA, LABEL, SEG, ENGINE, VQ, START = "data", "label", "seg", "engine", "vq", "start here"

DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda, cuda:N."


def out_option(default: Any = None, help: str = "Output folder.") -> Any:
    return typer.Option(default, "--out", "-o", help=help)


def device_option(help: str = DEVICE_HELP) -> Any:
    return typer.Option("auto", "--device", help=help)


def batch_option(default: int = 8, help: str = "Images per forward pass.") -> Any:
    return typer.Option(default, "--batch", min=1, help=help)


def workers_option(default: int = 2, help: str = "Decoding threads.") -> Any:
    return typer.Option(default, "--workers", min=0, help=help)


def size_option(default: str | None = None, help: str = "Image size HxW.") -> Any:
    return typer.Option(default, "--size", help=help)


def json_option(help: str = "Also write the result as JSON to this file ('-' for stdout).") -> Any:
    return typer.Option(None, "--json", help=help)


def tta_option(default: bool = False, help: str = "Horizontal-flip test-time augmentation: average "
               "the softmax of the image and its mirror.") -> Any:
    return typer.Option(default, "--tta/--no-tta", help=help)


def progress_option() -> Any:
    return typer.Option(True, "--progress/--no-progress", help="Show progress bars (on stderr).")


def ray_option() -> Any:
    return typer.Option(None, "--ray", help="Run on a Ray cluster: 'local' (start one here) or its address "
                        "('auto', 'ray://head:10001'). Same outputs as a local run; needs drivelab[cluster].")


def concurrency_option() -> Any:
    return typer.Option(None, "--concurrency", min=1, help="With --ray: actors/tasks at once (default: one "
                        "per CPU, or per GPU with --num-gpus).")


def num_gpus_option() -> Any:
    return typer.Option(0.0, "--num-gpus", min=0.0, help="With --ray: GPUs per actor (one model per GPU: 1).")


def shard_option() -> Any:
    return typer.Option(None, "--shard", help="Only items i, i+n, ... (i/n): for SLURM arrays and other "
                        "schedulers without Ray.")


def ray_options(address: str | None, concurrency: int | None = None, num_gpus: float = 0.0) -> Any:
    """The ``drivelab.cluster.RayOptions`` of ``--ray/--concurrency/--num-gpus`` (None without --ray)."""
    if address is None:
        if concurrency is not None or num_gpus:
            raise DrivelabError("--concurrency and --num-gpus go with --ray")
        return None
    from drivelab.cluster import RayOptions

    return RayOptions(address=address, concurrency=concurrency, num_gpus=float(num_gpus))


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"HxW"`` (e.g. ``874x1164``; ``"N"`` for a square) -> (H, W); None stays None."""
    if text is None:
        return None
    try:
        parts = [int(v) for v in str(text).lower().replace(",", "x").split("x")]
        h, w = (parts * 2)[:2] if len(parts) == 1 else parts
    except ValueError:
        raise DrivelabError(f"size must look like HxW (e.g. 874x1164), got {text!r}") from None
    if h < 1 or w < 1:
        raise DrivelabError(f"size must be positive, got {text!r}")
    return h, w


# --------------------------------------------------------------------------- output
def console(stderr: bool = True) -> Any:
    from rich.console import Console

    c = Console(stderr=stderr, highlight=False)
    if not c.is_terminal:  # piped or logged: don't squeeze tables into 80 columns
        c = Console(stderr=stderr, highlight=False, width=200)
    return c


def info(message: str) -> None:
    """A progress or status line, on stderr."""
    console().print(message)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A rich table on stderr (numbers formatted to 4 significant digits)."""
    from rich.table import Table

    t = Table(title=title)
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r])
    console().print(t)


def result(line: str) -> None:
    """The verb's result, on stdout (what a script captures)."""
    typer.echo(line)


def write_json_output(path: str | Path | None, obj: Any) -> None:
    """``--json PATH``: the machine-readable result ('-' writes it to stdout)."""
    if path is None:
        return
    from drivelab.io import jsonable

    text = json.dumps(jsonable(obj), indent=2) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    from drivelab.io import write_text

    write_text(path, text)


# --------------------------------------------------------------------------- argv
# (verb, old spelling) -> new spelling; a verb is its full path ("vq train"). Removed in the
# release after next.
DEPRECATED: dict[tuple[str, str], str] = {
    ("predict", "--batch-size"): "--batch",
    ("embed", "--batch-size"): "--batch",
    ("audit", "--batch-size"): "--batch",
    ("map", "--size"): "--dot-size",  # --size is an image size (HxW) everywhere else
    ("vq train", "--width"): "--embed-width",  # --width was an image width elsewhere
    ("vq train-prior", "--width"): "--embed-width",
    ("train", "--data"): "data=",
    ("train", "--model"): "model=",
    ("train", "--encoder"): "encoder=",
    ("train", "--weights"): "weights=",
    ("train", "--name"): "name=",
    **{(verb, flag): "--no-progress" for verb in ("validate", "convert", "synth")
       for flag in ("--quiet", "-q")},
}


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def is_group(cmd: Any) -> bool:
    # typer ships its own copy of click: duck-type rather than isinstance against the click package.
    return hasattr(cmd, "list_commands")


def option_flags(cmd: Any) -> set[str]:
    """Every ``--flag`` spelling of a command's options."""
    return {o for p in cmd.params if getattr(p, "param_type_name", "") == "option"
            for o in (*p.opts, *p.secondary_opts)}


def _command(app: typer.Typer, argv: list[str]) -> tuple[Any, list[str], int]:
    """The click command argv names, its path of verb names, and where its arguments start."""
    cmd: Any = typer.main.get_command(app)
    path: list[str] = []
    i = 0
    while is_group(cmd) and i < len(argv):
        sub = cmd.get_command(cmd.context_class(cmd), argv[i])
        if sub is None:
            break
        cmd, i = sub, i + 1
        path.append(argv[i - 1])
    return cmd, path, i


def normalize_argv(app: typer.Typer, argv: list[str]) -> list[str]:
    """Rewrite ``name=value`` into ``--name value`` for the verb's own options, deprecated
    spellings into today's (with a warning), and ``--height H --width W`` into ``--size HxW``."""
    cmd, path, start = _command(app, argv)
    if is_group(cmd) or not path:
        return argv
    verb = " ".join(path)  # "evaluate", "vq train"
    long_opts = option_flags(cmd)
    out, rest = list(argv[:start]), list(argv[start:])
    height = width = None
    i = 0
    while i < len(rest):
        tok = rest[i]
        name, eq, value = tok.partition("=")
        new = DEPRECATED.get((verb, name if eq else tok))
        if new is not None:
            flag = new.startswith("--no-")  # an old switch that takes no value
            value = value if eq or flag else (rest[i + 1] if i + 1 < len(rest) else "")
            step = 1 if eq or flag else 2
            _warn(f"{name if eq else tok} is deprecated; write {new}{'VALUE' if new.endswith('=') else ''}")
            out += [new] if flag else ([new + value] if new.endswith("=") else [new, value])
            i += step
            continue
        if tok in ("--height", "--width") and "--height" not in long_opts and "--size" in long_opts:
            if i + 1 < len(rest):
                if tok == "--height":
                    height = rest[i + 1]
                else:
                    width = rest[i + 1]
                i += 2
                continue
        if eq and not tok.startswith("-") and verb != "train" and f"--{name.replace('_', '-')}" in long_opts:
            out += [f"--{name.replace('_', '-')}", value]
        else:
            out.append(tok)
        i += 1
    if height is not None or width is not None:
        if height is None or width is None:
            raise DrivelabError("give both --height and --width (deprecated; write --size HxW)")
        _warn("--height/--width are deprecated; write --size HxW")
        out += ["--size", f"{height}x{width}"]
    return out


def _one_line_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                      line: str | None = None) -> None:
    """drivelab's own warnings (a skipped annotation, a deprecated option) as ``warning: ...``, not
    Python's two lines of source location."""
    print(f"warning: {message}", file=file or sys.stderr)


def run(app: typer.Typer, argv: list[str] | None = None) -> None:
    """Run a typer app: normalise argv, print warnings and DrivelabError as one line each
    (``error: path: problem``, exit 2)."""
    import warnings

    warnings.showwarning = _one_line_warning
    try:
        args = normalize_argv(app, list(sys.argv[1:] if argv is None else argv))
        app(args=args, prog_name="drivelab")
    except DrivelabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
