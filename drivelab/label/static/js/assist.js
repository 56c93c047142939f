// Assisted tools in the page: GrabCut (box, then include/exclude strokes), superpixel fill, the
// colour-tolerance wand, model assist (a brushed region or one connected component of the
// prediction) and Segment Anything prompts. The server computes proposals (routes/assist.py); the
// page shows them and accepts exactly those pixels into the current class (with the protect rules)
// or into the selected object, each acceptance one undo step.

import { api, q } from "./api.js";
import { $, toast } from "./dom.js";
import * as ed from "./editor.js";
import * as inst from "./instances.js";
import * as R from "./raster.js";
import { E, IGNORE, S } from "./state.js";
import { render } from "./view.js";

export const A = {
  prop: null, // {kind: "grabcut" | "sam", box: {x0, y0, x1, y1} inclusive, region: Uint8Array, marks, points, layer}
  sp: null, // superpixels of the open image: {name, size, labels, boxes, layer}
  tolerance: 24, spSize: 16, exclude: false, path: null, busy: false,
};

const rawBox = (r) => {
  const [x0, y0, x1, y1] = r.headers.get("X-Box").split(",").map(Number);
  return { x0, y0, x1: x1 - 1, y1: y1 - 1 }; // exclusive -> inclusive
};

// ------------------------------------------------------------------ accepting a region
export function accept(region, bx, asNew = false) {
  if (!bx || bx.x1 < bx.x0) return toast("nothing to accept");
  if (inst.active()) { inst.acceptRegion(region, bx, asNew); return; }
  if (!ed.editable()) return;
  const before = E.mask.slice();
  const box = R.paintRegion(E.mask, E.w, region, bx, E.cls, ed.guard(E.cls === IGNORE));
  if (!box) return toast("nothing changed (protected classes?)");
  ed.commit(before, box);
}

// ------------------------------------------------------------------ GrabCut
export function grabcutDown(px, ev) {
  const p = A.prop;
  if (p?.kind === "grabcut" && px.x >= p.box.x0 && px.x <= p.box.x1 && px.y >= p.box.y0 && px.y <= p.box.y1) {
    A.path = { mode: "mark", value: ev.shiftKey || A.exclude ? 2 : 1, last: px };
    markAt(px);
  } else { A.path = { mode: "box", a: px, b: px }; E.dragBox = A.path; }
}
export function grabcutMove(px) {
  if (!A.path) return;
  if (A.path.mode === "box") A.path.b = px;
  else markAt(px);
  render();
}
export async function grabcutUp() {
  const path = A.path;
  A.path = null;
  E.dragBox = null;
  if (!path) return;
  if (path.mode === "box") {
    const x0 = Math.min(path.a.x, path.b.x), x1 = Math.max(path.a.x, path.b.x) + 1;
    const y0 = Math.min(path.a.y, path.b.y), y1 = Math.max(path.a.y, path.b.y) + 1;
    if (x1 - x0 < 3 || y1 - y0 < 3) return toast("drag a box around the object");
    A.prop = { kind: "grabcut", box: { x0, y0, x1: x1 - 1, y1: y1 - 1 }, marks: null, region: null };
  }
  await runGrabcut();
}
function markAt(px) {
  const p = A.prop, bw = p.box.x1 - p.box.x0 + 1, bh = p.box.y1 - p.box.y0 + 1;
  if (!p.marks) p.marks = new Uint8Array(bw * bh);
  const offs = R.brushOffsets(Math.max(1, Math.min(E.size, 30)));
  R.segment(p.marks, bw, bh, A.path.last.x - p.box.x0, A.path.last.y - p.box.y0, px.x - p.box.x0, px.y - p.box.y0, offs, A.path.value);
  A.path.last = px;
  drawProp();
}
export async function runGrabcut() {
  const p = A.prop;
  if (!p || A.busy) return;
  A.busy = true;
  $("#assist-state").textContent = "GrabCut...";
  try {
    const qs = `name=${q(E.name)}&x0=${p.box.x0}&y0=${p.box.y0}&x1=${p.box.x1 + 1}&y1=${p.box.y1 + 1}`;
    const r = await api(`/api/assist/grabcut?${qs}`, { method: "POST", body: p.marks ? p.marks.slice() : new Uint8Array(0),
      headers: { "Content-Type": "application/octet-stream" } });
    if (A.prop !== p) return;
    p.region = new Uint8Array(await r.arrayBuffer());
    p.box = rawBox(r);
    drawProp();
    $("#assist-state").textContent = `GrabCut proposal: ${p.region.reduce((s, v) => s + v, 0)} px. Strokes: include (shift: exclude); enter: accept, esc: drop`;
  } catch (e) { toast(e.message, true); $("#assist-state").textContent = ""; } finally { A.busy = false; render(); }
}

