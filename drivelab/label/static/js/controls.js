// The legend (searchable class picker, two-key shortcuts, per-class locks for "protect classes"),
// display settings (opacity, brightness, contrast, pixelated) and the keyboard.

import * as A from "./assist.js";
import { $, $$, el, toast } from "./dom.js";
import * as ed from "./editor.js";
import { applyGridDisplay, ensureRow, renderGrid, selectCard } from "./grid.js";
import * as inst from "./instances.js";
import { E, IGNORE, S } from "./state.js";
import { applyCut, keys } from "./tools.js";
import { fit, paintLayer, render, zoomAt } from "./view.js";

// Keyed classes: semantic key k picks class k-1 (0 = unlabelled); instance key k picks category k.
function keyed() {
  if (inst.active()) return S.classes.filter((c) => c.id > 0).map((c) => ({ ...c, key: c.id }));
  return S.classes.map((c) => ({ ...c, key: c.id + 1 }));
}

export function buildLegend() {
  const rows = [...keyed(), ...(inst.active() ? [] : [{ id: IGNORE, name: "unlabelled", color: null, key: 0 }])];
  $("#legend").replaceChildren(...rows.map((c) => {
    const li = el("li", { dataset: { cls: c.id, key: c.key, name: c.name.toLowerCase() } }, el("span", { className: "key" }, String(c.key)));
    if (c.color) {
      const box = el("input", { type: "checkbox", checked: !S.hidden.has(c.id), title: "show this class", className: "show" });
      li.append(box, el("span", { className: "sw", style: { background: `rgb(${c.color.join(",")})` } }));
    } else li.append(el("span", { className: "sw unlabelled" }));
    li.append(el("span", { className: "name" }, c.name));
    if (c.color && !inst.active()) {
      li.append(el("input", { type: "checkbox", className: "lock", checked: S.locked.has(c.id), title: "protect: never paint over this class (l)" }));
    }
    li.addEventListener("click", (ev) => {
      if (ev.target.classList.contains("show")) {
        if (ev.target.checked) S.hidden.delete(c.id); else S.hidden.add(c.id);
        li.classList.toggle("hidden-class", !ev.target.checked);
        onHiddenChanged();
      } else if (ev.target.classList.contains("lock")) setLocked(c.id, ev.target.checked);
      else ed.setClass(c.id);
    });
    return li;
  }));
  $("#legend-hint").textContent = inst.active() ? "(category of new objects)" : rows.length > 10 ? "(two keys: 1 then 2 = 12; 0 = unlabelled)" : "(1-9, 0 = unlabelled)";
  ed.markClass();
}

export function setLocked(id, on) {
  if (on) S.locked.add(id); else S.locked.delete(id);
  const box = $(`#legend li[data-cls="${id}"] input.lock`);
  if (box) box.checked = on;
  $$("#legend li").forEach((li) => li.classList.toggle("locked", S.locked.has(+li.dataset.cls)));
  ed.updatePreview(); render();
}

export function setProtect(mode) {
  S.protect = mode;
  $("#protect").value = mode;
  ed.updatePreview(); render();
}

function filterLegend(text) {
  const t = text.trim().toLowerCase();
  $$("#legend li").forEach((li) => { li.hidden = !!t && !(li.dataset.name.includes(t) || li.dataset.key === t); });
}

function onHiddenChanged() {
  for (const L of Object.values(E.layers)) if (L.arr) paintLayer(L);
  render();
  if (S.view === "grid") renderGrid();
}

export function setOpacity(v) {
  S.opacity = Math.max(0, Math.min(1, v));
  $("#opacity").value = Math.round(S.opacity * 100);
  $("#opacity-val").textContent = `${Math.round(S.opacity * 100)}%`;
  applyGridDisplay(); render();
}
export function setShowMask(v) { S.showMask = v; $("#show-mask").checked = v; applyGridDisplay(); render(); }
export function setBC(b, c) {
  S.brightness = Math.max(20, Math.min(300, b)); S.contrast = Math.max(20, Math.min(300, c));
  $("#brightness").value = S.brightness; $("#contrast").value = S.contrast;
  applyGridDisplay(); render();
}
export function setPixelated(v) { S.pixelated = v; $("#pixelated").checked = v; render(); }
export function setSize(v) { E.size = Math.max(1, Math.min(100, v)); $("#size").value = E.size; $("#size-val").textContent = `${E.size} px`; render(); }

