"""Durability: a save killed with SIGKILL at any instant leaves every acknowledged version restorable
byte for byte, and after the start-up recovery pass the store describes the files on disk.

Two ways of killing: (1) a child process saves with every file-system call and SQLite commit
counted, and kills itself at call 1, 2, 3 ... until a save gets through, so every step boundary of a
save is hit (comma10k, a first save with no previous file, Cityscapes with instanceIds and colour
siblings); (2) a real server process is SIGKILLed at random moments of a burst of HTTP saves, many
times, and restarted each time.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from drivelab.data import open_dataset
from drivelab.label.masks import MaskIO
from drivelab.label.store import ReviewStore
from drivelab.label.versions import PRIMARY
from tests.label import procs
from tests.label.conftest import H, W

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork (POSIX)")


def _random_mask(shape: tuple[int, int], seed: int, classes: list[int]) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h, w = shape
    small = rng.choice(classes, size=(max(1, h // 8), max(1, w // 8)))
    return np.kron(small, np.ones((8, 8), np.int64))[:h, :w].astype(np.uint8)


# ----------------------------------------------------------------------------- checks
def _files(masks: MaskIO, item) -> dict[str, bytes]:
    return {role: p.read_bytes() for role, p in masks.files(item).items() if p.exists()}


def _no_temp_files(root: Path) -> list[str]:
    return [str(p) for p in root.rglob("*.tmp")]


def _check(root: Path, name: str, acked: dict[int, dict[str, bytes]], sent: np.ndarray | None) -> int:
    """Recover (app start-up), then check store, files and history; returns the stored version."""
    from drivelab.label.app import create_app

    state = create_app(root).state.label
    masks, store = state.masks, state.store
    item = state.index.item(name)
    v = store.version(name)
    last = max(acked)
    assert v in (last, last + 1), (v, last)
    disk = _files(masks, item)
    if v == last:
        assert disk == acked[last], "the files are not the last acknowledged version"
    else:  # the save committed before the kill: the files are what it sent
        np.testing.assert_array_equal(masks.load(item).mask, sent)
        acked[v] = disk
    for k in sorted(acked):
        if k < v and acked[k]:
            old = masks.versions.read(name, k)
            assert old == acked[k], f"version {k} is not restorable byte for byte"
    loaded = masks.load(item)
    assert loaded.version == v
    rec = store.get(name)
    if PRIMARY in disk and rec["digest"] is not None:
        assert rec["digest"] == hashlib.sha256(disk[PRIMARY]).hexdigest(), "store digest != file"
    if not disk.get(PRIMARY):
        assert not masks.mask_path(item).exists()
    assert not _no_temp_files(root), _no_temp_files(root)
    return v


def _sweep(root: Path, name: str, classes: list[int], rounds: int = 2) -> int:
    """For each round: from the same starting files, kill a save at step 1, 2, ... until one
    completes; then the next round starts from that save. Returns the number of kills."""
    ctx = procs.context()
    start = root.parent / f"{root.name}.start"
    reader = open_dataset(root)
    masks = MaskIO(reader, ReviewStore(root))
    item = next(it for it in reader.items if it.name == name)
    shape = masks.load(item).mask.shape
    acked = {0: _files(masks, item)}
    kills, version = 0, 0
    for r in range(rounds):
        shutil.rmtree(start, ignore_errors=True)
        shutil.copytree(root, start, symlinks=True)
        mask = _random_mask(shape, r, classes)
        for kill_at in range(1, 100):
            shutil.rmtree(root)
            shutil.copytree(start, root, symlinks=True)
            known = {k: v for k, v in acked.items() if k <= version}
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=procs.save_and_maybe_die,
                               args=(str(root), name, version, mask.tobytes(), shape, kill_at, child))
            proc.start()
            proc.join(60)
            done = parent.poll() and parent.recv()
            if done:
                known[done[0]] = _files(masks, item)
                assert _check(root, name, known, mask) == done[0]
                acked, version = known, done[0]
                break
            assert proc.exitcode == -signal.SIGKILL, proc.exitcode
            kills += 1
            _check(root, name, known, mask)
    return kills


def test_kill_at_every_step_of_a_comma10k_save(comma_set):
    reader = open_dataset(comma_set)
    kills = _sweep(comma_set, reader.items[0].name, classes=[0, 1, 2, 3, 4], rounds=1)
    print(f"{kills} kill points")
    assert kills >= 10  # history copy + manifest + mask + commit: every boundary was hit


def test_kill_at_every_step_of_a_first_save(comma_set):
    name = open_dataset(comma_set).items[-1].name  # no mask on disk: version 0 is "no file"
    print(f"{_sweep(comma_set, name, classes=[0, 1, 2, 3, 4], rounds=1)} kill points")


def test_kill_at_every_step_of_a_cityscapes_save_with_siblings(cityscapes_sample, tmp_path):
    from PIL import Image

    from drivelab.io import read_label
    from drivelab.label.masks import _CS_COLORS

    root = tmp_path / "cs"
    shutil.copytree(cityscapes_sample, root)
    ids_path = next(root.glob("gtFine/*/*/*_gtFine_labelIds.png"))
    color = Path(str(ids_path).replace("_labelIds.png", "_color.png"))
    Image.fromarray(_CS_COLORS[read_label(ids_path)], "RGB").convert("RGBA").save(color)
    name = open_dataset(root).items[0].name
    kills = _sweep(root, name, classes=[0, 1, 2, 8, 10, 11, 13], rounds=1)
    print(f"{kills} kill points")
    assert kills >= 20  # three files per version


# ----------------------------------------------------------------------------- a real server
def test_sigkill_the_server_during_a_save_burst(comma_set):
    """SIGKILL the server at random instants of a burst of saves from two clients, restart it, check,
    many times: every acknowledged version reads back exactly, the store agrees with the files."""
    from drivelab.label.cli import free_port

    names = [it.name for it in open_dataset(comma_set).items[:2]]
    port = free_port()
    rng = random.Random(0)
    acked = {n: {} for n in names}  # name -> {version: mask bytes the client sent}
    base = {}
    proc = procs.start_server(comma_set, port)
    with procs.session(port) as c:
        for n in names:
            r = c.get("/api/mask", params={"name": n})
            acked[n][0] = r.content
            base[n] = 0
    kills = 0
    t_end = time.time() + 15
    while kills < 10 and time.time() < t_end:
        inflight: dict[str, bytes | None] = {n: None for n in names}
        stop, saving = threading.Event(), threading.Event()

        def burst(name: str, seed: int, inflight=inflight, stop=stop, saving=saving) -> None:
            k = 0
            try:
                with procs.session(port) as c:
                    while not stop.is_set():
                        k += 1
                        mask = _random_mask((H, W), seed * 1000 + k, [0, 1, 2, 3, 4]).tobytes()
                        inflight[name] = mask
                        r = c.post("/api/mask", params={"name": name, "version": base[name]}, content=mask)
                        if r.status_code != 200:
                            return
                        base[name] = r.json()["version"]
                        acked[name][base[name]] = mask
                        inflight[name] = None
                        saving.set()
            except Exception:  # the server died under us: the point of the test
                return

        threads = [threading.Thread(target=burst, args=(n, kills * 10 + i)) for i, n in enumerate(names)]
        for t in threads:
            t.start()
        saving.wait(10)  # the burst is under way: kill at a random instant of it
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()  # SIGKILL
        proc.join(10)
        stop.set()
        for t in threads:
            t.join(30)
        kills += 1
        proc = procs.start_server(comma_set, port)
        with procs.session(port) as c:
            for n in names:
                cur = c.get("/api/mask", params={"name": n})
                v = int(cur.headers["x-version"])
                last = max(acked[n])
                assert v in (last, last + 1), (n, v, last)
                if v == last + 1:  # committed, not acknowledged: it must be exactly what was in flight
                    assert inflight[n] is not None and cur.content == inflight[n]
                    acked[n][v] = cur.content
                assert cur.content == acked[n][v]
                for k, sent in acked[n].items():
                    old = c.get("/api/mask", params={"name": n, "version": k})
                    assert old.status_code == 200 and old.content == sent, (n, k)
                base[n] = v
        assert not _no_temp_files(comma_set)
    proc.kill()
    proc.join(10)
    print(f"{kills} server kills, {sum(len(a) for a in acked.values())} acknowledged versions")
    assert kills >= 5
    assert sum(len(a) for a in acked.values()) > 2 * kills  # saves were acknowledged between kills
