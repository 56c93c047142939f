"""ProtoSeg's network in onnxruntime: what ``backend="onnxruntime"`` runs.

At batch 1 on a CPU, PyTorch eager spends most of a 128 px ProtoSeg prediction dispatching
its ~370 small operations from Python: the folded network takes ~15 ms there and ~3 ms as one
onnxruntime graph (one thread each, ``benchmarks/instance_synth.py``). Only the network moves:
decoding, NMS and mask pasting stay in ``ProtoSeg.predict``, so both backends share one copy
of them and differ only in the four head maps, which are checked against PyTorch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from drivelab.errors import DrivelabError

OUTPUTS = ("cls", "box", "coef", "proto")  # ProtoSeg.raw's maps, in the graph's output order
MAX_GRAPHS = 8  # input sizes kept at once (each image size padded to /32 is one graph)
BACKENDS = ("torch", "onnxruntime")


class _Maps(nn.Module):
    """``raw``'s dict as a tuple: what an ONNX graph can return."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        maps = self.net.raw(x)
        return tuple(maps[k] for k in OUTPUTS)


class OrtNetwork:
    """The (BatchNorm-folded) network of one ProtoSeg as onnxruntime sessions, one per padded
    input size, exported the first time a size is seen and checked on that very input."""

    def __init__(self, net: nn.Module, device: str = "cpu", threads: int | None = None) -> None:
        self.net, self.device, self.threads = net, device, threads
        self.sessions: dict[tuple[int, int], Any] = {}

    def _session(self, x: Tensor) -> Any:
        from drivelab.seg.onnx import TOLERANCE, _to_proto, session

        key = (int(x.shape[-2]), int(x.shape[-1]))
        sess = self.sessions.get(key)
        if sess is not None:
            return sess
        if len(self.sessions) >= MAX_GRAPHS:
            self.sessions.clear()
        probe = x.detach().float()
        wrapped = _Maps(self.net).eval()
        with torch.no_grad():
            proto = _to_proto(wrapped, probe, opset=17, dynamo=False, outputs=OUTPUTS)
            want = [m.cpu() for m in wrapped(probe)]
        probe = probe.cpu()
        sess = session(proto.SerializeToString(), self.device, self.threads)
        got = sess.run(None, {"image": probe.numpy()})
        for name, w, g in zip(OUTPUTS, want, got, strict=True):
            diff = float((torch.from_numpy(g) - w).abs().max())
            if not diff <= TOLERANCE * (1.0 + float(w.abs().max())):  # the export check's tolerance
                raise DrivelabError(f"onnxruntime's {name!r} map differs from PyTorch by {diff:.2e}; "
                                    "use backend torch")
        self.sessions[key] = sess
        return sess

    def raw(self, x: Tensor) -> dict[str, Tensor]:
        """What ``ProtoSeg.raw(x)`` returns, computed by onnxruntime (on ``x``'s device)."""
        sess = self._session(x)
        maps = sess.run(None, {"image": x.detach().float().cpu().numpy()})
        return {k: torch.from_numpy(m).to(x.device) for k, m in zip(OUTPUTS, maps, strict=True)}


def check_backend(backend: str, model: nn.Module | None = None) -> str:
    """``backend`` if ``model`` can run on it, else a one-line error."""
    if backend not in BACKENDS:
        raise DrivelabError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and model is not None and not hasattr(model, "inference_net"):
        raise DrivelabError("backend onnxruntime runs ProtoSeg instance models; this checkpoint is "
                            f"a {type(model).__name__} (use backend torch)")
    return backend
