// Instance labelling (COCO): the objects of one image, their list, their edits and their save.
//
// Objects are kept bottom first (z-order: a later object covers an earlier one where they overlap);
// each holds a cropped bitmask shape (shapes.js) and, when it was drawn as polygons, its rings (and
// hole rings). What an object *shows* is its shape minus the shapes above it, and a save sends
// exactly that, as run lengths, plus the polygons of polygon objects: the server stores the
// polygons when pycocotools rasterises them to the same pixels, else an RLE, so every saved
// annotation decodes to what was on the screen. iscrowd regions are drawn hatched, never cover or
// get covered, and are saved as they were unless edited. Records are immutable: every edit makes
// new records and a new list, and undo keeps the old lists.

import { api, getJSON, q } from "./api.js";
import { $, el, toast } from "./dom.js";
import * as R from "./raster.js";
import * as Sh from "./shapes.js";
import { actions, E, S } from "./state.js";

export const I = {
  objects: [], sel: -1, owner: null, layer: null, boxes: [], findings: [], proposals: null,
  propLayer: null, undo: [], redo: [], hidden: new Set(), nextUid: 1, nextColor: 0,
  polyMode: "new", merging: false, freeOnly: false, stroke: null, vdrag: null,
};
const UNDO_STEPS = 200;

export const active = () => S.info?.mode === "instances";
const H = () => E.h, W = () => E.w;

function record(o, k) {
  return {
    uid: I.nextUid++, id: o.id ?? null, cat: o.cat, crowd: o.crowd ? 1 : 0, shape: o.shape, kind: o.kind || "rle",
    rings: o.rings || [], holes: o.holes || [], orig: o.orig ?? null, color: o.color ?? k,
  };
}
const withChanges = (r, ch) => ({ ...r, ...ch });

export function categoryOf(trainId) {
  return (S.info.categories || []).find((c) => c.train_id === trainId) || S.info.categories?.[0];
}
const trainOf = (cat) => (S.info.categories || []).find((c) => c.id === cat)?.train_id ?? 1;

// ------------------------------------------------------------------ load
export async function load(name, version = null) {
  const v = version == null ? "" : `&version=${version}`;
  const d = await getJSON(`/api/instances?name=${q(name)}${v}`);
  const objects = d.objects.map((o, k) => {
    const shape = Sh.fromRuns(o.runs, d.height, d.width);
    return record({ id: o.id, cat: o.category_id, crowd: o.iscrowd, shape, kind: o.kind, orig: shape,
      rings: o.polygons ? o.polygons.map((p) => p.slice()) : [] }, k);
  });
  return { ...d, objects };
}

export function setObjects(d) {
  Object.assign(I, { objects: d.objects, sel: -1, boxes: d.boxes || [], findings: d.findings || [], undo: [], redo: [],
    hidden: new Set(), nextColor: d.objects.length, merging: false, stroke: null, vdrag: null, proposals: null });
  I.layer = makeLayer(); I.propLayer = null;
  E.objLayer = I.layer;
  E.describe = describe;
  E.handles = handles;
  rebuild();
  renderPanel();
  const overlap = overlapPixels();
  if (overlap) toast(`${overlap} pixels are covered by two objects: the upper one shows, and a save keeps each object's visible part`);
}

function describe(x, y) {
  const i = objectAt({ x, y });
  if (i < 0) return "no object";
  const r = I.objects[i], cat = (S.info.categories || []).find((c) => c.id === r.cat);
  return `object ${label(r)} (${cat ? cat.name : r.cat})${r.crowd ? ", crowd" : ""}`;
}

// The selected polygon object's rings, drawn with draggable vertices.
function handles() {
  const r = I.objects[I.sel];
  if (!r || r.kind !== "polygon" || !["polygon", "picker"].includes(E.tool)) return [];
  const toVerts = (ring) => { const v = []; for (let j = 0; j < ring.length; j += 2) v.push({ x: ring[j], y: ring[j + 1] }); return v; };
  return [...r.rings.map((g) => ({ verts: toVerts(g) })), ...r.holes.map((g) => ({ verts: toVerts(g), hole: true }))];
}

