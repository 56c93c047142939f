// drivelab label: browse, paint and review masks. Plain ES module, no build step.
//
// The mask being edited is a Uint8Array of class ids at the image's full resolution (255 =
// unlabelled). Tools write ids into it with integer rasterisation (raster.js); colours exist only
// in the overlay canvas drawn from it. Saving uploads the ids as raw bytes (gzip), so the server
// writes exactly what was painted, whatever the browser zoom or screen scaling.
import * as R from "./raster.js";

const $ = (s) => document.querySelector(s);
const IGNORE = 255;
const DIFF = 254; // overlay value marking "prediction differs from the mask"
const PAGE = 240;

const S = {
  info: null, classes: [], palette: new Uint8Array(256 * 4), hidden: new Set(),
  opacity: 0.5, showMask: true, brightness: 100, contrast: 100, pixelated: true,
  list: [], sel: 0, shown: PAGE, view: "grid",
  user: localStorage.getItem("drivelab.user") || "",
};

// ------------------------------------------------------------------ server
async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (S.user) headers["X-User"] = S.user;
  const r = await fetch(path, { ...opts, headers });
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { msg = (await r.json()).detail || msg; } catch (e) { /* not json */ }
    const err = new Error(msg); err.status = r.status; throw err;
  }
  return r;
}
const getJSON = async (path) => (await api(path)).json();
const postJSON = async (path, body) =>
  (await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
const q = (name) => encodeURIComponent(name);

let toastTimer = null;
function toast(msg, error = false) {
  const t = $("#toast");
  t.textContent = msg; t.hidden = false; t.className = error ? "error" : "";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), error ? 8000 : 2500);
}

// ------------------------------------------------------------------ startup
async function init() {
  S.info = await getJSON("/api/info");
  const sc = S.info.schema;
  S.classes = sc.classes;
  S.palette.fill(0);
  for (const c of sc.classes) S.palette.set([...c.color, 255], c.id * 4);
  S.palette.set([255, 0, 255, 255], DIFF * 4);
  $("#dataset").textContent = `${S.info.dataset} · ${S.info.format} · ${S.info.n_images} images` +
    (S.info.writable ? "" : " · browse only");
  if (!S.user) S.user = S.info.user;
  $("#user").value = S.user;
  for (const s of S.info.splits) $("#f-split").add(new Option(s, s));
  for (const s of S.info.statuses) { $("#f-status").add(new Option(s, s)); $("#status").add(new Option(s, s)); }
  for (const c of S.classes) $("#f-class").add(new Option(`${c.id} ${c.name}`, c.id));
  if (S.info.has_table) $("#f-sort").value = "loss";
  $("#pred-box").hidden = !S.info.has_model;
  $("#git-box").hidden = !S.info.git;
  $("#branch").value = `label/${S.user}`;
  buildLegend();
  bindUI();
  await refreshList();
  const m = location.hash.match(/^#image=(.+)$/);
  if (m) {
    const name = decodeURIComponent(m[1]);
    const i = S.list.findIndex((it) => it.name === name);
    await openImage(i >= 0 ? i : 0, name);
  } else setView("grid");
}

function buildLegend() {
  const ul = $("#legend");
  ul.innerHTML = "";
  const rows = [...S.classes, { id: IGNORE, name: "unlabelled", color: [0, 0, 0] }];
  for (const c of rows) {
    const li = document.createElement("li");
    li.dataset.cls = c.id;
    const key = c.id === IGNORE ? "0" : c.id < 9 ? String(c.id + 1) : "";
    li.innerHTML = `<span class="key">${key}</span>` +
      (c.id === IGNORE ? `<span class="sw" style="background:repeating-linear-gradient(45deg,#222 0 3px,#555 3px 6px)"></span>`
        : `<input type="checkbox" checked title="show this class"><span class="sw" style="background:rgb(${c.color})"></span>`) +
      `<span class="name">${c.name}</span>`;
    li.addEventListener("click", (ev) => {
      if (ev.target.tagName === "INPUT") {
        if (ev.target.checked) S.hidden.delete(c.id); else S.hidden.add(c.id);
        li.classList.toggle("hidden-class", !ev.target.checked);
        onHiddenChanged();
      } else setClass(c.id);
    });
    ul.appendChild(li);
  }
  markClass();
}

// ------------------------------------------------------------------ views and list
function setView(v) {
  S.view = v;
  for (const sec of ["grid", "image", "queue"]) $(`#${sec}-view`).hidden = sec !== v;
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === v));
  if (v === "grid") { renderGrid(); if (location.hash) history.replaceState(null, "", location.pathname); }
  if (v === "queue") renderQueue();
  if (v === "image") { resizeCanvas(); if (!E.name && S.list.length) openImage(S.sel); }
}

