"""predict: Predictor resolution handling, image/folder/glob/video outputs, bad input, CLI."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from drivelab.errors import DrivelabError
from drivelab.io import read_label, read_rgb, write_png
from drivelab.painter import Painter
from drivelab.schema import comma10k
from drivelab.seg.checkpoint import read_checkpoint, save_checkpoint
from drivelab.seg.cli import register
from drivelab.seg.inference import Predictor
from drivelab.seg.predict import predict
from drivelab.video import VideoWriter, probe, read_frames, write_video


def _images(folder: Path, n: int = 3, size: tuple[int, int] = (48, 80)) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"frame{i}.png"
        write_png(p, rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(p)
    return paths


def test_predictor_full_resolution_any_size(tiny_checkpoint: Path) -> None:
    pred = Predictor(tiny_checkpoint)
    assert pred.size == (64, 128)  # the training size from the checkpoint config
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)  # not a multiple of 32, other aspect
    b = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    masks = pred.predict_batch([a, b, a])
    assert [m.shape for m in masks] == [(50, 70), (64, 128), (50, 70)]
    assert masks[0].dtype == np.uint8 and masks[0].max() < 5
    np.testing.assert_array_equal(masks[0], pred.predict(a))  # batching does not change results
    probs = pred.probs(a)
    assert probs.shape == (5, 50, 70) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(probs.argmax(0), masks[0])


def test_predict_folder_writes_palette_masks_overlays_and_stats(tiny_checkpoint: Path,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "frames"
    paths = _images(src)
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    out = tmp_path / "out"
    summary = predict(tiny_checkpoint, src, out, color=True, progress=False)
    assert summary.images == 3 and summary.frames == 3
    assert [Path(p).name for p, _ in summary.skipped] == ["broken.png"]
    pred = Predictor(tiny_checkpoint)
    schema = comma10k()
    for p in paths:
        mask_png = out / "masks" / f"{p.stem}.png"
        assert Image.open(mask_png).mode == "P"  # any viewer shows it in colour
        mask = read_label(mask_png)
        np.testing.assert_array_equal(mask, pred.predict(read_rgb(p)))
        np.testing.assert_array_equal(read_rgb(out / "color" / f"{p.stem}.png"), schema.colorize(mask))
        assert read_rgb(out / "overlay" / f"{p.stem}.jpg").shape == (48, 80, 3)
    table = pd.read_csv(out / "pixel_share.csv")
    assert sorted(table["name"]) == ["frame0", "frame1", "frame2"]
    shares = table[[f"share_{n}" for n in schema.names]].to_numpy()
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-4)
    assert "1 unreadable skipped" in summary.line()


def test_predict_glob_keeps_subfolder_names(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _images(tmp_path / "a", n=1)
    _images(tmp_path / "b", n=2)
    out = tmp_path / "out"
    summary = predict(tiny_checkpoint, str(tmp_path / "*" / "frame*.png"), out, overlay=False, progress=False)
    assert summary.images == 3
    assert sorted(p.relative_to(out / "masks").as_posix() for p in (out / "masks").rglob("*.png")) == [
        "a/frame0.png", "b/frame0.png", "b/frame1.png"]
    assert not (out / "overlay").exists()


def test_overlay_opacity_and_legend() -> None:
    schema = comma10k()
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (40, 60), dtype=np.uint8)
    np.testing.assert_array_equal(Painter(schema, 0.0, legend=False).overlay(image, mask), image)
    full = Painter(schema, 1.0, legend=False).overlay(image, mask)
    np.testing.assert_array_equal(full, schema.colorize(mask))
    half = Painter(schema, 0.5, legend=False).overlay(image, mask).astype(int)
    expected = (image.astype(int) + schema.colorize(mask).astype(int)) / 2
    assert np.abs(half - expected).max() <= 1
    painter = Painter(schema, 0.5, legend=True)
    with_legend = painter.overlay(image, mask)
    rgb, _ = painter.legend_image(40)
    assert not np.array_equal(with_legend[2:10, 2:10], half[2:10, 2:10])  # the legend is drawn top left
    assert rgb.shape[0] > 5 * 8  # one row per class
    with pytest.raises(DrivelabError):
        Painter(schema, 1.5)


def test_predict_real_footage(tiny_checkpoint: Path, driving_video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = predict(tiny_checkpoint, driving_video, out, max_frames=20, side_by_side=True, gif=True,
                      batch_size=8, progress=False)
    assert summary.frames == 20 and summary.videos == 1 and not summary.stopped
    src = probe(driving_video)
    video = out / f"{driving_video.stem}_overlay.mp4"
    with av.open(str(video)) as c:  # read back with PyAV: codec, frame count, size, rate
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert (s.codec_context.width, s.codec_context.height) == (src.width, src.height) == (256, 128)
        assert s.average_rate == src.fps == 20
        assert sum(1 for _ in c.decode(s)) == 20
    sbs = probe(out / f"{driving_video.stem}_side_by_side.mp4")
    assert (sbs.width, sbs.height, sbs.frames) == (512, 128, 20)
    gif = Image.open(out / f"{driving_video.stem}_preview.gif")
    assert gif.n_frames == 20 and gif.size == (256, 128)
    table = pd.read_csv(out / f"{driving_video.stem}_pixel_share.csv")
    assert list(table["frame"]) == list(range(20))
    assert table["time_s"].iloc[-1] == pytest.approx(19 / 20)
    # The overlay really is the predicted mask blended onto the real frame.
    frame = read_frames(driving_video, 1)[0]
    mask = Predictor(tiny_checkpoint).predict(frame)
    expected = Painter(comma10k(), 0.5, legend=True).overlay(frame, mask)
    got = read_frames(video, 1)[0].astype(int)
    # H.264 is lossy (random-weight masks are speckle, the worst case), so compare distances.
    assert np.abs(got - expected.astype(int)).mean() < 0.5 * np.abs(got - frame.astype(int)).mean()


def _mkv(path: Path, frames: list[np.ndarray], fps: int = 20) -> None:
    with av.open(str(path), "w", format="matroska") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def test_truncated_video_processes_what_it_can(tiny_checkpoint: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    frames = [np.roll(base, 3 * i, axis=1) for i in range(40)]
    full = tmp_path / "full.mkv"
    _mkv(full, frames)
    data = full.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    summary = predict(tiny_checkpoint, cut, out, progress=False)
    assert 0 < summary.frames < 40
    assert len(summary.stopped) == 1 and f"frame {summary.frames}" in summary.stopped[0]
    assert probe(out / "cut_overlay.mp4").frames == summary.frames


def test_unreadable_video_and_missing_input_are_one_line_errors(tiny_checkpoint: Path,
                                                               tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(DrivelabError, match="cannot open video"):
        predict(tiny_checkpoint, bad, tmp_path / "out", progress=False)
    with pytest.raises(DrivelabError, match="input not found"):
        predict(tiny_checkpoint, tmp_path / "nope.png", tmp_path / "out", progress=False)


def test_palette_mismatch_fails_before_any_work(tiny_checkpoint: Path, tmp_path: Path) -> None:
    _images(tmp_path / "frames", n=1)
    out = tmp_path / "out"
    with pytest.raises(DrivelabError, match="5 classes.*19"):
        predict(tiny_checkpoint, tmp_path / "frames", out, palette="cityscapes19", progress=False)
    assert not out.exists()
    predict(tiny_checkpoint, tmp_path / "frames", out, palette="comma10k", progress=False)  # matching is fine
    assert (out / "masks" / "frame0.png").exists()


def test_instance_checkpoints_go_to_the_instance_predictor(tiny_checkpoint: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = read_checkpoint(tiny_checkpoint)
    inst = tmp_path / "inst.pt"
    save_checkpoint(inst, _StateOnly(ckpt["model"]), ckpt["model_spec"], comma10k(), task="instance")
    calls = []
    fake = types.ModuleType("drivelab.seg.instance.predict")
    fake.predict_instances = lambda checkpoint, inputs, out_dir, **opts: calls.append(
        (checkpoint, inputs, out_dir, opts)) or "instance summary"
    monkeypatch.setitem(sys.modules, "drivelab.seg.instance.predict", fake)
    assert predict(inst, tmp_path, tmp_path / "out", opacity=0.3) == "instance summary"
    # The checkpoint is read once and handed down; only the options the user changed travel.
    assert calls[0][0]["path"] == str(inst) and calls[0][3] == {"opacity": 0.3, "progress": True}
    fake.predict_instances = lambda checkpoint, inputs, out_dir, *, opacity=0.5, progress=True: "ok"
    with pytest.raises(DrivelabError, match="does not take palette"):
        predict(inst, tmp_path, tmp_path / "out", palette="comma10k")


class _StateOnly:
    def __init__(self, state: dict) -> None:
        self._state = state

    def state_dict(self) -> dict:
        return self._state


def test_video_writer_is_atomic(tmp_path: Path) -> None:
    frame = np.zeros((33, 47, 3), np.uint8)  # odd sizes get padded to even for yuv420p
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError), VideoWriter(path, 10) as w:
        w.write(frame)
        raise RuntimeError("killed mid-encode")
    assert not path.exists() and not list(tmp_path.iterdir())
    assert write_video(path, [frame] * 5, 10) == 5
    info = probe(path)
    assert (info.width, info.height, info.frames, info.fps) == (48, 34, 5, 10)


def test_cli_predict_and_export(tiny_checkpoint: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    _images(tmp_path / "frames", n=2)
    res = runner.invoke(app, ["export", str(tiny_checkpoint), "--format", "onnx", "--out",
                              str(tmp_path / "m.onnx")])
    assert res.exit_code == 0, res.output
    assert "max |onnxruntime - torch|" in res.output
    res = runner.invoke(app, ["predict", str(tmp_path / "m.onnx"), str(tmp_path / "frames"), "--out",
                              str(tmp_path / "out"), "--no-progress", "--color"])
    assert res.exit_code == 0, res.output
    assert "2 frames (2 images, 0 videos)" in res.output
    assert len(list((tmp_path / "out" / "color").glob("*.png"))) == 2
    res = runner.invoke(app, ["predict", str(tiny_checkpoint), str(tmp_path / "frames"),
                              "--palette", "bdd100k"])
    assert isinstance(res.exception, DrivelabError)


def test_raw_hevc_stream(tiny_checkpoint: Path, tmp_path: Path) -> None:
    # comma's fcamera.hevc is a raw HEVC elementary stream: no container, no frame rate.
    path = tmp_path / "fcamera.hevc"
    with av.open(str(path), "w", format="hevc") as c:
        s = c.add_stream("libx265", rate=20, options={"x265-params": "log-level=none"})
        s.width, s.height, s.pix_fmt = 96, 64, "yuv420p"
        for i in range(6):
            frame = np.full((64, 96, 3), 30 * i, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    summary = predict(tiny_checkpoint, path, tmp_path / "out", progress=False)
    assert summary.frames == 6 and not summary.stopped
    info = probe(tmp_path / "out" / "fcamera_overlay.mp4")
    assert (info.frames, info.width, info.height, info.fps) == (6, 96, 64, 20)
    summary = predict(tiny_checkpoint, path, tmp_path / "out10", fps=10, progress=False)
    assert probe(tmp_path / "out10" / "fcamera_overlay.mp4").fps == 10


def test_bf16_autocast_path_and_bad_options(tiny_checkpoint: Path) -> None:
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    fp32 = Predictor(tiny_checkpoint).probs(image)
    bf16 = Predictor(tiny_checkpoint, precision="bf16", channels_last=True).probs(image)
    assert bf16.dtype == np.float32 and np.abs(bf16 - fp32).mean() < 0.05
    with pytest.raises(DrivelabError, match="precision"):
        Predictor(tiny_checkpoint, precision="fp8")
    with pytest.raises(DrivelabError, match="backend"):
        Predictor(tiny_checkpoint, backend="tensorrt")
