"""Archives of many segments: a folder (or a challenge zip's ``data/``) of ``.dlvq`` files that share
state stored once, optionally coded in solid chains.

Layout::

    archive.dlva          manifest: format, segment count, chain lengths, shared references
    <name>.dlvq           one container per segment (drivelab.vq.container)
    shared/<sha256>.bin   each shared blob once (weights, trained starting states)

``archive.dlva`` is ``b"DLVA" | u32 length | u32 CRC-32 | JSON``.

Solid chains. With ``solid=True`` the segments are split, in their given order, into as many
contiguous chains as there are workers; within a chain each segment starts from the model
state the previous one left (``api.Chain``), the way zpaq learns across the files of one
archive, and chains run in parallel. Each segment header records ``extra["solid"] = [chain,
index]``; the manifest records the chain lengths, so decoding rebuilds exactly the same chains
and notices a missing or reordered segment.

Restoring reads every header first (names must be plain file names and unique), decodes into a
staging folder inside the output folder and moves the files into place only when every segment
decoded and matched its SHA-256: nothing is written on failure, and nothing outside the output
folder ever.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError
from drivelab.io import fsync_dir, write_bytes
from drivelab.vq import api, codecs, container
from drivelab.vq.store import BLOB_SUFFIX, SharedStore
from drivelab.vq.tokens import Segment, check_name

MANIFEST = "archive.dlva"
SHARED_DIR = "shared"
SUFFIX = ".dlvq"
_MAGIC = b"DLVA"
_FIXED = struct.Struct("<4sII")
FORMAT = 1
BATCH = 16  # independent segments per worker task (shared blobs travel back once per task)


@dataclass
class Manifest:
    codec: str
    segments: int
    chains: list[int] = field(default_factory=list)  # solid chain lengths; empty = independent
    shared: list[str] = field(default_factory=list)  # references the segments use
    external: list[str] = field(default_factory=list)  # of those, the ones not stored (--no-embed)
    format: int = FORMAT

    def to_bytes(self) -> bytes:
        meta = json.dumps(self.__dict__, separators=(",", ":"), sort_keys=True).encode()
        return _FIXED.pack(_MAGIC, len(meta), zlib.crc32(meta)) + meta

    @classmethod
    def from_bytes(cls, data: bytes, path: Path) -> Manifest:
        if len(data) < _FIXED.size or data[:4] != _MAGIC:
            raise DrivelabError("not a drivelab archive manifest", path)
        _, n, crc = _FIXED.unpack_from(data)
        meta = data[_FIXED.size : _FIXED.size + n]
        if len(meta) != n or zlib.crc32(meta) != crc:
            raise DrivelabError("corrupted archive manifest (CRC-32 mismatch)", path)
        try:
            m = cls(**json.loads(meta))
        except (TypeError, ValueError) as e:
            raise DrivelabError(f"corrupted archive manifest ({e})", path) from None
        if m.format != FORMAT:
            raise DrivelabError(f"archive format {m.format} is not supported", path)
        return m


# ---------------------------------------------------------------- compressing


def prepare_options(codec: str, options: dict[str, Any]) -> dict[str, Any]:
    """Let the codec turn file options into bytes once, in this process (``prepare`` hook)."""
    mod = codecs.module(codec)
    prepare = getattr(mod, "prepare", None)
    return prepare(dict(options)) if prepare else dict(options)


def _encode_task(args: tuple[str, list[Segment], dict[str, Any], int | None]) -> tuple[list, dict]:
    codec, segs, options, chain_id = args
    store = SharedStore()
    if codec == "gpt":  # one batch: a forward pass serves every segment of the task
        coded = api.compress_batch(segs, "gpt", store=store, inline=False, **options)
        return list(zip([s.name for s in segs], coded, strict=True)), dict(store.items())
    chain = api.Chain(chain_id) if chain_id is not None else None
    out = [(s.name, api.compress(s, codec, store=store, chain=chain, **options)) for s in segs]
    return out, dict(store.items())


def plan_chains(n: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) blocks, as many as workers (at most one per segment)."""
    k = max(1, min(workers, n))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def encode_segments(segments: list[Segment], codec: str, workers: int = 1, solid: bool = False,
                    options: dict[str, Any] | None = None, ray: Any = None,
                    ) -> Iterator[tuple[list[tuple[str, bytes]], dict]]:
    """Yield (coded segments, shared blobs) per task, in segment order. ``ray``: a
    ``drivelab.cluster.RayOptions``: the same tasks as Ray tasks (the same bytes come back)."""
    if solid and not codecs.solid(codec):
        raise DrivelabError(f"the {codec} codec has no solid mode")
    options = prepare_options(codec, options or {})
    per_task = int(options.pop("batch", BATCH)) if codec == "gpt" else BATCH
    if solid:
        blocks = plan_chains(len(segments), workers)
        tasks = [(codec, segments[a:b], options, c) for c, (a, b) in enumerate(blocks)]
    else:
        tasks = [(codec, segments[a : a + per_task], options, None)
                 for a in range(0, len(segments), per_task)]
    if ray is not None:
        from drivelab.cluster import map_items

        yield from map_items(_encode_task, tasks, ray, progress=False, desc="compress")
    elif workers <= 1 or len(tasks) == 1:
        yield from map(_encode_task, tasks)
    else:
        with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
            yield from pool.map(_encode_task, tasks)


