/**
 * End-to-end keys in the browser, on top of crypto.js and the key API.
 *
 * Storage (IndexedDB, see idb.js), nothing raw at rest:
 *  - device private keys (X25519, Ed25519) are non-extractable CryptoKeys;
 *  - epoch keys are non-extractable AES-256-GCM CryptoKeys (encrypt+decrypt).
 * Raw bytes exist only in memory, briefly:
 *  - a device's private bytes once, at setup: the keys are generated
 *    extractable, sealed into the recovery backup (recovery key shown once,
 *    never stored), then imported again as non-extractable and only those
 *    are stored;
 *  - an epoch key's bytes when this device creates an epoch, or re-opens its
 *    own envelope from the server to re-wrap it for another device.
 * A restored device becomes the backed-up device again (same device id; the
 * caller logs in again with it), so every envelope ever addressed to it on
 * the server opens again, and the backup never needs the recovery key later.
 */

import * as C from "./crypto.js";
import { idbGet, idbPut } from "./idb.js";
import { ApiError } from "./api.js";
import { urlToStd, stdToUrl } from "./wire.js";

const { b64encode, b64decode } = C;

export class KeyError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

async function aesKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

function devicesOf(listing) {
  const out = [];
  for (const group of [listing.members || [], listing.escrow || []]) {
    for (const member of group) {
      for (const d of member.devices || []) out.push({ ...d, user_id: d.user_id || member.user_id, role: member.role });
    }
  }
  return out;
}

export class KeyManager {
  constructor({ api, userId, deviceId }) {
    this.api = api;
    this.userId = userId;
    this.deviceId = deviceId;
    this.device = null;
    this.epochKeys = new Map();
    this.fetching = new Map();
    this.peerDevices = new Map();
    this.rotating = new Map();
  }

  // ------------------------------------------------------------------ device

  /** Load this user's device from IndexedDB; true if it matches the session's device. */
  async load() {
    const rec = await idbGet("devices", this.userId);
    if (rec && rec.deviceId === this.deviceId) {
      this.device = rec;
      return true;
    }
    return false;
  }

  get keys() {
    return this.device;
  }

  /** The server's record of this session's device (public keys, b64url), or null. */
  async serverDevice() {
    const answer = await this.api.myDevices();
    return (answer.devices || []).find((d) => d.device_id === this.deviceId) || null;
  }

