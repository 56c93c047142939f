"""The data verbs through the real CLI: help, validate exit codes, convert, synth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from drivelab.cli import app
from drivelab.errors import DrivelabError
from drivelab.io import read_label, read_rgb, write_png

QUIET = "--no-progress"

runner = CliRunner()


def test_help_lists_every_command_with_a_description() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    import typer

    commands = typer.main.get_command(app).commands
    assert {"validate", "convert", "synth", "demo", "train", "vq"} <= set(commands)
    for name, cmd in commands.items():
        assert name in result.output
        assert (cmd.help or "").strip(), f"{name} has no one-line description"
    for name in ("validate", "convert", "synth"):
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0 and "--" in sub.output


def test_synth_then_validate_clean_and_broken(tmp_path: Path) -> None:
    root = tmp_path / "c"
    result = runner.invoke(
        app, ["synth", "comma10k", str(root), "--n", "5", "--size", "32x64", "--seed", "1", QUIET]
    )
    assert result.exit_code == 0, result.output
    assert len(list((root / "imgs").iterdir())) == 5
    ok = runner.invoke(app, ["validate", str(root), QUIET, "--write-hashes", str(tmp_path / "SHA1SUMS")])
    assert ok.exit_code == 0, ok.output
    assert "10 files checked, 0 problems" in ok.output
    assert len((tmp_path / "SHA1SUMS").read_text().splitlines()) == 5

    mask = sorted((root / "masks").iterdir())[0]
    rgb = read_rgb(mask).copy()
    rgb[3, 3] = (1, 2, 3)
    write_png(mask, rgb)
    img = sorted((root / "imgs").iterdir())[1]
    write_png(img, 255 - read_rgb(img))
    bad = runner.invoke(app, ["validate", str(root), QUIET, "--hashes", str(tmp_path / "SHA1SUMS")])
    assert bad.exit_code == 1, bad.output
    assert mask.name in bad.output and "bad-pixels" in bad.output and "modified" in bad.output
    assert "2 problems" in bad.output

    sized = runner.invoke(app, ["validate", str(root), QUIET, "--size", "64x64"])
    assert sized.exit_code == 1 and "size" in sized.output


def test_missing_folder_is_exit_2_with_one_line(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(tmp_path / "nope")])
    assert isinstance(result.exception, DrivelabError)
    proc = subprocess.run(
        [sys.executable, "-m", "drivelab.cli", "validate", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {tmp_path / 'nope'}: dataset folder not found"]


def test_convert_cityscapes_sample(cityscapes_sample: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["convert", str(cityscapes_sample), "--to", "cityscapes-trainids", str(out), QUIET]
    )
    assert result.exit_code == 0, result.output
    trainids = next(out.glob("gtFine/val/frankfurt/*_labelTrainIds.png"))
    labelids = read_label(next(out.glob("gtFine/val/frankfurt/*_labelIds.png")))
    t = read_label(trainids)
    assert (
        (t[labelids == 7] == 0).all() and (t[labelids == 26] == 13).all() and (t[labelids == 0] == 255).all()
    )


def test_convert_index_cli(synth_copy, tmp_path: Path) -> None:
    src = synth_copy("bdd100k")
    args = ["convert", str(src), "--to", "index", str(tmp_path / "idx"), "--copy", QUIET]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    mask = next((tmp_path / "idx").glob("labels/sem_seg/masks/*/*.png"))
    orig = src / mask.relative_to(tmp_path / "idx")
    np.testing.assert_array_equal(read_label(mask), read_label(orig))


def test_validate_profile_and_json(synth_copy, tmp_path: Path) -> None:
    import json

    root = synth_copy("comma10k")
    assert runner.invoke(app, ["validate", str(root), QUIET]).exit_code == 0  # synth.json is drivelab's own
    out = tmp_path / "report.json"
    ci = runner.invoke(app, ["validate", str(root), QUIET, "--profile", "comma10k-ci", "--json", str(out)])
    assert ci.exit_code == 1, ci.output
    assert "comma10k (comma10k-ci): 12 files checked" in ci.output and "synth.json" in ci.output
    report = json.loads(out.read_text())
    assert report["profile"] == "comma10k-ci" and report["ok"] is False
    kinds = {(p["path"], p["kind"]) for p in report["problems"]}
    first_mask = "masks/" + sorted(p.name for p in (root / "masks").iterdir())[0]
    assert ("synth.json", "location") in kinds and (first_mask, "size") in kinds
    bad = subprocess.run([sys.executable, "-m", "drivelab.cli", "validate", str(root), "--profile", "strict"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    assert "unknown validation profile 'strict'" in bad.stderr
