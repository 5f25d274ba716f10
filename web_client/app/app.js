/**
 * The beneficiary app: activation, login, device keys (recovery key shown
 * once, restore on a new phone), the thread with an offline outbox, and
 * installation as a PWA.
 *
 * The session (token, user, conversation id) is kept in IndexedDB so the
 * installed app opens without logging in again; the outbox is persisted
 * there too until each message is acknowledged. Nothing in localStorage.
 */

import { Api, ApiError } from "../shared/api.js";
import { ChatClient } from "../shared/chat.js";
import { ensureDevice } from "../shared/session.js";
import { KeyManager } from "../shared/e2ee.js";
import { idbDelete, idbGet, idbPut } from "../shared/idb.js";
import { formatSafetyNumber } from "../shared/crypto.js";
import { t, lastSeenText } from "../shared/i18n.js";
import { $, h, setChildren, showScreen, reconcile, renderMessage, Attention, connectionText } from "../shared/ui.js";
import { newId } from "../shared/wire.js";

const BASE_TITLE = "Ma messagerie — CEJ";
const api = new Api({ onUnauthenticated: () => expired() });
const attention = new Attention(BASE_TITLE);
let chat = null;
let keys = null;
let session = null;
let installPrompt = null;
let typingSent = 0;
let typingStop = null;
let peerTyping = false;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {});
}

window.addEventListener("beforeinstallprompt", (event) => {
  event.preventDefault();
  installPrompt = event;
  $("#btn-install").hidden = false;
});
window.addEventListener("appinstalled", () => {
  installPrompt = null;
  $("#btn-install").hidden = true;
});

// ---------------------------------------------------------------- entry

async function init() {
  for (const btn of document.querySelectorAll("dialog [data-close]")) {
    btn.addEventListener("click", () => btn.closest("dialog").close());
  }
  $("#login-form").addEventListener("submit", onLogin);
  $("#activate-form").addEventListener("submit", onActivate);
  $("#to-activate").addEventListener("click", () => {
    showScreen("screen-activate");
    $("#act-code").focus();
  });
  $("#to-login").addEventListener("click", () => {
    showScreen("screen-login");
    $("#login-name").focus();
  });
  session = await idbGet("kv", "session");
  if (session) {
    api.token = session.token;
    try {
      const answer = await api.me();
      session.user = answer.user;
      await enter({ token: session.token, user: answer.user, device_id: answer.device_id }, null);
      return;
    } catch (err) {
      if (err instanceof ApiError && err.status === 0) {
        // Offline: open the thread with what this phone holds; it syncs when back online.
        keys = new KeyManager({ api, userId: session.user.id, deviceId: session.deviceId });
        if (await keys.load()) {
          startThread();
          return;
        }
      }
      await idbDelete("kv", "session");
      session = null;
      api.token = null;
    }
  }
  const params = new URLSearchParams(location.search);
  if (params.get("code")) {
    $("#act-code").value = params.get("code");
    showScreen("screen-activate");
    $("#act-password").focus();
    return;
  }
  showScreen("screen-login");
}

function loginError(err, unauthenticatedText) {
  if (err instanceof ApiError) {
    if (err.status === 401) return unauthenticatedText;
    if (err.status === 429) return t("tooManyAttempts");
    if (err.status === 0) return t("networkError");
    if (err.code === "invalid_input") return t("passwordHint");
  }
  return t("genericError", { message: err.message });
}

async function onLogin(event) {
  event.preventDefault();
  const error = $("#login-error");
  error.textContent = "";
  const name = $("#login-name").value.trim();
  const password = $("#login-password").value;
  if (!name || !password) {
    error.textContent = t("loginFailed");
    return;
  }
  try {
    const deviceId = (await idbGet("logins", name.toLowerCase())) || newId(16);
    const login = await api.login(name, password, deviceId);
    api.token = login.token;
    await idbPut("logins", name.toLowerCase(), login.device_id);
    $("#login-password").value = "";
    await enter(login, password);
  } catch (err) {
    api.token = null;
    showScreen("screen-login");
    error.textContent = loginError(err, t("loginFailed"));
  }
}

