/**
 * Trust rules of shared/e2ee.js and shared/chat.js against a lying server,
 * run in the browser by tests/web/test_e2ee_policy.py.
 *
 * Each scenario builds a conversation with real keys (crypto.js), serves it
 * through a fake key API that says whatever the scenario wants (forged
 * envelopes, foreign devices, epochs from the future, relabelled senders,
 * key requests), and checks what KeyManager and ChatClient accept and do.
 * `run(name)` returns { pass, messages } (JSON-serialisable).
 */

import * as C from "../shared/crypto.js";
import * as S from "../shared/structure-crypto.js";
import { ApiError } from "../shared/api.js";
import { KeyManager, KeyError } from "../shared/e2ee.js";
import { ChatClient } from "../shared/chat.js";
import { messageText } from "../shared/ui.js";
import { urlToStd } from "../shared/wire.js";

const b64 = C.b64encode;
let counter = 0;
const uid = (prefix) => `${prefix}-${Date.now().toString(36)}-${(counter++).toString(36)}-${Math.random().toString(36).slice(2, 8)}`;

class Checker {
  constructor() {
    this.messages = [];
    this.failures = 0;
  }

  ok(condition, what) {
    if (!condition) this.failures++;
    this.messages.push(`${condition ? "ok" : "FAIL"}: ${what}`);
  }

  async rejects(fn, code, what) {
    try {
      await fn();
      this.ok(false, `${what} (accepted)`);
    } catch (err) {
      this.ok(err instanceof KeyError && err.code === code, `${what} (${err.code || err.message})`);
    }
  }

  result() {
    return { pass: this.failures === 0 && this.messages.length > 0, messages: this.messages };
  }
}

async function makeDevice(userId) {
  const deviceId = uid("dev");
  const keys = await C.generateDeviceKeys();
  const reg = await C.signRegistration(keys, userId, deviceId);
  return {
    userId,
    deviceId,
    keys,
    json: { device_id: deviceId, user_id: userId, dh_pub: b64(keys.dhPublic), sig_pub: b64(keys.sigPublic), registration_sig: b64(reg) },
  };
}

/**
 * A conversation between a beneficiary and a counsellor, a supervisor of the
 * structure (escrow), another counsellor of the structure (not a member), and
 * a fake server that answers from `world` (tests edit it as they go).
 */
async function makeWorld() {
  const conversation = uid("conv");
  const users = { ben: uid("ben"), coun: uid("coun"), sup: uid("sup"), other: uid("other"), former: uid("former") };
  const d = {};
  for (const name of ["ben", "ben2", "coun", "coun2", "sup", "other", "former"]) d[name] = await makeDevice(users[name.replace(/2$/, "")]);
  const world = {
    conversation,
    users,
    d,
    epoch: 2,
    members: { [users.ben]: [d.ben], [users.coun]: [d.coun] },
    roles: { [users.ben]: "beneficiary", [users.coun]: "counsellor", [users.sup]: "supervisor" },
    escrow: { [users.sup]: [d.sup] },
    pending: [],
    registry: new Map(Object.values(d).map((x) => [x.deviceId, x.json])),
    envelopes: [],
    messages: [],
    requests: [],
    added: [],
    approved: [],
    calls: [],
  };
  world.api = {
    token: "test",
    async conversationDevices(conv) {
      world.calls.push("devices");
      const group = (g) => Object.entries(g).map(([user, devs]) => ({ user_id: user, role: world.roles[user], devices: devs.map((x) => ({ ...(x.json || x) })) }));
      return { conversation: conv, epoch: world.epoch, rotation_required: false, members: group(world.members), escrow: group(world.escrow), pending: world.pending };
    },
    async envelopes(conv) {
      world.calls.push("envelopes");
      const answer = {
        envelopes: world.envelopes.filter((e) => e.conversation === conv).map((e) => ({ ...e })),
        epochs: (world.commitments || []).filter((c) => c.conversation === conv).map((c) => ({ ...c })),
      };
      if (world.structure) answer.structure = { ...world.structure, envelopes: world.structure.envelopes.map((e) => ({ ...e })) };
      return answer;
    },
    async reportEnvelope(conv, epoch, senderDevice, { structure = false } = {}) {
      (world.reports = world.reports || []).push({ conv, epoch, senderDevice, structure });
      return { ok: true };
    },
    async device(id) {
      world.calls.push(`device ${id}`);
      const found = world.registry.get(id);
      if (!found) throw new ApiError(404, "not_found", "no such device");
      return { device: { ...found } };
    },
    async messages(conv, { after = 0 } = {}) {
      return { messages: world.messages.filter((m) => m.conversation === conv && m.seq > after), has_more: false };
    },
    async createEpoch(conv, epoch, envelopes, commitment) {
      (world.created = world.created || []).push({ conv, epoch, envelopes, commitment });
      world.epoch = epoch;
      return { epoch };
    },
    async addEnvelopes(conv, envelopes) {
      world.added.push(...envelopes);
      return { added: envelopes.length };
    },
    async approveKeyRequest(conv, deviceId) {
      world.approved.push(deviceId);
      world.pending = world.pending.filter((p) => p !== deviceId);
      return { ok: true };
    },
    async keyRequests() {
      world.calls.push("requests");
      return { requests: world.requests };
    },
    async conversations() {
      return { conversations: [] };
    },
  };
  return world;
}

