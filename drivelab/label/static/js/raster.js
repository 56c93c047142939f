// Integer rasterisation on a Uint8Array of class ids (row-major, width w, height h).
// Same rules as drivelab/label/raster.py (the tests replay strokes through the Python twin):
// no anti-aliasing anywhere, every painted pixel gets exactly one class id.
// Each function returns the touched bounding box {x0, y0, x1, y1} (inclusive) or null.
// `guard` ("protect classes"): an optional 256-entry table, guard[v] = 1 when a pixel holding v may
// be overwritten; checked at the moment of writing, as raster.py does.

export function brushOffsets(size) {
  size = Math.max(1, Math.floor(size));
  const k = Math.floor((size - 1) / 2);
  const c = (size - 1) / 2 - k;
  const r2 = (size / 2) ** 2;
  const out = [];
  for (let dy = -k; dy < size - k; dy++)
    for (let dx = -k; dx < size - k; dx++)
      if ((dx - c) ** 2 + (dy - c) ** 2 <= r2) out.push(dx, dy);
  return out;
}

export function linePixels(x0, y0, x1, y1) {
  const out = [];
  const dx = Math.abs(x1 - x0), dy = -Math.abs(y1 - y0);
  const sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  let err = dx + dy;
  for (;;) {
    out.push(x0, y0);
    if (x0 === x1 && y0 === y1) return out;
    const e2 = 2 * err;
    if (e2 >= dy) { err += dy; x0 += sx; }
    if (e2 <= dx) { err += dx; y0 += sy; }
  }
}

function grow(box, x, y) {
  if (!box) return { x0: x, y0: y, x1: x, y1: y };
  if (x < box.x0) box.x0 = x; if (x > box.x1) box.x1 = x;
  if (y < box.y0) box.y0 = y; if (y > box.y1) box.y1 = y;
  return box;
}

export function stamp(mask, w, h, x, y, offsets, value, box = null, guard = null) {
  for (let i = 0; i < offsets.length; i += 2) {
    const px = x + offsets[i], py = y + offsets[i + 1];
    if (px < 0 || py < 0 || px >= w || py >= h) continue;
    const j = py * w + px;
    if (guard && !guard[mask[j]]) continue;
    mask[j] = value;
    box = grow(box, px, py);
  }
  return box;
}

// One segment of a stroke: the brush at every Bresenham pixel from (x0,y0) to (x1,y1).
export function segment(mask, w, h, x0, y0, x1, y1, offsets, value, box = null, guard = null) {
  const pts = linePixels(x0, y0, x1, y1);
  for (let i = 0; i < pts.length; i += 2) box = stamp(mask, w, h, pts[i], pts[i + 1], offsets, value, box, guard);
  return box;
}

// Pixel centres inside the polygon (even-odd, half-open edges). verts: [{x, y}] in image coords.
export function fillPolygon(mask, w, h, verts, value, guard = null) {
  const n = verts.length;
  if (n < 3) return null;
  let ymin = Infinity, ymax = -Infinity, box = null;
  for (const v of verts) { ymin = Math.min(ymin, v.y); ymax = Math.max(ymax, v.y); }
  const ya0 = Math.max(0, Math.floor(ymin)), ya1 = Math.min(h, Math.ceil(ymax) + 1);
  for (let y = ya0; y < ya1; y++) {
    const yc = y + 0.5, xs = [];
    for (let i = 0; i < n; i++) {
      const a = verts[i], b = verts[(i + 1) % n];
      if ((a.y <= yc && yc < b.y) || (b.y <= yc && yc < a.y)) xs.push(a.x + (yc - a.y) * (b.x - a.x) / (b.y - a.y));
    }
    xs.sort((p, q) => p - q);
    for (let i = 0; i + 1 < xs.length; i += 2) {
      const lo = Math.max(0, Math.ceil(xs[i] - 0.5)), hi = Math.min(w, Math.ceil(xs[i + 1] - 0.5));
      if (hi <= lo) continue;
      if (guard) {
        for (let j = y * w + lo, e = y * w + hi; j < e; j++) if (guard[mask[j]]) mask[j] = value;
      } else mask.fill(value, y * w + lo, y * w + hi);
      box = grow(grow(box, lo, y), hi - 1, y);
    }
  }
  return box;
}

