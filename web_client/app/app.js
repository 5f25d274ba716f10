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
import { KeyManager } from "../shared/e2ee.js";
import { idbClearAll, idbDelete, idbGet, idbPut } from "../shared/idb.js";
import { archiveNotice, exportConversation, readOnly, setComposerEnabled } from "../shared/lifecycle.js";
import { t } from "../shared/i18n.js";
import { $, h, showScreen, Attention } from "../shared/ui.js";
import { newId } from "../shared/wire.js";
import { Notifications } from "../shared/notify.js";
import { derive, isClientCode, takeActivationBox } from "../shared/activation.js";
import { bindDialogClose, loginError, loginSubmitHandler, logoutAndReload, setUpDevice, showStartError } from "../shared/login.js";
import {
  bindEnterToSend,
  createTypingNotifier,
  openSafetyDialog,
  renderConnection,
  renderPresence,
  sendComposed,
} from "../shared/thread.js";
import { loadOlderKeepingPlace, renderItemsPanel, renderThreadList } from "../shared/cards.js";
import { bindAttachButtons } from "../shared/attach-ui.js";
import { openActionDialog, openOfferDialog } from "../shared/forms.js";
import { dateLong } from "../shared/i18n.js";
import { openDevicesDialog } from "../shared/devices.js";
import { openRenewDialog } from "../shared/recovery.js";

const BASE_TITLE = "Ma messagerie — CEJ";
const api = new Api({ onUnauthenticated: () => expired() });
const attention = new Attention(BASE_TITLE);
let chat = null;
let keys = null;
let session = null;
let installPrompt = null;
let typing = null;
let peerTyping = false;
let deleting = false;
let itemsRequested = false;
let noticeTimer = null;
let notifications = null;
// This phone waits for the counsellor's approval (shown in #reshare-banner).
let deviceWaiting = false;
// The box key of the client-made code just proved (shared/activation.js), until used.
let activationBoxKey = null;

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/app/sw.js", { scope: "/app/", type: "module" }).catch(() => {});
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
  bindDialogClose();
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

const onLogin = loginSubmitHandler(api, enter, { invalidInputText: t("passwordHint") });

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
    // A code the console made is never sent: its proof is; its box key opens
    // the keys of what the counsellor wrote before activation.
    let secret = { code };
    activationBoxKey = null;
    if (isClientCode(code)) {
      const made = await derive(code);
      secret = { proof: made.proofText };
      activationBoxKey = made.boxKey;
    }
    const login = await api.activate(secret, password, newId(16));
    api.token = login.token;
    await idbPut("logins", login.user.login.toLowerCase(), login.device_id);
    $("#act-password").value = "";
    $("#act-password2").value = "";
    await enter(login, password);
  } catch (err) {
    api.token = null;
    showScreen("screen-activate");
    error.textContent = loginError(err, t("activationFailed"), t("passwordHint"));
  }
}

async function enter(login, password) {
  if (login.user.role !== "beneficiary") {
    location.assign("/console/");
    return;
  }
  const result = await setUpDevice(api, login, password);
  keys = result.keys;
  const conversations = (await api.conversations()).conversations || [];
  session = {
    token: api.token,
    user: result.login.user,
    deviceId: result.login.device_id,
    conversation: conversations[0]?.id || null,
  };
  await idbPut("kv", "session", session);
  if (activationBoxKey && session.conversation) {
    try {
      await takeActivationBox(keys, api, session.conversation, activationBoxKey);
    } catch (err) {
      console.warn("activation box not taken", err.message);
    }
    activationBoxKey = null;
  }
  startThread();
}

/** Whether this new phone still waits for the counsellor's approval (the banner says so). */
async function checkDeviceWaiting() {
  const id = conversationId();
  if (!id || !keys) return;
  try {
    const listing = await keys.conversationDevices(id);
    deviceWaiting = listing.pending.includes(keys.deviceId);
    if (deviceWaiting) $("#reshare-banner").hidden = false;
  } catch {
    /* checked again when keys arrive */
  }
}

