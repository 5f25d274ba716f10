/**
 * The chat engine shared by the console and the app: conversation summaries,
 * loaded threads (messages by `seq`, no gap, no duplicate), the outbox, and
 * the end-to-end keys. The UI listens to events on `chat.events`:
 *
 *   summaries            the list changed (counts, order, presence, flags)
 *   thread {conversation} a loaded thread changed (messages, outbox, receipts)
 *   typing {conversation, user, typing}
 *   incoming {conversation, message}   a message from someone else arrived
 *   state {state}        connection state: connecting, online, reconnecting, offline
 *   keyrequest {request} a device waits for keys and needs this person's
 *                        decision: request.kind "approve" (a beneficiary's
 *                        device: approve, then re-wrap)
 *   keysshared {conversation, notice}  a local notice of the thread (see
 *                        noticesFor): this client re-wrapped keys for a device
 *                        (kind "keysshared"), or a security event (kind
 *                        "security": an envelope whose key failed its epoch's commitment)
 *   items {conversation} the conversation's items were (re)loaded (loadItems)
 *   sent {conversation, clientId, seq}  an outbox entry was acknowledged (stored)
 *   authfailed           the session is no longer valid
 *
 * Positions: for each loaded thread `lastSeq` is the highest `seq` such that
 * every message from the first loaded one up to it is held. Resume sends it;
 * a `message.created` beyond `lastSeq + 1` makes the thread fetch the hole
 * first; anything at or below `lastSeq` is dropped as already held.
 *
 * Re-sharing keys (docs/security.md): the server asks key holders to re-wrap
 * the history for a device (`keys.requested`, GET /api/keys/requests). Its
 * word is not enough: a beneficiary's client never re-wraps; other clients
 * re-wrap on their own only for a member's device that /devices lists with a
 * valid registration, and never for a beneficiary's device without the
 * counsellor's click, nor for a supervisor's without the user's confirmation.
 */

import { ChatSocket, FrameError } from "./socket.js";
import { ApiError } from "./api.js";
import { KeyError } from "./e2ee.js";
import { idbDelete, idbEntries, idbPut } from "./idb.js";
import { newId, delay } from "./wire.js";
import { encryptChunks, uploadBlob } from "./attachment.js";
import { b64decode } from "./b64.js";
import { People, mentioned } from "./people.js";

const PAGE = 50;
const ITEM_TYPES = new Set(["action", "appointment", "notice"]);
const MAX_ATTEMPTS = 4;
/**
 * Key housekeeping (docs/protocol.md): shown in the thread, never unread,
 * never moves a conversation up the list, never replaces its preview.
 */
export const QUIET_TYPES = new Set(["system.epoch_rotated", "system.device_changed"]);

/**
 * The unread count once the user has read up to `seq`: none if that is the
 * end; otherwise at most what lies beyond (key housekeeping is not counted,
 * so the count kept so far is the better bound).
 */
function unreadAfter(s, seq) {
  if (seq >= (s.last_seq || 0)) return 0;
  return Math.max(0, Math.min(s.unread ?? Infinity, (s.last_seq || 0) - seq));
}

export function sortSummaries(list) {
  return list.sort((a, b) => {
    if ((a.unread > 0) !== (b.unread > 0)) return a.unread > 0 ? -1 : 1;
    if (!!a.flagged !== !!b.flagged) return a.flagged ? -1 : 1;
    return (b.last_at || 0) - (a.last_at || 0);
  });
}

class Thread {
  constructor(conversation) {
    this.conversation = conversation;
    this.items = new Map();
    this.lastSeq = 0;
    this.firstSeq = null;
    this.hasOlder = false;
    this.loaded = false;
    this.loading = null;
    this.buffer = [];
    this.filling = null;
  }

  sorted() {
    return [...this.items.values()].sort((a, b) => a.seq - b.seq);
  }

  advance() {
    while (this.items.has(this.lastSeq + 1)) this.lastSeq += 1;
  }
}

