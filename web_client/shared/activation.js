/**
 * Activation carries the keys (docs/crypto-format.md, "Activation"; issue #10
 * point 1). The counsellor's console makes the activation code, sends the
 * server only its proof (PBKDF2-SHA-256, 600,000 iterations), opens the
 * conversation's first epoch and leaves its key in the activation box, sealed
 * under the code's box key. The beneficiary's first phone proves the same code,
 * opens the box and keeps each key that matches its epoch's signed commitment:
 * what was written before activation is readable at once, counsellor offline.
 * Mirrors chat_server/crypto/activation.py.
 */

import * as C from "./crypto.js";

const LABEL = "cejchat/activation/v1";
export const ITERATIONS = 600000;
export const CODE_LEN = 16;
const ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789";

/** Upper-cased, letters and digits only: how a code is compared. */
export function normaliseCode(code) {
  return String(code).toUpperCase().replace(/[^A-Z0-9]/g, "");
}

/** A code the console made (16 symbols): sent as its proof, never as is. */
export function isClientCode(code) {
  return normaliseCode(code).length === CODE_LEN;
}

/** A fresh code, `XXXX-XXXX-XXXX-XXXX` (80 bits: 32 symbols, 5 bits each). */
export function newCode() {
  const bytes = C.randomBytes(CODE_LEN);
  const symbols = [...bytes].map((b) => ALPHABET[b & 31]).join("");
  return symbols.match(/.{4}/g).join("-");
}

/** `{ proof, proofText, boxKey }` of a code (PBKDF2-SHA-256, 64 bytes). */
export async function derive(code, iterations = ITERATIONS) {
  const cleaned = normaliseCode(code);
  if (cleaned.length !== CODE_LEN || [...cleaned].some((c) => !ALPHABET.includes(c))) throw new Error("not a client-made activation code");
  const base = await crypto.subtle.importKey("raw", C.utf8(cleaned), "PBKDF2", false, ["deriveBits"]);
  const bits = new Uint8Array(await crypto.subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: C.utf8(LABEL), iterations }, base, 512));
  const proof = bits.slice(0, 32);
  return { proof, proofText: C.b64encode(proof), boxKey: bits.slice(32) };
}

async function aesKey(raw) {
  return crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
}

/**
 * The box `{v, nonce, box}` of `keys` (Map epoch -> 32 raw bytes), and the id of
 * the structure key the console sealed the epoch to (`structureKey`), which the
 * phone pins.
 */
export async function sealBox(boxKey, conversation, keys, { nonce, structureKey } = {}) {
  const entries = [...keys.entries()].sort((a, b) => a[0] - b[0]).map(([epoch, key]) => ({ epoch, key: C.b64encode(key) }));
  const content = { v: 1, keys: entries };
  if (structureKey) content.structure_key = structureKey;
  const plaintext = C.utf8(JSON.stringify(content));
  const iv = nonce || C.randomBytes(12);
  const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: C.lps(LABEL, conversation) }, await aesKey(boxKey), plaintext);
  return { v: 1, nonce: C.b64encode(iv), box: C.b64encode(new Uint8Array(sealed)) };
}

/** Map epoch -> raw key from a box; throws if the code (box key) or the box is wrong. */
export async function openBox(boxKey, conversation, doc) {
  return (await openBoxContents(boxKey, conversation, doc)).keys;
}

/** { keys: Map epoch -> raw key, structureKey: id or null } from a box. */
export async function openBoxContents(boxKey, conversation, doc) {
  if (!doc || doc.v !== 1) throw new Error("unknown activation box version");
  const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv: C.b64decode(doc.nonce), additionalData: C.lps(LABEL, conversation) }, await aesKey(boxKey), C.b64decode(doc.box));
  const data = JSON.parse(C.utf8decode(new Uint8Array(plain)));
  if (!data || data.v !== 1 || !Array.isArray(data.keys)) throw new Error("unknown activation box contents");
  const out = new Map();
  for (const e of data.keys) {
    const key = C.b64decode(e.key);
    if (Number.isSafeInteger(e.epoch) && e.epoch > 0 && key.length === 32) out.set(e.epoch, key);
  }
  return { keys: out, structureKey: typeof data.structure_key === "string" ? data.structure_key : null };
}