async function step(delta) {
  const i = S.sel + delta;
  if (i < 0) return;
  if (await ensureRow(i)) ed.openImage(i);
}

// Digits pick classes; with ten or more keyed classes a second digit within 0.7 s makes a two-digit
// key (1 then 2: class 12). The first digit acts at once, so single keys stay instant.
const digits = { first: null, timer: null };
function pickKey(k) {
  const c = keyed().find((x) => x.key === k);
  if (c) ed.setClass(c.id);
  return !!c;
}
function digit(d) {
  const n = keyed().length;
  if (digits.first != null) {
    const two = digits.first * 10 + d;
    clearTimeout(digits.timer);
    digits.first = null;
    if (two <= n && pickKey(two)) return;
  }
  if (d === 0 && !inst.active()) { ed.setClass(IGNORE); ed.setTool("eraser"); return; }
  pickKey(d);
  if (n >= 10 && d > 0 && d * 10 <= n) {
    digits.first = d;
    digits.timer = setTimeout(() => { digits.first = null; }, 700);
  }
}

function gridKey(k, ev) {
  const cols = Math.max(1, getComputedStyle($("#grid")).gridTemplateColumns.split(" ").length);
  if (k === "ArrowRight") selectCard(S.sel + 1);
  else if (k === "ArrowLeft") selectCard(S.sel - 1);
  else if (k === "ArrowDown" && !ev.shiftKey) selectCard(S.sel + cols);
  else if (k === "ArrowUp" && !ev.shiftKey) selectCard(S.sel - cols);
  else if (k === "Enter") ed.openImage(S.sel);
  else if (k === "m") setShowMask(!S.showMask);
  else if (k === "+" || k === "=") setOpacity(S.opacity + 0.1);
  else if (k === "-") setOpacity(S.opacity - 0.1);
  else return false;
  return true;
}

function cycleObject(d) {
  const n = inst.I.objects.length;
  if (!n) return;
  const cur = inst.I.sel < 0 ? (d > 0 ? -1 : n) : inst.I.sel;
  inst.select((cur + d + n) % n);
}

function enter(ev) {
  const objects = inst.active();
  if (E.tool === "cut" && applyCut()) return;
  if (A.A.prop && A.acceptProposal(ev.shiftKey)) return;
  if (objects && E.poly.length >= 3) {
    if (ev.shiftKey) { inst.applyPolygon(E.poly, "hole"); E.poly = []; render(); } else ed.closePolygon();
    return;
  }
  ed.applyPolygon();
}

function escape() {
  if (A.dropProposal()) return;
  if (E.cut.length) { E.cut = []; render(); return; }
  if (inst.active() && inst.cancel()) return;
  if (ed.dropPolygon()) return;
  if (!$("#banner").hidden) { $("#banner").hidden = true; return; }
  if (inst.active() && inst.I.sel >= 0) inst.select(-1);
  E.flash = null; render();
}

