/**
 * The HTTP API client (docs/protocol.md, "HTTP API" and "End-to-end keys").
 *
 * Every method resolves with the decoded JSON answer or rejects with an
 * ApiError carrying the HTTP status and the API's error code (status 0 and
 * code "network" when the server could not be reached). Its `message` is
 * French, for people (shared/errors.js); `detail` keeps the server's own text.
 */

import { errorText } from "./errors.js";
import { deviceName } from "./device-name.js";

export class ApiError extends Error {
  constructor(status, code, message, body = null) {
    super(errorText({ status, code }));
    this.detail = message || code;
    this.status = status;
    this.code = code;
    this.body = body;
  }
}

export class Api {
  /** `onUnauthenticated` is called when a request with a token gets 401. */
  constructor({ token = null, onUnauthenticated = null } = {}) {
    this.token = token;
    this.onUnauthenticated = onUnauthenticated;
  }

  async request(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch (err) {
      throw new ApiError(0, "network", err.message);
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = null;
      }
    }
    if (!response.ok) {
      const e = data && data.error ? data.error : {};
      const err = new ApiError(response.status, e.code || `http_${response.status}`, e.message, data);
      if (response.status === 401 && this.token && this.onUnauthenticated) this.onUnauthenticated(err);
      throw err;
    }
    return data;
  }

  get(path) {
    return this.request("GET", path);
  }

  post(path, body = {}) {
    return this.request("POST", path, body);
  }

  // ---- accounts
  login(login, password, deviceId) {
    return this.post("/api/login", { login, password, ...(deviceId ? { device_id: deviceId } : {}) });
  }

  /** `secret`: `{ code }` (a code the server made) or `{ proof }` (one the console made). */
  activate(secret, password, deviceId) {
    return this.post("/api/activate", { ...secret, password, ...(deviceId ? { device_id: deviceId } : {}) });
  }

  logout() {
    return this.post("/api/logout");
  }

  me() {
    return this.get("/api/me");
  }

  createBeneficiary(login, displayName, programme, activationProof = null) {
    return this.post("/api/beneficiaries", { login, display_name: displayName, programme: programme || null, ...(activationProof ? { activation_proof: activationProof } : {}) });
  }

  // ---- the activation box (docs/protocol.md, "End-to-end keys")
  putActivationBox(conversation, box) {
    return this.request("PUT", `/api/conversations/${encodeURIComponent(conversation)}/activation-box`, box);
  }

  activationBox(conversation) {
    return this.get(`/api/conversations/${encodeURIComponent(conversation)}/activation-box`);
  }

  dropActivationBox(conversation) {
    return this.request("DELETE", `/api/conversations/${encodeURIComponent(conversation)}/activation-box`);
  }

  // ---- conversations
  conversations() {
    return this.get("/api/conversations");
  }

  messages(conversation, { before, after, limit } = {}) {
    const q = new URLSearchParams();
    if (before !== undefined && before !== null) q.set("before", String(before));
    if (after !== undefined && after !== null) q.set("after", String(after));
    if (limit) q.set("limit", String(limit));
    return this.get(`/api/conversations/${encodeURIComponent(conversation)}/messages?${q}`);
  }

  markRead(conversation, seq) {
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/read`, { seq });
  }

  flag(conversation, flagged) {
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/flag`, { flagged });
  }

  transfer(conversation, to, mode, until) {
    const body = { mode };
    if (to) body.to = to;
    if (until) body.until = until;
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/transfer`, body);
  }

  structure() {
    return this.get("/api/structure");
  }

  /** Names and roles of people a thread mentions (at most 50 ids). */
  people(ids) {
    return this.get(`/api/people?ids=${ids.map(encodeURIComponent).join(",")}`);
  }

  // ---- data lifecycle (docs/privacy.md)
  deleteAccount(password) {
    return this.post("/api/account/delete", { password });
  }

  archive(conversation, reason) {
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/archive`, { reason });
  }

  restore(conversation) {
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/restore`);
  }

  // ---- end-to-end keys
  registerDevice(dhPub, sigPub, registrationSig) {
    return this.post("/api/devices", { dh_pub: dhPub, sig_pub: sigPub, registration_sig: registrationSig, name: deviceName() });
  }

  /** POST /api/keys/backup/renew (shared/recovery.js). */
  renewRecovery(password, device, backup) {
    return this.post("/api/keys/backup/renew", { password, device, backup });
  }

  myDevices() {
    return this.get("/api/devices");
  }

  removeDevice(deviceId) {
    return this.request("DELETE", `/api/devices/${encodeURIComponent(deviceId)}`);
  }

  conversationDevices(conversation) {
    return this.get(`/api/conversations/${encodeURIComponent(conversation)}/devices`);
  }

  createEpoch(conversation, epoch, envelopes, { commitment, commitment_sig } = {}) {
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/epochs`, { epoch, envelopes, commitment, commitment_sig });
  }

  /** `structure`: the envelope was sealed to the structure key, not to this device. */
  reportEnvelope(conversation, epoch, senderDevice, { structure = false } = {}) {
    const body = { conversation, epoch, sender_device: senderDevice };
    if (structure) body.structure = true;
    return this.post("/api/keys/report", body);
  }

  addEnvelopes(conversation, envelopes) {
    return this.post(`/api/conversations/${encodeURIComponent(conversation)}/envelopes`, { envelopes });
  }

  envelopes(conversation) {
    const q = conversation ? `?conversation=${encodeURIComponent(conversation)}` : "";
    return this.get(`/api/keys/envelopes${q}`);
  }

  keyRequests() {
    return this.get("/api/keys/requests");
  }

  approveKeyRequest(conversation, deviceId) {
    return this.post("/api/keys/requests/approve", { conversation, device_id: deviceId });
  }

  putBackup(backup) {
    return this.request("PUT", "/api/keys/backup", backup);
  }

  getBackup() {
    return this.get("/api/keys/backup");
  }

  device(deviceId) {
    return this.get(`/api/keys/devices/${encodeURIComponent(deviceId)}`);
  }

  /** The structure key as this device sees it (docs/protocol.md, "Structure key"). */
  structureKey() {
    return this.get("/api/structure-key");
  }

  createStructureKey(publicKey, sig, grant) {
    return this.post("/api/structure-key", { public_key: publicKey, sig, grant });
  }

  addStructureGrants(grants) {
    return this.post("/api/structure-key/grants", { grants });
  }

  /** { structure, key_id, device_id, sig }: this staff device endorses the structure key. */
  endorseStructureKey(endorsement) {
    return this.post("/api/structure-key/endorsements", endorsement);
  }
}
