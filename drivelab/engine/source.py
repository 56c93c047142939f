"""What the engine's model-running verbs (``embed``, ``audit``) share: open a checkpoint with the
dataset it is run on, choose the items, and load one item as the model sees it (the
one model-input transform of ``drivelab.seg.transforms``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from drivelab.data.sample import Item, Reader
from drivelab.errors import DrivelabError
from drivelab.schema import ClassSchema


def open_model_and_dataset(
    run: str | Path | dict, dataset: str | Path, device: Any = "cpu"
) -> tuple[Any, ClassSchema, dict, Reader]:
    """Load a checkpoint and open a dataset, failing clearly when their classes disagree."""
    from drivelab.data import open_dataset
    from drivelab.seg.checkpoint import load_model, reader_options
    from drivelab.seg.tasks import task_of

    model, schema, ckpt = load_model(run, device)
    reader = open_dataset(dataset, **reader_options(ckpt, dataset))
    if task_of(ckpt) == "instance" and reader.task != "instance":
        raise DrivelabError(
            "the checkpoint is an instance model but the dataset has no instance annotations", dataset
        )
    if reader.schema.names != schema.names:
        raise DrivelabError(
            f"class mismatch: the checkpoint predicts {schema.num_classes} classes ({schema.name}: "
            f"{', '.join(schema.names[:6])}...), the dataset has {reader.schema.num_classes} "
            f"({reader.schema.name})",
            dataset,
        )
    return model, schema, ckpt, reader


def select_items(reader: Reader, dataset: str | Path, split: str | None, limit: int | None,
                 labelled_only: bool = False) -> tuple[Reader, list[Item]]:
    """The reader of ``split`` (None: every image) and its first ``limit`` items."""
    if split is not None:
        if split not in reader.splits:
            raise DrivelabError(f"no split {split!r} (splits: {', '.join(reader.splits)})", dataset)
        reader = reader.subset(split=split)
    items = [it for it in reader.items if it.label_path is not None] if labelled_only else reader.items
    return reader, items[: limit or None]


def load_semantic(reader: Reader, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Any]:
    """(original image, model input, label): the input resized to the training size and padded
    to /32, the label resized (nearest) the same way."""
    from drivelab.seg.transforms import pad_to_stride, resize_pair

    image = reader.load_image(item)
    mask = reader.load_mask(item) if item.label_path is not None else None
    small, small_mask = resize_pair(image, mask, size)
    small, small_mask = pad_to_stride(small, small_mask)
    return image, small, small_mask


def load_instance(reader: Reader, item: Item, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Any]:
    """(original image, model input, instance count): the input resized to the training size
    (the model pads itself)."""
    from drivelab.seg.transforms import resize_pair

    image = reader.load_image(item)
    inst = reader.load_instances(item) if item.label_path is not None else None
    small, _ = resize_pair(image, None, size)
    return image, small, (len(inst) if inst is not None else None)
