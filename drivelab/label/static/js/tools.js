// Pointer tools on the canvas: brush, eraser, fill, polygon (drag vertices; several pending), pick,
// pan, zoom, and the assisted tools (wand, superpixels, GrabCut, model assist, SAM). On a COCO
// dataset the same tools act on objects: brush and eraser on the selected object only, pick selects,
// polygon makes objects (or rings and holes of the selected one) and edits its vertices, cut splits.

import * as A from "./assist.js";
import { applyPolygon, closePolygon, commit, editable, guard, setClass, setTool, updatePreview } from "./editor.js";
import * as inst from "./instances.js";
import * as R from "./raster.js";
import { E, IGNORE } from "./state.js";
import { toast } from "./dom.js";
import { canvas, paintLayer, render, toCanvas, toImage, zoomAt } from "./view.js";

function pixel(p) { return { x: Math.floor(p.x), y: Math.floor(p.y) }; }
function inside(p) { return p.x >= 0 && p.y >= 0 && p.x < E.w && p.y < E.h; }
const clampPx = (p) => ({ x: Math.min(E.w - 1, Math.max(0, p.x)), y: Math.min(E.h - 1, Math.max(0, p.y)) });
export const keys = { space: false };
const tol = () => 7 * (window.devicePixelRatio || 1);

function near(verts, ev) {
  const c = toCanvas(ev);
  return verts.findIndex((v) => Math.hypot(v.x * E.zoom + E.panX - c.x, v.y * E.zoom + E.panY - c.y) <= tol());
}

function pointerDown(ev) {
  if (!E.mask) return;
  canvas.focus();
  canvas.setPointerCapture(ev.pointerId);
  const p = toImage(ev), px = pixel(p), objects = inst.active();
  if (ev.button === 1 || ev.button === 2 || keys.space || E.tool === "pan") {
    const c = toCanvas(ev);
    E.drag = { pan: true, x: c.x, y: c.y, panX: E.panX, panY: E.panY };
    canvas.style.cursor = "grabbing";
    return;
  }
  if (ev.button !== 0) return;
  if (objects && inst.I.merging) { if (inside(px)) inst.select(inst.objectAt(px)); return; }
  if (objects && E.tool === "picker" && inst.I.sel >= 0 && vertexAction(ev, px)) return;
  if (ev.altKey || E.tool === "picker") {
    if (!inside(px)) return;
    if (objects) inst.select(inst.objectAt(px));
    else { setClass(E.mask[px.y * E.w + px.x]); if (E.tool === "picker") setTool(E.prevTool || "brush"); }
    return;
  }
  if (!editable()) return;
  const t = E.tool;
  if (t === "brush" || t === "eraser") {
    if (!inside(px) && objects) return;
    if (objects) { if (inst.strokeStart(px, t === "eraser", R.brushOffsets(E.size))) E.stroke = { objects: true }; return; }
    const value = t === "eraser" ? IGNORE : E.cls;
    const offsets = R.brushOffsets(E.size), g = guard(t === "eraser");
    E.stroke = { before: E.mask.slice(), last: px, value, offsets, box: null, guard: g };
    E.stroke.box = R.stamp(E.mask, E.w, E.h, px.x, px.y, offsets, value, null, g);
    if (E.stroke.box) paintLayer(E.layers.mask, E.stroke.box);
    render();
  } else if (t === "fill") {
    if (!inside(px)) return;
    if (objects) { inst.fillAt(px); return; }
    const before = E.mask.slice();
    commit(before, R.floodFill(E.mask, E.w, E.h, px.x, px.y, E.cls, guard(E.cls === IGNORE)));
  } else if (t === "polygon") {
    if (objects && inst.I.sel >= 0 && vertexAction(ev, px)) return;
    const hit = near(E.poly, ev);
    if (hit === 0 && E.poly.length >= 3) { closePolygon(); return; }
    if (hit >= 0) { E.drag = { vertex: hit }; return; }
    for (let k = 0; k < E.pending.length; k++) {
      const j = near(E.pending[k].verts, ev);
      if (j >= 0) { E.drag = { pending: k, vertex: j }; return; }
    }
    // Vertices sit on pixel centres, so what gets filled is predictable from the clicks.
    const q = clampPx(px);
    E.poly.push({ x: q.x + 0.5, y: q.y + 0.5 });
    E.drag = { vertex: E.poly.length - 1 };
    updatePreview();
    render();
  } else if (t === "cut") {
    if (!objects) return;
    if (inst.I.sel < 0) return toast("select the object to cut first (pick tool, i)");
    E.cut.push({ x: px.x + 0.5, y: px.y + 0.5 });
    render();
  } else if (t === "wand") {
    if (inside(px)) A.wandClick(px);
  } else if (t === "superpixel") {
    if (inside(px)) A.superpixelDown(px);
  } else if (t === "grabcut") {
    A.grabcutDown(clampPx(px), ev);
  } else if (t === "assist") {
    if (inside(px)) A.modelDown(px);
  } else if (t === "sam") {
    if (inside(px)) A.samClick(px, ev);
  }
}