function makeLayer() {
  const c = document.createElement("canvas");
  c.width = W(); c.height = H();
  const ctx = c.getContext("2d");
  return { canvas: c, ctx, data: ctx.createImageData(W(), H()) };
}

function overlapPixels() {
  let n = 0;
  for (let i = 0; i < I.objects.length; i++) {
    const r = I.objects[i];
    if (r.crowd) continue;
    const s = r.shape;
    for (let y = s.y0; y < s.y0 + s.h; y++) for (let x = s.x0; x < s.x0 + s.w; x++) {
      if (s.data[(y - s.y0) * s.w + (x - s.x0)] && I.owner[y * W() + x] !== i) n++;
    }
  }
  return n;
}

// ------------------------------------------------------------------ owner map and drawing
// owner[p]: index of the top non-crowd object covering pixel p, -1 for none.
export function rebuild(bx = null, override = null) {
  const w = W();
  if (!I.owner || I.owner.length !== w * H()) { I.owner = new Int32Array(w * H()); bx = null; }
  const b = bx || { x0: 0, y0: 0, x1: w - 1, y1: H() - 1 };
  for (let y = b.y0; y <= b.y1; y++) I.owner.fill(-1, y * w + b.x0, y * w + b.x1 + 1);
  I.objects.forEach((r, i) => {
    if (r.crowd) return;
    const s = override && override.i === i ? override.shape : r.shape;
    const y0 = Math.max(b.y0, s.y0), y1 = Math.min(b.y1, s.y0 + s.h - 1);
    const x0 = Math.max(b.x0, s.x0), x1 = Math.min(b.x1, s.x0 + s.w - 1);
    for (let y = y0; y <= y1; y++) {
      const row = (y - s.y0) * s.w - s.x0;
      for (let x = x0; x <= x1; x++) if (s.data[row + x]) I.owner[y * w + x] = i;
    }
  });
  paint(b, override);
}

function colorOf(r) {
  const pal = S.info.instance_palette;
  return pal[r.color % pal.length];
}

function paint(b, override = null) {
  const L = I.layer, px = L.data.data, w = W();
  const crowd = I.objects.map((r, i) => (r.crowd && !I.hidden.has(r.uid) ? i : -1)).filter((i) => i >= 0);
  for (let y = b.y0; y <= b.y1; y++) {
    for (let x = b.x0; x <= b.x1; x++) {
      const p = y * w + x, o = p * 4, i = I.owner[p];
      let r = i >= 0 && !I.hidden.has(I.objects[i].uid) ? I.objects[i] : null;
      let alpha = r ? (i === I.sel ? 255 : 185) : 0;
      if (!r) {
        for (const c of crowd) {
          const s = override && override.i === c ? override.shape : I.objects[c].shape;
          if (Sh.has(s, x, y) && (x + y) % 6 < 3) { r = I.objects[c]; alpha = c === I.sel ? 255 : 160; break; }
        }
      }
      if (!r) { px[o + 3] = 0; continue; }
      const col = colorOf(r);
      px[o] = col[0]; px[o + 1] = col[1]; px[o + 2] = col[2]; px[o + 3] = alpha;
    }
  }
  L.ctx.putImageData(L.data, 0, 0, b.x0, b.y0, b.x1 - b.x0 + 1, b.y1 - b.y0 + 1);
}

export function visibleRuns(i) {
  const r = I.objects[i];
  if (r.crowd) return Sh.runsOf(r.shape, H(), W());
  return Sh.runsOf(r.shape, H(), W(), (x, y) => I.owner[y * W() + x] === i);
}
function visibleArea(i) {
  const r = I.objects[i], s = r.shape;
  if (r.crowd) return Sh.area(s);
  let n = 0;
  for (let y = s.y0; y < s.y0 + s.h; y++) for (let x = s.x0; x < s.x0 + s.w; x++) {
    if (s.data[(y - s.y0) * s.w + (x - s.x0)] && I.owner[y * W() + x] === i) n++;
  }
  return n;
}

