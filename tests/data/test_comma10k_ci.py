"""`validate --profile comma10k-ci` against comma10k's own CI, on a corpus of broken masks.

Every case starts from a synthetic comma10k set at the native 874x1164 size and breaks one thing.
Each is judged three ways: comma10k's CI logic (reimplemented below from their scripts, as they
are written, crashes included), drivelab's comma10k-ci profile (must agree with it exactly) and
drivelab's default profile (may refuse more, and then says so in the message).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drivelab.data.validate import validate_dataset, write_hash_file
from drivelab.io import read_rgb, write_png

NATIVE = (874, 1164)


# --------------------------------------------------------------------------- their CI, as written
# tools/check_file_location.py: the names allowed at the top of the repository.
THEIR_STATIC_LIST = [".git", ".github", ".gitignore", "LICENSE", "README.md", "files_trainable", "imgs",
                     "imgs2", "imgsd", "masks", "masks2", "masksd", "pencil", "requirements.txt",
                     "sample.gif", "sample.jpg", "scale", "runstat.py", "tools", "viewer.py",
                     "make_sa_dataset.sh", "move_sa.py"]
# tools/canonicialize_masks.py and tools/check_img_size.py: size_dict
THEIR_MASK_SIZE = {"masks/": (874, 1164, 3), "masks2/": (1208, 1928, 3), "masksd/": (1208, 1928, 3)}
THEIR_IMG_SIZE = {"imgs/": (874, 1164, 3), "imgs2/": (1208, 1928, 3), "imgsd/": (1208, 1928, 3)}


def their_colormap(base_dir: str) -> list[tuple[int, int, int]]:
    # viewer.py get_colormap(five=True, base_dir): colours as little-endian ints, one extra for masksd/
    f32 = lambda x: (x % 256, x // 256 % 256, x // (256 * 256) % 256)  # noqa: E731 (as they write it)
    key = [2105408, 255, 0x608080, 6749952, 16711884] + ([0xffcc00] if base_dir == "masksd/" else [])
    return [f32(k) for k in key]


def their_fix(im: Image.Image) -> np.ndarray:
    # viewer.py fix(): palette through its palette, then keep the first 3 channels
    dat = np.array(im)
    if im.mode == "P":
        pp = np.array(im.getpalette()).reshape((-1, 3)).astype(np.uint8)
        sh = dat.shape
        dat = pp[dat.flatten()].reshape(list(sh) + [3])
    if dat.shape[2] != 3:  # IndexError on single-channel images: their job crashes
        dat = dat[:, :, 0:3]
    return dat


def their_canon_mask_bad(root: Path, base_dir: str, x: str) -> bool:
    # tools/canonicialize_masks.py canon_mask() with ONLYCHECK set (nothing is written)
    segi = their_fix(Image.open(str(root / base_dir) + "/" + x))
    if segi.shape != THEIR_MASK_SIZE[base_dir]:
        return True
    check = segi.reshape(-1, 3)
    ok = np.zeros(check.shape[0], dtype=bool)
    for v in their_colormap(base_dir):
        ok |= np.all(check == np.array(v), axis=1)
    return not np.all(ok)


def their_img_size_bad(root: Path, base_dir: str, x: str) -> bool:
    # tools/check_img_size.py check_img_size()
    return np.array(Image.open(str(root / base_dir) + "/" + x)).shape != THEIR_IMG_SIZE[base_dir]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          check=True, capture_output=True, text=True).stdout


def their_ci_passes(root: Path) -> bool:
    """Every job of their workflows, each file treated as part of a pull request. A script that
    raises fails its job, as it does on GitHub."""
    try:
        # check_file_location.yml
        if any(x not in THEIR_STATIC_LIST for x in sorted(os.listdir(root))):
            return False
        # check_colors_sizes.yml: canonicialize_masks.py (ONLYCHECK=1), then check_img_size.py
        for base in THEIR_MASK_SIZE:
            if (root / base).is_dir() and any(their_canon_mask_bad(root, base, x)
                                              for x in sorted(os.listdir(root / base))):
                return False
        for base in THEIR_IMG_SIZE:
            if (root / base).is_dir() and any(their_img_size_bad(root, base, x)
                                              for x in sorted(os.listdir(root / base))):
                return False
        # check_filename.yml: every masks/ entry is a file name in `git ls-files imgs`
        if (root / ".git").exists():
            names = [n[len("imgs/"):] for n in _git(root, "ls-files", "imgs").split()]
        else:
            names = os.listdir(root / "imgs")
        if any(x not in names for x in os.listdir(root / "masks")):
            return False
        # dont_modify_imgs.yml: `git diff --name-only HEAD <pinned commit> imgs/...` is empty; the
        # pinned commits are comma10k's own, so a test checkout pins to its first commit
        if (root / ".git").exists():
            first = _git(root, "rev-list", "--max-parents=0", "HEAD").split()[0]
            if _git(root, "diff", "--name-only", "HEAD", first, "--", "imgs").strip():
                return False
    except Exception:
        return False
    return True


# --------------------------------------------------------------------------- corpus
@pytest.fixture(scope="session")
def native_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from drivelab.data.synth import synth_dataset

    root = synth_dataset("comma10k", tmp_path_factory.mktemp("ci") / "c10k", n=2, size=NATIVE, seed=0,
                         workers=2)
    (root / "synth.json").unlink()  # drivelab's own record; the synth.json case puts it back
    return root


@pytest.fixture
def corpus(native_set: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "c10k"
    shutil.copytree(native_set, dst)
    return dst


def _save_image(path: Path, rgb: np.ndarray) -> None:
    # Synthetic photos are noisy: the fastest zlib level keeps these rewrites cheap.
    Image.fromarray(rgb).save(path, compress_level=1)


def _mask(root: Path) -> Path:
    return sorted((root / "masks").iterdir())[0]


def anti_aliased_edge(root: Path) -> Path:
    m = _mask(root)
    rgb = read_rgb(m).astype(np.int32)
    edge = np.flatnonzero((rgb[:, 1:] != rgb[:, :-1]).any(-1).any(0))[0]  # first column with a class edge
    rgb[:, edge] = (rgb[:, edge] + rgb[:, edge + 1]) // 2  # a soft brush blends the two classes
    write_png(m, rgb.astype(np.uint8))
    return m


def rgba_opaque(root: Path) -> Path:
    m = _mask(root)
    rgb = read_rgb(m)
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), "RGBA").save(m)
    return m


def rgba_translucent(root: Path) -> Path:
    m = _mask(root)
    rgb = read_rgb(m)
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[100:120, 200:260] = 90
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(m)
    return m


def trns_palette(root: Path) -> Path:
    from drivelab import schema as schemas

    m = _mask(root)
    ids, _ = schemas.comma10k().encode_colors(read_rgb(m))
    img = Image.fromarray(ids, "L").convert("P")
    img.putpalette(schemas.comma10k().palette_256().reshape(-1).tolist())
    img.save(m, transparency=0)  # road (index 0) transparent, as some editors export it
    assert Image.open(m).info.get("transparency") is not None
    return m


def jpeg_renamed_png(root: Path) -> Path:
    m = _mask(root)
    Image.open(m).convert("RGB").save(m, format="JPEG", quality=95)
    return m


def one_row_short(root: Path) -> Path:
    m = _mask(root)
    write_png(m, read_rgb(m)[:-1])
    return m


def sixteen_bit_grey(root: Path) -> Path:
    m = _mask(root)
    write_png(m, read_rgb(m)[..., 0].astype(np.int32) * 257)  # 16-bit greyscale PNG
    return m


def sixteen_bit_rgb(root: Path) -> Path:
    import cv2

    m = _mask(root)
    rgb16 = read_rgb(m).astype(np.uint16) * 257  # every colour exact in the high byte
    assert cv2.imwrite(str(m), np.ascontiguousarray(rgb16[..., ::-1]))  # OpenCV writes BGR
    return m


def greyscale(root: Path) -> Path:
    m = _mask(root)
    Image.fromarray(read_rgb(m)[..., 0]).save(m)
    return m


def stray_top_level_file(root: Path) -> Path:
    stray = root / _mask(root).name  # a mask saved next to masks/ instead of into it
    shutil.copy(_mask(root), stray)
    return stray


def synth_json(root: Path) -> Path:
    (root / "synth.json").write_text("{}\n")
    return root / "synth.json"


def misnamed_mask(root: Path) -> Path:
    m = _mask(root)
    renamed = m.with_name("0000_synth0000_00000 (1).png")  # a browser's duplicate-download name
    m.rename(renamed)
    return renamed


def image_without_mask(root: Path) -> Path:
    m = _mask(root)
    m.unlink()
    return root / "imgs" / m.name


def image_not_native(root: Path) -> Path:
    img = sorted((root / "imgs").iterdir())[1]
    _save_image(img, read_rgb(img)[:, :-2])
    return img


def ds_store_in_masks(root: Path) -> Path:
    (root / "masks" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root / "masks" / ".DS_Store"


# case -> (break it, default profile accepts, comma10k-ci accepts)
CASES: dict[str, tuple[Callable[[Path], Path], bool, bool]] = {
    "clean": (lambda root: _mask(root), True, True),
    "anti-aliased edge": (anti_aliased_edge, False, False),
    "RGBA, opaque": (rgba_opaque, True, True),
    "RGBA, translucent pixels": (rgba_translucent, False, True),
    "palette with tRNS": (trns_palette, False, True),
    "JPEG renamed .png": (jpeg_renamed_png, False, False),
    "one row short": (one_row_short, False, False),
    "16-bit greyscale": (sixteen_bit_grey, False, False),
    "16-bit RGB": (sixteen_bit_rgb, False, True),
    "greyscale": (greyscale, False, False),
    "stray top-level file": (stray_top_level_file, False, False),
    "drivelab's synth.json": (synth_json, True, False),
    "mask named unlike its image": (misnamed_mask, False, False),
    "image without a mask": (image_without_mask, False, True),
    "image not the native size": (image_not_native, False, False),
    ".DS_Store in masks/": (ds_store_in_masks, False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_comma10k_ci_profile_agrees_with_their_ci(corpus: Path, case: str) -> None:
    breaker, default_ok, ci_ok = CASES[case]
    broken = breaker(corpus)
    assert their_ci_passes(corpus) is ci_ok, "the case does not break what it means to"
    ci = validate_dataset(corpus, profile="comma10k-ci", progress=False)
    assert ci.ok is ci_ok, ci
    assert ci.summary().startswith("comma10k (comma10k-ci): ")
    default = validate_dataset(corpus, progress=False)
    assert default.ok is default_ok, default
    for report in (ci, default):
        for p in report.problems:
            assert "\n" not in str(p) and str(p).startswith(str(p.path))
        if not report.ok:
            assert broken in {p.path for p in report.problems}, report
    if ci_ok and not default_ok:  # stricter than their CI: the message says so
        assert all("beyond comma10k's CI" in p.message for p in default.problems), default
    if case == "drivelab's synth.json":
        assert "drivelab synth" in ci.problems[0].message and ci.problems[0].kind == "location"


def test_ci_profile_without_history_says_images_were_not_checked(corpus: Path, tmp_path: Path) -> None:
    report = validate_dataset(corpus, profile="comma10k-ci", progress=False, compute_hashes=True)
    assert report.ok and any("not checked for changes" in n for n in report.notes)
    ref = tmp_path / "SHA1SUMS"
    write_hash_file(ref, report.hashes)
    img = sorted((corpus / "imgs").iterdir())[0]
    rgb = read_rgb(img).copy()
    rgb[0, 0] ^= 1
    _save_image(img, rgb)
    for profile in ("comma10k-ci", "default"):
        bad = validate_dataset(corpus, profile=profile, reference_hashes=ref, progress=False)
        assert [(p.path, p.kind) for p in bad.problems] == [(img, "modified")]


def test_modified_image_in_a_git_checkout(corpus: Path) -> None:
    _git(corpus, "init", "-q")
    _git(corpus, "add", "-A")
    _git(corpus, "commit", "-qm", "dataset")
    assert their_ci_passes(corpus)
    for profile in ("comma10k-ci", "default"):
        report = validate_dataset(corpus, profile=profile, progress=False)
        assert report.ok, report
        assert not any("not checked" in n for n in report.notes)
    img = sorted((corpus / "imgs").iterdir())[1]
    rgb = read_rgb(img).copy()
    rgb[5, 5] = 255 - rgb[5, 5]
    _save_image(img, rgb)
    # uncommitted: judged as the pull request it would become
    for profile in ("comma10k-ci", "default"):
        p = validate_dataset(corpus, profile=profile, progress=False).problems
        assert [(x.path, x.kind) for x in p] == [(img, "modified")], p
    # committed: their workflow (git diff against the pin) refuses it, and so does drivelab
    _git(corpus, "commit", "-qam", "touch up an image")
    assert not their_ci_passes(corpus)
    for profile in ("comma10k-ci", "default"):
        p = validate_dataset(corpus, profile=profile, progress=False).problems
        assert [(x.path, x.kind) for x in p] == [(img, "modified")], p
        assert "changed since commit" in p[0].message
    # reverting the change makes it pass again, as the diff against the pin is empty again
    _git(corpus, "revert", "--no-edit", "HEAD")
    assert their_ci_passes(corpus)
    assert validate_dataset(corpus, profile="comma10k-ci", progress=False).ok


def test_git_checkout_judges_only_what_would_be_committed(corpus: Path) -> None:
    (corpus / ".gitignore").write_text("scratch/\nmasks/*.bak.png\n")
    _git(corpus, "init", "-q")
    _git(corpus, "add", "-A")
    _git(corpus, "commit", "-qm", "dataset")
    (corpus / "scratch").mkdir()
    (corpus / "scratch" / "notes.txt").write_text("ignored: never part of a pull request")
    (corpus / "todo.txt").write_text("untracked: would be committed")
    Image.new("L", (4, 4)).save(corpus / "masks" / "x.bak.png")  # ignored: their CI never sees it
    report = validate_dataset(corpus, profile="comma10k-ci", progress=False)
    assert [(p.path.name, p.kind) for p in report.problems] == [("todo.txt", "location")]


def test_ci_profile_needs_comma10k_and_native_sizes(synth_copy) -> None:
    from drivelab.errors import DrivelabError

    small_set = synth_copy("comma10k")
    with pytest.raises(DrivelabError, match="needs a comma10k dataset"):
        validate_dataset(synth_copy("bdd100k"), profile="comma10k-ci", progress=False)
    with pytest.raises(DrivelabError, match="drop --size"):
        validate_dataset(small_set, profile="comma10k-ci", expected_size=(32, 64), progress=False)
    with pytest.raises(DrivelabError, match="unknown validation profile"):
        validate_dataset(small_set, profile="strict", progress=False)
    small = validate_dataset(small_set, profile="comma10k-ci", progress=False)
    assert {p.kind for p in small.problems} == {"size", "location"}  # 32x64 set, and its synth.json


def test_real_comma10k_pins_are_used_when_the_checkout_has_them(corpus: Path, monkeypatch) -> None:
    # In comma10k's own repository dont_modify_imgs.yml pins imgs/0* and imgs/1* to two commits.
    # A test checkout cannot hold those commits, so pin imgs/0* to this checkout's first commit.
    _git(corpus, "init", "-q")
    _git(corpus, "add", "-A")
    _git(corpus, "commit", "-qm", "dataset")
    pin = _git(corpus, "rev-parse", "HEAD").strip()
    monkeypatch.setattr("drivelab.data.validate.COMMA10K_PINNED", {"imgs/0": pin})
    assert validate_dataset(corpus, profile="comma10k-ci", progress=False).ok
    # an image added under a pinned prefix changes the diff against the pin: refused
    img, mask = sorted((corpus / "imgs").iterdir())[0], _mask(corpus)
    shutil.copy(img, corpus / "imgs" / "0002_new.png")
    shutil.copy(mask, corpus / "masks" / "0002_new.png")
    # one outside the pinned prefixes is not protected by their CI once committed, even if changed
    shutil.copy(img, corpus / "imgs" / "5000_new.png")
    shutil.copy(mask, corpus / "masks" / "5000_new.png")
    _git(corpus, "add", "-A")
    _git(corpus, "commit", "-qm", "more")
    rgb = read_rgb(corpus / "imgs" / "5000_new.png").copy()
    rgb[0, 0] ^= 1
    _save_image(corpus / "imgs" / "5000_new.png", rgb)
    _git(corpus, "commit", "-qam", "retouch")
    ci = validate_dataset(corpus, profile="comma10k-ci", progress=False)
    assert [(p.path.name, p.kind) for p in ci.problems] == [("0002_new.png", "modified")], ci
    assert "added after commit" in ci.problems[0].message and "imgs/0*" in ci.problems[0].message
    default = validate_dataset(corpus, progress=False)
    assert [(p.path.name, p.kind) for p in default.problems] == [("0002_new.png", "modified"),
                                                                 ("5000_new.png", "modified")], default
    assert "beyond comma10k's CI, which pins only imgs/0* and imgs/1*" in default.problems[1].message