@dataclass
class Written:
    segments: int = 0
    bytes: int = 0
    tokens: int = 0
    sizes: dict[str, int] = field(default_factory=dict)


class ArchiveWriter:
    """Collects coded segments and shared blobs; ``put(relpath, bytes)`` is the storage."""

    def __init__(self, put: Callable[[str, bytes], None], codec: str, embed: bool = True) -> None:
        self.put = put
        self.codec = codec
        self.embed = embed
        self.blobs: dict[str, bytes] = {}
        self.chains: dict[int, int] = {}
        self.refs: set[str] = set()
        self.written = Written()

    def add(self, coded: list[tuple[str, bytes]], blobs: dict[str, bytes]) -> None:
        self.blobs.update(blobs)
        for name, data in coded:
            header, _ = container.read_header(data, name)
            self.refs.update(header.shared)
            solid = header.extra.get("solid")
            if solid is not None:
                self.chains[solid[0]] = self.chains.get(solid[0], 0) + 1
            self.put(name + SUFFIX, data)
            self.written.segments += 1
            self.written.bytes += len(data)
            self.written.sizes[name] = len(data)
            self.written.tokens += header.frames * 128

    def close(self) -> Written:
        external = sorted(self.refs) if not self.embed else []
        if self.embed:
            for ref in sorted(self.refs):
                data = self.blobs[ref]
                self.put(f"{SHARED_DIR}/{ref}{BLOB_SUFFIX}", data)
                self.written.bytes += len(data)
        chains = [self.chains[c] for c in sorted(self.chains)]
        manifest = Manifest(self.codec, self.written.segments, chains, sorted(self.refs), external)
        data = manifest.to_bytes()
        self.put(MANIFEST, data)
        self.written.bytes += len(data)
        return self.written


def compress_to_folder(segments: list[Segment], out: Path, codec: str, workers: int = 1, solid: bool = False,
                       embed: bool = True, options: dict[str, Any] | None = None,
                       progress: Callable[[int], None] | None = None, ray: Any = None) -> Written:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DrivelabError("--out must be a folder for several segments", out)
    if out.is_dir() and any(out.glob(f"*{SUFFIX}")):
        raise DrivelabError("folder already holds .dlvq files; give an empty or new folder", out)
    writer = ArchiveWriter(lambda rel, data: write_bytes(out / rel, data), codec, embed)
    for coded, blobs in encode_segments(segments, codec, workers, solid, options, ray):
        writer.add(coded, blobs)
        if progress:
            progress(len(coded))
    return writer.close()


# ---------------------------------------------------------------- restoring


@dataclass
class Item:
    path: Path
    header: container.Header


def _headers(files: Iterable[Path]) -> list[Item]:
    items = []
    for f in files:
        with open(f, "rb") as fh:
            head = fh.read(1 << 16)
        try:
            header, _ = container.read_header(head, f)
        except DrivelabError:
            header, _ = container.read_header(f.read_bytes(), f)  # a header longer than 64 kB
        check_name(header.name, f)
        items.append(Item(f, header))
    return items


def _collect(sources: Iterable[Path]) -> tuple[list[Item], SharedStore, list[Manifest]]:
    store = SharedStore()
    items: list[Item] = []
    manifests = []
    for src in sources:
        src = Path(src)
        if src.is_dir():
            files = sorted(src.glob(f"*{SUFFIX}"))
            if not files:
                raise DrivelabError("no .dlvq files in this folder", src)
            if (src / SHARED_DIR).is_dir():
                store.add_folder(src / SHARED_DIR)
            found = _headers(files)
            if (src / MANIFEST).is_file():
                m = Manifest.from_bytes((src / MANIFEST).read_bytes(), src / MANIFEST)
                if m.segments != len(found):
                    raise DrivelabError(f"archive lists {m.segments} segments, the folder holds {len(found)}",
                                        src)
                manifests.append(m)
            items += found
        elif src.is_file():
            items += _headers([src])
        else:
            raise DrivelabError("not found", src)
    seen: dict[str, Path] = {}
    for it in items:
        if it.header.name in seen:
            raise DrivelabError(f"two segments are named {it.header.name!r} ({seen[it.header.name]} and "
                                f"{it.path}); nothing was restored", it.path)
        seen[it.header.name] = it.path
    return items, store, manifests


