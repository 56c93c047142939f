"""validate_dataset: passes on every clean synthetic format, names the file and the problem on
every kind of breakage, and keeps going to report all of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivelab.data.synth import SYNTH_FORMATS
from drivelab.data.validate import read_hashes, validate_dataset, write_hash_file
from drivelab.errors import DrivelabError
from drivelab.io import read_rgb, write_png

from .conftest import H, W


def _validate(root: Path, **kw):
    return validate_dataset(root, progress=False, **kw)


def _only(report, kind: str):
    assert [p.kind for p in report.problems] == [kind], report
    return report.problems[0]


@pytest.mark.parametrize("fmt", SYNTH_FORMATS)
def test_clean_synthetic_sets_pass(synth_copy, fmt: str) -> None:
    report = _validate(synth_copy(fmt))
    assert report.ok, report
    assert report.format == fmt and report.checked >= 6
    assert report.summary().endswith("0 problems")


def test_clean_hand_built_comma10k_with_all_sets(comma10k_root: Path) -> None:
    report = _validate(comma10k_root)
    assert report.ok, report
    assert report.sizes == {"imgs": (H, W), "imgs2": (48, 80), "imgsd": (48, 80)}
    assert any("874x1164" in n for n in report.notes)  # told it is not the native size
    assert report.checked == 28


def _first_mask(root: Path) -> Path:
    return sorted((root / "masks").iterdir())[0]


def test_single_stray_colour_pixel(synth_copy) -> None:
    root = synth_copy("comma10k")
    mask = _first_mask(root)
    rgb = read_rgb(mask).copy()
    rgb[7, 11] = (0xFE, 0x00, 0x00)  # almost lane-marking red: an anti-aliased brush edge
    write_png(mask, rgb)
    p = _only(_validate(root), "bad-pixels")
    assert p.path == mask and p.count == 1
    assert p.colors == [("#fe0000", 1)] and p.bbox == (11, 7, 11, 7)
    assert mask.name in str(p) and "\n" not in str(p)


def test_many_bad_pixels_report_top_colours_and_bbox(synth_copy) -> None:
    root = synth_copy("comma10k")
    mask = _first_mask(root)
    rgb = read_rgb(mask).copy()
    rgb[2:4, 5:10] = (1, 2, 3)
    rgb[20, 30] = (9, 9, 9)
    write_png(mask, rgb)
    p = _only(_validate(root), "bad-pixels")
    assert p.count == 11 and p.colors == [("#010203", 10), ("#090909", 1)]
    assert p.bbox == (5, 2, 30, 20)


def test_wrong_size_mask_and_image(synth_copy) -> None:
    root = synth_copy("comma10k")
    masks = sorted((root / "masks").iterdir())
    write_png(masks[0], read_rgb(masks[0])[:, : W - 4])
    img = root / "imgs" / masks[1].name
    write_png(img, read_rgb(img)[: H - 2])
    report = _validate(root)
    assert sorted((p.path.name, p.kind) for p in report.problems) == sorted(
        [(masks[0].name, "size"), (masks[1].name, "size"), (masks[1].name, "size")]
    )
    by_path = {p.path: p.message for p in report.problems}
    assert f"{H}x{W - 4}" in by_path[masks[0]] and f"{H}x{W}" in by_path[masks[0]]
    assert f"{H - 2}x{W}" in by_path[img]


def test_required_size_native_and_explicit(synth_copy) -> None:
    root = synth_copy("comma10k")
    assert _validate(root, expected_size=(H, W)).ok
    native = _validate(root, expected_size="native")
    assert {p.kind for p in native.problems} == {"size"}
    assert len(native.problems) == 6  # every image; masks agree with their images
    assert all("874x1164" in p.message for p in native.problems)


def test_missing_partner_both_ways(synth_copy) -> None:
    root = synth_copy("comma10k")
    masks = sorted((root / "masks").iterdir())
    (root / "imgs" / masks[0].name).unlink()
    masks[1].unlink()
    report = _validate(root)
    found = {(p.path, p.kind) for p in report.problems}
    assert (masks[0], "missing-partner") in found
    assert (root / "imgs" / masks[1].name, "missing-partner") in found
    assert (root / "files_trainable", "missing-file") in found  # it lists the deleted mask


def test_rgba_and_greyscale_masks(synth_copy) -> None:
    root = synth_copy("comma10k")
    masks = sorted((root / "masks").iterdir())
    rgb = read_rgb(masks[0])
    alpha = np.full((H, W), 255, np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(masks[0])
    assert _validate(root).ok  # opaque RGBA: the alpha channel changes nothing (comma10k's CI drops it)
    alpha[3:5, 7:9] = 128
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(masks[0])
    Image.fromarray(rgb[..., 0]).save(masks[1])
    report = _validate(root)
    assert [(p.path, p.kind) for p in report.problems] == [(masks[0], "channels"), (masks[1], "channels")]
    assert "4 pixels are alpha < 255" in report.problems[0].message
    assert "beyond comma10k's CI" in report.problems[0].message
    assert "mode L" in report.problems[1].message and "crashes" in report.problems[1].message


def test_palette_png_masks_decode_through_their_palette(synth_copy) -> None:
    from drivelab import schema as schemas

    root = synth_copy("comma10k")
    mask = _first_mask(root)
    ids, bad = schemas.comma10k().encode_colors(read_rgb(mask))
    write_png(mask, ids, palette=schemas.comma10k().palette_256())
    assert Image.open(mask).mode == "P"
    assert _validate(root).ok
    pal = schemas.comma10k().palette_256().copy()
    pal[2] = (0x80, 0x80, 0x61)  # undrivable, off by one in the palette
    write_png(mask, ids, palette=pal)
    p = _only(_validate(root), "bad-pixels")
    assert p.colors[0][0] == "#808061" and p.count == int((ids == 2).sum())


def test_jpeg_mask(synth_copy) -> None:
    root = synth_copy("comma10k")
    mask = _first_mask(root)
    jpg = mask.with_suffix(".jpg")
    (root / "files_trainable").unlink()  # it would (rightly) report the .png it lists as missing
    Image.open(mask).convert("RGB").save(jpg, quality=95)
    mask.unlink()
    report = _validate(root)
    # a mask has its image's exact file name: x.jpg is no mask of x.png
    assert sorted((p.path, p.kind) for p in report.problems) == sorted(
        [(jpg, "lossy-mask"), (jpg, "missing-partner"), (root / "imgs" / mask.name, "missing-partner")])
    assert "JPEG" in str(next(p for p in report.problems if p.kind == "lossy-mask"))
    # a JPEG hiding behind a .png name is caught from its content
    Image.open(jpg).save(mask, format="JPEG")
    jpg.unlink()
    assert _only(_validate(root), "lossy-mask").path == mask


def test_truncated_image_is_a_problem_and_validation_keeps_going(synth_copy) -> None:
    root = synth_copy("comma10k")
    masks = sorted((root / "masks").iterdir())
    img = root / "imgs" / masks[0].name
    img.write_bytes(img.read_bytes()[:200])
    rgb = read_rgb(masks[3]).copy()
    rgb[0, 0] = (5, 5, 5)
    write_png(masks[3], rgb)
    report = _validate(root)
    assert [(p.path, p.kind) for p in report.problems] == [(img, "unreadable"), (masks[3], "bad-pixels")]
    assert "truncated" in report.problems[0].message
    assert not report.ok and "2 problems in 2 files" in report.summary()


def test_cityscapes_unknown_label_id_and_missing_labels(synth_copy) -> None:
    root = synth_copy("cityscapes")
    labels = sorted(root.glob("gtFine/*/*/*_labelIds.png"))
    ids = np.asarray(Image.open(labels[0])).copy()
    ids[3, 4] = 200
    write_png(labels[0], ids)
    inst = labels[1].with_name(labels[1].name.replace("labelIds", "instanceIds"))
    inst_ids = np.asarray(Image.open(inst)).astype(np.int32)
    inst_ids[0, 0] = 7 * 1000 + 1  # road is not an instance class
    write_png(inst, inst_ids)
    labels[2].unlink()
    report = _validate(root)
    kinds = {(p.path, p.kind) for p in report.problems}
    assert (labels[0], "bad-pixels") in kinds and (inst, "bad-pixels") in kinds
    img = sorted(root.glob("leftImg8bit/*/*/*.png"))
    stem = labels[2].name.replace("_gtFine_labelIds.png", "")
    assert ([p for p in img if p.name.startswith(stem)][0], "missing-partner") in kinds
    bad = [p for p in report.problems if p.path == labels[0]][0]
    assert bad.colors == [(200, 1)] and bad.bbox == (4, 3, 4, 3)


def test_bdd_ids_and_orphan_mask(synth_copy) -> None:
    root = synth_copy("bdd100k")
    masks = sorted(root.glob("labels/sem_seg/masks/*/*.png"))
    ids = np.asarray(Image.open(masks[0])).copy()
    ids[1, 1] = 19  # one past the last class; 255 stays legal
    write_png(masks[0], ids)
    image = root / "images" / "10k" / masks[1].parent.name / (masks[1].stem + ".jpg")
    image.unlink()
    report = _validate(root)
    kinds = {(p.path.name, p.kind) for p in report.problems}
    assert (masks[0].name, "bad-pixels") in kinds and (masks[1].name, "missing-partner") in kinds


def test_coco_json_problems(synth_copy) -> None:
    root = synth_copy("coco")
    train = root / "annotations" / "train.json"
    data = json.loads(train.read_text())
    data["annotations"][0]["category_id"] = 99
    data["annotations"][1]["image_id"] = 12345
    poly_ann = next(a for a in data["annotations"][2:] if isinstance(a["segmentation"], list))
    poly_ann["segmentation"] = [[x + 1000 for x in poly_ann["segmentation"][0]]]
    missing = data["images"][0]["file_name"]
    (root / "images" / missing).unlink()
    train.write_text(json.dumps(data))
    (root / "annotations" / "val.json").write_text('{"images": [,]}')
    report = _validate(root)
    msgs = [str(p) for p in report.problems]
    assert any("val.json: json: malformed json" in m for m in msgs)
    assert any("train.json: annotation" in m and "unknown category_id 99" in m for m in msgs)
    assert any("unknown image_id 12345" in m for m in msgs)
    assert any("train.json: polygon" in m and "entirely outside" in m for m in msgs)
    assert any(missing in m and "missing-file" in m for m in msgs)


def test_image_hashes(synth_copy, tmp_path: Path) -> None:
    root = synth_copy("comma10k")
    first = validate_dataset(root, compute_hashes=True, progress=False)
    assert len(first.hashes) == 6
    ref = tmp_path / "SHA1SUMS"
    write_hash_file(ref, first.hashes)
    line = ref.read_text().splitlines()[0]
    assert len(line.split("  ")[0]) == 40 and line.split("  ")[1].startswith("imgs/")
    write_hash_file(tmp_path / "h.json", first.hashes)
    assert read_hashes(tmp_path / "h.json") == read_hashes(ref) == first.hashes
    assert _validate(root, reference_hashes=ref).ok
    img = sorted((root / "imgs").iterdir())[2]
    rgb = read_rgb(img).copy()
    rgb[0, 0] ^= 1
    write_png(img, rgb)
    p = _only(_validate(root, reference_hashes=ref), "modified")
    assert p.path == img


def test_missing_folder_raises(tmp_path: Path) -> None:
    with pytest.raises(DrivelabError, match="not found"):
        _validate(tmp_path / "nope")
