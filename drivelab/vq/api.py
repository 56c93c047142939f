"""Compress and decompress one token segment to/from the drivelab vq container.

``compress`` and ``decompress`` handle one segment. Shared state (weights, trained starting
states) goes through a ``SharedStore``: given one (an archive's), segments only reference it;
without one, a standalone file carries the blobs inline (or, with ``inline=False``, expects them
back at decode time). A ``Chain`` carries a codec's model state from segment to segment of a
solid archive; each segment records its place in the chain and refuses to decode out of order.
The gpt codec codes many segments in one batch (``compress_batch``); its files name their batch
(``batch_key``) and decode together (``decompress_batch``), rebuilding the identical batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from drivelab.errors import DrivelabError
from drivelab.vq import codecs, container
from drivelab.vq.store import SharedStore
from drivelab.vq.tokens import Layout, Segment, check_name, layout_of, rebuild


class Chain:
    """Model state carried across the segments of one solid chain, in a fixed order."""

    def __init__(self, id: int = 0) -> None:
        self.id = id  # which chain of the archive
        self.index = 0  # segments coded so far
        self.state: Any = None  # the codec's business


def _pack(seg: Segment, codec: str, payload: bytes, extra: dict[str, Any], own: SharedStore,
          store: SharedStore | None, chain: Chain | None, inline: bool) -> bytes:
    refs = sorted(set(extra.get("shared", {}).values()))
    if chain is not None:
        extra = {**extra, "solid": [chain.id, chain.index]}
        chain.index += 1
    header = container.Header(
        codec=codec,
        codec_version=codecs.VERSIONS[codec],
        name=seg.name,
        layout=layout_of(seg.raw, seg.origin or seg.name).to_json(),
        sha256=container.sha256(seg.raw),
        shared=refs,
        extra=extra,
    )
    blobs = own.subset(refs) if store is None and inline else {}
    return container.pack(header, payload, blobs)


def compress(seg: Segment, codec: str, *, store: SharedStore | None = None, chain: Chain | None = None,
             inline: bool = True, **options: Any) -> bytes:
    """Segment -> container bytes (header + codec payload)."""
    check_name(seg.name, seg.origin or None)
    layout_of(seg.raw, seg.origin or seg.name)  # refuses what cannot round-trip, before any coding
    mod = codecs.module(codec)
    if chain is not None and not getattr(mod, "SOLID", False):
        raise DrivelabError(f"the {codec} codec has no solid mode (it cannot carry state across segments)")
    own = SharedStore() if store is None else store
    kw = codecs.accepted(mod.encode, store=own, chain=chain)
    payload, extra = mod.encode(seg.flat, **kw, **options)
    return _pack(seg, codec, payload, extra, own, store, chain, inline)


def compress_batch(segs: list[Segment], codec: str, progress: Any = None, *, store: SharedStore | None = None,
                   inline: bool = True, **options: Any) -> list[bytes]:
    """Many segments -> container bytes each; the gpt codec codes them in one batch (its header
    records the batch layout), the others one by one. ``store`` as for ``compress``: an
    archive's store keeps the weights once; without one each file carries them inline."""
    if codec != "gpt":
        return [compress(s, codec, store=store, inline=inline, **options) for s in segs]
    from drivelab.vq.codecs.gpt import encode_batch

    for s in segs:
        check_name(s.name, s.origin or None)
        layout_of(s.raw, s.origin or s.name)
    own = SharedStore() if store is None else store
    coded = encode_batch([s.flat for s in segs], progress=progress, store=own, **options)
    return [_pack(s, codec, p, e, own, store, None, inline) for s, (p, e) in zip(segs, coded, strict=True)]


def _parse(data: bytes, path: str | Path | None) -> tuple[container.Header, bytes, dict]:
    header, payload, inline = container.unpack(data, path)
    check_name(header.name, path)
    if header.codec not in codecs.NAMES:
        raise DrivelabError(f"unknown codec {header.codec!r} in header", path)
    if header.codec_version != codecs.VERSIONS[header.codec]:
        raise DrivelabError(f"{header.codec} codec version {header.codec_version} is not supported "
                            f"(this drivelab writes version {codecs.VERSIONS[header.codec]})", path)
    return header, payload, inline


