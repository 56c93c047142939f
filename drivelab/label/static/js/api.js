// Talking to the server. With tokens the page keeps its token in memory (and this tab's
// sessionStorage, which is per origin, port included), sends it as a bearer header and never as a
// cookie; every write also carries the CSRF secret /api/session gave this page. Images are fetched
// the same way and shown through blob URLs, so no request relies on ambient credentials.

const TOKEN_KEY = "drivelab.token";
let token = null;
let csrf = null;

export function readToken() {
  const hash = new URLSearchParams(location.hash.slice(1));
  const query = new URLSearchParams(location.search);
  const given = hash.get("token") || query.get("token");
  if (given) {
    token = given;
    sessionStorage.setItem(TOKEN_KEY, token);
    query.delete("token"); hash.delete("token");
    const rest = hash.toString();
    history.replaceState(null, "", location.pathname + (query.toString() ? `?${query}` : "") + (rest ? `#${rest}` : ""));
  } else token = sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) { token = t; sessionStorage.setItem(TOKEN_KEY, t); }

export class ApiError extends Error {
  constructor(msg, status, body) { super(msg); this.status = status; this.body = body; }
}

export async function api(path, opts = {}) {
  const headers = { ...(opts.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (csrf) headers["X-Drivelab-CSRF"] = csrf;
  const r = await fetch(path, { ...opts, headers, credentials: "omit" });
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`, body = null;
    try { body = await r.json(); msg = body.detail || msg; } catch (e) { /* not json */ }
    throw new ApiError(typeof msg === "string" ? msg : JSON.stringify(msg), r.status, body);
  }
  return r;
}

export async function startSession() {
  const s = await (await api("/api/session")).json();
  csrf = s.csrf;
  return s;
}

export const getJSON = async (path) => (await api(path)).json();
export const postJSON = async (path, body) =>
  (await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) })).json();
export const q = (name) => encodeURIComponent(name);

export async function blob(path) { return (await api(path)).blob(); }

export async function imageBitmap(path) { return createImageBitmap(await blob(path)); }
