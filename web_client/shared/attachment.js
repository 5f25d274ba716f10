/**
 * Attachment encryption in the browser (docs/crypto-format.md, "Attachments"),
 * the same bytes as chat_server/crypto/attachment.py.
 *
 *   header  = "CEJA" | 0x01 | 0x10 | 0x00 0x00
 *   nonce_i = i (11 bytes big-endian) | final flag (1 byte)
 *   chunk_i = AES-256-GCM(fileKey, nonce_i, plaintext chunk (64 KiB), aad = header)
 *   blob    = header | chunk_0 | ... | chunk_(n-1)
 *
 * Also: the media type from the file's first bytes, the message body
 * (key, name, type, size, SHA-256, thumbnail), and the image preparation
 * (re-encoded on a canvas: EXIF, and so the location, is dropped; a small
 * thumbnail for the thread).
 */

import { b64decode, b64encode } from "./b64.js";

const subtle = globalThis.crypto.subtle;

export const CHUNK_SIZE = 65536;
export const TAG_LEN = 16;
export const KEY_LEN = 32;
export const HEADER = new Uint8Array([0x43, 0x45, 0x4a, 0x41, 1, 16, 0, 0]);
const SEALED_CHUNK = CHUNK_SIZE + TAG_LEN;
/** Longer side of a thumbnail, in CSS pixels. */
export const THUMB_SIZE = 160;
/** Largest thumbnail kept (bytes): with base64 and the rest, the body stays under 16 KiB. */
export const MAX_THUMB_BYTES = 8192;

/** An attachment that cannot be read: `code` is one of `bad_header`, `tampered`, `truncated`, `mismatch`. */
export class AttachmentError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** The size of the blob of a `size`-byte file. */
export function ciphertextSize(size) {
  const chunks = Math.max(1, Math.ceil(size / CHUNK_SIZE));
  return HEADER.length + size + chunks * TAG_LEN;
}

/** A fresh random file key (32 bytes). */
export function newFileKey() {
  return globalThis.crypto.getRandomValues(new Uint8Array(KEY_LEN));
}

function nonce(index, final) {
  const n = new Uint8Array(12);
  let v = index;
  for (let i = 10; i >= 0 && v > 0; i--) {
    n[i] = v % 256;
    v = Math.floor(v / 256);
  }
  n[11] = final ? 1 : 0;
  return n;
}

async function importKey(key) {
  if (!(key instanceof Uint8Array) || key.length !== KEY_LEN) throw new TypeError("a file key is 32 bytes");
  return subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/**
 * The blob of `plaintext` (a Uint8Array) as its parts: the header, then each
 * sealed chunk (hand them to `new Blob(parts)` to upload). `onProgress(done, total)`
 * is called after each chunk.
 */
export async function encryptChunks(key, plaintext, onProgress) {
  const k = await importKey(key);
  const count = Math.max(1, Math.ceil(plaintext.length / CHUNK_SIZE));
  const parts = [HEADER];
  for (let i = 0; i < count; i++) {
    const part = plaintext.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE);
    const sealed = await subtle.encrypt(
      { name: "AES-GCM", iv: nonce(i, i === count - 1), additionalData: HEADER, tagLength: 128 },
      k,
      part,
    );
    parts.push(new Uint8Array(sealed));
    if (onProgress) onProgress(i + 1, count);
  }
  return parts;
}

