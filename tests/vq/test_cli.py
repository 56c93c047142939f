from __future__ import annotations

import io
import tarfile
import zipfile

import numpy as np
import pytest
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.vq.cli import app
from drivelab.vq.submission import evaluate
from drivelab.vq.tokens import iter_segments, npy_bytes

runner = CliRunner()


def _run(*args: str):
    result = runner.invoke(app, list(args), catch_exceptions=True)
    return result


def test_compress_decompress_cli(tmp_path, real_tokens):
    src = tmp_path / "seg.token.npy"
    src.write_bytes(npy_bytes(real_tokens[:10]))
    r = _run("compress", str(src), "--codec", "context", "--out", str(tmp_path / "seg.dlvq"))
    assert r.exit_code == 0, r.output
    r = _run("decompress", str(tmp_path / "seg.dlvq"), "--out", str(tmp_path / "out"))
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "seg.token.npy").read_bytes() == src.read_bytes()
    r = _run("info", str(tmp_path / "seg.dlvq"))
    assert '"codec": "context"' in r.output


def test_corrupt_file_is_a_drivelab_error(tmp_path, real_tokens):
    src = tmp_path / "seg.npy"
    src.write_bytes(npy_bytes(real_tokens[:4]))
    _run("compress", str(src), "--codec", "lzma", "--out", str(tmp_path / "a.dlvq"))
    data = (tmp_path / "a.dlvq").read_bytes()
    (tmp_path / "a.dlvq").write_bytes(data[:-3])
    r = _run("decompress", str(tmp_path / "a.dlvq"), "--out", str(tmp_path / "o"))
    assert isinstance(r.exception, DrivelabError) and "truncated" in str(r.exception)


def test_tar_shard_reading(tmp_path, real_tokens):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(2):
            raw = npy_bytes(real_tokens[i * 3 : i * 3 + 3])
            info = tarfile.TarInfo(f"seg{i}.token.npy")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        info = tarfile.TarInfo("seg0.pose.npy")
        info.size = 0
        tar.addfile(info, io.BytesIO(b""))
    (tmp_path / "shard.tar").write_bytes(buf.getvalue())
    segs = list(iter_segments(tmp_path / "shard.tar"))
    assert [s.name for s in segs] == ["seg0.token.npy", "seg1.token.npy"]
    assert segs[1].raw == npy_bytes(real_tokens[3:6])


def test_submission_and_evaluate(tmp_path, real_tokens):
    data = tmp_path / "tokens"
    data.mkdir()
    for i in range(2):
        (data / f"seg{i}.token.npy").write_bytes(npy_bytes(real_tokens[i * 8 : i * 8 + 8]))
    zpath = tmp_path / "submission.zip"
    # lzma keeps the test fast: decompress.py runs the shipped sources, which numba would compile cold
    r = _run("submission", str(data), "--codec", "lzma", "--out", str(zpath), "--workers", "2")
    assert r.exit_code == 0, r.output
    names = zipfile.ZipFile(zpath).namelist()
    # comma's evaluator only has PyPI packages: the decoder's sources ship inside the zip
    shipped = {"decompress.py", "drivelab/vq/api.py", "drivelab/vq/cm.py", "data/seg0.token.npy.dlvq"}
    assert shipped <= set(names)
    result = evaluate(zpath, data)
    assert result["segments"] == 2 and result["tokens"] == 2 * 8 * 128
    assert result["rate"] == pytest.approx(2 * 8 * 128 * 1.25 / zpath.stat().st_size)
    # a changed original must fail the exact comparison
    (data / "seg1.token.npy").write_bytes(npy_bytes(np.zeros((8, 8, 16), np.int16)))
    with pytest.raises(DrivelabError, match="differs"):
        evaluate(zpath, data)


def test_shard_flag(tmp_path, real_tokens):
    data = tmp_path / "tokens"
    data.mkdir()
    for i in range(3):
        (data / f"s{i}.npy").write_bytes(npy_bytes(real_tokens[i : i + 2]))
    r = _run("compress", str(data), "--codec", "lzma", "--out", str(tmp_path / "c"), "--shard", "1/2")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["s1.npy.dlvq"]
    r = _run("compress", str(data), "--codec", "lzma", "--out", str(tmp_path / "c"), "--shard", "2/2")
    assert isinstance(r.exception, DrivelabError)
