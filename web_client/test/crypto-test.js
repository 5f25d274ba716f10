/**
 * Test harness for web_client/shared/crypto.js, run by test/crypto.html.
 *
 * The page reads its inputs from the query string:
 *   rfc=URL    the RFC 9180 A.1.1 vector (JSON, hex strings)
 *   peer=URL   another implementation's vectors document (optional)
 *   seed=TEXT  seed of the reproducible browser vectors
 * and leaves a JSON-serialisable summary on window.__cryptoResults:
 *   { done, pass, rfc9180, peer, self, browserVectors, browserVectorsCheck, error }
 * where each part is { pass, messages } (peer: checkVectors' report, or
 * { skipped: true, reason }).
 */

import * as c from "../shared/crypto.js";
import * as act from "../shared/activation.js";
import * as sk from "../shared/structure-crypto.js";

class Checker {
  constructor() {
    this.messages = [];
    this.failures = 0;
  }

  ok(condition, what) {
    if (!condition) this.failures++;
    this.messages.push(`${condition ? "ok" : "FAIL"}: ${what}`);
  }

  eqHex(actual, expectedHex, what) {
    const hex = c.toHex(actual);
    this.ok(hex === expectedHex.toLowerCase(), hex === expectedHex.toLowerCase() ? what : `${what}: got ${hex}, want ${expectedHex}`);
  }

  async throws(fn, what) {
    try {
      await fn();
      this.ok(false, `${what} (did not throw)`);
    } catch {
      this.ok(true, what);
    }
  }

  async guard(what, fn) {
    try {
      await fn();
    } catch (err) {
      this.ok(false, `${what}: ${err && err.stack ? err.stack : err}`);
    }
  }

  result() {
    return { pass: this.failures === 0 && this.messages.length > 0, failures: this.failures, messages: this.messages };
  }
}

