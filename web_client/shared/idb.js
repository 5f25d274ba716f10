/**
 * IndexedDB storage of the browser clients.
 *
 * Stores (all per browser profile, per origin):
 *  - `devices`: one record per user id: the device id and its keys. Private
 *    keys are non-extractable CryptoKeys (structured-cloned as they are).
 *  - `logins`: login (lower case) -> device id, so a login on this browser
 *    reuses its device.
 *  - `epochs`: "<conversation>|<epoch>" -> non-extractable AES-GCM CryptoKey.
 *  - `outbox`: messages typed but not yet acknowledged (the app's offline outbox).
 *  - `kv`: small settings (the app's session, see app.js).
 *
 * Nothing here ever goes to localStorage.
 */

const DB_NAME = "cejchat";
const DB_VERSION = 1;
const STORES = ["devices", "logins", "epochs", "outbox", "kv"];

let opening = null;

function promisify(request) {
  return new Promise((resolve, reject) => {
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

/** The database, opened once per page. */
export function openDb() {
  if (!opening) {
    opening = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, DB_VERSION);
      req.onupgradeneeded = () => {
        const db = req.result;
        for (const name of STORES) if (!db.objectStoreNames.contains(name)) db.createObjectStore(name);
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
      req.onblocked = () => reject(new Error("IndexedDB blocked"));
    });
  }
  return opening;
}

async function tx(store, mode, fn) {
  const db = await openDb();
  return new Promise((resolve, reject) => {
    const t = db.transaction(store, mode);
    const result = fn(t.objectStore(store));
    t.oncomplete = () => resolve(result instanceof IDBRequest ? result.result : result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("IndexedDB transaction aborted"));
  });
}

/** Read one value (undefined if absent). */
export function idbGet(store, key) {
  return tx(store, "readonly", (s) => s.get(key));
}

/** Write one value. */
export function idbPut(store, key, value) {
  return tx(store, "readwrite", (s) => {
    s.put(value, key);
  });
}

/** Delete one value. */
export function idbDelete(store, key) {
  return tx(store, "readwrite", (s) => {
    s.delete(key);
  });
}

/** Every [key, value] of a store, in key order. */
export async function idbEntries(store) {
  const db = await openDb();
  const t = db.transaction(store, "readonly");
  const s = t.objectStore(store);
  const [keys, values] = await Promise.all([promisify(s.getAllKeys()), promisify(s.getAll())]);
  return keys.map((k, i) => [k, values[i]]);
}

/** Empty every store (after the account was deleted: nothing of it stays on this device). */
export async function idbClearAll() {
  for (const store of STORES) await tx(store, "readwrite", (s) => s.clear());
}