async function refreshList() {
  const p = new URLSearchParams();
  for (const [k, id] of [["split", "#f-split"], ["status", "#f-status"], ["cls", "#f-class"], ["sort", "#f-sort"], ["q", "#f-q"]])
    if ($(id).value !== "") p.set(k, $(id).value);
  const data = await getJSON(`/api/images?${p}`);
  S.list = data.items;
  S.sel = Math.min(S.sel, Math.max(0, S.list.length - 1));
  $("#count").textContent = `${data.total} shown`;
  if (S.view === "grid") renderGrid();
}

function thumbUrl(it, kind) {
  const hide = [...S.hidden].join(",");
  return `/api/thumb?name=${q(it.name)}&kind=${kind}&v=${it.version}` + (kind === "mask" && hide ? `&hide=${hide}` : "");
}

function renderGrid() {
  const g = $("#grid");
  g.innerHTML = "";
  const n = Math.min(S.shown, S.list.length);
  for (let i = 0; i < n; i++) {
    const it = S.list[i];
    const card = document.createElement("div");
    card.className = "card" + (i === S.sel ? " sel" : "");
    card.dataset.i = i;
    const loss = it.loss == null ? "" : `<span title="model loss">loss ${it.loss.toFixed(3)}</span>`;
    card.innerHTML = `<div class="pic"><img loading="lazy" src="${thumbUrl(it, "image")}" alt="">` +
      (it.has_mask ? `<img class="mask" loading="lazy" src="${thumbUrl(it, "mask")}" alt="">` : "") + `</div>` +
      `<div class="meta"><span class="badge ${it.status}">${it.status.replace("_", " ")}</span>` +
      `<span class="n" title="${it.name}">${it.name}</span>${loss}<span class="muted">${it.split}</span></div>`;
    card.addEventListener("click", () => openImage(i));
    g.appendChild(card);
  }
  $("#more").hidden = n >= S.list.length;
  applyGridDisplay();
}

function applyGridDisplay() {
  document.querySelectorAll(".card img.mask").forEach((m) => {
    m.style.opacity = S.showMask ? S.opacity : 0;
  });
  document.querySelectorAll(".card img").forEach((m) => {
    m.style.filter = m.classList.contains("mask") ? "" : `brightness(${S.brightness}%) contrast(${S.contrast}%)`;
  });
}

function selectCard(i) {
  S.sel = Math.max(0, Math.min(S.list.length - 1, i));
  if (S.sel >= S.shown) { S.shown = S.sel + PAGE; renderGrid(); }
  document.querySelectorAll(".card").forEach((c) => c.classList.toggle("sel", +c.dataset.i === S.sel));
  document.querySelector(".card.sel")?.scrollIntoView({ block: "nearest" });
}

