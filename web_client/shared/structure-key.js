/**
 * The structure key in the browser (docs/security.md, "The structure key").
 *
 * One X25519 key per structure: every epoch is also sealed to it, so that a
 * counsellor who takes over a conversation reads its whole history at once,
 * with the previous counsellor and the young person offline. A supervisor's
 * console makes it when the structure has none, and hands it (a grant sealed
 * to the device) to a staff device that waits for it when the supervisor
 * approves that device (a click: never on the server's word alone); a staff
 * device opens its grant and then the conversation's structure envelopes.
 *
 * Trust: the key is sealed to only if its id is the hash of its public half
 * and it is signed by the registered device that made it (resolved through
 * the key API, self-signed registration checked), a device of a supervisor
 * of the caller's own structure when the caller is staff. A key that does not
 * verify is never sealed to: creating an epoch fails
 * (`structure_key_unverified`) and the thread shows a security event.
 * The first key that verifies is pinned, one pin per user (IndexedDB `kv`):
 * a different key later, or a key that names another structure, is refused
 * the same way (`structure_key_changed`); once a pin exists, a listing with
 * no structure key is refused too (`structure_key_missing`, see e2ee.js).
 * The private half is kept in memory only (the grant is opened again on the
 * next start); it is an extractable CryptoKey, to be handed on.
 *
 * Endorsements (docs/security.md, "Endorsements"): a counsellor's or
 * supervisor's device signs the key it verified and pinned (at the console's
 * login, or when it first seals to it), once per key. A young person's app
 * pins a key for the first time only if a device of the other member of the
 * conversation (her counsellor, whose devices the safety number covers; or
 * one this browser saw listed as such before, her previous counsellor's)
 * endorsed it: else `structure_key_unendorsed`, nothing pinned, nothing sealed.
 * The id from the activation box is a pin already (no endorsement asked).
 */

import * as C from "./crypto.js";
import * as S from "./structure-crypto.js";
import { idbGet, idbPut } from "./idb.js";

export class StructureKeyring {
  /** `keys`: the KeyManager (device keys, resolveDevice, the API). */
  constructor(keys) {
    this.keys = keys;
    this.pair = null; // { keyId, privateKey, privateRaw, publicRaw }
    this.syncing = null;
    this.onChange = null; // () => void: a grant was opened (threads can be read again)
    this.onWaiting = null; // (devices) => void: staff devices waiting for the supervisor's approval
    this.waiting = [];
    this.view = null;
    this.endorsing = new Map(); // key id -> the endorsement request (once per key and session)
  }

  /** Whether this device is a counsellor's or supervisor's (they pin on the creator's signature and endorse). */
  get staff() {
    return this.keys.role === "counsellor" || this.keys.role === "supervisor";
  }

  get api() {
    return this.keys.api;
  }

  /**
   * A structure key JSON that verifies: { recipient, keyId, publicRaw }.
   * Throws an Error with code "structure_key_unverified" otherwise,
   * "structure_key_changed" if another key is pinned, and, for a young
   * person's first pin, "structure_key_unendorsed" unless one of
   * `key.endorsements` verifies under a device of another member of
   * `listing` (conversationDevices(): registrations checked). A staff device
   * endorses the key once pinned.
   */
  async verifiedKey(key, listing = null) {
    const fail = () => Object.assign(new Error("the structure key does not verify"), { code: "structure_key_unverified" });
    if (!key || typeof key.public_key !== "string" || typeof key.key_id !== "string") throw fail();
    let publicRaw;
    try {
      publicRaw = C.b64decode(key.public_key);
    } catch {
      throw fail();
    }
    if (publicRaw.length !== 32 || (await S.structureKeyId(publicRaw)) !== key.key_id) throw fail();
    const creator = await this.keys.resolveDevice(null, key.creator_device);
    if (!creator || creator.userId !== key.creator_user) throw fail();
    let sig;
    try {
      sig = C.b64decode(key.sig);
    } catch {
      throw fail();
    }
    if (!(await S.verifyStructureKey(creator.sigPub, key.structure, publicRaw, key.creator_device, sig))) throw fail();
    // Pinned on first use, one pin per user whatever structure the key names: the
    // key seen first is the only one sealed to (a key naming another structure is
    // not a way around the pin).
    const pinId = `structure-pin|${this.keys.userId}`;
    const pinned = (await idbGet("kv", pinId)) || (await idbGet("kv", `structure-pin-box|${this.keys.userId}`));
    if (!pinned) {
      if (!this.staff && !(await this.endorsedByPeer(key, publicRaw, listing))) {
        throw Object.assign(new Error("no device of the counsellor endorsed the structure key"), { code: "structure_key_unendorsed" });
      }
      await idbPut("kv", pinId, { keyId: key.key_id, structure: key.structure, publicKey: key.public_key, at: Date.now() / 1000 });
    } else if (pinned.keyId !== key.key_id || (pinned.structure && pinned.structure !== key.structure)) {
      throw Object.assign(new Error(`the structure key changed from ${pinned.keyId} to ${key.key_id}`), { code: "structure_key_changed" });
    }
    if (this.staff) await this.endorse(key, publicRaw);
    return { recipient: S.structureRecipient(key.key_id), keyId: key.key_id, publicRaw };
  }