/** RFC 9180 A.1.1: key derivation, key schedule, every encryption and export, both sides. */
export async function runRfc9180(v) {
  const t = new Checker();
  const h = (x) => c.fromHex(x);
  await t.guard("rfc9180", async () => {
    t.ok(v.mode === "0" && v.kem_id === "32" && v.kdf_id === "1" && v.aead_id === "1", "suite is base/X25519/SHA256/AES-128-GCM");
    const e = await c.hpke.deriveKeyPair(h(v.ikmE), { extractable: true });
    t.eqHex(e.skRaw, v.skEm, "DeriveKeyPair(ikmE).sk");
    t.eqHex(e.pkRaw, v.pkEm, "DeriveKeyPair(ikmE).pk");
    const r = await c.hpke.deriveKeyPair(h(v.ikmR));
    t.eqHex(r.skRaw, v.skRm, "DeriveKeyPair(ikmR).sk");
    t.eqHex(r.pkRaw, v.pkRm, "DeriveKeyPair(ikmR).pk");

    const { enc, ctx: sender } = await c.setupBaseS(h(v.pkRm), h(v.info), { ikmE: h(v.ikmE) });
    t.eqHex(enc, v.enc, "enc");
    const viaSkE = await c.setupBaseS(h(v.pkRm), h(v.info), { skE: h(v.skEm) });
    t.eqHex(viaSkE.enc, v.enc, "enc (skE injected)");
    const receiver = await c.setupBaseR(h(v.enc), h(v.skRm), undefined, h(v.info));
    const receiverKey = await c.setupBaseR(h(v.enc), r.privateKey, h(v.pkRm), h(v.info));
    for (const [name, ctx] of [["sender", sender], ["receiver", receiver], ["receiver (CryptoKey)", receiverKey]]) {
      t.eqHex(ctx.sharedSecret, v.shared_secret, `${name} shared_secret`);
      t.eqHex(ctx.keyScheduleContext, v.key_schedule_context, `${name} key_schedule_context`);
      t.eqHex(ctx.secret, v.secret, `${name} secret`);
      t.eqHex(ctx.key, v.key, `${name} key`);
      t.eqHex(ctx.baseNonce, v.base_nonce, `${name} base_nonce`);
      t.eqHex(ctx.exporterSecret, v.exporter_secret, `${name} exporter_secret`);
    }

    // Sender: seal every sequence number in order, compare the listed ones.
    const wanted = new Map(v.encryptions.map((x) => [BigInt(x.sequence_number), x]));
    const last = v.encryptions.reduce((m, x) => (BigInt(x.sequence_number) > m ? BigInt(x.sequence_number) : m), 0n);
    for (let seq = 0n; seq <= last; seq++) {
      const x = wanted.get(seq);
      t.ok(sender.seq === seq, `sender seq advances to ${seq}`);
      if (x) {
        t.eqHex(sender.computeNonce(seq), x.nonce, `nonce(${seq})`);
        t.eqHex(await sender.seal(h(x.aad), h(x.pt)), x.ct, `seal seq ${seq}`);
      } else {
        await sender.seal(new Uint8Array(0), new Uint8Array(0));
      }
    }
    // Receiver: jump to each listed sequence number and open.
    for (const x of v.encryptions) {
      receiver.seq = BigInt(x.sequence_number);
      t.eqHex(await receiver.open(h(x.aad), h(x.ct)), x.pt, `open seq ${x.sequence_number}`);
      t.ok(receiver.seq === BigInt(x.sequence_number) + 1n, `receiver seq increments after ${x.sequence_number}`);
    }
    receiver.seq = 0n;
    const first = v.encryptions[0];
    await t.throws(() => receiver.open(h(first.aad + "00"), h(first.ct)), "open with other aad fails");
    t.ok(receiver.seq === 0n, "failed open leaves seq unchanged");
    for (const x of v.exports) {
      for (const [name, ctx] of [["sender", sender], ["receiver", receiver]]) {
        t.eqHex(await ctx.export(h(x.exporter_context), Number(x.L)), x.exported_value, `${name} export(${x.exporter_context || "''"}, ${x.L})`);
      }
    }
    // A small-order recipient key must be refused (RFC 9180 §7.1.4).
    await t.throws(() => c.setupBaseS(new Uint8Array(32), h(v.info)), "all-zero pkR is refused");
  });
  return t.result();
}