async function renderQueue() {
  const data = await getJSON("/api/queue");
  $("#counts").innerHTML = Object.entries(data.counts)
    .map(([k, v]) => `<span><span class="badge ${k}">${k.replace("_", " ")}</span> ${v}</span>`).join("");
  const tb = $("#queue tbody");
  tb.innerHTML = "";
  for (const r of data.records) {
    const tr = document.createElement("tr");
    const when = r.updated ? new Date(r.updated * 1000).toLocaleString() : "";
    tr.innerHTML = `<td>${r.name}</td><td><span class="badge ${r.status}">${r.status}</span></td><td>${r.holder || ""}</td>` +
      `<td>${r.priority ?? ""}</td><td>${r.version}</td><td>${r.n_comments}</td><td>${when}</td>`;
    tr.addEventListener("click", async () => {
      let i = S.list.findIndex((it) => it.name === r.name);
      if (i < 0) { for (const id of ["#f-split", "#f-status", "#f-class", "#f-q"]) $(id).value = ""; await refreshList(); i = S.list.findIndex((it) => it.name === r.name); }
      openImage(Math.max(0, i));
    });
    tb.appendChild(tr);
  }
}

// ------------------------------------------------------------------ editor state
const E = {
  name: null, w: 0, h: 0, mask: null, version: 0, img: null,
  layers: {}, // name -> {arr, canvas, ctx, data}
  pred: null, prev: null, prevVersion: null, viewing: null, predMode: "off",
  tool: "brush", cls: 0, size: 8, undo: [], redo: [], dirty: false,
  zoom: 1, panX: 0, panY: 0, poly: [], drag: null, stroke: null, mouse: null, region: null,
};
const canvas = $("#canvas"), side = $("#side");

function setClass(id) { E.cls = id; markClass(); if (E.tool === "eraser" && id !== IGNORE) setTool("brush"); }
function markClass() {
  document.querySelectorAll("#legend li").forEach((li) => li.classList.toggle("current", +li.dataset.cls === E.cls));
}
function setTool(t) {
  if (E.tool === "polygon" && t !== "polygon" && E.poly.length) E.poly = [];
  E.tool = t;
  document.querySelectorAll("[data-tool]").forEach((b) => b.classList.toggle("active", b.dataset.tool === t));
  canvas.style.cursor = t === "pan" ? "grab" : "crosshair";
  render();
}

function layer(name, arr) {
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
function paintLayer(L, box = null) {
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

function diffArray() {
  const d = new Uint8Array(E.w * E.h).fill(IGNORE);
  for (let i = 0; i < d.length; i++) if (E.pred[i] !== E.mask[i]) d[i] = DIFF;
  return d;
}

// Which ids the main canvas overlays: the mask being edited, unless a read-only view is on.
function overlayLayer() {
  if (E.viewing != null && E.prev) return E.layers.prev;
  if (E.pred && E.predMode === "over") return E.layers.pred;
  if (E.pred && E.predMode === "diff") return layer("diff", diffArray());
  return E.layers.mask;
}

function onHiddenChanged() {
  for (const L of Object.values(E.layers)) if (L.arr) paintLayer(L);
  render();
  if (S.view === "grid") renderGrid();
}

// ------------------------------------------------------------------ open / save
async function openImage(i, name = null) {
  if (E.dirty && !confirm(`Unsaved changes to ${E.name}. Discard them?`)) return;
  if (!S.list.length && !name) return;
  S.sel = Math.max(0, Math.min(S.list.length - 1, i));
  name = name || S.list[S.sel].name;
  if (S.view !== "image") { S.view = "image"; for (const sec of ["grid", "image", "queue"]) $(`#${sec}-view`).hidden = sec !== "image"; }
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.view === "image"));
  history.replaceState(null, "", `#image=${q(name)}`);
  resizeCanvas();
  const [img, m] = await Promise.all([loadImage(`/api/image?name=${q(name)}`), fetchMask(`/api/mask?name=${q(name)}`)]);
  Object.assign(E, {
    name, img, w: m.w, h: m.h, mask: m.arr, version: m.version, undo: [], redo: [], dirty: false,
    pred: null, prev: null, viewing: null, poly: [], region: null,
  });
  E.layers = {};
  layer("mask", E.mask);
  $("#image-title").textContent = name;
  if (m.bad) toast(`${m.bad} pixels of the stored mask are not a class colour; shown as unlabelled`, true);
  fit();
  updateSaveState();
  loadReview();
  loadHistory();
  if (S.info.has_model && E.predMode !== "off") loadPred();
  canvas.focus();
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => resolve(im);
    im.onerror = () => reject(new Error(`cannot load ${src}`));
    im.src = src;
  });
}