/** The whole blob of `plaintext` in one Uint8Array (tests, vectors). */
export async function encryptBlob(key, plaintext) {
  const parts = await encryptChunks(key, plaintext);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Decrypts a blob fed in pieces of any size (a fetch body's chunks). Holds at
 * most one sealed chunk besides the plaintext it returns.
 */
export class ChunkDecryptor {
  constructor(key) {
    this._key = importKey(key);
    this._buffer = new Uint8Array(0);
    this._headerOk = false;
    this._index = 0;
    this._done = false;
  }

  _append(data) {
    const merged = new Uint8Array(this._buffer.length + data.length);
    merged.set(this._buffer);
    merged.set(data, this._buffer.length);
    this._buffer = merged;
  }

  /** Add bytes; resolve to the plaintext chunks known not to be the last one. */
  async feed(data) {
    if (this._done) throw new AttachmentError("tampered", "data after the final chunk");
    this._append(data);
    const out = [];
    if (!this._headerOk) {
      if (this._buffer.length < HEADER.length) return out;
      for (let i = 0; i < HEADER.length; i++) {
        if (this._buffer[i] !== HEADER[i]) throw new AttachmentError("bad_header", "not an attachment blob of a known version");
      }
      this._buffer = this._buffer.slice(HEADER.length);
      this._headerOk = true;
    }
    while (this._buffer.length > SEALED_CHUNK) {
      const sealed = this._buffer.slice(0, SEALED_CHUNK);
      this._buffer = this._buffer.slice(SEALED_CHUNK);
      out.push(await this._open(sealed, false));
    }
    return out;
  }

  /** The final chunk's plaintext; throws `truncated` if the blob was cut short. */
  async finish() {
    if (!this._headerOk || this._buffer.length < TAG_LEN) throw new AttachmentError("truncated", "the blob is truncated");
    this._done = true;
    try {
      return await this._open(this._buffer, true);
    } catch {
      throw new AttachmentError("truncated", `chunk ${this._index} does not authenticate as the final chunk: truncated or tampered with`);
    }
  }

  async _open(sealed, final) {
    try {
      const plain = await subtle.decrypt(
        { name: "AES-GCM", iv: nonce(this._index, final), additionalData: HEADER, tagLength: 128 },
        await this._key,
        sealed,
      );
      this._index++;
      return new Uint8Array(plain);
    } catch {
      throw new AttachmentError("tampered", `chunk ${this._index} does not authenticate: tampered with, moved, or the wrong key`);
    }
  }
}

/** The plaintext of a whole blob (a Uint8Array), or an AttachmentError. */
export async function decryptBlob(key, blob) {
  const dec = new ChunkDecryptor(key);
  const parts = await dec.feed(blob);
  parts.push(await dec.finish());
  return joinParts(parts);
}

function joinParts(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Read a fetch Response's body through a decryptor; `onProgress(received, total)`.
 * Resolves to the plaintext.
 */
export async function decryptResponse(key, response, onProgress) {
  const total = Number(response.headers.get("content-length")) || 0;
  const dec = new ChunkDecryptor(key);
  const parts = [];
  let received = 0;
  const reader = response.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    received += value.length;
    parts.push(...(await dec.feed(value)));
    if (onProgress) onProgress(received, total);
  }
  parts.push(await dec.finish());
  return joinParts(parts);
}

/** The media type the first bytes show: PDF, PNG, JPEG, WEBP; else null. */
export function sniffMediaType(head) {
  const starts = (magic, at = 0) => magic.every((b, i) => head[at + i] === b);
  if (starts([0x25, 0x50, 0x44, 0x46, 0x2d])) return "application/pdf";
  if (starts([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])) return "image/png";
  if (starts([0xff, 0xd8, 0xff])) return "image/jpeg";
  if (starts([0x52, 0x49, 0x46, 0x46]) && starts([0x57, 0x45, 0x42, 0x50], 8)) return "image/webp";
  return null;
}

/** SHA-256 of bytes. */
export async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

/** The JSON text of an attachment message's body (keys sorted, as Python writes it). */
export function attachmentBody({ key, name, type, size, digest, thumb }) {
  const doc = { key: b64encode(key), name, sha256: b64encode(digest), size, type };
  if (thumb) doc.thumb = { data: b64encode(thumb.data), type: thumb.type };
  const sorted = {};
  for (const k of Object.keys(doc).sort()) sorted[k] = doc[k];
  return JSON.stringify(sorted);
}

/** Parse a decrypted body: {key, name, type, size, digest, thumb?}; throws on a bad one. */
export function parseAttachmentBody(text) {
  const doc = JSON.parse(text);
  if (typeof doc.name !== "string" || typeof doc.type !== "string" || !Number.isSafeInteger(doc.size)) {
    throw new AttachmentError("mismatch", "not an attachment body");
  }
  const key = b64decode(doc.key);
  if (key.length !== KEY_LEN) throw new AttachmentError("mismatch", "bad file key");
  const out = { key, name: doc.name, type: doc.type, size: doc.size, digest: b64decode(doc.sha256) };
  if (doc.thumb && typeof doc.thumb.data === "string") out.thumb = { type: String(doc.thumb.type || "image/jpeg"), data: b64decode(doc.thumb.data) };
  return out;
}

/** Throws `mismatch` unless `plaintext` has the body's size and SHA-256. */
export async function checkFile(body, plaintext) {
  const digest = await sha256(plaintext);
  const same = plaintext.length === body.size && digest.length === body.digest.length && digest.every((b, i) => b === body.digest[i]);
  if (!same) throw new AttachmentError("mismatch", "the decrypted file does not match its announced size and digest");
}

async function drawTo(bitmap, maxSide, type, quality) {
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const w = Math.max(1, Math.round(bitmap.width * scale));
  const h = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(w, h);
  const ctx = canvas.getContext("2d");
  if (type === "image/jpeg") {
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, w, h);
  }
  ctx.drawImage(bitmap, 0, 0, w, h);
  const blob = await canvas.convertToBlob({ type, quality });
  return new Uint8Array(await blob.arrayBuffer());
}

/**
 * Prepare an image before encryption: re-encoded on a canvas (EXIF metadata,
 * the location included, does not survive), at most `maxSide` pixels, JPEG and
 * WEBP at `quality`; PNG stays PNG. Returns {bytes, type, thumb: {type, data}}.
 */
export async function prepareImage(bytes, type, quality = 0.8, maxSide = 2048) {
  const bitmap = await createImageBitmap(new Blob([bytes], { type }));
  try {
    const outType = type === "image/png" ? "image/png" : type;
    const out = await drawTo(bitmap, maxSide, outType, quality);
    // The thumbnail travels in the message body (MAX_BODY_BYTES): smaller until it fits.
    let thumb = null;
    for (const [side, q] of [[THUMB_SIZE, 0.6], [THUMB_SIZE, 0.4], [120, 0.4], [80, 0.3]]) {
      thumb = await drawTo(bitmap, side, "image/jpeg", q);
      if (thumb.length <= MAX_THUMB_BYTES) break;
    }
    return { bytes: out, type: outType, thumb: thumb.length <= MAX_THUMB_BYTES ? { type: "image/jpeg", data: thumb } : null };
  } finally {
    bitmap.close();
  }
}

/**
 * POST the blob `parts` to conversation `conversation` with `token`, reporting
 * `onProgress(loaded, total)` (XMLHttpRequest: fetch has no upload progress).
 * Resolves to `{blob, size, created_at}`; rejects with `{status, code, message}`
 * (status 0, code "network" when the server could not be reached).
 */
export function uploadBlob(token, conversation, parts, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api/conversations/${encodeURIComponent(conversation)}/attachments`);
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.responseType = "json";
    if (onProgress) xhr.upload.onprogress = (e) => onProgress(e.loaded, e.total);
    xhr.onload = () => {
      const data = xhr.response || {};
      if (xhr.status === 201) resolve(data);
      else reject({ status: xhr.status, code: data.error?.code || `http_${xhr.status}`, message: data.error?.message || "" });
    };
    xhr.onerror = () => reject({ status: 0, code: "network", message: "network error" });
    xhr.send(new Blob(parts, { type: "application/octet-stream" }));
  });
}