/** An envelope of `key` for `epoch`, from device `from` to device `to`, signed by `signer` (default: from). */
async function wrap(world, from, to, epoch, key, { signer = from, extra = {} } = {}) {
  const env = await C.wrapEpochKey({
    epochKey: key,
    conversation: world.conversation,
    epoch,
    recipientDevice: to.deviceId,
    recipientDhPub: to.keys.dhPublic,
    senderDevice: from.deviceId,
    senderKeys: signer.keys,
  });
  // What the server adds to each envelope it lists: the client must not rely on it.
  return { ...env, sender_user: from.userId, sender_sig_pub: b64(signer.keys.sigPublic), ...extra };
}

let seq = 0;
/** A stored message (history shape) of `from`'s device, as the server would serve it. */
async function message(world, from, epoch, key, text, { sender = from.userId } = {}) {
  const clientId = uid("c");
  const m = await C.encryptMessage({
    epochKey: key,
    conversation: world.conversation,
    epoch,
    senderDevice: from.deviceId,
    senderKeys: from.keys,
    clientId,
    msgType: "text",
    plaintext: { text },
  });
  const stored = {
    conversation: world.conversation,
    seq: ++seq,
    client_id: clientId,
    sender,
    device: from.deviceId,
    msg_type: "text",
    body: urlToStd(m.ciphertext),
    nonce: urlToStd(m.nonce),
    sig: urlToStd(m.sig),
    meta: {},
    v: m.v,
    epoch,
    created_at: Date.now() / 1000,
  };
  world.messages.push(stored);
  return stored;
}

function system(world, msgType, meta) {
  const m = { conversation: world.conversation, seq: ++seq, client_id: uid("s"), sender: "system", device: null, msg_type: msgType, meta, epoch: 0, created_at: Date.now() / 1000 };
  world.messages.push(m);
  return m;
}

/** The KeyManager of device `dev` (its keys given directly, as after setup()). */
function managerOf(world, dev) {
  const km = new KeyManager({ api: world.api, userId: dev.userId, deviceId: dev.deviceId });
  km.device = { userId: dev.userId, deviceId: dev.deviceId, ...dev.keys };
  return km;
}

async function readable(km, msg) {
  try {
    return (await km.decrypt(msg)).text;
  } catch (err) {
    return `error:${err.code || err.message}`;
  }
}

function quiet(fn) {
  // The refusals are logged with console.warn; keep the test output readable.
  return async () => {
    const warn = console.warn;
    console.warn = () => {};
    try {
      return await fn();
    } finally {
      console.warn = warn;
    }
  };
}

