"""Lossless, always: every failure the issue lists, as a test on real tokens."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest

from drivelab.errors import DrivelabError
from drivelab.vq import api, container
from drivelab.vq.archive import compress_to_folder, decompress_many
from drivelab.vq.tokens import iter_segments, npy_bytes, parse_npy, read_all, read_segment


def _layouts(real: np.ndarray) -> dict[str, np.ndarray]:
    x = real[:6]
    return {
        "fortran": np.asfortranarray(x),
        "big-endian": x.astype(">i2"),
        "int64 (F, 128)": x.reshape(-1, 128).astype(np.int64),
        "fortran big-endian uint16 (F, 128)": np.asfortranarray(x.reshape(-1, 128).astype(">u2")),
        "int8 zeros": np.zeros((2, 8, 16), np.int8),
    }


@pytest.mark.parametrize("codec", ["lzma", "context"])
def test_every_memory_layout_and_dtype_round_trips(tmp_path, real_tokens, codec):
    """A Fortran-order .npy used to compress into an archive that could never be restored."""
    for what, arr in _layouts(real_tokens).items():
        path = tmp_path / "seg.npy"
        np.save(path, arr)
        seg = read_segment(path)
        back = api.decompress(api.compress(seg, codec))
        assert back.raw == path.read_bytes(), what
        again = np.load(io.BytesIO(back.raw))
        assert again.dtype == arr.dtype and np.isfortran(again) == np.isfortran(arr), what
        assert np.array_equal(again, arr), what


def test_what_cannot_round_trip_is_refused(tmp_path, real_tokens):
    raw = npy_bytes(real_tokens[:2])
    with pytest.raises(DrivelabError, match="bytes after the array data"):
        parse_npy(raw + b"\0\0", "x.npy")
    with pytest.raises(DrivelabError, match="not a readable"):
        parse_npy(raw[:50], "x.npy")
    with pytest.raises(DrivelabError, match="integers"):
        parse_npy(npy_bytes(np.zeros((2, 128), bool)), "x.npy")


def _rewrite_header(data: bytes, **changes) -> bytes:
    """Re-pack a container with a changed header and a *valid* header CRC (a crafted file)."""
    header, payload, inline = container.unpack(data)
    for k, v in changes.items():
        setattr(header, k, v)
    return container.pack(header, payload, inline)


def test_a_flipped_byte_in_the_name_or_metadata_is_refused(real_tokens):
    """One flipped byte in the stored name used to restore silently under a wrong name."""
    data = api.compress(parse_npy(npy_bytes(real_tokens[:3]), "abc.token.npy"), "lzma")
    _, end = container.read_header(data)
    for i in range(5, end):  # every byte of the lengths, the CRC and the (deflated) header
        bad = bytearray(data)
        bad[i] ^= 0x01
        with pytest.raises(DrivelabError, match="corrupted header|truncated|trailing|CRC"):
            api.decompress(bytes(bad))


@pytest.mark.parametrize("name", ["../../x.npy", "a/b.npy", "..", "/etc/x.npy", "a\\b.npy", ""])
def test_stored_names_must_be_plain_file_names(tmp_path, real_tokens, name):
    good = api.compress(parse_npy(npy_bytes(real_tokens[:2]), "ok.npy"), "lzma")
    crafted = _rewrite_header(good, name=name)
    with pytest.raises(DrivelabError, match="plain file name"):
        api.decompress(crafted)
    (tmp_path / "arch").mkdir()
    (tmp_path / "arch" / "evil.dlvq").write_bytes(crafted)
    out = tmp_path / "out" / "deep"
    with pytest.raises(DrivelabError, match="plain file name"):
        decompress_many([tmp_path / "arch"], out)
    assert not (tmp_path / "x.npy").exists() and not any((tmp_path / "out").rglob("*.npy"))


def test_names_from_tar_json_are_checked_too(tmp_path, real_tokens):
    shard = _hf_shard(tmp_path / "data-0000.tar.gz", real_tokens, [("k0", "../escape.npy")])
    with pytest.raises(DrivelabError, match="plain file name"):
        list(iter_segments(shard))


def test_two_archives_with_one_name_restore_nothing(tmp_path, real_tokens):
    """Used to report 2 restored and leave 1."""
    for i in range(2):
        src = tmp_path / f"in{i}"
        src.mkdir()
        np.save(src / "same.token.npy", real_tokens[i * 3 : i * 3 + 3])
        compress_to_folder(read_all([src]), tmp_path / f"arch{i}", "lzma")
    out = tmp_path / "out"
    with pytest.raises(DrivelabError, match="two segments are named 'same.token.npy'"):
        decompress_many([tmp_path / "arch0", tmp_path / "arch1"], out)
    assert not out.exists() or not any(out.iterdir())


def test_two_segments_with_one_name_are_refused_when_reading(tmp_path, real_tokens):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
        np.save(tmp_path / sub / "s.npy", real_tokens[:2])
    with pytest.raises(DrivelabError, match="two segments are named 's.npy'"):
        read_all([tmp_path])  # one folder, two subfolders
    with pytest.raises(DrivelabError, match="two segments are named"):
        read_all([tmp_path / "a", tmp_path / "b"])  # two sources


def test_a_failed_segment_leaves_nothing_behind(tmp_path, real_tokens):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        np.save(src / f"s{i}.npy", real_tokens[i * 2 : i * 2 + 2])
    compress_to_folder(read_all([src]), tmp_path / "arch", "lzma")
    f = tmp_path / "arch" / "s2.npy.dlvq"
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(DrivelabError, match="CRC"):
        decompress_many([tmp_path / "arch"], out)
    assert list(out.iterdir()) == []  # not even the staging folder


def _hf_shard(path, real, members):
    """A shard as the commaVQ Hugging Face dataset stores it: KEY.token.npy, KEY.pose.npy, KEY.json."""
    with tarfile.open(path, "w:gz") as tar:
        for k, (key, file_name) in enumerate(members):
            files = {
                f"{key}.token.npy": npy_bytes(real[k * 4 : k * 4 + 4]),
                f"{key}.pose.npy": npy_bytes(np.zeros((4, 6), np.float32)),
                f"{key}.json": json.dumps({"file_name": file_name}).encode(),
            }
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def test_hf_shards_in_a_folder_are_read_as_is(tmp_path, real_tokens):
    """A folder with data-0000.tar.gz and data-0001.tar.gz used to give "no .npy token segments"."""
    _hf_shard(tmp_path / "data-0000.tar.gz", real_tokens, [("a1b2/x_0", "x_0.npy"), ("a1b2/x_1", "x_1.npy")])
    _hf_shard(tmp_path / "data-0001.tar.gz", real_tokens[20:], [("c3d4/y_7", "y_7.npy")])
    segs = read_all([tmp_path])
    assert [s.name for s in segs] == ["x_0.npy", "x_1.npy", "y_7.npy"]  # the json's file_name
    assert segs[2].raw == npy_bytes(real_tokens[20:24])
    compress_to_folder(segs, tmp_path / "arch", "context")
    names = decompress_many([tmp_path / "arch"], tmp_path / "out")
    assert sorted(names) == ["x_0.npy", "x_1.npy", "y_7.npy"]
    assert (tmp_path / "out" / "x_1.npy").read_bytes() == npy_bytes(real_tokens[4:8])


def test_several_sources_in_one_call(tmp_path, real_tokens):
    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "a.npy", real_tokens[:2])
    np.save(tmp_path / "b.npy", real_tokens[2:4])
    _hf_shard(tmp_path / "data-0007.tar.gz", real_tokens[8:], [("k", "c.npy")])
    segs = read_all([tmp_path / "f", tmp_path / "b.npy", tmp_path / "data-0007.tar.gz"])
    assert [s.name for s in segs] == ["a.npy", "b.npy", "c.npy"]
