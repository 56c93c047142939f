"""comma's compression-challenge format: a zip of compressed segments plus ``decompress.py``.

comma's ``compression/evaluate.sh`` (github.com/commaai/commavq) does::

    unzip submission.zip -d ./compression_challenge_submission_decompressed/
    OUTPUT_DIR=./compression_challenge_submission_decompressed/ \
        python ./compression_challenge_submission_decompressed/decompress.py
    UNPACKED_ARCHIVE=... PACKED_ARCHIVE=submission.zip python ./compression/evaluate.py

i.e. ``decompress.py`` runs from the commavq checkout (not from the unzipped folder), must write
every segment under its original file name straight into ``OUTPUT_DIR`` (the unzip folder
itself), and only PyPI packages may be assumed: anything else ships inside the zip. So the
zip holds ``decompress.py``, ``data/<name>.dlvq`` and the few drivelab source files decoding
needs (``drivelab/vq``, ``errors.py``, ``io.py``); their bytes count towards the rate, as
comma's score is ``(segments x 1200 x 128 x 10 / 8) / zip size``.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.io import write_bytes
from drivelab.vq import api, container
from drivelab.vq.tokens import Segment, iter_segments

# the drivelab files that decoding imports (all codecs), relative to the package root's parent
SHIPPED_SOURCES = (
    "drivelab/__init__.py",
    "drivelab/errors.py",
    "drivelab/io.py",
    "drivelab/vq/__init__.py",
    "drivelab/vq/api.py",
    "drivelab/vq/cm.py",
    "drivelab/vq/container.py",
    "drivelab/vq/gpt.py",
    "drivelab/vq/tokens.py",
    "drivelab/vq/codecs/__init__.py",
    "drivelab/vq/codecs/context.py",
    "drivelab/vq/codecs/gpt.py",
    "drivelab/vq/codecs/lzma_codec.py",
    "drivelab/vq/codecs/weights.py",
)
# shipped only when a segment uses that codec (each file counts against the rate)
CODEC_SOURCES = {"prior": ("drivelab/vq/prior.py", "drivelab/vq/codecs/prior.py")}
# PyPI packages decoding needs (the challenge allows pip installs in decompress.py)
REQUIREMENTS = ("numpy", "numba", "constriction", "pillow")

DECOMPRESS_PY = '''\
"""Restore every segment of this submission into $OUTPUT_DIR under its original file name.

Self-contained: the drivelab decoder ships beside this file; PyPI packages are installed if missing.
"""
import importlib.util
import os
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get("OUTPUT_DIR", HERE))
REQUIREMENTS = @REQUIREMENTS@
sys.path.insert(0, str(HERE))


def restore(path):
    from drivelab.io import write_bytes
    from drivelab.vq import api

    seg = api.decompress(path.read_bytes(), path)
    write_bytes(OUT / seg.name, seg.raw)
    return seg.name


if __name__ == "__main__":
    missing = [r for r in REQUIREMENTS if importlib.util.find_spec("PIL" if r == "pillow" else r) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", *missing], check=True)
    files = sorted((HERE / "data").rglob("*.dlvq"))
    # SHARD=i/n lets a cluster scheduler split the work across machines
    i, n = map(int, os.environ.get("SHARD", "0/1").split("/"))
    files = files[i::n]
    workers = int(os.environ.get("WORKERS", os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        for name in pool.map(restore, files):
            print(name, file=sys.stderr)
'''.replace("@REQUIREMENTS@", repr(REQUIREMENTS))


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        i, n = (int(v) for v in shard.split("/"))
    except ValueError:
        raise DrivelabError(f"--shard must look like i/n, got {shard!r}") from None
    if n < 1 or not 0 <= i < n:
        raise DrivelabError(f"--shard {shard}: need 0 <= i < n")
    return i, n


def _compress_one(args: tuple[Segment, str, dict[str, Any]]) -> tuple[str, bytes]:
    seg, codec, options = args
    return seg.name, api.compress(seg, codec, **options)


def compress_many(
    segments: Iterable[Segment], codec: str, workers: int = 1, options: dict[str, Any] | None = None
) -> Iterable[tuple[str, bytes]]:
    jobs = [(s, codec, options or {}) for s in segments]
    if workers <= 1:
        yield from map(_compress_one, jobs)
    else:
        with ProcessPoolExecutor(workers) as pool:
            yield from pool.map(_compress_one, jobs)


def write_submission(out: str | Path, compressed: Iterable[tuple[str, bytes]]) -> int:
    import drivelab

    root = Path(drivelab.__file__).resolve().parents[1]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        # source deflates well; the payloads are already entropy coded
        zf.writestr("decompress.py", DECOMPRESS_PY, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        used: set[str] = set()
        for name, data in compressed:
            zf.writestr(f"data/{name}.dlvq", data)
            used.add(container.unpack(data, name)[0].codec)
        extra = [rel for codec in sorted(used) for rel in CODEC_SOURCES.get(codec, ())]
        for rel in (*SHIPPED_SOURCES, *extra):
            zf.write(root / rel, rel, compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    write_bytes(out, buf.getvalue())
    return len(buf.getvalue())


def evaluate(zip_path: str | Path, tokens_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Mirror comma's evaluate.sh: unzip, run decompress.py with OUTPUT_DIR = the unzip folder from
    another working directory and without drivelab on the path, compare every file, compute the rate."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise DrivelabError("not a zip file", zip_path)
    originals = {s.name: s for s in iter_segments(tokens_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        unpacked = Path(tmp) / "compression_challenge_submission_decompressed"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(unpacked)
        if not (unpacked / "decompress.py").is_file():
            raise DrivelabError("submission has no decompress.py", zip_path)
        # the evaluator's environment has PyPI packages, not this checkout: the zip must be enough
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(OUTPUT_DIR=str(unpacked), WORKERS=str(workers))
        cmd = [sys.executable, str(unpacked / "decompress.py")]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            raise DrivelabError(f"decompress.py failed: {tail[0]}", zip_path)
        tokens = 0
        for name, seg in originals.items():
            restored = unpacked / name
            if not restored.is_file():
                raise DrivelabError(f"segment {name} was not restored", zip_path)
            # comma compares arrays (np.load == original); we also demand identical .npy bytes
            if restored.read_bytes() != seg.raw:
                got = np.load(restored)
                diff = (
                    "shape" if got.shape != seg.tokens.shape else f"{int((got != seg.tokens).sum())} tokens"
                )
                raise DrivelabError(f"segment {name} differs from the original ({diff})", zip_path)
            tokens += seg.tokens.size
    size = zip_path.stat().st_size
    return {"segments": len(originals), "tokens": tokens, "zip_bytes": size, "rate": tokens * 10 / 8 / size}