// ------------------------------------------------------------------ edits and undo
function snapshot() { return { objects: I.objects, sel: I.sel }; }

// bx: the box whose pixels can change (owner map and colours); null rebuilds everything (needed
// when objects are inserted or removed below others, which renumbers the owner map).
function commit(objects, sel, bx = null) {
  I.undo.push(snapshot());
  if (I.undo.length > UNDO_STEPS) I.undo.shift();
  I.redo = [];
  I.objects = objects;
  I.sel = sel;
  changed(bx);
}

function changed(bx = null) {
  rebuild(bx);
  renderPanel();
  actions.edited?.();
}

export function undo() {
  const s = I.undo.pop();
  if (!s) return;
  I.redo.push(snapshot());
  I.objects = s.objects; I.sel = Math.min(s.sel, s.objects.length - 1);
  changed();
}
export function redo() {
  const s = I.redo.pop();
  if (!s) return;
  I.undo.push(snapshot());
  I.objects = s.objects; I.sel = s.sel;
  changed();
}

const boxOf = (...recs) => recs.reduce((b, r) => (r ? Sh.unionBox(b, Sh.box(r.shape)) : b), null);
// Only the pixels of the objects involved are repainted (a full repaint of a 5 Mpx tote takes ~0.2 s).
function repaint(bx) { if (bx) paint(bx); }

export function select(i) {
  const before = I.objects[I.sel];
  I.sel = i >= 0 && i < I.objects.length ? i : -1;
  if (I.merging && I.sel >= 0 && I.merging.from !== I.sel) { const from = I.merging.from; I.merging = false; merge(from, I.sel); return; }
  repaint(boxOf(before, I.objects[I.sel]));
  renderPanel();
  actions.render?.();
}

function replaceAt(i, rec, sel = i) {
  const objects = I.objects.slice();
  const bx = boxOf(objects[i], rec, I.objects[I.sel]);
  objects[i] = rec;
  commit(objects, sel, bx || undefined);
}

export function addObject(shape, extra = {}) {
  if (!shape.w) return toast("nothing to add: the region is empty");
  const cat = categoryOf(E.cls)?.id ?? S.info.categories[0].id;
  const rec = record({ cat, crowd: 0, shape, kind: "rle", ...extra, color: I.nextColor++ }, 0);
  commit([...I.objects, rec], I.objects.length, boxOf(rec, I.objects[I.sel]));
  return rec;
}

export function setCategory(i, cat) {
  if (I.objects[i]?.cat === cat) return;
  replaceAt(i, withChanges(I.objects[i], { cat }));
}

export function remove(i = I.sel) {
  if (i < 0 || i >= I.objects.length) return;
  const objects = I.objects.slice();
  objects.splice(i, 1);
  commit(objects, -1);
}

export function move(i, delta) {
  const j = i + delta;
  if (i < 0 || j < 0 || j >= I.objects.length) return;
  const objects = I.objects.slice();
  [objects[i], objects[j]] = [objects[j], objects[i]];
  commit(objects, j, boxOf(objects[i], objects[j]));
}

export function toggleHidden(i) {
  const u = I.objects[i].uid;
  if (I.hidden.has(u)) I.hidden.delete(u); else I.hidden.add(u);
  repaint(boxOf(I.objects[i])); renderPanel(); actions.render?.();
}

// b's pixels join a (a keeps its place, id and category); polygons stay polygons when both are.
export function merge(a, b) {
  if (a === b || a < 0 || b < 0) return;
  const A = I.objects[a], B = I.objects[b];
  if (A.crowd !== B.crowd) return toast("a crowd region and an object cannot be merged");
  const polys = A.kind === "polygon" && B.kind === "polygon" && !A.holes.length && !B.holes.length;
  const rec = withChanges(A, { shape: Sh.union(A.shape, B.shape), kind: polys ? "polygon" : "rle",
    rings: polys ? [...A.rings, ...B.rings] : [], holes: [] });
  const objects = I.objects.slice();
  objects[a] = rec;
  objects.splice(b, 1);
  commit(objects, a > b ? a - 1 : a);
  toast(`merged object ${label(B)} into ${label(A)}`);
}