// ---------------------------------------------------------------------------
// Finding 1: who may hand this device an epoch key
// ---------------------------------------------------------------------------

async function foreignSenderRefused() {
  const t = new Checker();
  const w = await makeWorld();
  const good = C.generateEpochKey();
  const bad = C.generateEpochKey();
  const msg = await message(w, w.d.coun, 1, good, "bonjour");
  // A registered device of a counsellor who is not a member of the conversation.
  w.envelopes.push(await wrap(w, w.d.other, w.d.ben, 1, bad));
  // An envelope naming the counsellor's device but signed by another key, with
  // the server's `sender_sig_pub` set to that key: the old fallback accepted it.
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 1, bad, { signer: w.d.other }));
  // A device id the server does not know, with its key in `sender_sig_pub`.
  const ghost = await makeDevice(w.users.coun);
  w.envelopes.push(await wrap(w, ghost, w.d.ben, 1, bad));
  const km = managerOf(w, w.d.ben);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 0, "no envelope opened");
  t.ok((await km.epochKey(w.conversation, 1, { fetch: false })) === null, "no key for epoch 1");
  t.ok((await readable(km, msg)) === "error:no_key", "the counsellor's message stays unreadable");
  // The real envelope from the counsellor's device is accepted.
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 1, good));
  t.ok((await readable(km, msg)) === "bonjour", "the member's envelope opens it");
  return t.result();
}

async function invalidRegistrationRefused() {
  const t = new Checker();
  const w = await makeWorld();
  const key = C.generateEpochKey();
  const msg = await message(w, w.d.ben, 1, key, "salut");
  // The server lists the counsellor's device with a registration that does not verify.
  const tampered = { ...w.d.coun.json, registration_sig: w.d.sup.json.registration_sig };
  w.members[w.users.coun] = [tampered];
  w.registry.set(w.d.coun.deviceId, tampered);
  w.envelopes.push(await wrap(w, w.d.coun, w.d.sup, 1, key));
  const km = managerOf(w, w.d.sup);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 0, "envelope from a device with an invalid registration refused");
  t.ok((await readable(km, msg)) === "error:no_key", "nothing readable");
  const listing = await km.conversationDevices(w.conversation);
  t.ok(!listing.devices.some((x) => x.deviceId === w.d.coun.deviceId), "the device is not listed to wrap for");
  await t.rejects(() => km.rewrapFor(w.conversation, w.d.coun.deviceId), "not_authorised", "no re-wrap for it");
  return t.result();
}

async function futureEpochRefused() {
  const t = new Checker();
  const w = await makeWorld();
  w.epoch = 1;
  const k1 = C.generateEpochKey();
  const k2 = C.generateEpochKey();
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 1, k1));
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 2, k2));
  const km = managerOf(w, w.d.ben);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 1, "only epoch 1 opened");
  t.ok((await km.epochKey(w.conversation, 2, { fetch: false })) === null, "epoch 2 (beyond the current epoch 1) refused");
  w.epoch = 2;
  t.ok((await km.epochKey(w.conversation, 2)) !== null, "accepted once it is the current epoch");
  return t.result();
}

async function memberPreferredOverEscrow() {
  const t = new Checker();
  const w = await makeWorld();
  const good = C.generateEpochKey();
  const other = C.generateEpochKey();
  // Listed first: an escrow supervisor's envelope with another key (nothing to check it against).
  w.envelopes.push(await wrap(w, w.d.sup, w.d.ben, 1, other));
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 1, good));
  const km = managerOf(w, w.d.ben);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 1, "epoch 1 opened once");
  const msg = await message(w, w.d.coun, 1, good, "clé du membre");
  t.ok((await readable(km, msg)) === "clé du membre", "the member's key was taken, not the supervisor's");
  // Only an escrow envelope: accepted (supervisors are the structure's escrow).
  const w2 = await makeWorld();
  w2.envelopes.push(await wrap(w2, w2.d.sup, w2.d.ben, 1, good));
  const km2 = managerOf(w2, w2.d.ben);
  t.ok((await km2.fetchEnvelopes(w2.conversation)) === 1, "an escrow supervisor's envelope alone is accepted");
  return t.result();
}

