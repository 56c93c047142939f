"""The ``gpt`` codec: range coding with a GPT world model's predictions, many segments per batch.

**Windows.** A model with learned positions over W frames (gpt2m: 20) codes a segment in
windows of ``window`` <= W frames advanced ``stride`` frames (comma's gpt2m entries: 20 and
5). The first window codes its frames 0..window-1 with whatever came before them in the
window; every later window prefills ``window - stride`` already-coded frames plus BOS at
positions 0.. and codes ``stride`` new frames token by token through the KV cache. So a
frame is predicted from ``window - stride`` to ``window - 1`` earlier frames, and each token
costs one batched forward step plus a ``(window - stride) / stride`` share of a prefill.

**Batches.** ``encode_batch`` codes many segments together: row r of every forward pass is
segment r, rows are padded to the longest member with token 0, and each segment still gets
its own range-coder stream (its own file). The header of every member records the batch
layout: ``batch = {id, rows, row, frames}`` plus window, stride, device, dtype. A decoder
that has all members (``decode_batch``) rebuilds the identical batch; one that has a single
file runs the same batch shape with filler rows (token 0). That gives the same numbers
because no kernel here mixes rows (matmuls, LayerNorm, attention are row-wise; which
algorithm runs depends on shapes only); the tests check it on CPU.

**Probabilities -> integers, one documented way.** Logits come out in the model's dtype
(fp32 on CPU, bf16 on CUDA by default); on the same device they become a float64 softmax
over the 1024 token values and then integer frequencies ``q = 1 + floor(p * 2**23)`` (the +1
is the floor: no token below ~2**-23). Only these integers cross to the CPU, where
constriction's ``Categorical(perfect=False)`` (exact integer inputs, rescaled and quantised
by plain IEEE arithmetic) drives a ``RangeEncoder`` / ``RangeDecoder`` per segment.
Encoder and decoder run the very same step-by-step loop; the encoder only knows the tokens
beforehand.

**Weights.** The header records the weights' SHA-256, layout and full config, never a
path. Small drivelab checkpoints are stored with the archive (``embed``: the shared store,
``shared/<sha256>.bin`` once per archive or challenge zip, inline in a standalone file);
comma's gpt2m stays outside and ``decompress --model`` must name a file with that hash.
"""

from __future__ import annotations

import copy
import hashlib
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import constriction
import numpy as np

from drivelab.errors import DrivelabError

FREQ_BITS = 23
THREADS = 1  # CPU: one thread, so the reduction order cannot change between runs
MAX_EMBED = 64 << 20  # larger weights must stay outside the archive (--no-embed)