// Cut object i along the polyline: the largest piece keeps the object (with the line's pixels),
// the other pieces become one new object of the same category.
export function split(i, verts) {
  const r = I.objects[i];
  if (!r || verts.length < 2) return false;
  const line = Sh.lineMask(r.shape, verts, R.linePixels);
  const rest = { ...r.shape, data: r.shape.data.map((v, k) => (v && !line.data[k] ? 1 : 0)) };
  const parts = Sh.components(rest);
  if (parts.length < 2) { toast("the cut line must cross the object from one edge to the other"); return false; }
  let other = Sh.EMPTY;
  for (const p of parts.slice(1)) other = Sh.union(other, p.shape);
  const keep = Sh.subtract(r.shape, other);
  const objects = I.objects.slice();
  objects[i] = withChanges(r, { shape: keep, kind: "rle", rings: [], holes: [] });
  objects.splice(i + 1, 0, record({ cat: r.cat, crowd: r.crowd, shape: other, kind: "rle", color: I.nextColor++ }, 0));
  commit(objects, i + 1);
  toast(`split ${label(r)} in two (${Sh.area(keep)} + ${Sh.area(other)} pixels)`);
  return true;
}

// A finished polygon: a new object, a ring added to the selected object, or a hole cut into it.
export function applyPolygon(verts, mode = I.polyMode) {
  if (verts.length < 3) return;
  const ring = [];
  for (const v of verts) ring.push(v.x, v.y);
  const sel = I.objects[I.sel];
  if (mode !== "new" && !sel) return toast("select an object first (click it with the pick tool, i)");
  if (mode === "new") {
    const shape = Sh.fromPolygons([ring], [], H(), W());
    if (!shape.w) return toast("the polygon covers no pixel centre");
    addObject(shape, { kind: "polygon", rings: [ring] });
    return;
  }
  if (sel.kind === "polygon") {
    const rings = mode === "add" ? [...sel.rings, ring] : sel.rings;
    const holes = mode === "hole" ? [...sel.holes, ring] : sel.holes;
    replaceAt(I.sel, withChanges(sel, { rings, holes, shape: Sh.fromPolygons(rings, holes, H(), W()) }));
  } else {
    const s = Sh.fromPolygons([ring], [], H(), W());
    replaceAt(I.sel, withChanges(sel, { shape: mode === "add" ? Sh.union(sel.shape, s) : Sh.subtract(sel.shape, s) }));
  }
}

// A proposal (GrabCut, wand, superpixel, SAM, a model object) into the selected object, or a new one.
export function acceptRegion(region, bx, asNew = false) {
  const shape = Sh.fromRegion(region, bx);
  if (!shape.w) return toast("the proposal is empty");
  const sel = I.objects[I.sel];
  if (sel && !asNew) {
    replaceAt(I.sel, withChanges(sel, { shape: Sh.union(sel.shape, shape), kind: "rle", rings: [], holes: [] }));
  } else addObject(shape);
}

// ------------------------------------------------------------------ brush, eraser, fill, pick
// A stroke paints into a scratch mask; the selected object shows it live (owner map override) and
// takes it at the end. With "free pixels only" the brush never claims another object's pixels.
export function strokeStart(px, erase, offsets) {
  if (I.sel < 0 && erase) { toast("select an object to erase from (pick tool, i)"); return false; }
  // without a selection the stroke is a new object (added on top when the stroke ends)
  if (!I.scratch || I.scratch.length !== W() * H()) I.scratch = new Uint8Array(W() * H());
  I.stroke = { erase, offsets, last: px, box: null, newObject: I.sel < 0 };
  strokeTo(px, true);
  return true;
}