export class ChatClient {
  /** `rewrap`: whether this client may re-wrap keys for other devices (never for a beneficiary). */
  constructor({ api, keys, user, deviceId, persistOutbox = false, rewrap = true }) {
    this.api = api;
    this.keys = keys;
    this.user = user;
    this.deviceId = deviceId;
    this.persistOutbox = persistOutbox;
    this.canRewrap = rewrap === true && user.role !== "beneficiary";
    this.notices = new Map();
    this.approvedHere = new Set();
    this.shared = new Set();
    this.rewrapping = new Map();
    // A newly opened epoch key is checked against the loaded messages of its epoch.
    keys.probeSource = (conversation, epoch) => this.storedMessages(conversation, epoch);
    // A poisoned envelope (its key fails the epoch's commitment) is a security event of the thread.
    keys.onSecurityEvent = (ev) =>
      this.addNotice(ev.conversation, { kind: "security", reason: ev.kind, userId: ev.senderUser, epoch: ev.epoch, recovered: ev.recovered });
    // A grant of the structure key opened: threads read after a transfer can be decrypted now.
    keys.structure.onChange = () => {
      for (const conversation of this.threads.keys()) this.retryUndecrypted(conversation, { fresh: true });
    };
    // Staff devices waiting for the structure key: the supervisor's decision (structurekey event).
    keys.structure.onWaiting = (devices) => this.emit("structurekey", { waiting: devices });
    this.events = new EventTarget();
    this.summaries = new Map();
    this.threads = new Map();
    this.outbox = [];
    this.flushing = false;
    this.typingTimers = new Map();
    this.people = new People(api, () => {
      for (const conversation of this.threads.keys()) this.emit("thread", { conversation });
      this.emit("summaries", {});
    });
    this.people.add(user);
    this.socket = new ChatSocket({
      token: api.token,
      getResume: () => this.resumePositions(),
      onFrame: (f) => this.onFrame(f),
      onState: (s) => {
        this.emit("state", { state: s });
        if (s !== "online") this.clearTyping();
      },
      onAuthOk: (f) => this.onAuthOk(f),
      onAuthFailed: () => this.emit("authfailed", {}),
    });
  }

  emit(type, detail) {
    this.events.dispatchEvent(new CustomEvent(type, { detail }));
  }

  on(type, fn) {
    this.events.addEventListener(type, (e) => fn(e.detail));
  }

