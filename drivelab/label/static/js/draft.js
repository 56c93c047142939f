// Local drafts: the mask being edited is kept in this browser's IndexedDB (per origin) while it has
// unsaved edits, so a closed tab, a crash or a lost connection loses nothing. A draft remembers the
// version it was based on; restoring it and saving goes through the server's version check.

const DB = "drivelab-label", STORE = "drafts";
let dbPromise = null;

function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return dbPromise;
}

async function tx(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const t = d.transaction(STORE, mode);
    const out = fn(t.objectStore(STORE));
    t.oncomplete = () => resolve(out.result);
    t.onerror = () => reject(t.error);
  });
}

export const key = (dataset, name) => `${dataset}\u0000${name}`;
export const putDraft = (k, draft) => tx("readwrite", (s) => s.put(draft, k)).catch(() => null);
export const getDraft = (k) => tx("readonly", (s) => s.get(k)).catch(() => null);
export const deleteDraft = (k) => tx("readwrite", (s) => s.delete(k)).catch(() => null);
