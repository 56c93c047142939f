"""comma's compression-challenge format: a zip of compressed segments plus ``decompress.py``.

The evaluator unzips the submission, runs ``python decompress.py`` with ``OUTPUT_DIR`` set,
compares every restored file with the original tokens, and scores
``(total tokens x 10 / 8) / zip size``. Our ``decompress.py`` imports ``drivelab.vq``.
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
from drivelab.vq import api
from drivelab.vq.tokens import Segment, iter_segments

DECOMPRESS_PY = '''\
"""Restore every segment of this submission into $OUTPUT_DIR (needs drivelab installed)."""
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = Path(os.environ.get("OUTPUT_DIR", HERE / "output"))


def restore(path):
    from drivelab.io import write_bytes
    from drivelab.vq import api

    seg = api.decompress(path.read_bytes(), path)
    write_bytes(OUT / seg.name, seg.raw)
    return seg.name


if __name__ == "__main__":
    files = sorted((HERE / "data").rglob("*.dlvq"))
    # SHARD=i/n lets a cluster scheduler split the work across machines
    i, n = map(int, os.environ.get("SHARD", "0/1").split("/"))
    files = files[i::n]
    workers = int(os.environ.get("WORKERS", os.cpu_count() or 1))
    with ProcessPoolExecutor(workers) as pool:
        for name in pool.map(restore, files):
            print(name, file=sys.stderr)
'''


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
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("decompress.py", DECOMPRESS_PY)
        for name, data in compressed:
            zf.writestr(f"data/{name}.dlvq", data)
    write_bytes(out, buf.getvalue())
    return len(buf.getvalue())


def evaluate(zip_path: str | Path, tokens_dir: str | Path, workers: int = 1) -> dict[str, Any]:
    """Mirror comma's evaluation: unzip, run decompress.py, compare every file, compute the rate."""
    zip_path = Path(zip_path)
    if not zipfile.is_zipfile(zip_path):
        raise DrivelabError("not a zip file", zip_path)
    originals = {s.name: s for s in iter_segments(tokens_dir)}
    with tempfile.TemporaryDirectory() as tmp:
        unpacked, out = Path(tmp) / "submission", Path(tmp) / "output"
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(unpacked)
        if not (unpacked / "decompress.py").is_file():
            raise DrivelabError("submission has no decompress.py", zip_path)
        # decompress.py imports drivelab: make sure it finds this very installation
        import drivelab

        root = str(Path(drivelab.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, "OUTPUT_DIR": str(out), "WORKERS": str(workers), "PYTHONPATH": path}
        proc = subprocess.run(
            [sys.executable, "decompress.py"], cwd=unpacked, env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            tail = proc.stderr.strip().splitlines()[-1:] or ["?"]
            raise DrivelabError(f"decompress.py failed: {tail[0]}", zip_path)
        tokens = 0
        for name, seg in originals.items():
            restored = out / name
            if not restored.is_file():
                raise DrivelabError(f"segment {name} was not restored", zip_path)
            if restored.read_bytes() != seg.raw:
                got = np.load(restored)
                diff = (
                    "shape" if got.shape != seg.tokens.shape else f"{int((got != seg.tokens).sum())} tokens"
                )
                raise DrivelabError(f"segment {name} differs from the original ({diff})", zip_path)
            tokens += seg.tokens.size
    size = zip_path.stat().st_size
    return {"segments": len(originals), "tokens": tokens, "zip_bytes": size, "rate": tokens * 10 / 8 / size}
