"""Config: presets, YAML files, key=value overrides and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from drivelab.errors import DrivelabError
from drivelab.seg.config import TrainConfig, dump_config, load_config, parse_overrides, preset_names


def test_presets_load_and_validate() -> None:
    assert {"comma10k", "cityscapes19", "cityscapes29", "bdd100k", "synth"} <= set(preset_names())
    for name in preset_names():
        cfg = load_config(name)
        assert isinstance(cfg, TrainConfig)
        for stage in cfg.stage_configs():
            assert len(stage.size) == 2
    assert load_config("cityscapes29").classes == "29"
    two = load_config("comma10k").stage_configs()
    assert len(two) == 2 and two[1].size[0] > two[0].size[0]


def test_overrides() -> None:
    assert parse_overrides(["lr=3e-4", "size=[64, 128]", "model_kwargs.base=8", "weights=null"]) == {
        "lr": 3e-4, "size": [64, 128], "model_kwargs": {"base": 8}, "weights": None}
    cfg = load_config("synth", ["lr=0.01", "model_kwargs.encoder_depth=4", "augment.hflip=0"])
    assert cfg.lr == 0.01 and cfg.model_kwargs["encoder_depth"] == 4
    assert cfg.model_kwargs["decoder_channels"] == [64, 32, 16, 16, 8]  # dotted keys merge into the preset's
    assert cfg.augment["hflip"] == 0
    # Changing the model drops the preset's model_kwargs (they belong to the preset's model).
    assert load_config("synth", ["model=fpn", "encoder=resnet18"]).model_kwargs == {}
    assert load_config("synth", ["model=plain-unet", "model_kwargs.base=8"]).model_kwargs == {"base": 8}


def test_yaml_file_with_preset_base(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"preset": "bdd100k", "batch_size": 3}))
    cfg = load_config(path, ["epochs=2"])
    assert cfg.batch_size == 3 and cfg.epochs == 2 and cfg.size == load_config("bdd100k").size
    # A saved config.yaml round-trips.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "run") == cfg


@pytest.mark.parametrize("overrides,match", [
    (["lrr=0.1"], "unknown config key 'lrr'; did you mean 'lr'"),
    (["encoder=efficientnet-b44", "model=unet"], "unknown encoder 'efficientnet-b44'"),
    (["model=unett"], "unknown model 'unett'"),
    (["size=[16, 16]"], "size must be at least"),
    (["schedule=linear"], "schedule must be one of"),
    (["stages=[{size: [64, 64], epochs: 1, lrr: 2}]"], "unknown key 'lrr' in stages"),
    (["augment.flip=0.5"], "unknown key 'augment.flip'"),
    (["lr"], "not key=value"),
])
def test_bad_config_names_the_key(overrides: list[str], match: str) -> None:
    with pytest.raises(DrivelabError, match=match):
        load_config("synth", overrides)


def test_unknown_key_in_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("batch_sise: 4\n")
    with pytest.raises(DrivelabError, match="unknown config key 'batch_sise'; did you mean 'batch_size'"):
        load_config(path)
    with pytest.raises(DrivelabError, match="no preset or config file 'nope'"):
        load_config("nope")
