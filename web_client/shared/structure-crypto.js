/**
 * The structure key's format in the browser (docs/crypto-format.md, "Structure key";
 * the same as chat_server/crypto/structure_key.py, checked both ways by
 * tests/crypto/structure-key-v1.json and tests/web/test_crypto_browser.py).
 *
 *   key_id    = b64url(SHA-256(lp("cejchat/structure-key-id/v1") lp(public_key))[0:16])
 *   statement = lp("cejchat/structure-key/v1") lp(structure) lp(public_key) lp(creator_device)
 *   grant     = HPKE seal of the 32-byte private scalar to a staff device,
 *               info = lp("cejchat/structure-grant/v1") lp(structure) lp(key_id) lp(recipient_device),
 *               aad = lp(sender_device), signed by the sender over
 *               lp("cejchat/structure-grant-sig/v1") lp(info) lp(aad) lp(enc) lp(ct)
 *   endorsement = Ed25519(endorsing staff device) over
 *               lp("cejchat/structure-endorsement/v1") lp(structure) lp(key_id)
 *               lp(public_key) lp(endorser_device)
 * An epoch envelope for the structure key is an ordinary envelope whose
 * recipient_device is "structure:" + key_id.
 */

import * as C from "./crypto.js";

const LABEL_ID = "cejchat/structure-key-id/v1";
const LABEL_KEY = "cejchat/structure-key/v1";
const LABEL_GRANT = "cejchat/structure-grant/v1";
const LABEL_GRANT_SIG = "cejchat/structure-grant-sig/v1";
const LABEL_ENDORSEMENT = "cejchat/structure-endorsement/v1";
export const RECIPIENT_PREFIX = "structure:";

/** The structure key's id (22 characters) from its raw public key. */
export async function structureKeyId(publicRaw) {
  if (!(publicRaw instanceof Uint8Array) || publicRaw.length !== 32) throw new RangeError("structure public key must be 32 bytes");
  return C.b64encode((await C.sha256(C.lps(LABEL_ID, publicRaw))).slice(0, 16));
}

/** The recipient id of an epoch envelope sealed to the structure key. */
export function structureRecipient(keyId) {
  return RECIPIENT_PREFIX + keyId;
}

export function keyStatement(structure, publicRaw, creatorDevice) {
  return C.lps(LABEL_KEY, structure, publicRaw, creatorDevice);
}

/** The creating device's signature over the structure key. */
export async function signStructureKey(keys, structure, publicRaw, creatorDevice) {
  return C.sign(keys.sigPrivate, keyStatement(structure, publicRaw, creatorDevice));
}

/** Whether `sig` is the creating device's signature of the structure key; never throws. */
export async function verifyStructureKey(creatorSigPub, structure, publicRaw, creatorDevice, sig) {
  try {
    if (publicRaw.length !== 32) return false;
    return await C.verify(creatorSigPub, sig, keyStatement(structure, publicRaw, creatorDevice));
  } catch {
    return false;
  }
}

/** The bytes a staff device signs to endorse the structure key it verified and pinned. */
export function endorsementStatement(structure, keyId, publicRaw, endorserDevice) {
  return C.lps(LABEL_ENDORSEMENT, structure, keyId, publicRaw, endorserDevice);
}

/** This staff device's endorsement of the structure key (its id computed here). */
export async function signEndorsement(keys, structure, publicRaw, endorserDevice) {
  return C.sign(keys.sigPrivate, endorsementStatement(structure, await structureKeyId(publicRaw), publicRaw, endorserDevice));
}

/**
 * Whether `sig` is `endorserDevice`'s endorsement of the structure key whose
 * id is `keyId` (false too when `keyId` is not the hash of `publicRaw`); never throws.
 */
export async function verifyEndorsement(endorserSigPub, structure, keyId, publicRaw, endorserDevice, sig) {
  try {
    if ((await structureKeyId(publicRaw)) !== keyId) return false;
    return await C.verify(endorserSigPub, sig, endorsementStatement(structure, keyId, publicRaw, endorserDevice));
  } catch {
    return false;
  }
}

function grantInfo(structure, keyId, recipientDevice) {
  return C.lps(LABEL_GRANT, structure, keyId, recipientDevice);
}

function grantSigBytes(grant, enc, ct) {
  const info = grantInfo(grant.structure, grant.key_id, grant.recipient_device);
  return C.lps(LABEL_GRANT_SIG, info, C.lp(grant.sender_device), enc, ct);
}

/**
 * Seal the structure's private scalar `privateRaw` (32 bytes) to a staff
 * device; returns the grant JSON. `ikmE` fixes the HPKE ephemeral (vectors only).
 */
export async function wrapGrant({ privateRaw, publicRaw, structure, senderKeys, senderDevice, recipientDevice, recipientDhPub, ikmE }) {
  const keyId = await structureKeyId(publicRaw);
  const info = grantInfo(structure, keyId, recipientDevice);
  const { enc, ct } = await C.sealBase(recipientDhPub, info, C.lp(senderDevice), privateRaw, ikmE === undefined ? {} : { ikmE });
  const grant = { structure, key_id: keyId, recipient_device: recipientDevice, sender_device: senderDevice };
  const sig = await C.sign(senderKeys.sigPrivate, grantSigBytes(grant, enc, ct));
  return { ...grant, enc: C.b64encode(enc), ct: C.b64encode(ct), sig: C.b64encode(sig) };
}

/**
 * Open a grant addressed to this device: its sender's signature, HPKE, and
 * the scalar must give `publicRaw`. Returns { privateKey (extractable, to
 * hand it on), privateRaw, publicRaw }; throws otherwise.
 */
export async function openGrant(grant, recipientKeys, senderSigPub, publicRaw) {
  for (const f of ["structure", "key_id", "recipient_device", "sender_device", "enc", "ct", "sig"]) {
    if (typeof grant[f] !== "string") throw new TypeError(`grant.${f} must be a string`);
  }
  if (grant.key_id !== (await structureKeyId(publicRaw))) throw new Error("the grant is for another structure key");
  const enc = C.b64decode(grant.enc);
  const ct = C.b64decode(grant.ct);
  if (!(await C.verify(senderSigPub, C.b64decode(grant.sig), grantSigBytes(grant, enc, ct)))) throw new Error("grant signature is invalid");
  const info = grantInfo(grant.structure, grant.key_id, grant.recipient_device);
  const privateRaw = await C.openBase(enc, recipientKeys.dhPrivate, recipientKeys.dhPublic, info, C.lp(grant.sender_device), ct);
  if (privateRaw.length !== 32) throw new Error("the grant does not hold a 32-byte key");
  const pair = await C.importX25519Private(privateRaw, { extractable: true });
  if (!C.bytesEqual(pair.publicRaw, publicRaw)) throw new Error("the grant holds another key than the structure key");
  return { privateKey: pair.privateKey, privateRaw, publicRaw };
}
