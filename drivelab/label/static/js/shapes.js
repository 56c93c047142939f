// Object shapes for instance labelling: a bitmask cropped to its box, {x0, y0, w, h, data}
// (data: Uint8Array(w * h), 1 = the object's pixel), in image pixels. Shapes are never changed in
// place once an object holds them (edits make new ones), so undo keeps old shapes by reference.
// Run lengths are COCO's uncompressed RLE counts: column-major, zeros first.

import { cocoPolygonRuns } from "./raster.js";

export const EMPTY = Object.freeze({ x0: 0, y0: 0, w: 0, h: 0, data: new Uint8Array(0) });

export function has(s, x, y) {
  const i = x - s.x0, j = y - s.y0;
  return i >= 0 && j >= 0 && i < s.w && j < s.h && s.data[j * s.w + i] === 1;
}

export function area(s) {
  let n = 0;
  for (let i = 0; i < s.data.length; i++) n += s.data[i];
  return n;
}

export const box = (s) => (s.w ? { x0: s.x0, y0: s.y0, x1: s.x0 + s.w - 1, y1: s.y0 + s.h - 1 } : null);

export function unionBox(a, b) {
  if (!a) return b; if (!b) return a;
  return { x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1) };
}

// A shape over `bx` (inclusive box) holding the pixels of s inside it.
export function reframe(s, bx) {
  const w = bx.x1 - bx.x0 + 1, h = bx.y1 - bx.y0 + 1, data = new Uint8Array(w * h);
  for (let y = Math.max(bx.y0, s.y0); y < Math.min(bx.y1 + 1, s.y0 + s.h); y++) {
    for (let x = Math.max(bx.x0, s.x0); x < Math.min(bx.x1 + 1, s.x0 + s.w); x++) {
      data[(y - bx.y0) * w + (x - bx.x0)] = s.data[(y - s.y0) * s.w + (x - s.x0)];
    }
  }
  return { x0: bx.x0, y0: bx.y0, w, h, data };
}

// The same pixels in the smallest box (EMPTY when none).
export function tight(s) {
  let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
  for (let j = 0; j < s.h; j++) {
    for (let i = 0; i < s.w; i++) {
      if (!s.data[j * s.w + i]) continue;
      if (i < x0) x0 = i; if (i > x1) x1 = i; if (j < y0) y0 = j; if (j > y1) y1 = j;
    }
  }
  if (x1 < 0) return EMPTY;
  return reframe(s, { x0: s.x0 + x0, y0: s.y0 + y0, x1: s.x0 + x1, y1: s.y0 + y1 });
}

// A box-sized region (Uint8Array, box inclusive) as a shape.
export function fromRegion(region, bx) {
  return tight({ x0: bx.x0, y0: bx.y0, w: bx.x1 - bx.x0 + 1, h: bx.y1 - bx.y0 + 1, data: Uint8Array.from(region, (v) => (v ? 1 : 0)) });
}

export function union(a, b) {
  if (!a.w) return b; if (!b.w) return a;
  const out = reframe(a, unionBox(box(a), box(b)));
  for (let y = 0; y < b.h; y++) for (let x = 0; x < b.w; x++) {
    if (b.data[y * b.w + x]) out.data[(y + b.y0 - out.y0) * out.w + (x + b.x0 - out.x0)] = 1;
  }
  return out;
}

export function subtract(a, b) {
  if (!a.w || !b.w) return a;
  const out = reframe(a, box(a));
  for (let y = 0; y < b.h; y++) for (let x = 0; x < b.w; x++) {
    if (!b.data[y * b.w + x]) continue;
    const i = x + b.x0 - out.x0, j = y + b.y0 - out.y0;
    if (i >= 0 && j >= 0 && i < out.w && j < out.h) out.data[j * out.w + i] = 0;
  }
  return tight(out);
}

// Column-major run lengths over an H x W image -> shape. `bx` bounds the ones when known.
export function fromRuns(runs, H, W, bx = null) {
  if (!bx) {
    let p = 0;
    for (let k = 0; k < runs.length; k++) {
      const c = runs[k];
      if (k % 2 && c) {
        const xa = Math.floor(p / H), xb = Math.floor((p + c - 1) / H);
        const ya = xa === xb ? p % H : 0, yb = xa === xb ? (p + c - 1) % H : H - 1;
        bx = unionBox(bx, { x0: xa, y0: ya, x1: xb, y1: yb });
      }
      p += c;
    }
    if (!bx) return EMPTY;
  }
  const w = bx.x1 - bx.x0 + 1, h = bx.y1 - bx.y0 + 1, data = new Uint8Array(w * h);
  let p = 0;
  for (let k = 0; k < runs.length; k++) {
    const c = runs[k];
    if (k % 2) {
      for (let i = p; i < p + c; i++) {
        const x = Math.floor(i / H), y = i - x * H;
        if (x >= bx.x0 && x <= bx.x1 && y >= bx.y0 && y <= bx.y1) data[(y - bx.y0) * w + (x - bx.x0)] = 1;
      }
    }
    p += c;
  }
  return { x0: bx.x0, y0: bx.y0, w, h, data };
}