def schedule(frames: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(first context frame, first coded frame, end) of every window over ``frames`` frames."""
    out = [(0, 0, min(window, frames))]
    c = out[0][2]
    while c < frames:
        end = min(c + stride, frames)
        out.append((c + stride - window, c, end))
        c = end
    return out


def default_stride(window: int) -> int:
    return max(1, window // 4)  # 20-frame windows -> 5 (comma's gpt2m entries)


def frequencies(logits: Any) -> Any:
    """(B, >=1024) logits -> (B, 1024) int32 frequencies, on the logits' device (module doc)."""
    import torch

    p = torch.softmax(logits[:, :1024].double(), dim=-1)
    return (torch.floor(p * float(1 << FREQ_BITS)) + 1).to(torch.int32)


@dataclass
class Runtime:
    """Where and how the forward passes run; recorded in the header and required for decoding."""

    device: str  # "cpu" or "cuda"
    dtype: str  # "float32" or "bfloat16"
    device_name: str
    torch: str
    cuda: str | None
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_device(device: str) -> str:
    """``auto``/``cpu``/``cuda`` -> "cpu" or "cuda" (drivelab's one device rule). The device type is
    part of an archive's identity (decoding must run where coding did), so one GPU is addressed as
    "cuda" and CUDA_VISIBLE_DEVICES picks which."""
    from drivelab.device import resolve_device as resolve

    dev = resolve(device)
    if dev.index not in (None, 0):
        raise DrivelabError(f"--device {device}: the gpt codec runs on 'cuda' (pick the GPU with "
                            "CUDA_VISIBLE_DEVICES)")
    return dev.type


def runtime(device: str, dtype: str | None = None) -> Runtime:
    import torch

    device = resolve_device(device)
    dtype = dtype or ("bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else "float32")
    if dtype not in ("float32", "bfloat16"):
        raise DrivelabError(f"dtype must be float32 or bfloat16, got {dtype!r}")
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:  # the SIMD level picks different kernels, so it is part of the identity
        name = f"{platform.machine()} {torch.backends.cpu.get_cpu_capability()}"
    return Runtime(device, dtype, name, torch.__version__, torch.version.cuda if device == "cuda" else None,
                   THREADS if device == "cpu" else 0)


def _check_runtime(rec: dict[str, Any], device: str) -> Runtime:
    """The runtime an archive needs, refused with one line when this machine cannot be it."""
    import torch

    want = str(rec.get("device"))
    if device not in ("auto", want):
        raise DrivelabError(f"coded on {want}; decoding must run there too (got --device {device})")
    if want == "cuda" and not torch.cuda.is_available():
        raise DrivelabError(f"coded on a CUDA GPU ({rec.get('device_name')}); torch sees none here")
    here = runtime(want, str(rec.get("dtype")))
    for key in ("torch", "device_name", "cuda"):
        if rec.get(key) != getattr(here, key):
            raise DrivelabError(
                f"coded with {key} {rec.get(key)}, this is {getattr(here, key)}; "
                "GPT probabilities are only reproducible on the same setup"
            )
    return here


class Stepper:
    """Runs the shared window loop over a (B, F, 128) batch; ``emit`` sees every coded token."""

    def __init__(self, model: Any, rt: Runtime) -> None:
        import torch

        self.rt = rt
        self.dev = torch.device(rt.device)
        dtype = torch.float32 if rt.dtype == "float32" else torch.bfloat16
        if rt.device != "cpu" or dtype != torch.float32:  # never convert the caller's (cached) model
            model = copy.deepcopy(model).to(device=self.dev, dtype=dtype)
        self.model = model.eval()
        self.cond = bool(model.cfg.cond)
        if rt.device == "cpu":
            torch.set_num_threads(rt.threads)
        else:  # no TF32 shortcuts: fp32 must mean fp32 on both sides
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False

    def _cond(self, x: np.ndarray, t: int, k: int | None = None) -> Any:
        """Conditioning of frame ``t`` for every row: all 129 positions (B, 129, 14), or only
        the one predicting token ``k`` (B, 1, 14), read from what ``x`` holds so far."""
        import torch

        from drivelab.vq.gpt import cond_rows, frame_cond

        prev = x[:, t - 1] if t >= 1 else None
        back2 = x[:, t - 2] if t >= 2 else None
        if k is None:
            c = np.stack([
                frame_cond(None if prev is None else prev[r], None if back2 is None else back2[r], x[r, t])
                for r in range(len(x))
            ])
        else:
            c = cond_rows(prev, back2, x[:, t], k)[:, None]
        return torch.from_numpy(c).to(self.dev)

    def run(
        self,
        x: np.ndarray,
        window: int,
        stride: int,
        emit: Callable[[int, int, Any], None],
        known: bool = False,
    ) -> None:
        """``x`` (B, F, 128) int64. For every coded token (frame t, index j) call
        ``emit(t, j, q)`` with the (B, 1024) int32 frequencies, a tensor on the model's device.
        Decoding (``known=False``), ``emit`` writes the decoded tokens into ``x[:, t, j]``
        before the loop feeds them, and conditioning rows are built just in time from ``x``
        (they only ever read tokens already decoded). Encoding (``known=True``), tokens and
        conditioning go to the device once per frame and nothing waits for the GPU inside a
        frame. Both feed the model the very same tensors."""
        import torch

        from drivelab.vq.gpt import BOS, frames_to_sequence

        b, frames, _ = x.shape
        caches = self.model.new_caches()
        cond = None
        bos = torch.full((b, 1), BOS, device=self.dev)
        with torch.inference_mode():
            for s, c0, c1 in schedule(frames, window, stride):
                ctx = torch.from_numpy(x[:, s:c0]).to(self.dev)
                seq = torch.cat([frames_to_sequence(ctx), bos], 1)
                if self.cond:
                    cond = torch.cat([*(self._cond(x, t) for t in range(s, c0)), self._cond(x, c0, 0)], 1)
                logits = self.model(seq, caches, 0, cond)[:, -1]
                pos = seq.shape[1]
                for t in range(c0, c1):
                    if known:
                        frame = torch.from_numpy(x[:, t]).to(self.dev)
                        fcond = self._cond(x, t) if self.cond else None
                    for j in range(128):
                        emit(t, j, frequencies(logits))
                        if t == c1 - 1 and j == 127:
                            break
                        if known:
                            tok = frame[:, j : j + 1]
                            cn = fcond[:, j + 1 : j + 2] if self.cond else None
                        else:
                            tok = torch.from_numpy(np.ascontiguousarray(x[:, t, j : j + 1])).to(self.dev)
                            cn = self._cond(x, t, j + 1) if self.cond else None
                        logits = self.model(tok, caches, pos, cn)[:, -1]
                        pos += 1
                        if j == 127:  # the frame is done: BOS opens frame t + 1
                            cn = self._cond(x, t + 1, 0) if self.cond else None
                            logits = self.model(bos, caches, pos, cn)[:, -1]
                            pos += 1


# ---------------------------------------------------------------- weights


@dataclass
class Weights:
    model: Any
    sha256: str
    layout: str
    blob: bytes | None  # the file's bytes, when they may be embedded


_CACHE: dict[tuple, Weights] = {}


def load_weights(model_path: str | Path, keep_bytes: bool) -> Weights:
    """Load (once per process) any ``--model`` path drivelab.vq.hf accepts."""
    from drivelab.vq.hf import find_weights, load_model

    wpath = find_weights(model_path)
    st = wpath.stat()
    key = (str(wpath.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _CACHE:
        _CACHE.clear()  # one model at a time: gpt2m is 1.4 GB in float32
        loaded = load_model(wpath)
        _CACHE[key] = Weights(loaded.model, loaded.sha256, loaded.layout, None)
    w = _CACHE[key]
    if keep_bytes and w.blob is None:
        w.blob = wpath.read_bytes()
    return w


_BUILT: dict[str, Any] = {}  # models rebuilt from archive-stored weights, by SHA-256 (one at a time)


def _model_for(extra: dict[str, Any], store: Any, model_path: str | Path | None) -> Any:
    """The model an archive was coded with: from the archive's shared store when the weights
    were stored with it (once per archive), else from ``--model``, checked by SHA-256."""
    from drivelab.vq.hf import model_from_bytes

    rec = extra["model"]
    ref = extra.get("shared", {}).get("weights")
    if ref is not None:
        if ref != rec["sha256"]:
            raise DrivelabError("the header's weights reference and SHA-256 disagree")
        if store is None:
            raise DrivelabError("the gpt weights are stored with the archive: decompress the folder")
        blob = store.get(ref, "gpt weights")  # checked against its SHA-256 once per store
        if ref not in _BUILT:
            _BUILT.clear()
            _BUILT[ref] = model_from_bytes(blob, str(rec.get("file", "weights")), rec["config"],
                                           rec["layout"])
        return _BUILT[ref]
    if model_path is None:
        raise DrivelabError(
            f"coded with external gpt weights ({rec.get('file')}, sha256 {rec['sha256'][:16]}...): "
            "pass them with --model"
        )
    w = load_weights(model_path, keep_bytes=False)
    if w.sha256 != rec["sha256"]:
        raise DrivelabError(
            f"--model has sha256 {w.sha256[:16]}..., the archive was coded with {rec['sha256'][:16]}...",
            model_path,
        )
    if w.model.cfg.to_dict() != rec["config"]:
        raise DrivelabError("--model's config differs from the one recorded in the archive", model_path)
    return w.model


# ---------------------------------------------------------------- encode / decode


def window_of(cfg: Any, context: int | None, stride: int | None) -> tuple[int, int]:
    window = cfg.frames if not context else int(context)
    if not 1 <= window <= cfg.frames:
        raise DrivelabError(f"--context {window}: this model's windows hold 1..{cfg.frames} frames")
    stride = default_stride(window) if not stride else int(stride)
    if not 1 <= stride <= window:
        raise DrivelabError(f"--stride {stride}: must be 1..{window} (the window)")
    return window, stride


def encode_batch(
    segments: Sequence[np.ndarray],
    model_path: str | Path | None = None,
    context: int | None = None,
    stride: int | None = None,
    embed: bool = True,
    device: str = "auto",
    dtype: str | None = None,
    progress: Callable[[int], None] | None = None,
    store: Any = None,
) -> list[tuple[bytes, dict[str, Any]]]:
    """Code (F_i, 128) token segments together in one batch; one (payload, extra) per segment.
    ``embed``: the weights go into ``store`` (a ``drivelab.vq.store.SharedStore``), which keeps
    them once however many segments name them."""
    if model_path is None:
        raise DrivelabError("the gpt codec needs --model (comma's gpt2m or a `drivelab vq train` checkpoint)")
    if not segments:
        return []
    w = load_weights(model_path, keep_bytes=embed)
    if embed and len(w.blob) > MAX_EMBED:
        raise DrivelabError(f"{len(w.blob) >> 20} MB of weights are too many to store with the archive; "
                            "use --no-embed", model_path)
    return encode_with(w, segments, Path(model_path).name, context, stride, embed, runtime(device, dtype),
                       progress, store)


def encode_with(
    w: Weights,
    segments: Sequence[np.ndarray],
    file: str,
    context: int | None,
    stride: int | None,
    embed: bool,
    rt: Runtime,
    progress: Callable[[int], None] | None = None,
    store: Any = None,
) -> list[tuple[bytes, dict[str, Any]]]:
    """``encode_batch`` with the weights already loaded (benchmarks build them in memory)."""
    import torch

    if embed and (store is None or w.blob is None):
        raise DrivelabError("embedding the gpt weights needs their bytes and a shared store")

    window, stride = window_of(w.model.cfg, context, stride)
    lengths = [len(s) for s in segments]
    frames = max(lengths)
    x = np.zeros((len(segments), frames, 128), np.int64)
    for r, s in enumerate(segments):
        x[r, : len(s)] = s
    encoders = [constriction.stream.queue.RangeEncoder() for _ in segments]
    family = constriction.stream.model.Categorical(perfect=False)
    buf: list[Any] = []

    def emit(t: int, j: int, q: Any) -> None:
        buf.append(q)
        if j == 127:  # a frame's 128 distributions per row go to the coders in one call
            qs = torch.stack(buf, 1).cpu().numpy()
            buf.clear()
            for r, enc in enumerate(encoders):
                if t < lengths[r]:
                    enc.encode(x[r, t].astype(np.int32), family, qs[r].astype(np.float64))
            if progress is not None:
                progress(sum(t < n for n in lengths) * 128)

    Stepper(w.model, rt).run(x, window, stride, emit, known=True)
    digest = hashlib.sha256(b"".join(hashlib.sha256(s.astype("<i2").tobytes()).digest() for s in segments))
    shared = {"weights": store.put(w.blob)} if embed else None
    out = []
    for r, enc in enumerate(encoders):
        extra = {
            "model": {"sha256": w.sha256, "layout": w.layout, "config": w.model.cfg.to_dict(), "file": file},
            "window": window,
            "stride": stride,
            "batch": {"id": digest.hexdigest()[:16], "rows": len(segments), "row": r, "frames": frames},
            "runtime": rt.to_dict(),
            "freq_bits": FREQ_BITS,
        }
        if shared:
            extra["shared"] = dict(shared)
        out.append((enc.get_compressed().astype("<u4").tobytes(), extra))
    return out


def encode(tokens: np.ndarray, model_path: str | Path | None = None, context: int | None = None,
           stride: int | None = None, embed: bool = True, device: str = "auto",
           dtype: str | None = None, store: Any = None) -> tuple[bytes, dict[str, Any]]:
    """One segment = a batch of one (the registry's single-segment interface)."""
    return encode_batch([tokens], model_path, context, stride, embed, device, dtype, store=store)[0]


def decode_batch(
    members: Sequence[tuple[bytes, dict[str, Any], int]],
    model: str | Path | None = None,
    device: str = "auto",
    progress: Callable[[int], None] | None = None,
    store: Any = None,
) -> list[np.ndarray]:
    """Decode members of one batch (payload, extra, frames); absent rows become fillers.
    ``store``: the archive's shared state, where weights coded with ``embed`` are."""
    first = members[0][1]
    batch = first["batch"]
    if any(m[1]["batch"]["id"] != batch["id"] for m in members):
        raise DrivelabError("decode_batch got segments of different batches")
    net = _model_for(first, store, model)
    if net.cfg.to_dict() != first["model"]["config"]:  # a cached model built from another header
        raise DrivelabError("the stored model's config differs from the one recorded")
    return decode_with(net, members, _check_runtime(first["runtime"], device), progress)


def decode_with(
    net: Any,
    members: Sequence[tuple[bytes, dict[str, Any], int]],
    rt: Runtime,
    progress: Callable[[int], None] | None = None,
) -> list[np.ndarray]:
    """``decode_batch`` with the model already loaded and the runtime checked."""
    first = members[0][1]
    rows, frames = int(first["batch"]["rows"]), int(first["batch"]["frames"])
    family = constriction.stream.model.Categorical(perfect=False)
    decoders: dict[int, Any] = {}
    lengths: dict[int, int] = {}
    for payload, extra, n in members:
        if extra["model"]["sha256"] != first["model"]["sha256"]:
            raise DrivelabError("segments of one batch name different model weights")
        r = int(extra["batch"]["row"])
        if not 0 <= r < rows or r in decoders or n > frames:
            raise DrivelabError("inconsistent batch layout in the header")
        decoders[r] = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, "<u4").astype(np.uint32))
        lengths[r] = n
    x = np.zeros((rows, frames, 128), np.int64)

    def emit(t: int, j: int, q: Any) -> None:
        q = q.cpu().numpy()
        for r, dec in decoders.items():
            if t < lengths[r]:
                x[r, t, j] = int(dec.decode(family, q[r : r + 1].astype(np.float64))[0])
        if progress is not None and j == 127:
            progress(sum(t < n for n in lengths.values()) * 128)

    Stepper(net, rt).run(x, int(first["window"]), int(first["stride"]), emit)
    return [x[int(e["batch"]["row"]), :n].astype(np.int16) for _, e, n in members]


def decode(
    payload: bytes, extra: dict[str, Any], frames: int, model: str | Path | None = None,
    device: str = "auto", progress: Callable[[int], None] | None = None, store: Any = None,
) -> np.ndarray:
    return decode_batch([(payload, extra, frames)], model, device, progress, store)[0]
