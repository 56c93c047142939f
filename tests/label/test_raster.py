"""The paint tools' pixel rules (the browser's raster.js follows them; the browser test checks that)."""

from __future__ import annotations

import numpy as np

from drivelab.label import raster


def test_brush_footprints():
    assert raster.brush_offsets(1) == [(0, 0)]
    assert len(raster.brush_offsets(2)) == 4  # a 2x2 block
    assert len(raster.brush_offsets(3)) == 9
    five = {(dx, dy) for dx, dy in raster.brush_offsets(5)}
    assert (0, 0) in five and (2, 0) in five and (2, 2) not in five  # round, not square
    assert five == {(-dx, -dy) for dx, dy in five}  # odd sizes are centred


def test_stroke_line_and_polygon_exact():
    m = np.full((10, 12), 255, np.uint8)
    raster.stroke(m, [(1, 1), (8, 1)], size=1, value=3)
    assert np.array_equal(np.nonzero(m == 3)[1], np.arange(1, 9)) and (m == 3).sum() == 8
    m[:] = 255
    raster.polygon(m, [(2.5, 2.5), (6.5, 2.5), (6.5, 5.5), (2.5, 5.5)], value=1)
    # Pixel centres inside [2.5, 6.5) x [2.5, 5.5): columns 2..5, rows 2..4.
    expect = np.zeros_like(m, bool)
    expect[2:5, 2:6] = True
    assert np.array_equal(m == 1, expect)


def test_flood_fill_is_4_connected():
    m = np.zeros((5, 5), np.uint8)
    m[2, :] = 1
    m[:, 2] = 1
    m[0, 0] = 2
    m[1, 1] = 2  # touches (0, 0) only diagonally
    raster.flood_fill(m, 0, 0, 4)
    assert m[0, 0] == 4 and m[1, 1] == 2 and (m == 4).sum() == 1
    raster.flood_fill(m, 4, 4, 3)
    assert (m == 3).sum() == 4  # the bottom-right quadrant only


def test_protected_classes_are_never_painted_over():
    m = np.full((8, 8), 255, np.uint8)
    m[:, :3] = 0  # road, protected
    m[:, 6:] = 2
    g = raster.guard_table("protect", {0})
    raster.stroke(m, [(0, 4), (7, 4)], size=3, value=1, guard=g)
    assert (m[:, :3] == 0).all()  # the protected road survives the stroke across it
    assert (m[3:6, 3:6] == 1).all() and (m[3:6, 6:] == 1).all()
    only = np.full((8, 8), 255, np.uint8)
    only[2:6, 2:6] = 3
    raster.polygon(only, [(0, 0), (8, 0), (8, 8), (0, 8)], 4, guard=raster.guard_table("unlabelled"))
    assert (only[2:6, 2:6] == 3).all() and (only == 4).sum() == 64 - 16
    raster.flood_fill(m, 0, 0, 4, guard=g)  # the seed's class is protected: nothing happens
    assert (m[:, :3] == 0).all()