/** Unit checks of the format helpers and the failure paths, with fresh random keys. */
export async function runSelfChecks() {
  const t = new Checker();
  await t.guard("self", async () => {
    // Encodings.
    t.eqHex(c.lp("ab"), "000000026162", "lp(str)");
    t.eqHex(c.lp(4294967296), "0000000a34323934393637323936", "lp(epoch) is decimal ASCII");
    t.eqHex(c.lp("é"), "00000002c3a9", "lp is UTF-8 bytes");
    t.eqHex(c.lp(new Uint8Array(0)), "00000000", "lp(empty)");
    for (let n = 0; n < 40; n++) {
      const bytes = c.randomBytes(n);
      const std = btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
      if (c.b64encode(bytes) !== std || !c.bytesEqual(c.b64decode(std), bytes)) t.ok(false, `b64 length ${n}`);
    }
    t.ok(true, "b64url no padding matches btoa for lengths 0..39");
    await t.throws(() => c.b64decode("AB=="), "b64 padding rejected");
    await t.throws(() => c.b64decode("AB+/"), "b64 standard alphabet rejected");
    await t.throws(() => c.b64decode("AB"), "b64 non-zero trailing bits rejected");
    t.ok((await c.hkdf(c.utf8("k"), new Uint8Array(0), c.utf8("i"), 42)).length === 42, "hkdf length");

    // Recovery key text form.
    const rk = c.generateRecoveryKey();
    const text = c.formatRecoveryKey(rk);
    t.ok(/^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){12}$/.test(text), `recovery key format ${text}`);
    t.ok(c.bytesEqual(c.parseRecoveryKey(text), rk), "recovery key parse(format(k)) == k");
    t.ok(c.bytesEqual(c.parseRecoveryKey(text.toLowerCase().replace(/-/g, " ")), rk), "parse is case/space tolerant");
    t.ok(c.formatRecoveryKey(new Uint8Array(32).fill(255)).endsWith("ZZZG"), "fill bits are zero (trailing)");
    t.ok(c.bytesEqual(c.parseRecoveryKey("O".repeat(52)), new Uint8Array(32)), "O reads as 0");
    t.ok(c.bytesEqual(c.parseRecoveryKey("l".repeat(51) + "G"), c.parseRecoveryKey("1".repeat(51) + "G")), "l reads as 1");
    await t.throws(() => c.parseRecoveryKey("U".repeat(52)), "U is not Crockford");
    await t.throws(() => c.parseRecoveryKey(text.slice(0, -1)), "short recovery key rejected");
    await t.throws(() => c.parseRecoveryKey("0".repeat(51) + "1"), "non-zero fill bits rejected");

    // Non-extractable device keys work end to end.
    const alice = await c.generateDeviceKeys();
    const bob = await c.generateDeviceKeys();
    t.ok(!alice.dhPrivate.extractable && !alice.sigPrivate.extractable, "device keys are non-extractable by default");
    t.ok(alice.dhPublic.length === 32 && alice.sigPublic.length === 32, "raw public keys are 32 bytes");
    await t.throws(() => c.exportDevicePrivate(alice), "non-extractable keys cannot be exported");
    const reg = await c.deviceRegistration(alice, "u-a", "d-a");
    t.ok(await c.verifyRegistration("u-a", "d-a", alice.dhPublic, alice.sigPublic, c.b64decode(reg.sig)), "registration verifies");
    t.ok(!(await c.verifyRegistration("u-a", "d-b", alice.dhPublic, alice.sigPublic, c.b64decode(reg.sig))), "registration bound to device id");
    t.ok(!(await c.verifyRegistration("u-a", "d-a", bob.dhPublic, alice.sigPublic, c.b64decode(reg.sig))), "registration bound to dh key");

    // Envelopes.
    const epochKey = c.generateEpochKey();
    const env = await c.wrapEpochKey({
      epochKey, conversation: "c", epoch: 3, recipientDevice: "d-b", recipientDhPub: bob.dhPublic,
      senderDevice: "d-a", senderKeys: alice,
    });
    t.ok(c.bytesEqual(await c.openEnvelope(env, bob, alice.sigPublic), epochKey), "envelope round trip");
    t.ok(!(await c.verifyEnvelope(env, bob.sigPublic)), "envelope sig checked against the sender key");
    await t.throws(() => c.openEnvelope(env, alice, alice.sigPublic), "other device cannot open the envelope");
    await t.throws(() => c.openEnvelope({ ...env, epoch: 4 }, bob, alice.sigPublic), "relabelled epoch rejected");
    const ct = c.b64decode(env.ct);
    ct[0] ^= 1;
    await t.throws(() => c.openEnvelope({ ...env, ct: c.b64encode(ct) }, bob, alice.sigPublic), "tampered ct rejected");
    // A relabelled envelope re-signed by the sender still fails: info binds it.
    const moved = { ...env, conversation: "other" };
    const info = c.envelopeInfo(moved.conversation, moved.epoch, moved.recipient_device);
    const sig = await c.sign(alice.sigPrivate, c.envelopeSigBytes(info, c.envelopeAad("d-a"), c.b64decode(env.enc), c.b64decode(env.ct)));
    await t.throws(() => c.openEnvelope({ ...moved, sig: c.b64encode(sig) }, bob, alice.sigPublic), "HPKE info binds the conversation");

    // Messages.
    const msg = await c.encryptMessage({
      epochKey, conversation: "c", epoch: 3, senderDevice: "d-a", senderKeys: alice,
      clientId: "m1", msgType: "text", plaintext: { text: "salut ✓" },
    });
    t.ok((await c.decryptMessageJson(msg, epochKey, alice.sigPublic)).text === "salut ✓", "message round trip");
    t.ok(await c.verifyMessage(msg, alice.sigPublic), "server-side verify");
    t.ok(!(await c.verifyMessage({ ...msg, msg_type: "appointment" }, alice.sigPublic)), "relabelled type fails verify");
    const aesKey = await crypto.subtle.importKey("raw", epochKey, "AES-GCM", false, ["encrypt", "decrypt"]);
    t.ok(c.utf8decode(await c.decryptMessage(msg, aesKey, alice.sigPublic)).includes("salut"), "epoch key as CryptoKey");
    const relabelled = { ...msg, client_id: "m2" };
    const aad = c.messageAad({ conversation: "c", epoch: 3, senderDevice: "d-a", clientId: "m2", msgType: "text" });
    relabelled.sig = c.b64encode(await c.sign(alice.sigPrivate, c.messageSigBytes(aad, c.b64decode(msg.nonce), c.b64decode(msg.ciphertext))));
    await t.throws(() => c.decryptMessage(relabelled, epochKey, alice.sigPublic), "AES-GCM aad binds the client id");
    await t.throws(() => c.decryptMessage(msg, c.generateEpochKey(), alice.sigPublic), "wrong epoch key fails");

    // Version 2 binds meta; version 1 is still read.
    const meta = { item: "rdv-1", event: "created", starts_at: 1795000000 };
    const rdv = await c.encryptMessage({
      epochKey, conversation: "c", epoch: 3, senderDevice: "d-a", senderKeys: alice,
      clientId: "m3", msgType: "appointment", plaintext: { titre: "RDV" }, meta,
    });
    t.ok(rdv.v === 2 && rdv.meta === meta, "messages are written in version 2 with their meta");
    t.ok((await c.decryptMessageJson(rdv, epochKey, alice.sigPublic)).titre === "RDV", "v2 round trip with meta");
    t.ok(await c.verifyMessage({ ...rdv, meta: { starts_at: 1795000000, event: "created", item: "rdv-1" } }, alice.sigPublic), "meta key order does not matter");
    for (const [label, other] of [
      ["event changed", { ...meta, event: "cancelled" }],
      ["time changed", { ...meta, starts_at: 1795003600 }],
      ["meta emptied", {}],
    ]) {
      t.ok(!(await c.verifyMessage({ ...rdv, meta: other }, alice.sigPublic)), `tampered meta (${label}) fails verify`);
      await t.throws(() => c.decryptMessage({ ...rdv, meta: other }, epochKey, alice.sigPublic), `tampered meta (${label}) refused by the receiver`);
    }
    t.ok(!(await c.verifyMessage({ ...rdv, v: 1 }, alice.sigPublic)), "a v2 message relabelled v1 fails verify");
    const old = await c.encryptMessage({
      epochKey, conversation: "c", epoch: 3, senderDevice: "d-a", senderKeys: alice,
      clientId: "m4", msgType: "text", plaintext: { text: "ancien" }, version: 1,
    });
    t.ok(old.v === 1 && old.meta === undefined, "version 1 writes no meta");
    t.ok((await c.decryptMessageJson({ ...old, meta: { any: 1 } }, epochKey, alice.sigPublic)).text === "ancien", "v1 still decrypts, meta unbound");
    t.ok((await c.decryptMessageJson({ ...old, v: undefined }, epochKey, alice.sigPublic)).text === "ancien", "absent v reads as version 1");
    await t.throws(() => c.encryptMessage({
      epochKey, conversation: "c", epoch: 3, senderDevice: "d-a", senderKeys: alice,
      clientId: "m5", msgType: "action", plaintext: {}, meta: { due: 1.5 },
    }), "a fraction in meta has no canonical form");
    t.ok(c.canonicalMetaText({ b: [1, { d: null, c: true }], a: "é\n" }) === '{"a":"é\\n","b":[1,{"c":true,"d":null}]}', "canonical meta text");

    // Safety number.
    const sn = await c.safetyNumber({ userId: "u-a", sigPubs: [alice.sigPublic] }, { userId: "u-b", sigPubs: [bob.sigPublic] });
    t.ok(/^\d{30}$/.test(sn), `safety number shape ${sn}`);
    t.ok(c.formatSafetyNumber(sn) === sn.match(/.{5}/g).join(" "), "safety number display groups");
    await t.throws(() => c.safetyNumber({ userId: "u-a", sigPubs: [alice.sigPublic] }, { userId: "u-a", sigPubs: [bob.sigPublic] }), "same user twice refused");
    await t.throws(() => c.safetyNumber({ userId: "u-a", sigPubs: [alice.sigPublic, alice.sigPublic] }, { userId: "u-b", sigPubs: [] }), "duplicate key refused");
    const sn2 = await c.safetyNumber({ userId: "u-b", sigPubs: [bob.sigPublic] }, { userId: "u-a", sigPubs: [alice.sigPublic] });
    t.ok(sn === sn2, "safety number is symmetric");
    // Ordering by code point, not UTF-16: U+FF21 sorts before U+1F600 in Python, not in JS's default sort.
    const p = await c.safetyNumber({ userId: "\uFF21", sigPubs: [alice.sigPublic] }, { userId: "\u{1F600}", sigPubs: [bob.sigPublic] });
    const digest = await c.sha256(c.concat(c.lp("cejchat/safety/v1"), c.lp("\uFF21"), c.lp(alice.sigPublic), c.lp("\u{1F600}"), c.lp(bob.sigPublic)));
    let expected = [];
    for (let i = 0; i < 6; i++) {
      let n = 0;
      for (let j = 0; j < 5; j++) n = n * 256 + digest[5 * i + j];
      expected.push(String(n % 100000).padStart(5, "0"));
    }
    t.ok(p === expected.join(""), "user ids ordered by code point");

    // Backups.
    const extractable = await c.generateDeviceKeys({ extractable: true });
    const payload = await c.backupPayload("u-a", [{ deviceId: "d-a", keys: extractable }], [{ conversation: "c", epoch: 3, key: epochKey }]);
    const backup = await c.sealBackup(rk, "u-a", payload);
    const opened = await c.openBackup(text, "u-a", backup);
    t.ok(opened.payload.epoch_keys[0].key === c.b64encode(epochKey), "backup round trip via the text form");
    const restored = await c.importDeviceKeys({ dhPriv: c.b64decode(opened.payload.devices[0].dh_priv), sigPriv: c.b64decode(opened.payload.devices[0].sig_priv) });
    t.ok(c.bytesEqual(restored.sigPublic, extractable.sigPublic) && c.bytesEqual(restored.dhPublic, extractable.dhPublic), "restored device keys match");
    t.ok(!restored.dhPrivate.extractable, "restored keys are non-extractable by default");
    await t.throws(() => c.openBackup(c.generateRecoveryKey(), "u-a", backup), "wrong recovery key fails");
    await t.throws(() => c.openBackup(rk, "u-b", backup), "backup bound to the user id");

    // A fresh (non-seeded) vectors document passes our own checker.
    const fresh = await c.checkVectors(await c.buildVectors("browser"));
    t.ok(fresh.ok, `fresh random vectors check: ${fresh.errors.join("; ")}`);
  });
  return t.result();
}

