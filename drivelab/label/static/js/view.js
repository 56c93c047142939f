// The image view: layers of class ids drawn through the palette, the view transform (image pixels
// -> canvas device pixels, so browser zoom and devicePixelRatio never change what a click paints),
// and rendering.

import { $ } from "./dom.js";
import { DIFF, E, IGNORE, S } from "./state.js";

export const canvas = $("#canvas");
export const side = $("#side");

export function layer(name, arr) {
  let L = E.layers[name];
  if (!L || L.canvas.width !== E.w || L.canvas.height !== E.h) {
    const c = document.createElement("canvas");
    c.width = E.w; c.height = E.h;
    const ctx = c.getContext("2d");
    L = E.layers[name] = { canvas: c, ctx, data: ctx.createImageData(E.w, E.h) };
  }
  L.arr = arr;
  paintLayer(L);
  return L;
}

// Colour ids -> RGBA for the box (inclusive) and push it to the layer canvas.
export function paintLayer(L, box = null) {
  const { arr, data } = L, w = E.w, px = data.data, pal = S.palette;
  const x0 = box ? box.x0 : 0, y0 = box ? box.y0 : 0, x1 = box ? box.x1 : E.w - 1, y1 = box ? box.y1 : E.h - 1;
  for (let y = y0; y <= y1; y++) {
    for (let x = x0, i = y * w + x0; x <= x1; x++, i++) {
      const v = arr[i], o = i * 4, p = v * 4;
      if (S.hidden.has(v) || v === IGNORE) { px[o + 3] = 0; continue; }
      px[o] = pal[p]; px[o + 1] = pal[p + 1]; px[o + 2] = pal[p + 2]; px[o + 3] = pal[p + 3];
    }
  }
  L.ctx.putImageData(data, 0, 0, x0, y0, x1 - x0 + 1, y1 - y0 + 1);
}

export function diffArray() {
  const d = new Uint8Array(E.w * E.h).fill(IGNORE);
  for (let i = 0; i < d.length; i++) if (E.pred[i] !== E.mask[i]) d[i] = DIFF;
  return d;
}

// Which ids the main canvas overlays: the mask being edited (or the objects), unless a read-only
// view is on.
function overlayLayer() {
  if (E.viewing != null && E.prev) return E.layers.prev;
  if (E.objLayer && (E.predMode === "off" || !E.pred)) return E.objLayer;
  if (E.pred && E.predMode === "over") return E.layers.pred;
  if (E.pred && E.predMode === "diff") return layer("diff", diffArray());
  return E.layers.mask;
}

export function resizeCanvas() {
  const dpr = window.devicePixelRatio || 1;
  for (const c of [canvas, side]) {
    if (c.hidden) continue;
    const r = c.getBoundingClientRect();
    c.width = Math.max(1, Math.round(r.width * dpr));
    c.height = Math.max(1, Math.round(r.height * dpr));
  }
  render();
}

export function fit() {
  if (!E.w) return;
  const z = Math.min(canvas.width / E.w, canvas.height / E.h) * 0.96;
  E.zoom = z;
  E.panX = (canvas.width - E.w * z) / 2;
  E.panY = (canvas.height - E.h * z) / 2;
  render();
}

// Centre the view on a box (inclusive image pixels), zooming in to show it when it is small.
export function centerOn(b) {
  const bw = b.x1 - b.x0 + 1, bh = b.y1 - b.y0 + 1;
  const fitZoom = Math.min(canvas.width / E.w, canvas.height / E.h) * 0.96;
  const z = Math.max(fitZoom, Math.min(8 * fitZoom, Math.min(canvas.width / bw, canvas.height / bh) * 0.5));
  if (z <= fitZoom) return fit(); // the whole image shows it already
  E.zoom = z;
  E.panX = canvas.width / 2 - (b.x0 + bw / 2) * z;
  E.panY = canvas.height / 2 - (b.y0 + bh / 2) * z;
  render();
}