async function onActivate(event) {
  event.preventDefault();
  const error = $("#act-error");
  error.textContent = "";
  const code = $("#act-code").value.trim();
  const password = $("#act-password").value;
  if (password !== $("#act-password2").value) {
    error.textContent = t("passwordsDiffer");
    return;
  }
  if (password.length < 10) {
    error.textContent = t("passwordHint");
    return;
  }
  try {
    const login = await api.activate(code, password, newId(16));
    api.token = login.token;
    await idbPut("logins", login.user.login.toLowerCase(), login.device_id);
    $("#act-password").value = "";
    $("#act-password2").value = "";
    await enter(login, password);
  } catch (err) {
    api.token = null;
    showScreen("screen-activate");
    error.textContent = loginError(err, t("activationFailed"));
  }
}

async function enter(login, password) {
  if (login.user.role !== "beneficiary") {
    location.assign("/console/");
    return;
  }
  const result = await ensureDevice({
    api,
    login,
    password,
    container: $("#screen-setup"),
    showSetup: () => showScreen("screen-setup"),
    relogin: (deviceId, pw) => api.login(login.user.login, pw, deviceId),
  });
  keys = result.keys;
  const conversations = (await api.conversations()).conversations || [];
  session = {
    token: api.token,
    user: result.login.user,
    deviceId: result.login.device_id,
    conversation: conversations[0]?.id || null,
  };
  await idbPut("kv", "session", session);
  startThread();
}

async function expired() {
  if (chat) chat.stop();
  await idbDelete("kv", "session");
  location.reload();
}

async function logout() {
  if (chat) chat.stop();
  try {
    await api.logout();
  } catch {
    /* ends on this side anyway */
  }
  await idbDelete("kv", "session");
  location.reload();
}

// ---------------------------------------------------------------- thread

function conversationId() {
  return session.conversation || chat?.sortedSummaries()[0]?.id || null;
}

function startThread() {
  showScreen("screen-thread");
  $("#btn-menu").addEventListener("click", toggleMenu);
  $("#btn-logout").addEventListener("click", logout);
  $("#btn-safety").addEventListener("click", openSafety);
  $("#btn-install").addEventListener("click", install);
  $("#btn-older").addEventListener("click", () => chat.loadOlder(conversationId()));
  $("#composer").addEventListener("submit", onSend);
  $("#message").addEventListener("input", onTypingInput);
  $("#message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && matchMedia("(pointer: fine)").matches) {
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && conversationId()) chat.markRead(conversationId());
  });

  // The beneficiary's app never re-wraps keys for anyone (docs/security.md).
  chat = new ChatClient({ api, keys, user: session.user, deviceId: keys.deviceId, persistOutbox: true, rewrap: false });
  chat.on("summaries", () => {
    const id = conversationId();
    const s = id ? chat.summary(id) : null;
    if (id && (!session.conversation || (s?.peer && s.peer.display_name !== session.peerName))) {
      session.conversation = id;
      session.peerName = s?.peer?.display_name || session.peerName;
      idbPut("kv", "session", session);
    }
    if (id && !chat.thread(id)) chat.openThread(id);
    renderHead();
    renderThread();
  });
  chat.on("thread", () => {
    renderThread();
    if (!document.hidden && conversationId()) chat.markRead(conversationId());
  });
  chat.on("typing", (d) => {
    peerTyping = d.typing;
    $("#typing").textContent = peerTyping ? t("typing", { name: chat.peerName(d.conversation) }) : "";
  });
  chat.on("incoming", () => attention.notify());
  chat.on("state", (d) => {
    const conn = $("#conn");
    conn.textContent = connectionText(d.state);
    conn.className = `conn conn-${d.state}`;
    $("#offline-banner").hidden = d.state === "online" || d.state === "connecting";
  });
  chat.on("authfailed", expired);
  if (session.conversation) chat.openThread(session.conversation);
  chat.start();
  renderHead();
}

