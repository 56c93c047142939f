// DOM helpers. Everything that comes from the server or the dataset (names, comments, holders,
// file names) is inserted as text (textContent / properties), never parsed as HTML.

export const $ = (s) => document.querySelector(s);
export const $$ = (s) => document.querySelectorAll(s);

// el("span", {className: "badge", title: name}, "text", childNode, ...)
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v == null) continue;
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k === "style") Object.assign(node.style, v);
    else node[k] = v;
  }
  for (const c of children) if (c != null) node.append(c instanceof Node ? c : String(c));
  return node;
}

let toastTimer = null;
export function toast(msg, error = false) {
  const t = $("#toast");
  t.textContent = msg; t.hidden = false; t.className = error ? "error" : "";
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), error ? 8000 : 2500);
}

// A banner over the canvas with buttons: [[label, fn], ...]; "Keep editing" closes it.
export function showBanner(msg, buttons = []) {
  const b = $("#banner");
  b.replaceChildren(el("span", {}, msg));
  for (const [label, fn] of buttons) b.append(el("button", { onclick: () => { hideBanner(); fn(); } }, label));
  b.append(el("button", { onclick: hideBanner }, "Keep editing"));
  b.hidden = false;
}
export function hideBanner() { $("#banner").hidden = true; }

export function badge(status, known) {
  const b = el("span", { className: "badge" }, String(status).replace("_", " "));
  if (known.includes(status)) b.classList.add(status);
  return b;
}

export function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: filename });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
