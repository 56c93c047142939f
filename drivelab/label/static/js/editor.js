// Editing one mask: open, undo/redo, save (version N -> N+1, edits made meanwhile stay unsaved),
// local drafts, review panel, history and model predictions.

import { api, ApiError, getJSON, imageBitmap, postJSON, q } from "./api.js";
import { $, $$, el, hideBanner, showBanner, toast } from "./dom.js";
import { deleteDraft, getDraft, key as draftKey, putDraft } from "./draft.js";
import * as R from "./raster.js";
import { actions, E, IGNORE, S } from "./state.js";
import { canvas, diffArray, fit, layer, paintLayer, render, resizeCanvas, side } from "./view.js";

// ------------------------------------------------------------------ classes and tools
export function setClass(id) { E.cls = id; markClass(); if (E.tool === "eraser" && id !== IGNORE) setTool("brush"); }
export function markClass() {
  $$("#legend li").forEach((li) => li.classList.toggle("current", +li.dataset.cls === E.cls));
}
export function setTool(t) {
  if (E.tool === "polygon" && t !== "polygon" && E.poly.length) E.poly = [];
  E.tool = t;
  $$("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
  canvas.style.cursor = t === "pan" ? "grab" : "crosshair";
  render();
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
  const [img, m] = await Promise.all([imageBitmap(`/api/image?name=${q(name)}`), fetchMask(`/api/mask?name=${q(name)}`)]);
  Object.assign(E, {
    name, img, w: m.w, h: m.h, mask: m.arr, version: m.version, undo: [], redo: [],
    editSeq: 0, savedSeq: 0, dirty: false, saveAgain: false,
    pred: null, prev: null, viewing: null, poly: [], region: null,
  });
  E.layers = {};
  layer("mask", E.mask);
  $("#image-title").textContent = name;
  hideBanner();
  if (m.bad) toast(`${m.bad} pixels of the stored mask are not a class colour; shown as unlabelled`, true);
  fit();
  updateSaveState();
  loadReview();
  loadHistory();
  if (S.info.has_model && E.predMode !== "off") loadPred();
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
  putDraft(dkey(E.name), { name: E.name, base: E.version, w: E.w, h: E.h, mask: E.mask.slice(), time: Date.now() });
}

async function offerDraft(name) {
  const d = await getDraft(dkey(name));
  if (!d || name !== E.name || d.w !== E.w || d.h !== E.h) return;
  const same = d.mask.length === E.mask.length && d.mask.every((v, i) => v === E.mask[i]);
  if (same) { deleteDraft(dkey(name)); return; }
  const when = new Date(d.time).toLocaleString();
  const based = d.base === E.version ? `on this version (v${d.base})` : `on v${d.base}; the stored mask is v${E.version}`;
  showBanner(`Unsaved local draft from ${when}, based ${based}.`, [
    ["Restore draft", () => restoreDraft(d)],
    ["Discard draft", () => deleteDraft(dkey(name))],
  ]);
}

function restoreDraft(d) {
  const before = E.mask.slice(), stored = E.version;
  E.mask.set(d.mask);
  // Saving a draft of an older version must go through the version check, never overwrite.
  E.version = d.base;
  commit(before, { x0: 0, y0: 0, x1: E.w - 1, y1: E.h - 1 });
  toast(d.base === stored ? "draft restored" : `draft restored (based on v${d.base}); saving it will report v${stored}`);
}

// ------------------------------------------------------------------ save
async function gzip(bytes) {
  if (!window.CompressionStream) return { body: bytes, enc: null };
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return { body: await new Response(stream).arrayBuffer(), enc: "gzip" };
}

export async function save() {
  if (!E.name || !S.info.writable) return;
  if (E.saving) { E.saveAgain = true; return E.saving; } // one save at a time; the next one follows
  if (E.poly.length >= 3) applyPolygon();
  const name = E.name, seq = E.editSeq, base = E.version;
  E.saving = (async () => {
    const { body, enc } = await gzip(E.mask.slice());
    const headers = { "Content-Type": "application/octet-stream" };
    if (enc) headers["X-Mask-Encoding"] = enc;
    const r = await (await api(`/api/mask?name=${q(name)}&version=${base}`, { method: "POST", body, headers })).json();
    if (name !== E.name) return;
    E.version = r.version; E.savedSeq = seq; E.dirty = E.editSeq !== seq;
    if (E.dirty) writeDraft(); else deleteDraft(dkey(name));
    hideBanner();
    toast(E.dirty ? `saved version ${r.version}; newer edits are not saved yet` : `saved ${name} as version ${r.version}`);
    actions.noteSaved(name, r.version);
    loadHistory(); loadReview();
  })();
  try {
    await E.saving;
  } catch (e) {
    if (name === E.name) {
      if (e instanceof ApiError && e.status === 409) {
        showBanner(`Not saved: ${e.message}`, [["Load their version", () => { E.dirty = false; openImage(S.sel, E.name); }]]);
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

export function updateSaveState() {
  const st = `v${E.version}` + (E.saving ? " · saving" : "") + (E.dirty ? " · unsaved" : "") +
    (E.undo.length ? ` · ${E.undo.length} steps` : "");
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
function edited(box) {
  E.editSeq++; E.dirty = true;
  paintLayer(E.layers.mask, box);
  if (E.predMode === "diff" && E.pred) layer("diff", diffArray());
  updateSaveState();
  scheduleDraft();
  render();
}
export function undo() {
  const op = E.undo.pop();
  if (!op) return;
  paste(E.mask, op.box, op.before);
  E.redo.push(op);
  edited(op.box);
}
export function redo() {
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

export function applyPolygon() {
  if (E.poly.length < 3 || !editable()) return;
  const before = E.mask.slice();
  const box = R.fillPolygon(E.mask, E.w, E.h, E.poly, E.cls);
  E.poly = [];
  commit(before, box);
}

// ------------------------------------------------------------------ review and history
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
  render();
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
  if (!prev) return toast("no previous version of this mask");
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
async function loadPred() {
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
