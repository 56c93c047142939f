"""Layout rules: what a format's file index must look like, and which pixel rule checks which file.

One ``plan_<format>`` per format: it reports the layout problems of the reader's own index
(missing partners, stray files, comma10k's top-level layout and file names, COCO json problems)
and returns the ``Plan`` the pixel pass follows. Every default-profile rule that goes further than
comma10k's CI says so in its message (``BEYOND_CI``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivelab import schema as schemas
from drivelab.data.index import Entry, FileIndex
from drivelab.data.validate.history import GitCheckout
from drivelab.data.validate.pixels import (
    CITYSCAPES_LABEL_IDS,
    ColormapRule,
    ColorRule,
    DecodeOnly,
    IdRule,
    colormap_agrees,
    id_set,
    train_ids_agree,
)
from drivelab.data.validate.report import BEYOND_CI, Problem, ValidationReport

CI_PROFILE = "comma10k-ci"

# tools/check_file_location.py: the only names comma10k's CI allows at the top of the repository.
COMMA10K_TOP_LEVEL = frozenset({
    ".git", ".github", ".gitignore", "LICENSE", "README.md", "files_trainable", "imgs", "imgs2", "imgsd",
    "masks", "masks2", "masksd", "pencil", "requirements.txt", "sample.gif", "sample.jpg", "scale",
    "runstat.py", "tools", "viewer.py", "make_sa_dataset.sh", "move_sa.py",
})
# What drivelab itself writes at a dataset's top level: allowed by the default profile, reported by
# the comma10k-ci profile (their CI would refuse it) with what wrote it.
DRIVELAB_TOP_LEVEL = {
    "synth.json": "`drivelab synth` records its settings there",
    "schema.json": "`drivelab convert` writes the class schema there",
    ".drivelab": "the label app keeps its review store and mask history there",
}


@dataclass
class Plan:
    """How the pixel pass checks one format: ``rule(entry, role)`` for each label file, ``cross``
    over the arrays of one entry's label files, whether images must be RGB, and whether masks must
    have the native size themselves (comma10k's CI) rather than just their image's size."""

    rule: Callable[[Entry, str], object]
    cross: Callable[[Entry, dict[str, np.ndarray]], list[Problem]] | None = None
    image_rgb: bool = True
    masks_native: bool = False
    keep_arrays: frozenset[str] = field(default_factory=frozenset)  # roles ``cross`` needs


@dataclass
class Context:
    report: ValidationReport
    profile: str
    git: GitCheckout | None
    committed: set[str] | None = None  # git checkout: the files a commit of the work tree would hold

    @property
    def ci(self) -> bool:
        return self.profile == CI_PROFILE

    def rel(self, path: Path) -> str:
        return path.relative_to(self.report.root).as_posix()

    def in_tree(self, path: Path) -> bool:
        """Would this path be part of a commit (always, outside git)? Folders count when they hold one."""
        if self.committed is None:
            return True
        rel = self.rel(path)
        return rel in self.committed or any(c.startswith(rel + "/") for c in self.committed)

    def top_level(self) -> list[str]:
        root = self.report.root
        if self.committed is None:
            return sorted(p.name for p in root.iterdir())
        return sorted({c.split("/", 1)[0] for c in self.committed} | {".git"})


def _beyond(message: str, ci_does: str = "") -> str:
    return f"{message} ({BEYOND_CI}{', ' + ci_does if ci_does else ''})"


# --------------------------------------------------------------------------- comma10k
def plan_comma10k(index: FileIndex, ctx: Context) -> Plan:
    from drivelab.data.comma10k import SETS

    report, root, ci = ctx.report, index.root, ctx.ci
    # Top-level layout (tools/check_file_location.py).
    for name in ctx.top_level():
        if name in COMMA10K_TOP_LEVEL:
            continue
        if name in DRIVELAB_TOP_LEVEL:
            if ci:
                report.add(root / name, "location", "not in comma10k's allowed top-level layout (their "
                           f"tools/check_file_location.py refuses it); {DRIVELAB_TOP_LEVEL[name]}: move "
                           "it out of the dataset before a pull request")
            continue
        report.add(root / name, "location", "not in comma10k's allowed top-level layout (their "
                   "tools/check_file_location.py refuses it): files belong in imgs*/ and masks*/")
    # Anything in a set folder that is not an image: their scripts open every file there and crash.
    for p in index.others:
        if ctx.in_tree(p):
            what = "a folder" if p.is_dir() else "not an image file"
            report.add(p, "unreadable", f"{what} inside {p.parent.name}/ (comma10k's CI opens every "
                       "entry there and fails on it)")
    # Partners and names. Their CI checks names in masks/ only (tools/check_filename.py: every
    # masks/ entry must be a file name in imgs/); it accepts images without masks.
    imgs_names = {p.name for p in (root / "imgs").iterdir()} if (root / "imgs").is_dir() else set()
    if ctx.committed is not None:
        imgs_names = {c.split("/", 1)[1] for c in ctx.committed if c.startswith("imgs/")}
    if ci:
        in_masks = [e.labels["mask"] for e in index.entries if e.meta["set"] == "imgs" and "mask" in e.labels]
        for p in in_masks + [p for p in index.others if p.parent.name == "masks"]:
            if p.name not in imgs_names and ctx.in_tree(p):
                report.add(p, "name", "no file of this name in imgs/ (their tools/check_filename.py "
                           "refuses it)")
    else:
        for folder, why in index.missing_dirs:
            report.add(folder, "missing-partner", _beyond(f"folder missing ({why})"))
        for e in index.entries:
            img_dir, mask_dir, _ = SETS[e.meta["set"]]
            mask = e.labels.get("mask")
            if e.image is None:
                msg = f"mask has no image {img_dir}/{mask.name}"
                report.add(mask, "missing-partner",
                           msg if img_dir == "imgs" else _beyond(msg, "which checks names in masks/ only"))
            elif mask is None:
                report.add(e.image, "missing-partner", _beyond(f"image has no mask {mask_dir}/{e.image.name}",
                                                               "which accepts unlabelled images"))
        trainable = index.meta.get("trainable")
        for line in trainable or []:
            if not (root / line).exists():
                report.add(root / "files_trainable", "missing-file",
                           _beyond(f"lists {line}, which does not exist"))
    schemas_by_set = {s: schemas.comma10k(driver_camera=s == "imgsd") for s in SETS}
    rules = {s: ColorRule(schemas_by_set[s], ci=ci) for s in SETS}
    return Plan(rule=lambda e, role: rules[e.meta["set"]], masks_native=ci)


# --------------------------------------------------------------------------- Cityscapes
def plan_cityscapes(index: FileIndex, ctx: Context) -> Plan:
    report = ctx.report
    rules = {
        "labelIds": IdRule(CITYSCAPES_LABEL_IDS, "Cityscapes labelIds (0..33)"),
        "labelTrainIds": IdRule(id_set(range(19), True), "Cityscapes trainIds (0..18, 255 ignore)"),
        "instanceIds": IdRule(CITYSCAPES_LABEL_IDS,
                              "Cityscapes instanceIds (labelId, or labelId*1000+k for instance classes)",
                              instance_ids=True),
        "color": DecodeOnly(),
    }
    for e in index.entries:
        split, city, stem = e.split, e.meta["city"], e.meta["stem"]
        if e.image is None:
            for p in e.labels.values():
                report.add(p, "missing-partner",
                           f"label has no image leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png")
        elif split != "test" and not any(r.endswith(("_labelIds", "_labelTrainIds")) for r in e.labels):
            report.add(e.image, "missing-partner",
                       f"{split} image has no gtFine/{split}/{city}/{stem}_gtFine_labelIds.png")
    if index.others:
        report.notes.append(f"{len(index.others)} other files in leftImg8bit/ and gt*/ were not checked, "
                            f"e.g. {index.others[0].relative_to(index.root)}")
    lut = np.asarray(schemas.cityscapes("19").label_lut, dtype=np.int64)

    def cross(e: Entry, arrays: dict[str, np.ndarray]) -> list[Problem]:
        out = []
        for ann in ("gtFine", "gtCoarse"):
            ids, train = arrays.get(f"{ann}_labelIds"), arrays.get(f"{ann}_labelTrainIds")
            if ids is not None and train is not None:
                out += train_ids_agree(ids, train, lut, e.labels[f"{ann}_labelTrainIds"])
        return out

    return Plan(rule=lambda e, role: rules[role.split("_", 1)[1]], cross=cross,
                keep_arrays=frozenset(f"{a}_{k}" for a in ("gtFine", "gtCoarse")
                                      for k in ("labelIds", "labelTrainIds")))


# --------------------------------------------------------------------------- BDD100K
def plan_bdd100k(index: FileIndex, ctx: Context) -> Plan:
    from drivelab.data.bdd100k import PALETTE, SEM_SEG

    report, root = ctx.report, index.root
    with_colormaps = set(index.meta.get("colormap_splits", []))
    labelled = sorted({e.split for e in index.entries if "mask" in e.labels})
    for split in labelled:
        if with_colormaps and split not in with_colormaps:
            report.add(root / SEM_SEG / "colormaps" / split, "missing-partner",
                       f"folder missing (masks/{split}/ exists and other splits have colormaps)")
    if labelled and not with_colormaps:
        report.notes.append("no labels/sem_seg/colormaps/ (optional; nothing to compare with the masks)")
    for e in index.entries:
        mask, colormap = e.labels.get("mask"), e.labels.get("colormap")
        if e.image is None:
            for p in e.labels.values():
                report.add(p, "missing-partner", f"label has no image images/10k/{e.split}/{p.stem}.jpg")
        if e.split in with_colormaps and mask is not None and colormap is None:
            report.add(mask, "missing-partner",
                       f"mask has no colormap labels/sem_seg/colormaps/{e.split}/{mask.name}")
        if colormap is not None and mask is None:
            report.add(colormap, "missing-partner", f"colormap has no mask labels/sem_seg/masks/{e.split}/"
                       f"{colormap.name}")
    rules = {"mask": IdRule(id_set(range(19), True), "BDD100K train ids (0..18, 255 ignore)"),
             "colormap": ColormapRule()}

    def cross(e: Entry, arrays: dict[str, np.ndarray]) -> list[Problem]:
        mask, colormap = arrays.get("mask"), arrays.get("colormap")
        if mask is None or colormap is None:
            return []
        return colormap_agrees(mask, colormap, PALETTE, e.labels["colormap"])

    return Plan(rule=lambda e, role: rules[role], cross=cross, keep_arrays=frozenset({"mask", "colormap"}))


# --------------------------------------------------------------------------- COCO
def plan_coco(index: FileIndex, ctx: Context) -> Plan:
    report = ctx.report
    files = index.meta["files"]
    if not files:
        report.add(index.root, "missing-file", "no COCO annotations json (annotations.json or "
                   "train/val/test.json)")
    for f in files:
        report.checked += 1
        for kind, message in f.problems:
            report.add(f.path, kind, message)
        summary = f.unusable_summary()
        if summary:  # the reader warns with the same line and skips the same annotations
            report.notes.append(summary)
        clipped = [c.clipped for c in f.checks if c.clipped]
        if clipped:
            report.notes.append(f"{f.path.name}: {len(clipped)} polygons extend more than 1 px past the "
                                f"image border (legal, pycocotools clips them), e.g. {clipped[0]}")
    for e in index.entries:
        if e.image is None:
            report.add(e.meta["image_path"], "missing-file",
                       f"listed in {e.meta['json'].name} (image id {e.meta['image_id']}) but not found")
    return Plan(rule=lambda e, role: None)


# --------------------------------------------------------------------------- folder
def plan_folder(index: FileIndex, ctx: Context) -> Plan:
    # A folder of inference inputs may mix sizes and modes: readability is what matters.
    return Plan(rule=lambda e, role: None, image_rgb=False)


PLANS = {
    "comma10k": plan_comma10k,
    "cityscapes": plan_cityscapes,
    "bdd100k": plan_bdd100k,
    "coco": plan_coco,
    "folder": plan_folder,
}