/**
 * The console: open `conversation`'s first epoch now (KeyManager `keys`) and
 * leave its key in the activation box sealed under `boxKey`.
 */
export async function leaveActivationBox(keys, api, conversation, boxKey) {
  let sealed = null;
  keys.rawEpochHooks.set(conversation, async (epoch, raw, { structureKey } = {}) => {
    sealed = await sealBox(boxKey, conversation, new Map([[epoch, raw]]), { structureKey });
  });
  try {
    await keys.rotate(conversation);
  } finally {
    keys.rawEpochHooks.delete(conversation);
  }
  if (sealed) await api.putActivationBox(conversation, sealed);
  return !!sealed;
}

/**
 * The console, when it issues a code again before activation: seal every
 * epoch key of `conversation` this device can open (each checked against its
 * epoch's signed commitment, as for a re-wrap) into a new activation box
 * under the new code's `boxKey`, replacing the box of the old code. With no
 * epoch yet, open the first one (leaveActivationBox). True if a box was left.
 */
export async function resealActivationBox(keys, api, conversation, boxKey) {
  const listing = await keys.conversationDevices(conversation);
  if (!listing.epoch) return leaveActivationBox(keys, api, conversation, boxKey);
  const answer = await api.envelopes(conversation);
  const memo = {};
  memo.commitments = await keys._commitments(conversation, answer, listing, memo);
  const raws = new Map();
  try {
    for (const [epoch, envs] of keys._envelopesByEpoch(conversation, answer, listing.epoch)) {
      const raw = await keys._openTrusted(conversation, epoch, envs, listing, memo);
      if (raw) raws.set(epoch, raw);
    }
    if (raws.size === 0) return false;
    // Name the structure key this console seals to, as leaveActivationBox does: the phone pins it.
    let structureKey = null;
    if (listing.structureKey) {
      try {
        structureKey = (await keys.structure.verifiedKey(listing.structureKey)).keyId;
      } catch {
        structureKey = null; // not verified here: not named (the phone pins nothing from the box)
      }
    }
    await api.putActivationBox(conversation, await sealBox(boxKey, conversation, raws, { structureKey }));
    return true;
  } finally {
    for (const raw of raws.values()) raw.fill(0);
  }
}

/**
 * The first phone: take the keys of the activation box that match their
 * epoch's signed commitment, keep them on the device, drop the box.
 * Returns how many keys were taken (0 if there is no box).
 */
export async function takeActivationBox(keys, api, conversation, boxKey) {
  let doc;
  try {
    doc = await api.activationBox(conversation);
  } catch (err) {
    if (err.status === 404) return 0;
    throw err;
  }
  const { keys: boxed, structureKey } = await openBoxContents(boxKey, conversation, doc);
  // The structure key the counsellor's console sealed to: pinned, so the first one is not blind trust.
  if (structureKey) await keys.structure.pinFromBox(structureKey);
  const listing = await keys.conversationDevices(conversation);
  const answer = await api.envelopes(conversation);
  const commitments = await keys._commitments(conversation, answer, listing, {});
  let taken = 0;
  for (const [epoch, raw] of boxed) {
    const committed = commitments.get(epoch);
    if (committed && (await C.keyMatchesCommitment(raw, conversation, epoch, committed))) {
      await keys.storeEpochKey(conversation, epoch, raw);
      taken++;
    } else {
      raw.fill(0);
      console.warn("activation box: a key does not match its epoch's commitment", epoch);
    }
  }
  await api.dropActivationBox(conversation);
  return taken;
}