export function zoomAt(factor, cx = canvas.width / 2, cy = canvas.height / 2) {
  const z = Math.min(64, Math.max(0.05, E.zoom * factor));
  E.panX = cx - (cx - E.panX) * (z / E.zoom);
  E.panY = cy - (cy - E.panY) * (z / E.zoom);
  E.zoom = z;
  render();
}

export function toCanvas(ev) {
  const r = canvas.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * (canvas.width / r.width), y: (ev.clientY - r.top) * (canvas.height / r.height) };
}
export function toImage(ev) {
  const c = toCanvas(ev);
  return { x: (c.x - E.panX) / E.zoom, y: (c.y - E.panY) / E.zoom };
}
// For tests and scripts: client (CSS pixel) position of an image point.
export function imageToClient(x, y) {
  const r = canvas.getBoundingClientRect();
  return { x: r.left + (x * E.zoom + E.panX) * (r.width / canvas.width), y: r.top + (y * E.zoom + E.panY) * (r.height / canvas.height) };
}

function drawScene(c, overlay) {
  const ctx = c.getContext("2d");
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#101114";
  ctx.fillRect(0, 0, c.width, c.height);
  if (!E.img) return ctx;
  ctx.setTransform(E.zoom, 0, 0, E.zoom, E.panX, E.panY);
  ctx.imageSmoothingEnabled = !S.pixelated;
  ctx.filter = `brightness(${S.brightness}%) contrast(${S.contrast}%)`;
  ctx.drawImage(E.img, 0, 0);
  ctx.filter = "none";
  if (S.showMask && overlay) {
    ctx.globalAlpha = S.opacity;
    ctx.imageSmoothingEnabled = !S.pixelated;
    ctx.drawImage(overlay.canvas, 0, 0);
    ctx.globalAlpha = 1;
  }
  // Extra layers in image pixels: polygon preview, proposals, superpixel edges, model objects.
  ctx.imageSmoothingEnabled = false;
  for (const L of Object.values(E.extra || {})) {
    if (!L || !L.canvas || (L.whenTool && !L.whenTool.includes(E.tool))) continue;
    ctx.globalAlpha = L.alpha ?? S.opacity;
    ctx.drawImage(L.canvas, L.x || 0, L.y || 0);
  }
  ctx.globalAlpha = 1;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  return ctx;
}

const TOOL_HUD = { superpixel: "superpixel fill", grabcut: "GrabCut box", assist: "model assist", sam: "Segment Anything", cut: "cut" };
const FINDING_COLORS = { audit: "#ff4df0", under: "#ff5050", over: "#ffa000", counts: "#ffdd00" };

function polyline(ctx, P, verts, close) {
  ctx.beginPath();
  verts.forEach((v, i) => { const [x, y] = P(v.x, v.y); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
  if (close) ctx.closePath();
  ctx.stroke();
}
function handles(ctx, P, verts) {
  for (const v of verts) { const [x, y] = P(v.x, v.y); ctx.fillStyle = "#fff"; ctx.fillRect(x - 4, y - 4, 8, 8); ctx.strokeStyle = "#000"; ctx.strokeRect(x - 4, y - 4, 8, 8); }
}

function decorate(ctx, P) {
  ctx.lineWidth = 2;
  for (const f of E.findings || []) {
    if (!f.box) continue;
    const [a, b] = [P(f.box[0], f.box[1]), P(f.box[2], f.box[3])];
    ctx.setLineDash([6, 4]); ctx.strokeStyle = FINDING_COLORS[f.kind] || "#ffdd00";
    ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]); ctx.setLineDash([]);
  }
  if (E.flash) {
    const [a, b] = [P(E.flash.x0 - 1, E.flash.y0 - 1), P(E.flash.x1 + 2, E.flash.y1 + 2)];
    ctx.strokeStyle = "#00e5ff"; ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
  }
  if (E.dragBox) {
    const d = E.dragBox, [a, b] = [P(Math.min(d.a.x, d.b.x), Math.min(d.a.y, d.b.y)), P(Math.max(d.a.x, d.b.x) + 1, Math.max(d.a.y, d.b.y) + 1)];
    ctx.setLineDash([4, 3]); ctx.strokeStyle = "#00e5ff"; ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]); ctx.setLineDash([]);
  }
  if (E.propBox) {
    const d = E.propBox, [a, b] = [P(d.x0, d.y0), P(d.x1 + 1, d.y1 + 1)];
    ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 1; ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]);
  }
  ctx.lineWidth = 1.5;
  for (const p of E.pending || []) { ctx.strokeStyle = "#fff"; polyline(ctx, P, p.verts, true); handles(ctx, P, p.verts); }
  const rings = E.handles ? E.handles() : [];
  for (const r of rings) { ctx.strokeStyle = r.hole ? "#ff8080" : "#fff"; polyline(ctx, P, r.verts, true); handles(ctx, P, r.verts); }
  if (E.cut && E.cut.length) {
    ctx.strokeStyle = "#ff3030"; ctx.lineWidth = 2;
    const verts = E.mouse && E.tool === "cut" ? [...E.cut, E.mouse] : E.cut;
    polyline(ctx, P, verts, false); handles(ctx, P, E.cut);
  }
}