  /**
   * Whether one of `key.endorsements` verifies under a device of the other
   * member of `listing`'s conversation: listed now, or seen listed before by
   * this browser (the previous counsellor's, after a transfer).
   */
  async endorsedByPeer(key, publicRaw, listing) {
    const peers = listing?.conversation ? await this.keys.peerMembers(listing.conversation) : new Map();
    for (const d of listing?.devices || []) {
      if (d.group === "member" && d.userId !== this.keys.userId) peers.set(d.deviceId, d);
    }
    for (const e of Array.isArray(key.endorsements) ? key.endorsements : []) {
      const dev = peers.get(e?.device_id);
      if (!dev || dev.userId !== e.user_id || typeof e.sig !== "string") continue;
      let sig;
      try {
        sig = C.b64decode(e.sig);
      } catch {
        continue;
      }
      if (await S.verifyEndorsement(dev.sigPub, key.structure, key.key_id, publicRaw, e.device_id, sig)) return true;
    }
    return false;
  }

  /**
   * This staff device signs the key it pinned (POST /api/structure-key/endorsements),
   * once per key: nothing if the listing shows it did already. A failure is
   * logged, not thrown (sealing goes on; the next pin check endorses again).
   */
  endorse(key, publicRaw) {
    const mine = (key.endorsements || []).some((e) => e?.device_id === this.keys.deviceId);
    if (key.endorsed === true || mine) this.endorsing.set(key.key_id, Promise.resolve());
    if (!this.endorsing.has(key.key_id)) {
      const job = (async () => {
        const sig = await S.signEndorsement(this.keys.device, key.structure, publicRaw, this.keys.deviceId);
        await this.api.endorseStructureKey({ structure: key.structure, key_id: key.key_id, device_id: this.keys.deviceId, sig: C.b64encode(sig) });
      })().catch((err) => {
        this.endorsing.delete(key.key_id);
        console.warn("structure key not endorsed", err.message);
      });
      this.endorsing.set(key.key_id, job);
    }
    return this.endorsing.get(key.key_id);
  }

  /** True once this user has pinned a structure key (or its id, from the activation box). */
  async pinned() {
    return !!((await idbGet("kv", `structure-pin|${this.keys.userId}`)) || (await idbGet("kv", `structure-pin-box|${this.keys.userId}`)));
  }

  /**
   * A young person's first phone: pin the structure key id the counsellor's
   * console put in the activation box (the key is then checked against it at
   * first use, instead of trusted blindly).
   */
  async pinFromBox(keyId) {
    if (typeof keyId === "string" && keyId) await idbPut("kv", `structure-pin-box|${this.keys.userId}`, { keyId, at: Date.now() / 1000 });
  }

  /** Open this device's grant of `view` (GET /api/structure-key) if not done yet; true if new. */
  async openGrant(view) {
    if (!view?.key || !view.grant) return false;
    if (this.pair && this.pair.keyId === view.key.key_id) return false;
    const { publicRaw, keyId } = await this.verifiedKey(view.key);
    const sender = await this.keys.resolveDevice(null, view.grant.sender_device);
    if (!sender) return false;
    try {
      const opened = await S.openGrant(view.grant, this.keys.device, sender.sigPub, publicRaw);
      this.pair = { keyId, ...opened };
      return true;
    } catch (err) {
      console.warn("structure key grant refused", err.message);
      return false;
    }
  }

