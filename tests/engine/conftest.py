"""Fixtures for the data-engine tests: a tiny synthetic comma10k set (64x128) with a rare condition
(night) and a tiny U-Net trained on it for a few steps (once per session)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from drivelab.data.synth import synth_dataset

SIZE = (64, 128)


def make_set(root: Path, n: int, seed: int, night: float = 0.2, unlabelled: int = 0) -> Path:
    """A synthetic comma10k set; a ``night`` share of dark scenes (listed in synth.json); the last
    ``unlabelled`` images (by name) lose their masks, as in a pool waiting to be labelled."""
    synth_dataset("comma10k", root, n=n, size=SIZE, seed=seed, night=night)
    if unlabelled:
        (root / "files_trainable").unlink()  # it would hide the unlabelled images from the reader
        for mask in sorted((root / "masks").iterdir())[n - unlabelled :]:
            mask.unlink()
    return root


def night_flags(root: Path, names: list[str]) -> np.ndarray:
    """Which of ``names`` the generator drew at night (ground truth from synth.json)."""
    samples = json.loads((root / "synth.json").read_text())["samples"]
    return np.array([samples[n]["night"] for n in names])


@pytest.fixture(scope="session")
def engine_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_set(tmp_path_factory.mktemp("engine") / "comma10k", n=24, seed=3)


@pytest.fixture(scope="session")
def engine_run(engine_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny plain U-Net trained for a few steps with the shared trainer."""
    import torch

    from drivelab.seg.config import TrainConfig
    from drivelab.seg.trainer import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = TrainConfig(
            data=str(engine_data),
            out=str(tmp_path_factory.mktemp("runs")),
            name="tiny",
            size=list(SIZE),
            model="plain-unet",
            encoder=None,
            model_kwargs={"base": 4, "depth": 3},
            batch_size=4,
            max_steps=40,
            workers=0,
            eval_every=40,
            log_every=10,
            lr=3e-3,
            device="cpu",
        ).validate()
        return train(cfg, progress=False)
    finally:
        torch.set_num_threads(threads)
