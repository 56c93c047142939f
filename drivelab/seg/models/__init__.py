"""Model registry: ``build_model(name, num_classes, **kwargs) -> nn.Module``.

Names: ``plain-unet`` (from-scratch U-Net, ``drivelab.seg.models.unet``) and every
segmentation-models-pytorch architecture (``unet``, ``unetplusplus``, ``fpn``,
``deeplabv3plus``, ``segformer``, ...) with ``encoder=`` any smp encoder or ``tu-<timm model>``.

Every model takes (B, 3, H, W) floats in [0, 1] (H, W multiples of 32), normalises inside,
returns logits (B, K, H, W) and exposes ``stages(x)`` (the encoder's maps) and ``encode(x)``
(the deepest).

``weights``: ``None``/"random" (random init), a local ``.pth``/``.pt`` file (a state dict of the
whole model, of the smp encoder, or a drivelab checkpoint), or a download name such as
``"imagenet"`` for smp encoders (needs network; never used in tests).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from torch import nn

from drivelab.errors import DrivelabError

SCRATCH = {"plain-unet"}


def model_names() -> list[str]:
    from drivelab.seg.models.smp import architectures

    return sorted(SCRATCH | set(architectures()))


def check_model(name: str, encoder: str | None = None) -> None:
    """Raise a DrivelabError naming the model or encoder when either is unknown (cheap: builds nothing)."""
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(name, names, n=3)
        raise DrivelabError(f"unknown model {name!r}" + (f"; did you mean {', '.join(close)}?" if close else
                                                         f"; choose one of {', '.join(names)}"))
    if name in SCRATCH:
        if encoder:
            raise DrivelabError(f"model {name!r} is built from scratch and takes no encoder "
                                f"(got {encoder!r})")
        return
    if encoder:
        from drivelab.seg.models.smp import check_encoder

        check_encoder(encoder)


def build_model(name: str, num_classes: int, encoder: str | None = None, weights: str | None = None,
                **kwargs: Any) -> nn.Module:
    """A fresh semantic model (see the module docstring for names and weights)."""
    check_model(name, encoder)
    local = _local_weights(weights)
    if name == "plain-unet":
        from drivelab.seg.models.unet import PlainUNet

        if weights and not local:
            raise DrivelabError(f"plain-unet has no downloadable weights; weights={weights!r} must be a file")
        model = PlainUNet(num_classes, **kwargs)
    else:
        from drivelab.seg.models.smp import SmpModel

        download = None if local or weights in (None, "", "random", "none") else weights
        try:
            model = SmpModel(name, num_classes, encoder=encoder, encoder_weights=download, **kwargs)
        except TypeError as e:
            raise DrivelabError(f"bad model_kwargs for {name!r}: {e}") from None
        except (KeyError, ValueError) as e:
            if download is None:
                raise
            raise DrivelabError(f"encoder {encoder!r} has no weights named {download!r} ({e})") from None
        except OSError as e:  # offline, proxy, disk: the download failed
            if download is None:
                raise
            raise DrivelabError(f"could not download {download!r} weights for encoder {encoder!r} ({e}); "
                                "use weights=null (random) or weights=path.pth") from None
    if local:
        load_weights(model, local, num_classes)
    return model


def _local_weights(weights: str | None) -> Path | None:
    if not weights or weights in ("random", "none"):
        return None
    p = Path(weights)
    if p.suffix in (".pt", ".pth", ".bin", ".ckpt") or p.exists() or "/" in weights:
        if not p.exists():
            raise DrivelabError("weights file not found", p)
        return p
    return None


def load_weights(model: nn.Module, path: Path, num_classes: int) -> None:
    """Load a state dict of the whole model, of its encoder, or a drivelab checkpoint's weights.

    A class-count mismatch in the head is an error (it would silently train a wrong head)."""
    from drivelab.seg.checkpoint import read_state_dict

    state, ckpt = read_state_dict(path)
    if ckpt is not None:
        ck_classes = (ckpt.get("model_spec") or {}).get("num_classes")
        if ck_classes is not None and int(ck_classes) != num_classes:
            raise DrivelabError(f"class count mismatch: the checkpoint predicts {ck_classes} classes, the "
                                f"config's dataset/classes have {num_classes}", path)
    own = model.state_dict()
    candidates = [("", state), ("net.", state), ("net.encoder.", state)]
    for prefix, sd in candidates:
        mapped = {prefix + k: v for k, v in sd.items()}
        hits = [k for k in mapped if k in own]
        if len(hits) < max(1, len(mapped) // 2):
            continue
        bad = [k for k in hits if own[k].shape != mapped[k].shape]
        if bad:
            raise DrivelabError(f"class count or shape mismatch in {bad[0]}: file has "
                                f"{tuple(mapped[bad[0]].shape)}, model needs {tuple(own[bad[0]].shape)}",
                                path)
        model.load_state_dict({k: mapped[k] for k in hits}, strict=False)
        return
    raise DrivelabError("weights do not match this model (no matching parameter names)", path)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["build_model", "check_model", "count_parameters", "load_weights", "model_names"]