function renderHead() {
  const id = conversationId();
  const s = id ? chat.summary(id) : null;
  if (!s) {
    if (session.peerName) $("#peer-name").textContent = session.peerName;
    return;
  }
  $("#peer-name").textContent = s.peer?.display_name || t("counsellor");
  setChildren(
    $("#peer-presence"),
    h("span", { class: `presence-dot${s.peer_online ? " on" : ""}`, "aria-hidden": "true" }),
    s.peer_online ? t("online") : lastSeenText(s.peer_last_seen),
  );
}

function renderThread() {
  const id = conversationId();
  if (!id) return;
  const thread = chat.thread(id);
  if (!thread) return;
  const s = chat.summary(id) || {};
  const log = $("#log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const items = thread.sorted().map((item) => ({ kind: "m", item }));
  for (const entry of chat.outboxFor(id)) items.push({ kind: "o", entry });
  reconcile(
    $("#messages"),
    items,
    (x) => (x.kind === "m" ? `m${x.item.seq}` : `o${x.entry.clientId}`),
    (x) => (x.kind === "m" ? JSON.stringify([!!x.item.content, x.item.error, x.item.mine && x.item.seq <= (s.peer_read || 0)]) : x.entry.state),
    (x) => {
      if (x.kind === "m") {
        const item = x.item;
        const status = item.mine && !item.system ? (item.seq <= (s.peer_read || 0) ? { kind: "read", text: t("statusRead") } : { kind: "sent", text: t("statusSent") }) : null;
        return renderMessage(item, { peerName: s.peer?.display_name || t("counsellor"), status });
      }
      const e = x.entry;
      const text = { pending: t("statusPending"), sending: t("statusSending"), failed: t("statusFailed") }[e.state];
      const li = renderMessage(
        { mine: true, system: false, msgType: e.msgType, content: e.content, createdAt: e.createdAt },
        { status: { kind: e.state, text }, onRetry: () => chat.retry(e.clientId), onDiscard: () => chat.discard(e.clientId) },
      );
      li.classList.add("msg-pending");
      return li;
    },
  );
  $("#btn-older").hidden = !thread.hasOlder;
  $("#reshare-banner").hidden = !thread.sorted().some((i) => i.error === "no_key");
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function onTypingInput() {
  const id = conversationId();
  if (!id) return;
  const now = Date.now();
  if (now - typingSent > 3000) {
    chat.setTyping(id, true);
    typingSent = now;
  }
  clearTimeout(typingStop);
  typingStop = setTimeout(() => {
    chat.setTyping(id, false);
    typingSent = 0;
  }, 4000);
}

async function onSend(event) {
  event.preventDefault();
  const input = $("#message");
  const text = input.value.trim();
  const id = conversationId();
  if (!text || !id) return;
  input.value = "";
  clearTimeout(typingStop);
  if (typingSent) chat.setTyping(id, false);
  typingSent = 0;
  await chat.sendText(id, text);
  const log = $("#log");
  log.scrollTop = log.scrollHeight;
}

function toggleMenu() {
  const menu = $("#menu");
  menu.hidden = !menu.hidden;
  $("#btn-menu").setAttribute("aria-expanded", menu.hidden ? "false" : "true");
  if (!menu.hidden) menu.querySelector("button:not([hidden])")?.focus();
}

async function install() {
  if (!installPrompt) return;
  installPrompt.prompt();
  await installPrompt.userChoice.catch(() => null);
  installPrompt = null;
  $("#btn-install").hidden = true;
}

async function openSafety() {
  const id = conversationId();
  const dlg = $("#dlg-safety");
  $("#safety-intro").textContent = t("safetyIntro", { name: chat.peerName(id) });
  $("#safety-number").textContent = t("loading");
  dlg.showModal();
  try {
    $("#safety-number").textContent = formatSafetyNumber(await keys.safetyNumber(id));
  } catch (err) {
    $("#safety-number").textContent = t("keysError", { message: err.message });
  }
}

init().catch((err) => {
  showScreen("screen-login");
  $("#login-error").textContent = t("genericError", { message: err.message });
});
