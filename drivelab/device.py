"""Devices and precisions, decided once for every verb: ``device=auto`` means CUDA when there is
one, else the CPU; mixed precision on CUDA is bf16 where the GPU has it, else fp16."""

from __future__ import annotations

from typing import Any

from drivelab.errors import DrivelabError

DEVICE_HELP = "auto (cuda when available, else cpu), cpu, cuda, cuda:N"


def resolve_device(device: str | Any = "auto") -> Any:
    """``"auto"``/``"cpu"``/``"cuda[:N]"`` (or a torch.device) -> torch.device, with a one-line error
    when CUDA is asked for and missing."""
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise DrivelabError(f"unknown device {device!r}; use {DEVICE_HELP}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DrivelabError(f"device {device!r} asked for, but CUDA is not available here")
    return dev


def amp_dtype(device: Any) -> Any:
    """The autocast dtype for mixed precision on ``device``: bf16, else fp16 on CUDA; None on CPU."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def precision_dtype(precision: str, device: Any) -> Any:
    """``auto``/``fp32``/``bf16``/``fp16`` -> the autocast dtype (None = full fp32)."""
    import torch

    if precision == "auto":
        return amp_dtype(device)
    table = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in table:
        raise DrivelabError(f"unknown precision {precision!r}; choose auto, fp32, bf16 or fp16")
    return table[precision]
