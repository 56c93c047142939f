"""What the neural codecs (gpt, prior) share when decoding: the torch-version guard and finding
the model weights (inside the archive, or an external checkpoint checked by SHA-256)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivelab.errors import DrivelabError
from drivelab.vq.container import sha256


def check_torch_version(extra: dict[str, Any]) -> None:
    import torch

    if extra.get("torch") != torch.__version__:
        raise DrivelabError(
            f"encoded with torch {extra.get('torch')}, this is {torch.__version__}; "
            "neural probabilities are only reproducible on the same version"
        )


def split_weights(
    payload: bytes, extra: dict[str, Any], read_external: Callable[[Path], bytes]
) -> tuple[bytes, bytes]:
    """(weights, coded data) of a payload; external weights are read with ``read_external``."""
    n = int(extra["weights_len"])
    if n:
        weights = payload[:n]
    else:
        path = Path(extra["model_path"])
        if not path.is_file():
            raise DrivelabError("archive needs external model weights that are not there", path)
        weights = read_external(path)
    if sha256(weights) != extra["weights_sha256"]:
        raise DrivelabError("model weights do not match the ones used for encoding")
    return weights, payload[n:]
