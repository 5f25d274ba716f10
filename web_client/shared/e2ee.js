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
 *
 * Trust rules (docs/security.md, "A compromised server"): the server only
 * relays. An epoch key is accepted from an envelope only when its sender
 * device is resolved from the key API with a self-signed registration that
 * verifies (never from the `sender_sig_pub` the envelope listing carries),
 * and that device belongs to a member of the conversation, a supervisor
 * listed as escrow, or a counsellor the thread shows was replaced (only for
 * epochs they held); never for an epoch beyond the current one; and only if
 * it gives the epoch's key commitment, signed by the device that created the
 * epoch (an entitled device too). Epochs created before commitments existed
 * have none: their key is accepted, when a signed message of that epoch is at
 * hand, only if it decrypts it. Every envelope offered for an epoch is tried,
 * so a poisoned re-wrap never hides a good one; it is reported (`onSecurityEvent`
 * and POST /api/keys/report). A message is accepted only from a device of the
 * user the server names as its sender.
 */

import * as C from "./crypto.js";
import { idbGet, idbPut } from "./idb.js";
import { ApiError } from "./api.js";
import { urlToStd, stdToUrl } from "./wire.js";
import { StructureKeyring } from "./structure-key.js";

const { b64encode, b64decode } = C;

// Envelope senders, best first: this device, a member's, an escrow
// supervisor's, a counsellor replaced by a transfer (history re-wraps).
const RANK = { self: 0, member: 1, escrow: 2, former: 3 };
const MAX_PROBES = 3;
const HISTORY_PAGES = 50;
const TRANSFER_EVENTS = new Set(["system.counsellor_changed", "system.temporary_counsellor"]);

export class KeyError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code;
  }
}

async function aesKey(raw) {
  return crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
}

/** Whether raw key bytes are the (non-extractable) key already held: encrypt with one, decrypt with the other. */
async function sameKey(held, raw) {
  try {
    const iv = C.randomBytes(12);
    const ct = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, held, C.randomBytes(16));
    const other = await crypto.subtle.importKey("raw", raw, { name: "AES-GCM" }, false, ["decrypt"]);
    await crypto.subtle.decrypt({ name: "AES-GCM", iv }, other, ct);
    return true;
  } catch {
    return false;
  }
}

function devicesOf(listing) {
  const out = [];
  for (const [group, entries] of [["member", listing.members || []], ["escrow", listing.escrow || []]]) {
    for (const member of entries) {
      for (const d of member.devices || []) {
        // A device listed under a user it does not belong to is not that user's.
        if (d.user_id && d.user_id !== member.user_id) continue;
        out.push({ ...d, user_id: member.user_id, role: member.role, group });
      }
    }
  }
  return out;
}

function wireOf(msg) {
  return {
    conversation: msg.conversation,
    epoch: msg.epoch,
    sender_device: msg.device,
    client_id: msg.client_id,
    msg_type: msg.msg_type,
    // Absent on messages stored before format version 2.
    v: msg.v ?? 1,
    meta: msg.meta || {},
    nonce: stdToUrl(msg.nonce),
    ciphertext: stdToUrl(msg.body),
    sig: stdToUrl(msg.sig),
  };
}

