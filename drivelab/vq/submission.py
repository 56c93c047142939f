"""comma's compression-challenge format: a zip of an archive plus ``decompress.py``, and its evaluator.

comma's ``compression/evaluate.sh`` (github.com/commaai/commavq) does::

    unzip submission.zip -d ./compression_challenge_submission_decompressed/
    OUTPUT_DIR=./compression_challenge_submission_decompressed/ \\
        python ./compression_challenge_submission_decompressed/decompress.py
    UNPACKED_ARCHIVE=... PACKED_ARCHIVE=submission.zip python ./compression/evaluate.py

i.e. ``decompress.py`` runs from the commavq checkout with whatever Python the evaluator has,
must write every segment under its ``file_name`` straight into ``OUTPUT_DIR`` (the unzip
folder itself), and only PyPI packages may be assumed: anything else ships inside the zip.
``evaluate.py`` then compares ``np.load(OUTPUT_DIR/file_name)`` with the original tokens;
score = segments x 1200 x 128 x 10/8 / zip size.

So the zip holds ``decompress.py``, the archive under ``data/`` (``drivelab.vq.archive``:
segments, shared state stored once, manifest) and the drivelab source files decoding imports.
``decompress.py`` pins the exact versions of the PyPI distributions the used codecs import
(as installed where the zip was made) and, unless the running Python already has exactly those,
pip-installs them into ``.deps/`` beside itself (``--target``: the evaluator's own packages are
left alone). No codec shipped here needs torch to decode.

``evaluate`` reproduces that flow in a fresh virtual environment with nothing installed, never
in drivelab's own: unzip, ``OUTPUT_DIR=... <fresh python> decompress.py`` from another working
directory, compare, rate.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import venv
import zipfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import atomic_write
from drivelab.vq import codecs
from drivelab.vq.archive import ArchiveWriter, Written, encode_segments
from drivelab.vq.tokens import Segment, read_all

DATA = "data"
# the drivelab files every decoder imports, relative to the package root's parent
CORE_SOURCES = (
    "drivelab/__init__.py",
    "drivelab/errors.py",
    "drivelab/io.py",
    "drivelab/vq/__init__.py",
    "drivelab/vq/api.py",
    "drivelab/vq/archive.py",
    "drivelab/vq/container.py",
    "drivelab/vq/store.py",
    "drivelab/vq/tokens.py",
    "drivelab/vq/codecs/__init__.py",
)
# what else each codec's decoder imports comes from its module's SOURCES (each file counts against
# the rate); this is the fallback for a codec module that does not say
DEFAULT_SOURCES = {"gpt": ("drivelab/device.py", "drivelab/vq/gpt.py", "drivelab/vq/codecs/gpt.py")}
# what the shipped core (tokens, container, archive, drivelab.io's atomic writes) imports
CORE_REQUIREMENTS = ("numpy",)
# distributions a requirement brings whose version must be pinned with it
COMPANIONS = {"numba": ("llvmlite",)}

DECOMPRESS_PY = '''\
"""Restore every segment of this submission into $OUTPUT_DIR under its original file name.