  /**
   * Fetch the structure key; open this device's grant; on a supervisor's
   * console, make the key when there is none, and list the staff devices
   * waiting for it (`waiting`, `onWaiting`): the supervisor approves each one
   * (approve()), nothing is handed on without that click. Returns
   * { opened, waiting } (counts). Only for staff.
   */
  sync(user) {
    if (this.syncing) return this.syncing;
    this.syncing = this._sync(user).finally(() => {
      this.syncing = null;
    });
    return this.syncing;
  }

  async _sync(user) {
    if (!user || (user.role !== "counsellor" && user.role !== "supervisor") || !this.keys.device) return { opened: 0, handed: 0 };
    let view = await this.api.structureKey();
    if (!view.key && user.role === "supervisor") {
      await this.create(view.structure);
      view = await this.api.structureKey();
    }
    if (view.key) {
      // Pinned (and endorsed) at login, grant or not: so the young people's apps find
      // this device's endorsement before their first pin (docs/security.md).
      await this.verifiedKey(view.key).catch((err) => console.warn("structure key refused", err.code || err.message));
    }
    const opened = (await this.openGrant(view)) ? 1 : 0;
    this.view = view;
    this.waiting = [];
    if (user.role === "supervisor" && this.pair) {
      for (const d of view.waiting || []) {
        const dev = await this.keys.resolveDevice(null, d.device_id);
        // Only a device whose self-signed registration verifies is ever offered.
        if (dev && dev.userId === d.user_id && d.device_id !== this.keys.deviceId) this.waiting.push({ ...d, dhPub: dev.dhPub });
      }
    }
    try {
      this.onWaiting?.(this.waiting);
    } catch (err) {
      console.warn("structure key waiting handler failed", err);
    }
    if (opened) {
      try {
        this.onChange?.();
      } catch (err) {
        console.warn("structure key change handler failed", err);
      }
    }
    return { opened, waiting: this.waiting.length };
  }

  /** The supervisor approved `deviceId` (listed in `waiting`): hand it the key. Returns whether it was added. */
  async approve(deviceId) {
    const d = (this.waiting || []).find((w) => w.device_id === deviceId);
    if (!d || !this.pair) throw Object.assign(new Error("this device does not wait for the structure key"), { code: "not_waiting" });
    const grant = await S.wrapGrant({
      privateRaw: this.pair.privateRaw,
      publicRaw: this.pair.publicRaw,
      structure: this.view.structure,
      senderKeys: this.keys.device,
      senderDevice: this.keys.deviceId,
      recipientDevice: d.device_id,
      recipientDhPub: d.dhPub,
    });
    const answer = await this.api.addStructureGrants([grant]);
    this.waiting = this.waiting.filter((w) => w.device_id !== deviceId);
    return (answer.added || 0) > 0;
  }

  /** Make the structure key, signed by this device, with a grant to itself. */
  async create(structure) {
    const generated = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
    const privateRaw = await C.exportPrivateRaw(generated.privateKey);
    const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", generated.publicKey));
    const device = this.keys.device;
    const grant = await S.wrapGrant({ privateRaw, publicRaw, structure, senderKeys: device, senderDevice: this.keys.deviceId, recipientDevice: this.keys.deviceId, recipientDhPub: device.dhPublic });
    const sig = await S.signStructureKey(device, structure, publicRaw, this.keys.deviceId);
    try {
      await this.api.createStructureKey(C.b64encode(publicRaw), C.b64encode(sig), grant);
    } catch (err) {
      if (err.code !== "structure_key_exists") throw err; // another supervisor's console was first
    } finally {
      privateRaw.fill(0);
    }
  }

  /** The private half as HPKE recipient keys, if this device holds the key `keyId`. */
  recipientKeys(keyId) {
    if (!this.pair || this.pair.keyId !== keyId) return null;
    return { dhPrivate: this.pair.privateKey, dhPublic: this.pair.publicRaw };
  }
}