// Run lengths of the pixels of s for which keep(x, y) holds (default: all of them).
export function runsOf(s, H, W, keep = null) {
  const runs = [];
  let last = 0, start = 0, inRun = false;
  for (let x = s.x0; x < s.x0 + s.w; x++) {
    for (let y = s.y0; y < s.y0 + s.h; y++) {
      const on = s.data[(y - s.y0) * s.w + (x - s.x0)] === 1 && (!keep || keep(x, y));
      const idx = x * H + y;
      if (on && !inRun) { runs.push(idx - last); start = idx; inRun = true; } else if (!on && inRun) { runs.push(idx - start); last = idx; inRun = false; }
    }
    // the pixels between this column's box and the next one's are zeros (none when the box is full height)
    if (inRun && s.h < H) { const end = x * H + s.y0 + s.h; runs.push(end - start); last = end; inRun = false; }
  }
  if (inRun) { const end = (s.x0 + s.w - 1) * H + s.y0 + s.h; runs.push(end - start); last = end; }
  if (H * W - last > 0 || !runs.length) runs.push(H * W - last);
  return runs;
}

// COCO polygons (flat [x, y, ...] rings, unioned as pycocotools does) minus hole rings.
export function fromPolygons(rings, holes, H, W) {
  let out = EMPTY;
  for (const r of rings) out = union(out, ringShape(r, H, W));
  for (const r of holes || []) out = subtract(out, ringShape(r, H, W));
  return out;
}

function ringShape(xy, H, W) {
  if (xy.length < 6) return EMPTY;
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (let i = 0; i < xy.length; i += 2) {
    x0 = Math.min(x0, xy[i]); x1 = Math.max(x1, xy[i]); y0 = Math.min(y0, xy[i + 1]); y1 = Math.max(y1, xy[i + 1]);
  }
  const bx = { x0: Math.max(0, Math.floor(x0) - 1), y0: Math.max(0, Math.floor(y0) - 1),
    x1: Math.min(W - 1, Math.ceil(x1) + 1), y1: Math.min(H - 1, Math.ceil(y1) + 1) };
  if (bx.x1 < bx.x0 || bx.y1 < bx.y0) return EMPTY;
  return tight(fromRuns(cocoPolygonRuns(xy, H, W), H, W, bx));
}

// 4-connected components of a shape: [{shape, n}], largest first.
export function components(s) {
  const lab = new Int32Array(s.w * s.h), parts = [];
  let next = 0;
  for (let i = 0; i < lab.length; i++) {
    if (!s.data[i] || lab[i]) continue;
    next++;
    const stack = [i];
    lab[i] = next;
    let n = 0, bx = null;
    while (stack.length) {
      const j = stack.pop(), x = j % s.w, y = (j - x) / s.w;
      n++;
      bx = unionBox(bx, { x0: x, y0: y, x1: x, y1: y });
      for (const [nx, ny] of [[x + 1, y], [x - 1, y], [x, y + 1], [x, y - 1]]) {
        if (nx < 0 || ny < 0 || nx >= s.w || ny >= s.h) continue;
        const k = ny * s.w + nx;
        if (s.data[k] && !lab[k]) { lab[k] = next; stack.push(k); }
      }
    }
    parts.push({ label: next, n, bx });
  }
  parts.sort((a, b) => b.n - a.n);
  return parts.map((p) => {
    const w = p.bx.x1 - p.bx.x0 + 1, h = p.bx.y1 - p.bx.y0 + 1, data = new Uint8Array(w * h);
    for (let y = p.bx.y0; y <= p.bx.y1; y++) for (let x = p.bx.x0; x <= p.bx.x1; x++) {
      if (lab[y * s.w + x] === p.label) data[(y - p.bx.y0) * w + (x - p.bx.x0)] = 1;
    }
    return { shape: { x0: s.x0 + p.bx.x0, y0: s.y0 + p.bx.y0, w, h, data }, n: p.n };
  });
}

// Pixels of s on the polyline (Bresenham between integer vertices), as a shape of the same box.
export function lineMask(s, verts, linePixels) {
  const out = { ...s, data: new Uint8Array(s.w * s.h) };
  for (let k = 0; k + 1 < verts.length; k++) {
    const p = linePixels(Math.floor(verts[k].x), Math.floor(verts[k].y), Math.floor(verts[k + 1].x), Math.floor(verts[k + 1].y));
    for (let i = 0; i < p.length; i += 2) {
      const x = p[i] - s.x0, y = p[i + 1] - s.y0;
      if (x >= 0 && y >= 0 && x < s.w && y < s.h) out.data[y * s.w + x] = 1;
    }
  }
  return out;
}