// ------------------------------------------------------------------ Segment Anything
export async function samClick(px, ev) {
  const p = A.prop?.kind === "sam" ? A.prop : (A.prop = { kind: "sam", points: [], box: null, region: null });
  p.points.push([px.x + 0.5, px.y + 0.5, ev.shiftKey ? 0 : 1]);
  try {
    const r = await api(`/api/assist/sam?name=${q(E.name)}`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ points: p.points }) });
    p.region = new Uint8Array(await r.arrayBuffer());
    p.box = rawBox(r);
    drawProp();
    $("#assist-state").textContent = "SAM proposal: click to add points (shift: negative); enter: accept, esc: drop";
  } catch (e) { toast(e.message, true); }
  render();
}

export function acceptProposal(asNew = false) {
  const p = A.prop;
  if (!p?.region) return false;
  accept(p.region, p.box, asNew);
  dropProposal();
  return true;
}
export function dropProposal() {
  if (!A.prop) return false;
  A.prop = null;
  E.extra.prop = null; E.propBox = null;
  $("#assist-state").textContent = "";
  render();
  return true;
}

function drawProp() {
  const p = A.prop;
  if (!p) return;
  const bw = p.box.x1 - p.box.x0 + 1, bh = p.box.y1 - p.box.y0 + 1;
  const c = document.createElement("canvas");
  c.width = bw; c.height = bh;
  const ctx = c.getContext("2d"), img = ctx.createImageData(bw, bh), px = img.data;
  for (let i = 0; i < bw * bh; i++) {
    const o = i * 4, m = p.marks?.[i];
    if (m === 1) { px[o] = 60; px[o + 1] = 230; px[o + 2] = 90; px[o + 3] = 255; } else if (m === 2) { px[o] = 240; px[o + 1] = 60; px[o + 2] = 60; px[o + 3] = 255; } else if (p.region?.[i]) { px[o] = 0; px[o + 1] = 230; px[o + 2] = 255; px[o + 3] = 200; }
  }
  ctx.putImageData(img, 0, 0);
  p.layer = c;
  E.extra.prop = { canvas: c, x: p.box.x0, y: p.box.y0, alpha: 0.6 };
  E.propBox = p.box;
}

// ------------------------------------------------------------------ superpixels
export async function loadSuperpixels() {
  const size = A.spSize;
  if (A.sp && A.sp.name === E.name && A.sp.asked === size) return A.sp;
  $("#assist-state").textContent = "computing superpixels...";
  const r = await api(`/api/assist/superpixels?name=${q(E.name)}&size=${size}`);
  const buf = await r.arrayBuffer(), n = +r.headers.get("X-Segments");
  const labels = +r.headers.get("X-Bytes") === 2 ? new Uint16Array(buf) : new Uint32Array(buf);
  const boxes = new Int32Array(n * 4).fill(-1);
  const w = E.w;
  for (let i = 0; i < labels.length; i++) {
    const k = labels[i], x = i % w, y = (i - x) / w, b = k * 4;
    if (boxes[b] < 0) { boxes[b] = x; boxes[b + 1] = y; boxes[b + 2] = x; boxes[b + 3] = y; continue; }
    if (x < boxes[b]) boxes[b] = x; if (x > boxes[b + 2]) boxes[b + 2] = x;
    if (y > boxes[b + 3]) boxes[b + 3] = y;
  }
  const c = document.createElement("canvas");
  c.width = w; c.height = E.h;
  const ctx = c.getContext("2d"), img = ctx.createImageData(w, E.h), px = img.data;
  for (let i = 0; i < labels.length; i++) {
    const x = i % w;
    if ((x + 1 < w && labels[i + 1] !== labels[i]) || (i + w < labels.length && labels[i + w] !== labels[i])) {
      px[i * 4] = 255; px[i * 4 + 1] = 240; px[i * 4 + 2] = 80; px[i * 4 + 3] = 200;
    }
  }
  ctx.putImageData(img, 0, 0);
  A.sp = { name: E.name, asked: size, size: +r.headers.get("X-Size"), labels, boxes, n, layer: c };
  E.extra.superpixels = { canvas: c, alpha: 0.7, whenTool: ["superpixel"] };
  $("#assist-state").textContent = `${n} superpixels of about ${A.sp.size} px (${r.headers.get("X-Cache") === "hit" ? "cached" : "computed"} on the server)`;
  render();
  return A.sp;
}

export function superpixelDown(px) {
  if (!A.sp || A.sp.name !== E.name) { loadSuperpixels().catch((e) => toast(e.message, true)); return; }
  A.path = { mode: "sp", labels: new Set([A.sp.labels[px.y * E.w + px.x]]) };
}
export function superpixelMove(px) {
  if (A.path?.mode === "sp") A.path.labels.add(A.sp.labels[px.y * E.w + px.x]);
}
export function superpixelUp() {
  const path = A.path;
  A.path = null;
  if (path?.mode !== "sp") return;
  const sp = A.sp, w = E.w;
  let bx = null;
  for (const k of path.labels) {
    const b = { x0: sp.boxes[k * 4], y0: sp.boxes[k * 4 + 1], x1: sp.boxes[k * 4 + 2], y1: sp.boxes[k * 4 + 3] };
    bx = bx ? { x0: Math.min(bx.x0, b.x0), y0: Math.min(bx.y0, b.y0), x1: Math.max(bx.x1, b.x1), y1: Math.max(bx.y1, b.y1) } : b;
  }
  const bw = bx.x1 - bx.x0 + 1, region = new Uint8Array(bw * (bx.y1 - bx.y0 + 1));
  for (let y = bx.y0; y <= bx.y1; y++) for (let x = bx.x0; x <= bx.x1; x++) {
    if (path.labels.has(sp.labels[y * w + x])) region[(y - bx.y0) * bw + (x - bx.x0)] = 1;
  }
  accept(region, bx);
}