async function keyCheckedAgainstStoredMessage() {
  const t = new Checker();
  const w = await makeWorld();
  const good = C.generateEpochKey();
  const bad = C.generateEpochKey();
  const msg = await message(w, w.d.coun, 1, good, "vérifié par le tag");
  // A supervisor's (escrow) envelope carrying a key that is not the epoch's.
  w.envelopes.push(await wrap(w, w.d.sup, w.d.ben, 1, bad));
  const km = managerOf(w, w.d.ben);
  t.ok((await readable(km, msg)) === "error:no_key", "a key that does not decrypt the epoch's message is refused");
  t.ok((await km.epochKey(w.conversation, 1, { fetch: false })) === null, "and not stored");
  w.envelopes.push(await wrap(w, w.d.sup, w.d.ben, 1, good));
  t.ok((await readable(km, msg)) === "vérifié par le tag", "the right key from the same sender is accepted");
  return t.result();
}

async function formerCounsellorOnlyForHeldEpochs() {
  const t = new Checker();
  const w = await makeWorld();
  const k1 = C.generateEpochKey();
  const k2 = C.generateEpochKey();
  system(w, "system.epoch_rotated", { epoch: 1 });
  system(w, "system.counsellor_changed", { from: w.users.former, to: w.users.coun, mode: "permanent" });
  system(w, "system.epoch_rotated", { epoch: 2 });
  // The replaced counsellor re-wraps the history for the new counsellor's device.
  w.envelopes.push(await wrap(w, w.d.former, w.d.coun, 1, k1));
  w.envelopes.push(await wrap(w, w.d.former, w.d.coun, 2, k2));
  // A counsellor the thread never names does the same.
  w.envelopes.push(await wrap(w, w.d.other, w.d.coun, 2, k2));
  const km = managerOf(w, w.d.coun);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 1, "one epoch opened");
  t.ok((await km.epochKey(w.conversation, 1, { fetch: false })) !== null, "epoch 1 from the previous counsellor accepted");
  t.ok((await km.epochKey(w.conversation, 2, { fetch: false })) === null, "epoch 2 (after the change) refused, from them and from a stranger");
  return t.result();
}

// ---------------------------------------------------------------------------
// Finding 3: a message's device must belong to its sender
// ---------------------------------------------------------------------------

async function deviceMustBelongToSender() {
  const t = new Checker();
  const w = await makeWorld();
  const key = C.generateEpochKey();
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 1, key));
  const honest = await message(w, w.d.coun, 1, key, "de mon conseiller");
  // The supervisor's device wrote it; the server says the counsellor did.
  const relabelled = await message(w, w.d.sup, 1, key, "faux conseiller", { sender: w.users.coun });
  const km = managerOf(w, w.d.ben);
  t.ok((await readable(km, honest)) === "de mon conseiller", "a message from the sender's own device is read");
  await t.rejects(() => km.decrypt(relabelled), "device_mismatch", "a message from another user's device is refused");
  const text = messageText({ system: false, error: "device_mismatch", msgType: "text" });
  t.ok(/non vérifiable/.test(text), `shown as: ${text}`);
  return t.result();
}

// ---------------------------------------------------------------------------
// Finding 2: who re-wraps the history, for whom
// ---------------------------------------------------------------------------

function chatFor(w, dev, role) {
  const km = managerOf(w, dev);
  const chat = new ChatClient({ api: w.api, keys: km, user: { id: dev.userId, role }, deviceId: dev.deviceId });
  chat.setSummaries([
    { id: w.conversation, counsellor_id: w.users.coun, beneficiary_id: w.users.ben, peer: { id: w.users.ben, display_name: "Bénéficiaire" }, last_seq: 0 },
  ]);
  const events = [];
  chat.on("keyrequest", (d) => events.push(d.request));
  return { chat, km, events };
}