def _groups(items: list[Item], manifests: list[Manifest]) -> list[list[Item]]:
    """Independent segments alone; a solid chain's segments together, in chain order."""
    groups: list[list[Item]] = []
    chains: dict[tuple[Path, int], list[Item]] = {}
    batches: dict[str, list[Item]] = {}
    for it in items:
        solid = it.header.extra.get("solid")
        batch = it.header.extra.get("batch") if it.header.codec == "gpt" else None
        if isinstance(batch, dict) and "id" in batch:  # gpt files of one batch decode together
            if batch["id"] not in batches:
                batches[batch["id"]] = []
                groups.append(batches[batch["id"]])
            batches[batch["id"]].append(it)
        elif solid is None:
            groups.append([it])
        else:
            chains.setdefault((it.path.parent, int(solid[0])), []).append(it)
    for (_, c), members in sorted(chains.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        members.sort(key=lambda it: int(it.header.extra["solid"][1]))
        got = [int(it.header.extra["solid"][1]) for it in members]
        if got != list(range(len(members))):
            missing = sorted(set(range(max(got) + 1)) - set(got))[:5]
            raise DrivelabError(
                f"solid chain {c} lacks segment(s) {missing}: a chain's segments start from the state the "
                "earlier ones leave, so decompress the whole archive folder", members[0].path)
        groups.append(members)
    lengths = sorted(len(g) for g in groups if g[0].header.extra.get("solid") is not None)
    listed = sorted(n for m in manifests for n in m.chains)
    if manifests and lengths != listed:
        raise DrivelabError(f"solid chains do not match the manifest ({lengths} vs {listed})")
    return groups


def _decode_group(args: tuple[list[Item], SharedStore, Path, dict[str, Any]]) -> list[str]:
    group, store, staging, gpt_options = args
    if group[0].header.codec == "gpt":
        group = sorted(group, key=lambda it: int(it.header.extra["batch"]["row"]))
        segs = api.decompress_batch([(it.path.read_bytes(), it.path) for it in group], store=store,
                                    **gpt_options)
        for seg in segs:
            write_bytes(safe_path(staging, seg.name), seg.raw)
        return [seg.name for seg in segs]
    chain = api.Chain(int(group[0].header.extra["solid"][0])) if group[0].header.extra.get("solid") else None
    names = []
    for it in group:
        seg = api.decompress(it.path.read_bytes(), it.path, store=store, chain=chain)
        write_bytes(safe_path(staging, seg.name), seg.raw)
        names.append(seg.name)
    return names


def safe_path(folder: Path, name: str) -> Path:
    """``folder/name`` for a plain file name, refused if it would resolve anywhere else."""
    check_name(name)
    target = folder / name
    if target.resolve().parent != folder.resolve():
        raise DrivelabError(f"segment name {name!r} would write outside the output folder", folder)
    return target


def warm_up() -> None:
    """Compile the numba coders once here, so worker processes (forked) do not each compile."""
    from drivelab.vq import cm

    cm.warm_up()


def decompress_many(sources: Iterable[str | Path], out: str | Path, workers: int = 1,
                    models: Iterable[str | Path] = (), progress: Callable[[int], None] | None = None,
                    shard: tuple[int, int] = (0, 1), device: str = "auto", ray: Any = None) -> list[str]:
    """Restore every segment of the given archives / .dlvq files into ``out``; returns the names.
    ``shard=(i, n)``: only every n-th independent segment, solid chain or gpt batch, starting at i.
    ``models``: shared state left out of the archive; for gpt archives, the weights file (checked
    against the SHA-256 the archive records) and ``device``."""
    out = Path(out)
    items, store, manifests = _collect([Path(s) for s in sources])
    models = list(models)
    gpt = any(it.header.codec == "gpt" for it in items)
    gpt_options: dict[str, Any] = {"model": models[0] if gpt and models else None, "device": device}
    for m in models if not gpt else []:
        store.add_file(m)
    groups = _groups(items, manifests)[shard[0] :: shard[1]]
    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".dlvq-restore-", dir=out))
    names: list[str] = []
    pool = None
    try:
        if workers > 1 and any(it.header.codec in ("context", "prior", "mix") for it in items):
            warm_up()
        tasks = [(g, store, staging, gpt_options) for g in groups]
        if ray is not None:  # Ray tasks, one per independent group; the staging folder is shared
            from drivelab.cluster import map_items

            results = map_items(_decode_group, tasks, ray, progress=False, desc="decompress")
        elif workers <= 1 or len(tasks) <= 1:
            results: Iterable[list[str]] = map(_decode_group, tasks)
        else:
            pool = ProcessPoolExecutor(min(workers, len(tasks)))
            results = pool.map(_decode_group, tasks)
        for done in results:
            names += done
            if progress:
                progress(len(done))
        for name in names:
            os.replace(staging / name, safe_path(out, name))
        fsync_dir(out)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
    return names
