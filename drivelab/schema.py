"""ClassSchema: the one truth about a dataset's classes.

Readers decode masks with it, training sizes the head from it, predict colours
overlays with it, the label app draws its palette from it and validate checks
masks against it. A schema serialises to a plain dict so checkpoints carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IGNORE = 255


@dataclass(frozen=True)
class ClassDef:
    """One training class: its train id (index in the model's output), name and RGB colour."""

    id: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class ClassSchema:
    """Classes of one dataset kind.

    ``label_lut`` maps a dataset's raw label ids (e.g. Cityscapes labelIds) to train
    ids; it is ``None`` when the masks on disk already hold train ids or colours.
    """

    name: str
    classes: tuple[ClassDef, ...]
    ignore_index: int = IGNORE
    label_lut: tuple[int, ...] | None = None
    # Colour of pixels that carry the ignore index when drawing (black by convention).
    ignore_color: tuple[int, int, int] = (0, 0, 0)
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        ids = [c.id for c in self.classes]
        if ids != list(range(len(ids))):
            raise ValueError(f"schema {self.name}: train ids must be 0..N-1 in order, got {ids}")

    # -- basic views -------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @property
    def palette(self) -> np.ndarray:
        """(N, 3) uint8 colours indexed by train id."""
        return np.array([c.color for c in self.classes], dtype=np.uint8).reshape(-1, 3)

    def palette_256(self) -> np.ndarray:
        """(256, 3) uint8 lookup table: train ids to colours, everything else to ignore_color."""
        lut = np.tile(np.array(self.ignore_color, dtype=np.uint8), (256, 1))
        lut[: self.num_classes] = self.palette
        return lut

    def hex_colors(self) -> list[str]:
        return ["#{:02x}{:02x}{:02x}".format(*c.color) for c in self.classes]

    # -- mask conversions --------------------------------------------------
    def colorize(self, mask: np.ndarray) -> np.ndarray:
        """Index mask (H, W) of train ids -> RGB image (H, W, 3) uint8."""
        return self.palette_256()[mask.astype(np.uint8)]

    def encode_colors(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact RGB -> train id decoding.

        Returns ``(mask, bad)`` where ``bad`` is a boolean array of pixels whose colour
        is not exactly a palette colour (those pixels get the ignore index).
        """
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB array (H, W, 3), got shape {rgb.shape}")
        key = _rgb_key(rgb)
        mask = np.full(key.shape, self.ignore_index, dtype=np.uint8)
        bad = np.ones(key.shape, dtype=bool)
        for c in self.classes:
            hit = key == ((c.color[0] << 16) | (c.color[1] << 8) | c.color[2])
            mask[hit] = c.id
            bad[hit] = False
        return mask, bad

    def map_labels(self, raw: np.ndarray) -> np.ndarray:
        """Raw dataset label ids -> train ids with ``label_lut`` (identity when there is none)."""
        if self.label_lut is None:
            return raw.astype(np.uint8)
        lut = np.asarray(self.label_lut, dtype=np.uint8)
        if raw.max(initial=0) >= len(lut):
            raise ValueError(f"label id {int(raw.max())} outside the {self.name} label table")
        return lut[raw]

    # -- serialisation ------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "ignore_index": self.ignore_index,
            "ignore_color": list(self.ignore_color),
            "classes": [{"id": c.id, "name": c.name, "color": list(c.color)} for c in self.classes],
            "label_lut": list(self.label_lut) if self.label_lut is not None else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassSchema:
        return cls(
            name=d["name"],
            classes=tuple(ClassDef(int(c["id"]), c["name"], tuple(c["color"])) for c in d["classes"]),
            ignore_index=int(d.get("ignore_index", IGNORE)),
            ignore_color=tuple(d.get("ignore_color", (0, 0, 0))),
            label_lut=tuple(d["label_lut"]) if d.get("label_lut") is not None else None,
        )


def _rgb_key(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _hex(h: str) -> tuple[int, int, int]:
    h = h.lstrip("#")
    return (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))


# --------------------------------------------------------------------------- comma10k
COMMA10K_CLASSES = [
    ("road", "#402020"),
    ("lane markings", "#ff0000"),
    ("undrivable", "#808060"),
    ("movable", "#00ff66"),
    ("my car", "#cc00ff"),
]
COMMA10K_DRIVER_EXTRA = ("movable in my car", "#00ccff")


def comma10k(driver_camera: bool = False) -> ClassSchema:
    """comma10k: 5 classes (ids 0..4); the driver-camera set (imgsd/masksd) adds a 6th."""
    classes = list(COMMA10K_CLASSES) + ([COMMA10K_DRIVER_EXTRA] if driver_camera else [])
    return ClassSchema(
        name="comma10k-driver" if driver_camera else "comma10k",
        classes=tuple(ClassDef(i, n, _hex(h)) for i, (n, h) in enumerate(classes)),
    )


# --------------------------------------------------------------------------- Cityscapes
# The official table from cityscapesscripts/helpers/labels.py:
# (name, labelId, trainId, category, hasInstances, colour)
CITYSCAPES_LABELS: list[tuple[str, int, int, str, bool, tuple[int, int, int]]] = [
    ("unlabeled", 0, 255, "void", False, (0, 0, 0)),
    ("ego vehicle", 1, 255, "void", False, (0, 0, 0)),
    ("rectification border", 2, 255, "void", False, (0, 0, 0)),
    ("out of roi", 3, 255, "void", False, (0, 0, 0)),
    ("static", 4, 255, "void", False, (0, 0, 0)),
    ("dynamic", 5, 255, "void", False, (111, 74, 0)),
    ("ground", 6, 255, "void", False, (81, 0, 81)),
    ("road", 7, 0, "flat", False, (128, 64, 128)),
    ("sidewalk", 8, 1, "flat", False, (244, 35, 232)),
    ("parking", 9, 255, "flat", False, (250, 170, 160)),
    ("rail track", 10, 255, "flat", False, (230, 150, 140)),
    ("building", 11, 2, "construction", False, (70, 70, 70)),
    ("wall", 12, 3, "construction", False, (102, 102, 156)),
    ("fence", 13, 4, "construction", False, (190, 153, 153)),
    ("guard rail", 14, 255, "construction", False, (180, 165, 180)),
    ("bridge", 15, 255, "construction", False, (150, 100, 100)),
    ("tunnel", 16, 255, "construction", False, (150, 120, 90)),
    ("pole", 17, 5, "object", False, (153, 153, 153)),
    ("polegroup", 18, 255, "object", False, (153, 153, 153)),
    ("traffic light", 19, 6, "object", False, (250, 170, 30)),
    ("traffic sign", 20, 7, "object", False, (220, 220, 0)),
    ("vegetation", 21, 8, "nature", False, (107, 142, 35)),
    ("terrain", 22, 9, "nature", False, (152, 251, 152)),
    ("sky", 23, 10, "sky", False, (70, 130, 180)),
    ("person", 24, 11, "human", True, (220, 20, 60)),
    ("rider", 25, 12, "human", True, (255, 0, 0)),
    ("car", 26, 13, "vehicle", True, (0, 0, 142)),
    ("truck", 27, 14, "vehicle", True, (0, 0, 70)),
    ("bus", 28, 15, "vehicle", True, (0, 60, 100)),
    ("caravan", 29, 255, "vehicle", True, (0, 0, 90)),
    ("trailer", 30, 255, "vehicle", True, (0, 0, 110)),
    ("train", 31, 16, "vehicle", True, (0, 80, 100)),
    ("motorcycle", 32, 17, "vehicle", True, (0, 0, 230)),
    ("bicycle", 33, 18, "vehicle", True, (119, 11, 32)),
]

# The 30 classes of the Cityscapes class definitions (labelIds 4..33); labelIds 0..3 are
# unlabelled / ego vehicle / rectification border / out of roi and are ignored.
CITYSCAPES_ALL = [row[0] for row in CITYSCAPES_LABELS if row[1] >= 4]
# The 29-class set the CityScapes U-Net seed trains: all classes with polegroup folded into pole.
CITYSCAPES_29 = [n for n in CITYSCAPES_ALL if n != "polegroup"]


def cityscapes(classes: str | list[str] = "19", merge: dict[str, str] | None = None) -> ClassSchema:
    """Cityscapes schema.

    ``classes`` is ``"19"`` (the official trainIds), ``"30"`` (every class of the class
    definitions), ``"29"`` (30 with polegroup merged into pole) or an explicit list of
    label names, in train-id order. ``merge`` maps further label names onto kept ones.
    """
    by_name = {row[0]: row for row in CITYSCAPES_LABELS}
    if classes == "19":
        lut = [255] * 256
        for _name, label_id, train_id, *_ in CITYSCAPES_LABELS:
            lut[label_id] = train_id
        kept = sorted((row for row in CITYSCAPES_LABELS if row[2] != 255), key=lambda r: r[2])
        return ClassSchema(
            name="cityscapes19",
            classes=tuple(ClassDef(r[2], r[0], r[5]) for r in kept),
            label_lut=tuple(lut),
        )
    if classes == "30":
        names, merge = CITYSCAPES_ALL, dict(merge or {})
    elif classes == "29":
        names, merge = CITYSCAPES_29, {"polegroup": "pole", **(merge or {})}
    else:
        names, merge = list(classes), dict(merge or {})
    unknown = [n for n in list(names) + list(merge) + list(merge.values()) if n not in by_name]
    if unknown:
        raise ValueError(f"unknown Cityscapes label names: {unknown}")
    train_of = {n: i for i, n in enumerate(names)}
    lut = [255] * 256
    for name, label_id, *_ in CITYSCAPES_LABELS:
        target = merge.get(name, name)
        if target in train_of:
            lut[label_id] = train_of[target]
    return ClassSchema(
        name=f"cityscapes{len(names)}",
        classes=tuple(ClassDef(i, n, by_name[n][5]) for i, n in enumerate(names)),
        label_lut=tuple(lut),
    )


# --------------------------------------------------------------------------- BDD100K
def bdd100k() -> ClassSchema:
    """BDD100K semantic segmentation: the 19 Cityscapes train classes, masks hold train ids."""
    base = cityscapes("19")
    return ClassSchema(name="bdd100k", classes=base.classes)


# --------------------------------------------------------------------------- COCO
def coco(categories: list[dict]) -> ClassSchema:
    """Schema from a COCO json's ``categories``; train id 0 is background, then categories
    in ascending category id order (the order torchvision detection models expect)."""
    cats = sorted(categories, key=lambda c: c["id"])
    rng = np.random.default_rng(0)
    colors = [tuple(int(v) for v in rng.integers(40, 256, 3)) for _ in cats]
    classes = [ClassDef(0, "background", (0, 0, 0))]
    classes += [ClassDef(i + 1, c["name"], colors[i]) for i, c in enumerate(cats)]
    return ClassSchema(
        name="coco",
        classes=tuple(classes),
        extra={"category_ids": [c["id"] for c in cats]},
    )


SCHEMAS = {
    "comma10k": comma10k,
    "comma10k-driver": lambda: comma10k(driver_camera=True),
    "cityscapes19": lambda: cityscapes("19"),
    "cityscapes29": lambda: cityscapes("29"),
    "cityscapes30": lambda: cityscapes("30"),
    "bdd100k": bdd100k,
}


def get_schema(name: str) -> ClassSchema:
    """Look up a built-in schema by name (``comma10k``, ``cityscapes19``, ``bdd100k`` ...)."""
    try:
        return SCHEMAS[name]()
    except KeyError:
        raise ValueError(f"unknown class schema {name!r}; choose one of {sorted(SCHEMAS)}") from None