// The selected polygon object's vertices: drag one, ctrl-click deletes it, shift-click on an edge adds one.
function vertexAction(ev, px) {
  const c = toCanvas(ev);
  const v = inst.vertexNear(c, tol());
  if (v && (ev.ctrlKey || ev.metaKey)) { inst.deleteVertex(v); return true; }
  if (v) { inst.vertexDragStart(v); E.drag = { objectVertex: true }; return true; }
  if (ev.shiftKey) {
    const e = inst.edgeNear(c, tol());
    if (e) { inst.insertVertex(e, px.x + 0.5, px.y + 0.5); return true; }
  }
  return false;
}

function pointerMove(ev) {
  if (!E.mask) return;
  const p = toImage(ev);
  E.mouse = p;
  const px = pixel(p);
  if (E.drag?.pan) {
    const c = toCanvas(ev);
    E.panX = E.drag.panX + c.x - E.drag.x;
    E.panY = E.drag.panY + c.y - E.drag.y;
  } else if (E.drag?.objectVertex) {
    const q = clampPx(px);
    inst.vertexDragTo(q.x + 0.5, q.y + 0.5);
  } else if (E.drag && E.drag.vertex != null) {
    const q = clampPx(px), v = { x: q.x + 0.5, y: q.y + 0.5 };
    if (E.drag.pending != null) E.pending[E.drag.pending].verts[E.drag.vertex] = v;
    else E.poly[E.drag.vertex] = v;
    updatePreview();
  } else if (E.stroke?.objects) {
    inst.strokeTo(clampPx(px));
  } else if (E.stroke) {
    const s = E.stroke;
    if (px.x !== s.last.x || px.y !== s.last.y) {
      const box = R.segment(E.mask, E.w, E.h, s.last.x, s.last.y, px.x, px.y, s.offsets, s.value, null, s.guard);
      if (box) {
        paintLayer(E.layers.mask, box);
        s.box = s.box ? { x0: Math.min(s.box.x0, box.x0), y0: Math.min(s.box.y0, box.y0), x1: Math.max(s.box.x1, box.x1), y1: Math.max(s.box.y1, box.y1) } : box;
      }
      s.last = px;
    }
  } else if (A.A.path) {
    if (E.tool === "grabcut") A.grabcutMove(clampPx(px));
    else if (E.tool === "superpixel" && inside(px)) A.superpixelMove(px);
    else if (E.tool === "assist") A.modelMove(clampPx(px));
  }
  render();
}

function endPointer() {
  if (E.stroke?.objects) { E.stroke = null; inst.strokeEnd(); } else if (E.stroke) { const s = E.stroke; E.stroke = null; commit(s.before, s.box); }
  if (E.drag?.objectVertex) inst.vertexDragEnd();
  if (E.drag?.pan) canvas.style.cursor = E.tool === "pan" ? "grab" : "crosshair";
  E.drag = null;
  if (A.A.path) {
    if (E.tool === "grabcut") A.grabcutUp();
    else if (E.tool === "superpixel") A.superpixelUp();
    else if (E.tool === "assist") A.modelUp();
    else A.A.path = null;
  }
  render();
}

export function applyCut() {
  if (!E.cut.length) return false;
  if (E.cut.length >= 2) inst.split(inst.I.sel, E.cut);
  E.cut = [];
  render();
  return true;
}

export function bindPointer() {
  canvas.addEventListener("pointerdown", pointerDown);
  canvas.addEventListener("pointermove", pointerMove);
  canvas.addEventListener("pointerup", endPointer);
  canvas.addEventListener("pointercancel", endPointer);
  canvas.addEventListener("pointerleave", () => { E.mouse = null; render(); });
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("dblclick", () => {
    if (E.tool === "polygon" && E.poly.length >= 3) closePolygon();
    else if (E.tool === "cut") applyCut();
  });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const c = toCanvas(ev);
    zoomAt(Math.exp(-ev.deltaY * 0.0015), c.x, c.y);
  }, { passive: false });
}

export { applyPolygon };