async function fetchMask(url) {
  const r = await api(url);
  const arr = new Uint8Array(await r.arrayBuffer());
  return {
    arr, w: +r.headers.get("X-Width"), h: +r.headers.get("X-Height"),
    version: +r.headers.get("X-Version"), bad: +r.headers.get("X-Bad-Pixels") || 0,
  };
}

async function gzip(bytes) {
  if (!window.CompressionStream) return { body: bytes, enc: null };
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip"));
  return { body: await new Response(stream).arrayBuffer(), enc: "gzip" };
}

async function save() {
  if (!E.name || !S.info.writable) return;
  if (E.poly.length >= 3) applyPolygon();
  const { body, enc } = await gzip(E.mask);
  const headers = { "Content-Type": "application/octet-stream" };
  if (enc) headers["X-Mask-Encoding"] = enc;
  try {
    const r = await (await api(`/api/mask?name=${q(E.name)}&version=${E.version}`, { method: "POST", body, headers })).json();
    E.version = r.version; E.dirty = false;
    hideBanner();
    toast(`saved ${E.name} as version ${r.version}`);
    const it = S.list.find((x) => x.name === E.name);
    if (it) { it.version = r.version; it.has_mask = true; if (it.status === "unlabelled") it.status = "in_progress"; }
    loadHistory(); loadReview();
  } catch (e) {
    if (e.status === 409) showBanner(`Not saved: ${e.message}`, "Load their version", () => { E.dirty = false; openImage(S.sel, E.name); });
    else toast(`not saved: ${e.message}`, true);
  }
  updateSaveState();
}

function showBanner(msg, action, fn) {
  const b = $("#banner");
  b.innerHTML = "";
  b.append(msg);
  const btn = document.createElement("button");
  btn.textContent = action; btn.onclick = fn;
  const close = document.createElement("button");
  close.textContent = "Keep editing"; close.onclick = hideBanner;
  b.append(btn, close);
  b.hidden = false;
}
function hideBanner() { $("#banner").hidden = true; }

function updateSaveState() {
  $("#save-state").textContent = `v${E.version}` + (E.dirty ? " · unsaved" : "") + (E.undo.length ? ` · ${E.undo.length} steps` : "");
  $("#save").disabled = !S.info?.writable;
}

// ------------------------------------------------------------------ review and history
async function loadReview() {
  const r = await getJSON(`/api/review?name=${q(E.name)}`);
  $("#status").value = r.status;
  const bits = [r.holder ? `held by ${r.holder}` : "nobody holds it"];
  if (r.priority != null) bits.push(`priority ${r.priority}`);
  $("#review-info").textContent = bits.join(" · ");
  const ul = $("#comments");
  ul.innerHTML = "";
  for (const c of r.comments) {
    const li = document.createElement("li");
    li.textContent = `${c.user || "?"}: ${c.text}`;
    ul.appendChild(li);
  }
  // A suspect region from the data engine: [x0, y0, x1, y1] or {box: [...]}.
  const box = Array.isArray(r.region) ? r.region : r.region?.box;
  E.region = Array.isArray(box) && box.length === 4 ? box.map(Number) : null;
  render();
}

async function setStatus(status, comment = null) {
  await postJSON("/api/review", { name: E.name, status, comment, user: S.user });
  const it = S.list.find((x) => x.name === E.name);
  if (it) it.status = status;
  loadReview();
}