async function withHeldKeys(w) {
  // Epochs 1 and 2, created by the counsellor's device for every listed device.
  for (const epoch of [1, 2]) {
    const key = C.generateEpochKey();
    for (const to of [w.d.ben, w.d.coun, w.d.sup]) w.envelopes.push(await wrap(w, w.d.coun, to, epoch, key));
  }
}

const request = (w, dev, reason, approved) => ({
  type: "keys.requested",
  conversation: w.conversation,
  recipient_device: dev.deviceId,
  recipient_user: dev.userId,
  reason,
  ...(approved === undefined ? {} : { approved }),
});

async function beneficiaryNeverRewraps() {
  const t = new Checker();
  const w = await makeWorld();
  await withHeldKeys(w);
  w.members[w.users.coun].push(w.d.coun2);
  const { chat } = chatFor(w, w.d.ben, "beneficiary");
  t.ok(chat.canRewrap === false, "the beneficiary's client cannot re-wrap");
  await chat.handleKeyRequest(request(w, w.d.coun2, "transfer", true), { announced: true });
  w.requests = [{ ...request(w, w.d.coun2, "new_device", true) }];
  await chat.checkKeyRequests();
  t.ok(w.added.length === 0, "no envelope uploaded for an approved request");
  t.ok(!w.calls.includes("requests"), "it does not even list requests");
  await t.rejects(() => chat.approveKeyRequest(request(w, w.d.coun2, "new_device", true)), "not_allowed", "approving is refused");
  return t.result();
}

async function counsellorPolicy() {
  const t = new Checker();
  const w = await makeWorld();
  await withHeldKeys(w);
  const { chat, events } = chatFor(w, w.d.coun, "counsellor");
  const notices = () => chat.noticesFor(w.conversation);

  // A frame without `approved` is not approved: the counsellor is asked, nothing is sent.
  w.pending = [w.d.ben2.deviceId];
  chat.onKeyRequest(request(w, w.d.ben2, "new_device"));
  await new Promise((r) => setTimeout(r, 50));
  t.ok(w.added.length === 0 && events.length === 1 && events[0].kind === "approve", "unapproved: asked, nothing re-wrapped");

  // The server says a beneficiary's extra device is approved: still the counsellor's click only.
  w.pending = [];
  w.members[w.users.ben] = [w.d.ben, w.d.ben2];
  await chat.handleKeyRequest(request(w, w.d.ben2, "new_device", true), { announced: true });
  t.ok(w.added.length === 0 && events.length === 2 && events[1].kind === "approve", "approved beneficiary device: asked, nothing re-wrapped");

  // The click: approve, then re-wrap for that device.
  w.pending = [w.d.ben2.deviceId];
  w.members[w.users.ben] = [w.d.ben];
  w.api.approveKeyRequest = async (conv, deviceId) => {
    w.approved.push(deviceId);
    w.pending = [];
    w.members[w.users.ben] = [w.d.ben, w.d.ben2];
    return { ok: true };
  };
  const n = await chat.approveKeyRequest(events[0]);
  t.ok(w.approved.includes(w.d.ben2.deviceId), "approved on the server first");
  t.ok(n === 2 && w.added.every((e) => e.recipient_device === w.d.ben2.deviceId && e.sender_device === w.d.coun.deviceId), "then both epochs re-wrapped for it");
  t.ok(notices().length === 1 && notices()[0].userId === w.users.ben, "a notice in the thread");
  w.added.length = 0;

  // A device the conversation does not list (another counsellor's), or not at all registered.
  await chat.handleKeyRequest(request(w, w.d.other, "transfer", true), { announced: true });
  const ghost = await makeDevice(w.users.coun);
  await chat.handleKeyRequest(request(w, ghost, "new_device", true), { announced: true });
  t.ok(w.added.length === 0, "nothing for devices outside the listing");

  // A supervisor's device listed as escrow (which the server alone decides on): nothing, not even a question.
  const sup2 = await makeDevice(w.users.sup);
  w.escrow[w.users.sup] = [w.d.sup, sup2];
  const asked = events.length;
  await chat.handleKeyRequest(request(w, sup2, "new_device", true), { announced: true });
  t.ok(w.added.length === 0 && events.length === asked, "escrow device: nothing re-wrapped, nobody asked");
  await t.rejects(() => chat.keys.rewrapFor(w.conversation, sup2.deviceId), "not_authorised", "rewrapFor refuses a device listed as escrow");

  // The new counsellor after a transfer / a counsellor's new device: member, valid registration: done, and said.
  w.members[w.users.coun] = [w.d.coun, w.d.coun2];
  await chat.handleKeyRequest(request(w, w.d.coun2, "transfer", true), { announced: true });
  t.ok(w.added.length === 2 && w.added.every((e) => e.recipient_device === w.d.coun2.deviceId), "member counsellor device re-wrapped automatically");
  t.ok(notices().some((x) => x.device === w.d.coun2.deviceId && x.reason === "transfer"), "with a notice in the thread");
  return t.result();
}

