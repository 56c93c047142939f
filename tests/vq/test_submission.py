"""Challenge zips through comma's evaluate.sh flow, in a fresh virtual environment."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from drivelab.errors import DrivelabError
from drivelab.vq.submission import evaluate, pins, write_submission
from drivelab.vq.tokens import read_all


@pytest.fixture()
def tokens_dir(tmp_path, real_tokens):
    d = tmp_path / "tokens"
    d.mkdir()
    for i in range(3):
        np.save(d / f"seg{i}.token.npy", real_tokens[300 + i * 12 : 312 + i * 12])
    return d


def test_decompress_py_pins_exact_versions():
    from importlib.metadata import version

    p = pins(["context"])
    assert p == {d: version(d) for d in ("numpy", "numba", "llvmlite")}  # no pillow, no torch
    assert "torch" not in pins(["prior", "mix", "lzma"])


@pytest.mark.slow
@pytest.mark.parametrize("codec,solid", [("lzma", False), ("context", True), ("prior", False)])
def test_submission_passes_the_fresh_venv_evaluator(tmp_path, tokens_dir, network_blob, codec, solid):
    zpath = tmp_path / "submission.zip"
    opts = {"model": network_blob} if codec == "prior" else {}
    segs = read_all([tokens_dir])
    w = write_submission(zpath, segs, codec, workers=2, solid=solid, options=opts)
    names = set(zipfile.ZipFile(zpath).namelist())
    shipped = {"decompress.py", "drivelab/vq/archive.py", "data/archive.dlva", "data/seg0.token.npy.dlvq"}
    assert shipped <= names
    assert "drivelab/vq/prior.py" not in names  # the torch training code never ships
    if codec == "prior":
        assert len([n for n in names if n.startswith("data/shared/")]) == 1  # the network, once
    result = evaluate(zpath, [tokens_dir], workers=2)
    assert result["segments"] == 3 and result["tokens"] == 3 * 12 * 128
    assert result["zip_bytes"] == w.bytes == zpath.stat().st_size
    assert result["rate"] == pytest.approx(3 * 12 * 128 * 1.25 / zpath.stat().st_size)
    if codec == "lzma":  # (cheap to run twice) a changed original must fail the exact comparison
        np.save(tokens_dir / "seg1.token.npy", np.zeros((12, 8, 16), np.int16))
        with pytest.raises(DrivelabError, match="differs"):
            evaluate(zpath, [tokens_dir])