async function loadHistory() {
  const h = await getJSON(`/api/history?name=${q(E.name)}`);
  const ul = $("#history");
  ul.innerHTML = "";
  for (const v of h.versions) {
    const li = document.createElement("li");
    if (E.viewing === v.version) li.className = "viewing";
    const when = v.time ? new Date(v.time * 1000).toLocaleString() : "original";
    li.innerHTML = `<span>v${v.version}${v.current ? " (current)" : ""}</span><span class="muted">${v.user || ""} ${when}</span>`;
    if (!v.current) {
      const view = document.createElement("button");
      view.textContent = E.viewing === v.version ? "hide" : "view";
      view.onclick = () => viewVersion(E.viewing === v.version ? null : v.version);
      const rest = document.createElement("button");
      rest.textContent = "restore";
      rest.onclick = () => restoreVersion(v.version);
      li.append(view, rest);
    }
    ul.appendChild(li);
  }
  E.history = h.versions;
}

async function viewVersion(version) {
  if (version == null) { E.viewing = null; render(); loadHistory(); return; }
  const m = await fetchMask(`/api/mask?name=${q(E.name)}&version=${version}`);
  E.prev = m.arr; E.viewing = version;
  layer("prev", E.prev);
  render(); loadHistory();
}

function togglePrevious() {
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
    toast(`restored version ${version}`);
    openImage(S.sel, E.name);
  } catch (e) { toast(e.message, true); }
}

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

async function setPredMode(mode) {
  E.predMode = mode;
  $("#pred-mode").value = mode;
  side.hidden = mode !== "beside";
  resizeCanvas();
  if (mode !== "off") await loadPred();
  render();
}

async function startFromPrediction() {
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
function commit(before, box) {
  if (!box) return;
  E.undo.push({ box, before: crop(before, box), after: crop(E.mask, box) });
  E.redo = [];
  let bytes = E.undo.reduce((s, op) => s + 2 * op.before.length, 0);
  while (bytes > UNDO_BYTES && E.undo.length > 1) bytes -= 2 * E.undo.shift().before.length;
  E.dirty = true;
  afterEdit(box);
}
function afterEdit(box) {
  paintLayer(E.layers.mask, box);
  if (E.predMode === "diff" && E.pred) layer("diff", diffArray());
  updateSaveState();
  render();
}
function undo() {
  const op = E.undo.pop();
  if (!op) return;
  paste(E.mask, op.box, op.before);
  E.redo.push(op); E.dirty = true;
  afterEdit(op.box);
}
function redo() {
  const op = E.redo.pop();
  if (!op) return;
  paste(E.mask, op.box, op.after);
  E.undo.push(op); E.dirty = true;
  afterEdit(op.box);
}

// ------------------------------------------------------------------ view transform
function resizeCanvas() {
  const dpr = window.devicePixelRatio || 1;
  for (const c of [canvas, side]) {
    if (c.hidden) continue;
    const r = c.getBoundingClientRect();
    c.width = Math.max(1, Math.round(r.width * dpr));
    c.height = Math.max(1, Math.round(r.height * dpr));
  }
  render();
}
// The transform maps image pixels to canvas device pixels, so zoom never depends on browser
// zoom or devicePixelRatio; pointer positions are mapped back through the same numbers.
function fit() {
  if (!E.w) return;
  const z = Math.min(canvas.width / E.w, canvas.height / E.h) * 0.96;
  E.zoom = z;
  E.panX = (canvas.width - E.w * z) / 2;
  E.panY = (canvas.height - E.h * z) / 2;
  render();
}
function zoomAt(factor, cx = canvas.width / 2, cy = canvas.height / 2) {
  const z = Math.min(64, Math.max(0.05, E.zoom * factor));
  E.panX = cx - (cx - E.panX) * (z / E.zoom);
  E.panY = cy - (cy - E.panY) * (z / E.zoom);
  E.zoom = z;
  render();
}
function toCanvas(ev) {
  const r = canvas.getBoundingClientRect();
  return { x: (ev.clientX - r.left) * (canvas.width / r.width), y: (ev.clientY - r.top) * (canvas.height / r.height) };
}
function toImage(ev) {
  const c = toCanvas(ev);
  return { x: (c.x - E.panX) / E.zoom, y: (c.y - E.panY) / E.zoom };
}
// For tests and scripts: client (CSS pixel) position of an image point.
function imageToClient(x, y) {
  const r = canvas.getBoundingClientRect();
  return { x: r.left + (x * E.zoom + E.panX) * (r.width / canvas.width), y: r.top + (y * E.zoom + E.panY) * (r.height / canvas.height) };
}

// ------------------------------------------------------------------ render
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
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  return ctx;
}