export class KeyManager {
  constructor({ api, userId, deviceId, role = null }) {
    this.api = api;
    this.userId = userId;
    // "beneficiary", "counsellor" or "supervisor": who pins the structure key how (structure-key.js).
    this.role = role;
    this.deviceId = deviceId;
    this.device = null;
    this.epochKeys = new Map();
    this.fetching = new Map();
    this.peerDevices = new Map();
    this.rotating = new Map();
    this.refetch = new Map();
    this.listingJobs = new Map();
    // Verified messages per "conversation|epoch", to check a newly opened epoch key.
    this.probes = new Map();
    // Optional (conversation, epoch) => stored messages of that epoch the caller holds.
    this.probeSource = null;
    // Optional ({ kind, conversation, epoch, senderDevice, senderUser }) => void: security events.
    this.onSecurityEvent = null;
    this.reported = new Set();
    // conversation -> async (epoch, raw) => void: sees a new epoch's raw key once,
    // before it is wiped (the console's activation box, shared/activation.js).
    this.rawEpochHooks = new Map();
    // The structure key (structure-key.js): sealed to at each epoch, read after a transfer.
    this.structure = new StructureKeyring(this);
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
        // Deliberately no epoch keys: restoring takes over this device identity
        // (same device id, see restore()), so every envelope the server holds
        // for it opens again, including those of epochs created after this
        // backup was written. The backup never has to be rewritten.
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
   * store the backed-up device (non-extractable). Backups hold no epoch keys
   * (see setup()): this browser takes over the backed-up device identity,
   * and the envelopes addressed to that device open again through the usual
   * checks (fetchEnvelopes). Epoch keys listed by an older backup are kept.
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

  /**
   * The conversation's devices, each with a self-signed registration that
   * verifies (the others are left out, never wrapped for, never trusted as
   * senders), plus who the members and the escrow supervisors are and the
   * current epoch. Only the members' devices (group "member") are wrapped
   * for; the server lists no escrow any more (always `[]`), and a device it
   * lists there anyway is never sealed to.
   */
  conversationDevices(conversation) {
    // Shared while in flight: a page of messages from one device asks once.
    if (this.listingJobs.has(conversation)) return this.listingJobs.get(conversation);
    const job = this._conversationDevices(conversation).finally(() => this.listingJobs.delete(conversation));
    this.listingJobs.set(conversation, job);
    return job;
  }

  async _conversationDevices(conversation) {
    const listing = await this.api.conversationDevices(conversation);
    const devices = [];
    for (const d of devicesOf(listing)) {
      const id = d.device_id || d.id;
      let dev;
      try {
        const dhPub = b64decode(stdToUrl(d.dh_pub));
        const sigPub = b64decode(stdToUrl(d.sig_pub));
        if (!(await C.verifyRegistration(d.user_id, id, dhPub, sigPub, b64decode(stdToUrl(d.registration_sig))))) continue;
        dev = { deviceId: id, userId: d.user_id, role: d.role, group: d.group, dhPub, sigPub };
      } catch {
        continue; // malformed keys: a registration that does not verify is never wrapped for
      }
      if (this.device && id === this.deviceId) {
        // This device as the server lists it must be this device.
        if (dev.userId !== this.userId || !C.bytesEqual(dev.sigPub, this.device.sigPublic) || !C.bytesEqual(dev.dhPub, this.device.dhPublic)) continue;
      } else {
        // A device id names one registration for good: other keys later are not believed.
        const known = this.peerDevices.get(id);
        if (known && (known.userId !== dev.userId || !C.bytesEqual(known.sigPub, dev.sigPub) || !C.bytesEqual(known.dhPub, dev.dhPub))) continue;
        if (!known) this.peerDevices.set(id, { deviceId: id, userId: dev.userId, dhPub: dev.dhPub, sigPub: dev.sigPub });
      }
      devices.push(dev);
    }
    const memberUsers = new Set((listing.members || []).map((m) => m.user_id));
    const escrowUsers = new Set((listing.escrow || []).map((m) => m.user_id).filter((u) => !memberUsers.has(u)));
    await this._rememberPeers(conversation, devices, memberUsers).catch((err) => console.warn("peer devices not kept", err.message));
    return {
      conversation,
      epoch: Number.isSafeInteger(listing.epoch) && listing.epoch > 0 ? listing.epoch : 0,
      rotationRequired: !!listing.rotation_required,
      structureKey: listing.structure_key || null,
      pending: listing.pending || [],
      devices,
      memberUsers,
      escrowUsers,
      members: (listing.members || []).map((m) => ({
        userId: m.user_id,
        sigPubs: (m.devices || []).map((d) => b64decode(stdToUrl(d.sig_pub))),
      })),
    };
  }

  /**
   * The other member's devices this browser saw listed for `conversation`
   * (its counsellors', the previous one's too after a transfer): Map deviceId
   * -> { userId, sigPub }. Kept in IndexedDB (`kv`): their endorsements of the
   * structure key count for a first pin (structure-key.js).
   */
  async peerMembers(conversation) {
    const stored = (await idbGet("kv", `peer-members|${this.userId}|${conversation}`)) || [];
    const out = new Map();
    for (const p of Array.isArray(stored) ? stored : []) {
      try {
        out.set(p.deviceId, { userId: p.userId, sigPub: b64decode(p.sigPub) });
      } catch {
        // a malformed entry is no device
      }
    }
    return out;
  }

  /**
   * Keep the other member's listed devices for `conversation`; forget a
   * remembered device of a *current* member that the listing no longer shows
   * (removed: lost or stolen). A previous counsellor's stay (not a member now).
   */
  async _rememberPeers(conversation, devices, memberUsers) {
    const peers = devices.filter((d) => d.group === "member" && d.userId !== this.userId);
    const known = await this.peerMembers(conversation);
    const listed = new Set(peers.map((d) => d.deviceId));
    let changed = false;
    for (const [deviceId, p] of [...known]) {
      if (p.userId !== this.userId && memberUsers.has(p.userId) && !listed.has(deviceId)) {
        known.delete(deviceId);
        changed = true;
      }
    }
    const fresh = peers.filter((d) => !known.has(d.deviceId));
    if (!fresh.length && !changed) return;
    for (const d of fresh) known.set(d.deviceId, { userId: d.userId, sigPub: d.sigPub });
    const rows = [...known].map(([deviceId, p]) => ({ deviceId, userId: p.userId, sigPub: b64encode(p.sigPub) }));
    await idbPut("kv", `peer-members|${this.userId}|${conversation}`, rows);
  }

  /**
   * A device's registered public keys { deviceId, userId, dhPub, sigPub },
   * its self-signed registration checked, or null. From the conversation's
   * listing first, else GET /api/keys/devices/{id} (a sender who left the
   * conversation, a removed device). Never from what an envelope carries.
   */
  async resolveDevice(conversation, deviceId) {
    if (typeof deviceId !== "string" || !deviceId) return null;
    if (this.device && deviceId === this.deviceId) {
      return { deviceId, userId: this.userId, dhPub: this.device.dhPublic, sigPub: this.device.sigPublic, self: true };
    }
    if (!this.peerDevices.has(deviceId) && conversation) {
      try {
        await this.conversationDevices(conversation);
      } catch {
        /* offline or not readable: ask for the device itself */
      }
    }
    const known = this.peerDevices.get(deviceId);
    if (known) return known;
    try {
      const { device: d } = await this.api.device(deviceId);
      if (!d || d.device_id !== deviceId || typeof d.user_id !== "string" || !d.user_id) return null;
      const dhPub = b64decode(stdToUrl(d.dh_pub));
      const sigPub = b64decode(stdToUrl(d.sig_pub));
      if (!(await C.verifyRegistration(d.user_id, deviceId, dhPub, sigPub, b64decode(stdToUrl(d.registration_sig))))) return null;
      const dev = { deviceId, userId: d.user_id, dhPub, sigPub };
      this.peerDevices.set(deviceId, dev);
      return dev;
    } catch {
      return null; // unknown, malformed or offline
    }
  }

  /**
   * Counsellors the thread shows were replaced (`system.counsellor_changed`,
   * `system.temporary_counsellor`, posted by the server), each with the last
   * epoch they held before the change: Map user id -> epoch.
   */
  async formerCounsellors(conversation) {
    const out = new Map();
    let epoch = 0;
    let after = 0;
    for (let page = 0; page < HISTORY_PAGES; page++) {
      const answer = await this.api.messages(conversation, { after, limit: 200 });
      const msgs = answer.messages || [];
      for (const m of msgs) {
        if (m.msg_type === "system.epoch_rotated" && Number.isSafeInteger(m.meta?.epoch)) epoch = Math.max(epoch, m.meta.epoch);
        else if (Number.isSafeInteger(m.epoch)) epoch = Math.max(epoch, m.epoch);
        if (m.sender === "system" && TRANSFER_EVENTS.has(m.msg_type) && typeof m.meta?.from === "string" && m.meta.from) {
          out.set(m.meta.from, Math.max(out.get(m.meta.from) ?? 0, epoch));
        }
        if (Number.isSafeInteger(m.seq)) after = Math.max(after, m.seq);
      }
      if (!answer.has_more || !msgs.length) break;
    }
    return out;
  }

  /**
   * How far an envelope's sender is trusted for `epoch` (lower is better, see
   * RANK), or null when its device belongs to nobody entitled to send keys of
   * this conversation.
   */
  async senderRank(conversation, sender, epoch, listing, memo) {
    if (sender.self) return RANK.self;
    if (listing.memberUsers.has(sender.userId)) return RANK.member;
    if (listing.escrowUsers.has(sender.userId)) return RANK.escrow;
    // A re-wrap after a transfer by the counsellor it replaced: only epochs they held.
    if (!memo.former) memo.former = this.formerCounsellors(conversation).catch(() => new Map());
    const held = (await memo.former).get(sender.userId);
    if (held !== undefined && epoch <= held) return RANK.former;
    return null;
  }

  // ------------------------------------------------------------------ epoch keys

  async storeEpochKey(conversation, epoch, raw) {
    const key = await aesKey(raw);
    raw.fill(0);
    this.epochKeys.set(`${conversation}|${epoch}`, key);
    this.probes.delete(`${conversation}|${epoch}`);
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

  /**
   * Open the envelopes the server holds for this device in `conversation`.
   * `fresh`: new envelopes were announced; if a fetch is running, one more
   * runs after it.
   */
  fetchEnvelopes(conversation, { fresh = false } = {}) {
    const running = this.fetching.get(conversation);
    if (running) {
      if (!fresh) return running;
      if (!this.refetch.has(conversation)) {
        this.refetch.set(
          conversation,
          running
            .catch(() => 0)
            .then(() => {
              this.refetch.delete(conversation);
              return this.fetchEnvelopes(conversation);
            }),
        );
      }
      return this.refetch.get(conversation);
    }
    const job = this._fetchEnvelopes(conversation).finally(() => this.fetching.delete(conversation));
    this.fetching.set(conversation, job);
    return job;
  }

  /**
   * The epochs' key commitments of `answer` (GET /api/keys/envelopes) whose
   * signature verifies with the key of the device that created the epoch,
   * that device being entitled to the conversation's keys: Map epoch -> bytes.
   */
  async _commitments(conversation, answer, listing, memo) {
    const out = new Map();
    for (const c of answer.epochs || []) {
      if (c.conversation !== conversation || !Number.isSafeInteger(c.epoch) || c.epoch < 1) continue;
      const creator = await this.resolveDevice(conversation, c.creator_device);
      const rank = creator ? await this.senderRank(conversation, creator, c.epoch, listing, memo) : null;
      let ok = false;
      try {
        ok = rank !== null && (await C.verifyCommitment(creator.sigPub, conversation, c.epoch, c.creator_device, b64decode(c.commitment), b64decode(c.sig)));
      } catch {
        ok = false;
      }
      if (ok) out.set(c.epoch, b64decode(c.commitment));
      else console.warn("key commitment refused: its signature does not verify", c.epoch);
    }
    return out;
  }

  async _fetchEnvelopes(conversation) {
    const listing = await this.conversationDevices(conversation);
    const answer = await this.api.envelopes(conversation);
    const memo = {};
    memo.commitments = await this._commitments(conversation, answer, listing, memo);
    let opened = 0;
    for (const [epoch, envs] of this._envelopesByEpoch(conversation, answer, listing.epoch)) {
      if (await this.epochKey(conversation, epoch, { fetch: false })) continue;
      const raw = await this._openTrusted(conversation, epoch, envs, listing, memo);
      if (!raw) continue;
      await this.storeEpochKey(conversation, epoch, raw);
      opened++;
    }
    if (answer.structure) {
      opened += await this._openStructureEnvelopes(conversation, answer, listing, memo);
      await this._sealMissingToStructure(conversation, answer, listing, memo).catch((err) => console.warn("structure envelopes not added", err.message));
    }
    return opened;
  }

  /**
   * The epochs this device lacks, from the conversation's structure envelopes
   * (this device holds the structure key): same checks as its own envelopes.
   */
  async _openStructureEnvelopes(conversation, answer, listing, memo) {
    const found = answer.structure;
    let recipient = this.structure.recipientKeys(found.key?.key_id);
    if (!recipient && (found.envelopes || []).length && this.structure.pair?.keyId !== found.key?.key_id) {
      await this.structure.openGrant(await this.api.structureKey()).catch(() => false);
      recipient = this.structure.recipientKeys(found.key?.key_id);
    }
    if (!recipient) return 0;
    const byEpoch = new Map();
    const rid = `structure:${found.key.key_id}`;
    for (const env of found.envelopes || []) {
      if (env.conversation !== conversation || env.recipient_device !== rid || !Number.isSafeInteger(env.epoch) || env.epoch < 1 || env.epoch > listing.epoch) continue;
      if (!byEpoch.has(env.epoch)) byEpoch.set(env.epoch, []);
      byEpoch.get(env.epoch).push(env);
    }
    let opened = 0;
    for (const [epoch, envs] of byEpoch) {
      if (await this.epochKey(conversation, epoch, { fetch: false })) continue;
      // Only with a signed commitment: the structure envelope is never the first word on a key.
      if (!memo.commitments?.get(epoch)) continue;
      const raw = await this._openTrusted(conversation, epoch, envs, listing, memo, recipient);
      if (!raw) continue;
      await this.storeEpochKey(conversation, epoch, raw);
      opened++;
    }
    return opened;
  }

  /** Seal to the structure key the epochs it lacks that this device was given (one request). */
  async _sealMissingToStructure(conversation, answer, listing, memo) {
    const missing = new Set(answer.structure.missing_epochs || []);
    if (!missing.size || !answer.structure.key) return 0;
    const target = await this.structure.verifiedKey(answer.structure.key, listing);
    const envelopes = [];
    for (const [epoch, envs] of this._envelopesByEpoch(conversation, answer, listing.epoch)) {
      if (!missing.has(epoch)) continue;
      const raw = await this._openTrusted(conversation, epoch, envs, listing, memo);
      if (!raw) continue;
      try {
        envelopes.push(
          await C.wrapEpochKey({ epochKey: raw, conversation, epoch, recipientDevice: target.recipient, recipientDhPub: target.publicRaw, senderDevice: this.deviceId, senderKeys: this.device }),
        );
      } finally {
        raw.fill(0);
      }
    }
    if (!envelopes.length) return 0;
    return (await this.api.addEnvelopes(conversation, envelopes)).added || 0;
  }

  /** This device's envelopes of `conversation` by epoch, none beyond the current epoch. */
  _envelopesByEpoch(conversation, answer, current) {
    const out = new Map();
    for (const env of answer.envelopes || []) {
      if (env.conversation !== conversation || env.recipient_device !== this.deviceId) continue;
      if (!Number.isSafeInteger(env.epoch) || env.epoch < 1) continue;
      if (env.epoch > current) {
        console.warn("envelope refused: epoch beyond the current one", env.epoch);
        continue;
      }
      if (!out.has(env.epoch)) out.set(env.epoch, []);
      out.get(env.epoch).push(env);
    }
    return out;
  }

  /**
   * Of one epoch's envelopes, open the first that passes every check, best
   * senders first: the sender device resolves with a valid registration, it
   * belongs to someone entitled to send keys, the envelope's signature and
   * HPKE open succeed, and the key is the one already held for that epoch,
   * or (none held) decrypts the verified messages of that epoch at hand.
   * Returns the raw key (the caller zeroes it) or null.
   */
  async _openTrusted(conversation, epoch, envs, listing, memo, recipient = this.device) {
    const committed = memo.commitments?.get(epoch);
    const ranked = [];
    for (const env of envs) {
      const sender = await this.resolveDevice(conversation, env.sender_device);
      const rank = sender ? await this.senderRank(conversation, sender, epoch, listing, memo) : null;
      if (rank === null) {
        console.warn("envelope refused: its sender is not entitled to this conversation's keys", epoch);
        continue;
      }
      ranked.push({ env, sender, rank });
    }
    ranked.sort((a, b) => a.rank - b.rank);
    const held = await this.epochKey(conversation, epoch, { fetch: false });
    const poisoned = [];
    let good = null;
    for (const { env, sender } of ranked) {
      let raw;
      try {
        raw = await C.openEnvelope(env, recipient, sender.sigPub);
      } catch (err) {
        console.warn("envelope refused", epoch, err.message);
        continue;
      }
      let fits;
      if (committed) fits = await C.keyMatchesCommitment(raw, conversation, epoch, committed);
      else fits = held ? await sameKey(held, raw) : await this.fitsMessages(conversation, epoch, raw);
      if (fits) {
        good = raw;
        break;
      }
      raw.fill(0);
      if (committed) poisoned.push({ env, sender });
      console.warn("envelope refused: its key is not this epoch's key", epoch);
    }
    const structure = recipient !== this.device;
    for (const { env, sender } of poisoned) this._poisoned(conversation, epoch, env, sender, !!good, structure);
    return good;
  }

  /**
   * An envelope signed by an entitled device held another key than the epoch's:
   * report it once. `structure`: it was sealed to the structure key.
   */
  _poisoned(conversation, epoch, env, sender, recovered, structure = false) {
    const id = `${conversation}|${epoch}|${env.sender_device}|${structure ? "structure" : "device"}`;
    if (this.reported.has(id)) return;
    this.reported.add(id);
    this._securityEvent({ kind: "bad_envelope", conversation, epoch, senderDevice: env.sender_device, senderUser: sender.userId, recovered, structure });
    this.api.reportEnvelope(conversation, epoch, env.sender_device, { structure }).catch((err) => console.warn("report failed", err.message));
  }

  _securityEvent(event) {
    try {
      this.onSecurityEvent?.(event);
    } catch (err) {
      console.warn("security event handler failed", err);
    }
  }

  /** Remember a verified message (wire form) to check a key of its epoch opened later. */
  addProbe(wire, sigPub) {
    const id = `${wire.conversation}|${wire.epoch}`;
    if (this.epochKeys.has(id)) return;
    const list = this.probes.get(id) || [];
    if (list.length >= MAX_PROBES || list.some((p) => p.wire.sender_device === wire.sender_device && p.wire.client_id === wire.client_id)) return;
    list.push({ wire, sigPub });
    this.probes.set(id, list);
  }

  /**
   * Whether a newly opened key decrypts (AES-GCM tag) a verified message of
   * its epoch: those remembered by decrypt(), else those `probeSource` (the
   * chat engine's loaded threads) offers, checked here first. True when no
   * message of that epoch is at hand.
   */
  async fitsMessages(conversation, epoch, raw) {
    const probes = [...(this.probes.get(`${conversation}|${epoch}`) || [])];
    if (!probes.length && this.probeSource) {
      for (const msg of (this.probeSource(conversation, epoch) || []).slice(0, MAX_PROBES)) {
        const checked = await this.verified(msg).catch(() => null);
        if (checked) probes.push(checked);
      }
    }
    if (!probes.length) return true;
    for (const { wire, sigPub } of probes) {
      try {
        await C.decryptMessage(wire, raw, sigPub);
        return true;
      } catch {
        /* try the next one */
      }
    }
    return false;
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
    let target = null;
    if (!listing.structureKey && (await this.structure.pinned())) {
      // A structure key was pinned: a listing without one is a downgrade (the history
      // would no longer follow a transfer), which the server alone decides (docs/security.md).
      this._securityEvent({ kind: "structure_key_missing", conversation, epoch: next });
      throw new KeyError("structure_key_missing", "the server lists no structure key after one was pinned");
    }
    if (listing.structureKey) {
      try {
        target = await this.structure.verifiedKey(listing.structureKey, listing);
      } catch (err) {
        // A structure key that does not verify is never sealed to (docs/security.md).
        const known = ["structure_key_changed", "structure_key_unendorsed"];
        const kind = known.includes(err.code) ? err.code : "structure_key_unverified";
        this._securityEvent({ kind, conversation, epoch: next });
        throw new KeyError(kind, err.message);
      }
    }
    const raw = C.generateEpochKey();
    try {
      const envelopes = [];
      if (target) {
        envelopes.push(
          await C.wrapEpochKey({ epochKey: raw, conversation, epoch: next, recipientDevice: target.recipient, recipientDhPub: target.publicRaw, senderDevice: this.deviceId, senderKeys: this.device }),
        );
      }
      // The members' devices only: never a device listed as escrow (a supervisor's,
      // which the server alone decides on); the structure key is the one other recipient.
      for (const d of listing.devices.filter((dev) => dev.group === "member")) {
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
      const commitment = await C.epochCommitment(raw, conversation, next);
      const commitmentSig = await C.signCommitment(this.device, conversation, next, this.deviceId, commitment);
      try {
        await this.api.createEpoch(conversation, next, envelopes, { commitment: b64encode(commitment), commitment_sig: b64encode(commitmentSig) });
      } catch (err) {
        if (err instanceof ApiError && err.code === "epoch_conflict") {
          // Someone rotated first: take theirs.
          const current = err.body?.error?.current ?? err.body?.current ?? next;
          await this.fetchEnvelopes(conversation, { fresh: true });
          if (this.epochKeys.has(`${conversation}|${current}`)) return current;
          return this._rotate(conversation);
        }
        throw err;
      }
      await this.storeEpochKey(conversation, next, raw.slice());
      await this.rawEpochHooks.get(conversation)?.(next, raw, { structureKey: target?.keyId ?? null });
      return next;
    } finally {
      raw.fill(0);
    }
  }

  // ------------------------------------------------------------------ messages

  /** Encrypt and sign (format version 2, `meta` bound); returns the `message.send` fields. */
  async encrypt({ conversation, epoch, clientId, msgType, content, meta = {} }) {
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
      meta,
    });
    return { v: m.v, meta, epoch, body: urlToStd(m.ciphertext), nonce: urlToStd(m.nonce), sig: urlToStd(m.sig) };
  }

  /**
   * A stored message (wire shape) whose device resolves with a valid
   * registration, belongs to the user named as its sender, and signed it:
   * { wire, sigPub }. Throws KeyError otherwise.
   */
  async verified(msg) {
    const sender = await this.resolveDevice(msg.conversation, msg.device);
    if (!sender) throw new KeyError("unknown_device", "unknown sender device");
    if (sender.userId !== msg.sender) throw new KeyError("device_mismatch", "the device does not belong to the sender");
    const wire = wireOf(msg);
    if (!(await C.verifyMessage(wire, sender.sigPub))) throw new KeyError("bad_signature", "invalid signature");
    return { wire, sigPub: sender.sigPub };
  }

  /** Verify and decrypt a stored message (wire shape); returns the content object. */
  async decrypt(msg) {
    const { wire, sigPub } = await this.verified(msg);
    this.addProbe(wire, sigPub);
    const key = await this.epochKey(msg.conversation, msg.epoch);
    if (!key) throw new KeyError("no_key", `no key for epoch ${msg.epoch}`);
    return C.decryptMessageJson(wire, key, sigPub);
  }

  // ------------------------------------------------------------------ re-sharing

  /**
   * The device `deviceId` as the conversation lists it (registration
   * verified): { deviceId, userId, role, group: "member"|"escrow", ... }, or null.
   */
  async listedDevice(conversation, deviceId) {
    const listing = await this.conversationDevices(conversation);
    return listing.devices.find((d) => d.deviceId === deviceId) || null;
  }

  /**
   * Re-wrap the epoch keys this device holds in `conversation` for
   * `recipientDevice`, which must be a member's device listed for the
   * conversation with a valid registration (never one listed as escrow).
   * Whether to do it at all is the caller's decision (chat.js: approvals and
   * requests). Returns how many.
   */
  async rewrapFor(conversation, recipientDevice) {
    const listing = await this.conversationDevices(conversation);
    const target = listing.devices.find((d) => d.deviceId === recipientDevice);
    if (!target || target.group !== "member") throw new KeyError("not_authorised", "this device is not a member's registered device");
    const answer = await this.api.envelopes(conversation);
    const memo = {};
    memo.commitments = await this._commitments(conversation, answer, listing, memo);
    const envelopes = [];
    for (const [epoch, envs] of this._envelopesByEpoch(conversation, answer, listing.epoch)) {
      const raw = await this._openTrusted(conversation, epoch, envs, listing, memo);
      if (!raw) continue;
      try {
        envelopes.push(
          await C.wrapEpochKey({
            epochKey: raw,
            conversation,
            epoch,
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
   * registration signatures, and the structure key's public half when the
   * structure has one.
   */
  async safetyNumber(conversation) {
    const listing = await this.conversationDevices(conversation);
    if (listing.members.length !== 2) throw new KeyError("bad_safety", "a safety number needs two members");
    const verified = new Set(listing.devices.map((d) => b64encode(d.sigPub)));
    const [a, b] = listing.members.map((m) => ({ userId: m.userId, sigPubs: m.sigPubs.filter((k) => verified.has(b64encode(k))) }));
    // The structure key as listed (not only a verified one): two members shown different keys get different numbers.
    const structure = listing.structureKey ? b64decode(listing.structureKey.public_key) : null;
    return C.safetyNumber(a, b, structure);
  }
}
