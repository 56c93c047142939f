"""HTML report helpers, and `drivelab demo --quick` end to end."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from drivelab import report as rep
from drivelab.video import write_video


def test_report_is_self_contained(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    pd.DataFrame({"step": [1, 2, 3, 4], "train_loss": [1.0, 0.8, 0.6, 0.5],
                  "val_miou": [None, 0.4, None, 0.7]}).to_csv(csv, index=False)
    clip = tmp_path / "clip.mp4"
    write_video(clip, [np.full((32, 48, 3), i * 20, np.uint8) for i in range(5)], 10)
    img = np.zeros((20, 30, 3), np.uint8)
    img[:, :15] = (255, 0, 0)

    r = rep.Report("demo <report>", "sub")
    r.section("Metrics", rep.metrics_table({"miou": 0.91234, "pixel_acc": 0.5}),
              rep.metrics_table([{"model": "a", "fps": 30.0}, {"model": "b", "fps": 12.5}]))
    r.section("Curves", r.curves(csv, x="step"), r.curves(csv, x="step", columns=["val_miou"]))
    r.section("Images", rep.image_grid([("red | black", img)], fmt="PNG"))
    r.section("Video", rep.video(clip, "overlay"))
    page = r.write(tmp_path / "report.html").read_text()

    assert "<title>demo &lt;report&gt;</title>" in page
    assert "0.9123" in page and "12.5000" in page
    assert page.count("* plotly.js v") == 1 and page.count("Plotly.newPlot") == 2  # js inlined once ...
    assert len(re.findall(r"<script src=\"http", page)) == 0  # ... and nothing fetched from the net
    video = re.search(r'src="data:video/mp4;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(video) == clip.read_bytes()
    png = re.search(r'<img src="data:image/png;base64,([^"]+)"', page).group(1)
    from io import BytesIO

    from PIL import Image

    back = np.asarray(Image.open(BytesIO(base64.b64decode(png))))
    np.testing.assert_array_equal(back, img)


def test_demo_quick_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("drivelab.data.synth")
    pytest.importorskip("drivelab.seg.trainer")
    import typer
    from typer.testing import CliRunner

    from drivelab import demo

    app = typer.Typer()
    demo.register(app)
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["--quick", "--out", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    report = Path(res.output.strip().splitlines()[-1].removeprefix("report: "))
    assert report.exists() and report.stat().st_size > 10_000
    page = report.read_text()
    for section in ("Held-out metrics", "Held-out samples", "Video", "Stages"):
        assert section in page
    assert "data:video/mp4;base64," in page
    assert list((tmp_path / "demo" / "predict").glob("*_overlay.mp4"))
