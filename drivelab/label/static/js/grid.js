// The image list (filtered, sorted and paged on the server), the grid of thumbnails and the
// review queue. Thumbnails are fetched with the page's credentials and shown as blob URLs once a
// card scrolls into view.

import { blob, getJSON, q } from "./api.js";
import { $, $$, badge, download, el, toast } from "./dom.js";
import { actions, PAGE, S } from "./state.js";

const FILTERS = [["split", "#f-split"], ["status", "#f-status"], ["cls", "#f-class"], ["sort", "#f-sort"], ["q", "#f-q"]];
let listToken = 0;

function params(offset) {
  const p = new URLSearchParams();
  for (const [k, id] of FILTERS) if ($(id).value !== "") p.set(k, $(id).value);
  p.set("offset", offset); p.set("limit", PAGE);
  return p;
}

// Reload the list from its first page (filters changed, or after a refresh).
export async function refreshList() {
  const token = ++listToken;
  const data = await getJSON(`/api/images?${params(0)}`);
  if (token !== listToken) return; // a newer filter change won
  S.list = data.items; S.total = data.total; S.totalExact = data.total_exact;
  S.sel = Math.min(S.sel, Math.max(0, S.list.length - 1));
  showCount();
  if (S.view === "grid") renderGrid();
}

export async function loadMore() {
  if (!hasMore()) return false;
  const token = listToken;
  const data = await getJSON(`/api/images?${params(S.list.length)}`);
  if (token !== listToken) return false;
  S.list.push(...data.items); S.total = Math.max(data.total, S.list.length); S.totalExact = data.total_exact;
  showCount();
  return data.items.length > 0;
}

export const hasMore = () => S.list.length < S.total || !S.totalExact;

// Make sure row i is loaded (keyboard navigation past the loaded pages).
export async function ensureRow(i) {
  while (i >= S.list.length && hasMore()) if (!(await loadMore())) break;
  return i < S.list.length;
}

function showCount() {
  $("#count").textContent = `${S.total}${S.totalExact ? "" : "+"} shown`;
}

export function thumbUrl(it, kind) {
  const hide = [...S.hidden].join(",");
  return `/api/thumb?name=${q(it.name)}&kind=${kind}&v=${it.version}` + (kind === "mask" && hide ? `&hide=${hide}` : "");
}

let urls = [];
const observer = new IntersectionObserver((entries) => {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    observer.unobserve(e.target);
    for (const img of e.target.querySelectorAll("img[data-src]")) {
      const src = img.dataset.src;
      delete img.dataset.src;
      blob(src).then((b) => { const u = URL.createObjectURL(b); urls.push(u); img.src = u; }).catch(() => img.classList.add("broken"));
    }
  }
}, { rootMargin: "400px" });

export function renderGrid() {
  for (const u of urls) URL.revokeObjectURL(u);
  urls = [];
  observer.disconnect();
  const g = $("#grid");
  const cards = S.list.map((it, i) => {
    const pic = el("div", { className: "pic" }, el("img", { alt: "", dataset: { src: thumbUrl(it, "image") } }));
    if (it.has_mask) pic.append(el("img", { className: "mask", alt: "", dataset: { src: thumbUrl(it, "mask") } }));
    const meta = el("div", { className: "meta" }, badge(it.status, S.info.statuses),
      el("span", { className: "n", title: it.name }, it.name),
      it.loss == null ? null : el("span", { title: "model loss" }, `loss ${it.loss.toFixed(3)}`),
      el("span", { className: "muted" }, it.split));
    const card = el("div", { className: "card" + (i === S.sel ? " sel" : ""), dataset: { i } }, pic, meta);
    card.addEventListener("click", () => actions.openImage(i));
    return card;
  });
  g.replaceChildren(...cards);
  for (const c of cards) observer.observe(c);
  $("#more").hidden = !hasMore();
  applyGridDisplay();
}

export function applyGridDisplay() {
  $$(".card img.mask").forEach((m) => { m.style.opacity = S.showMask ? S.opacity : 0; });
  $$(".card img:not(.mask)").forEach((m) => { m.style.filter = `brightness(${S.brightness}%) contrast(${S.contrast}%)`; });
}

export async function selectCard(i) {
  if (i >= S.list.length && (await ensureRow(i))) renderGrid();
  S.sel = Math.max(0, Math.min(S.list.length - 1, i));
  $$(".card").forEach((c) => c.classList.toggle("sel", +c.dataset.i === S.sel));
  document.querySelector(".card.sel")?.scrollIntoView({ block: "nearest" });
}

export async function showMore() {
  if (await loadMore()) renderGrid();
}

// The list row of an image after a save or a status change (so the grid shows it at once).
export function noteSaved(name, version) {
  const it = S.list.find((x) => x.name === name);
  if (it) { it.version = version; it.has_mask = true; if (it.status === "unlabelled") it.status = "in_progress"; }
}
export function noteStatus(name, status) {
  const it = S.list.find((x) => x.name === name);
  if (it) it.status = status;
}

export async function renderQueue() {
  const data = await getJSON("/api/queue");
  $("#counts").replaceChildren(...Object.entries(data.counts).map(([k, v]) =>
    el("span", {}, badge(k, S.info.statuses), ` ${v}`)));
  const rows = data.records.map((r) => {
    const when = r.updated ? new Date(r.updated * 1000).toLocaleString() : "";
    const tr = el("tr", {}, el("td", {}, r.name), el("td", {}, badge(r.status, S.info.statuses)),
      el("td", {}, r.holder || ""), el("td", {}, r.priority ?? ""), el("td", {}, r.version),
      el("td", {}, r.n_comments), el("td", {}, when));
    tr.addEventListener("click", async () => {
      let i = S.list.findIndex((it) => it.name === r.name);
      if (i < 0) {
        for (const id of ["#f-split", "#f-status", "#f-class", "#f-q"]) $(id).value = "";
        $("#f-q").value = r.name;
        await refreshList();
        i = S.list.findIndex((it) => it.name === r.name);
      }
      actions.openImage(Math.max(0, i), r.name);
    });
    return tr;
  });
  $("#queue tbody").replaceChildren(...rows);
}

export async function exportChanged(format) {
  try {
    const b = await blob(`/api/changed?format=${format}`);
    download(b, format === "csv" ? "changed_masks.csv" : "changed_masks.txt");
  } catch (e) { toast(e.message, true); }
}