/** The fixed epoch key commitment vector (shared/vectors/epoch-commitment-v1.json). */
async function runCommitmentVector(doc) {
  const t = new Checker();
  await t.guard("epoch key commitment vector", async () => {
    for (const cs of doc.cases) {
      const label = `${cs.conversation}/${cs.epoch}`;
      const key = c.b64decode(cs.epoch_key);
      const commitment = await c.epochCommitment(key, cs.conversation, cs.epoch);
      t.ok(c.b64encode(commitment) === cs.commitment, `commitment ${label}`);
      t.ok(c.toHex(c.commitmentSigBytes(cs.conversation, cs.epoch, cs.creator_device, commitment)) === cs.signed_bytes_hex, `signed bytes ${label}`);
      t.ok(await c.verifyCommitment(c.b64decode(cs.creator_sig_pub), cs.conversation, cs.epoch, cs.creator_device, commitment, c.b64decode(cs.sig)), `signature ${label}`);
      t.ok(await c.keyMatchesCommitment(key, cs.conversation, cs.epoch, commitment), `key matches ${label}`);
      t.ok(!(await c.keyMatchesCommitment(c.generateEpochKey(), cs.conversation, cs.epoch, commitment)), `another key does not match ${label}`);
      t.ok(!(await c.keyMatchesCommitment(key, cs.conversation, cs.epoch === 0 ? 1 : cs.epoch - 1, commitment)), `another epoch does not match ${label}`);
    }
  });
  return t.result();
}