export function strokeTo(px, first = false) {
  const st = I.stroke;
  if (!st || (!first && px.x === st.last.x && px.y === st.last.y)) return;
  const tmp = R.segment(I.scratch, W(), H(), st.last.x, st.last.y, px.x, px.y, st.offsets, 1, null);
  st.last = px;
  if (!tmp) return;
  st.box = Sh.unionBox(st.box, tmp);
  const i = st.newObject ? -1 : I.sel;
  const shape = strokeShape();
  if (i >= 0) rebuild(tmp, { i, shape });
  else { previewNew(shape, tmp); }
  actions.render?.();
}

function strokeShape() {
  const st = I.stroke, b = st.box;
  const region = new Uint8Array((b.x1 - b.x0 + 1) * (b.y1 - b.y0 + 1));
  const w = W(), sel = I.sel;
  for (let y = b.y0; y <= b.y1; y++) for (let x = b.x0; x <= b.x1; x++) {
    const p = y * w + x;
    if (!I.scratch[p]) continue;
    if (!st.erase && I.freeOnly && I.owner[p] >= 0 && I.owner[p] !== sel) continue; // another object's pixel
    region[(y - b.y0) * (b.x1 - b.x0 + 1) + (x - b.x0)] = 1;
  }
  const add = Sh.fromRegion(region, b);
  if (st.newObject) return add;
  const base = I.objects[sel].shape;
  return st.erase ? Sh.subtract(base, add) : Sh.union(base, add);
}

function previewNew(shape, bx) {
  // draw the stroke of a new object on top (it will be the top object)
  const L = I.layer, px = L.data.data, w = W(), pal = S.info.instance_palette[I.nextColor % S.info.instance_palette.length];
  for (let y = bx.y0; y <= bx.y1; y++) for (let x = bx.x0; x <= bx.x1; x++) {
    if (!Sh.has(shape, x, y)) continue;
    const o = (y * w + x) * 4;
    px[o] = pal[0]; px[o + 1] = pal[1]; px[o + 2] = pal[2]; px[o + 3] = 255;
  }
  L.ctx.putImageData(L.data, 0, 0, bx.x0, bx.y0, bx.x1 - bx.x0 + 1, bx.y1 - bx.y0 + 1);
}

export function strokeEnd() {
  const st = I.stroke;
  if (!st) return;
  I.stroke = null;
  if (!st.box) return;
  const shape = strokeShape();
  const b = st.box;
  for (let y = b.y0; y <= b.y1; y++) I.scratch.fill(0, y * W() + b.x0, y * W() + b.x1 + 1);
  if (st.newObject) { addObject(shape); return; }
  const r = I.objects[I.sel];
  if (!shape.w) { remove(I.sel); toast(`object ${label(r)} erased completely: removed`); return; }
  replaceAt(I.sel, withChanges(r, { shape, kind: "rle", rings: [], holes: [] }));
  if (r.kind === "polygon") toast(`object ${label(r)} is painted now: it will be saved as an RLE`);
}

