/**
 * End-to-end encryption for the browser clients, message format version 2
 * (version 1 messages are still read).
 *
 * docs/crypto-format.md is the byte format; this module follows it and
 * nothing else. The Python implementation (chat_server/crypto) follows the
 * same page, and each side checks the other's vectors (buildVectors /
 * checkVectors below).
 *
 * Only WebCrypto is used (X25519, Ed25519, HMAC-SHA256, SHA-256, AES-GCM as
 * shipped in current Chromium). HPKE (RFC 9180) needs HKDF-Extract and
 * HKDF-Expand as separate steps with labelled inputs, which WebCrypto's
 * HKDF does not expose, so they are built on HMAC-SHA256 here.
 *
 * Conventions: byte strings are Uint8Array; ids are strings; an epoch is a
 * JSON integer in [0, 2^53 - 1] written in lp() as decimal ASCII;
 * JSON objects use the wire names of the format page and carry binary values
 * as base64url without padding.
 */

import { b64decode, b64encode } from "./b64.js";
import { canonicalMeta, canonicalMetaText } from "./meta.js";

export { b64decode, b64encode, canonicalMeta, canonicalMetaText };

/** Format version of every message written; bound into its associated data. */
export const FORMAT_VERSION = 2;
/** Versions a reader accepts: 1 only for messages stored before version 2. */
export const SUPPORTED_VERSIONS = Object.freeze([1, 2]);

const subtle = globalThis.crypto.subtle;
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

const LABEL_DEVICE = "cejchat/device/v1";
const LABEL_ENVELOPE = "cejchat/envelope/v1";
const LABEL_ENVELOPE_SIG = "cejchat/envelope-sig/v1";
const LABEL_SAFETY = "cejchat/safety/v1";
const LABEL_BACKUP = "cejchat/backup/v1";

const X25519_PKCS8_PREFIX = fromHex("302e020100300506032b656e04220420");
const ED25519_PKCS8_PREFIX = fromHex("302e020100300506032b657004220420");

// ---------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------

/** UTF-8 encode a string. */
export function utf8(text) {
  if (typeof text !== "string") throw new TypeError("utf8: expected a string");
  return encoder.encode(text);
}

/** Strict UTF-8 decode (throws on invalid sequences). */
export function utf8decode(bytes) {
  return decoder.decode(bytes);
}

