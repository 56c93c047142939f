"""Over- and under-segmentation, with the ARMBench definitions.

Intersection over area: ``IoA(A, B) = |A ∩ B| / |B|`` (how much of B lies inside A).

* A prediction P is **under-segmenting** when ``IoA(P, G) > under_thresh`` (P covers more than
  80% of G) for ``min_segments`` (2) or more GT objects G: it joined several objects into one.
* A GT object G is **over-segmented** when ``IoA(G, P) > over_thresh`` (P lies more than 80%
  inside G) for two or more predictions P: the model split it.

Per image: a flag for each, the number of offending instances (under-segmenting predictions /
over-segmented GT objects) and the mean number of segments per offender (GT objects a merging
prediction swallowed / fragments a split object got). Per dataset: counts and rates.

Everything runs on COCO RLEs (pycocotools): ``mask.iou`` with ``iscrowd=1`` is exactly
``|d ∩ g| / |d|``, so full-resolution 2448x2048 totes never need decoding.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class OverUnderOptions:
    under_thresh: float = 0.8  # IoA(pred, gt) above which a prediction "covers" a GT object
    over_thresh: float = 0.8  # IoA(gt, pred) above which a prediction "lies inside" a GT object
    score_thresh: float = 0.5  # predictions below this score are ignored
    min_segments: int = 2  # objects merged / fragments needed to count as an offence


@dataclass
class ImageOverUnder:
    """The over/under analysis of one image (indices refer to the GT / prediction lists given)."""

    name: str
    n_gt: int
    n_pred: int
    under: list[tuple[int, list[int]]] = field(default_factory=list)  # (pred, GT objects it covers)
    over: list[tuple[int, list[int]]] = field(default_factory=list)  # (gt, predictions inside it)

    @property
    def n_under(self) -> int:
        return len(self.under)

    @property
    def n_over(self) -> int:
        return len(self.over)

    @property
    def under_segments(self) -> float:
        return float(np.mean([len(g) for _, g in self.under])) if self.under else math.nan

    @property
    def over_segments(self) -> float:
        return float(np.mean([len(p) for _, p in self.over])) if self.over else math.nan

    @property
    def n_offenders(self) -> int:
        return self.n_under + self.n_over

    def row(self) -> dict:
        """Flat per-image record (for the per-image table)."""
        return {
            "name": self.name,
            "n_gt": self.n_gt,
            "n_pred": self.n_pred,
            "under": self.n_under > 0,
            "n_under": self.n_under,
            "under_segments": self.under_segments,
            "merged_gt": sum(len(g) for _, g in self.under),
            "over": self.n_over > 0,
            "n_over": self.n_over,
            "over_segments": self.over_segments,
            "fragments": sum(len(p) for _, p in self.over),
        }


def ioa_matrix(a: list[dict], b: list[dict]) -> np.ndarray:
    """``M[i, j] = IoA(a_i, b_j) = |a_i ∩ b_j| / |b_j|`` for lists of COCO RLEs."""
    from pycocotools import mask as mask_utils

    if not a or not b:
        return np.zeros((len(a), len(b)), np.float64)
    # iou(d, g, crowd=1)[j, i] = |d_j ∩ g_i| / |d_j|  with d = b, g = a.
    m = mask_utils.iou(list(b), list(a), [1] * len(a))
    return np.asarray(m, np.float64).reshape(len(b), len(a)).T


def analyze_rles(
    gt: list[dict], pred: list[dict], options: OverUnderOptions | None = None, name: str = ""
) -> ImageOverUnder:
    """Over/under analysis of one image given GT and (already score-filtered) predicted RLEs."""
    o = options or OverUnderOptions()
    res = ImageOverUnder(name=name, n_gt=len(gt), n_pred=len(pred))
    if not gt or not pred:
        return res
    covers = ioa_matrix(pred, gt) > o.under_thresh  # [p, g]: P covers > 80% of G
    inside = ioa_matrix(gt, pred) > o.over_thresh  # [g, p]: P lies > 80% inside G
    for p in range(len(pred)):
        g = np.flatnonzero(covers[p])
        if len(g) >= o.min_segments:
            res.under.append((p, g.tolist()))
    for g in range(len(gt)):
        p = np.flatnonzero(inside[g])
        if len(p) >= o.min_segments:
            res.over.append((g, p.tolist()))
    return res


def analyze_masks(
    gt: np.ndarray, pred: np.ndarray, options: OverUnderOptions | None = None, name: str = ""
) -> ImageOverUnder:
    """Same on (N, H, W) bool GT masks and (M, H, W) bool predicted masks."""
    from drivelab.seg.instance.infer import encode_masks

    return analyze_rles(
        encode_masks(np.asarray(gt, bool)), encode_masks(np.asarray(pred, bool)), options, name
    )


def gt_rles(coco_gt: Any, image_id: int) -> list[dict]:
    """Non-crowd GT annotations of one image as RLEs, in annotation order."""
    anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
    return [coco_gt.annToRLE(a) for a in anns]


def analyze_coco(
    coco_gt: Any,
    results: list[dict],
    options: OverUnderOptions | None = None,
    image_ids: list[int] | None = None,
) -> list[ImageOverUnder]:
    """Over/under for every image of a pycocotools COCO against COCO-format results."""
    o = options or OverUnderOptions()
    by_image: dict[int, list[dict]] = {}
    for r in results:
        if r.get("score", 1.0) >= o.score_thresh:
            by_image.setdefault(int(r["image_id"]), []).append(r["segmentation"])
    ids = image_ids if image_ids is not None else sorted(coco_gt.imgs)
    return [
        analyze_rles(gt_rles(coco_gt, i), by_image.get(i, []), o, coco_gt.imgs[i]["file_name"]) for i in ids
    ]


def summarize(per_image: list[ImageOverUnder]) -> dict:
    """Dataset counts and rates: images flagged, offending instances, mean segments per offender."""
    n = len(per_image)
    n_gt = sum(r.n_gt for r in per_image)
    n_pred = sum(r.n_pred for r in per_image)
    under = [len(g) for r in per_image for _, g in r.under]
    over = [len(p) for r in per_image for _, p in r.over]
    under_images = sum(r.n_under > 0 for r in per_image)
    over_images = sum(r.n_over > 0 for r in per_image)
    return {
        "images": n,
        "gt_instances": n_gt,
        "pred_instances": n_pred,
        "under_images": under_images,
        "under_image_rate": under_images / n if n else 0.0,
        "under_instances": len(under),
        "under_instance_rate": len(under) / n_pred if n_pred else 0.0,
        "merged_gt": int(sum(under)),
        "under_segments": float(np.mean(under)) if under else math.nan,
        "over_images": over_images,
        "over_image_rate": over_images / n if n else 0.0,
        "over_instances": len(over),
        "over_instance_rate": len(over) / n_gt if n_gt else 0.0,
        "fragments": int(sum(over)),
        "over_segments": float(np.mean(over)) if over else math.nan,
    }


def worst(per_image: list[ImageOverUnder], k: int = 10) -> list[ImageOverUnder]:
    """The ``k`` images with the most offending instances (ties: more segments involved, then name)."""
    bad = [r for r in per_image if r.n_offenders]
    bad.sort(key=lambda r: (-r.n_offenders, -(r.row()["merged_gt"] + r.row()["fragments"]), r.name))
    return bad[:k]


MIN_DRAW_HEIGHT = 360


def draw_overunder(
    image: np.ndarray, gt: np.ndarray, pred: np.ndarray, scores: np.ndarray, res: ImageOverUnder
) -> np.ndarray:
    """Three panels: GT instances | predicted instances (with scores) | offenders highlighted.

    In the offenders panel an under-segmenting prediction is filled red with the GT objects it
    swallowed outlined white; an over-segmented GT object is outlined white and its fragments
    filled orange."""
    from drivelab.seg.instance.draw import ORANGE, RED, WHITE, draw_instances, side_by_side, titled

    k = max(1, int(np.ceil(MIN_DRAW_HEIGHT / image.shape[0])))  # small images: enlarge to be readable
    if k > 1:
        image = image.repeat(k, 0).repeat(k, 1)
        gt, pred = (m.repeat(k, 1).repeat(k, 2) for m in (gt, pred))
    gt_panel = draw_instances(image, gt)
    pred_panel = draw_instances(image, pred, texts=[f"{s:.2f}" for s in scores])
    dim = (image.astype(np.float32) * 0.45).astype(np.uint8)
    masks, colors, fill, texts = [], [], [], []
    for p, gs in res.under:
        masks.append(pred[p]), colors.append(RED), fill.append(True), texts.append(f"merges {len(gs)}")
        for g in gs:
            masks.append(gt[g]), colors.append(WHITE), fill.append(False), texts.append("")
    for g, ps in res.over:
        for p in ps:
            masks.append(pred[p]), colors.append(ORANGE), fill.append(True), texts.append("")
        masks.append(gt[g]), colors.append(WHITE), fill.append(False), texts.append(f"split {len(ps)}")
    off = draw_instances(
        dim,
        np.array(masks, bool).reshape(-1, *image.shape[:2]),
        colors=np.array(colors, np.uint8).reshape(-1, 3),
        texts=texts,
        alpha=0.6,
        fill=fill,
        thickness=2,
    )
    return side_by_side(
        [
            titled(gt_panel, f"GT ({res.n_gt})"),
            titled(pred_panel, f"prediction ({res.n_pred})"),
            titled(off, f"under {res.n_under}  over {res.n_over}"),
        ]
    )


def write_report(
    out_dir: str | Path,
    coco_gt: Any,
    results: list[dict],
    per_image: list[ImageOverUnder],
    image_paths: dict[int, Path],
    options: OverUnderOptions,
    k: int = 10,
) -> dict:
    """``overunder.json`` (summary, options, worst list) and ``worst/NN_<name>.png`` drawings."""
    from drivelab.io import read_rgb, write_image, write_json

    out_dir = Path(out_dir)
    summary = summarize(per_image)
    name_to_id = {coco_gt.imgs[i]["file_name"]: i for i in image_paths}
    worst_list = []
    for rank, r in enumerate(worst(per_image, k), start=1):
        image_id = name_to_id[r.name]
        image = read_rgb(image_paths[image_id])
        gts = gt_rles(coco_gt, image_id)
        preds = [
            x
            for x in results
            if int(x["image_id"]) == image_id and x.get("score", 1.0) >= options.score_thresh
        ]
        picture = draw_overunder(
            image,
            _decode(gts, image.shape[:2]),
            _decode([x["segmentation"] for x in preds], image.shape[:2]),
            np.array([x.get("score", 1.0) for x in preds]),
            r,
        )
        path = out_dir / "worst" / f"{rank:02d}_{Path(r.name).stem}.png"
        from PIL import Image

        write_image(path, Image.fromarray(picture))
        worst_list.append(
            {**_clean(r.row()), "under_pairs": r.under, "over_pairs": r.over, "picture": str(path)}
        )
    report = {"options": asdict(options), "summary": _clean(summary), "worst": worst_list}
    write_json(out_dir / "overunder.json", report)
    return report


def _decode(rles: list[dict], shape: tuple[int, int]) -> np.ndarray:
    from pycocotools import mask as mask_utils

    if not rles:
        return np.zeros((0, *shape), bool)
    return mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)


def _clean(d: dict) -> dict:
    """NaN -> None so the JSON is standard."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}
