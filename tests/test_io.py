"""Atomic writes: the file appears whole or not at all, with the mode a plain open() gives."""

import os
import stat

import pytest

from drivelab.io import atomic_write, write_bytes


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_write_mode_follows_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_bytes(tmp_path / "a.bin", b"x")
        with open(tmp_path / "plain.bin", "wb") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "a.bin").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.bin").stat().st_mode) == 0o666 & ~umask


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write(target, "w") as f:
        f.write("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.txt"]