/** Concatenate byte strings. */
export function concat(...parts) {
  let length = 0;
  for (const p of parts) length += p.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** Lower-case hex of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes from hex (even length, [0-9a-fA-F]). */
export function fromHex(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || /[^0-9a-fA-F]/.test(hex)) {
    throw new TypeError("fromHex: malformed hex");
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Constant-shape equality of two byte strings. */
export function bytesEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Fresh random bytes from the platform CSPRNG. */
export function randomBytes(n) {
  return globalThis.crypto.getRandomValues(new Uint8Array(n));
}

function bytesOf(value, what) {
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${what}: expected bytes`);
}

function i2osp(value, length) {
  let n = BigInt(value);
  if (n < 0n) throw new RangeError("i2osp: negative");
  const out = new Uint8Array(length);
  for (let i = length - 1; i >= 0; i--) {
    out[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  if (n !== 0n) throw new RangeError("i2osp: value too large");
  return out;
}

/** Largest epoch: epochs are JSON numbers, exact in JavaScript up to 2^53 - 1. */
export const MAX_EPOCH = Number.MAX_SAFE_INTEGER;

/** The decimal ASCII form of an epoch (an integer in [0, 2^53 - 1]), as lp() writes it. */
export function epochString(epoch) {
  if (!Number.isSafeInteger(epoch) || epoch < 0) {
    throw new RangeError("epoch must be an integer in [0, 2^53 - 1]");
  }
  return epoch.toString(10);
}

/**
 * lp(x): 4-byte big-endian length, then x. Strings are UTF-8, numbers
 * (epochs) their decimal ASCII string, bytes as they are.
 */
export function lp(value) {
  let bytes;
  if (typeof value === "string") bytes = utf8(value);
  else if (typeof value === "number") bytes = utf8(epochString(value));
  else bytes = bytesOf(value, "lp");
  if (bytes.length > 0xffffffff) throw new RangeError("lp: value too long");
  return concat(i2osp(bytes.length, 4), bytes);
}

/** lp() of each argument, concatenated. */
export function lps(...values) {
  return concat(...values.map(lp));
}

// ---------------------------------------------------------------------------
// HKDF-SHA256 on HMAC (RFC 5869)
// ---------------------------------------------------------------------------

const HASH_LEN = 32;

async function hmacSha256(key, data) {
  // HMAC pads keys to the block size with zeros, so an empty key equals
  // HashLen zero bytes (RFC 5869 §2.2); WebCrypto refuses empty HMAC keys.
  const k = key.length === 0 ? new Uint8Array(HASH_LEN) : key;
  const cryptoKey = await subtle.importKey("raw", k, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", cryptoKey, data));
}

/** HKDF-Extract(salt, ikm) with SHA-256; an empty salt means HashLen zeros. */
export async function hkdfExtract(salt, ikm) {
  return hmacSha256(bytesOf(salt, "hkdfExtract salt"), bytesOf(ikm, "hkdfExtract ikm"));
}

/** HKDF-Expand(prk, info, length) with SHA-256. */
export async function hkdfExpand(prk, info, length) {
  if (!Number.isInteger(length) || length < 0 || length > 255 * HASH_LEN) {
    throw new RangeError("hkdfExpand: bad length");
  }
  const key = bytesOf(prk, "hkdfExpand prk");
  const infoBytes = bytesOf(info, "hkdfExpand info");
  const out = new Uint8Array(length);
  let block = new Uint8Array(0);
  for (let i = 1, offset = 0; offset < length; i++) {
    block = await hmacSha256(key, concat(block, infoBytes, Uint8Array.of(i)));
    out.set(block.subarray(0, Math.min(HASH_LEN, length - offset)), offset);
    offset += HASH_LEN;
  }
  return out;
}

/** HKDF-SHA256 (extract then expand). */
export async function hkdf(ikm, salt, info, length) {
  return hkdfExpand(await hkdfExtract(salt, ikm), info, length);
}

/** SHA-256 digest. */
export async function sha256(data) {
  return new Uint8Array(await subtle.digest("SHA-256", bytesOf(data, "sha256")));
}

// ---------------------------------------------------------------------------
// X25519 and Ed25519 keys
// ---------------------------------------------------------------------------

/** Import a raw 32-byte X25519 public key. */
export async function importX25519Public(raw) {
  const bytes = bytesOf(raw, "X25519 public key");
  if (bytes.length !== 32) throw new RangeError("X25519 public key must be 32 bytes");
  return subtle.importKey("raw", bytes, { name: "X25519" }, true, []);
}

/** Import a raw 32-byte Ed25519 public key for verification. */
export async function importEd25519Public(raw) {
  const bytes = bytesOf(raw, "Ed25519 public key");
  if (bytes.length !== 32) throw new RangeError("Ed25519 public key must be 32 bytes");
  return subtle.importKey("raw", bytes, { name: "Ed25519" }, true, ["verify"]);
}

/**
 * Import a raw private key (X25519 scalar or Ed25519 seed) through PKCS#8,
 * and return { privateKey, publicKey, publicRaw }. The public key comes from
 * a JWK export of an extractable import; when `extractable` is false the key
 * is imported again, non-extractable, from that JWK.
 */
async function importPrivateRaw(kind, raw, extractable) {
  const bytes = bytesOf(raw, `${kind} private key`);
  if (bytes.length !== 32) throw new RangeError(`${kind} private key must be 32 bytes`);
  const isX = kind === "X25519";
  const prefix = isX ? X25519_PKCS8_PREFIX : ED25519_PKCS8_PREFIX;
  const usages = isX ? ["deriveBits"] : ["sign"];
  const algorithm = { name: kind };
  let privateKey = await subtle.importKey("pkcs8", concat(prefix, bytes), algorithm, true, usages);
  const jwk = await subtle.exportKey("jwk", privateKey);
  const publicRaw = b64decode(jwk.x);
  if (!extractable) {
    privateKey = await subtle.importKey("jwk", jwk, algorithm, false, usages);
  }
  const publicKey = await subtle.importKey("raw", publicRaw, algorithm, true, isX ? [] : ["verify"]);
  return { privateKey, publicKey, publicRaw };
}

/**
 * An X25519 key pair from its raw 32-byte private scalar: { privateKey,
 * publicRaw } (the structure key, docs/crypto-format.md).
 */
export async function importX25519Private(raw, { extractable = false } = {}) {
  const { privateKey, publicRaw } = await importPrivateRaw("X25519", raw, extractable);
  return { privateKey, publicRaw };
}

/** The raw 32 bytes of an extractable X25519 / Ed25519 private CryptoKey. */
export async function exportPrivateRaw(privateKey) {
  if (!privateKey.extractable) throw new TypeError("private key is not extractable");
  const jwk = await subtle.exportKey("jwk", privateKey);
  return b64decode(jwk.d);
}

async function x25519(privateKey, publicRaw) {
  const publicKey = await importX25519Public(publicRaw);
  let shared;
  try {
    shared = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: publicKey }, privateKey, 256));
  } catch (err) {
    throw new Error(`X25519 failed (small-order public key?): ${err.message}`);
  }
  // RFC 9180 §7.1.4: abort on the all-zero output (a small-order point).
  if (shared.every((b) => b === 0)) throw new Error("X25519 produced the all-zero value");
  return shared;
}

// ---------------------------------------------------------------------------
// Device keys
// ---------------------------------------------------------------------------

/**
 * A device's keys: { dhPrivate, dhPublic, sigPrivate, sigPublic } where the
 * private halves are CryptoKeys (store them in IndexedDB as they are) and
 * the public halves the raw 32 bytes.
 *
 * Keys are non-extractable unless `extractable` is true. A key backup needs
 * the private bytes, so a device that will be backed up must be generated
 * (or restored) with extractable: true.
 */
export async function generateDeviceKeys({ extractable = false } = {}) {
  const dh = await subtle.generateKey({ name: "X25519" }, extractable, ["deriveBits"]);
  const sig = await subtle.generateKey({ name: "Ed25519" }, extractable, ["sign", "verify"]);
  return {
    dhPrivate: dh.privateKey,
    dhPublic: new Uint8Array(await subtle.exportKey("raw", dh.publicKey)),
    sigPrivate: sig.privateKey,
    sigPublic: new Uint8Array(await subtle.exportKey("raw", sig.publicKey)),
  };
}

/** Device keys from raw private bytes (backup restore, vectors). */
export async function importDeviceKeys({ dhPriv, sigPriv }, { extractable = false } = {}) {
  const dh = await importPrivateRaw("X25519", dhPriv, extractable);
  const sig = await importPrivateRaw("Ed25519", sigPriv, extractable);
  return {
    dhPrivate: dh.privateKey,
    dhPublic: dh.publicRaw,
    sigPrivate: sig.privateKey,
    sigPublic: sig.publicRaw,
  };
}

/** The raw private bytes { dhPriv, sigPriv } of extractable device keys. */
export async function exportDevicePrivate(keys) {
  return {
    dhPriv: await exportPrivateRaw(keys.dhPrivate),
    sigPriv: await exportPrivateRaw(keys.sigPrivate),
  };
}

/** Ed25519 signature (64 bytes) of `data` with a private CryptoKey. */
export async function sign(sigPrivate, data) {
  return new Uint8Array(await subtle.sign({ name: "Ed25519" }, sigPrivate, bytesOf(data, "sign")));
}

const ED25519_P = (1n << 255n) - 19n;
// y (mod p) of every Ed25519 point of small order: 1 (the neutral point), p - 1 (order 2),
// 0 (order 4) and the two y of the order-8 points.
const SMALL_ORDER_Y = new Set([
  0n,
  1n,
  ED25519_P - 1n,
  0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n,
  ED25519_P - 0x7a03ac9277fdc74ec6cc392cfa53202a0f67100d760b3cba4fd84d3d706a17c7n,
]);

/**
 * Whether a raw Ed25519 public key encodes a point of small order, in any spelling
 * (a non-canonical y >= p or either sign bit). Such a key "verifies" forged signatures
 * in WebCrypto, so `verify` refuses it, as the server does (docs/crypto-format.md).
 */
export function isSmallOrderEd25519(raw) {
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(raw[i] & (i === 31 ? 0x7f : 0xff));
  return SMALL_ORDER_Y.has(y % ED25519_P);
}

/**
 * Check an Ed25519 signature against a raw 32-byte public key; false on any malformed input
 * and for a small-order key (see `isSmallOrderEd25519`).
 */
export async function verify(sigPublicRaw, signature, data) {
  try {
    const sig = bytesOf(signature, "signature");
    if (sig.length !== 64) return false;
    const pub = bytesOf(sigPublicRaw, "Ed25519 public key");
    if (pub.length !== 32 || isSmallOrderEd25519(pub)) return false;
    const key = await importEd25519Public(pub);
    return await subtle.verify({ name: "Ed25519" }, key, sig, bytesOf(data, "verify"));
  } catch {
    return false;
  }
}

/** The bytes a device registration signs. */
export function registrationBytes(userId, deviceId, dhPub, sigPub) {
  return lps(LABEL_DEVICE, userId, deviceId, dhPub, sigPub);
}

/** Sign this device's registration: returns the 64-byte signature. */
export async function signRegistration(keys, userId, deviceId) {
  return sign(keys.sigPrivate, registrationBytes(userId, deviceId, keys.dhPublic, keys.sigPublic));
}

/** Check a device registration signature (made by the registered sig key itself). */
export async function verifyRegistration(userId, deviceId, dhPub, sigPub, signature) {
  return verify(sigPub, signature, registrationBytes(userId, deviceId, dhPub, sigPub));
}

/** The JSON a device registers: { user_id, device_id, dh_pub, sig_pub, sig } (b64). */
export async function deviceRegistration(keys, userId, deviceId) {
  return {
    user_id: userId,
    device_id: deviceId,
    dh_pub: b64encode(keys.dhPublic),
    sig_pub: b64encode(keys.sigPublic),
    sig: b64encode(await signRegistration(keys, userId, deviceId)),
  };
}

// ---------------------------------------------------------------------------
// HPKE, RFC 9180 base mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
// ---------------------------------------------------------------------------

const HPKE_VERSION = utf8("HPKE-v1");
const KEM_SUITE_ID = concat(utf8("KEM"), i2osp(0x0020, 2));
const HPKE_SUITE_ID = concat(utf8("HPKE"), i2osp(0x0020, 2), i2osp(0x0001, 2), i2osp(0x0001, 2));
const MODE_BASE = 0;
const N_SECRET = 32;
const N_ENC = 32;
const N_PK = 32;
const N_SK = 32;
const N_K = 16;
const N_N = 12;
const N_H = 32;
const MAX_SEQ = (1n << BigInt(8 * N_N)) - 1n;

async function labeledExtract(suiteId, salt, label, ikm) {
  return hkdfExtract(salt, concat(HPKE_VERSION, suiteId, utf8(label), ikm));
}

async function labeledExpand(suiteId, prk, label, info, length) {
  return hkdfExpand(prk, concat(i2osp(length, 2), HPKE_VERSION, suiteId, utf8(label), info), length);
}

const EMPTY = new Uint8Array(0);

/**
 * DeriveKeyPair(ikm) for DHKEM(X25519) (RFC 9180 §7.1.3). Returns
 * { skRaw, pkRaw, privateKey } with an extractable private CryptoKey only if asked.
 */
async function deriveKeyPair(ikm, { extractable = false } = {}) {
  const dkpPrk = await labeledExtract(KEM_SUITE_ID, EMPTY, "dkp_prk", bytesOf(ikm, "ikm"));
  const skRaw = await labeledExpand(KEM_SUITE_ID, dkpPrk, "sk", EMPTY, N_SK);
  const imported = await importPrivateRaw("X25519", skRaw, extractable);
  return { skRaw, pkRaw: imported.publicRaw, privateKey: imported.privateKey };
}

async function extractAndExpand(dh, kemContext) {
  const eaePrk = await labeledExtract(KEM_SUITE_ID, EMPTY, "eae_prk", dh);
  return labeledExpand(KEM_SUITE_ID, eaePrk, "shared_secret", kemContext, N_SECRET);
}

/**
 * Encap(pkR). The ephemeral key is fresh unless `ikmE` (DeriveKeyPair input)
 * or `skE` (raw scalar) is given, which only tests should do.
 */
async function encap(pkR, { ikmE, skE } = {}) {
  const pkRBytes = bytesOf(pkR, "pkR");
  if (pkRBytes.length !== N_PK) throw new RangeError("pkR must be 32 bytes");
  let ephemeralPrivate;
  let enc;
  if (ikmE !== undefined) {
    const pair = await deriveKeyPair(ikmE);
    ephemeralPrivate = pair.privateKey;
    enc = pair.pkRaw;
  } else if (skE !== undefined) {
    const imported = await importPrivateRaw("X25519", skE, false);
    ephemeralPrivate = imported.privateKey;
    enc = imported.publicRaw;
  } else {
    const pair = await subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
    ephemeralPrivate = pair.privateKey;
    enc = new Uint8Array(await subtle.exportKey("raw", pair.publicKey));
  }
  const dh = await x25519(ephemeralPrivate, pkRBytes);
  const sharedSecret = await extractAndExpand(dh, concat(enc, pkRBytes));
  return { sharedSecret, enc };
}

/** Decap(enc, skR): skR is an X25519 private CryptoKey (or raw bytes); pkR its raw public key. */
async function decap(enc, skR, pkR) {
  const encBytes = bytesOf(enc, "enc");
  if (encBytes.length !== N_ENC) throw new RangeError("enc must be 32 bytes");
  let privateKey = skR;
  let pkRBytes = pkR === undefined ? undefined : bytesOf(pkR, "pkR");
  if (!(typeof CryptoKey !== "undefined" && skR instanceof CryptoKey)) {
    const imported = await importPrivateRaw("X25519", skR, false);
    privateKey = imported.privateKey;
    pkRBytes ??= imported.publicRaw;
  }
  if (pkRBytes === undefined) throw new TypeError("decap: pkR is needed with a CryptoKey skR");
  const dh = await x25519(privateKey, encBytes);
  return extractAndExpand(dh, concat(encBytes, pkRBytes));
}

async function keySchedule(mode, sharedSecret, info) {
  // Base mode: psk and psk_id are empty (RFC 9180 §5.1, VerifyPSKInputs).
  const pskIdHash = await labeledExtract(HPKE_SUITE_ID, EMPTY, "psk_id_hash", EMPTY);
  const infoHash = await labeledExtract(HPKE_SUITE_ID, EMPTY, "info_hash", bytesOf(info, "info"));
  const keyScheduleContext = concat(Uint8Array.of(mode), pskIdHash, infoHash);
  const secret = await labeledExtract(HPKE_SUITE_ID, sharedSecret, "secret", EMPTY);
  const key = await labeledExpand(HPKE_SUITE_ID, secret, "key", keyScheduleContext, N_K);
  const baseNonce = await labeledExpand(HPKE_SUITE_ID, secret, "base_nonce", keyScheduleContext, N_N);
  const exporterSecret = await labeledExpand(HPKE_SUITE_ID, secret, "exp", keyScheduleContext, N_H);
  const aesKey = await subtle.importKey("raw", key, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  return new HpkeContext({ sharedSecret, keyScheduleContext, secret, key, baseNonce, exporterSecret, aesKey });
}

/**
 * An HPKE encryption context (RFC 9180 §5.2). `seq` is the next sequence
 * number (a bigint); seal() and open() use it and then increment it. The
 * key-schedule intermediates are kept as read-only fields for vector tests.
 */
export class HpkeContext {
  #aesKey;

  constructor({ sharedSecret, keyScheduleContext, secret, key, baseNonce, exporterSecret, aesKey }) {
    this.sharedSecret = sharedSecret;
    this.keyScheduleContext = keyScheduleContext;
    this.secret = secret;
    this.key = key;
    this.baseNonce = baseNonce;
    this.exporterSecret = exporterSecret;
    this.#aesKey = aesKey;
    this.seq = 0n;
  }

  /** base_nonce XOR I2OSP(seq, Nn). */
  computeNonce(seq) {
    const seqBytes = i2osp(seq, N_N);
    return this.baseNonce.map((b, i) => b ^ seqBytes[i]);
  }

  #nextSeq() {
    const seq = BigInt(this.seq);
    if (seq >= MAX_SEQ) throw new Error("HPKE message limit reached");
    return seq;
  }

  /** Seal(aad, pt) at the current sequence number, then increment it. */
  async seal(aad, pt) {
    const seq = this.#nextSeq();
    const ct = await subtle.encrypt(
      { name: "AES-GCM", iv: this.computeNonce(seq), additionalData: bytesOf(aad, "aad"), tagLength: 128 },
      this.#aesKey,
      bytesOf(pt, "pt"),
    );
    this.seq = seq + 1n;
    return new Uint8Array(ct);
  }

  /** Open(aad, ct) at the current sequence number, then increment it; throws on failure. */
  async open(aad, ct) {
    const seq = this.#nextSeq();
    let pt;
    try {
      pt = await subtle.decrypt(
        { name: "AES-GCM", iv: this.computeNonce(seq), additionalData: bytesOf(aad, "aad"), tagLength: 128 },
        this.#aesKey,
        bytesOf(ct, "ct"),
      );
    } catch {
      throw new Error("HPKE open failed");
    }
    this.seq = seq + 1n;
    return new Uint8Array(pt);
  }

  /** Export(exporter_context, L). */
  async export(exporterContext, length) {
    return labeledExpand(HPKE_SUITE_ID, this.exporterSecret, "sec", bytesOf(exporterContext, "exporter_context"), length);
  }
}

/** SetupBaseS(pkR, info) -> { enc, ctx }. `options` may inject ikmE or skE (tests only). */
export async function setupBaseS(pkR, info, options = {}) {
  const { sharedSecret, enc } = await encap(pkR, options);
  return { enc, ctx: await keySchedule(MODE_BASE, sharedSecret, info) };
}

/** SetupBaseR(enc, skR, info) -> ctx. skR: X25519 private CryptoKey or raw bytes; pkR: raw public. */
export async function setupBaseR(enc, skR, pkR, info) {
  const sharedSecret = await decap(enc, skR, pkR);
  return keySchedule(MODE_BASE, sharedSecret, info);
}

/** Single-shot SealBase: returns { enc, ct }. */
export async function sealBase(pkR, info, aad, pt, options = {}) {
  const { enc, ctx } = await setupBaseS(pkR, info, options);
  return { enc, ct: await ctx.seal(aad, pt) };
}

/** Single-shot OpenBase: returns pt or throws. */
export async function openBase(enc, skR, pkR, info, aad, ct) {
  const ctx = await setupBaseR(enc, skR, pkR, info);
  return ctx.open(aad, ct);
}

/** Lower-level HPKE pieces, exposed for the RFC 9180 vector test. */
export const hpke = Object.freeze({
  KEM_SUITE_ID,
  HPKE_SUITE_ID,
  labeledExtract,
  labeledExpand,
  deriveKeyPair,
  encap,
  decap,
  keySchedule,
  setupBaseS,
  setupBaseR,
  sealBase,
  openBase,
});

// ---------------------------------------------------------------------------
// Epoch keys and envelopes
// ---------------------------------------------------------------------------

/** A fresh 32-byte epoch key (AES-256-GCM). */
export function generateEpochKey() {
  return randomBytes(32);
}

/** HPKE info of an envelope. */
export function envelopeInfo(conversation, epoch, recipientDevice) {
  return lps(LABEL_ENVELOPE, conversation, epoch, recipientDevice);
}

/** HPKE aad of an envelope. */
export function envelopeAad(senderDevice) {
  return lp(senderDevice);
}

/** The bytes the sender signs for an envelope. */
export function envelopeSigBytes(info, aad, enc, ct) {
  return lps(LABEL_ENVELOPE_SIG, info, aad, enc, ct);
}

function checkEnvelopeShape(envelope) {
  for (const field of ["conversation", "recipient_device", "sender_device", "enc", "ct", "sig"]) {
    if (typeof envelope[field] !== "string") throw new TypeError(`envelope.${field} must be a string`);
  }
  epochString(envelope.epoch);
}

/**
 * Wrap an epoch key for one recipient device. Returns the envelope JSON
 * { conversation, epoch, recipient_device, sender_device, enc, ct, sig }.
 * `ikmE` injects the HPKE ephemeral key (tests and vectors only).
 */
export async function wrapEpochKey({
  epochKey,
  conversation,
  epoch,
  recipientDevice,
  recipientDhPub,
  senderDevice,
  senderKeys,
  ikmE,
}) {
  const key = bytesOf(epochKey, "epochKey");
  if (key.length !== 32) throw new RangeError("epoch key must be 32 bytes");
  const info = envelopeInfo(conversation, epoch, recipientDevice);
  const aad = envelopeAad(senderDevice);
  const { enc, ct } = await sealBase(recipientDhPub, info, aad, key, ikmE === undefined ? {} : { ikmE });
  const sig = await sign(senderKeys.sigPrivate, envelopeSigBytes(info, aad, enc, ct));
  return {
    conversation,
    epoch,
    recipient_device: recipientDevice,
    sender_device: senderDevice,
    enc: b64encode(enc),
    ct: b64encode(ct),
    sig: b64encode(sig),
  };
}

/** Check an envelope's signature against the sender device's raw Ed25519 key. */
export async function verifyEnvelope(envelope, senderSigPub) {
  try {
    checkEnvelopeShape(envelope);
    const info = envelopeInfo(envelope.conversation, envelope.epoch, envelope.recipient_device);
    const aad = envelopeAad(envelope.sender_device);
    const data = envelopeSigBytes(info, aad, b64decode(envelope.enc), b64decode(envelope.ct));
    return await verify(senderSigPub, b64decode(envelope.sig), data);
  } catch {
    return false;
  }
}

/**
 * Open an envelope addressed to this device: checks the sender's signature
 * first, then HPKE-opens; returns the 32-byte epoch key or throws.
 * `recipientKeys` is { dhPrivate, dhPublic } (device keys).
 */
export async function openEnvelope(envelope, recipientKeys, senderSigPub) {
  checkEnvelopeShape(envelope);
  if (!(await verifyEnvelope(envelope, senderSigPub))) throw new Error("envelope signature is invalid");
  const info = envelopeInfo(envelope.conversation, envelope.epoch, envelope.recipient_device);
  const aad = envelopeAad(envelope.sender_device);
  const epochKey = await openBase(
    b64decode(envelope.enc),
    recipientKeys.dhPrivate,
    recipientKeys.dhPublic,
    info,
    aad,
    b64decode(envelope.ct),
  );
  if (epochKey.length !== 32) throw new Error("envelope does not hold a 32-byte epoch key");
  return epochKey;
}

// ---------------------------------------------------------------------------
// Epoch key commitments
// ---------------------------------------------------------------------------

/** HMAC-SHA256(key = epoch key, lp("cejchat/epoch-commit/v1") lp(conversation) lp(epoch)): 32 bytes. */
export async function epochCommitment(epochKey, conversation, epoch) {
  const key = bytesOf(epochKey, "epochKey");
  if (key.length !== 32) throw new RangeError("epoch key must be 32 bytes");
  const hmacKey = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", hmacKey, lps("cejchat/epoch-commit/v1", conversation, epoch)));
}

/** Whether raw `epochKey` is the key `commitment` fixes for (conversation, epoch); never throws. */
export async function keyMatchesCommitment(epochKey, conversation, epoch, commitment) {
  try {
    return bytesEqual(await epochCommitment(epochKey, conversation, epoch), bytesOf(commitment, "commitment"));
  } catch {
    return false;
  }
}

/** The bytes the creating device signs for an epoch's commitment. */
export function commitmentSigBytes(conversation, epoch, creatorDevice, commitment) {
  return lps("cejchat/epoch-commit-sig/v1", conversation, epoch, creatorDevice, commitment);
}

/** The creator's signature over an epoch's commitment. */
export async function signCommitment(keys, conversation, epoch, creatorDevice, commitment) {
  return sign(keys.sigPrivate, commitmentSigBytes(conversation, epoch, creatorDevice, commitment));
}

/** Check a commitment's signature against the creator device's raw Ed25519 key; false on any malformed input. */
export async function verifyCommitment(sigPub, conversation, epoch, creatorDevice, commitment, signature) {
  try {
    if (bytesOf(commitment, "commitment").length !== 32) return false;
    return await verify(sigPub, signature, commitmentSigBytes(conversation, epoch, creatorDevice, commitment));
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

function checkVersion(version) {
  if (!SUPPORTED_VERSIONS.includes(version)) throw new RangeError(`unknown message format version ${JSON.stringify(version)}`);
  return version;
}

/**
 * A message's associated data. Version 2 (the default) binds the canonical
 * `meta` (empty if not given); version 1 does not bind it.
 */
export function messageAad({ conversation, epoch, senderDevice, clientId, msgType, meta = {}, version = FORMAT_VERSION }) {
  checkVersion(version);
  const head = [`cejchat/msg/v${version}`, conversation, epoch, senderDevice, clientId, msgType, String(version)];
  return version === 1 ? lps(...head) : lps(...head, canonicalMeta(meta));
}

/** The bytes the sender signs for a message. */
export function messageSigBytes(aad, nonce, ciphertext, version = FORMAT_VERSION) {
  return lps(`cejchat/msg-sig/v${checkVersion(version)}`, aad, nonce, ciphertext);
}

async function aes256Key(epochKey, usages) {
  if (typeof CryptoKey !== "undefined" && epochKey instanceof CryptoKey) return epochKey;
  const raw = bytesOf(epochKey, "epochKey");
  if (raw.length !== 32) throw new RangeError("epoch key must be 32 bytes");
  return subtle.importKey("raw", raw, { name: "AES-GCM" }, false, usages);
}

function plaintextBytes(plaintext) {
  if (typeof plaintext === "string") return utf8(plaintext);
  if (plaintext instanceof Uint8Array || plaintext instanceof ArrayBuffer || ArrayBuffer.isView(plaintext)) {
    return bytesOf(plaintext, "plaintext");
  }
  return utf8(JSON.stringify(plaintext));
}

function messageFields(message) {
  for (const field of ["conversation", "sender_device", "client_id", "msg_type", "nonce", "ciphertext", "sig"]) {
    if (typeof message[field] !== "string") throw new TypeError(`message.${field} must be a string`);
  }
  const version = message.v === undefined ? 1 : message.v;
  return {
    conversation: message.conversation,
    epoch: message.epoch,
    senderDevice: message.sender_device,
    clientId: message.client_id,
    msgType: message.msg_type,
    meta: message.meta ?? {},
    version: checkVersion(version),
  };
}

/**
 * Encrypt and sign a message. `plaintext` is an object (JSON-encoded), a
 * string (UTF-8) or bytes. `epochKey` is 32 raw bytes or an AES-GCM
 * CryptoKey. `meta` is the server-visible part, bound into the associated
 * data and the signature. Returns { v, conversation, epoch, sender_device,
 * client_id, msg_type, meta, nonce, ciphertext, sig }. `nonce` and
 * `version: 1` are for vectors only.
 */
export async function encryptMessage({
  epochKey,
  conversation,
  epoch,
  senderDevice,
  senderKeys,
  clientId,
  msgType,
  plaintext,
  meta = {},
  nonce,
  version = FORMAT_VERSION,
}) {
  const aad = messageAad({ conversation, epoch, senderDevice, clientId, msgType, meta, version });
  const iv = nonce === undefined ? randomBytes(12) : bytesOf(nonce, "nonce");
  if (iv.length !== 12) throw new RangeError("nonce must be 12 bytes");
  const key = await aes256Key(epochKey, ["encrypt"]);
  const ciphertext = new Uint8Array(
    await subtle.encrypt({ name: "AES-GCM", iv, additionalData: aad, tagLength: 128 }, key, plaintextBytes(plaintext)),
  );
  const sig = await sign(senderKeys.sigPrivate, messageSigBytes(aad, iv, ciphertext, version));
  return {
    v: version,
    ...(version === 1 ? {} : { meta }),
    conversation,
    epoch,
    sender_device: senderDevice,
    client_id: clientId,
    msg_type: msgType,
    nonce: b64encode(iv),
    ciphertext: b64encode(ciphertext),
    sig: b64encode(sig),
  };
}

/** Check a message's signature against the sender device's raw Ed25519 key (what the server does). */
export async function verifyMessage(message, senderSigPub) {
  try {
    const fields = messageFields(message);
    const aad = messageAad(fields);
    const data = messageSigBytes(aad, b64decode(message.nonce), b64decode(message.ciphertext), fields.version);
    return await verify(senderSigPub, b64decode(message.sig), data);
  } catch {
    return false;
  }
}

/**
 * Verify then decrypt a message; returns the plaintext bytes or throws.
 * `message.v` absent means version 1, whose `meta` is not authenticated
 * (callers show such a message as older and unchecked).
 */
export async function decryptMessage(message, epochKey, senderSigPub) {
  const fields = messageFields(message);
  if (!(await verifyMessage(message, senderSigPub))) throw new Error("message signature is invalid");
  const key = await aes256Key(epochKey, ["decrypt"]);
  const nonce = b64decode(message.nonce);
  if (nonce.length !== 12) throw new Error("message nonce must be 12 bytes");
  try {
    const pt = await subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: messageAad(fields), tagLength: 128 },
      key,
      b64decode(message.ciphertext),
    );
    return new Uint8Array(pt);
  } catch {
    throw new Error("message decryption failed");
  }
}

/** decryptMessage, then parse the UTF-8 JSON plaintext. */
export async function decryptMessageJson(message, epochKey, senderSigPub) {
  return JSON.parse(utf8decode(await decryptMessage(message, epochKey, senderSigPub)));
}

// ---------------------------------------------------------------------------
// Safety number
// ---------------------------------------------------------------------------

function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

/**
 * The safety number of two members, each { userId, sigPubs: [raw 32-byte keys] }:
 * 30 ASCII digits, no separators (formatSafetyNumber() groups them for display).
 * User ids are ordered by their UTF-8 bytes, which is code-point order (as
 * Python compares str), not JavaScript's UTF-16 order. Throws if the two
 * user ids are equal, a key is not 32 bytes or a member lists a key twice.
 * `structurePublic`: the raw public half of the conversation's structure key,
 * when it has one (appended to the hashed input; absent, the number is as before).
 */
export async function safetyNumber(a, b, structurePublic = null) {
  const blocks = [a, b].map((member) => {
    const userId = utf8(member.userId);
    const keys = member.sigPubs.map((k) => bytesOf(k, "sig_pub")).sort(compareBytes);
    keys.forEach((k, i) => {
      if (k.length !== 32) throw new RangeError("sig_pub must be 32 bytes");
      if (i > 0 && bytesEqual(k, keys[i - 1])) throw new Error(`duplicate sig_pub for user ${member.userId}`);
    });
    return { userId, bytes: concat(lp(userId), ...keys.map(lp)) };
  });
  if (bytesEqual(blocks[0].userId, blocks[1].userId)) throw new Error("a safety number needs two different users");
  blocks.sort((x, y) => compareBytes(x.userId, y.userId));
  // With a structure key (docs/crypto-format.md, "Safety number"), its public half is bound too.
  const tail = [];
  if (structurePublic) {
    const pub = bytesOf(structurePublic, "structure public key");
    if (pub.length !== 32) throw new RangeError("structure public key must be 32 bytes");
    tail.push(lp("cejchat/safety-structure/v1"), lp(pub));
  }
  const digest = await sha256(concat(lp(LABEL_SAFETY), blocks[0].bytes, blocks[1].bytes, ...tail));
  const groups = [];
  for (let i = 0; i < 6; i++) {
    let n = 0;
    for (let j = 0; j < 5; j++) n = n * 256 + digest[5 * i + j];
    groups.push(String(n % 100000).padStart(5, "0"));
  }
  return groups.join("");
}

/** A 30-digit safety number as six groups of five separated by spaces, for display. */
export function formatSafetyNumber(number) {
  if (!/^[0-9]{30}$/.test(number)) throw new Error("a safety number is 30 ASCII digits");
  return number.match(/.{5}/g).join(" ");
}

// ---------------------------------------------------------------------------
// Recovery key and key backup
// ---------------------------------------------------------------------------

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const RECOVERY_KEY_BYTES = 32;

/** A fresh 32-byte recovery key. */
export function generateRecoveryKey() {
  return randomBytes(RECOVERY_KEY_BYTES);
}

/**
 * Crockford base32 of the key, no padding: the bytes as one big-endian bit
 * string, 5 bits per symbol, the last symbol filled with zero bits (as
 * RFC 4648 base32 does, with Crockford's alphabet); 52 symbols for 32 bytes,
 * in groups of four joined by "-".
 */
export function formatRecoveryKey(key) {
  const bytes = bytesOf(key, "recovery key");
  if (bytes.length !== RECOVERY_KEY_BYTES) throw new RangeError("recovery key must be 32 bytes");
  let symbols = "";
  let buffer = 0;
  let bits = 0;
  for (const byte of bytes) {
    buffer = (buffer << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      symbols += CROCKFORD[(buffer >> (bits - 5)) & 31];
      bits -= 5;
    }
    buffer &= (1 << bits) - 1;
  }
  if (bits > 0) symbols += CROCKFORD[(buffer << (5 - bits)) & 31];
  return symbols.match(/.{1,4}/g).join("-");
}

/**
 * Parse a recovery key typed by a person: case-insensitive, "-" and
 * whitespace ignored, O read as 0 and I/L as 1 (Crockford). Throws on
 * anything else, a wrong length or non-zero fill bits.
 */
export function parseRecoveryKey(text) {
  if (typeof text !== "string") throw new TypeError("recovery key must be a string");
  const cleaned = text.toUpperCase().replace(/[\s-]/g, "").replace(/O/g, "0").replace(/[IL]/g, "1");
  const symbolCount = Math.ceil((RECOVERY_KEY_BYTES * 8) / 5);
  if (cleaned.length !== symbolCount) throw new Error("recovery key has the wrong length");
  const out = new Uint8Array(RECOVERY_KEY_BYTES);
  let buffer = 0;
  let bits = 0;
  let o = 0;
  for (const ch of cleaned) {
    const v = CROCKFORD.indexOf(ch);
    if (v < 0) throw new Error(`recovery key has an invalid character: ${ch}`);
    buffer = (buffer << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out[o++] = (buffer >> (bits - 8)) & 255;
      bits -= 8;
    }
    buffer &= (1 << bits) - 1;
  }
  if (buffer !== 0) throw new Error("recovery key has non-zero fill bits");
  return out;
}

async function backupKey(recoveryKey) {
  const raw = bytesOf(recoveryKey, "recovery key");
  if (raw.length !== RECOVERY_KEY_BYTES) throw new RangeError("recovery key must be 32 bytes");
  const k = await hkdf(raw, EMPTY, utf8(LABEL_BACKUP), 32);
  return subtle.importKey("raw", k, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** The associated data of a user's backup. */
export function backupAad(userId) {
  return lps(LABEL_BACKUP, userId);
}

/**
 * The backup plaintext object for a user: devices are { deviceId, keys }
 * (extractable device keys) or { device_id, dh_priv, sig_priv } already in
 * b64; epoch keys are { conversation, epoch, key } with key raw or b64.
 */
export async function backupPayload(userId, devices, epochKeys) {
  const outDevices = [];
  for (const d of devices) {
    if (d.keys) {
      const { dhPriv, sigPriv } = await exportDevicePrivate(d.keys);
      outDevices.push({ device_id: d.deviceId, dh_priv: b64encode(dhPriv), sig_priv: b64encode(sigPriv) });
    } else {
      outDevices.push({ device_id: d.device_id, dh_priv: d.dh_priv, sig_priv: d.sig_priv });
    }
  }
  return {
    v: 1,
    user_id: userId,
    devices: outDevices,
    epoch_keys: epochKeys.map((e) => ({
      conversation: e.conversation,
      epoch: e.epoch,
      key: typeof e.key === "string" ? e.key : b64encode(e.key),
    })),
  };
}

/**
 * Seal a backup: `payload` is the plaintext object (see backupPayload) or
 * its UTF-8 JSON bytes; its user_id must be `userId`. Returns { v: 1, nonce, blob }.
 * `nonce` is for vectors only.
 */
export async function sealBackup(recoveryKey, userId, payload, { nonce } = {}) {
  const pt = payload instanceof Uint8Array ? payload : utf8(JSON.stringify(payload));
  const parsed = JSON.parse(utf8decode(pt));
  if (parsed.v !== 1 || parsed.user_id !== userId) throw new Error("backup payload is not v1 for this user");
  const iv = nonce === undefined ? randomBytes(12) : bytesOf(nonce, "nonce");
  if (iv.length !== 12) throw new RangeError("nonce must be 12 bytes");
  const key = await backupKey(recoveryKey);
  const blob = await subtle.encrypt({ name: "AES-GCM", iv, additionalData: backupAad(userId), tagLength: 128 }, key, pt);
  return { v: 1, nonce: b64encode(iv), blob: b64encode(new Uint8Array(blob)) };
}

/**
 * Open a backup with the recovery key (raw bytes, or the formatted text).
 * Returns { payload, plaintext } (parsed object and the exact bytes) or throws.
 */
export async function openBackup(recoveryKey, userId, backup) {
  const raw = typeof recoveryKey === "string" ? parseRecoveryKey(recoveryKey) : recoveryKey;
  if (backup === null || typeof backup !== "object" || backup.v !== 1) throw new Error("not a v1 backup");
  const nonce = b64decode(backup.nonce);
  if (nonce.length !== 12) throw new Error("backup nonce must be 12 bytes");
  const key = await backupKey(raw);
  let pt;
  try {
    pt = new Uint8Array(
      await subtle.decrypt(
        { name: "AES-GCM", iv: nonce, additionalData: backupAad(userId), tagLength: 128 },
        key,
        b64decode(backup.blob),
      ),
    );
  } catch {
    throw new Error("backup cannot be opened with this recovery key");
  }
  const payload = JSON.parse(utf8decode(pt));
  if (payload.v !== 1 || payload.user_id !== userId) throw new Error("backup payload is not v1 for this user");
  return { payload, plaintext: pt };
}

// ---------------------------------------------------------------------------
// Cross-implementation vectors
// ---------------------------------------------------------------------------

/**
 * A deterministic byte source for vectors: HKDF-Expand of the seed, one
 * fresh info per call. Without a seed, the platform CSPRNG.
 */
async function vectorRandom(seed) {
  if (seed === undefined) return async (n) => randomBytes(n);
  const prk = await hkdfExtract(EMPTY, typeof seed === "string" ? utf8(seed) : seed);
  let counter = 0;
  return async (n) => hkdfExpand(prk, concat(utf8("cejchat/vectors/rng"), i2osp(counter++, 4)), n);
}

/**
 * Build a vectors document (docs/crypto-format.md, "Cross-implementation
 * vectors"). With `seed` the document is reproducible; without, every
 * random input is fresh.
 */
export async function buildVectors(producer = "browser", { seed } = {}) {
  const rand = await vectorRandom(seed);
  const specs = [
    { user_id: "u-alice", device_id: "d-alice-laptop" },
    { user_id: "u-alice", device_id: "d-alice-phone" },
    { user_id: "u-bob", device_id: "d-bob-1" },
    { user_id: "u-zoë", device_id: "d-zoë-téléphone" },
  ];
  const devices = [];
  const keysById = new Map();
  for (const spec of specs) {
    const dhPriv = await rand(32);
    const sigPriv = await rand(32);
    const keys = await importDeviceKeys({ dhPriv, sigPriv }, { extractable: true });
    keysById.set(spec.device_id, { ...spec, keys, dhPriv, sigPriv });
    devices.push({
      user_id: spec.user_id,
      device_id: spec.device_id,
      dh_priv: b64encode(dhPriv),
      dh_pub: b64encode(keys.dhPublic),
      sig_priv: b64encode(sigPriv),
      sig_pub: b64encode(keys.sigPublic),
      registration_sig: b64encode(await signRegistration(keys, spec.user_id, spec.device_id)),
    });
  }
  const dev = (id) => keysById.get(id);

  const epochKeys = [
    { conversation: "c-1", epoch: 1, key: await rand(32) },
    { conversation: "c-1", epoch: 2, key: await rand(32) },
    { conversation: "c-ü/2", epoch: 4294967296, key: await rand(32) },
    { conversation: "c-2", epoch: 0, key: await rand(32) },
    { conversation: "c-2", epoch: MAX_EPOCH, key: await rand(32) },
  ];
  const envelopeSpecs = [
    [0, "d-alice-laptop", "d-alice-laptop"],
    [0, "d-alice-laptop", "d-alice-phone"],
    [0, "d-alice-laptop", "d-bob-1"],
    [1, "d-bob-1", "d-alice-phone"],
    [1, "d-bob-1", "d-bob-1"],
    [2, "d-zoë-téléphone", "d-bob-1"],
    [2, "d-zoë-téléphone", "d-zoë-téléphone"],
    [3, "d-bob-1", "d-zoë-téléphone"],
    [4, "d-alice-phone", "d-bob-1"],
  ];
  const envelopes = [];
  for (const [e, sender, recipient] of envelopeSpecs) {
    const { conversation, epoch, key } = epochKeys[e];
    const ikmE = seed === undefined ? undefined : await rand(32);
    const env = await wrapEpochKey({
      epochKey: key,
      conversation,
      epoch,
      recipientDevice: recipient,
      recipientDhPub: dev(recipient).keys.dhPublic,
      senderDevice: sender,
      senderKeys: dev(sender).keys,
      ikmE,
    });
    envelopes.push({
      recipient_device: env.recipient_device,
      sender_device: env.sender_device,
      conversation: env.conversation,
      epoch: env.epoch,
      epoch_key: b64encode(key),
      enc: env.enc,
      ct: env.ct,
      sig: env.sig,
    });
  }

  // [epoch index, sender, client id, type, body, format version, meta]
  const messageSpecs = [
    [0, "d-alice-laptop", "m-0001", "text", { text: "Bonjour Bob, rendez-vous jeudi ?" }, 1, {}],
    [1, "d-bob-1", "01HZX3Q7A2", "text", { text: "Oui 👍 — « jeudi » à 14 h, \"salle B\"" }, 2, {}],
    [
      1, "d-alice-phone", "m-0002", "appointment", { title: "Entretien", notes: "" }, 2,
      { item: "rdv-42", event: "changed", starts_at: 1796000000 },
    ],
    [2, "d-zoë-téléphone", "m-ü", "text", { text: "" }, 2, {}],
    [
      3, "d-bob-1", "m-0", "action", { text: "epoch 0" }, 2,
      {
        status: "done", event: "status_changed", item: "é\u2028\u0000\"\\/\u{1F600}\t",
        due: -9007199254740991, A_b: [{ y: [], x: {} }, null, true, false, ""],
      },
    ],
    [4, "d-alice-phone", "m-max", "delete", { text: "époque 2⁵³ − 1" }, 2, { target_seq: 9007199254740991 }],
  ];
  const messages = [];
  for (const [e, sender, clientId, msgType, body, version, meta] of messageSpecs) {
    const { conversation, epoch, key } = epochKeys[e];
    const plaintext = JSON.stringify(body);
    const msg = await encryptMessage({
      epochKey: key,
      conversation,
      epoch,
      senderDevice: sender,
      senderKeys: dev(sender).keys,
      clientId,
      msgType,
      plaintext,
      meta,
      version,
      nonce: await rand(12),
    });
    messages.push({
      v: version,
      ...(version === 1 ? {} : { meta, meta_canonical: canonicalMetaText(meta) }),
      conversation,
      epoch,
      epoch_key: b64encode(key),
      sender_device: sender,
      client_id: clientId,
      msg_type: msgType,
      plaintext,
      nonce: msg.nonce,
      ciphertext: msg.ciphertext,
      sig: msg.sig,
    });
  }

  // [epoch index, creator device]
  const commitments = [];
  for (const [e, creator] of [[0, "d-alice-laptop"], [1, "d-bob-1"], [2, "d-zoë-téléphone"], [3, "d-bob-1"], [4, "d-alice-phone"]]) {
    const { conversation, epoch, key } = epochKeys[e];
    const commitment = await epochCommitment(key, conversation, epoch);
    const sig = await signCommitment(dev(creator).keys, conversation, epoch, creator, commitment);
    commitments.push({ conversation, epoch, epoch_key: b64encode(key), creator_device: creator, commitment: b64encode(commitment), sig: b64encode(sig) });
  }

  const member = (userId, deviceIds) => ({
    user_id: userId,
    sig_pubs: deviceIds.map((id) => b64encode(dev(id).keys.sigPublic)),
  });
  const safetyPairs = [
    [member("u-bob", ["d-bob-1"]), member("u-alice", ["d-alice-phone", "d-alice-laptop"])],
    [member("u-alice", ["d-alice-laptop", "d-alice-phone"]), member("u-zoë", ["d-zoë-téléphone"])],
    // "u-10" < "u-9" as UTF-8 bytes, while lp("u-9") < lp("u-10").
    [member("u-9", ["d-bob-1"]), member("u-10", ["d-alice-laptop"])],
    // U+FF5A < U+1F600 in code-point (UTF-8 byte) order, not in UTF-16 code units.
    [member("\u{1F600}-x", ["d-bob-1"]), member("\uFF5A-y", ["d-zoë-téléphone"])],
    [member("u-bob", ["d-bob-1"]), member("u-nobody", [])],
  ];
  const safetyNumbers = [];
  for (const [a, b] of safetyPairs) {
    safetyNumbers.push({ a, b, number: await safetyNumber(memberArg(a), memberArg(b)) });
  }

  const backupSpecs = [
    ["u-alice", ["d-alice-laptop", "d-alice-phone"], [0, 1]],
    ["u-zoë", ["d-zoë-téléphone"], [2]],
  ];
  const backups = [];
  for (const [userId, deviceIds, epochIdx] of backupSpecs) {
    const recoveryKey = await rand(32);
    const payload = await backupPayload(
      userId,
      deviceIds.map((id) => ({ deviceId: id, keys: dev(id).keys })),
      epochIdx.map((i) => epochKeys[i]),
    );
    const plaintext = JSON.stringify(payload);
    const backup = await sealBackup(recoveryKey, userId, utf8(plaintext), { nonce: await rand(12) });
    backups.push({ user_id: userId, recovery_key: formatRecoveryKey(recoveryKey), backup, plaintext });
  }

  return { producer, devices, envelopes, messages, commitments, safety_numbers: safetyNumbers, backups };
}

function memberArg(m) {
  return { userId: m.user_id, sigPubs: m.sig_pubs.map(b64decode) };
}

/**
 * Check a vectors document produced by either implementation: derive every
 * public key from its private key, verify (and re-create, Ed25519 being
 * deterministic) every signature, open every envelope with the recipient's
 * private key, decrypt (and re-encrypt) every message, recompute every
 * safety number and open every backup.
 *
 * Returns { ok, producer, counts, errors } and never throws for a bad
 * document; `errors` says what failed where.
 */
export async function checkVectors(doc) {
  const errors = [];
  const counts = { devices: 0, envelopes: 0, messages: 0, commitments: 0, safety_numbers: 0, backups: 0 };
  const fail = (where, msg) => errors.push(`${where}: ${msg}`);
  const section = (name) => {
    const list = doc?.[name];
    if (!Array.isArray(list) || list.length === 0) {
      fail(name, "missing or empty");
      return [];
    }
    return list;
  };
  if (doc?.producer !== "python" && doc?.producer !== "browser") fail("producer", `unexpected ${JSON.stringify(doc?.producer)}`);

  const byId = new Map();
  for (const [i, d] of section("devices").entries()) {
    const where = `devices[${i}] ${d?.device_id}`;
    try {
      const keys = await importDeviceKeys({ dhPriv: b64decode(d.dh_priv), sigPriv: b64decode(d.sig_priv) });
      if (!bytesEqual(keys.dhPublic, b64decode(d.dh_pub))) fail(where, "dh_pub is not the public key of dh_priv");
      if (!bytesEqual(keys.sigPublic, b64decode(d.sig_pub))) fail(where, "sig_pub is not the public key of sig_priv");
      const regSig = b64decode(d.registration_sig);
      if (!(await verifyRegistration(d.user_id, d.device_id, b64decode(d.dh_pub), b64decode(d.sig_pub), regSig))) {
        fail(where, "registration_sig does not verify");
      } else if (!bytesEqual(await signRegistration(keys, d.user_id, d.device_id), regSig)) {
        fail(where, "registration_sig verifies but differs from our deterministic Ed25519 signature");
      }
      if (byId.has(d.device_id)) fail(where, "duplicate device_id");
      byId.set(d.device_id, { ...d, keys });
      counts.devices++;
    } catch (err) {
      fail(where, `error: ${err.message}`);
    }
  }

  for (const [i, e] of section("envelopes").entries()) {
    const where = `envelopes[${i}] ${e?.conversation}/${e?.epoch} ${e?.sender_device}->${e?.recipient_device}`;
    try {
      const sender = byId.get(e.sender_device);
      const recipient = byId.get(e.recipient_device);
      if (!sender || !recipient) {
        fail(where, "unknown sender or recipient device");
        continue;
      }
      if (!(await verifyEnvelope(e, b64decode(sender.sig_pub)))) {
        fail(where, "sig does not verify");
        continue;
      }
      const info = envelopeInfo(e.conversation, e.epoch, e.recipient_device);
      const aad = envelopeAad(e.sender_device);
      const again = await sign(sender.keys.sigPrivate, envelopeSigBytes(info, aad, b64decode(e.enc), b64decode(e.ct)));
      if (!bytesEqual(again, b64decode(e.sig))) fail(where, "sig differs from our deterministic Ed25519 signature");
      const key = await openEnvelope(e, recipient.keys, b64decode(sender.sig_pub));
      if (!bytesEqual(key, b64decode(e.epoch_key))) fail(where, "opened epoch key differs from epoch_key");
      else counts.envelopes++;
    } catch (err) {
      fail(where, `error: ${err.message}`);
    }
  }

  for (const [i, m] of section("messages").entries()) {
    const where = `messages[${i}] ${m?.conversation}/${m?.epoch} ${m?.client_id}`;
    try {
      const sender = byId.get(m.sender_device);
      if (!sender) {
        fail(where, "unknown sender device");
        continue;
      }
      if (typeof m.plaintext !== "string") {
        fail(where, "plaintext must be the UTF-8 JSON text, as a string");
        continue;
      }
      const version = m.v === undefined ? 1 : m.v;
      if (version >= 2 && canonicalMetaText(m.meta) !== m.meta_canonical) {
        fail(where, "meta_canonical is not the canonical encoding of meta");
        continue;
      }
      if (version >= 2 && Object.keys(m.meta).length > 0) counts.messagesWithMeta = (counts.messagesWithMeta ?? 0) + 1;
      const epochKey = b64decode(m.epoch_key);
      const pt = await decryptMessage(m, epochKey, b64decode(sender.sig_pub));
      if (utf8decode(pt) !== m.plaintext) {
        fail(where, "decrypted plaintext differs");
        continue;
      }
      JSON.parse(m.plaintext);
      const again = await encryptMessage({
        epochKey,
        conversation: m.conversation,
        epoch: m.epoch,
        senderDevice: m.sender_device,
        senderKeys: sender.keys,
        clientId: m.client_id,
        msgType: m.msg_type,
        plaintext: m.plaintext,
        meta: version === 1 ? {} : m.meta,
        version,
        nonce: b64decode(m.nonce),
      });
      if (again.ciphertext !== m.ciphertext) fail(where, "re-encryption with the same nonce gives another ciphertext");
      else if (again.sig !== m.sig) fail(where, "sig differs from our deterministic Ed25519 signature");
      else counts.messages++;
    } catch (err) {
      fail(where, `error: ${err.message}`);
    }
  }

  for (const [i, cm] of section("commitments").entries()) {
    const where = `commitments[${i}] ${cm?.conversation}/${cm?.epoch} ${cm?.creator_device}`;
    try {
      const creator = byId.get(cm.creator_device);
      if (!creator) {
        fail(where, "unknown creator device");
        continue;
      }
      const value = b64decode(cm.commitment);
      const again = await epochCommitment(b64decode(cm.epoch_key), cm.conversation, cm.epoch);
      if (!bytesEqual(again, value)) fail(where, "commitment is not the epoch key's");
      else if (!(await verifyCommitment(b64decode(creator.sig_pub), cm.conversation, cm.epoch, cm.creator_device, value, b64decode(cm.sig)))) fail(where, "sig does not verify");
      else if (!bytesEqual(await signCommitment(creator.keys, cm.conversation, cm.epoch, cm.creator_device, value), b64decode(cm.sig))) fail(where, "sig differs from our deterministic Ed25519 signature");
      else counts.commitments++;
    } catch (err) {
      fail(where, `error: ${err.message}`);
    }
  }

  for (const [i, s] of section("safety_numbers").entries()) {
    const where = `safety_numbers[${i}] ${s?.a?.user_id}/${s?.b?.user_id}`;
    try {
      const a = memberArg(s.a);
      const b = memberArg(s.b);
      const number = await safetyNumber(a, b);
      const swapped = await safetyNumber(b, a);
      if (number !== s.number) fail(where, `expected ${JSON.stringify(s.number)}, computed ${JSON.stringify(number)}`);
      else if (swapped !== number) fail(where, "depends on the order of the members");
      else counts.safety_numbers++;
    } catch (err) {
      fail(where, `error: ${err.message}`);
    }
  }

  for (const [i, bk] of section("backups").entries()) {
    const where = `backups[${i}] ${bk?.user_id}`;
    try {
      const recoveryKey = parseRecoveryKey(bk.recovery_key);
      if (formatRecoveryKey(recoveryKey) !== bk.recovery_key) {
        fail(where, "recovery_key is not in the canonical XXXX-XXXX-... form");
      }
      const { payload, plaintext } = await openBackup(recoveryKey, bk.user_id, bk.backup);
      if (typeof bk.plaintext !== "string" || utf8decode(plaintext) !== bk.plaintext) {
        fail(where, "opened plaintext differs from plaintext");
        continue;
      }
      for (const d of payload.devices ?? []) {
        const known = byId.get(d.device_id);
        if (known && (known.dh_priv !== d.dh_priv || known.sig_priv !== d.sig_priv)) {
          fail(where, `device ${d.device_id} keys differ from the devices list`);
        }
      }
      if (!Array.isArray(payload.devices) || !Array.isArray(payload.epoch_keys)) {
        fail(where, "payload lacks devices or epoch_keys");
        continue;
      }
      counts.backups++;
    } catch (err) {
      fail(where, `error: ${err.message}`);
    }
  }

  if (!counts.messagesWithMeta) fail("messages", "expected at least one version 2 message with a non-empty meta");
  return { ok: errors.length === 0, producer: doc?.producer, counts, errors };
}