/**
 * The fixed activation vector (tests/crypto/activation-v1.json, made by Python):
 * proof, box key, box opened and sealed again byte for byte. Then a box sealed
 * here under a fresh code, for the Python side to open (`produced`).
 */
async function runActivationVector(doc) {
  const t = new Checker();
  let produced = null;
  await t.guard("activation vector", async () => {
    t.ok(doc.iterations === act.ITERATIONS, "iterations");
    for (const cs of doc.cases) {
      const made = await act.derive(cs.code);
      t.ok(made.proofText === cs.proof, `proof ${cs.conversation}`);
      t.ok(c.b64encode(made.boxKey) === cs.box_key, `box key ${cs.conversation}`);
      const contents = await act.openBoxContents(made.boxKey, cs.conversation, cs.box);
      const opened = contents.keys;
      if (cs.structure_key) t.ok(contents.structureKey === cs.structure_key, `structure key id in the box ${cs.conversation}`);
      t.ok(cs.keys.every((k) => opened.has(k.epoch) && c.b64encode(opened.get(k.epoch)) === k.key) && opened.size === cs.keys.length, `box opens ${cs.conversation}`);
      const keys = new Map(cs.keys.map((k) => [k.epoch, c.b64decode(k.key)]));
      const again = await act.sealBox(made.boxKey, cs.conversation, keys, { nonce: c.b64decode(cs.nonce), structureKey: cs.structure_key });
      t.ok(again.box === cs.box.box && again.nonce === cs.box.nonce, `box sealed again ${cs.conversation}`);
    }
    await t.throws(async () => act.openBox(c.randomBytes(32), doc.cases[0].conversation, doc.cases[0].box), "another key does not open a box");
    const code = act.newCode();
    t.ok(act.isClientCode(code) && /^[A-Z2-9]{4}(-[A-Z2-9]{4}){3}$/.test(code), "a new code");
    const made = await act.derive(code);
    const key = c.generateEpochKey();
    produced = { code, conversation: "conv-browser", keys: [{ epoch: 1, key: c.b64encode(key) }], box: await act.sealBox(made.boxKey, "conv-browser", new Map([[1, key]])) };
  });
  return { ...t.result(), produced };
}