function render() {
  if (S.view !== "image") return;
  const ctx = drawScene(canvas, overlayLayer());
  if (!E.img) return;
  const P = (x, y) => [x * E.zoom + E.panX, y * E.zoom + E.panY];
  if (E.region) {
    const [a, b] = [P(E.region[0], E.region[1]), P(E.region[2], E.region[3])];
    ctx.setLineDash([6, 4]); ctx.strokeStyle = "#ffdd00"; ctx.lineWidth = 2;
    ctx.strokeRect(a[0], a[1], b[0] - a[0], b[1] - a[1]); ctx.setLineDash([]);
  }
  if (E.poly.length) {
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 1.5; ctx.beginPath();
    E.poly.forEach((v, i) => { const [x, y] = P(v.x, v.y); if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y); });
    if (E.mouse && E.tool === "polygon" && !E.drag) { const [x, y] = P(E.mouse.x, E.mouse.y); ctx.lineTo(x, y); }
    ctx.closePath(); ctx.stroke();
    for (const v of E.poly) { const [x, y] = P(v.x, v.y); ctx.fillStyle = "#fff"; ctx.fillRect(x - 4, y - 4, 8, 8); ctx.strokeStyle = "#000"; ctx.strokeRect(x - 4, y - 4, 8, 8); }
  }
  if (E.mouse && (E.tool === "brush" || E.tool === "eraser")) {
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
      at = ` · (${x}, ${y}) ${v === IGNORE ? "unlabelled" : S.classes[v]?.name}`;
    }
  }
  $("#hud").textContent = `${E.w}x${E.h} · zoom ${(E.zoom * 100).toFixed(0)}% (device px)${at}${pred}${viewing}`;
}

// ------------------------------------------------------------------ pointer tools
function pixel(p) { return { x: Math.floor(p.x), y: Math.floor(p.y) }; }
function inside(p) { return p.x >= 0 && p.y >= 0 && p.x < E.w && p.y < E.h; }
let spaceDown = false;

function editable() {
  if (E.viewing != null) { toast("viewing an old version (read only): press v to go back"); return false; }
  return !!E.mask;
}