// ---------------------------------------------------------------------------
// Finding 4: the backup holds the device, restoring takes it over
// ---------------------------------------------------------------------------

async function backupTakesOverDevice() {
  const t = new Checker();
  const w = await makeWorld();
  let backup = null;
  let registered = null;
  w.api.registerDevice = async (dh, sig, reg) => {
    registered = { dh, sig, reg };
    return {};
  };
  w.api.putBackup = async (b) => {
    backup = b;
    return {};
  };
  w.api.getBackup = async () => {
    if (!backup) throw new ApiError(404, "not_found", "none");
    return backup;
  };
  const userId = w.users.ben;
  const first = new KeyManager({ api: w.api, userId, deviceId: uid("phone") });
  const recovery = await first.setup();
  const opened = await C.openBackup(recovery, userId, backup);
  t.ok(opened.payload.devices.length === 1 && opened.payload.devices[0].device_id === first.deviceId, "the backup holds this device's keys");
  t.ok(Array.isArray(opened.payload.epoch_keys) && opened.payload.epoch_keys.length === 0, "and no epoch key");
  t.ok(registered && registered.sig === b64(first.device.sigPublic), "the registered keys are the backed-up ones");

  // Epochs created afterwards, sealed to that device by the counsellor.
  const oldPhone = { userId, deviceId: first.deviceId, keys: { dhPublic: first.device.dhPublic } };
  const key = C.generateEpochKey();
  w.envelopes.push(await wrap(w, w.d.coun, oldPhone, 1, key));
  const msg = await message(w, w.d.coun, 1, key, "après la sauvegarde");

  // A new phone restores: it becomes the backed-up device and reads it.
  const second = new KeyManager({ api: w.api, userId, deviceId: uid("newphone") });
  await t.rejects(() => second.restore("0000-0000-0000-0000-0000-0000-0000-0000-0000-0000-0000-0000-0000"), "bad_recovery_key", "a wrong recovery key is refused");
  const restoredId = await second.restore(recovery.toLowerCase());
  t.ok(restoredId === first.deviceId && second.deviceId === first.deviceId, "restore takes over the device id");
  t.ok(C.bytesEqual(second.device.sigPublic, first.device.sigPublic), "with the same keys");
  t.ok((await readable(second, msg)) === "après la sauvegarde", "envelopes addressed to that device open again");
  return t.result();
}

/** The signed commitment of `key` for `epoch`, made by device `creator`, as the server lists it. */
async function commit(world, creator, epoch, key, { signer = creator } = {}) {
  const value = await C.epochCommitment(key, world.conversation, epoch);
  const sig = await C.signCommitment(signer.keys, world.conversation, epoch, creator.deviceId, value);
  return { conversation: world.conversation, epoch, creator_device: creator.deviceId, commitment: b64(value), sig: b64(sig) };
}

// ---------------------------------------------------------------------------
// Key commitment: a poisoned re-wrap never hides the right key
// ---------------------------------------------------------------------------

