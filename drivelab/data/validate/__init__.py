"""``validate_dataset``: check every file of a dataset the way its field's own tools would.

Two profiles. ``comma10k-ci`` gives exactly the verdict of comma10k's pull-request CI
(``tools/canonicialize_masks.py`` with ONLYCHECK, ``check_img_size.py``, ``check_filename.py``,
``check_file_location.py`` and the ``dont_modify_imgs`` workflow): same accept/refuse on every
file, and where their scripts crash, a one-line message instead. ``default`` applies those rules
to every format and adds stricter ones, each saying so in its message (docs/data.md has the
rule-by-rule table).

The files come from the reader's own index (``drivelab.data.<format>.index_files``), so validate
and the reader agree on which files form a sample. The layout rules live in ``layouts``, the pixel
rules in ``pixels``, hashes and git history in ``history``, the result types in ``report``. Every
file is read once, in a thread pool (PIL and numpy release the GIL); every check is vectorised.
Unreadable and truncated files are problems, never crashes; validation always runs to the end.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from drivelab.data.index import Entry, FileIndex
from drivelab.data.validate.history import (
    COMMA10K_PINNED,
    GitCheckout,
    GitError,
    read_hashes,
    sha1_file,
    write_hash_file,
)
from drivelab.data.validate.layouts import BEYOND_CI, CI_PROFILE, PLANS, Context, Plan
from drivelab.data.validate.pixels import Opened, open_file
from drivelab.data.validate.report import Problem, Size, ValidationReport
from drivelab.errors import DrivelabError

PROFILES = ("default", CI_PROFILE)


def _indexers() -> dict[str, Callable[[Path], FileIndex]]:
    from drivelab.data import bdd100k, cityscapes, coco, comma10k, folder

    return {"comma10k": comma10k.index_files, "cityscapes": cityscapes.index_files,
            "bdd100k": bdd100k.index_files, "coco": coco.index_files, "folder": folder.index_files}


def validate_dataset(
    root: str | Path,
    format: str | None = None,
    *,
    profile: str = "default",
    reference_hashes: dict[str, str] | str | Path | None = None,
    expected_size: Size | str | None = None,
    compute_hashes: bool = False,
    progress: bool = True,
) -> ValidationReport:
    """Check every image and mask of a dataset; see the module docstring and docs/data.md.

    ``profile`` is ``"default"`` or ``"comma10k-ci"`` (comma10k datasets only; sizes are then always
    the native ones). ``expected_size`` is (H, W) for every folder, ``"native"`` for the format's own
    sizes, or None (each folder's most common size). Image hashes are computed when
    ``reference_hashes`` is given (a dict or a hash file), ``compute_hashes`` is set or the dataset
    is a git checkout; sha1s end up in ``report.hashes``.
    """
    from drivelab.data import FORMATS, detect_format

    root = Path(root)
    if not root.is_dir():
        raise DrivelabError("dataset folder not found", root)
    if profile not in PROFILES:
        raise DrivelabError(f"unknown validation profile {profile!r}; choose one of {', '.join(PROFILES)}")
    format = format or detect_format(root)
    if format not in PLANS:
        raise DrivelabError(f"unknown dataset format {format!r}; choose one of {', '.join(FORMATS)}")
    ci = profile == CI_PROFILE
    if ci and format != "comma10k":
        raise DrivelabError(f"--profile {CI_PROFILE} is comma10k's CI: it needs a comma10k dataset, this is "
                            f"{format}", root)
    if ci and expected_size not in (None, "native"):
        raise DrivelabError(f"--profile {CI_PROFILE} always requires comma10k's native sizes; drop --size")
    if isinstance(reference_hashes, (str, Path)):
        reference_hashes = read_hashes(reference_hashes)

    report = ValidationReport(root, format, profile)
    git, git_problem = GitCheckout.open(root)
    if git_problem:
        report.notes.append(f"git cannot read this checkout ({git_problem}); images were not checked "
                            "against its history")
    ctx = Context(report, profile, git)
    if git is not None:
        try:
            ctx.committed = git.files()
        except GitError as e:
            report.notes.append(f"git cannot list this checkout ({e}); judged as a plain folder")
            git = ctx.git = None
    index = _indexers()[format](root)
    if ci and ctx.committed is not None:
        _only_committed(index, ctx.committed)
    plan = PLANS[format](index, ctx)

    hashes = compute_hashes or reference_hashes is not None or git is not None
    entries = index.entries
    results = _run([lambda e=e: _check_entry(e, plan, hashes) for e in entries], progress,
                   f"validate {root.name}")
    for res in results:
        report.checked += res.files
        report.problems += res.problems
        report.notes += res.notes
        if res.image is not None and res.image.sha1 is not None:
            report.hashes[res.image.path.relative_to(root).as_posix()] = res.image.sha1

    _check_sizes(entries, results, index.native, "native" if ci else expected_size, plan, report)
    if reference_hashes is not None:
        _check_hashes(reference_hashes, report, root)
    if git is not None:
        _check_history(git, entries, results, ctx)
    elif ci and reference_hashes is None:
        report.notes.append("images were not checked for changes: not a git checkout and no --hashes "
                            "reference (comma10k's CI refuses any change to imgs/)")
    report.problems.sort(key=lambda p: (str(p.path), p.kind))
    return report


def _only_committed(index: FileIndex, committed: set[str]) -> None:
    """Keep the files a commit of the work tree would hold (a pull request never sees ignored ones)."""
    root = index.root
    kept = []
    for e in index.entries:
        if e.image is not None and e.image.relative_to(root).as_posix() not in committed:
            e.image = None
        e.labels = {r: p for r, p in e.labels.items() if p.relative_to(root).as_posix() in committed}
        if e.image is not None or e.labels:
            kept.append(e)
    index.entries = kept


# --------------------------------------------------------------------------- pixel pass
@dataclass
class _Checked:
    """One entry after the pixel pass: its image file, the sizes of its label files, its problems."""

    image: Opened | None = None
    label_sizes: dict[str, Size | None] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0


def _check_entry(e: Entry, plan: Plan, hashes: bool) -> _Checked:
    out = _Checked()
    if e.image is not None:
        f = open_file(e.image, hashes)
        out.files += 1
        out.problems += f.problems
        if f.img is not None and plan.image_rgb and f.mode != "RGB":
            out.problems.append(Problem(e.image, "channels", f"image mode {f.mode} ({len(f.img.getbands())} "
                                        "channels); images must be 3-channel RGB"))
        f.img = None  # only its size and hashes are needed from here on
        out.image = f
    arrays: dict[str, np.ndarray] = {}
    for role, path in e.labels.items():
        f = open_file(path)
        out.files += 1
        out.problems += f.problems
        out.label_sizes[role] = f.size
        rule = plan.rule(e, role) if f.img is not None else None
        if rule is None:
            continue
        out.problems += rule.check(f, out.notes)
        if role in plan.keep_arrays:
            arr = rule.arrays(f)
            if arr is not None:
                arrays[role] = arr
    if plan.cross is not None and arrays:
        out.problems += plan.cross(e, arrays)
    return out


def _run(tasks: list[Callable[[], _Checked]], progress: bool, label: str) -> list[_Checked]:
    workers = min(16, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda t: t(), tasks)
        if progress and tasks:
            from rich.progress import track

            results = track(results, total=len(tasks), description=label, transient=True)
        return list(results)


# --------------------------------------------------------------------------- sizes
def _fmt(size: Size) -> str:
    return f"{size[0]}x{size[1]}"


def _check_sizes(entries: list[Entry], results: list[_Checked], native: dict[str, Size],
                 expected: Size | str | None, plan: Plan, report: ValidationReport) -> None:
    groups: dict[str, list[tuple[Entry, _Checked]]] = {}
    for e, res in zip(entries, results, strict=True):
        groups.setdefault(e.group, []).append((e, res))
    ci = report.profile == CI_PROFILE
    for group, members in groups.items():
        fixed = group.startswith("/")  # one-file groups (COCO, folder): the size comes from metadata
        sizes = Counter(res.image.size for _, res in members if res.image is not None)
        sizes.pop(None, None)
        if fixed:
            required = members[0][0].expected if expected is None or expected == "native" else tuple(expected)
        elif expected == "native":
            required = native.get(group)
        elif expected is not None:
            required = tuple(expected)
        elif sizes:
            best = max(sizes.values())
            tied = [s for s, n in sizes.items() if n == best]
            required = native.get(group) if native.get(group) in tied else tied[0]
        else:
            required = None
        if required is not None and not fixed:
            report.sizes[group] = required
            if group in native and required != native[group] and expected is None:
                report.notes.append(
                    f"{group}/: images are {_fmt(required)} (HxW), not the native "
                    f"{report.format} {_fmt(native[group])}; a synthetic or resized set? "
                    "pass --size native to require the native size"
                )
        for e, res in members:
            img_size = res.image.size if res.image is not None else None
            if img_size is not None and required is not None and img_size != required:
                if fixed:
                    why = "the json says"
                elif ci:
                    why = f"comma10k's CI requires {group}/ images to be"
                else:
                    why = f"the folder's size{' (given)' if expected else ''} is"
                report.add(e.image, "size", f"image is {_fmt(img_size)} (HxW), {why} {_fmt(required)}")
            # comma10k's CI holds masks to the native size itself; otherwise a mask must match its image.
            ref = required if plan.masks_native else (img_size or required)
            for role, size in res.label_sizes.items():
                if size is None or ref is None or size == ref:
                    continue
                if plan.masks_native:
                    other = f"comma10k's CI requires {group.replace('imgs', 'masks')}/ masks to be"
                else:
                    other = "its image is" if img_size else "the folder's size is"
                report.add(e.labels[role], "size", f"mask is {_fmt(size)} (HxW), {other} {_fmt(ref)}")


# --------------------------------------------------------------------------- unchanged images
def _check_hashes(reference: dict[str, str], report: ValidationReport, root: Path) -> None:
    for name, ref in sorted(reference.items()):
        path = root / name
        got = report.hashes.get(name)
        if got is None:
            if not path.is_file():
                report.add(path, "missing-file", "listed in the reference hashes but missing")
                continue
            got = sha1_file(path)
        if got != ref:
            report.add(path, "modified", f"image changed: sha1 {got[:12]}..., reference {ref[:12]}...")


def _check_history(git: GitCheckout, entries: list[Entry], results: list[_Checked], ctx: Context) -> None:
    """Images against the checkout's history (see ``history``): pinned commits when the checkout
    is comma10k's own repository, else each image against the version first committed."""
    report, root = ctx.report, ctx.report.root
    current = {res.image.path.relative_to(root).as_posix(): res.image.git_blob
               for res in results if res.image is not None and res.image.git_blob}
    folders = sorted({e.image.relative_to(root).parts[0] for e in entries if e.image is not None}
                     | {e.group for e in entries if not e.group.startswith("/")})
    try:
        pinned = report.format == "comma10k" and all(git.has_commit(c) for c in COMMA10K_PINNED.values())
        pins = {}
        if pinned:
            for prefix, commit in COMMA10K_PINNED.items():
                tree = git.tree(commit, prefix.split("/", 1)[0])
                for path in sorted(set(tree) | set(current)):
                    now = current.get(path)
                    if not path.startswith(prefix) or (now is None and (root / path).exists()):
                        continue  # outside the pin, or not an image of the index (layout rules judge it)
                    if tree.get(path) != now:
                        pins[path] = (tree.get(path), commit, prefix)
        # With the pins present, comma10k's CI protects nothing else: the ci profile stops there.
        first = {} if pinned and ctx.ci else git.first_commits(folders)
    except GitError as e:
        report.notes.append(f"git cannot read this checkout's history ({e}); images were not checked")
        return
    changed = dict(pins)
    for path, pin in first.items():
        if path in changed or (pinned and any(path.startswith(p) for p in COMMA10K_PINNED)):
            continue
        now = current.get(path)
        if now is None and (root / path).exists():
            continue  # there, but not an image of the index: the layout rules judge it
        if now != pin.blob:
            changed[path] = (pin.blob, pin.commit, None)
    # Blobs computed in-process can differ from git's where the checkout filters files (LFS,
    # line endings): ask git itself before calling an image changed.
    recheck = [p for p, (ref, _, _) in changed.items() if ref is not None and current.get(p) is not None]
    try:
        for path, blob in git.blobs_of(recheck).items():
            if blob == changed[path][0]:
                del changed[path]
    except GitError:
        pass
    for path, (ref, commit, prefix) in sorted(changed.items()):
        now = current.get(path)
        if prefix is not None:
            what = ("added after" if ref is None else "deleted since" if now is None else "changed since")
            msg = (f"image {what} commit {commit[:12]}, to which comma10k's dont_modify_imgs workflow pins "
                   f"{prefix}*")
        else:
            what = "deleted" if now is None else "changed"
            msg = f"image {what} since commit {commit[:12]} added it"
            if report.format == "comma10k":
                msg = (msg + f" ({BEYOND_CI}, which pins only imgs/0* and imgs/1*)" if pinned else
                       msg + " (comma10k's CI pins imgs/ to commits of its own repository; in any other "
                       "checkout drivelab pins every image to the commit that added it)")
        report.add(root / path, "modified", msg)


__all__ = ["PROFILES", "Problem", "ValidationReport", "read_hashes", "validate_dataset", "write_hash_file"]
