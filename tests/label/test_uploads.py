"""Uploads are checked before they are decoded: PNG headers (size, mode, depth), bounded
decompression, 4xx with the reason and nothing written; a PNG bomb does not raise the server's
memory; dataset images too large to decode safely are refused, not crashed on."""

from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from drivelab.data import open_dataset
from drivelab.label.uploads import PNG_SIGNATURE, png_header
from tests.label import procs
from tests.label.conftest import H, W, client


def _png(arr: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format="PNG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int, height: int, rows: int | None = None) -> bytes:
    """A real greyscale PNG of ``width`` x ``height`` zeros: a few hundred KiB that decode to
    width*height bytes. ``rows`` limits how many rows of pixel data it holds (a truncated file)."""
    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height if rows is None else rows)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def test_png_header_is_read_without_decoding():
    assert png_header(png_bomb(30000, 30000, rows=2)) == (30000, 30000, 8, 0, 0)
    with pytest.raises(Exception, match="not a PNG"):
        png_header(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)


def test_mask_pngs_are_checked_before_decoding(comma_set):
    reader = open_dataset(comma_set)
    name = reader.items[0].name
    c = client(comma_set)
    good = reader.load_mask(reader.items[0]).copy()
    good[:3] = 1
    cases = [
        (png_bomb(30000, 30000, rows=4), 422, "30000x30000, the image is 64x48"),
        (png_bomb(W + 1, H), 422, "65x48"),
        (_png(np.zeros((H, W, 3), np.uint8)), 422, "not 8-bit RGB"),
        (_png(np.zeros((H, W), np.uint16)), 422, "16-bit"),
        (_png(np.zeros((H, W), np.uint8)).replace(b"IHDR", b"IHDX", 1), 422, "not a PNG"),
        (PNG_SIGNATURE + b"garbage" * 10, 422, "not a PNG"),
        (png_bomb(W, H, rows=3), 422, "unreadable mask PNG"),  # right header, truncated data
    ]
    for body, status, reason in cases:
        r = c.post("/api/mask", params={"name": name, "version": 0}, content=body)
        assert r.status_code == status and reason in r.json()["detail"], (reason, r.status_code, r.text)
    assert c.post("/api/mask", params={"name": name, "version": 0}, content=b"x", headers={
        "X-Mask-Encoding": "br"}).status_code == 415
    # No mask of a 64x48 image needs more than its raw bytes plus framing: far below --max-upload.
    r = c.post("/api/mask", params={"name": name, "version": 0}, content=b"\0" * (H * W + H + 65537))
    assert r.status_code == 413
    # Nothing was written by any refusal: no history, no version.
    assert not (comma_set / ".drivelab" / "history").exists()
    assert c.get("/api/review", params={"name": name}).json()["version"] == 0
    # A valid single-channel PNG (greyscale or palette) is accepted.
    r = c.post("/api/mask", params={"name": name, "version": 0}, content=_png(good, "L"))
    assert r.status_code == 200, r.text
    assert np.array_equal(open_dataset(comma_set).load_mask(reader.items[0]), good)


def test_dataset_image_too_large_to_decode_is_refused(comma_set, monkeypatch):
    from drivelab.label import index

    monkeypatch.setattr(index, "REFRESH_EVERY", 0.0)
    (comma_set / "files_trainable").unlink()  # it lists the known masks; a new image is not in it
    c = client(comma_set)
    bomb = comma_set / "imgs" / "0099_bomb.png"
    bomb.write_bytes(png_bomb(20000, 20000, rows=2))  # 400 Mpx declared in a few bytes
    names = [it["name"] for it in c.get("/api/images").json()["items"]]
    assert "0099_bomb.png" in names  # the index refreshed when the file appeared
    for path in ("/api/thumb", "/api/mask"):
        r = c.get(path, params={"name": "0099_bomb.png"})
        assert r.status_code == 422 and "pixel limit" in r.json()["detail"], (path, r.text)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_png_bombs_do_not_raise_peak_memory(tmp_path):
    """Six concurrent uploads of a 160 KiB PNG declaring 13000x13000 pixels (169 MB decoded each),
    to an image of comma10k's size (so the body is under the upload cap and reaches the PNG check)."""
    from drivelab.data.synth import synth_dataset
    from drivelab.label.cli import free_port

    root = synth_dataset("comma10k", tmp_path / "big", n=1, size=(874, 1164), seed=0)
    bomb = png_bomb(13000, 13000)
    assert len(bomb) < 400_000
    name = open_dataset(root).items[0].name
    port = free_port()
    proc = procs.start_server(root, port)
    try:
        with procs.session(port) as c:
            c.get("/api/mask", params={"name": name})  # warm up the code paths a save uses
            before = procs.peak_rss_kib(proc.pid)
            results = []

            def upload() -> None:
                r = httpx.post(f"http://127.0.0.1:{port}/api/mask", params={"name": name, "version": 0},
                               content=bomb, headers=dict(c.headers), timeout=60)
                results.append((r.status_code, r.json()["detail"]))

            threads = [threading.Thread(target=upload) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            after = procs.peak_rss_kib(proc.pid)
    finally:
        proc.kill()
        proc.join(10)
    assert [s for s, _ in results] == [422] * 6 and "13000x13000, the image is 1164x874" in results[0][1]
    grown_mb = (after - before) / 1024
    assert grown_mb < 40, f"peak memory grew by {grown_mb:.0f} MB"  # decoding one would be 169 MB