// Fill: the 4-connected region of what is under the click (an object or background) joins the selection.
export function fillAt(px) {
  if (I.sel < 0) return toast("select an object to fill into (pick tool, i)");
  const w = W(), h = H(), seed = I.owner[px.y * w + px.x];
  if (seed === I.sel) return;
  const mark = new Uint8Array(w * h), stack = [px.y * w + px.x];
  mark[stack[0]] = 1;
  let bx = null;
  while (stack.length) {
    const p = stack.pop(), x = p % w, y = (p - x) / w;
    bx = Sh.unionBox(bx, { x0: x, y0: y, x1: x, y1: y });
    for (const [nx, ny] of [[x + 1, y], [x - 1, y], [x, y + 1], [x, y - 1]]) {
      if (nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
      const k = ny * w + nx;
      if (!mark[k] && I.owner[k] === seed) { mark[k] = 1; stack.push(k); }
    }
  }
  const region = new Uint8Array((bx.x1 - bx.x0 + 1) * (bx.y1 - bx.y0 + 1));
  for (let y = bx.y0; y <= bx.y1; y++) for (let x = bx.x0; x <= bx.x1; x++) region[(y - bx.y0) * (bx.x1 - bx.x0 + 1) + x - bx.x0] = mark[y * w + x];
  acceptRegion(region, bx);
}

export function objectAt(px) {
  const i = I.owner[px.y * W() + px.x];
  if (i >= 0) return i;
  for (let k = I.objects.length - 1; k >= 0; k--) if (I.objects[k].crowd && Sh.has(I.objects[k].shape, px.x, px.y)) return k;
  return -1;
}

// ------------------------------------------------------------------ polygon vertices of the selected object
export function vertexNear(c, tol) {
  const r = I.objects[I.sel];
  if (!r || r.kind !== "polygon") return null;
  for (const [set, rings] of [["rings", r.rings], ["holes", r.holes]]) {
    for (let k = 0; k < rings.length; k++) {
      const ring = rings[k];
      for (let j = 0; j < ring.length; j += 2) {
        if (Math.hypot(ring[j] * E.zoom + E.panX - c.x, ring[j + 1] * E.zoom + E.panY - c.y) <= tol) return { set, k, j };
      }
    }
  }
  return null;
}

export function edgeNear(c, tol) {
  const r = I.objects[I.sel];
  if (!r || r.kind !== "polygon") return null;
  for (const [set, rings] of [["rings", r.rings], ["holes", r.holes]]) {
    for (let k = 0; k < rings.length; k++) {
      const ring = rings[k], n = ring.length / 2;
      for (let j = 0; j < n; j++) {
        const ax = ring[2 * j] * E.zoom + E.panX, ay = ring[2 * j + 1] * E.zoom + E.panY;
        const bx = ring[(2 * j + 2) % ring.length] * E.zoom + E.panX, by = ring[(2 * j + 3) % ring.length] * E.zoom + E.panY;
        const L2 = (bx - ax) ** 2 + (by - ay) ** 2 || 1, t = Math.max(0, Math.min(1, ((c.x - ax) * (bx - ax) + (c.y - ay) * (by - ay)) / L2));
        if (Math.hypot(ax + t * (bx - ax) - c.x, ay + t * (by - ay) - c.y) <= tol) return { set, k, j: 2 * j + 2 };
      }
    }
  }
  return null;
}

function withVertex(r, v, fn) {
  const rings = { rings: r.rings.map((x) => x.slice()), holes: r.holes.map((x) => x.slice()) };
  fn(rings[v.set][v.k]);
  return withChanges(r, { ...rings, shape: Sh.fromPolygons(rings.rings, rings.holes, H(), W()) });
}

export function vertexDragStart(v) { I.vdrag = { v, before: snapshot() }; }
export function vertexDragTo(x, y) {
  const d = I.vdrag;
  if (!d) return;
  I.objects = I.objects.slice();
  I.objects[I.sel] = withVertex(I.objects[I.sel], d.v, (ring) => { ring[d.v.j] = x; ring[d.v.j + 1] = y; });
  rebuild();
}
export function vertexDragEnd() {
  const d = I.vdrag;
  if (!d) return;
  I.vdrag = null;
  I.undo.push(d.before); I.redo = [];
  changed();
}
export function insertVertex(e, x, y) {
  replaceAt(I.sel, withVertex(I.objects[I.sel], e, (ring) => ring.splice(e.j, 0, x, y)));
}
export function deleteVertex(v) {
  const r = I.objects[I.sel], ring = r[v.set][v.k];
  if (ring.length <= 6) return toast("a ring needs three vertices");
  replaceAt(I.sel, withVertex(r, v, (rg) => rg.splice(v.j, 2)));
}

// ------------------------------------------------------------------ model proposals
export async function loadProposals(score) {
  const d = await getJSON(`/api/instances/pred?name=${q(E.name)}&score=${score}`);
  I.proposals = d.objects.map((o) => ({ ...o, shape: Sh.fromRuns(o.runs, H(), W()) }));
  drawProposals();
  return d;
}

function drawProposals() {
  E.extra = E.extra || {};
  if (!I.proposals) { I.propLayer = null; E.extra.proposals = null; return; }
  const c = document.createElement("canvas");
  c.width = W(); c.height = H();
  const ctx = c.getContext("2d"), img = ctx.createImageData(W(), H()), px = img.data, w = W();
  for (const p of I.proposals) {
    const s = p.shape;
    for (let y = s.y0; y < s.y0 + s.h; y++) for (let x = s.x0; x < s.x0 + s.w; x++) {
      if (!Sh.has(s, x, y)) continue;
      const edge = !Sh.has(s, x + 1, y) || !Sh.has(s, x - 1, y) || !Sh.has(s, x, y + 1) || !Sh.has(s, x, y - 1);
      const o = (y * w + x) * 4;
      if (edge) { px[o] = 255; px[o + 1] = 255; px[o + 2] = 255; px[o + 3] = 255; }
    }
  }
  ctx.putImageData(img, 0, 0);
  I.propLayer = { canvas: c, alpha: 1 };
  E.extra.proposals = I.propLayer;
  actions.render?.();
}

export function proposalAt(px) {
  if (!I.proposals) return -1;
  let best = -1;
  I.proposals.forEach((p, k) => { if (Sh.has(p.shape, px.x, px.y) && (best < 0 || p.score > I.proposals[best].score)) best = k; });
  return best;
}

export function acceptProposal(k) {
  const p = I.proposals?.[k];
  if (!p) return;
  addObject(p.shape, { cat: p.category_id });
  I.proposals.splice(k, 1);
  drawProposals();
}

export function acceptAllProposals() {
  if (!I.proposals?.length) return toast("no model objects above the threshold");
  const added = I.proposals.slice().reverse(); // best score on top
  const objects = [...I.objects, ...added.map((p) => record({ cat: p.category_id, crowd: 0, shape: p.shape, kind: "rle", color: I.nextColor++ }, 0))];
  commit(objects, -1);
  toast(`${added.length} model objects added; correct them and save`);
  I.proposals = [];
  drawProposals();
}

// ------------------------------------------------------------------ save
export function payload() {
  return {
    objects: I.objects.map((r, i) => {
      const o = { id: r.id, category_id: r.cat, iscrowd: r.crowd, runs: visibleRuns(i) };
      if (r.kind === "polygon" && !r.holes.length && r.rings.length) o.polygons = r.rings;
      if (r.orig && r.shape === r.orig) o.keep = true;
      return o;
    }),
  };
}

export async function send(name, base) {
  const body = payload();
  const sent = I.objects;
  const r = await (await api(`/api/instances?name=${q(name)}&version=${base}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
  // What was saved becomes the new baseline: ids, and an object saved as RLE holds what it showed.
  const saved = sent.map((rec, i) => {
    const st = r.objects[i];
    if (!st) return rec;
    const kind = st.stored === "kept" ? rec.kind : st.stored;
    const shape = st.stored === "rle" && !rec.crowd ? Sh.fromRuns(body.objects[i].runs, H(), W()) : rec.shape;
    return withChanges(rec, { id: st.id, kind, shape, orig: shape, rings: kind === "polygon" ? rec.rings : [], holes: kind === "polygon" ? rec.holes : [] });
  });
  if (I.objects === sent) { I.objects = saved; rebuild(); renderPanel(); } else {
    // edited while the save was in flight: keep the edits, learn the ids of what was saved
    const byUid = new Map(saved.map((s) => [s.uid, s]));
    I.objects = I.objects.map((o) => (byUid.has(o.uid) && o.id == null ? withChanges(o, { id: byUid.get(o.uid).id }) : o));
    renderPanel();
  }
  return r;
}

export function draft() {
  return I.objects.map((r) => ({ id: r.id, cat: r.cat, crowd: r.crowd, kind: r.kind, rings: r.rings, holes: r.holes,
    shape: r.shape, keep: !!(r.orig && r.shape === r.orig), color: r.color }));
}

export function restoreDraft(objs) {
  const objects = objs.map((o, k) => record({ ...o, orig: null }, k));
  I.nextColor = Math.max(I.nextColor, ...objects.map((o) => o.color + 1));
  commit(objects, -1);
}

// ------------------------------------------------------------------ the objects panel
export const label = (r) => (r.id != null ? `#${r.id}` : "new");

function flagged() {
  const out = new Map();
  for (const f of I.findings || []) for (const id of f.objects || []) out.set(id, f.kind);
  return out;
}

export function renderPanel() {
  const box = $("#objects-box");
  if (!box) return;
  box.hidden = !active();
  if (!active()) return;
  const flags = flagged();
  const cats = S.info.categories || [];
  const rows = [];
  for (let i = I.objects.length - 1; i >= 0; i--) { // top first
    const r = I.objects[i];
    const col = colorOf(r);
    const eye = el("input", { type: "checkbox", checked: !I.hidden.has(r.uid), title: "show this object" });
    eye.addEventListener("click", (ev) => { ev.stopPropagation(); toggleHidden(i); });
    const sel = el("select", { title: "category" }, ...cats.map((c) => el("option", { value: c.id, selected: c.id === r.cat }, c.name)));
    sel.addEventListener("click", (ev) => ev.stopPropagation());
    sel.addEventListener("change", () => setCategory(i, +sel.value));
    const li = el("li", { className: i === I.sel ? "current" : "", dataset: { i } }, eye,
      el("span", { className: "sw", style: { background: `rgb(${col.join(",")})` } }),
      el("span", { className: "oid" }, label(r)), sel,
      el("span", { className: "muted small" }, `${visibleArea(i)} px`),
      r.crowd ? el("span", { className: "badge crowd", title: "iscrowd region (kept as it is)" }, "crowd") : null,
      r.kind === "polygon" ? el("span", { className: "muted small", title: "saved as polygons" }, "poly") : null,
      flags.has(r.id) ? el("span", { className: `badge ${flags.get(r.id)}`, title: "data engine finding" },
        flags.get(r.id) === "under" ? "merged by model" : flags.get(r.id) === "over" ? "split by model" : flags.get(r.id)) : null);
    li.addEventListener("click", (ev) => (ev.shiftKey && I.sel >= 0 ? merge(I.sel, i) : select(i)));
    rows.push(li);
  }
  $("#objects").replaceChildren(...rows);
  $("#objects-count").textContent = `${I.objects.length} objects` + (I.boxes.length ? `, ${I.boxes.length} boxes without a mask (kept)` : "");
  $("#merge-note").textContent = I.merging ? `merging into ${label(I.objects[I.merging.from])}: click the object to merge in (esc: cancel)` : "";
}

export function startMerge() {
  if (I.sel < 0) return toast("select the object to merge into first");
  I.merging = { from: I.sel };
  renderPanel();
  toast("click the object to merge into the selected one");
}

export function cancel() {
  if (I.merging) { I.merging = false; renderPanel(); return true; }
  return false;
}

export function bindPanel() {
  $("#obj-up").onclick = () => move(I.sel, +1);
  $("#obj-down").onclick = () => move(I.sel, -1);
  $("#obj-delete").onclick = () => remove(I.sel);
  $("#obj-merge").onclick = startMerge;
  $("#poly-mode").addEventListener("change", (e) => { I.polyMode = e.target.value; });
  $("#free-only").addEventListener("change", (e) => { I.freeOnly = e.target.checked; });
  $("#model-score").addEventListener("change", () => { if (I.proposals) loadProposals(+$("#model-score").value); });
  $("#model-load").onclick = async () => {
    try {
      const d = await loadProposals(+$("#model-score").value);
      toast(`${d.objects.length} of ${d.total} model objects score ${d.score} or more: click one with the model tool (a) to add it`);
      actions.setTool?.("assist");
    } catch (e) { toast(e.message, true); }
  };
  $("#model-all").onclick = async () => {
    try { if (!I.proposals) await loadProposals(+$("#model-score").value); acceptAllProposals(); } catch (e) { toast(e.message, true); }
  };
}

