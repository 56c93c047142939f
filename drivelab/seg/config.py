"""Training configuration: one dataclass, YAML presets, ``key=value`` overrides.

``load_config("comma10k", ["data=/data/comma10k", "max_steps=500"])`` reads the preset
``drivelab/seg/presets/comma10k.yaml`` (or a YAML file path, or a run folder's config.yaml),
applies overrides (values parsed as YAML; dotted keys reach into dict fields:
``model_kwargs.base=16``) and validates everything that can be checked without data: unknown
keys, unknown models/encoders, bad sizes. A user YAML may start from a preset with
``preset: NAME``.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from drivelab.errors import DrivelabError

PRESETS = Path(__file__).parent / "presets"


@dataclass
class TrainConfig:
    # --- what to train
    task: str = "semantic"  # "semantic" | "instance" (drivelab.seg.tasks.get_task)
    data: str | None = None  # dataset root (any layout open_dataset reads)
    format: str | None = None  # dataset format; detected when None
    classes: str | None = None  # cityscapes class set ("19", "29", "30"); None: the reader's default
    val_data: str | None = None  # separate validation dataset; default: the `val_split` of `data`
    train_split: str = "train"
    val_split: str = "val"  # with val_data: "all" uses every image of val_data
    # --- resolution: (H, W) the images are resized to; padded to multiples of 32 for the model
    size: list[int] = field(default_factory=lambda: [128, 256])
    # Multi-stage training: e.g. [{size: [448, 576], epochs: 30}, {size: [896, 1152], epochs: 10, lr: 1e-4}];
    # each stage may override size/epochs/max_steps/lr/batch_size/accumulate and starts from the
    # previous stage's best weights. Empty: one stage with the fields above.
    stages: list[dict] = field(default_factory=list)
    # --- model
    model: str = "unet"  # plain-unet | any smp architecture (unet, fpn, deeplabv3plus, segformer, ...)
    encoder: str | None = "resnet18"  # smp encoder or tu-<timm model>; None for plain-unet
    weights: str | None = None  # None (random) | path.pth | drivelab checkpoint | "imagenet" (download)
    model_kwargs: dict = field(default_factory=dict)
    # --- optimisation
    epochs: int = 10
    max_steps: int | None = None  # optimizer steps; overrides epochs when set
    max_minutes: float | None = None  # wall-clock budget per stage: stop early, validate and save
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | onecycle | constant
    warmup_steps: int = 0  # linear warm-up (cosine/constant)
    loss: str = "ce"  # ce | ce+dice
    dice_weight: float = 1.0
    accumulate: int = 1  # gradient accumulation: micro-batches per optimizer step
    # Images per optimizer step over all processes; when set, accumulate = global_batch /
    # (batch_size x world size), so a step means the same on 1 GPU or 4 nodes (and a run resumed on
    # fewer nodes after one died keeps its schedule).
    global_batch: int | None = None
    grad_clip: float | None = None
    amp: bool = True  # mixed precision (CUDA only)
    channels_last: bool = True  # (CUDA only)
    ema: float | None = None  # EMA decay of the weights (e.g. 0.999); None: off
    seed: int = 0
    # --- data loading
    workers: int = 2
    cache: bool = True  # decode once into a resized uint8 store (drivelab.seg.cache)
    cache_dir: str | None = None  # default: <out>/cache
    augment: dict = field(default_factory=lambda: {"hflip": 0.5, "scale": [0.8, 1.25], "color": 0.2})
    # --- bookkeeping
    out: str = "runs"
    name: str | None = None  # run folder name; default: <model>-<encoder>
    eval_every: int | None = None  # steps between validations; None: once per epoch
    save_every: int | None = None  # steps between last.pt saves; None: at each validation
    log_every: int = 10
    tta: bool = False  # flip test-time augmentation in validation
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    task_options: dict = field(default_factory=dict)  # task-specific settings (instance task)

    # ------------------------------------------------------------------ helpers
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> TrainConfig:
        check_keys(values, source)
        return cls(**coerce(values)).validate()

    def validate(self) -> TrainConfig:
        """Check what can be checked without data; raises DrivelabError naming the key."""
        from drivelab.seg.models import check_model

        self.size = _size(self.size, "size")
        for i, st in enumerate(self.stages):
            if not isinstance(st, dict):
                raise DrivelabError(f"stages[{i}] must be a mapping, got {st!r}")
            unknown = set(st) - STAGE_KEYS
            if unknown:
                raise DrivelabError(f"unknown key {sorted(unknown)[0]!r} in stages[{i}]; a stage may set "
                                    f"{', '.join(sorted(STAGE_KEYS))}")
            if "size" in st:
                st["size"] = _size(st["size"], f"stages[{i}].size")
        if self.task == "semantic":
            check_model(self.model, self.encoder if self.model != "plain-unet" else None)
            if self.model == "plain-unet" and self.encoder:
                self.encoder = None
        for key in ("epochs", "batch_size", "accumulate", "log_every"):
            if int(getattr(self, key)) < 1:
                raise DrivelabError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.global_batch is not None and int(self.global_batch) < 1:
            raise DrivelabError(f"global_batch must be >= 1, got {self.global_batch}")
        if self.max_steps is not None and self.max_steps < 1:
            raise DrivelabError(f"max_steps must be >= 1, got {self.max_steps}")
        choices = {"schedule": ("cosine", "onecycle", "constant"), "loss": ("ce", "ce+dice", "dice+ce")}
        for key, ok in choices.items():
            if getattr(self, key) not in ok:
                raise DrivelabError(f"{key} must be one of {', '.join(ok)}, got {getattr(self, key)!r}")
        if self.ema is not None and not 0.0 < float(self.ema) < 1.0:
            raise DrivelabError(f"ema must be a decay in (0, 1), got {self.ema}")
        unknown_aug = set(self.augment or {}) - AUGMENT_KEYS
        if unknown_aug:
            raise DrivelabError(f"unknown key 'augment.{sorted(unknown_aug)[0]}'; augment takes "
                                f"{', '.join(sorted(AUGMENT_KEYS))}")
        return self

    def stage_configs(self) -> list[TrainConfig]:
        """One config per training stage (the stage's overrides applied)."""
        if not self.stages:
            return [self]
        out = []
        for st in self.stages:
            values = {**self.to_dict(), **st, "stages": []}
            out.append(TrainConfig(**values).validate())
        return out


STAGE_KEYS = {"size", "epochs", "max_steps", "lr", "batch_size", "accumulate", "global_batch", "eval_every",
              "warmup_steps"}
AUGMENT_KEYS = {"hflip", "scale", "rotate", "color", "blur"}


def _size(value: Any, key: str) -> list[int]:
    if isinstance(value, str):  # the CLI's HxW spelling
        from drivelab.cliutil import parse_size

        value = list(parse_size(value))
    if isinstance(value, int):
        value = [value, value]
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise DrivelabError(f"{key} must be [H, W], got {value!r}") from None
    if h < 32 or w < 32:
        raise DrivelabError(f"{key} must be at least 32x32, got {[h, w]}")
    return [h, w]


def coerce(values: dict) -> dict:
    """Scalars to their field's type (YAML 1.1 reads ``1e-3`` as a string); errors name the key."""
    out = dict(values)
    for f in fields(TrainConfig):
        v = out.get(f.name)
        if v is None or not isinstance(f.type, str):
            continue
        kind = f.type.replace(" | None", "")
        try:
            if kind == "float" and not isinstance(v, bool):
                out[f.name] = float(v)
            elif kind == "int" and not isinstance(v, bool):
                if float(v) != int(float(v)):
                    raise ValueError
                out[f.name] = int(float(v))
            elif kind == "bool" and not isinstance(v, bool):
                raise ValueError
            elif kind in ("dict", "list[dict]") and not isinstance(v, (dict, list)):
                raise ValueError
        except (TypeError, ValueError):
            raise DrivelabError(f"{f.name} must be {kind}, got {v!r}") from None
    return out


def field_names() -> list[str]:
    return [f.name for f in fields(TrainConfig)]


def check_keys(values: dict, source: str) -> None:
    names = field_names()
    for key in values:
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DrivelabError(f"unknown config key {key!r}{hint}", source)


# The CLI vocabulary's names for config keys (``batch=16`` is ``batch_size=16``).
ALIASES = {"batch": "batch_size"}


def parse_overrides(items: list[str] | dict | None) -> dict:
    """``["lr=1e-3", "model_kwargs.base=16"]`` -> nested dict (values parsed as YAML)."""
    if items is None:
        return {}
    if isinstance(items, dict):
        return dict(items)
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise DrivelabError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        key = ALIASES.get(key.strip(), key)
        value = yaml.safe_load(raw) if raw != "" else None
        if isinstance(value, str) and re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+", value):
            value = float(value)  # YAML 1.1 leaves 3e-4 a string
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "stages":
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def read_yaml(source: str | Path) -> tuple[dict, str]:
    """A preset name, a YAML file or a run folder -> (values, description of the source)."""
    path = Path(source)
    if path.is_dir() and (path / "config.yaml").exists():
        path = path / "config.yaml"
    elif not path.is_file():  # a preset name (a folder of that name in the cwd is not a config)
        preset = PRESETS / f"{source}.yaml"
        if not preset.exists():
            what = ("a folder without config.yaml, and no preset" if path.is_dir()
                    else "no preset or config file")
            raise DrivelabError(f"{what} {str(source)!r}; presets: {', '.join(preset_names())}")
        path = preset
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise DrivelabError(f"invalid YAML ({e})", path) from None
    if not isinstance(values, dict):
        raise DrivelabError("a config file must be a YAML mapping", path)
    base = values.pop("preset", None)
    if base is not None:
        parent, _ = read_yaml(base)
        values = _merge(parent, values)
    return values, str(path)


def load_config(source: str | Path | None = None, overrides: list[str] | dict | None = None) -> TrainConfig:
    """Preset name / YAML path / run folder (or None for the defaults) + overrides -> validated config."""
    values, where = read_yaml(source) if source is not None else ({}, "defaults")
    check_keys(values, where)
    extra = parse_overrides(overrides)
    check_keys(extra, "overrides")
    if "model" in extra and extra["model"] != values.get("model"):
        values.pop("model_kwargs", None)  # the preset's model_kwargs belong to the preset's model
    return TrainConfig.from_dict(_merge(values, extra), where)


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


load_preset = load_config  # the name the demo looks for first is load_config; both work
