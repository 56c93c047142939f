"""Procedural driving scenes with exact labels.

One scene is painted back to front into a label map of Cityscapes labelIds (the richest of
the driving vocabularies; every other format maps from it) plus a lane-marking mask and an
instance-id map. The image is then *rendered from the labels*: every class gets a colour drawn
from a wide per-image distribution that overlaps other classes (grey cars on grey roads, white
lane paint next to pale sidewalks), texture noise at two scales, shadows, a lighting gain and
a slight camera blur. Labels stay exact; telling classes apart needs shape and context, not
one colour lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Cityscapes labelIds used by the generator.
EGO, ROAD, SIDEWALK, BUILDING, POLE, SIGN, VEGETATION, TERRAIN, SKY = 1, 7, 8, 11, 17, 20, 21, 22, 23
PERSON, CAR, TRUCK = 24, 26, 27
MOVABLE = (PERSON, CAR, TRUCK)


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    label_ids: np.ndarray  # (H, W) uint8 Cityscapes labelIds
    lanes: np.ndarray  # (H, W) bool, lane paint on the road
    instance_ids: np.ndarray  # (H, W) int32, Cityscapes style: labelId * 1000 + k for objects, else labelId
    attributes: dict  # what was drawn (night, object counts): ground truth for data-engine studies


@dataclass
class SceneOptions:
    """Knobs for dataset-level variety and imbalance (the data engine's benchmarks use them)."""

    cars: tuple[int, int] = (1, 5)  # inclusive range of vehicles per scene
    people: tuple[int, int] = (0, 3)
    poles: tuple[int, int] = (0, 3)
    night: float = 0.0  # probability of a night scene (dark, blue, lit tail lights)
    hood: bool = True  # the ego car's hood at the bottom (comma10k "my car")


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency noise in about [-1, 1]: a coarse random grid upsampled smoothly."""
    gh, gw = max(2, h // cell + 2), max(2, w // cell + 2)
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC) * 0.6


def _color(rng: np.random.Generator, center: tuple[float, float, float], spread: float) -> np.ndarray:
    return np.clip(np.asarray(center, np.float32) + rng.normal(0, spread, 3), 0, 255)


class _Painter:
    """Holds the label, instance and base-colour layers while a scene is painted."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.labels = np.full((h, w), SKY, np.uint8)
        self.inst = np.zeros((h, w), np.int32)
        self.color = np.zeros((h, w, 3), np.float32)
        self.texture = np.zeros((h, w), np.float32)  # per-pixel texture amplitude
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)
        self.next_instance = 0

    def fill(self, where: np.ndarray, label: int, color: np.ndarray, texture: float,
             instance: bool = False) -> None:
        self.labels[where] = label
        self.color[where] = color
        self.texture[where] = texture
        if instance:
            self.inst[where] = label * 1000 + self.next_instance
            self.next_instance += 1
        else:
            self.inst[where] = 0