  /** The user's encrypted backup on the server, or null. */
  async serverBackup() {
    try {
      return await this.api.getBackup();
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) return null;
      throw err;
    }
  }

  /**
   * Make this device's keys, register them, and store the recovery backup.
   * Returns the recovery key text, to show once.
   */
  async setup() {
    const generated = await C.generateDeviceKeys({ extractable: true });
    const { dhPriv, sigPriv } = await C.exportDevicePrivate(generated);
    const recoveryKey = C.generateRecoveryKey();
    try {
      const payload = {
        v: 1,
        user_id: this.userId,
        devices: [{ device_id: this.deviceId, dh_priv: b64encode(dhPriv), sig_priv: b64encode(sigPriv) }],
        epoch_keys: [],
      };
      const backup = await C.sealBackup(recoveryKey, this.userId, payload);
      const keys = await C.importDeviceKeys({ dhPriv, sigPriv }, { extractable: false });
      const regSig = await C.signRegistration(keys, this.userId, this.deviceId);
      await this.api.registerDevice(b64encode(keys.dhPublic), b64encode(keys.sigPublic), b64encode(regSig));
      await this.api.putBackup(backup);
      this.device = { userId: this.userId, deviceId: this.deviceId, ...keys, createdAt: Date.now() / 1000 };
      await idbPut("devices", this.userId, this.device);
      return C.formatRecoveryKey(recoveryKey);
    } finally {
      dhPriv.fill(0);
      sigPriv.fill(0);
      recoveryKey.fill(0);
    }
  }

  /**
   * Open the server's backup with the recovery key typed by the user and
   * store the backed-up device (non-extractable) and its epoch keys.
   * Returns the restored device id: the caller logs in again with it.
   */
  async restore(recoveryText) {
    const backup = await this.serverBackup();
    if (!backup) throw new KeyError("no_backup", "no backup on the server");
    let opened;
    try {
      opened = await C.openBackup(C.parseRecoveryKey(recoveryText), this.userId, backup);
    } catch (err) {
      throw new KeyError("bad_recovery_key", err.message);
    }
    const entry = (opened.payload.devices || [])[0];
    if (!entry) throw new KeyError("bad_backup", "the backup holds no device");
    const dhPriv = b64decode(entry.dh_priv);
    const sigPriv = b64decode(entry.sig_priv);
    const keys = await C.importDeviceKeys({ dhPriv, sigPriv }, { extractable: false });
    dhPriv.fill(0);
    sigPriv.fill(0);
    opened.plaintext.fill(0);
    this.deviceId = entry.device_id;
    this.device = { userId: this.userId, deviceId: entry.device_id, ...keys, createdAt: Date.now() / 1000 };
    await idbPut("devices", this.userId, this.device);
    for (const e of opened.payload.epoch_keys || []) {
      const raw = b64decode(e.key);
      await this.storeEpochKey(e.conversation, e.epoch, raw);
    }
    return entry.device_id;
  }

  // ------------------------------------------------------------------ devices of a conversation

  /** The conversation's devices to wrap for (members and escrow), registrations checked. */
  async conversationDevices(conversation) {
    const listing = await this.api.conversationDevices(conversation);
    const devices = [];
    for (const d of devicesOf(listing)) {
      const id = d.device_id || d.id;
      const dhPub = b64decode(stdToUrl(d.dh_pub));
      const sigPub = b64decode(stdToUrl(d.sig_pub));
      const ok = await C.verifyRegistration(d.user_id, id, dhPub, sigPub, b64decode(stdToUrl(d.registration_sig)));
      if (!ok) continue; // a registration that does not verify is never wrapped for
      const dev = { deviceId: id, userId: d.user_id, role: d.role, dhPub, sigPub };
      this.peerDevices.set(id, dev);
      devices.push(dev);
    }
    return {
      epoch: listing.epoch || 0,
      rotationRequired: !!listing.rotation_required,
      pending: listing.pending || [],
      devices,
      members: (listing.members || []).map((m) => ({
        userId: m.user_id,
        sigPubs: (m.devices || []).map((d) => b64decode(stdToUrl(d.sig_pub))),
      })),
    };
  }

  async senderSigPub(conversation, deviceId, fallback) {
    if (this.device && deviceId === this.deviceId) return this.device.sigPublic;
    if (!this.peerDevices.has(deviceId)) {
      try {
        await this.conversationDevices(conversation);
      } catch {
        /* offline: use what we know */
      }
    }
    const known = this.peerDevices.get(deviceId);
    if (known) return known.sigPub;
    // A device no longer in the conversation (a previous counsellor's, a removed
    // one): its registered keys, checked against their own registration.
    try {
      const { device: d } = await this.api.device(deviceId);
      const dhPub = b64decode(d.dh_pub);
      const sigPub = b64decode(d.sig_pub);
      if (await C.verifyRegistration(d.user_id, d.device_id, dhPub, sigPub, b64decode(d.registration_sig))) {
        this.peerDevices.set(deviceId, { deviceId, userId: d.user_id, dhPub, sigPub, former: true });
        return sigPub;
      }
    } catch {
      /* unknown or offline */
    }
    return fallback || null;
  }

  // ------------------------------------------------------------------ epoch keys

  async storeEpochKey(conversation, epoch, raw) {
    const key = await aesKey(raw);
    raw.fill(0);
    this.epochKeys.set(`${conversation}|${epoch}`, key);
    await idbPut("epochs", `${this.userId}|${conversation}|${epoch}`, key);
    return key;
  }

  /** The epoch key (CryptoKey) or null: memory, then IndexedDB, then the server's envelopes. */
  async epochKey(conversation, epoch, { fetch = true } = {}) {
    const id = `${conversation}|${epoch}`;
    if (this.epochKeys.has(id)) return this.epochKeys.get(id);
    const stored = await idbGet("epochs", `${this.userId}|${id}`);
    if (stored) {
      this.epochKeys.set(id, stored);
      return stored;
    }
    if (!fetch) return null;
    await this.fetchEnvelopes(conversation);
    return this.epochKeys.get(id) || null;
  }

  /** Open every envelope the server holds for this device in `conversation`. */
  fetchEnvelopes(conversation) {
    if (this.fetching.has(conversation)) return this.fetching.get(conversation);
    const job = this._fetchEnvelopes(conversation).finally(() => this.fetching.delete(conversation));
    this.fetching.set(conversation, job);
    return job;
  }

  async _fetchEnvelopes(conversation) {
    const answer = await this.api.envelopes(conversation);
    let opened = 0;
    for (const env of answer.envelopes || []) {
      if (env.conversation !== conversation || env.recipient_device !== this.deviceId) continue;
      if (this.epochKeys.has(`${conversation}|${env.epoch}`)) continue;
      const fallback = env.sender_sig_pub ? b64decode(stdToUrl(env.sender_sig_pub)) : null;
      const senderPub = await this.senderSigPub(conversation, env.sender_device, fallback);
      if (!senderPub) continue;
      try {
        const raw = await C.openEnvelope(env, this.device, senderPub);
        await this.storeEpochKey(conversation, env.epoch, raw);
        opened++;
      } catch (err) {
        console.warn("envelope refused", env.epoch, err.message);
      }
    }
    return opened;
  }

  /**
   * The epoch to encrypt with now: creates a new epoch when there is none
   * yet (epoch 0), when the server requires a rotation, or when this device
   * was not given the current one.
   */
  async writableEpoch(conversation, { epoch = 0, rotationRequired = false } = {}) {
    if (epoch > 0 && !rotationRequired) {
      const key = await this.epochKey(conversation, epoch);
      if (key) return epoch;
    }
    return this.rotate(conversation);
  }

  rotate(conversation) {
    if (this.rotating.has(conversation)) return this.rotating.get(conversation);
    const job = this._rotate(conversation).finally(() => this.rotating.delete(conversation));
    this.rotating.set(conversation, job);
    return job;
  }

  async _rotate(conversation) {
    const listing = await this.conversationDevices(conversation);
    if (listing.pending.includes(this.deviceId)) {
      // A beneficiary's new phone waits for the counsellor's approval.
      throw new KeyError("pending_approval", "this device waits for approval");
    }
    if (!listing.rotationRequired && listing.epoch > 0) {
      const key = await this.epochKey(conversation, listing.epoch);
      if (key) return listing.epoch;
    }
    const next = listing.epoch + 1;
    const raw = C.generateEpochKey();
    try {
      const envelopes = [];
      for (const d of listing.devices) {
        envelopes.push(
          await C.wrapEpochKey({
            epochKey: raw,
            conversation,
            epoch: next,
            recipientDevice: d.deviceId,
            recipientDhPub: d.dhPub,
            senderDevice: this.deviceId,
            senderKeys: this.device,
          }),
        );
      }
      try {
        await this.api.createEpoch(conversation, next, envelopes);
      } catch (err) {
        if (err instanceof ApiError && err.code === "epoch_conflict") {
          // Someone rotated first: take theirs.
          const current = err.body?.error?.current ?? err.body?.current ?? next;
          await this.fetchEnvelopes(conversation);
          if (this.epochKeys.has(`${conversation}|${current}`)) return current;
          return this._rotate(conversation);
        }
        throw err;
      }
      await this.storeEpochKey(conversation, next, raw.slice());
      return next;
    } finally {
      raw.fill(0);
    }
  }

  // ------------------------------------------------------------------ messages

  /** Encrypt and sign; returns the `message.send` fields (standard base64). */
  async encrypt({ conversation, epoch, clientId, msgType, content }) {
    const key = await this.epochKey(conversation, epoch);
    if (!key) throw new KeyError("no_key", `no key for epoch ${epoch}`);
    const m = await C.encryptMessage({
      epochKey: key,
      conversation,
      epoch,
      senderDevice: this.deviceId,
      senderKeys: this.device,
      clientId,
      msgType,
      plaintext: content,
    });
    return { epoch, body: urlToStd(m.ciphertext), nonce: urlToStd(m.nonce), sig: urlToStd(m.sig) };
  }

  /** Verify and decrypt a stored message (wire shape); returns the content object. */
  async decrypt(msg) {
    const senderPub = await this.senderSigPub(msg.conversation, msg.device);
    if (!senderPub) throw new KeyError("unknown_device", "unknown sender device");
    const key = await this.epochKey(msg.conversation, msg.epoch);
    if (!key) throw new KeyError("no_key", `no key for epoch ${msg.epoch}`);
    const wire = {
      conversation: msg.conversation,
      epoch: msg.epoch,
      sender_device: msg.device,
      client_id: msg.client_id,
      msg_type: msg.msg_type,
      nonce: stdToUrl(msg.nonce),
      ciphertext: stdToUrl(msg.body),
      sig: stdToUrl(msg.sig),
    };
    if (!(await C.verifyMessage(wire, senderPub))) throw new KeyError("bad_signature", "invalid signature");
    return C.decryptMessageJson(wire, key, senderPub);
  }

  // ------------------------------------------------------------------ re-sharing

  /** Re-wrap every epoch key this device holds in `conversation` for `recipientDevice`. */
  async rewrapFor(conversation, recipientDevice) {
    const listing = await this.conversationDevices(conversation);
    const target = listing.devices.find((d) => d.deviceId === recipientDevice);
    if (!target) return 0;
    const answer = await this.api.envelopes(conversation);
    const envelopes = [];
    for (const env of answer.envelopes || []) {
      if (env.conversation !== conversation || env.recipient_device !== this.deviceId) continue;
      const fallback = env.sender_sig_pub ? b64decode(stdToUrl(env.sender_sig_pub)) : null;
      const senderPub = await this.senderSigPub(conversation, env.sender_device, fallback);
      if (!senderPub) continue;
      let raw;
      try {
        raw = await C.openEnvelope(env, this.device, senderPub);
      } catch {
        continue;
      }
      try {
        envelopes.push(
          await C.wrapEpochKey({
            epochKey: raw,
            conversation,
            epoch: env.epoch,
            recipientDevice,
            recipientDhPub: target.dhPub,
            senderDevice: this.deviceId,
            senderKeys: this.device,
          }),
        );
      } finally {
        raw.fill(0);
      }
    }
    if (envelopes.length === 0) return 0;
    await this.api.addEnvelopes(conversation, envelopes);
    return envelopes.length;
  }

  /**
   * The safety number of a conversation (30 digits): both members' registered
   * signing keys, as listed by the server and checked against their own
   * registration signatures.
   */
  async safetyNumber(conversation) {
    const listing = await this.conversationDevices(conversation);
    if (listing.members.length !== 2) throw new KeyError("bad_safety", "a safety number needs two members");
    const verified = new Set(listing.devices.map((d) => b64encode(d.sigPub)));
    const [a, b] = listing.members.map((m) => ({ userId: m.userId, sigPubs: m.sigPubs.filter((k) => verified.has(b64encode(k))) }));
    return C.safetyNumber(a, b);
  }
}