// ------------------------------------------------------------------ wand
export async function wandClick(px) {
  try {
    const r = await api(`/api/assist/wand?name=${q(E.name)}&x=${px.x}&y=${px.y}&tolerance=${A.tolerance}`);
    accept(new Uint8Array(await r.arrayBuffer()), rawBox(r));
  } catch (e) { toast(e.message, true); }
}

// ------------------------------------------------------------------ model assist
export function modelDown(px) {
  if (inst.active()) {
    const k = inst.proposalAt(px);
    if (k < 0) return toast(inst.I.proposals ? "no model object here" : "load the model's objects first (Model box)");
    inst.acceptProposal(k);
    return;
  }
  if (!E.pred) { ed.loadPred().then(() => toast("prediction loaded: brush a region or click a region")); return; }
  A.path = { mode: "model", start: px, last: px, moved: false, scratch: new Uint8Array(E.w * E.h), box: null };
  A.path.box = R.stamp(A.path.scratch, E.w, E.h, px.x, px.y, R.brushOffsets(E.size), 1, null);
}
export function modelMove(px) {
  const p = A.path;
  if (p?.mode !== "model") return;
  if (px.x === p.last.x && px.y === p.last.y) return;
  p.moved = true;
  const b = R.segment(p.scratch, E.w, E.h, p.last.x, p.last.y, px.x, px.y, R.brushOffsets(E.size), 1, null);
  if (b) p.box = { x0: Math.min(p.box.x0, b.x0), y0: Math.min(p.box.y0, b.y0), x1: Math.max(p.box.x1, b.x1), y1: Math.max(p.box.y1, b.y1) };
  p.last = px;
}
export function modelUp() {
  const p = A.path;
  A.path = null;
  if (p?.mode !== "model" || !ed.editable()) return;
  const before = E.mask.slice(), g = ed.guard(false), w = E.w;
  let region;
  if (p.moved) region = p.scratch; // a brushed region: the prediction inside it
  else { // one connected component of the predicted class under the click
    region = new Uint8Array(E.w * E.h);
    const cls = E.pred[p.start.y * w + p.start.x];
    if (cls === IGNORE) return toast("the model predicts nothing here");
    const work = E.pred.slice();
    p.box = R.floodFill(work, w, E.h, p.start.x, p.start.y, 254);
    for (let i = 0; i < work.length; i++) if (work[i] === 254 && E.pred[i] === cls) region[i] = 1;
  }
  let box = null;
  for (let y = p.box.y0; y <= p.box.y1; y++) for (let x = p.box.x0; x <= p.box.x1; x++) {
    const i = y * w + x, v = E.pred[i];
    if (!region[i] || v === IGNORE || (g && !g[E.mask[i]]) || E.mask[i] === v) continue;
    E.mask[i] = v;
    box = box ? { x0: Math.min(box.x0, x), y0: Math.min(box.y0, y), x1: Math.max(box.x1, x), y1: Math.max(box.y1, y) } : { x0: x, y0: y, x1: x, y1: y };
  }
  if (!box) return toast("nothing to take from the model here");
  ed.commit(before, box);
}

export function reset() {
  A.prop = null; A.path = null; A.sp = null;
  E.dragBox = null; E.propBox = null;
  $("#assist-state").textContent = "";
}

export function bindAssist() {
  const tol = $("#tolerance"), sp = $("#sp-size");
  tol.addEventListener("input", () => { A.tolerance = +tol.value; $("#tolerance-val").textContent = tol.value; });
  sp.addEventListener("change", () => {
    A.spSize = S.info.superpixel_sizes[+sp.value];
    $("#sp-size-val").textContent = `${A.spSize} px`;
    if (E.tool === "superpixel") loadSuperpixels().catch((e) => toast(e.message, true));
  });
  sp.max = S.info.superpixel_sizes.length - 1;
  sp.value = S.info.superpixel_sizes.indexOf(16);
  $("#sp-size-val").textContent = "16 px";
  $("#tolerance-val").textContent = tol.value;
  $("#gc-exclude").addEventListener("change", (e) => { A.exclude = e.target.checked; });
  $("#prop-accept").onclick = () => acceptProposal();
  $("#prop-new").onclick = () => acceptProposal(true);
  $("#prop-drop").onclick = dropProposal;
}