Self-contained: the drivelab decoder ships beside this file. The exact PyPI versions it was
made with are pinned below; if this Python lacks them they are installed into .deps/ here.
"""
import importlib
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get("OUTPUT_DIR", HERE))
PINS = @PINS@
DEPS = HERE / ".deps"


def have(pins):
    for dist, version in pins.items():
        try:
            if metadata.version(dist) != version:
                return False
        except metadata.PackageNotFoundError:
            return False
    return True


if __name__ == "__main__":
    if not have(PINS):
        sys.path.insert(0, str(DEPS))
        importlib.invalidate_caches()
        if not have(PINS):
            wanted = [f"{dist}=={version}" for dist, version in PINS.items()]
            subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--target", str(DEPS), *wanted], check=True)
            importlib.invalidate_caches()
    sys.path.insert(0, str(HERE))
    from drivelab.errors import DrivelabError
    from drivelab.vq.archive import decompress_many

    # SHARD=i/n splits the work across machines; WORKERS processes on this one
    shard = tuple(map(int, os.environ.get("SHARD", "0/1").split("/")))
    workers = int(os.environ.get("WORKERS", os.cpu_count() or 1))
    try:
        names = decompress_many([HERE / "data"], OUT, workers=workers, shard=shard)
    except DrivelabError as e:
        sys.exit(f"error: {e}")
    print(f"restored {len(names)} segments into {OUT}", file=sys.stderr)
'''


def pins(used: Iterable[str]) -> dict[str, str]:
    """Exact installed versions of the distributions the decoders of ``used`` codecs import."""
    dists: list[str] = list(CORE_REQUIREMENTS)
    for codec in used:
        for d in codecs.requirements(codec):
            dists += [d, *COMPANIONS.get(d, ())]
    out = {}
    for d in dict.fromkeys(dists):
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            raise DrivelabError(f"{d} is not installed here, so its version cannot be pinned") from None
    return out


def decompress_script(used: Iterable[str]) -> str:
    return DECOMPRESS_PY.replace("@PINS@", repr(pins(used)))


def write_submission(out: str | Path, segments: list[Segment], codec: str, workers: int = 1,
                     solid: bool = False, options: dict[str, Any] | None = None,
                     progress: Callable[[int], None] | None = None, ray: Any = None) -> Written:
    """Write the challenge zip; returns sizes (``bytes`` = the zip's size)."""
    import drivelab

    root = Path(drivelab.__file__).resolve().parents[1]
    out = Path(out)
    with atomic_write(out) as f, zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        # payloads are entropy coded already; only the Python sources deflate
        writer = ArchiveWriter(lambda rel, data: zf.writestr(_entry(f"{DATA}/{rel}"), data), codec)
        for coded, blobs in encode_segments(segments, codec, workers, solid, options, ray):
            writer.add(coded, blobs)
            if progress:
                progress(len(coded))
        written = writer.close()
        zf.writestr(_entry("decompress.py"), decompress_script([codec]), compress_type=zipfile.ZIP_DEFLATED,
                    compresslevel=9)
        for rel in dict.fromkeys((*CORE_SOURCES, *codecs.sources(codec, DEFAULT_SOURCES.get(codec, ())))):
            zf.writestr(_entry(rel), (root / rel).read_bytes(), compress_type=zipfile.ZIP_DEFLATED,
                        compresslevel=9)
    written.bytes = out.stat().st_size
    return written


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip member with a fixed date and mode: the same segments and sources give the same zip
    bytes, wherever and whenever they are written (here or on Ray)."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.external_attr = 0o644 << 16
    return info


def _fresh_python(folder: Path) -> Path:
    """A new virtual environment with nothing but pip: what the zip may assume is PyPI, not drivelab's env."""
    venv.EnvBuilder(with_pip=True, clear=True, symlinks=True).create(folder)
    return folder / "bin" / "python"


def _run_decompress(shard: str, python: str, script: str, cwd: str, output_dir: str,
                    workers: int) -> tuple[int, str]:
    """One ``decompress.py`` process as the evaluator runs it (``SHARD=i/n``); (return code, last
    line of its output)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(OUTPUT_DIR=output_dir, WORKERS=str(workers), SHARD=shard)
    proc = subprocess.run([python, script], cwd=cwd, env=env, capture_output=True, text=True)
    tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-1:] or ["?"]
    return proc.returncode, tail[0]


def evaluate(zip_path: str | Path, sources: Iterable[str | Path], workers: int = 1,
             log: Callable[[str], None] | None = None, ray: Any = None,
             work_dir: str | Path | None = None) -> dict[str, Any]:
    """comma's evaluate.sh in a fresh venv: unzip, run decompress.py with OUTPUT_DIR = the unzip
    folder from another working directory, compare every segment exactly, compute the rate.

    ``ray`` (a ``drivelab.cluster.RayOptions``): the same decompress.py run as Ray tasks, one per
    shard (``SHARD=i/n``, which the script reads to split the work across machines). Shard 0 runs
    first and alone: it installs the pinned decoder packages into the submission's ``.deps`` as
    the single run would; the other shards then find them. Across machines ``work_dir`` must be a
    folder every node sees (a shared filesystem); the default is a temporary folder here."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise DrivelabError("not a zip file", zip_path)
    originals = read_all(sources)
    with tempfile.TemporaryDirectory(prefix="dlvq-eval-", dir=work_dir) as tmp:
        unpacked = Path(tmp) / "compression_challenge_submission_decompressed"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(unpacked)
        if not (unpacked / "decompress.py").is_file():
            raise DrivelabError("submission has no decompress.py", zip_path)
        if log:
            log("creating a fresh virtual environment")
        python = _fresh_python(Path(tmp) / "venv")
        args = (str(python), str(unpacked / "decompress.py"), tmp, str(unpacked), workers)
        if log:
            log("running decompress.py" + (" on Ray, one task per shard" if ray is not None else ""))
        if ray is None:
            outcomes = [_run_decompress("0/1", *args)]
        else:
            from drivelab.cluster import connect, map_items, shard_count

            n = shard_count(connect(ray), ray, len(originals))
            outcomes = [_run_decompress(f"0/{n}", *args)]
            if outcomes[0][0] == 0 and n > 1:
                outcomes += map_items(_run_decompress, [f"{i}/{n}" for i in range(1, n)], ray, args=args,
                                      progress=False, desc="decompress.py")
        for rc, tail in outcomes:
            if rc != 0:
                raise DrivelabError(f"decompress.py failed in a fresh venv: {tail}", zip_path)
        tokens = 0
        for seg in originals:
            restored = unpacked / seg.name
            if not restored.is_file():
                raise DrivelabError(f"segment {seg.name} was not restored", zip_path)
            # comma compares arrays (np.load == original); we also demand identical .npy bytes
            got = np.load(io.BytesIO(restored.read_bytes()), allow_pickle=False)
            if got.shape != seg.tokens.shape or not np.array_equal(got, seg.tokens):
                diff = ("shape" if got.shape != seg.tokens.shape else
                        f"{int((got != seg.tokens).sum())} tokens")
                raise DrivelabError(f"segment {seg.name} differs from the original ({diff})", zip_path)
            if restored.read_bytes() != seg.raw:
                raise DrivelabError(f"segment {seg.name}: same tokens, different .npy bytes", zip_path)
            tokens += seg.tokens.size
    size = zip_path.stat().st_size
    return {"segments": len(originals), "tokens": tokens, "zip_bytes": size,
            "rate": tokens * 10 / 8 / size, "python": sys.version.split()[0]}
