"""Every segmentation-models-pytorch architecture with any of its encoders (including every
timm model as ``tu-<name>``): ``build_model("unet", k, encoder="efficientnet-b4")``.

Encoder weights: ``None``/"random" for random init, or a name the library downloads
(``"imagenet"``) when online. Local files are handled by the registry, not here.
"""

from __future__ import annotations

import difflib

import torch

from drivelab.errors import DrivelabError
from drivelab.seg.models.base import SegModel

DEFAULT_ENCODER = "resnet34"


def architectures() -> dict[str, type]:
    import segmentation_models_pytorch as smp

    return dict(smp.MODEL_ARCHITECTURES_MAPPING)


def check_encoder(encoder: str) -> None:
    """Raise a DrivelabError naming the encoder when smp (or timm, for ``tu-``) does not know it."""
    from segmentation_models_pytorch.encoders import get_encoder_names

    if encoder.startswith("tu-"):
        import timm

        if timm.is_model(encoder[3:]):
            return
        close = difflib.get_close_matches(encoder[3:], timm.list_models(), n=3)
        raise DrivelabError(f"unknown encoder {encoder!r} (not a timm model)"
                            + (f"; did you mean {', '.join('tu-' + c for c in close)}?" if close else ""))
    names = get_encoder_names()
    if encoder not in names:
        close = difflib.get_close_matches(encoder, names, n=3)
        raise DrivelabError(f"unknown encoder {encoder!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                              else "; any timm model works as tu-<name>"))


class SmpModel(SegModel):
    """An smp model behind the drivelab contract. ``stages`` are the encoder's maps without smp's
    identity stage 0 (the input itself); ``encode`` is the deepest."""

    def __init__(self, arch: str, num_classes: int, encoder: str | None = None,
                 encoder_weights: str | None = None, **kwargs) -> None:
        import segmentation_models_pytorch as smp

        encoder = encoder or DEFAULT_ENCODER
        check_encoder(encoder)
        net = smp.create_model(arch, encoder_name=encoder, encoder_weights=encoder_weights,
                               classes=num_classes, **kwargs)
        # Use the encoder's own normalisation statistics when it declares them.
        params = getattr(net.encoder, "_preprocessing_params", None) or {}
        mean, std = params.get("mean"), params.get("std")
        if mean is not None and std is not None:
            super().__init__(net, tuple(mean), tuple(std))
        else:
            super().__init__(net)

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net.encoder(self.normalize(x))[1:])
