/**
 * The structure key in the browser (docs/security.md, "The structure key").
 *
 * One X25519 key per structure: every epoch is also sealed to it, so that a
 * counsellor who takes over a conversation reads its whole history at once,
 * with the previous counsellor and the young person offline. A supervisor's
 * console makes it when the structure has none, and hands it (a grant sealed
 * to the device) to each staff device that waits for it; a staff device opens
 * its grant and then the conversation's structure envelopes.
 *
 * Trust: the key is sealed to only if its id is the hash of its public half
 * and it is signed by the registered device that made it (resolved through
 * the key API, self-signed registration checked), a device of a supervisor
 * of the caller's own structure when the caller is staff. A key that does not
 * verify is never sealed to: creating an epoch fails
 * (`structure_key_unverified`) and the thread shows a security event.
 * The private half is kept in memory only (the grant is opened again on the
 * next start); it is an extractable CryptoKey, to be handed on.
 */

import * as C from "./crypto.js";
import * as S from "./structure-crypto.js";

export class StructureKeyring {
  /** `keys`: the KeyManager (device keys, resolveDevice, the API). */
  constructor(keys) {
    this.keys = keys;
    this.pair = null; // { keyId, privateKey, privateRaw, publicRaw }
    this.syncing = null;
    this.onChange = null; // () => void: a grant was opened (threads can be read again)
  }

  get api() {
    return this.keys.api;
  }

  /**
   * A structure key JSON that verifies: { recipient, keyId, publicRaw }.
   * Throws an Error with code "structure_key_unverified" otherwise.
   */
  async verifiedKey(key) {
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
    return { recipient: S.structureRecipient(key.key_id), keyId: key.key_id, publicRaw };
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
   * console, make the key when there is none and hand it to waiting staff
   * devices (the supervisor's console doing it is the approval). Returns
   * { opened, handed } (counts). Only for staff.
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
    const opened = (await this.openGrant(view)) ? 1 : 0;
    let handed = 0;
    if (user.role === "supervisor" && this.pair && (view.waiting || []).length) handed = await this.handOut(view);
    if (opened) {
      try {
        this.onChange?.();
      } catch (err) {
        console.warn("structure key change handler failed", err);
      }
    }
    return { opened, handed };
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

  /** Hand the key to the staff devices `view.waiting` lists with a registration that verifies. */
  async handOut(view) {
    const grants = [];
    for (const d of view.waiting || []) {
      const dev = await this.keys.resolveDevice(null, d.device_id);
      if (!dev || dev.userId !== d.user_id) continue;
      grants.push(
        await S.wrapGrant({
          privateRaw: this.pair.privateRaw,
          publicRaw: this.pair.publicRaw,
          structure: view.structure,
          senderKeys: this.keys.device,
          senderDevice: this.keys.deviceId,
          recipientDevice: d.device_id,
          recipientDhPub: dev.dhPub,
        }),
      );
    }
    if (!grants.length) return 0;
    const answer = await this.api.addStructureGrants(grants);
    return answer.added || 0;
  }

  /** The private half as HPKE recipient keys, if this device holds the key `keyId`. */
  recipientKeys(keyId) {
    if (!this.pair || this.pair.keyId !== keyId) return null;
    return { dhPrivate: this.pair.privateKey, dhPublic: this.pair.publicRaw };
  }
}
