// Pointer tools on the canvas: brush, eraser, fill, polygon (drag vertices), eyedropper, pan, zoom.

import * as R from "./raster.js";
import { applyPolygon, commit, editable, setClass, setTool } from "./editor.js";
import { E, IGNORE } from "./state.js";
import { canvas, paintLayer, render, toCanvas, toImage, zoomAt } from "./view.js";

function pixel(p) { return { x: Math.floor(p.x), y: Math.floor(p.y) }; }
function inside(p) { return p.x >= 0 && p.y >= 0 && p.x < E.w && p.y < E.h; }
export const keys = { space: false };

function nearVertex(ev) {
  const c = toCanvas(ev), tol = 7 * (window.devicePixelRatio || 1);
  return E.poly.findIndex((v) => Math.hypot(v.x * E.zoom + E.panX - c.x, v.y * E.zoom + E.panY - c.y) <= tol);
}

function pointerDown(ev) {
  if (!E.mask) return;
  canvas.focus();
  canvas.setPointerCapture(ev.pointerId);
  const p = toImage(ev), px = pixel(p);
  if (ev.button === 1 || ev.button === 2 || keys.space || E.tool === "pan") {
    const c = toCanvas(ev);
    E.drag = { pan: true, x: c.x, y: c.y, panX: E.panX, panY: E.panY };
    canvas.style.cursor = "grabbing";
    return;
  }
  if (ev.button !== 0) return;
  if (ev.altKey || E.tool === "picker") {
    if (inside(px)) { setClass(E.mask[px.y * E.w + px.x]); if (E.tool === "picker") setTool(E.prevTool || "brush"); }
    return;
  }
  if (!editable()) return;
  if (E.tool === "brush" || E.tool === "eraser") {
    const value = E.tool === "eraser" ? IGNORE : E.cls;
    const offsets = R.brushOffsets(E.size);
    E.stroke = { before: E.mask.slice(), last: px, value, offsets, box: null };
    E.stroke.box = R.stamp(E.mask, E.w, E.h, px.x, px.y, offsets, value, null);
    if (E.stroke.box) paintLayer(E.layers.mask, E.stroke.box);
    render();
  } else if (E.tool === "fill") {
    if (!inside(px)) return;
    const before = E.mask.slice();
    commit(before, R.floodFill(E.mask, E.w, E.h, px.x, px.y, E.cls));
  } else if (E.tool === "polygon") {
    const hit = nearVertex(ev);
    if (hit === 0 && E.poly.length >= 3) { applyPolygon(); return; }
    if (hit >= 0) { E.drag = { vertex: hit }; return; }
    // Vertices sit on pixel centres, so what gets filled is predictable from the clicks.
    E.poly.push({ x: px.x + 0.5, y: px.y + 0.5 });
    E.drag = { vertex: E.poly.length - 1 };
    render();
  }
}

function pointerMove(ev) {
  if (!E.mask) return;
  const p = toImage(ev);
  E.mouse = p;
  if (E.drag?.pan) {
    const c = toCanvas(ev);
    E.panX = E.drag.panX + c.x - E.drag.x;
    E.panY = E.drag.panY + c.y - E.drag.y;
  } else if (E.drag && E.drag.vertex != null) {
    const px = pixel(p);
    E.poly[E.drag.vertex] = { x: Math.min(E.w - 1, Math.max(0, px.x)) + 0.5, y: Math.min(E.h - 1, Math.max(0, px.y)) + 0.5 };
  } else if (E.stroke) {
    const px = pixel(p), s = E.stroke;
    if (px.x !== s.last.x || px.y !== s.last.y) {
      const box = R.segment(E.mask, E.w, E.h, s.last.x, s.last.y, px.x, px.y, s.offsets, s.value, null);
      if (box) {
        paintLayer(E.layers.mask, box);
        s.box = s.box ? { x0: Math.min(s.box.x0, box.x0), y0: Math.min(s.box.y0, box.y0), x1: Math.max(s.box.x1, box.x1), y1: Math.max(s.box.y1, box.y1) } : box;
      }
      s.last = px;
    }
  }
  render();
}

function endPointer() {
  if (E.stroke) { const s = E.stroke; E.stroke = null; commit(s.before, s.box); }
  if (E.drag?.pan) canvas.style.cursor = E.tool === "pan" ? "grab" : "crosshair";
  E.drag = null;
  render();
}

export function bindPointer() {
  canvas.addEventListener("pointerdown", pointerDown);
  canvas.addEventListener("pointermove", pointerMove);
  canvas.addEventListener("pointerup", endPointer);
  canvas.addEventListener("pointercancel", endPointer);
  canvas.addEventListener("pointerleave", () => { E.mouse = null; render(); });
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("dblclick", () => { if (E.tool === "polygon" && E.poly.length >= 3) applyPolygon(); });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const c = toCanvas(ev);
    zoomAt(Math.exp(-ev.deltaY * 0.0015), c.x, c.y);
  }, { passive: false });
}
