// drivelab label: browse, paint and review masks. Plain ES modules, no build step.
//
// The mask being edited is a Uint8Array of class ids at the image's full resolution (255 =
// unlabelled). Tools write ids into it with integer rasterisation (raster.js); colours exist only
// in the overlay canvas drawn from it, with the palette and opacity the server's schema sends.
// Saving uploads the ids as raw bytes (gzip), so the server writes exactly what was painted.

import { ApiError, getJSON, postJSON, readToken, setToken, startSession } from "./api.js";
import * as A from "./assist.js";
import { bindControls, buildLegend, setLocked, setProtect, setSize } from "./controls.js";
import { $, $$, el, toast } from "./dom.js";
import * as ed from "./editor.js";
import * as grid from "./grid.js";
import * as inst from "./instances.js";
import { cocoPolygonRuns } from "./raster.js";
import { actions, E, S } from "./state.js";
import { bindPointer } from "./tools.js";
import { fit, imageToClient, render, resizeCanvas, zoomAt } from "./view.js";

function showView(v) {
  S.view = v;
  for (const sec of ["grid", "image", "queue"]) $(`#${sec}-view`).hidden = sec !== v;
  $$("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === v));
}

function setView(v) {
  showView(v);
  if (v === "grid") { grid.renderGrid(); if (location.hash) history.replaceState(null, "", location.pathname); }
  if (v === "queue") grid.renderQueue();
  if (v === "image") { resizeCanvas(); if (!E.name && S.list.length) ed.openImage(S.sel); }
}

Object.assign(actions, {
  openImage: ed.openImage, showView, noteSaved: grid.noteSaved, noteStatus: grid.noteStatus,
  edited: ed.edited, render, setTool: ed.setTool, refreshList: grid.refreshList, ensureRow: grid.ensureRow,
  loadSuperpixels: () => A.loadSuperpixels().catch((e) => toast(e.message, true)), resetAssist: A.reset,
});

function askToken(message) {
  const input = el("input", { type: "password", placeholder: "token", size: 28, autocomplete: "off" });
  const go = el("button", { className: "primary" }, "Open");
  const submit = () => { if (input.value.trim()) { setToken(input.value.trim()); $("#login").hidden = true; init(); } };
  go.onclick = submit;
  input.addEventListener("keydown", (e) => { if (e.key === "Enter") submit(); });
  $("#login").replaceChildren(el("p", {}, message), input, go);
  $("#login").hidden = false;
  input.focus();
}

function bindUI() {
  $$("nav button").forEach((b) => b.addEventListener("click", () => setView(b.dataset.view)));
  for (const id of ["#f-split", "#f-status", "#f-class", "#f-sort"]) $(id).addEventListener("change", () => { S.sel = 0; grid.refreshList(); });
  let typing = null;
  $("#f-q").addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => { S.sel = 0; grid.refreshList(); }, 150); });
  $("#undo").onclick = ed.undo; $("#redo").onclick = ed.redo;
  $("#zoom-fit").onclick = fit;
  $("#zoom-1").onclick = () => zoomAt(1 / E.zoom);
  $("#save").onclick = ed.save;
  $("#more").onclick = grid.showMore;
  $("#pred-mode").addEventListener("change", (e) => ed.setPredMode(e.target.value));
  $("#from-pred").onclick = ed.startFromPrediction;
  $("#status").addEventListener("change", (e) => ed.setStatus(e.target.value));
  $("#take").onclick = () => ed.setStatus("in_progress");
  $("#add-comment").onclick = async () => {
    const text = $("#comment").value.trim();
    if (!text) return;
    await ed.addComment(text);
    $("#comment").value = "";
  };
  $("#export-csv").onclick = () => grid.exportChanged("csv");
  $("#export-txt").onclick = () => grid.exportChanged("txt");
  $("#commit").onclick = async () => {
    try {
      const r = await postJSON("/api/commit", { branch: $("#branch").value.trim() });
      toast(`committed ${r.files.length} masks to ${r.branch} (${r.commit.slice(0, 8)})`);
    } catch (e) { toast(e.message, true); }
  };
  window.addEventListener("resize", resizeCanvas);
  window.addEventListener("beforeunload", (ev) => { if (E.dirty) { ed.writeDraft(); ev.preventDefault(); ev.returnValue = ""; } });
  document.addEventListener("visibilitychange", () => { if (document.hidden) ed.writeDraft(); });
  window.addEventListener("pagehide", ed.writeDraft);
  bindControls();
  bindPointer();
  A.bindAssist();
  inst.bindPanel();
}

let bound = false;
async function init() {
  try {
    const session = await startSession();
    S.user = session.user;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return askToken("This app needs your token: open the URL drivelab label printed, or paste the token.");
    throw e;
  }
  S.info = await getJSON("/api/info");
  const ov = S.info.overlay;
  S.classes = S.info.schema.classes;
  S.palette = new Uint8Array(ov.palette.flat());
  S.opacity = ov.alpha;
  const skipped = S.info.skipped.outside_root + S.info.skipped.bad_name;
  $("#dataset").textContent = `${S.info.dataset} · ${S.info.format} · ${S.info.n_images} images` +
    (S.info.writable ? "" : " · browse only") + (skipped ? ` · ${skipped} files ignored (outside the dataset or bad names)` : "");
  $("#user").textContent = S.user;
  if (!S.info.writable) {
    $("#notice").textContent = `Browse only: ${S.info.read_only_reason}`;
    $("#notice").hidden = false;
  }
  for (const s of S.info.splits) $("#f-split").add(new Option(s, s));
  for (const s of S.info.statuses) { $("#f-status").add(new Option(s, s)); $("#status").add(new Option(s, s)); }
  for (const c of S.classes) $("#f-class").add(new Option(`${c.id} ${c.name}`, c.id));
  if (S.info.has_table) $("#f-sort").value = "loss";
  $("#pred-box").hidden = !S.info.has_model;
  document.body.classList.toggle("instances", S.info.mode === "instances");
  document.body.classList.toggle("has-model", !!S.info.has_model);
  document.body.classList.toggle("has-sam", !!S.info.has_sam);
  if (S.info.mode === "instances") { E.cls = S.info.categories[0]?.train_id ?? 1; $("#model-score").value = S.info.score; }
  $("#git-box").hidden = !S.info.git;
  $("#branch").value = `label/${S.user.replace(/[^A-Za-z0-9._-]+/g, "-")}`;
  buildLegend();
  if (!bound) { bindUI(); bound = true; }
  await grid.refreshList();
  const m = location.hash.match(/^#image=(.+)$/);
  if (m) {
    const name = decodeURIComponent(m[1]);
    const i = S.list.findIndex((it) => it.name === name);
    await ed.openImage(i >= 0 ? i : 0, name);
  } else setView("grid");
}

// For tests, scripts and the browser console.
window.labelApp = {
  S, E, I: inst.I, A: A.A, imageToClient, openImage: ed.openImage, save: ed.save, setTool: ed.setTool,
  setClass: ed.setClass, setSize, fit, zoomAt, undo: ed.undo, redo: ed.redo, setProtect, setLocked,
  nextImage: ed.nextImage, jumpUnlabelled: ed.jumpUnlabelled, cocoPolygonRuns,
  objects: { select: inst.select, merge: inst.merge, split: inst.split, visibleRuns: inst.visibleRuns, payload: inst.payload },
};

readToken();
init().catch((e) => toast(`failed to start: ${e.message}`, true));