  async start() {
    if (this.persistOutbox) {
      for (const [key, entry] of await idbEntries("outbox")) {
        if (key.startsWith(`${this.user.id}|`)) this.outbox.push({ ...entry, state: entry.state === "failed" ? "failed" : "pending" });
      }
      this.outbox.sort((a, b) => a.createdAt - b.createdAt);
      for (const conversation of new Set(this.outbox.map((e) => e.conversation))) this.emit("thread", { conversation });
    }
    try {
      const answer = await this.api.conversations();
      this.setSummaries(answer.conversations);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 0) throw err;
    }
    this.socket.start();
  }

  stop() {
    this.socket.stop();
    for (const timer of this.keyRetry?.values() || []) clearTimeout(timer);
  }

  // ------------------------------------------------------------------ summaries

  setSummaries(list) {
    const next = new Map();
    for (const s of list) {
      next.set(s.id, { ...this.summaries.get(s.id), ...s });
      this.people.add(s.peer);
    }
    this.summaries = next;
    for (const s of next.values()) this.decodePreview(s);
    // A conversation transferred away is no longer ours: forget its thread
    // (it is loaded afresh if it comes back).
    for (const id of [...this.threads.keys()]) if (!next.has(id)) this.threads.delete(id);
    this.emit("summaries", {});
  }

  sortedSummaries() {
    return sortSummaries([...this.summaries.values()]);
  }

  summary(conversation) {
    return this.summaries.get(conversation);
  }

  /** A person's display name, if known (GET /api/people); "" otherwise. */
  nameOf(id) {
    return this.people.nameOf(id);
  }

  peerName(conversation) {
    const s = this.summaries.get(conversation);
    return s?.peer?.display_name || s?.peer?.login || "";
  }

  // ------------------------------------------------------------------ socket frames

  resumePositions() {
    const out = {};
    for (const [id, thread] of this.threads) if (thread.loaded) out[id] = thread.lastSeq;
    return out;
  }

  onAuthOk(frame) {
    this.setSummaries(frame.conversations || []);
    for (const thread of this.threads.values()) if (!thread.loaded && !thread.loading) this.loadThread(thread.conversation);
    this.flush();
    this.checkKeyRequests();
    this.syncStructureKey();
  }

  /** The structure key: open this device's grant; a supervisor's console makes it and hands it on. */
  syncStructureKey() {
    if (this.user.role === "beneficiary") return;
    this.keys.structure.sync(this.user).catch((err) => console.warn("structure key", err.message));
  }

  onFrame(f) {
    switch (f.type) {
      case "message.created":
        this.onMessage(f.message);
        break;
      case "sync":
        this.onSync(f);
        break;
      case "read.updated":
        this.onRead(f);
        break;
      case "typing":
        this.onTyping(f);
        break;
      case "presence":
        for (const s of this.summaries.values()) {
          if (s.peer?.id === f.user) {
            s.peer_online = f.online;
            if (f.last_seen) s.peer_last_seen = f.last_seen;
          }
        }
        this.emit("summaries", {});
        break;
      case "conversation.updated":
        this.onConversationUpdated(f.conversation);
        break;
      case "keys.requested":
        this.onKeyRequest(f);
        break;
      case "structure_key.updated":
        this.syncStructureKey();
        break;
      case "keys.available":
        if (f.device === this.deviceId) {
          this.retryUndecrypted(f.conversation, { fresh: true });
          // A new phone just approved: what waited in its outbox goes now.
          this.emit("keysavailable", { conversation: f.conversation });
          this.flush();
        }
        break;
      default:
        break;
    }
  }

  onConversationUpdated(update) {
    const prev = this.summaries.get(update.id);
    const mine = (update.counsellor_id ?? prev?.counsellor_id) === this.user.id || (update.beneficiary_id ?? prev?.beneficiary_id) === this.user.id;
    if (!prev || !prev.peer || !mine || (update.counsellor_id && update.counsellor_id !== prev.counsellor_id)) {
      // A transfer (to or from us) or a conversation we do not know yet: the full list again.
      this.refreshSummaries();
    } else {
      this.summaries.set(update.id, { ...prev, ...update });
      this.decodePreview(this.summaries.get(update.id));
      this.emit("summaries", {});
    }
    if (this.threads.has(update.id)) this.retryUndecrypted(update.id);
    // A beneficiary's new phone may be waiting for this counsellor's approval.
    clearTimeout(this.requestTimer);
    this.requestTimer = setTimeout(() => this.checkKeyRequests(), 300);
  }

  onMessage(m) {
    const s = this.summaries.get(m.conversation);
    if (s) {
      const quiet = QUIET_TYPES.has(m.msg_type);
      if (m.seq > (s.last_seq || 0)) {
        const news = !quiet && m.sender !== this.user.id && m.seq > (s.read || 0);
        s.last_seq = m.seq;
        if (!quiet) {
          s.last_at = m.created_at;
          s.last_message = m;
          this.decodePreview(s);
        }
        if (news) s.unread = (s.unread || 0) + 1;
      }
      if (m.sender === this.user.id) {
        s.read = Math.max(s.read || 0, m.seq);
        s.unread = unreadAfter(s, s.read);
      }
      if (m.msg_type === "system.epoch_rotated" && m.meta?.epoch) s.epoch = Math.max(s.epoch || 0, m.meta.epoch);
      this.emit("summaries", {});
    }
    const thread = this.threads.get(m.conversation);
    if (thread) this.applyMessages(thread, [m]);
    if (ITEM_TYPES.has(m.msg_type)) this.itemsChanged(m.conversation);
    if (m.sender !== this.user.id && m.sender !== "system") {
      this.emit("incoming", { conversation: m.conversation, message: m });
    }
    if (!s) this.refreshSummaries();
  }

  async refreshSummaries() {
    try {
      const answer = await this.api.conversations();
      this.setSummaries(answer.conversations);
    } catch {
      /* next auth.ok brings them */
    }
  }

  onSync(f) {
    const thread = this.threads.get(f.conversation);
    if (!thread) return;
    if (f.recovered) this.applyMessages(thread, f.messages || []);
    else this.reloadThread(f.conversation);
  }

  onRead(f) {
    const s = this.summaries.get(f.conversation);
    if (!s) return;
    if (f.user === this.user.id) {
      s.read = Math.max(s.read || 0, f.seq);
      s.unread = unreadAfter(s, s.read);
    } else {
      s.peer_read = Math.max(s.peer_read || 0, f.seq);
    }
    this.emit("summaries", {});
    this.emit("thread", { conversation: f.conversation });
  }

  onTyping(f) {
    const key = f.conversation;
    clearTimeout(this.typingTimers.get(key));
    if (f.typing) {
      // A peer that stops typing without saying so (closed tab) times out.
      this.typingTimers.set(key, setTimeout(() => this.emit("typing", { conversation: key, user: f.user, typing: false }), 8000));
    }
    this.emit("typing", { conversation: key, user: f.user, typing: f.typing });
  }

  clearTyping() {
    for (const [key, timer] of this.typingTimers) {
      clearTimeout(timer);
      this.emit("typing", { conversation: key, typing: false });
    }
    this.typingTimers.clear();
  }

  // ------------------------------------------------------------------ threads

  thread(conversation) {
    return this.threads.get(conversation);
  }

  /** Load a conversation's latest page (once) and keep it up to date afterwards. */
  openThread(conversation) {
    let thread = this.threads.get(conversation);
    if (!thread) {
      thread = new Thread(conversation);
      this.threads.set(conversation, thread);
    }
    if (!thread.loaded && !thread.loading) this.loadThread(conversation);
    return thread;
  }

  loadThread(conversation) {
    const thread = this.threads.get(conversation);
    thread.loading = (async () => {
      try {
        const page = await this.api.messages(conversation, { limit: PAGE });
        thread.items.clear();
        thread.hasOlder = page.has_more;
        const msgs = page.messages || [];
        thread.firstSeq = msgs.length ? msgs[0].seq : null;
        thread.lastSeq = msgs.length ? msgs[0].seq - 1 : 0;
        thread.loaded = true;
        this.insert(thread, msgs);
        const buffered = thread.buffer.splice(0);
        this.applyMessages(thread, buffered);
        // Whatever arrived between the page and now comes by resume.
        if (this.socket.ready) this.socket.send({ type: "conversation.sync", id: newId(), conversation, after: thread.lastSeq });
      } catch (err) {
        this.emit("error", { error: err });
      } finally {
        thread.loading = null;
        this.emit("thread", { conversation });
      }
    })();
    return thread.loading;
  }

  reloadThread(conversation) {
    const thread = this.threads.get(conversation);
    if (!thread || thread.loading) return;
    thread.loaded = false;
    this.loadThread(conversation);
  }

  async loadOlder(conversation) {
    const thread = this.threads.get(conversation);
    if (!thread || !thread.hasOlder || thread.firstSeq === null) return;
    const page = await this.api.messages(conversation, { before: thread.firstSeq, limit: PAGE });
    const msgs = page.messages || [];
    thread.hasOlder = page.has_more;
    if (msgs.length) thread.firstSeq = msgs[0].seq;
    for (const m of msgs) if (!thread.items.has(m.seq)) thread.items.set(m.seq, this.item(m));
    for (const m of msgs) this.decode(thread, thread.items.get(m.seq));
    this.emit("thread", { conversation });
  }

  applyMessages(thread, msgs) {
    if (!thread.loaded) {
      thread.buffer.push(...msgs);
      return;
    }
    const fresh = msgs.filter((m) => m.seq > thread.lastSeq && !thread.items.has(m.seq));
    if (!fresh.length) return;
    this.insert(thread, fresh);
    const max = Math.max(...fresh.map((m) => m.seq));
    if (max > thread.lastSeq) this.fillGap(thread);
  }

  insert(thread, msgs) {
    for (const m of msgs) {
      if (thread.items.has(m.seq)) continue;
      const item = this.item(m);
      thread.items.set(m.seq, item);
      this.people.want(mentioned(m));
      this.decode(thread, item);
      if (thread.firstSeq === null || m.seq < thread.firstSeq) thread.firstSeq = m.seq;
    }
    thread.advance();
    this.emit("thread", { conversation: thread.conversation });
  }

  /** Fetch the messages between `lastSeq` and the first held one beyond it. */
  fillGap(thread) {
    if (thread.filling) return;
    thread.filling = (async () => {
      try {
        for (let guard = 0; guard < 100; guard++) {
          const beyond = [...thread.items.keys()].some((seq) => seq > thread.lastSeq + 1);
          if (!beyond) break;
          const page = await this.api.messages(thread.conversation, { after: thread.lastSeq, limit: 200 });
          const msgs = page.messages || [];
          if (!msgs.length) break;
          this.insert(thread, msgs);
        }
      } catch {
        /* the next resume fills it */
      } finally {
        thread.filling = null;
      }
    })();
  }

  item(m) {
    return {
      seq: m.seq,
      clientId: m.client_id,
      sender: m.sender,
      device: m.device,
      msgType: m.msg_type,
      meta: m.meta || {},
      // Format version 1 (stored before version 2): its meta is not signed.
      version: m.v ?? 1,
      createdAt: m.created_at,
      mine: m.sender === this.user.id,
      // Drawn on the side of its real sender: in the console, every staff
      // member's message (a previous counsellor's too) is on the counsellor's side.
      right: m.sender === this.user.id || (this.user.role !== "beneficiary" && m.sender !== "system" && m.sender !== this.summaries.get(m.conversation)?.beneficiary_id),
      system: m.sender === "system" || m.msg_type.startsWith("system."),
      quiet: QUIET_TYPES.has(m.msg_type),
      // An inactivity notice is always about the conversation's beneficiary.
      aboutMe: m.msg_type === "system.inactivity_notice" ? this.user.role === "beneficiary" : (m.meta || {}).user === this.user.id,
      content: null,
      error: null,
      raw: m,
    };
  }

  async decode(thread, item) {
    if (item.system || item.content) return;
    try {
      item.content = await this.keys.decrypt(item.raw);
      item.error = null;
    } catch (err) {
      item.error = err instanceof KeyError ? err.code : "decrypt_failed";
      if (item.error === "no_key") this.scheduleKeyRetry(thread.conversation);
    }
    this.emit("thread", { conversation: thread.conversation });
  }

  /**
   * Keys missing (a new phone waiting for a re-share, a transfer): ask the
   * server for envelopes again a little later, backing off up to a minute.
   */
  scheduleKeyRetry(conversation) {
    this.keyRetry = this.keyRetry || new Map();
    if (this.keyRetry.has(conversation)) return;
    const wait = Math.min(60000, (this.keyRetryDelay?.get(conversation) || 2500) * 2);
    this.keyRetryDelay = this.keyRetryDelay || new Map();
    this.keyRetryDelay.set(conversation, wait);
    this.keyRetry.set(
      conversation,
      setTimeout(async () => {
        this.keyRetry.delete(conversation);
        await this.retryUndecrypted(conversation);
      }, wait),
    );
  }

  async retryUndecrypted(conversation, { fresh = false } = {}) {
    const thread = this.threads.get(conversation);
    if (!thread) return;
    const waiting = [...thread.items.values()].filter((i) => !i.system && !i.content);
    if (!waiting.length) {
      this.keyRetryDelay?.delete(conversation);
      return;
    }
    try {
      await this.keys.fetchEnvelopes(conversation, { fresh });
    } catch {
      return;
    }
    for (const item of waiting) await this.decode(thread, item);
  }

  /** The loaded messages of `epoch` (wire shape) in a conversation. */
  storedMessages(conversation, epoch) {
    const thread = this.threads.get(conversation);
    if (!thread) return [];
    return [...thread.items.values()].filter((i) => !i.system && i.raw?.body && i.raw.epoch === epoch).map((i) => i.raw);
  }

  /** Local notices of a conversation's thread (keys shared by this client), each after `afterSeq`. */
  noticesFor(conversation) {
    return this.notices.get(conversation) || [];
  }

  addNotice(conversation, fields) {
    const thread = this.threads.get(conversation);
    const notice = {
      id: newId(),
      afterSeq: thread ? thread.lastSeq : this.summaries.get(conversation)?.last_seq || 0,
      createdAt: Date.now() / 1000,
      ...fields,
    };
    this.notices.set(conversation, [...this.noticesFor(conversation), notice]);
    this.emit("keysshared", { conversation, notice });
    this.emit("thread", { conversation });
    return notice;
  }

  // ------------------------------------------------------------------ previews and items

  /** Decrypt a summary's last message for the list's preview (`summary.preview`, an item). */
  async decodePreview(s) {
    const m = s?.last_message;
    if (!m || s.preview?.seq === m.seq) return;
    const item = this.item(m);
    s.preview = item;
    if (!item.system) {
      try {
        item.content = await this.keys.decrypt(m);
      } catch {
        item.error = "unreadable";
      }
    }
    // An edit or a delete: the preview is about the message it changes.
    this.emit("summaries", {});
  }

  /** The conversation's items changed: reload them a little later (once for a burst). */
  itemsChanged(conversation) {
    this.itemTimers = this.itemTimers || new Map();
    if (!this.itemsCache?.has(conversation)) return;
    clearTimeout(this.itemTimers.get(conversation));
    this.itemTimers.set(conversation, setTimeout(() => this.loadItems(conversation).catch(() => {}), 200));
  }

  /**
   * The conversation's items (GET /api/conversations/{id}/items) with the
   * decrypted content of each item's creation and of the current notice:
   * {items: [{...server fields, content}], notice: {...server fields, content} | null}.
   * Emits `items {conversation}` when loaded.
   */
  async loadItems(conversation) {
    this.itemsCache = this.itemsCache || new Map();
    this.bodyCache = this.bodyCache || new Map();
    const answer = await this.api.get(`/api/conversations/${encodeURIComponent(conversation)}/items`);
    const content = async (seq) => {
      const key = `${conversation}|${seq}`;
      if (this.bodyCache.has(key)) return this.bodyCache.get(key);
      const held = this.threads.get(conversation)?.items.get(seq);
      let value = held?.content || null;
      if (!value) {
        try {
          const page = await this.api.messages(conversation, { after: seq - 1, limit: 1 });
          const m = (page.messages || [])[0];
          if (m && m.seq === seq) value = await this.keys.decrypt(m);
        } catch {
          value = null;
        }
      }
      if (value) this.bodyCache.set(key, value);
      return value;
    };
    const items = [];
    for (const item of answer.items || []) items.push({ ...item, content: await content(item.created_seq) });
    const notice = answer.notice ? { ...answer.notice, content: await content(answer.notice.seq) } : null;
    const result = { items, notice };
    this.itemsCache.set(conversation, result);
    this.emit("items", { conversation });
    return result;
  }

  /** The items last loaded for `conversation` (or null). */
  itemsOf(conversation) {
    return this.itemsCache?.get(conversation) || null;
  }

  // ------------------------------------------------------------------ reading, typing, flags

  /** Mark the conversation read up to its latest message (when the person sees it). */
  markRead(conversation) {
    const s = this.summaries.get(conversation);
    const thread = this.threads.get(conversation);
    if (!s || !thread || !thread.loaded) return;
    const seq = thread.lastSeq;
    if (seq <= (s.read || 0)) return;
    s.read = seq;
    s.unread = unreadAfter(s, seq);
    this.emit("summaries", {});
    if (!this.socket.send({ type: "read.mark", conversation, seq })) {
      this.api.markRead(conversation, seq).catch(() => {});
    }
  }

  setTyping(conversation, typing) {
    this.socket.send({ type: "typing.set", conversation, typing });
  }

  async setFlag(conversation, flagged) {
    await this.api.flag(conversation, flagged);
    const s = this.summaries.get(conversation);
    if (s) s.flagged = flagged;
    this.emit("summaries", {});
  }

  // ------------------------------------------------------------------ outbox

  outboxFor(conversation) {
    return this.outbox.filter((e) => e.conversation === conversation);
  }

  async saveEntry(entry) {
    if (!this.persistOutbox) return;
    const { state, error, ...stored } = entry;
    await idbPut("outbox", `${this.user.id}|${entry.clientId}`, { ...stored, state: state === "failed" ? "failed" : "pending", error });
  }

  async dropEntry(entry) {
    this.outbox = this.outbox.filter((e) => e !== entry);
    if (this.persistOutbox) await idbDelete("outbox", `${this.user.id}|${entry.clientId}`);
  }

  /** Queue a text message; it is sent now if connected, else when the connection returns. */
  sendText(conversation, text) {
    return this.send(conversation, "text", { text });
  }

  /**
   * Queue any message: `content` is encrypted, `meta` is the server-visible
   * part (signed). `clientId` may be chosen by the caller (an item's creation
   * uses its item id). Returns the outbox entry.
   */
  async send(conversation, msgType, content, meta = {}, clientId = newId(), extra = {}) {
    const entry = {
      ...extra,
      clientId,
      conversation,
      msgType,
      content,
      meta,
      createdAt: Date.now() / 1000,
      state: "pending",
      attempts: 0,
      error: null,
    };
    this.outbox.push(entry);
    await this.saveEntry(entry);
    this.emit("thread", { conversation });
    this.flush();
    return entry;
  }

  retry(clientId) {
    const entry = this.outbox.find((e) => e.clientId === clientId);
    if (!entry) return;
    entry.state = "pending";
    entry.attempts = 0;
    entry.error = null;
    this.saveEntry(entry);
    this.emit("thread", { conversation: entry.conversation });
    this.flush();
  }

  async discard(clientId) {
    const entry = this.outbox.find((e) => e.clientId === clientId);
    if (!entry) return;
    await this.dropEntry(entry);
    this.emit("thread", { conversation: entry.conversation });
  }

  /** Send pending entries one at a time, oldest first, while connected. */
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    try {
      while (this.socket.ready) {
        const entry = this.outbox.find((e) => e.state === "pending");
        if (!entry) break;
        const outcome = await this.sendEntry(entry);
        if (outcome === "stop") break;
        if (outcome === "later" || outcome === "wait") {
          setTimeout(() => this.flush(), outcome === "wait" ? 15000 : 1500);
          break;
        }
      }
    } finally {
      this.flushing = false;
    }
  }

  /**
   * Queue an attachment: `content` is its body (docs/crypto-format.md), `file` the
   * bytes to encrypt and upload before the message is sent (kept in the outbox
   * until the ack, so a failed upload can be retried).
   */
  sendAttachment(conversation, content, file) {
    return this.send(conversation, "attachment", content, {}, newId(), { file });
  }

  /** Encrypt and upload an attachment entry's file; sets its `meta` {blob, size}. */
  async uploadEntry(entry) {
    const parts = await encryptChunks(b64decode(entry.content.key), entry.file);
    let answer;
    try {
      answer = await uploadBlob(this.api.token, entry.conversation, parts, (loaded, total) =>
        this.emit("upload", { clientId: entry.clientId, loaded, total }),
      );
    } catch (e) {
      throw new ApiError(e.status, e.code, e.message);
    }
    entry.meta = { blob: answer.blob, size: answer.size };
    await this.saveEntry(entry);
  }

  async sendEntry(entry) {
    const conv = entry.conversation;
    const s = this.summaries.get(conv) || {};
    entry.state = "sending";
    entry.attempts = (entry.attempts || 0) + 1;
    this.emit("thread", { conversation: conv });
    if (entry.msgType === "attachment" && !entry.meta?.blob) {
      try {
        await this.uploadEntry(entry);
      } catch (err) {
        return this.sendFailed(entry, err);
      }
    }
    let ack;
    let epoch;
    try {
      epoch = await this.keys.writableEpoch(conv, { epoch: s.epoch || 0, rotationRequired: !!s.rotation_required });
      const enc = await this.keys.encrypt({
        conversation: conv,
        epoch,
        clientId: entry.clientId,
        msgType: entry.msgType,
        content: entry.content,
        meta: entry.meta || {},
      });
      ack = await this.socket.request({
        type: "message.send",
        conversation: conv,
        client_id: entry.clientId,
        msg_type: entry.msgType,
        ...enc,
      });
    } catch (err) {
      return this.sendFailed(entry, err);
    }
    const summary = this.summaries.get(conv);
    if (summary) {
      summary.epoch = epoch;
      summary.rotation_required = false;
      if (ack.seq > (summary.last_seq || 0)) {
        summary.last_seq = ack.seq;
        summary.last_at = ack.created_at;
      }
      summary.read = Math.max(summary.read || 0, ack.seq);
      summary.unread = unreadAfter(summary, summary.read);
      if (ack.seq >= summary.last_seq) {
        summary.preview = { ...this.item({ seq: ack.seq, sender: this.user.id, msg_type: entry.msgType, meta: entry.meta || {}, created_at: ack.created_at }), content: entry.content };
      }
      this.emit("summaries", {});
    }
    await this.dropEntry(entry);
    this.emit("sent", { conversation: conv, clientId: entry.clientId, seq: ack.seq });
    if (ITEM_TYPES.has(entry.msgType)) this.itemsChanged(conv);
    const thread = this.threads.get(conv);
    if (thread) {
      const m = {
        conversation: conv,
        seq: ack.seq,
        client_id: entry.clientId,
        sender: this.user.id,
        device: this.deviceId,
        msg_type: entry.msgType,
        meta: entry.meta || {},
        v: 2,
        epoch,
        created_at: ack.created_at,
      };
      const item = this.item(m);
      item.content = entry.content;
      if (thread.loaded) {
        if (!thread.items.has(ack.seq)) thread.items.set(ack.seq, item);
        thread.advance();
        if ([...thread.items.keys()].some((seq) => seq > thread.lastSeq)) this.fillGap(thread);
      }
    }
    this.emit("thread", { conversation: conv });
    return "sent";
  }

  async sendFailed(entry, err) {
    const conv = entry.conversation;
    const code = err?.code || "error";
    const transient = ["disconnected", "timeout", "network", "store_unavailable", "store_outcome_unknown", "overloaded", "rate_limited", "pending_approval"];
    const keysStale = ["stale_epoch", "epoch_rotation_required", "nonce_reused", "epoch_conflict", "no_key"];
    let outcome;
    if (transient.includes(code) || (err instanceof ApiError && (err.status === 0 || err.status >= 500))) {
      entry.state = "pending";
      entry.attempts = Math.max(0, entry.attempts - 1);
      outcome = code === "disconnected" ? "stop" : code === "pending_approval" ? "wait" : "later";
    } else if (keysStale.includes(code) && entry.attempts < MAX_ATTEMPTS) {
      const s = this.summaries.get(conv);
      if (s) {
        try {
          const listing = await this.keys.conversationDevices(conv);
          s.epoch = listing.epoch;
          s.rotation_required = listing.rotationRequired || code === "epoch_rotation_required";
        } catch {
          s.rotation_required = code === "epoch_rotation_required";
        }
      }
      entry.state = "pending";
      await delay(50);
      outcome = "again";
    } else {
      entry.state = "failed";
      entry.error = err?.message || code;
      entry.errorCode = code;
      // The upload is gone or did not match: a retry uploads the file again.
      if (["attachment_not_found", "attachment_mismatch", "attachment_expired"].includes(code)) entry.meta = {};
      outcome = "again";
    }
    await this.saveEntry(entry);
    this.emit("thread", { conversation: conv });
    return outcome;
  }

  pendingCount() {
    return this.outbox.filter((e) => e.state !== "failed").length;
  }

  // ------------------------------------------------------------------ key requests

  async checkKeyRequests() {
    if (!this.canRewrap) return;
    let answer;
    try {
      answer = await this.api.keyRequests();
    } catch {
      return;
    }
    for (const request of answer.requests || []) await this.handleKeyRequest(request);
  }

  onKeyRequest(f) {
    // The server's `approved` as sent: a frame without it is not approved.
    this.handleKeyRequest({ ...f, approved: f.approved === true }, { announced: true }).catch((err) => console.warn("key request", err));
  }

  /**
   * Decide about a device waiting for a conversation's keys:
   *  - a beneficiary's client: never re-wraps;
   *  - not approved (a beneficiary's new phone): the counsellor is asked ("approve");
   *  - a device /devices does not list with a valid registration: nothing;
   *  - a beneficiary's device, even approved: only on the counsellor's click ("approve");
   *  - a device listed only as escrow (a supervisor's, which the server alone decides on): nothing;
   *  - a member's device (the new counsellor after a transfer, a counsellor's
   *    new device): re-wrapped now, with a notice in the thread.
   * `announced`: from a `keys.requested` frame (a new request), not the
   * periodic list, which does not re-wrap again what this session did.
   */
  async handleKeyRequest(request, { announced = false } = {}) {
    if (!this.canRewrap || request.recipient_device === this.deviceId) return;
    const id = `${request.conversation}|${request.recipient_device}`;
    const s = this.summaries.get(request.conversation);
    const counsellor = !!s && s.counsellor_id === this.user.id;
    if (request.approved !== true) {
      if (counsellor) this.emit("keyrequest", { request: { ...request, kind: "approve" } });
      return;
    }
    if (this.approvedHere.has(id) || (!announced && this.shared.has(id))) return;
    let target;
    try {
      target = await this.keys.listedDevice(request.conversation, request.recipient_device);
    } catch {
      return;
    }
    if (!target) return;
    if (target.group !== "member") return;
    if (target.role === "beneficiary") {
      if (counsellor) this.emit("keyrequest", { request: { ...request, kind: "approve" } });
      return;
    }
    try {
      await this.shareKeys(request, target);
    } catch (err) {
      console.warn("re-wrap failed", err);
    }
  }

  /** Re-wrap for `target` (a listed device), once at a time; a notice when something was shared. */
  shareKeys(request, target) {
    const id = `${request.conversation}|${request.recipient_device}`;
    if (this.rewrapping.has(id)) return this.rewrapping.get(id);
    const job = (async () => {
      const count = await this.keys.rewrapFor(request.conversation, request.recipient_device);
      const first = !this.shared.has(id);
      this.shared.add(id);
      if (count > 0 && first) {
        this.addNotice(request.conversation, {
          kind: "keysshared",
          userId: target.userId,
          role: target.role,
          device: request.recipient_device,
          reason: request.reason,
        });
      }
      return count;
    })().finally(() => this.rewrapping.delete(id));
    this.rewrapping.set(id, job);
    return job;
  }

  /** The counsellor clicked "Autoriser" for a beneficiary's device: approve it, then re-wrap. */
  async approveKeyRequest(request) {
    if (!this.canRewrap) throw new KeyError("not_allowed", "this client does not share keys");
    const id = `${request.conversation}|${request.recipient_device}`;
    this.approvedHere.add(id);
    try {
      await this.api.approveKeyRequest(request.conversation, request.recipient_device);
      const target = await this.keys.listedDevice(request.conversation, request.recipient_device);
      if (!target || target.group !== "member") throw new KeyError("not_authorised", "this device is not a member's registered device");
      return await this.shareKeys(request, target);
    } catch (err) {
      this.approvedHere.delete(id);
      throw err;
    }
  }

}
