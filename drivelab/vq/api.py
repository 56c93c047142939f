"""Compress and decompress one token segment to/from the drivelab vq container.

``compress`` and ``decompress`` handle one segment. Shared state (weights, trained starting
states) goes through a ``SharedStore``: given one (an archive's), segments only reference it;
without one, a standalone file carries the blobs inline (or, with ``inline=False``, expects them
back at decode time). A ``Chain`` carries a codec's model state from segment to segment of a
solid archive; each segment records its place in the chain and refuses to decode out of order.
"""

from __future__ import annotations

import json
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


def compress(seg: Segment, codec: str, *, store: SharedStore | None = None, chain: Chain | None = None,
             inline: bool = True, **options: Any) -> bytes:
    """Segment -> container bytes (header + codec payload)."""
    check_name(seg.name, seg.origin or None)
    layout = layout_of(seg.raw, seg.origin or seg.name)
    mod = codecs.module(codec)
    if chain is not None and not getattr(mod, "SOLID", False):
        raise DrivelabError(f"the {codec} codec has no solid mode (it cannot carry state across segments)")
    own = SharedStore() if store is None else store
    kw = codecs.accepted(mod.encode, store=own, chain=chain)
    payload, extra = mod.encode(seg.flat, **kw, **options)
    refs = sorted(set(extra.get("shared", {}).values()))
    if chain is not None:
        extra = {**extra, "solid": [chain.id, chain.index]}
        chain.index += 1
    header = container.Header(
        codec=codec,
        codec_version=codecs.VERSIONS[codec],
        name=seg.name,
        layout=layout.to_json(),
        sha256=container.sha256(seg.raw),
        shared=refs,
        extra=extra,
    )
    blobs = own.subset(refs) if store is None and inline else {}
    return container.pack(header, payload, blobs)


def decompress(data: bytes, path: str | Path | None = None, *, store: SharedStore | None = None,
               chain: Chain | None = None, progress: Any = None) -> Segment:
    """Container bytes -> Segment with the original .npy bytes; verifies the SHA-256."""
    header, payload, inline = container.unpack(data, path)
    check_name(header.name, path)
    if header.codec not in codecs.NAMES:
        raise DrivelabError(f"unknown codec {header.codec!r} in header", path)
    if header.codec_version != codecs.VERSIONS[header.codec]:
        raise DrivelabError(f"{header.codec} codec version {header.codec_version} is not supported "
                            f"(this drivelab writes version {codecs.VERSIONS[header.codec]})", path)
    solid = header.extra.get("solid")
    if solid is not None and (chain is None or [chain.id, chain.index] != list(solid)):
        raise DrivelabError(
            f"segment {solid[1]} of solid chain {solid[0]}: it starts from the model state its earlier "
            "segments leave, so decompress the whole archive folder", path)
    own = SharedStore(inline)
    for ref in header.shared:
        if ref not in own:
            if store is None:
                raise DrivelabError("needs shared state that is not in this file (encoded without "
                                    "embedding it: pass --model FILE)", path)
            own.put(store.get(ref))
    try:
        layout = Layout.from_json(header.layout)
        frames = header.frames
    except (KeyError, TypeError, ValueError) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    mod = codecs.module(header.codec)
    kw = codecs.accepted(mod.decode, store=own, chain=chain, progress=progress)
    try:
        flat = mod.decode(payload, header.extra, frames, **kw)
    except DrivelabError as e:
        if e.path is not None:
            raise
        raise DrivelabError(str(e), path) from None
    except Exception as e:  # a corrupted payload can fail deep inside a decoder
        raise DrivelabError(f"corrupted payload, decoding failed ({type(e).__name__}: {e})", path) from None
    if chain is not None and solid is not None:
        chain.index += 1
    try:
        raw = rebuild(flat, layout)
        tokens = np.asarray(flat).reshape(layout.shape).astype(np.dtype(layout.dtype))
    except (TypeError, ValueError) as e:
        raise DrivelabError(f"corrupted header ({e})", path) from None
    if container.sha256(raw) != header.sha256:
        raise DrivelabError("checksum mismatch: decoded tokens differ from the original", path)
    if layout.fortran:
        tokens = np.asfortranarray(tokens)
    return Segment(name=header.name, tokens=tokens, raw=raw, origin=str(path or header.name))


def describe(data: bytes, path: str | Path | None = None) -> str:
    header, _ = container.read_header(data, path)
    return json.dumps(asdict(header), indent=2)
