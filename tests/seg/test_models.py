"""Model registry: the drivelab model contract for every family, weights loading, bad names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from drivelab.errors import DrivelabError
from drivelab.schema import comma10k
from drivelab.seg.checkpoint import load_model, save_checkpoint
from drivelab.seg.models import build_model, count_parameters, model_names


@pytest.mark.parametrize("name,kwargs", [
    ("plain-unet", {"base": 4, "depth": 3}),
    ("unet", {"encoder": "resnet18", "encoder_depth": 3, "decoder_channels": (16, 8, 8)}),
    ("fpn", {"encoder": "tu-mobilenetv3_small_050"}),
    ("segformer", {"encoder": "mit_b0"}),
])
def test_contract(name: str, kwargs: dict) -> None:
    torch.manual_seed(0)
    model = build_model(name, 5, **kwargs).eval()
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        logits = model(x)
        feats = model.encode(x)
        stages = model.stages(x)
    assert logits.shape == (2, 5, 64, 96)
    assert feats.ndim == 4 and feats.shape[0] == 2 and feats.shape[2] < 64
    # The stages run shallow to deep (no identity stage: not the 3-channel input) and end in encode.
    torch.testing.assert_close(stages[-1], feats)
    assert all(s.shape[1] != 3 or s.shape[2] < 64 for s in stages)
    assert [s.shape[2] for s in stages] == sorted((s.shape[2] for s in stages), reverse=True)
    # Normalisation is inside the model: the net sees (x - mean) / std.
    with torch.no_grad():
        inner = model.net((x - model.mean) / model.std)
    torch.testing.assert_close(inner, logits)


def test_seed_unet_size() -> None:
    # The seed projects' U-Net: 64 base channels, 4 downsamplings, transposed-conv upsampling.
    assert 30e6 < count_parameters(build_model("plain-unet", 29, base=64, depth=4)) < 32e6


def test_every_smp_architecture_is_registered() -> None:
    import segmentation_models_pytorch as smp

    assert set(smp.MODEL_ARCHITECTURES_MAPPING) | {"plain-unet"} == set(model_names())


def test_unknown_names_fail_with_the_name() -> None:
    with pytest.raises(DrivelabError, match="unknown model 'unett'.*unet"):
        build_model("unett", 5)
    with pytest.raises(DrivelabError, match="unknown encoder 'efficientnet-b44'"):
        build_model("unet", 5, encoder="efficientnet-b44")
    with pytest.raises(DrivelabError, match="unknown encoder 'tu-not_a_timm_net'"):
        build_model("unet", 5, encoder="tu-not_a_timm_net")


def test_weights_from_state_dict_and_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_model("plain-unet", 5, base=4, depth=2)
    torch.save(src.state_dict(), tmp_path / "sd.pth")
    loaded = build_model("plain-unet", 5, base=4, depth=2, weights=str(tmp_path / "sd.pth"))
    for k, v in src.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)

    spec = {"name": "plain-unet", "num_classes": 5, "base": 4, "depth": 2}
    save_checkpoint(tmp_path / "c.pt", src, spec, comma10k(), config={"size": [64, 128]})
    from_ckpt = build_model("plain-unet", 5, base=4, depth=2, weights=str(tmp_path / "c.pt"))
    torch.testing.assert_close(from_ckpt.net.head.weight, src.net.head.weight)
    model, schema, _ = load_model(tmp_path / "c.pt")
    assert schema.num_classes == 5 and not model.training

    with pytest.raises(DrivelabError, match="class count mismatch"):
        build_model("plain-unet", 3, base=4, depth=2, weights=str(tmp_path / "c.pt"))
    with pytest.raises(DrivelabError, match="shape mismatch"):
        build_model("plain-unet", 3, base=4, depth=2, weights=str(tmp_path / "sd.pth"))
    with pytest.raises(DrivelabError, match="not found"):
        build_model("plain-unet", 3, weights=str(tmp_path / "missing.pth"))


def test_encoder_only_weights(tmp_path: Path) -> None:
    torch.manual_seed(2)
    a = build_model("unet", 5, encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8))
    torch.save(a.net.encoder.state_dict(), tmp_path / "enc.pth")
    b = build_model("unet", 3, encoder="resnet18", encoder_depth=3, decoder_channels=(16, 8, 8),
                    weights=str(tmp_path / "enc.pth"))
    torch.testing.assert_close(b.net.encoder.conv1.weight, a.net.encoder.conv1.weight)