@contextmanager
def _decoding(path: str | Path | None) -> Iterator[None]:
    """Any decoder failure becomes one line naming the file."""
    try:
        yield
    except DrivelabError as e:
        if e.path is not None:
            raise
        raise DrivelabError(str(e), path) from None
    except Exception as e:  # a corrupted payload can fail deep inside a decoder
        raise DrivelabError(f"corrupted payload, decoding failed ({type(e).__name__}: {e})", path) from None


def _restore(header: container.Header, flat: np.ndarray, path: str | Path | None) -> Segment:
    try:
        layout = Layout.from_json(header.layout)
        raw = rebuild(flat, layout)
        tokens = np.asarray(flat).reshape(layout.shape).astype(np.dtype(layout.dtype))
    except (KeyError, TypeError, ValueError) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    if container.sha256(raw) != header.sha256:
        raise DrivelabError("checksum mismatch: decoded tokens differ from the original", path)
    if layout.fortran:
        tokens = np.asfortranarray(tokens)
    return Segment(name=header.name, tokens=tokens, raw=raw, origin=str(path or header.name))


def _fetch_shared(header: container.Header, own: SharedStore, store: SharedStore | None,
                  path: str | Path | None) -> None:
    """Put into ``own`` every blob the header names that it lacks, from the archive's ``store``."""
    for ref in header.shared:
        if ref not in own:
            if store is None:
                raise DrivelabError("needs shared state that is not in this file (encoded without "
                                    "embedding it: pass --model FILE)", path)
            own.put(store.get(ref))


def decompress(data: bytes, path: str | Path | None = None, *, store: SharedStore | None = None,
               chain: Chain | None = None, progress: Any = None, **options: Any) -> Segment:
    """Container bytes -> Segment with the original .npy bytes; verifies the SHA-256. ``options``
    go to the codecs that take them (gpt: ``model``, its external weights, and ``device``)."""
    header, payload, inline = _parse(data, path)
    solid = header.extra.get("solid")
    if solid is not None and (chain is None or [chain.id, chain.index] != list(solid)):
        raise DrivelabError(
            f"segment {solid[1]} of solid chain {solid[0]}: it starts from the model state its earlier "
            "segments leave, so decompress the whole archive folder", path)
    own = SharedStore(inline)
    _fetch_shared(header, own, store, path)
    try:
        frames = header.frames
    except (KeyError, TypeError, ValueError) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    mod = codecs.module(header.codec)
    kw = codecs.accepted(mod.decode, store=own, chain=chain, progress=progress, **options)
    with _decoding(path):
        flat = mod.decode(payload, header.extra, frames, **kw)
    if chain is not None and solid is not None:
        chain.index += 1
    return _restore(header, flat, path)


def batch_key(data: bytes, path: str | Path | None = None) -> str | None:
    """The gpt batch a file belongs to (files with one key decode together), else None."""
    header, _, _ = _parse(data, path)
    batch = header.extra.get("batch") if header.codec == "gpt" else None
    return str(batch["id"]) if isinstance(batch, dict) and "id" in batch else None


def decompress_batch(items: list[tuple[bytes, str | Path | None]], progress: Any = None, *,
                     store: SharedStore | None = None, **options: Any) -> list[Segment]:
    """Members of one gpt batch (same ``batch_key``) -> Segments, decoded in one batch; shared
    state from the files' inline blobs or the archive's ``store``."""
    from drivelab.vq.codecs.gpt import decode_batch

    parsed = [(_parse(d, p), p) for d, p in items]
    where = items[0][1] if len(items) == 1 else (Path(items[0][1]).parent if items[0][1] else None)
    own = SharedStore()
    for (header, _, inline), path in parsed:
        for _, blob in SharedStore(inline).items():
            own.put(blob)
        _fetch_shared(header, own, store, path)
    with _decoding(where):
        flats = decode_batch([(pl, h.extra, h.frames) for (h, pl, _), _ in parsed], progress=progress,
                             store=own, **options)
    return [_restore(h, f, p) for ((h, _, _), p), f in zip(parsed, flats, strict=True)]


def describe(data: bytes, path: str | Path | None = None) -> str:
    header, _ = container.read_header(data, path)
    return json.dumps(asdict(header), indent=2)
