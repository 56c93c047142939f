// Editing one image: open, undo/redo, save (version N -> N+1, edits made meanwhile stay unsaved),
// local drafts, protect classes, pending polygons, jumps (next unlabelled region, next image that
// needs work), review panel, findings, history and model predictions. On a COCO dataset the
// image's objects are edited instead of a mask (instances.js); saving, drafts and history follow.

import { api, ApiError, getJSON, imageBitmap, postJSON, q } from "./api.js";
import { $, $$, el, hideBanner, showBanner, toast } from "./dom.js";
import { deleteDraft, getDraft, key as draftKey, putDraft } from "./draft.js";
import * as inst from "./instances.js";
import * as R from "./raster.js";
import { actions, E, IGNORE, S } from "./state.js";
import { canvas, centerOn, diffArray, fit, layer, paintLayer, render, resizeCanvas, side } from "./view.js";

// ------------------------------------------------------------------ classes and tools
export function setClass(id) {
  E.cls = id; markClass();
  if (E.tool === "eraser" && id !== IGNORE) setTool("brush");
}
export function markClass() {
  $$("#legend li").forEach((li) => li.classList.toggle("current", +li.dataset.cls === E.cls));
  const cur = $(`#legend li[data-cls="${E.cls}"]`);
  if (cur) cur.scrollIntoView({ block: "nearest" });
}
export function setTool(t) {
  if (E.tool === "polygon" && t !== "polygon" && E.poly.length) E.poly = [];
  if (E.tool === "cut" && t !== "cut") E.cut = [];
  E.tool = t;
  $$("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
  canvas.style.cursor = t === "pan" ? "grab" : "crosshair";
  if (t === "superpixel" && E.name) actions.loadSuperpixels?.();
  if (t === "assist" && E.name && !inst.active() && S.info.has_model && !E.pred) loadPred().catch((e) => toast(e.message, true));
  render();
}

// "Protect classes": which pixels a tool may overwrite (raster.js guard tables).
//   all         everything
//   unlabelled  only unlabelled pixels (the eraser still removes labels, except locked classes)
//   locked      everything except the classes locked in the legend
export function guard(erasing = false) {
  const mode = S.protect;
  if (mode === "all" && !S.locked.size) return null;
  const g = new Uint8Array(256);
  if (mode === "unlabelled" && !erasing) g[IGNORE] = 1;
  else { g.fill(1); for (const c of S.locked) g[c] = 0; }
  return g;
}

// ------------------------------------------------------------------ open
function confirmLeave() {
  return !E.dirty || confirm(`Unsaved changes to ${E.name}. Discard them? (A local draft is kept.)`);
}

export async function openImage(i, name = null) {
  if (E.saving) await E.saving.catch(() => null); // let a save in flight land on its own image
  if (!confirmLeave()) return;
  if (!S.list.length && !name) return;
  if (name == null) {
    S.sel = Math.max(0, Math.min(S.list.length - 1, i));
    name = S.list[S.sel].name;
  } else S.sel = i;
  actions.showView("image");
  history.replaceState(null, "", `#image=${q(name)}`);
  resizeCanvas();
  const img = imageBitmap(`/api/image?name=${q(name)}`);
  let m, objects = null;
  if (inst.active()) {
    objects = await inst.load(name);
    m = { arr: new Uint8Array(objects.width * objects.height), w: objects.width, h: objects.height, version: objects.version, bad: 0 };
  } else m = await fetchMask(`/api/mask?name=${q(name)}`);
  Object.assign(E, {
    name, img: await img, w: m.w, h: m.h, mask: m.arr, version: m.version, undo: [], redo: [],
    editSeq: 0, savedSeq: 0, dirty: false, saveAgain: false, pending: [], cut: [], flash: null, holeFrom: 0,
    pred: null, prev: null, viewing: null, poly: [], region: null, findings: [],
  });
  E.layers = {};
  E.extra = {}; E.objLayer = null; E.describe = null; E.handles = null; E.dragBox = null; E.propBox = null;
  actions.resetAssist?.();
  if (objects) inst.setObjects(objects);
  else layer("mask", E.mask);
  E.findings = objects ? objects.findings : [];
  $("#image-title").textContent = name;
  hideBanner();
  if (m.bad) toast(`${m.bad} pixels of the stored mask are not a class colour; shown as unlabelled`, true);
  fit();
  updateSaveState();
  loadReview();
  loadHistory();
  if (!objects && S.info.findings?.length) loadFindings();
  if (S.info.has_model && E.predMode !== "off") loadPred();
  if (E.tool === "superpixel") actions.loadSuperpixels?.(); // the tool stays on from image to image
  offerDraft(name);
  canvas.focus();
}

export async function fetchMask(url) {
  const r = await api(url);
  const arr = new Uint8Array(await r.arrayBuffer());
  return {
    arr, w: +r.headers.get("X-Width"), h: +r.headers.get("X-Height"),
    version: +r.headers.get("X-Version"), bad: +r.headers.get("X-Bad-Pixels") || 0,
  };
}

// ------------------------------------------------------------------ drafts
let draftTimer = null;
const dkey = (name) => draftKey(S.info.dataset, name);

function scheduleDraft() {
  clearTimeout(draftTimer);
  draftTimer = setTimeout(writeDraft, 700);
}
export function writeDraft() {
  clearTimeout(draftTimer);
  if (!E.name || !E.dirty) return;
  const base = { name: E.name, base: E.version, w: E.w, h: E.h, time: Date.now() };
  if (inst.active()) putDraft(dkey(E.name), { ...base, mode: "instances", objects: inst.draft() });
  else putDraft(dkey(E.name), { ...base, mask: E.mask.slice() });
}

async function offerDraft(name) {
  const d = await getDraft(dkey(name));
  if (!d || name !== E.name || d.w !== E.w || d.h !== E.h || (d.mode === "instances") !== inst.active()) return;
  if (!inst.active()) {
    const same = d.mask.length === E.mask.length && d.mask.every((v, i) => v === E.mask[i]);
    if (same) { deleteDraft(dkey(name)); return; }
  }
  const when = new Date(d.time).toLocaleString();
  const based = d.base === E.version ? `on this version (v${d.base})` : `on v${d.base}; the stored one is v${E.version}`;
  showBanner(`Unsaved local draft from ${when}, based ${based}.`, [
    ["Restore draft", () => restoreDraft(d)],
    ["Discard draft", () => deleteDraft(dkey(name))],
  ]);
}

function restoreDraft(d) {
  const stored = E.version;
  if (d.mode === "instances") inst.restoreDraft(d.objects);
  else {
    const before = E.mask.slice();
    E.mask.set(d.mask);
    commit(before, { x0: 0, y0: 0, x1: E.w - 1, y1: E.h - 1 });
  }
  // Saving a draft of an older version must go through the version check, never overwrite.
  E.version = d.base;
  updateSaveState();
  toast(d.base === stored ? "draft restored" : `draft restored (based on v${d.base}); saving it will report v${stored}`);
}

// ------------------------------------------------------------------ save
async function gzip(bytes) {
  if (!window.CompressionStream) return { body: bytes, enc: null };
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return { body: await new Response(stream).arrayBuffer(), enc: "gzip" };
}

async function sendMask(name, base) {
  const { body, enc } = await gzip(E.mask.slice());
  const headers = { "Content-Type": "application/octet-stream" };
  if (enc) headers["X-Mask-Encoding"] = enc;
  return (await api(`/api/mask?name=${q(name)}&version=${base}`, { method: "POST", body, headers })).json();
}

export async function save() {
  if (!E.name || !S.info.writable) return;
  if (E.saving) { E.saveAgain = true; return E.saving; } // one save at a time; the next one follows
  if (!inst.active() && (E.poly.length >= 3 || E.pending.length)) applyPolygon();
  const name = E.name, seq = E.editSeq, base = E.version;
  E.saving = (async () => {
    const r = inst.active() ? await inst.send(name, base) : await sendMask(name, base);
    if (name !== E.name) return;
    E.version = r.version; E.savedSeq = seq; E.dirty = E.editSeq !== seq;
    if (E.dirty) writeDraft(); else deleteDraft(dkey(name));
    hideBanner();
    const how = r.objects ? ` (${summary(r.objects)})` : "";
    toast(E.dirty ? `saved version ${r.version}; newer edits are not saved yet` : `saved ${name} as version ${r.version}${how}`);
    actions.noteSaved(name, r.version);
    loadHistory(); loadReview();
  })();
  try {
    await E.saving;
  } catch (e) {
    if (name === E.name) {
      if (e instanceof ApiError && e.status === 409) {
        showBanner(`Not saved: ${e.message}`, [["Load their version", () => { E.dirty = false; openImage(S.sel, E.name); }]]);
      } else if (e instanceof ApiError && /unlabelled/.test(e.message)) {
        showBanner(`Not saved: ${e.message}`, [["Show them (u)", () => jumpUnlabelled()]]);
      } else toast(`not saved: ${e.message}`, true);
    }
    E.saveAgain = false;
  } finally {
    E.saving = null;
    updateSaveState();
  }
  if (E.saveAgain && name === E.name && E.dirty) { E.saveAgain = false; return save(); }
  E.saveAgain = false;
}

function summary(objects) {
  const n = { polygon: 0, rle: 0, kept: 0 };
  for (const o of objects) n[o.stored] = (n[o.stored] || 0) + 1;
  return `${n.polygon} polygons, ${n.rle} RLE, ${n.kept} unchanged`;
}

export function updateSaveState() {
  const steps = inst.active() ? inst.I.undo.length : E.undo.length;
  const st = `v${E.version}` + (E.saving ? " · saving" : "") + (E.dirty ? " · unsaved" : "") +
    (steps ? ` · ${steps} steps` : "");
  $("#save-state").textContent = st;
  $("#save").disabled = !S.info?.writable;
}

// ------------------------------------------------------------------ undo
function crop(arr, b) {
  const w = b.x1 - b.x0 + 1, out = new Uint8Array(w * (b.y1 - b.y0 + 1));
  for (let y = b.y0; y <= b.y1; y++) out.set(arr.subarray(y * E.w + b.x0, y * E.w + b.x1 + 1), (y - b.y0) * w);
  return out;
}
function paste(arr, b, src) {
  const w = b.x1 - b.x0 + 1;
  for (let y = b.y0; y <= b.y1; y++) arr.set(src.subarray((y - b.y0) * w, (y - b.y0 + 1) * w), y * E.w + b.x0);
}
const UNDO_BYTES = 256 << 20;
export function commit(before, box) {
  if (!box) return;
  E.undo.push({ box, before: crop(before, box), after: crop(E.mask, box) });
  E.redo = [];
  let bytes = E.undo.reduce((s, op) => s + 2 * op.before.length, 0);
  while (bytes > UNDO_BYTES && E.undo.length > 1) bytes -= 2 * E.undo.shift().before.length;
  edited(box);
}
// Any edit (mask or objects): unsaved from now, drafted shortly.
export function edited(box = null) {
  E.editSeq++; E.dirty = true; E.holeFrom = 0;
  if (!inst.active()) {
    paintLayer(E.layers.mask, box);
    if (E.predMode === "diff" && E.pred) layer("diff", diffArray());
  }
  updateSaveState();
  scheduleDraft();
  render();
}
export function undo() {
  if (inst.active()) return inst.undo();
  const op = E.undo.pop();
  if (!op) return;
  paste(E.mask, op.box, op.before);
  E.redo.push(op);
  edited(op.box);
}
export function redo() {
  if (inst.active()) return inst.redo();
  const op = E.redo.pop();
  if (!op) return;
  paste(E.mask, op.box, op.after);
  E.undo.push(op);
  edited(op.box);
}

export function editable() {
  if (E.viewing != null) { toast("viewing an old version (read only): press v to go back"); return false; }
  return !!E.mask;
}

// ------------------------------------------------------------------ polygons
// Semantic mode keeps several pending polygons (closed, still editable, shown filled); enter applies
// them all (and the one being drawn) in the order drawn, as one undo step.
const dedupe = (verts) => verts.filter((v, i) => {
  const prev = verts[(i + verts.length - 1) % verts.length];
  return verts.length < 2 || v.x !== prev.x || v.y !== prev.y;
});

export function closePolygon() {
  E.poly = dedupe(E.poly); // a double click adds the last vertex twice
  if (E.poly.length < 3) { render(); return; }
  if (inst.active()) { inst.applyPolygon(E.poly); E.poly = []; render(); return; }
  E.pending.push({ verts: E.poly, cls: E.cls });
  E.poly = [];
  updatePreview();
  render();
}

export function applyPolygon() {
  if (inst.active()) { if (E.poly.length >= 3) closePolygon(); return; }
  if (!editable()) return;
  const all = [...E.pending, ...(E.poly.length >= 3 ? [{ verts: E.poly, cls: E.cls }] : [])];
  if (!all.length) return;
  const before = E.mask.slice();
  let box = null;
  for (const p of all) {
    const b = R.fillPolygon(E.mask, E.w, E.h, p.verts, p.cls, guard(p.cls === IGNORE));
    if (b) box = box ? { x0: Math.min(box.x0, b.x0), y0: Math.min(box.y0, b.y0), x1: Math.max(box.x1, b.x1), y1: Math.max(box.y1, b.y1) } : b;
  }
  E.pending = []; E.poly = [];
  updatePreview();
  if (box) commit(before, box); else render();
}

export function dropPolygon() {
  if (E.poly.length) E.poly = [];
  else if (E.pending.length) E.pending.pop();
  else return false;
  updatePreview();
  render();
  return true;
}

// The filled preview: exactly the pixels enter will paint (the protect rules included), in the
// colours of their classes, over the mask.
export function updatePreview() {
  const all = [...E.pending, ...(E.poly.length >= 3 ? [{ verts: E.poly, cls: E.cls }] : [])];
  E.extra = E.extra || {};
  if (!all.length || inst.active() || !E.mask) { E.extra.preview = null; return; }
  let box = null;
  for (const p of all) {
    for (const v of p.verts) {
      const b = { x0: Math.max(0, Math.floor(v.x)), y0: Math.max(0, Math.floor(v.y)), x1: Math.min(E.w - 1, Math.ceil(v.x)), y1: Math.min(E.h - 1, Math.ceil(v.y)) };
      box = box ? { x0: Math.min(box.x0, b.x0), y0: Math.min(box.y0, b.y0), x1: Math.max(box.x1, b.x1), y1: Math.max(box.y1, b.y1) } : b;
    }
  }
  const bw = box.x1 - box.x0 + 1, bh = box.y1 - box.y0 + 1;
  const work = new Uint8Array(bw * bh), orig = new Uint8Array(bw * bh);
  for (let y = 0; y < bh; y++) { work.set(E.mask.subarray((y + box.y0) * E.w + box.x0, (y + box.y0) * E.w + box.x1 + 1), y * bw); }
  orig.set(work);
  const shifted = (verts) => verts.map((v) => ({ x: v.x - box.x0, y: v.y - box.y0 }));
  for (const p of all) R.fillPolygon(work, bw, bh, shifted(p.verts), p.cls, guard(p.cls === IGNORE));
  const c = document.createElement("canvas");
  c.width = bw; c.height = bh;
  const ctx = c.getContext("2d"), img = ctx.createImageData(bw, bh), px = img.data, pal = S.palette;
  for (let i = 0; i < work.length; i++) {
    if (work[i] === orig[i]) continue;
    const v = work[i] * 4, o = i * 4;
    if (work[i] === IGNORE) { px[o] = 40; px[o + 1] = 40; px[o + 2] = 40; px[o + 3] = 255; continue; }
    px[o] = pal[v]; px[o + 1] = pal[v + 1]; px[o + 2] = pal[v + 2]; px[o + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  E.extra.preview = { canvas: c, x: box.x0, y: box.y0, alpha: Math.min(1, S.opacity + 0.25) };
}

// ------------------------------------------------------------------ jumps
// The next region of unlabelled pixels (row-major after the last one shown): centred and outlined.
export function jumpUnlabelled() {
  if (inst.active()) return toast("objects have no unlabelled pixels to find");
  const n = E.mask.length;
  let start = E.holeFrom || 0, at = -1;
  for (let k = 0; k < n; k++) { const i = (start + k) % n; if (E.mask[i] === IGNORE) { at = i; break; } }
  if (at < 0) { E.flash = null; render(); return toast("no unlabelled pixels left"); }
  const work = E.mask.slice(), x = at % E.w, y = (at - x) / E.w;
  const box = R.floodFill(work, E.w, E.h, x, y, 254);
  let count = 0;
  for (let i = 0; i < n; i++) if (E.mask[i] === IGNORE) count++;
  // continue after this region next time (the first pixel past its box in scan order)
  E.holeFrom = (Math.min(E.h - 1, box.y1) * E.w + box.x1 + 1) % n;
  E.flash = box;
  centerOn(box);
  toast(`${count} unlabelled pixels; this region spans ${box.x1 - box.x0 + 1}x${box.y1 - box.y0 + 1} at (${box.x0}, ${box.y0})`);
}

export async function nextImage(want = $("#next-want").value) {
  const p = new URLSearchParams({ name: E.name || S.list[S.sel]?.name || "", want, sort: $("#f-sort").value });
  for (const [k, id] of [["split", "#f-split"], ["status", "#f-status"], ["q", "#f-q"]]) if ($(id).value) p.set(k, $(id).value);
  const label = { unlabelled: "unlabelled", needs_fix: "needing a fix", mine: "in progress held by you" }[want];
  try {
    let r = await getJSON(`/api/next?${p}`);
    if (!r.name) return toast(`no other image ${label}`);
    if (r.position == null || $("#f-class").value) { // not in the list shown: show every image
      for (const id of ["#f-split", "#f-status", "#f-class", "#f-q"]) $(id).value = "";
      await actions.refreshList();
      p.delete("split"); p.delete("status"); p.delete("q");
      r = await getJSON(`/api/next?${p}`);
    }
    if (await actions.ensureRow(r.position)) await openImage(r.position);
    toast(`${r.remaining} images ${label}`);
  } catch (e) { toast(e.message, true); }
}

// ------------------------------------------------------------------ review, findings and history
export async function loadReview() {
  const name = E.name;
  const r = await getJSON(`/api/review?name=${q(name)}`);
  if (name !== E.name) return;
  $("#status").value = r.status;
  const bits = [r.holder ? `held by ${r.holder}` : "nobody holds it"];
  if (r.priority != null) bits.push(`priority ${r.priority}`);
  $("#review-info").textContent = bits.join(" · ");
  $("#comments").replaceChildren(...r.comments.map((c) => el("li", {}, `${c.user || "?"}: ${c.text}`)));
  // A suspect region from the data engine: [x0, y0, x1, y1] or {box: [...], note}.
  const box = Array.isArray(r.region) ? r.region : r.region?.box;
  E.region = Array.isArray(box) && box.length === 4 ? box.map(Number) : null;
  const note = !Array.isArray(r.region) && r.region?.note ? String(r.region.note) : "";
  $("#region-note").textContent = note;
  showFindings();
  render();
}

async function loadFindings() {
  const name = E.name;
  try {
    const r = await getJSON(`/api/findings?name=${q(name)}`);
    if (name !== E.name) return;
    E.findings = r.regions;
    showFindings();
    render();
  } catch (e) { toast(e.message, true); }
}

function showFindings() {
  const rows = (E.findings || []).map((f) => {
    const li = el("li", { className: `finding ${f.kind}` }, f.note);
    if (f.box) li.addEventListener("click", () => centerOn({ x0: f.box[0], y0: f.box[1], x1: f.box[2], y1: f.box[3] }));
    return li;
  });
  $("#findings").replaceChildren(...rows);
}

export async function setStatus(status, comment = null) {
  try {
    await postJSON("/api/review", { name: E.name, status, comment });
    actions.noteStatus(E.name, status);
  } catch (e) { toast(e.message, true); }
  loadReview();
}

export async function addComment(text) {
  try { await postJSON("/api/review", { name: E.name, comment: text }); } catch (e) { toast(e.message, true); }
  loadReview();
}

export async function loadHistory() {
  const name = E.name;
  const h = await getJSON(`/api/history?name=${q(name)}`);
  if (name !== E.name) return;
  const rows = h.versions.map((v) => {
    const when = v.time ? new Date(v.time * 1000).toLocaleString() : "original";
    const li = el("li", { className: E.viewing === v.version ? "viewing" : "" },
      el("span", {}, `v${v.version}${v.current ? " (current)" : ""}`),
      el("span", { className: "muted" }, `${v.user || ""} ${when}`));
    if (!v.current) {
      li.append(
        el("button", { onclick: () => viewVersion(E.viewing === v.version ? null : v.version) }, E.viewing === v.version ? "hide" : "view"),
        el("button", { onclick: () => restoreVersion(v.version) }, "restore"));
    }
    return li;
  });
  $("#history").replaceChildren(...rows);
  E.history = h.versions;
}

async function viewVersion(version) {
  if (version == null) { E.viewing = null; render(); loadHistory(); return; }
  const m = await fetchMask(`/api/mask?name=${q(E.name)}&version=${version}`);
  E.prev = m.arr; E.viewing = version;
  layer("prev", E.prev);
  render(); loadHistory();
}

export function togglePrevious() {
  if (E.viewing != null) return viewVersion(null);
  const prev = (E.history || []).find((v) => !v.current);
  if (!prev) return toast("no previous version of this image");
  return viewVersion(prev.version);
}

async function restoreVersion(version) {
  if (E.dirty && !confirm("Restoring drops your unsaved changes. Go on?")) return;
  try {
    await postJSON(`/api/restore?name=${q(E.name)}&version=${version}&base=${E.version}`, {});
    E.dirty = false;
    deleteDraft(dkey(E.name));
    toast(`restored version ${version}`);
    openImage(S.sel, E.name);
  } catch (e) { toast(e.message, true); }
}

// ------------------------------------------------------------------ model
export async function loadPred() {
  if (!E.pred) {
    $("#hud").textContent = "running the model...";
    const name = E.name;
    const m = await fetchMask(`/api/pred?name=${q(name)}`);
    if (name !== E.name) return;
    E.pred = m.arr;
    layer("pred", E.pred);
  }
  render();
}

export async function setPredMode(mode) {
  E.predMode = mode;
  $("#pred-mode").value = mode;
  side.hidden = mode !== "beside";
  resizeCanvas();
  if (mode !== "off") await loadPred();
  render();
}

export async function startFromPrediction() {
  await loadPred();
  const before = E.mask.slice();
  let box = null;
  for (let i = 0; i < E.mask.length; i++) {
    if (E.mask[i] === IGNORE && E.pred[i] !== IGNORE) {
      E.mask[i] = E.pred[i];
      const x = i % E.w, y = (i / E.w) | 0;
      box = box ? { x0: Math.min(box.x0, x), y0: Math.min(box.y0, y), x1: Math.max(box.x1, x), y1: Math.max(box.y1, y) } : { x0: x, y0: y, x1: x, y1: y };
    }
  }
  if (!box) return toast("no unlabelled pixels to fill");
  commit(before, box);
  toast("unlabelled pixels filled from the model; correct them and save");
}
