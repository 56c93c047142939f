"""Inference speed: the BDD100K seed's naive loop vs drivelab predict (eager, onnxruntime).

    python benchmarks/predict_speed.py [--frames 60] [--threads 2] [--decoder light|smp]

Same model everywhere: smp U-Net with a MobileNetV3-Large encoder (random weights, nothing
downloaded), 5 classes, at 256x512. Rows:

- naive loop: per frame PIL load, model, save four PNGs (original, mask, colour map, overlay),
  what the BDD100K seed did;
- drivelab predict on a folder of PNGs (palette mask + colour map + overlay + CSV) and on a
  256x512 H.264 video (overlay MP4 + CSV), torch eager and onnxruntime;
- model only (Predictor on in-memory frames), to separate the model from file I/O.

GPU rows (437x582 and 874x1164, batch 32, bf16) run when CUDA is available.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from drivelab.schema import comma10k
from drivelab.seg.inference import Predictor
from drivelab.seg.onnx import export_onnx
from drivelab.seg.onnx import quantize as quantize_onnx
from drivelab.seg.predict import predict
from drivelab.video import read_frames, write_video

SIZE = (256, 512)
DECODERS = {"light": (64, 32, 16, 16, 16), "smp": (256, 128, 64, 32, 16)}
CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "commavq" / "decoded_segment.mp4"


def build(decoder: str) -> torch.nn.Module:
    import segmentation_models_pytorch as smp

    class Normalised(torch.nn.Module):  # the drivelab model contract: [0, 1] in, normalise inside
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net((x - self.mean) / self.std)

    torch.manual_seed(0)
    net = smp.Unet("tu-mobilenetv3_large_100", encoder_weights=None, classes=5,
                   decoder_channels=DECODERS[decoder])
    return Normalised(net).eval()


def frames(n: int) -> list[np.ndarray]:
    """Real driving frames upscaled to 256x512 when the shared clip is there, else noise."""
    if CLIP.exists():
        src = read_frames(CLIP, n)
        return [np.asarray(Image.fromarray(f).resize((SIZE[1], SIZE[0]), Image.BILINEAR)) for f in src]
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def naive_loop(model: torch.nn.Module, paths: list[Path], out: Path) -> float:
    """The seed's loop, one frame at a time, four PNGs per frame."""
    schema = comma10k()
    t = time.perf_counter()
    for p in paths:
        img = Image.open(p).convert("RGB")
        x = torch.from_numpy(np.asarray(img)).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            mask = model(x).argmax(1)[0].numpy().astype(np.uint8)
        color = schema.colorize(mask)
        overlay = (0.5 * np.asarray(img) + 0.5 * color).astype(np.uint8)
        img.save(out / f"{p.stem}_original.png")
        Image.fromarray(mask).save(out / f"{p.stem}_mask.png")
        Image.fromarray(color).save(out / f"{p.stem}_color.png")
        Image.fromarray(overlay).save(out / f"{p.stem}_overlay.png")
    return len(paths) / (time.perf_counter() - t)


def model_only(pred: Predictor, images: list[np.ndarray], batch: int) -> float:
    pred.predict_batch(images[:batch])  # warm-up (allocations, ORT graph)
    t = time.perf_counter()
    for i in range(0, len(images), batch):
        pred.predict_batch(images[i:i + batch])
    return len(images) / (time.perf_counter() - t)


def gpu_rows(model: torch.nn.Module) -> list[tuple[str, str]]:
    if not torch.cuda.is_available():
        return [(f"GPU model only {h}x{w}, batch 32, bf16", "not measured (no device)")
                for h, w in ((437, 582), (874, 1164))]
    rows = []
    for h, w in ((437, 582), (874, 1164)):
        pred = Predictor(model, device="cuda", schema=comma10k(), size=(h // 32 * 32 + 32, w // 32 * 32 + 32))
        rng = np.random.default_rng(0)
        imgs = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(32)]
        pred.predict_batch(imgs)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(5):
            pred.predict_batch(imgs)
        torch.cuda.synchronize()
        rows.append((f"GPU model only {h}x{w}, batch 32, bf16 ({torch.cuda.get_device_name()})",
                     f"{5 * 32 / (time.perf_counter() - t):.1f}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder", choices=sorted(DECODERS), default="light",
                    help="U-Net decoder widths: light (64,32,16,16,16) or smp's default (256,...,16)")
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build(args.decoder)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    imgs = frames(args.frames)
    work = Path(tempfile.mkdtemp(prefix="drivelab-bench-"))
    rows: list[tuple[str, str]] = []
    try:
        folder = work / "frames"
        folder.mkdir()
        for i, im in enumerate(imgs):
            Image.fromarray(im).save(folder / f"{i:05d}.png")
        video = work / "clip.mp4"
        write_video(video, imgs, 20)
        naive_out = work / "naive"
        naive_out.mkdir()
        n_naive = min(len(imgs), 30)
        naive = naive_loop(model, sorted(folder.glob("*.png"))[:n_naive], naive_out)
        rows.append(("naive loop: PIL load, model, 4 PNGs per frame (BDD100K seed)", f"{naive:.1f}"))

        schema = comma10k()
        eager = Predictor(model, schema=schema, size=SIZE, threads=args.threads)
        fp32 = export_onnx(model, work / "model.onnx", size=SIZE, schema=schema).path
        ort = Predictor(fp32, threads=args.threads)
        int8 = quantize_onnx(fp32, work / "model.int8.onnx", imgs[::4])
        ort8 = Predictor(int8.path, threads=args.threads)
        best = {}
        for label, pred in (("eager", eager), ("onnxruntime", ort), ("onnxruntime int8", ort8)):
            s = predict(pred, folder, work / f"img_{label}", color=True, batch_size=args.batch,
                        progress=False)
            rows.append((f"drivelab predict {label}: PNG folder -> palette mask, colour, overlay, CSV",
                         f"{s.fps:.1f}"))
            s = predict(pred, video, work / f"vid_{label}", batch_size=args.batch, progress=False)
            rows.append((f"drivelab predict {label}: H.264 video -> overlay MP4 + CSV", f"{s.fps:.1f}"))
            best[label] = s.fps
            for b in (1, args.batch):
                rows.append((f"model only {label}, batch {b}", f"{model_only(pred, imgs, b):.1f}"))
        rows += gpu_rows(model)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nU-Net MobileNetV3-Large ({args.decoder} decoder, {params:.1f} M params), {SIZE[0]}x{SIZE[1]}, "
          f"{args.frames} frames, {args.threads} threads, torch {torch.__version__}")
    width = max(len(r[0]) for r in rows)
    print(f"| {'pipeline'.ljust(width)} | frames/s |")
    print(f"|{'-' * (width + 2)}|---------:|")
    for name, fps in rows:
        print(f"| {name.ljust(width)} | {fps:>8} |")
    print(f"\nint8 model: {int8.summary().split(': ', 1)[1]}")
    for label in ("onnxruntime", "onnxruntime int8"):
        print(f"{label} video pipeline: {best[label]:.1f} frames/s, {best[label] / naive:.1f}x the naive "
              "loop (target >= 25 frames/s and >= 3x)")
    print(f"load average while running: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