/**
 * The fixed structure-key vector (tests/crypto/structure-key-v1.json, made by
 * Python): key id, key signature, grant and structure envelope made again byte
 * for byte and opened. Then a fresh key, grant and envelope made here for the
 * Python side to open (`produced`).
 */
async function runStructureVector(doc) {
  const t = new Checker();
  let produced = null;
  await t.guard("structure key vector", async () => {
    const dev = async (k, extractable = false) => c.importDeviceKeys({ dhPriv: c.b64decode(k.dh_priv), sigPriv: c.b64decode(k.sig_priv) }, { extractable });
    const creator = await dev(doc.creator);
    const recipient = await dev(doc.recipient);
    const writer = await dev(doc.writer);
    const pub = c.b64decode(doc.public_key);
    const pair = await c.importX25519Private(c.b64decode(doc.private_key), { extractable: true });
    t.ok(c.bytesEqual(pair.publicRaw, pub), "structure public key from its private scalar");
    t.ok((await sk.structureKeyId(pub)) === doc.key_id, "structure key id");
    const sig = await sk.signStructureKey(creator, doc.structure, pub, doc.creator_device);
    t.ok(c.b64encode(sig) === doc.key_sig, "structure key signature made again");
    t.ok(await sk.verifyStructureKey(creator.sigPublic, doc.structure, pub, doc.creator_device, c.b64decode(doc.key_sig)), "structure key signature verifies");
    t.ok(!(await sk.verifyStructureKey(creator.sigPublic, "st-2", pub, doc.creator_device, c.b64decode(doc.key_sig))), "another structure does not verify");
    const grant = await sk.wrapGrant({ privateRaw: c.b64decode(doc.private_key), publicRaw: pub, structure: doc.structure, senderKeys: creator, senderDevice: doc.creator_device, recipientDevice: doc.grant.recipient_device, recipientDhPub: recipient.dhPublic, ikmE: c.b64decode(doc.grant_ikm_e) });
    t.ok(JSON.stringify(grant) === JSON.stringify(doc.grant), "grant made again");
    const opened = await sk.openGrant(doc.grant, recipient, creator.sigPublic, pub);
    t.ok(c.b64encode(opened.privateRaw) === doc.private_key, "grant opens");
    await t.throws(() => sk.openGrant({ ...doc.grant, recipient_device: "dev-c3" }, recipient, creator.sigPublic, pub), "a moved grant is refused");
    const env = await c.wrapEpochKey({ epochKey: c.b64decode(doc.epoch_key), conversation: doc.envelope.conversation, epoch: doc.envelope.epoch, recipientDevice: sk.structureRecipient(doc.key_id), recipientDhPub: pub, senderDevice: doc.envelope.sender_device, senderKeys: writer, ikmE: c.b64decode(doc.envelope_ikm_e) });
    t.ok(JSON.stringify(env) === JSON.stringify(doc.envelope), "structure envelope made again");
    const key = await c.openEnvelope(doc.envelope, { dhPrivate: opened.privateKey, dhPublic: pub }, writer.sigPublic);
    t.ok(c.b64encode(key) === doc.epoch_key, "structure envelope opens");
    const member = (m) => ({ userId: m.user_id, sigPubs: m.sig_pubs.map((k) => c.b64decode(k)) });
    t.ok((await c.safetyNumber(member(doc.safety.a), member(doc.safety.b), pub)) === doc.safety.number, "safety number with the structure key");
    t.ok((await c.safetyNumber(member(doc.safety.b), member(doc.safety.a))) === doc.safety.number_without_structure, "safety number without it");
    const e = doc.endorsement;
    t.ok(c.b64encode(sk.endorsementStatement(doc.structure, doc.key_id, pub, e.device_id)) === e.statement, "endorsement statement made again");
    t.ok(c.b64encode(await sk.signEndorsement(recipient, doc.structure, pub, e.device_id)) === e.sig, "endorsement signature made again");
    t.ok(await sk.verifyEndorsement(recipient.sigPublic, doc.structure, doc.key_id, pub, e.device_id, c.b64decode(e.sig)), "endorsement verifies");
    t.ok(!(await sk.verifyEndorsement(recipient.sigPublic, doc.structure, doc.key_id, pub, "dev-x", c.b64decode(e.sig))), "an endorsement for another device does not verify");
    t.ok(!(await sk.verifyEndorsement(creator.sigPublic, doc.structure, doc.key_id, pub, e.device_id, c.b64decode(e.sig))), "an endorsement under another key does not verify");
    // Made here, opened by Python.
    const fresh = await c.generateDeviceKeys({ extractable: true });
    const { dhPriv, sigPriv } = await c.exportDevicePrivate(fresh);
    const rec = await c.generateDeviceKeys({ extractable: true });
    const r = await c.exportDevicePrivate(rec);
    const sp = await c.importX25519Private(c.randomBytes(32), { extractable: true });
    const spRaw = await c.exportPrivateRaw(sp.privateKey);
    const kid = await sk.structureKeyId(sp.publicRaw);
    const epochKey = c.generateEpochKey();
    produced = {
      structure: "st-browser",
      public_key: c.b64encode(sp.publicRaw),
      key_id: kid,
      key_sig: c.b64encode(await sk.signStructureKey(fresh, "st-browser", sp.publicRaw, "dev-b-sup")),
      creator_sig_pub: c.b64encode(fresh.sigPublic),
      recipient: { dh_priv: c.b64encode(r.dhPriv), sig_priv: c.b64encode(r.sigPriv) },
      grant: await sk.wrapGrant({ privateRaw: spRaw, publicRaw: sp.publicRaw, structure: "st-browser", senderKeys: fresh, senderDevice: "dev-b-sup", recipientDevice: "dev-b-c2", recipientDhPub: rec.dhPublic }),
      epoch_key: c.b64encode(epochKey),
      envelope: await c.wrapEpochKey({ epochKey, conversation: "conv-b", epoch: 2, recipientDevice: sk.structureRecipient(kid), recipientDhPub: sp.publicRaw, senderDevice: "dev-b-sup", senderKeys: fresh }),
      endorsement: { device_id: "dev-b-c2", sig_pub: c.b64encode(rec.sigPublic), sig: c.b64encode(await sk.signEndorsement(rec, "st-browser", sp.publicRaw, "dev-b-c2")) },
    };
    dhPriv.fill(0);
    sigPriv.fill(0);
  });
  return { ...t.result(), produced };
}