def render_scene(rng: np.random.Generator, size: tuple[int, int], opts: SceneOptions | None = None) -> Scene:
    """Paint one scene of ``size`` (H, W)."""
    opts = opts or SceneOptions()
    h, w = size
    p = _Painter(h, w)
    yy, xx = p.yy, p.xx
    night = rng.random() < opts.night

    horizon = h * rng.uniform(0.36, 0.5)
    vx = w * rng.uniform(0.38, 0.62)
    below = yy > horizon
    t = np.clip((yy - horizon) / (h - horizon), 0, 1)  # 0 at the horizon, 1 at the bottom row

    # Sky: blue to overcast grey, brighter at the horizon.
    sky = _color(rng, (150, 175, 205) if rng.random() < 0.6 else (185, 185, 190), 18)
    p.fill(~below, SKY, sky, 3)
    p.color[~below] *= (0.85 + 0.25 * (yy[~below] / max(horizon, 1)))[:, None]

    # Ground beyond the sidewalks: terrain (grass/dirt) that overlaps vegetation in colour.
    p.fill(below, TERRAIN, _color(rng, (110, 125, 80), 22), 14)

    # Road geometry: centre drifts and curves, half-width grows linearly with depth.
    half = t * w * rng.uniform(0.45, 0.85)
    center = vx + t * w * rng.uniform(-0.15, 0.15) + (t**2) * w * rng.uniform(-0.2, 0.2)
    dist = xx - center
    walk = rng.uniform(1.2, 1.5)

    # Buildings and trees stand behind the sidewalks on each side.
    for side in (-1, 1):
        outside = (dist * side > half * walk) & (yy > horizon - h * 0.5)
        x0 = 0 if side < 0 else int(vx)
        x1 = int(vx) if side < 0 else w
        kind = rng.random()
        if kind < 0.6:  # a row of buildings of varying height, taller near the image edge
            xs = np.sort(rng.uniform(x0, x1, int(rng.integers(2, 6))))
            bounds = np.concatenate([[x0], xs, [x1]])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                near = abs(((a + b) / 2) - vx) / (w / 2)
                top = horizon - h * rng.uniform(0.05, 0.15 + 0.45 * near)
                base = _color(rng, (rng.uniform(70, 190),) * 3, 25)
                where = (xx >= a) & (xx < b) & (yy >= top) & (yy < horizon + (h - horizon) * 0.25) & outside
                where |= (xx >= a) & (xx < b) & (yy >= top) & ~below
                p.fill(where, BUILDING, base, 10)
                # windows: a darker grid that belongs to the building label
                rows = (yy - top) % max(3, h // 20) < max(1, h // 50)
                cols = (xx - a) % max(3, w // 25) < max(1, w // 60)
                win = where & rows & cols
                p.color[win] *= 0.55
        else:  # trees: overlapping discs of vegetation
            for _ in range(int(rng.integers(3, 8))):
                cx, cy = rng.uniform(x0, x1), horizon - h * rng.uniform(-0.02, 0.2)
                r = h * rng.uniform(0.06, 0.2)
                disc = (xx - cx) ** 2 + ((yy - cy) * 1.2) ** 2 < r**2
                disc &= outside | ~below
                p.fill(disc, VEGETATION, _color(rng, (70, 110, 50), 20), 30)

    on_sidewalk = below & (np.abs(dist) > half) & (np.abs(dist) <= half * walk)
    p.fill(on_sidewalk, SIDEWALK, _color(rng, (150, 145, 140), 20), 8)
    road = below & (np.abs(dist) <= half)
    road_color = _color(rng, (rng.uniform(70, 130),) * 3, 10)
    p.fill(road, ROAD, road_color, 9)

    # Lane paint: dashed centre lines and solid edges, thicker with depth; dashes repeat
    # uniformly in depth (1/t), so they shorten towards the horizon as on a real road.
    lanes = np.zeros((h, w), bool)
    depth = 1.0 / np.maximum(t, 1e-3)
    phase = rng.uniform(0, 1)
    n_lanes = int(rng.integers(2, 4))
    for k in range(1, n_lanes):
        s = -1 + 2 * k / n_lanes
        line = np.abs(dist - s * half) < (half * 0.03 + 0.5)
        dashed = ((depth * 1.6 + phase) % 1.0) < 0.5
        lanes |= road & line & dashed & (t > 0.04)
    for s in (-0.96, 0.96):
        if rng.random() < 0.7:
            lanes |= road & (np.abs(dist - s * half) < (half * 0.025 + 0.5)) & (t > 0.04)
    paint = _color(rng, (235, 235, 235) if rng.random() < 0.75 else (225, 190, 60), 15)
    paint = road_color + (paint - road_color) * rng.uniform(0.6, 1.0)  # faded paint
    p.color[lanes] = paint
    p.texture[lanes] = 6

    # Poles with signs on the sidewalks.
    for _ in range(int(rng.integers(opts.poles[0], opts.poles[1] + 1))):
        tp = rng.uniform(0.1, 0.6)
        yb = horizon + tp * (h - horizon)
        side = rng.choice([-1, 1])
        xb = float(np.interp(yb, yy[:, 0], center[:, 0])) + side * tp * w * 0.7 * rng.uniform(0.5, 0.85)
        height = tp * h * rng.uniform(0.9, 1.4)
        pw = max(1.0, tp * w * 0.012)
        pole = (np.abs(xx - xb) <= pw) & (yy <= yb) & (yy >= yb - height)
        p.fill(pole, POLE, _color(rng, (120, 120, 125), 25), 4)
        sw = pw * rng.uniform(4, 7)
        sign = (np.abs(xx - xb) <= sw) & (yy >= yb - height) & (yy <= yb - height + sw * 1.6)
        sign_color = [(200, 40, 40), (40, 70, 180), (230, 200, 40)][int(rng.integers(0, 3))]
        p.fill(sign, SIGN, _color(rng, sign_color, 20), 4)

    # Movable objects, far to near so nearer ones occlude.
    objects = []
    for _ in range(int(rng.integers(opts.cars[0], opts.cars[1] + 1))):
        objects.append(("car", rng.uniform(0.06, 0.75)))
    for _ in range(int(rng.integers(opts.people[0], opts.people[1] + 1))):
        objects.append(("person", rng.uniform(0.08, 0.6)))
    objects.sort(key=lambda o: o[1])
    tail_lights = np.zeros((h, w), bool)
    for kind, to in objects:
        yb = horizon + to * (h - horizon)
        row = min(int(yb), h - 1)
        c, hw = float(center[row, 0]), float(half[row, 0])
        if kind == "car":
            truck = rng.random() < 0.2
            cw = to * w * rng.uniform(0.28, 0.38) * (1.3 if truck else 1.0)
            ch = cw * (0.95 if truck else rng.uniform(0.55, 0.75))
            cx = c + rng.uniform(-0.75, 0.75) * hw
            body = (np.abs(xx - cx) <= cw / 2) & (yy <= yb) & (yy >= yb - ch * 0.6)
            cabin_w = cw * (0.5 if truck else 0.36)
            cabin = (np.abs(xx - cx) <= cabin_w) & (yy < yb - ch * 0.55) & (yy >= yb - ch)
            shape = body | cabin
            gray = rng.random() < 0.4
            color = _color(rng, (rng.uniform(60, 170),) * 3 if gray else rng.uniform(30, 230, 3), 15)
            p.fill(shape, TRUCK if truck else CAR, color, 7, instance=True)
            glass = cabin & (np.abs(xx - cx) <= cw * 0.3) & (yy >= yb - ch * 0.92)
            p.color[glass] = _color(rng, (45, 55, 65), 10)
            wheels = (yy > yb - ch * 0.12) & (np.abs(np.abs(xx - cx) - cw * 0.33) < cw * 0.1) & body
            p.color[wheels] = (20, 20, 20)
            lamp_row = (yy > yb - ch * 0.45) & (yy < yb - ch * 0.35)
            tail_lights |= body & lamp_row & (np.abs(xx - cx) > cw * 0.38)
        else:
            ph = to * h * rng.uniform(0.55, 0.8)
            side = rng.choice([-1, 1])
            px = c + side * hw * rng.uniform(1.02, walk * 0.98)
            torso = ((xx - px) / (ph * 0.13)) ** 2 + ((yy - (yb - ph * 0.55)) / (ph * 0.42)) ** 2 <= 1
            head = (xx - px) ** 2 + (yy - (yb - ph * 0.9)) ** 2 <= (ph * 0.09) ** 2
            shape = (torso | head) & (yy <= yb)
            p.fill(shape, PERSON, _color(rng, rng.uniform(30, 220, 3), 20), 10, instance=True)
            p.color[head & shape] = _color(rng, (200, 160, 130), 30)

    if opts.hood:
        # The ego hood: a shallow arc across the bottom rows, reflecting the sky faintly.
        top = h * rng.uniform(0.84, 0.92)
        arc = top + ((xx - w / 2) / (w / 2)) ** 2 * h * rng.uniform(0.03, 0.08)
        hood = yy >= arc
        p.fill(hood, EGO, _color(rng, (rng.uniform(20, 120),) * 3, 10), 3)
        p.color[hood] += (yy[hood] - top)[:, None] * -0.4 + 20

    image = _render(rng, p, night, tail_lights)
    instance_ids = np.where(p.inst > 0, p.inst, p.labels)
    kinds = [k for k, _ in objects]
    attributes = {"night": bool(night), "cars": kinds.count("car"), "people": kinds.count("person")}
    return Scene(image, p.labels, lanes, instance_ids, attributes)


def _render(rng: np.random.Generator, p: _Painter, night: bool, tail_lights: np.ndarray) -> np.ndarray:
    h, w = p.h, p.w
    img = p.color.copy()
    fine = rng.standard_normal((h, w)).astype(np.float32)
    coarse = _smooth_noise(rng, h, w, max(4, w // 16))
    img += ((fine * 0.7 + coarse * 1.5) * p.texture)[..., None]
    # Shadows (trees, buildings) darken the ground but never change a label.
    shade = _smooth_noise(rng, h, w, max(6, w // 10))
    shadows = (shade > rng.uniform(0.2, 0.6)) & (p.labels != 23)
    img[shadows] *= rng.uniform(0.55, 0.8)
    gain = rng.uniform(0.25, 0.4) if night else rng.uniform(0.7, 1.2)
    img *= gain
    if night:
        img *= np.array([0.8, 0.9, 1.25], np.float32)
        img[tail_lights] = (255, 40, 30)
    img += rng.normal(0, 3, (h, w, 3)).astype(np.float32)  # sensor noise
    img = np.clip(img, 0, 255).astype(np.uint8)
    sigma = rng.uniform(0.4, 1.0)
    return cv2.GaussianBlur(img, (0, 0), sigma)
