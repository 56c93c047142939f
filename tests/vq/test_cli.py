from __future__ import annotations

import io
import json
import tarfile

import numpy as np
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.vq.cli import app
from drivelab.vq.tokens import iter_segments, npy_bytes

runner = CliRunner()


def _run(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=True)


def test_compress_decompress_cli(tmp_path, real_tokens):
    src = tmp_path / "seg.token.npy"
    src.write_bytes(npy_bytes(real_tokens[:10]))
    r = _run("compress", src, "--codec", "context", "--out", tmp_path / "seg.dlvq",
             "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "r.json").read_text())["bytes"] == (tmp_path / "seg.dlvq").stat().st_size
    r = _run("decompress", tmp_path / "seg.dlvq", "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "out" / "seg.token.npy").read_bytes() == src.read_bytes()
    r = _run("info", tmp_path / "seg.dlvq")
    assert '"codec": "context"' in r.output


def test_corrupt_file_is_a_drivelab_error(tmp_path, real_tokens):
    src = tmp_path / "seg.npy"
    src.write_bytes(npy_bytes(real_tokens[:4]))
    _run("compress", src, "--codec", "lzma", "--out", tmp_path / "a.dlvq")
    data = (tmp_path / "a.dlvq").read_bytes()
    (tmp_path / "a.dlvq").write_bytes(data[:-3])
    r = _run("decompress", tmp_path / "a.dlvq", "--out", tmp_path / "o")
    assert isinstance(r.exception, DrivelabError) and "truncated" in str(r.exception)


def test_tar_shard_without_json_uses_member_names(tmp_path, real_tokens):
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


def test_archive_folder_solid_and_several_sources(tmp_path, real_tokens):
    """Two source folders in one call, two solid chains (workers), restored in one call."""
    for k in range(2):
        d = tmp_path / f"src{k}"
        d.mkdir()
        for i in range(2):
            j = (2 * k + i) * 10
            np.save(d / f"s{k}{i}.npy", real_tokens[j : j + 10])
    arch = tmp_path / "arch"
    r = _run("compress", tmp_path / "src0", tmp_path / "src1", "--out", arch, "--solid", "--workers", "2",
             "--json", tmp_path / "r.json")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in arch.iterdir()) == ["archive.dlva"] + [f"s{k}{i}.npy.dlvq" for k in (0, 1)
                                                                          for i in (0, 1)]
    r = _run("decompress", arch, "--out", tmp_path / "out", "--workers", "2")
    assert r.exit_code == 0, r.output
    for k in range(2):
        for i in range(2):
            assert (tmp_path / "out" / f"s{k}{i}.npy").read_bytes() == (tmp_path / f"src{k}" / f"s{k}{i}.npy"
                                                                       ).read_bytes()
    r = _run("decompress", arch / "s01.npy.dlvq", "--out", tmp_path / "o2")
    assert isinstance(r.exception, DrivelabError) and "whole archive" in str(r.exception)
    r = _run("compress", tmp_path / "src0", "--out", tmp_path / "x", "--codec", "lzma", "--solid")
    assert isinstance(r.exception, DrivelabError) and "no solid mode" in str(r.exception)


def test_shard_flag(tmp_path, real_tokens):
    data = tmp_path / "tokens"
    data.mkdir()
    for i in range(3):
        (data / f"s{i}.npy").write_bytes(npy_bytes(real_tokens[i : i + 2]))
    r = _run("compress", data, "--codec", "lzma", "--out", tmp_path / "c", "--shard", "1/2")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["archive.dlva", "s1.npy.dlvq"]
    r = _run("compress", data, "--codec", "lzma", "--out", tmp_path / "c2", "--shard", "2/2")
    assert isinstance(r.exception, DrivelabError)


def test_options_that_do_not_apply_are_refused(tmp_path, real_tokens):
    np.save(tmp_path / "s.npy", real_tokens[:2])
    r = _run("compress", tmp_path / "s.npy", "--codec", "lzma", "--start", tmp_path / "s.npy", "--out",
             tmp_path / "s.dlvq")
    assert isinstance(r.exception, DrivelabError) and "--start" in str(r.exception)
    r = _run("compress", tmp_path / "s.npy", "--codec", "prior", "--out", tmp_path / "s.dlvq")
    assert isinstance(r.exception, DrivelabError) and "--model" in str(r.exception)