canvas.addEventListener("pointerdown", (ev) => {
  if (!E.mask) return;
  canvas.focus();
  canvas.setPointerCapture(ev.pointerId);
  const p = toImage(ev), px = pixel(p);
  if (ev.button === 1 || ev.button === 2 || spaceDown || E.tool === "pan") {
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
});

canvas.addEventListener("pointermove", (ev) => {
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
});

function endPointer() {
  if (E.stroke) { const s = E.stroke; E.stroke = null; commit(s.before, s.box); }
  if (E.drag?.pan) canvas.style.cursor = E.tool === "pan" ? "grab" : "crosshair";
  E.drag = null;
  render();
}
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

function nearVertex(ev) {
  const c = toCanvas(ev), tol = 7 * (window.devicePixelRatio || 1);
  return E.poly.findIndex((v) => Math.hypot(v.x * E.zoom + E.panX - c.x, v.y * E.zoom + E.panY - c.y) <= tol);
}

function applyPolygon() {
  if (E.poly.length < 3 || !editable()) return;
  const before = E.mask.slice();
  const box = R.fillPolygon(E.mask, E.w, E.h, E.poly, E.cls);
  E.poly = [];
  commit(before, box);
}

// ------------------------------------------------------------------ display settings
function setOpacity(v) {
  S.opacity = Math.max(0, Math.min(1, v));
  $("#opacity").value = Math.round(S.opacity * 100);
  $("#opacity-val").textContent = `${Math.round(S.opacity * 100)}%`;
  applyGridDisplay(); render();
}
function setShowMask(v) { S.showMask = v; $("#show-mask").checked = v; applyGridDisplay(); render(); }
function setBC(b, c) {
  S.brightness = Math.max(20, Math.min(300, b)); S.contrast = Math.max(20, Math.min(300, c));
  $("#brightness").value = S.brightness; $("#contrast").value = S.contrast;
  applyGridDisplay(); render();
}
function setPixelated(v) { S.pixelated = v; $("#pixelated").checked = v; render(); }
function setSize(v) { E.size = Math.max(1, Math.min(100, v)); $("#size").value = E.size; $("#size-val").textContent = `${E.size} px`; render(); }

// ------------------------------------------------------------------ bindings
function bindUI() {
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => setView(b.dataset.view)));
  for (const id of ["#f-split", "#f-status", "#f-class", "#f-sort"]) $(id).addEventListener("change", () => { S.sel = 0; refreshList(); });
  $("#f-q").addEventListener("input", () => { S.sel = 0; refreshList(); });
  $("#user").addEventListener("change", () => { S.user = $("#user").value.trim(); localStorage.setItem("drivelab.user", S.user); });
  $("#opacity").addEventListener("input", (e) => setOpacity(e.target.value / 100));
  $("#show-mask").addEventListener("change", (e) => setShowMask(e.target.checked));
  $("#brightness").addEventListener("input", (e) => setBC(+e.target.value, S.contrast));
  $("#contrast").addEventListener("input", (e) => setBC(S.brightness, +e.target.value));
  $("#pixelated").addEventListener("change", (e) => setPixelated(e.target.checked));
  $("#size").addEventListener("input", (e) => setSize(+e.target.value));
  document.querySelectorAll("[data-tool]").forEach((b) => b.addEventListener("click", () => setTool(b.dataset.tool)));
  $("#undo").onclick = undo; $("#redo").onclick = redo;
  $("#zoom-fit").onclick = fit;
  $("#zoom-1").onclick = () => zoomAt(1 / E.zoom);
  $("#save").onclick = save;
  $("#more").onclick = () => { S.shown += PAGE; renderGrid(); };
  $("#pred-mode").addEventListener("change", (e) => setPredMode(e.target.value));
  $("#from-pred").onclick = startFromPrediction;
  $("#status").addEventListener("change", (e) => setStatus(e.target.value));
  $("#take").onclick = () => setStatus("in_progress");
  $("#add-comment").onclick = async () => {
    const text = $("#comment").value.trim();
    if (!text) return;
    await postJSON("/api/review", { name: E.name, comment: text, user: S.user });
    $("#comment").value = ""; loadReview();
  };
  $("#commit").onclick = async () => {
    try {
      const r = await postJSON("/api/commit", { branch: $("#branch").value.trim(), user: S.user });
      toast(`committed ${r.files.length} masks to ${r.branch} (${r.commit.slice(0, 8)})`);
    } catch (e) { toast(e.message, true); }
  };
  window.addEventListener("resize", resizeCanvas);
  window.addEventListener("beforeunload", (ev) => { if (E.dirty) { ev.preventDefault(); ev.returnValue = ""; } });
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (ev) => { if (ev.key === " ") spaceDown = false; });
  setOpacity(S.opacity); setSize(E.size); setTool("brush");
}