async function expired() {
  if (deleting) return; // the account is being deleted: its sessions end, that is expected
  if (chat) chat.stop();
  await idbDelete("kv", "session");
  location.reload();
}

function logout() {
  return logoutAndReload(api, chat, () => idbDelete("kv", "session"));
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
  $("#btn-devices").addEventListener("click", openDevices);
  $("#btn-install").addEventListener("click", install);
  $("#btn-export").addEventListener("click", onExport);
  $("#btn-delete-account").addEventListener("click", openDeleteAccount);
  $("#delete-account-form").addEventListener("submit", onDeleteAccount);
  $("#btn-older").addEventListener("click", () => loadOlderKeepingPlace(chat, conversationId(), $("#log")));
  $("#btn-offer").addEventListener("click", () => openOfferDialog(chat, conversationId()));
  $("#btn-action").addEventListener("click", () => openActionDialog(chat, conversationId()));
  $("#composer").addEventListener("submit", onSend);
  $("#message").addEventListener("input", onTypingInput);
  bindEnterToSend(() => matchMedia("(pointer: fine)").matches);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && conversationId()) chat.markRead(conversationId());
    notifications.viewing(conversationId());
  });
  // Push: the invitation comes after the person's first message (never on first load).
  notifications = new Notifications({
    api,
    sw: "/app/sw.js",
    scope: "/app/",
    banner: $("#push-invite"),
    onOpen: () => {
      $("#message").focus();
      notifications.viewing(conversationId());
    },
  });
  $("#btn-notifications").addEventListener("click", () => {
    toggleMenu();
    notifications.openSettings();
  });

  // The beneficiary's app never re-wraps keys for anyone (docs/security.md).
  chat = new ChatClient({ api, keys, user: session.user, deviceId: keys.deviceId, persistOutbox: true, rewrap: false });
  typing = createTypingNotifier(chat);
  bindAttachButtons(chat, () => conversationId());
  chat.on("keysavailable", () => checkDeviceWaiting());
  checkDeviceWaiting();
  chat.on("summaries", () => {
    const id = conversationId();
    const s = id ? chat.summary(id) : null;
    if (id && (!session.conversation || (s?.peer && s.peer.display_name !== session.peerName))) {
      session.conversation = id;
      session.peerName = s?.peer?.display_name || session.peerName;
      idbPut("kv", "session", session);
    }
    if (id && !chat.thread(id)) chat.openThread(id);
    if (id) notifications.viewing(id);
    if (id && !chat.itemsOf(id) && !itemsRequested) {
      itemsRequested = true;
      chat.loadItems(id).catch(() => (itemsRequested = false));
    }
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
    renderConnection(d.state);
    $("#offline-banner").hidden = d.state === "online" || d.state === "connecting";
  });
  chat.on("items", (d) => {
    if (d.conversation !== conversationId()) return;
    renderItemsPanel($("#items-panel"), chat.itemsOf(d.conversation));
    renderNotice();
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
  renderPresence($("#peer-presence"), s);
  const notice = archiveNotice(s, { forBeneficiary: true });
  $("#archived-banner").hidden = !notice;
  $("#archived-banner").textContent = notice;
  setComposerEnabled(!readOnly(s));
}

function renderThread() {
  const id = conversationId();
  if (!id) return;
  const thread = chat.thread(id);
  if (!thread) return;
  const s = chat.summary(id) || {};
  const log = $("#log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const peer = s.peer?.display_name || t("counsellor");
  // Security events found by this device (a key that failed its commitment), after the message they followed.
  const extra = chat
    .noticesFor(id)
    .filter((notice) => notice.kind === "security")
    .map((notice) => ({
      key: notice.id,
      at: notice.afterSeq + 0.5,
      render: () => {
        const bad = t(notice.recovered ? "securityBadEnvelopeRecovered" : "securityBadEnvelope", { name: notice.userId === s.peer?.id ? peer : t("unknownPerson") });
        const structure = notice.reason === "structure_key_unendorsed" ? t("securityStructureKeyUnendorsed") : t("securityStructureKey");
        const text = notice.reason?.startsWith("structure_key_") ? structure : bad;
        return h("li", { class: "msg msg-system msg-notice msg-security", role: "alert" }, h("p", { class: "msg-text" }, text));
      },
    }));
  renderThreadList($("#messages"), { chat, conversation: id, summary: s, peerName: peer, extra });
  $("#btn-older").hidden = !thread.hasOlder;
  $("#reshare-banner").hidden = !(deviceWaiting || thread.sorted().some((i) => i.error === "no_key"));
  if (atBottom) log.scrollTop = log.scrollHeight;
}

/**
 * The counsellor's notice as a banner while starts_at <= now < ends_at; a
 * timer redraws it at the next of those two instants (lifted at the end).
 */
function renderNotice() {
  const id = conversationId();
  const notice = id ? chat.itemsOf(id)?.notice : null;
  clearTimeout(noticeTimer);
  const now = Date.now() / 1000;
  const banner = $("#notice-banner");
  const shown = !!notice && !!notice.content?.text && notice.starts_at <= now && now < notice.ends_at;
  banner.hidden = !shown;
  if (shown) {
    $("#notice-text").textContent = notice.content.text;
    $("#notice-until").textContent = t("noticeUntil", { date: dateLong(notice.ends_at - 1) });
  }
  if (notice) {
    const next = now < notice.starts_at ? notice.starts_at : now < notice.ends_at ? notice.ends_at : null;
    if (next) noticeTimer = setTimeout(renderNotice, Math.min(2 ** 31 - 1, Math.max(0, (next - now) * 1000) + 50));
  }
}

function onTypingInput() {
  const id = conversationId();
  if (!id) return;
  typing.input(id);
}

function onSend(event) {
  event.preventDefault();
  const sent = sendComposed(chat, typing, conversationId());
  notifications.invite();
  return sent;
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

function openSafety() {
  return openSafetyDialog(chat, keys, conversationId());
}

// ---------------------------------------------------------------- data lifecycle

async function onExport() {
  toggleMenu();
  const id = conversationId();
  if (!id) return;
  try {
    await exportConversation(chat, id, $("#export-status"));
  } catch (err) {
    $("#export-status").textContent = t("genericError", { message: err.message });
  }
}

/** "Mes appareils et ma clé": devices, safety number, recovery-key renewal (shared/devices.js). */
function openDevices() {
  toggleMenu();
  return openDevicesDialog($("#dlg-devices"), { api, keys, onSafety: openSafety, onRenew: openRenew });
}

function openRenew() {
  openRenewDialog($("#dlg-renew"), {
    api,
    keys,
    user: session.user,
    stop: () => chat?.stop(),
    saveSession: async (login) => {
      session.token = login.token;
      session.deviceId = login.device_id;
      await idbPut("kv", "session", session);
    },
    onDone: () => location.reload(),
  });
}

function openDeleteAccount() {
  toggleMenu();
  $("#delete-account-form").reset();
  $("#delete-error").textContent = "";
  $("#dlg-delete-account").showModal();
  $("#delete-password").focus();
}

async function onDeleteAccount(event) {
  event.preventDefault();
  const error = $("#delete-error");
  const password = $("#delete-password").value;
  if (!password) {
    error.textContent = "Saisissez votre mot de passe pour confirmer.";
    return;
  }
  deleting = true;
  try {
    await api.deleteAccount(password);
  } catch (err) {
    deleting = false;
    if (err instanceof ApiError && err.code === "wrong_password") error.textContent = "Mot de passe incorrect.";
    else if (err instanceof ApiError && err.status === 429) error.textContent = t("tooManyAttempts");
    else error.textContent = t("genericError", { message: err.message });
    return;
  }
  // Gone on the server: nothing of the account stays on this device either.
  if (chat) chat.stop();
  await idbClearAll();
  sessionStorage.clear();
  $("#dlg-delete-account").close();
  showScreen("screen-deleted");
}

init().catch(showStartError);