function imageKey(k, ev, ctrl) {
  const objects = inst.active();
  if (ctrl && (k === "z" || k === "Z")) { ev.shiftKey ? ed.redo() : ed.undo(); return true; }
  if (ctrl && (k === "y" || k === "Y")) { ed.redo(); return true; }
  if (ctrl && (k === "s" || k === "S")) { ed.save(); return true; }
  if (ctrl) return false;
  if (ev.shiftKey && k === "ArrowUp") setBC(S.brightness + 10, S.contrast);
  else if (ev.shiftKey && k === "ArrowDown") setBC(S.brightness - 10, S.contrast);
  else if (ev.shiftKey && k === "ArrowRight") setBC(S.brightness, S.contrast + 10);
  else if (ev.shiftKey && k === "ArrowLeft") setBC(S.brightness, S.contrast - 10);
  else if (k === "ArrowRight") step(1);
  else if (k === "ArrowLeft") step(-1);
  else if (k === "ArrowUp") setOpacity(S.opacity + 0.1);
  else if (k === "ArrowDown") setOpacity(S.opacity - 0.1);
  else if (k === "m") setShowMask(!S.showMask);
  else if (/^[0-9]$/.test(k)) digit(+k);
  else if (k === "`" && !objects) { ed.setClass(IGNORE); ed.setTool("eraser"); }
  else if (k === "/") { $("#class-search").focus(); }
  else if (k === "d" || k === "b") ed.setTool("brush");
  else if (k === "e") ed.setTool("eraser");
  else if (k === "f") ed.setTool("fill");
  else if (k === "g") ed.setTool("polygon");
  else if (k === "i") { E.prevTool = E.tool; ed.setTool("picker"); }
  else if (k === "h") ed.setTool("pan");
  else if (k === "w") ed.setTool("wand");
  else if (k === "s") ed.setTool("superpixel");
  else if (k === "q") ed.setTool("grabcut");
  else if (k === "a" && S.info.has_model) ed.setTool("assist");
  else if (k === "t" && S.info.has_sam) ed.setTool("sam");
  else if (k === "c" && objects) ed.setTool("cut");
  else if (k === "j" && objects) inst.startMerge();
  else if ((k === "Delete") && objects) inst.remove();
  else if (k === "Tab" && objects) cycleObject(ev.shiftKey ? -1 : 1);
  else if (k === "PageUp" && objects) inst.move(inst.I.sel, +1);
  else if (k === "PageDown" && objects) inst.move(inst.I.sel, -1);
  else if (k === "u") ed.jumpUnlabelled();
  else if (k === "n") ed.nextImage();
  else if (k === "N") { const s = $("#next-want"); s.selectedIndex = (s.selectedIndex + 1) % s.options.length; toast(`n: next image ${s.options[s.selectedIndex].text}`); }
  else if (k === "l" && !objects && E.cls !== IGNORE) setLocked(E.cls, !S.locked.has(E.cls));
  else if (k === "L" && !objects) setProtect(S.protect === "unlabelled" ? "all" : "unlabelled");
  else if (k === "[") setSize(E.size - (E.size > 10 ? 2 : 1));
  else if (k === "]") setSize(E.size + (E.size >= 10 ? 2 : 1));
  else if (k === "=" || k === "+") zoomAt(1.25);
  else if (k === "-") zoomAt(0.8);
  else if (k === "r") fit();
  else if (k === "o") zoomAt(1 / E.zoom);
  else if (k === "x") setPixelated(!S.pixelated);
  else if (k === "v") ed.togglePrevious();
  else if (k === "p" && S.info.has_model) {
    const modes = ["off", "over", "beside", "diff"];
    ed.setPredMode(modes[(modes.indexOf(E.predMode) + 1) % modes.length]);
  } else if (k === "Enter") enter(ev);
  else if (k === "Escape") escape();
  else if (k === "Backspace") { if (E.tool === "cut") E.cut.pop(); else { E.poly.pop(); ed.updatePreview(); } render(); }
  else if (k === " ") keys.space = true;
  else return false;
  return true;
}

export function onKey(ev) {
  const t = ev.target;
  if ((t.tagName === "INPUT" && t.type !== "range" && t.type !== "checkbox") || t.tagName === "TEXTAREA") return;
  if (t.tagName === "SELECT") return;
  const k = ev.key, ctrl = ev.ctrlKey || ev.metaKey;
  const handled = S.view === "grid" ? gridKey(k, ev) : S.view === "image" ? imageKey(k, ev, ctrl) : false;
  if (handled) ev.preventDefault();
}

export function bindControls() {
  $("#opacity").addEventListener("input", (e) => setOpacity(e.target.value / 100));
  $("#show-mask").addEventListener("change", (e) => setShowMask(e.target.checked));
  $("#brightness").addEventListener("input", (e) => setBC(+e.target.value, S.contrast));
  $("#contrast").addEventListener("input", (e) => setBC(S.brightness, +e.target.value));
  $("#pixelated").addEventListener("change", (e) => setPixelated(e.target.checked));
  $("#size").addEventListener("input", (e) => setSize(+e.target.value));
  $("#protect").addEventListener("change", (e) => setProtect(e.target.value));
  const search = $("#class-search");
  search.addEventListener("input", () => filterLegend(search.value));
  search.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") {
      const first = [...$$("#legend li")].find((li) => !li.hidden);
      if (first) ed.setClass(+first.dataset.cls);
      search.value = ""; filterLegend(""); search.blur();
      ev.preventDefault();
    } else if (ev.key === "Escape") { search.value = ""; filterLegend(""); search.blur(); }
  });
  $("#next-go").onclick = () => ed.nextImage();
  $("#next-hole").onclick = () => ed.jumpUnlabelled();
  $$("[data-tool]").forEach((b) => b.addEventListener("click", () => ed.setTool(b.dataset.tool)));
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (ev) => { if (ev.key === " ") keys.space = false; });
  setOpacity(S.opacity); setSize(E.size); ed.setTool("brush");
}
