/**
 * The WebSocket client: authenticate, resume, reconnect, and match replies.
 *
 * - On every (re)connection the first frame is `auth` with `resume`: the
 *   highest contiguous `seq` held per conversation (given by `getResume`).
 * - Reconnects with exponential backoff and jitter; at once when the browser
 *   says it is back online. Going offline closes the socket (a half-open
 *   connection would otherwise swallow frames until the ping times out).
 * - Sends `{"type":"ping"}` every PING_MS and reconnects if no `pong` comes.
 * - `request(frame)` resolves with the reply carrying the same `id`
 *   (`ack`, `history`, `sync`) or rejects with the `error` frame.
 * - A 4001 close (session expired or revoked) stops reconnecting and calls
 *   `onAuthFailed`.
 */

import { newId } from "./wire.js";

const PING_MS = 20000;
const PONG_TIMEOUT_MS = 10000;
const REQUEST_TIMEOUT_MS = 15000;
const MAX_BACKOFF_MS = 10000;

export class FrameError extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.code = frame.code;
    this.frame = frame;
  }
}

export class ChatSocket {
  constructor({ token, getResume = () => ({}), onFrame = () => {}, onState = () => {}, onAuthOk = () => {}, onAuthFailed = () => {} }) {
    this.token = token;
    this.getResume = getResume;
    this.onFrame = onFrame;
    this.onState = onState;
    this.onAuthOk = onAuthOk;
    this.onAuthFailed = onAuthFailed;
    this.ws = null;
    this.state = "idle";
    this.pending = new Map();
    this.attempt = 0;
    this.stopped = false;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this._online = () => this.reconnectNow();
    this._offline = () => this.drop();
    window.addEventListener("online", this._online);
    window.addEventListener("offline", this._offline);
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.onState(state);
    }
  }

  get ready() {
    return this.state === "online";
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped || this.ws) return;
    if (navigator.onLine === false) {
      this.setState("offline");
      return;
    }
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(JSON.stringify({ type: "auth", token: this.token, id: newId(), resume: this.getResume() }));
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(ws, frame);
    };
    ws.onclose = (event) => this.closed(ws, event.code);
    ws.onerror = () => {};
  }

  handle(ws, frame) {
    if (ws !== this.ws) return;
    if (frame.type === "auth.ok") {
      this.attempt = 0;
      this.setState("online");
      this.startPing();
      this.onAuthOk(frame);
      return;
    }
    if (frame.type === "pong") {
      clearTimeout(this.pongTimer);
      return;
    }
    if (frame.id && this.pending.has(frame.id)) {
      const { resolve, reject, timer } = this.pending.get(frame.id);
      this.pending.delete(frame.id);
      clearTimeout(timer);
      if (frame.type === "error") reject(new FrameError(frame));
      else resolve(frame);
      if (frame.type !== "sync") return;
    }
    this.onFrame(frame);
  }

  closed(ws, code) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.stopPing();
    for (const [id, { reject, timer }] of this.pending) {
      clearTimeout(timer);
      reject(new FrameError({ code: "disconnected", message: "connection lost", id }));
    }
    this.pending.clear();
    if (code === 4001) {
      this.stopped = true;
      this.setState("offline");
      this.onAuthFailed();
      return;
    }
    this.setState(navigator.onLine === false ? "offline" : "reconnecting");
    this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    const base = Math.min(MAX_BACKOFF_MS, 300 * 2 ** this.attempt);
    this.attempt += 1;
    this.timer = setTimeout(() => this.connect(), base / 2 + Math.random() * (base / 2));
  }

  /** Reconnect now (the browser is back online, or the user asked). */
  reconnectNow() {
    this.attempt = 0;
    if (this.ws) return;
    this.connect();
  }

  /** Close the current connection (it will be re-established). */
  drop() {
    if (this.ws) {
      const ws = this.ws;
      try {
        ws.close(1000, "offline");
      } catch {
        /* already closing */
      }
      this.closed(ws, 1006);
    } else {
      this.setState("offline");
    }
  }

  startPing() {
    this.stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.send({ type: "ping", id: newId() })) return;
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => this.drop(), PONG_TIMEOUT_MS);
    }, PING_MS);
  }

  stopPing() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }

  /** Send a frame if connected and authenticated; returns whether it was sent. */
  send(frame) {
    if (!this.ws || this.state !== "online") return false;
    try {
      this.ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  /** Send a frame with an `id` and wait for the reply with that id. */
  request(frame, timeoutMs = REQUEST_TIMEOUT_MS) {
    const id = frame.id || newId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new FrameError({ code: "timeout", message: "no reply", id }));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      if (!this.send({ ...frame, id })) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(new FrameError({ code: "disconnected", message: "not connected", id }));
      }
    });
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    window.removeEventListener("online", this._online);
    window.removeEventListener("offline", this._offline);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      this.stopPing();
      try {
        ws.close(1000, "logout");
      } catch {
        /* ignore */
      }
    }
    this.setState("idle");
  }
}
