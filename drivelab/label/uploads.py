"""Mask uploads: size-capped bodies, bounded gzip, and PNG headers checked before any decoding.

A mask travels as raw H*W bytes (gzip allowed) or as a single-channel 8-bit PNG. Everything that
decides how much memory a body can take is read before decoding: the declared length, the gzip
output bound (the image's H*W) and the PNG's IHDR (dimensions, bit depth, colour type), so a
160 KiB PNG declaring 30000x30000 pixels is refused from its first 33 bytes.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
from PIL import Image

from drivelab.errors import DrivelabError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_IMAGE_PIXELS = 64_000_000  # largest dataset image the app decodes (comma10k's biggest is 2.3 Mpx)


class UploadRefused(DrivelabError):
    """A request body the app will not decode; ``status`` is the HTTP code to answer with."""

    def __init__(self, message: str, name: str | None = None, status: int = 422) -> None:
        super().__init__(message, name)
        self.status = status


def png_header(data: bytes) -> tuple[int, int, int, int, int]:
    """(width, height, bit depth, colour type, interlace) from a PNG's IHDR chunk, without
    decoding anything; raises UploadRefused when the bytes are not a PNG."""
    if len(data) < 33 or data[:8] != PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise UploadRefused("not a PNG (bad signature or no IHDR chunk first)")
    length = struct.unpack(">I", data[8:12])[0]
    if length != 13:
        raise UploadRefused("not a PNG (IHDR chunk has the wrong length)")
    width, height, depth, color, _comp, _filter, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if zlib.crc32(data[12:29]) & 0xFFFFFFFF != struct.unpack(">I", data[29:33])[0]:
        raise UploadRefused("not a PNG (IHDR checksum mismatch)")
    return width, height, depth, color, interlace


def inflate_gzip(body: bytes, limit: int, name: str) -> bytes:
    """Inflate a gzip body to at most ``limit`` bytes (+1 to tell "more" apart): no zip bombs."""
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise UploadRefused(f"bad gzip upload ({e})", name) from None
    if len(out) > limit:
        raise UploadRefused(f"gzip upload inflates past {limit} bytes (the mask is {limit} bytes)", name, 413)
    return out


def decode_mask(body: bytes, height: int, width: int, encoding: str | None, name: str) -> np.ndarray:
    """Request body -> (H, W) uint8 mask: raw H*W bytes (gzip allowed) or a single-channel 8-bit PNG
    of exactly H x W. Refusals are ``UploadRefused`` with the reason."""
    expected = height * width
    enc = (encoding or "").lower().strip()
    if enc not in ("", "raw", "identity", "gzip"):
        raise UploadRefused(f"unknown mask encoding {encoding!r} (raw or gzip)", name, 415)
    if enc == "gzip":
        # A PNG of a mask is smaller than its raw bytes, so H*W bounds either payload.
        body = inflate_gzip(body, expected + 64 * 1024, name)
    if body[:8] == PNG_SIGNATURE:
        return _decode_png(body, height, width, name)
    if len(body) != expected:
        raise UploadRefused(f"mask upload has {len(body)} bytes, expected {width}x{height} = {expected}",
                            name)
    return np.frombuffer(body, dtype=np.uint8).reshape(height, width)


def _decode_png(body: bytes, height: int, width: int, name: str) -> np.ndarray:
    w, h, depth, color, _interlace = png_header(body)
    if (w, h) != (width, height):
        raise UploadRefused(f"mask PNG is {w}x{h}, the image is {width}x{height}", name)
    if color not in (0, 3) or depth != 8:
        kind = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}.get(color, f"type {color}")
        raise UploadRefused(f"mask PNG must hold 8-bit single-channel train ids, not {depth}-bit {kind}",
                            name)
    if _interlace:
        raise UploadRefused("interlaced mask PNGs are not accepted (save it without interlacing)", name)
    # Inflate the pixel data ourselves, bounded by what the header promises, so a stream that is
    # short (a truncated file PIL would pad with zeros) or long (a bomb) is refused.
    raw = _inflate_idat(body, height * (width + 1), name)
    if len(raw) != height * (width + 1):
        raise UploadRefused(f"unreadable mask PNG (pixel data is {len(raw)} bytes, the header says "
                            f"{height * (width + 1)})", name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(body)) as png:
                png.load()
                mask = np.asarray(png, dtype=np.uint8)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as e:
        raise UploadRefused(f"unreadable mask PNG ({e})", name) from None
    if mask.shape != (height, width):
        raise UploadRefused(f"mask PNG decodes to {mask.shape[1]}x{mask.shape[0]}", name)
    return mask


def _inflate_idat(body: bytes, limit: int, name: str) -> bytes:
    pos, chunks = 8, []
    while pos + 8 <= len(body):
        length, kind = struct.unpack(">I4s", body[pos:pos + 8])
        data = body[pos + 8:pos + 8 + length]
        if len(data) != length or pos + 12 + length > len(body):
            raise UploadRefused("unreadable mask PNG (a chunk runs past the end of the file)", name)
        if kind == b"IDAT":
            chunks.append(data)
        elif kind == b"IEND":
            break
        pos += 12 + length
    d = zlib.decompressobj()
    try:
        out = d.decompress(b"".join(chunks), limit + 1)
    except zlib.error as e:
        raise UploadRefused(f"unreadable mask PNG ({e})", name) from None
    return out


def check_image_pixels(height: int, width: int, path: object) -> None:
    """Refuse dataset images too big to decode safely (a bomb dropped into the dataset)."""
    if height * width > MAX_IMAGE_PIXELS:
        raise UploadRefused(f"image is {width}x{height}, over the app's {MAX_IMAGE_PIXELS:,}-pixel limit",
                            str(path), 422)
