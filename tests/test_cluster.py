"""Ray as the executor: predict, evaluate, embed, audit and the vq archives on a local Ray cluster
give exactly the files and numbers of the single-process run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drivelab.cluster import RayOptions, parse_shard, take_shard
from drivelab.errors import DrivelabError

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    opts = RayOptions(address="local", concurrency=2)
    yield opts
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    import torch

    from drivelab.data.synth import synth_dataset
    from drivelab.seg.config import load_config
    from drivelab.seg.trainer import train
    from tests.seg.conftest import tiny_overrides

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cluster")
    data = synth_dataset("comma10k", root / "data", n=10, size=(72, 100), seed=7)
    run = train(load_config("synth", tiny_overrides(data, root / "runs", name="r", size=[64, 96],
                                                    max_steps=4)), progress=False)
    return run, data


def test_shards_partition_the_items() -> None:
    items = list(range(10))
    parts = [take_shard(items, f"{i}/3") for i in range(3)]
    assert sorted(sum(parts, [])) == items and parts[1] == [1, 4, 7]
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(DrivelabError, match="shard"):
            parse_shard(bad)


def test_predict_and_evaluate_on_ray_equal_the_local_run(tiny_run, local_ray, tmp_path: Path) -> None:
    from drivelab.seg.evaluate import evaluate
    from drivelab.seg.predict import predict

    run, data = tiny_run
    local = predict(run, data / "imgs", tmp_path / "local", batch_size=3, color=True, device="cpu",
                    progress=False)
    remote = predict(run, data / "imgs", tmp_path / "ray", batch_size=3, color=True, device="cpu",
                     progress=False, ray=local_ray)
    assert (local.images, local.frames) == (remote.images, remote.frames) == (10, 10)
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*")
                           if p.is_file())
    for rel in files:  # masks, colour maps, overlays, predict.json, pixel_share.csv
        if rel.name != "predict.json":
            assert (tmp_path / "local" / rel).read_bytes() == (tmp_path / "ray" / rel).read_bytes(), rel

    # Resumable: a second Ray run skips what is done and rewrites the same table.
    (tmp_path / "ray" / "masks" / files[0].name).unlink(missing_ok=True)
    predict(run, data / "imgs", tmp_path / "ray", batch_size=3, color=True, device="cpu", progress=False,
            ray=local_ray)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / "pixel_share.csv"),
                                  pd.read_csv(tmp_path / "ray" / "pixel_share.csv"))

    a = evaluate(run, data, tmp_path / "ev_local", split="all", batch=4, device="cpu", progress=False)
    b = evaluate(run, data, tmp_path / "ev_ray", split="all", batch=4, device="cpu", progress=False,
                 ray=local_ray)
    assert a["miou"] == b["miou"] and a["ce"] == b["ce"] and a["iou"] == b["iou"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "ev_local" / "per_image.parquet"),
                                  pd.read_parquet(tmp_path / "ev_ray" / "per_image.parquet"))
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ev_local" / "confusion.csv"),
                                  pd.read_csv(tmp_path / "ev_ray" / "confusion.csv"))
    c = evaluate(tmp_path / "ray", data, tmp_path / "ev_pred", split="all", ray=local_ray, progress=False)
    assert np.isclose(c["miou"], a["miou"], atol=1e-12)


def test_predict_videos_on_ray_equal_the_local_run(tiny_run, local_ray, driving_video,
                                                   tmp_path: Path) -> None:
    from drivelab.seg.predict import predict

    run, _ = tiny_run
    (tmp_path / "clips").mkdir()
    for name in ("a.mp4", "b.mp4"):  # two videos: two Ray tasks
        (tmp_path / "clips" / name).symlink_to(driving_video)
    kw = {"max_frames": 6, "side_by_side": True, "device": "cpu", "progress": False}
    local = predict(run, tmp_path / "clips", tmp_path / "local", **kw)
    remote = predict(run, tmp_path / "clips", tmp_path / "ray", ray=local_ray, **kw)
    assert (local.videos, local.frames) == (remote.videos, remote.frames) == (2, 12)
    files = sorted(p.relative_to(tmp_path / "local") for p in (tmp_path / "local").rglob("*") if p.is_file())
    assert files and files == sorted(p.relative_to(tmp_path / "ray") for p in (tmp_path / "ray").rglob("*")
                                     if p.is_file())
    for rel in files:  # per-frame tables are the same numbers; the videos decode to the same frames
        if rel.suffix == ".csv":
            pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / rel),
                                          pd.read_csv(tmp_path / "ray" / rel))


def test_embed_and_audit_on_ray_equal_the_local_run(tiny_run, local_ray, tmp_path: Path) -> None:
    from drivelab.engine.audit import audit
    from drivelab.engine.embed import embed

    run, data = tiny_run
    local = embed(run, data, tmp_path / "emb_local", batch=3, chunk=4, device="cpu", progress=False)
    remote = embed(run, data, tmp_path / "emb_ray", batch=3, chunk=4, device="cpu", progress=False,
                   ray=local_ray)
    pd.testing.assert_frame_equal(pd.read_parquet(local).drop(columns=["pred_path"]),
                                  pd.read_parquet(remote).drop(columns=["pred_path"]))
    assert np.array_equal(np.load(local.parent / "features.npy"), np.load(remote.parent / "features.npy"))
    preds = sorted(p.name for p in (local.parent / "preds").iterdir())
    assert len(preds) == 10 and preds == sorted(p.name for p in (remote.parent / "preds").iterdir())
    for name in preds:  # the workers wrote the same predicted masks
        assert (local.parent / "preds" / name).read_bytes() == (remote.parent / "preds" / name).read_bytes()

    a = audit(run, data, tmp_path / "au_local", top=3, batch=4, device="cpu", progress=False)
    b = audit(run, data, tmp_path / "au_ray", top=3, batch=4, device="cpu", progress=False, ray=local_ray)
    # The ranking is the same; scores agree to float rounding (a convolution's sums depend on how
    # many threads run it, and a Ray actor gets one CPU).
    assert list(a["name"]) == list(b["name"])
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)
    ta, tb = (json.loads((tmp_path / d / "thresholds.json").read_text()) for d in ("au_local", "au_ray"))
    assert ta.keys() == tb.keys() and np.allclose(list(ta.values()), list(tb.values()), rtol=1e-7, atol=0)
    overlays = sorted(p.name for p in (tmp_path / "au_ray" / "overlays").iterdir())
    assert len(overlays) == 3
    assert overlays == sorted(p.name for p in (tmp_path / "au_local" / "overlays").iterdir())


def test_worker_errors_reach_the_user_as_one_line(tiny_run, local_ray, tmp_path: Path) -> None:
    from drivelab.io import write_png
    from drivelab.seg.evaluate import evaluate

    _, data = tiny_run
    from drivelab.data import open_dataset

    reader = open_dataset(data)
    for it in reader.items:
        mask = reader.load_mask(it).copy()
        mask[0, 0] = 9  # no comma10k class
        write_png(tmp_path / "bad" / (Path(it.name).stem + ".png"), mask)
    with pytest.raises(DrivelabError, match="value 9"):
        evaluate(tmp_path / "bad", data, split="all", ray=local_ray, progress=False)


def test_vq_archives_on_ray_are_the_local_bytes(local_ray, commavq_tokens, tmp_path: Path) -> None:
    from drivelab.vq.archive import compress_to_folder, decompress_many
    from drivelab.vq.tokens import npy_bytes, parse_npy

    real_tokens = np.load(commavq_tokens)
    segs = [parse_npy(npy_bytes(real_tokens[i * 20:(i + 1) * 20]), f"s{i}.npy") for i in range(4)]
    for solid, workers in ((False, 1), (True, 2)):
        local, remote = tmp_path / f"local{solid}", tmp_path / f"ray{solid}"
        compress_to_folder(segs, local, "context", workers=workers, solid=solid)
        compress_to_folder(segs, remote, "context", workers=workers, solid=solid, ray=local_ray)
        files = sorted(p.relative_to(local) for p in local.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(remote) for p in remote.rglob("*") if p.is_file())
        assert all((local / f).read_bytes() == (remote / f).read_bytes() for f in files)
        names = decompress_many([remote], tmp_path / f"back{solid}", ray=local_ray)
        assert sorted(names) == [s.name for s in segs]
        assert all((tmp_path / f"back{solid}" / s.name).read_bytes() == s.raw for s in segs)


def test_vq_evaluate_on_ray_runs_decompress_py_per_shard(local_ray, commavq_tokens, tmp_path: Path) -> None:
    import zipfile

    from drivelab.vq.submission import evaluate, write_submission
    from drivelab.vq.tokens import npy_bytes, parse_npy

    real_tokens = np.load(commavq_tokens)
    src = tmp_path / "tokens"
    src.mkdir()
    for i in range(4):
        (src / f"s{i}.npy").write_bytes(npy_bytes(real_tokens[i * 10:(i + 1) * 10]))
    segs = [parse_npy((src / f"s{i}.npy").read_bytes(), f"s{i}.npy") for i in range(4)]
    zpath = tmp_path / "submission.zip"
    write_submission(zpath, segs, "context", workers=1, solid=False, options={})
    on_ray = tmp_path / "submission-ray.zip"
    write_submission(on_ray, segs, "context", workers=1, solid=False, options={}, ray=local_ray)
    assert on_ray.read_bytes() == zpath.read_bytes()  # the segments coded on Ray: the same zip
    assert "decompress.py" in zipfile.ZipFile(zpath).namelist()
    logs: list[str] = []
    remote = evaluate(zpath, [src], ray=local_ray, log=logs.append)
    assert any("one task per shard" in line for line in logs)
    local = evaluate(zpath, [src])
    assert remote == local and remote["segments"] == 4
    (src / "s2.npy").write_bytes(npy_bytes(np.zeros((10, 8, 16), np.int16)))
    with pytest.raises(DrivelabError, match="differs"):
        evaluate(zpath, [src], ray=local_ray)