export function render() {
  if (S.view !== "image") return;
  const ctx = drawScene(canvas, overlayLayer());
  if (!E.img) return;
  const P = (x, y) => [x * E.zoom + E.panX, y * E.zoom + E.panY];
  if (E.region) {
    const [a, b] = [P(E.region[0], E.region[1]), P(E.region[2], E.region[3])];
    ctx.setLineDash([6, 4]); ctx.strokeStyle = "#ffdd00"; ctx.lineWidth = 2;
    ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]); ctx.setLineDash([]);
  }
  decorate(ctx, P);
  if (E.poly.length) {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.beginPath();
    E.poly.forEach((v, i) => { const [x, y] = P(v.x, v.y); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    if (E.mouse && E.tool === "polygon" && !E.drag) { const [x, y] = P(E.mouse.x, E.mouse.y); ctx.lineTo(x, y); }
    ctx.closePath(); ctx.stroke();
    for (const v of E.poly) { const [x, y] = P(v.x, v.y); ctx.fillStyle = "#fff"; ctx.fillRect(x - 4, y - 4, 8, 8); ctx.strokeStyle = "#000"; ctx.strokeRect(x - 4, y - 4, 8, 8); }
  }
  if (E.mouse && (E.tool === "brush" || E.tool === "eraser" || E.tool === "assist" || E.tool === "grabcut")) {
    const px = Math.floor(E.mouse.x), py = Math.floor(E.mouse.y), k = Math.floor((E.size - 1) / 2);
    const [cx, cy] = P(px - k + E.size / 2, py - k + E.size / 2);
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1; ctx.beginPath();
    ctx.arc(cx, cy, Math.max(1, (E.size / 2) * E.zoom), 0, Math.PI * 2); ctx.stroke();
  }
  if (!side.hidden && E.layers.pred) drawScene(side, E.layers.pred);
  const viewing = E.viewing != null ? ` · viewing v${E.viewing} (read only, v to go back)` : "";
  const pred = E.predMode !== "off" && E.pred ? ` · prediction ${E.predMode}` : "";
  let at = "";
  if (E.mouse) {
    const x = Math.floor(E.mouse.x), y = Math.floor(E.mouse.y);
    if (x >= 0 && y >= 0 && x < E.w && y < E.h) {
      const v = E.mask[y * E.w + x];
      at = E.describe ? ` · (${x}, ${y}) ${E.describe(x, y)}` : ` · (${x}, ${y}) ${v === IGNORE ? "unlabelled" : S.classes[v]?.name}`;
    }
  }
  const tool = TOOL_HUD[E.tool] ? ` · ${TOOL_HUD[E.tool]}` : "";
  $("#hud").textContent = `${E.w}x${E.h} · zoom ${(E.zoom * 100).toFixed(0)}% (device px)${at}${pred}${viewing}${tool}`;
}