// 4-connected flood fill of the seed's class (scanline, iterative: no recursion limits).
export function floodFill(mask, w, h, x, y, value, guard = null) {
  const old = mask[y * w + x];
  if (old === value || (guard && !guard[old])) return null;
  let box = null;
  const stack = [x, y];
  while (stack.length) {
    const sy = stack.pop(), sx0 = stack.pop();
    if (mask[sy * w + sx0] !== old) continue;
    let l = sx0, r = sx0;
    while (l > 0 && mask[sy * w + l - 1] === old) l--;
    while (r < w - 1 && mask[sy * w + r + 1] === old) r++;
    mask.fill(value, sy * w + l, sy * w + r + 1);
    box = grow(grow(box, l, sy), r, sy);
    for (const ny of [sy - 1, sy + 1]) {
      if (ny < 0 || ny >= h) continue;
      let inRun = false;
      for (let i = l; i <= r; i++) {
        const hit = mask[ny * w + i] === old;
        if (hit && !inRun) stack.push(i, ny);
        inRun = hit;
      }
    }
  }
  return box;
}

// A boolean region (box-sized Uint8Array, box {x0, y0, x1, y1} inclusive) painted with `value`.
export function paintRegion(mask, w, region, box, value, guard = null) {
  const bw = box.x1 - box.x0 + 1;
  let out = null;
  for (let y = box.y0; y <= box.y1; y++) {
    for (let x = box.x0; x <= box.x1; x++) {
      if (!region[(y - box.y0) * bw + (x - box.x0)]) continue;
      const j = y * w + x;
      if (guard && !guard[mask[j]]) continue;
      mask[j] = value;
      out = grow(out, x, y);
    }
  }
  return out;
}

// ------------------------------------------------------------------ COCO polygons
// pycocotools' polygon rasteriser (maskApi rleFrPoly), reproduced operation for operation so a
// polygon drawn here covers exactly the pixels pycocotools decodes from the saved annotation: the
// outline is walked at 5x resolution with C's truncating integer casts, its crossings of pixel
// column centres become run boundaries in column-major order. (The server checks the result again
// and falls back to an RLE of what was shown if the two ever disagreed.)
const INT_MIN = -2147483648;
const cInt = (v) => (Number.isNaN(v) ? INT_MIN : Math.trunc(v)); // C's (int) of a double on x86

export function cocoPolygonRuns(xy, h, w) {
  const k = xy.length >> 1, S = 5;
  const x = new Array(k + 1), y = new Array(k + 1);
  for (let j = 0; j < k; j++) { x[j] = cInt(S * xy[2 * j] + 0.5); y[j] = cInt(S * xy[2 * j + 1] + 0.5); }
  x[k] = x[0]; y[k] = y[0];
  const u = [], v = [];
  for (let j = 0; j < k; j++) {
    let xs = x[j], xe = x[j + 1], ys = y[j], ye = y[j + 1];
    const dx = Math.abs(xe - xs), dy = Math.abs(ys - ye);
    const flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) { let t = xs; xs = xe; xe = t; t = ys; ys = ye; ye = t; }
    const s = dx >= dy ? (ye - ys) / dx : (xe - xs) / dy;
    if (dx >= dy) {
      for (let d = 0; d <= dx; d++) { const t = flip ? dx - d : d; u.push(t + xs); v.push(cInt(ys + s * t + 0.5)); }
    } else {
      for (let d = 0; d <= dy; d++) { const t = flip ? dy - d : d; v.push(t + ys); u.push(cInt(xs + s * t + 0.5)); }
    }
  }
  const a = [];
  for (let j = 1; j < u.length; j++) {
    if (u[j] === u[j - 1]) continue;
    let xd = u[j] < u[j - 1] ? u[j] : u[j] - 1;
    xd = (xd + 0.5) / S - 0.5;
    if (Math.floor(xd) !== xd || xd < 0 || xd > w - 1) continue;
    let yd = v[j] < v[j - 1] ? v[j] : v[j - 1];
    yd = (yd + 0.5) / S - 0.5;
    if (yd < 0) yd = 0; else if (yd > h) yd = h;
    a.push(xd * h + Math.ceil(yd));
  }
  a.push(h * w);
  a.sort((p, q) => p - q);
  let prev = 0;
  for (let j = 0; j < a.length; j++) { const t = a[j]; a[j] -= prev; prev = t; }
  const runs = [a[0]];
  for (let j = 1; j < a.length;) {
    if (a[j] > 0) runs.push(a[j++]);
    else { j++; if (j < a.length) runs[runs.length - 1] += a[j++]; }
  }
  return runs;
}
