// The legend, display settings (opacity, brightness, contrast, pixelated) and the keyboard.

import { $, $$, el } from "./dom.js";
import * as ed from "./editor.js";
import { applyGridDisplay, ensureRow, renderGrid, selectCard } from "./grid.js";
import { E, IGNORE, S } from "./state.js";
import { keys } from "./tools.js";
import { fit, paintLayer, render, zoomAt } from "./view.js";

export function buildLegend() {
  const rows = [...S.classes, { id: IGNORE, name: "unlabelled", color: null }];
  $("#legend").replaceChildren(...rows.map((c) => {
    const key = c.id === IGNORE ? "0" : c.id < 9 ? String(c.id + 1) : "";
    const li = el("li", { dataset: { cls: c.id } }, el("span", { className: "key" }, key));
    if (c.color) {
      const box = el("input", { type: "checkbox", checked: !S.hidden.has(c.id), title: "show this class" });
      li.append(box, el("span", { className: "sw", style: { background: `rgb(${c.color.join(",")})` } }));
    } else li.append(el("span", { className: "sw unlabelled" }));
    li.append(el("span", { className: "name" }, c.name));
    li.addEventListener("click", (ev) => {
      if (ev.target.tagName === "INPUT") {
        if (ev.target.checked) S.hidden.delete(c.id); else S.hidden.add(c.id);
        li.classList.toggle("hidden-class", !ev.target.checked);
        onHiddenChanged();
      } else ed.setClass(c.id);
    });
    return li;
  }));
  ed.markClass();
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

function imageKey(k, ev, ctrl) {
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
  else if (/^[1-9]$/.test(k) && +k - 1 < S.classes.length) ed.setClass(+k - 1);
  else if (k === "0" || k === "`") { ed.setClass(IGNORE); ed.setTool("eraser"); }
  else if (k === "d" || k === "b") ed.setTool("brush");
  else if (k === "e") ed.setTool("eraser");
  else if (k === "f") ed.setTool("fill");
  else if (k === "g") ed.setTool("polygon");
  else if (k === "i") { E.prevTool = E.tool; ed.setTool("picker"); }
  else if (k === "h") ed.setTool("pan");
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
  } else if (k === "Enter") ed.applyPolygon();
  else if (k === "Escape") { E.poly = []; $("#banner").hidden = true; render(); }
  else if (k === "Backspace") { E.poly.pop(); render(); }
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
  $$("[data-tool]").forEach((b) => b.addEventListener("click", () => ed.setTool(b.dataset.tool)));
  document.addEventListener("keydown", onKey);
  document.addEventListener("keyup", (ev) => { if (ev.key === " ") keys.space = false; });
  setOpacity(S.opacity); setSize(E.size); ed.setTool("brush");
}