async function poisonedEnvelopeDetected() {
  const t = new Checker();
  const w = await makeWorld();
  w.epoch = 1;
  const good = C.generateEpochKey();
  const bad = C.generateEpochKey();
  w.commitments = [await commit(w, w.d.coun, 1, good)];
  // No message of the epoch at hand: only the commitment can tell the keys apart.
  // The member's poisoned envelope ranks first; the supervisor's right one second.
  w.envelopes.push(await wrap(w, w.d.coun, w.d.ben, 1, bad));
  w.envelopes.push(await wrap(w, w.d.sup, w.d.ben, 1, good));
  const km = managerOf(w, w.d.ben);
  const events = [];
  km.onSecurityEvent = (ev) => events.push(ev);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 1, "one key opened");
  const msg = await message(w, w.d.coun, 1, good, "bonne clé");
  t.ok((await readable(km, msg)) === "bonne clé", "the right key is used");
  t.ok(events.length === 1 && events[0].kind === "bad_envelope" && events[0].senderDevice === w.d.coun.deviceId && events[0].senderUser === w.users.coun && events[0].recovered === true, "the poisoned envelope is a security event naming its sender");
  t.ok((w.reports || []).length === 1 && w.reports[0].senderDevice === w.d.coun.deviceId && w.reports[0].epoch === 1, "and is reported to the server");

  // Only poisoned envelopes: nothing is accepted, the event says so.
  const w2 = await makeWorld();
  w2.epoch = 1;
  w2.commitments = [await commit(w2, w2.d.coun, 1, good)];
  w2.envelopes.push(await wrap(w2, w2.d.coun, w2.d.ben, 1, bad));
  const km2 = managerOf(w2, w2.d.ben);
  const events2 = [];
  km2.onSecurityEvent = (ev) => events2.push(ev);
  t.ok((await km2.fetchEnvelopes(w2.conversation)) === 0, "a poisoned key alone is refused");
  t.ok(events2.length === 1 && events2[0].recovered === false, "reported as not recovered");

  // A commitment signed by someone else than the epoch's creator is not believed.
  const w3 = await makeWorld();
  w3.epoch = 1;
  w3.commitments = [await commit(w3, w3.d.coun, 1, bad, { signer: w3.d.other })];
  w3.envelopes.push(await wrap(w3, w3.d.coun, w3.d.ben, 1, good));
  const km3 = managerOf(w3, w3.d.ben);
  t.ok((await km3.fetchEnvelopes(w3.conversation)) === 1, "a forged commitment is ignored (the epoch falls back to the message check)");
  return t.result();
}

/**
 * The structure envelopes of an epoch: the young person's junk one first, the
 * counsellor's right one second. A device holding the structure key keeps the
 * right key and reports the junk one (a security event, `structure: true`).
 */
async function poisonedStructureEnvelopeDetected() {
  const t = new Checker();
  const w = await makeWorld();
  w.epoch = 1;
  const good = C.generateEpochKey();
  const bad = C.generateEpochKey();
  w.commitments = [await commit(w, w.d.coun, 1, good)];
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  const publicRaw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const keyId = await S.structureKeyId(publicRaw);
  const structureKey = { deviceId: S.structureRecipient(keyId), keys: { dhPublic: publicRaw } };
  w.structure = {
    key: { key_id: keyId },
    missing_epochs: [],
    envelopes: [await wrap(w, w.d.ben, structureKey, 1, bad), await wrap(w, w.d.coun, structureKey, 1, good)],
  };
  // The reader: another device of the counsellor, holding the structure key, no envelope of its own.
  const km = managerOf(w, w.d.coun2);
  km.structure.pair = { keyId, privateKey: pair.privateKey, publicRaw };
  const events = [];
  km.onSecurityEvent = (ev) => events.push(ev);
  t.ok((await km.fetchEnvelopes(w.conversation)) === 1, "one key opened from the structure envelopes");
  const msg = await message(w, w.d.coun, 1, good, "bonne clé");
  t.ok((await readable(km, msg)) === "bonne clé", "the right key is used");
  t.ok(events.length === 1 && events[0].kind === "bad_envelope" && events[0].senderDevice === w.d.ben.deviceId && events[0].structure === true && events[0].recovered === true, "the junk structure envelope is a security event naming its sender");
  t.ok((w.reports || []).length === 1 && w.reports[0].senderDevice === w.d.ben.deviceId && w.reports[0].structure === true, "and is reported to the server as a structure envelope");
  return t.result();
}