function onKey(ev) {
  const t = ev.target;
  if (t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox" || t.tagName === "TEXTAREA") return;
  if (t.tagName === "SELECT") return;
  const k = ev.key, ctrl = ev.ctrlKey || ev.metaKey;
  const handled = S.view === "grid" ? gridKey(k, ev) : S.view === "image" ? imageKey(k, ev, ctrl) : false;
  if (handled) ev.preventDefault();
}

function gridKey(k, ev) {
  const cols = Math.max(1, getComputedStyle($("#grid")).gridTemplateColumns.split(" ").length);
  if (k === "ArrowRight") selectCard(S.sel + 1);
  else if (k === "ArrowLeft") selectCard(S.sel - 1);
  else if (k === "ArrowDown" && !ev.shiftKey) selectCard(S.sel + cols);
  else if (k === "ArrowUp" && !ev.shiftKey) selectCard(S.sel - cols);
  else if (k === "Enter") openImage(S.sel);
  else if (k === "m") setShowMask(!S.showMask);
  else if (k === "+" || k === "=") setOpacity(S.opacity + 0.1);
  else if (k === "-") setOpacity(S.opacity - 0.1);
  else return false;
  return true;
}

function imageKey(k, ev, ctrl) {
  if (ctrl && (k === "z" || k === "Z")) { ev.shiftKey ? redo() : undo(); return true; }
  if (ctrl && (k === "y" || k === "Y")) { redo(); return true; }
  if (ctrl && (k === "s" || k === "S")) { save(); return true; }
  if (ctrl) return false;
  if (ev.shiftKey && k === "ArrowUp") setBC(S.brightness + 10, S.contrast);
  else if (ev.shiftKey && k === "ArrowDown") setBC(S.brightness - 10, S.contrast);
  else if (ev.shiftKey && k === "ArrowRight") setBC(S.brightness, S.contrast + 10);
  else if (ev.shiftKey && k === "ArrowLeft") setBC(S.brightness, S.contrast - 10);
  else if (k === "ArrowRight") { if (S.sel < S.list.length - 1) openImage(S.sel + 1); }
  else if (k === "ArrowLeft") { if (S.sel > 0) openImage(S.sel - 1); }
  else if (k === "ArrowUp") setOpacity(S.opacity + 0.1);
  else if (k === "ArrowDown") setOpacity(S.opacity - 0.1);
  else if (k === "m") setShowMask(!S.showMask);
  else if (/^[1-9]$/.test(k) && +k - 1 < S.classes.length) setClass(+k - 1);
  else if (k === "0" || k === "`") { setClass(IGNORE); setTool("eraser"); }
  else if (k === "d" || k === "b") setTool("brush");
  else if (k === "e") setTool("eraser");
  else if (k === "f") setTool("fill");
  else if (k === "g") setTool("polygon");
  else if (k === "i") { E.prevTool = E.tool; setTool("picker"); }
  else if (k === "h") setTool("pan");
  else if (k === "[") setSize(E.size - (E.size > 10 ? 2 : 1));
  else if (k === "]") setSize(E.size + (E.size >= 10 ? 2 : 1));
  else if (k === "=" || k === "+") zoomAt(1.25);
  else if (k === "-") zoomAt(0.8);
  else if (k === "r") fit();
  else if (k === "o") zoomAt(1 / E.zoom);
  else if (k === "x") setPixelated(!S.pixelated);
  else if (k === "v") togglePrevious();
  else if (k === "p" && S.info.has_model) {
    const modes = ["off", "over", "beside", "diff"];
    setPredMode(modes[(modes.indexOf(E.predMode) + 1) % modes.length]);
  } else if (k === "Enter") applyPolygon();
  else if (k === "Escape") { E.poly = []; hideBanner(); render(); }
  else if (k === "Backspace") { E.poly.pop(); render(); }
  else if (k === " ") spaceDown = true;
  else return false;
  return true;
}

// For tests, scripts and the browser console.
window.labelApp = { S, E, imageToClient, openImage, save, setTool, setClass, setSize, fit, zoomAt, undo, redo };

init().catch((e) => toast(`failed to start: ${e.message}`, true));