async function fetchJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`GET ${url}: ${response.status}`);
  return response.json();
}

/** Run everything; `params` is a URLSearchParams. */
export async function runAll(params) {
  const results = { done: false, pass: false };
  try {
    const rfcUrl = params.get("rfc");
    results.rfc9180 = rfcUrl
      ? await runRfc9180(await fetchJson(rfcUrl))
      : { pass: false, messages: ["FAIL: no rfc= parameter"] };

    const commitUrl = params.get("commit");
    results.commitment = commitUrl
      ? await runCommitmentVector(await fetchJson(commitUrl))
      : { pass: false, messages: ["FAIL: no commit= parameter"] };

    const activationUrl = params.get("activation");
    results.activation = activationUrl
      ? await runActivationVector(await fetchJson(activationUrl))
      : { pass: false, messages: ["FAIL: no activation= parameter"] };

    const structureUrl = params.get("structure");
    results.structure = structureUrl
      ? await runStructureVector(await fetchJson(structureUrl))
      : { pass: false, messages: ["FAIL: no structure= parameter"] };

    const peerUrl = params.get("peer");
    if (peerUrl) {
      const report = await c.checkVectors(await fetchJson(peerUrl));
      results.peer = { ...report, pass: report.ok, source: peerUrl };
    } else {
      results.peer = { skipped: true, reason: "no peer= parameter" };
    }

    results.self = await runSelfChecks();

    const seed = params.get("seed") ?? "cejchat/browser-vectors/v1";
    results.browserVectors = await c.buildVectors("browser", { seed });
    const again = await c.buildVectors("browser", { seed });
    const own = await c.checkVectors(results.browserVectors);
    results.browserVectorsCheck = {
      ...own,
      pass: own.ok && JSON.stringify(again) === JSON.stringify(results.browserVectors),
      reproducible: JSON.stringify(again) === JSON.stringify(results.browserVectors),
    };
    results.pass =
      results.rfc9180.pass && results.commitment.pass && results.activation.pass && results.structure.pass && results.self.pass && results.browserVectorsCheck.pass && (results.peer.skipped || results.peer.pass);
  } catch (err) {
    results.error = String(err && err.stack ? err.stack : err);
  }
  results.done = true;
  return results;
}