/**
 * No escrow (issue #10 point 6): the server lists supervisors' devices as
 * escrow (a ghost reader it added, before any structure key): a new epoch is
 * sealed to the members' devices only.
 */
async function escrowNeverSealedTo() {
  const t = new Checker();
  const w = await makeWorld();
  w.epoch = 0;
  const ghost = await makeDevice(w.users.sup);
  w.registry.set(ghost.deviceId, ghost.json);
  w.escrow[w.users.sup] = [w.d.sup, ghost];
  const km = managerOf(w, w.d.coun);
  t.ok((await km.rotate(w.conversation)) === 1, "epoch 1 created");
  const sent = (w.created || []).flatMap((c) => c.envelopes.map((e) => e.recipient_device)).sort();
  t.ok(JSON.stringify(sent) === JSON.stringify([w.d.ben.deviceId, w.d.coun.deviceId].sort()), "sealed to the two members' devices only");
  t.ok(!sent.includes(ghost.deviceId) && !sent.includes(w.d.sup.deviceId), "never to a device listed as escrow");
  return t.result();
}

/**
 * The counsellor's devices a young person's app remembers (their endorsements
 * of the structure key count for a first pin): a device of the *current*
 * counsellor that the listing stops showing (removed: lost or stolen) is
 * forgotten; a previous counsellor's stay after a transfer.
 */
async function removedPeerForgotten() {
  const t = new Checker();
  const w = await makeWorld();
  w.members[w.users.coun] = [w.d.coun, w.d.coun2];
  const km = managerOf(w, w.d.ben);
  const ids = async () => [...(await km.peerMembers(w.conversation)).keys()].sort();
  await km.conversationDevices(w.conversation);
  t.ok(JSON.stringify(await ids()) === JSON.stringify([w.d.coun.deviceId, w.d.coun2.deviceId].sort()), "both of the counsellor's devices remembered");
  w.members[w.users.coun] = [w.d.coun];
  await km.conversationDevices(w.conversation);
  t.ok(JSON.stringify(await ids()) === JSON.stringify([w.d.coun.deviceId]), "the removed device is forgotten");
  delete w.members[w.users.coun];
  w.members[w.users.former] = [w.d.former];
  w.roles[w.users.former] = "counsellor";
  await km.conversationDevices(w.conversation);
  t.ok(JSON.stringify(await ids()) === JSON.stringify([w.d.coun.deviceId, w.d.former.deviceId].sort()), "after a transfer the previous counsellor's device stays, the new one's is added");
  return t.result();
}

export const scenarios = {
  removedPeerForgotten,
  poisonedEnvelopeDetected,
  escrowNeverSealedTo,
  poisonedStructureEnvelopeDetected,
  foreignSenderRefused,
  invalidRegistrationRefused,
  futureEpochRefused,
  memberPreferredOverEscrow,
  keyCheckedAgainstStoredMessage,
  formerCounsellorOnlyForHeldEpochs,
  deviceMustBelongToSender,
  beneficiaryNeverRewraps,
  counsellorPolicy,
  backupTakesOverDevice,
};

/** Run one scenario; never throws. */
export async function run(name) {
  const scenario = scenarios[name];
  if (!scenario) return { pass: false, messages: [`no scenario ${name}`] };
  try {
    return await quiet(scenario)();
  } catch (err) {
    return { pass: false, messages: [`error: ${err && err.stack ? err.stack : err}`] };
  }
}
