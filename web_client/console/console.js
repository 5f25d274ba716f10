/**
 * The counsellor console: login, device keys, the conversation list, the
 * thread, beneficiary creation, safety numbers and, for supervisors,
 * transfers.
 *
 * The session token lives in sessionStorage (this tab only, gone when it
 * closes); keys live in IndexedDB (shared/e2ee.js); nothing in localStorage.
 */

import { Api, ApiError } from "../shared/api.js";
import { ChatClient } from "../shared/chat.js";
import { archiveNotice, exportConversation, readOnly, setComposerEnabled } from "../shared/lifecycle.js";
import { t, shortTime, longTime } from "../shared/i18n.js";
import { $, archiveReasonText, h, setChildren, showScreen, reconcile, Attention } from "../shared/ui.js";
import { bindDialogClose, loginSubmitHandler, logoutAndReload, setUpDevice, showStartError } from "../shared/login.js";
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
import { openActionDialog, openAppointmentDialog, openNoticeDialog, openOfferDialog } from "../shared/forms.js";
import { previewText } from "../shared/items.js";
import { Notifications } from "../shared/notify.js";
import { derive, leaveActivationBox, newCode } from "../shared/activation.js";
import { bindOnboarding, loginProblem, renderReissueButton, showActivation } from "./onboarding.js";
import { Portfolio } from "./portfolio.js";
import { Broadcaster } from "./broadcast.js";
import { openDevicesDialog } from "../shared/devices.js";
import { openRenewDialog } from "../shared/recovery.js";

const SESSION_KEY = "cejchat.console.session";
const BASE_TITLE = "Console conseiller — CEJ Messagerie";

const api = new Api({ onUnauthenticated: () => expired() });
const attention = new Attention(BASE_TITLE);
let chat = null;
let keys = null;
let me = null;
let current = null;
const peerTyping = new Map();
// conversation -> Map(device -> request) of devices waiting for this user's decision.
const keyRequests = new Map();
let typing = null;
let notifications = null;
// A conversation a notification asked to open before the list had arrived.
let openWhenListed = null;
let toAnswer = false;

// ---------------------------------------------------------------- login

async function init() {
  bindDialogClose();
  $("#login-form").addEventListener("submit", onLogin);
  const saved = sessionStorage.getItem(SESSION_KEY);
  if (saved) {
    api.token = saved;
    try {
      const answer = await api.me();
      await enter({ token: saved, user: answer.user, device_id: answer.device_id }, null);
      return;
    } catch {
      sessionStorage.removeItem(SESSION_KEY);
      api.token = null;
    }
  }
  showScreen("screen-login");
  $("#login-name").focus();
}

const onLogin = loginSubmitHandler(api, enter, { busy: true });

async function enter(login, password) {
  if (login.user.role === "beneficiary") {
    location.assign("/app/");
    return;
  }
  const result = await setUpDevice(api, login, password);
  keys = result.keys;
  me = result.login.user;
  sessionStorage.setItem(SESSION_KEY, api.token);
  startApp(result.login);
}

function expired() {
  sessionStorage.removeItem(SESSION_KEY);
  if (chat) chat.stop();
  location.reload();
}

function logout() {
  return logoutAndReload(api, chat, () => sessionStorage.removeItem(SESSION_KEY));
}

// ---------------------------------------------------------------- main screen

function startApp(login) {
  showScreen("screen-app");
  $("#skip-link").hidden = false;
  $("#who").textContent = `${me.display_name} (${me.role === "supervisor" ? "superviseur" : "conseiller"})`;
  $("#btn-new-beneficiary").hidden = me.role !== "counsellor";
  $("#btn-logout").addEventListener("click", logout);
  $("#btn-new-beneficiary").addEventListener("click", openBeneficiaryDialog);
  $("#btn-security").addEventListener("click", openSecurity);
  $("#btn-flag").addEventListener("click", toggleFlag);
  $("#btn-safety").addEventListener("click", openSafety);
  $("#btn-older").addEventListener("click", () => loadOlderKeepingPlace(chat, current, $("#log")));
  $("#btn-offer").addEventListener("click", () => openOfferDialog(chat, current));
  $("#btn-action").addEventListener("click", () => openActionDialog(chat, current));
  $("#btn-appointment").addEventListener("click", () => openAppointmentDialog(chat, current));
  $("#btn-notice").hidden = me.role !== "counsellor";
  $("#btn-notice").addEventListener("click", () => {
    const mine = chat.sortedSummaries().filter((s) => s.counsellor_id === me.id).map((s) => s.id);
    openNoticeDialog(chat, mine, (text) => ($("#notice-status").textContent = text));
  });
  $("#btn-to-answer").addEventListener("click", () => {
    toAnswer = !toAnswer;
    $("#btn-to-answer").setAttribute("aria-pressed", toAnswer ? "true" : "false");
    renderList();
  });
  $("#search").addEventListener("input", renderList);
  $("#conv-list").addEventListener("keydown", listKeys);
  $("#composer").addEventListener("submit", onSend);
  bindEnterToSend();
  $("#message").addEventListener("input", onTypingInput);
  $("#beneficiary-form").addEventListener("submit", createBeneficiary);
  $("#transfer-form").addEventListener("submit", submitTransfer);
  $("#btn-export").addEventListener("click", onExport);
  $("#btn-archive").addEventListener("click", openArchive);
  $("#archive-form").addEventListener("submit", submitArchive);
  bindOnboarding({ api, keys: () => keys, currentConversation: () => current, peerName: () => chat.peerName(current) });
  portfolio = new Portfolio({ api, me, open: (id) => select(id), onClose: closePortfolio });
  $("#btn-portfolio").addEventListener("click", showPortfolio);
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && current) chat.markRead(current);
    notifications.viewing(current);
  });
  notifications = new Notifications({
    api,
    sw: "/console/sw.js",
    scope: "/console/",
    banner: $("#push-invite"),
    staff: true,
    onOpen: (id) => {
      if (chat && chat.summary(id)) select(id);
      else openWhenListed = id;
    },
  });
  $("#btn-notifications").addEventListener("click", () => notifications.openSettings());
  $("#btn-mute").addEventListener("click", async () => {
    $("#mute-status").textContent = await notifications.toggleMute(current).catch(() => t("networkError"));
    renderMute();
  });
  notifications.list().then(renderMute, () => {});

  chat = new ChatClient({ api, keys, user: me, deviceId: login.device_id });
  typing = createTypingNotifier(chat);
  broadcaster = new Broadcaster({ api, chat, me, open: (id) => select(id), onClose: closePortfolio });
  $("#btn-broadcast").hidden = me.role !== "counsellor";
  $("#btn-broadcast").addEventListener("click", showBroadcast);
  bindAttachButtons(chat, () => current);
  chat.on("summaries", () => {
    if (current && !chat.summary(current)) closeThread();
    if (openWhenListed && chat.summary(openWhenListed)) {
      const id = openWhenListed;
      openWhenListed = null;
      select(id);
    }
    renderList();
    if (current) renderThreadHead();
    if (current && chat.summary(current)?.deleted_at) renderThread();
  });
  chat.on("thread", (d) => {
    if (d.conversation === current) {
      renderThread();
      if (!document.hidden) chat.markRead(current);
    }
  });
  chat.on("typing", (d) => {
    peerTyping.set(d.conversation, d.typing);
    if (d.conversation === current) renderTyping();
  });
  chat.on("incoming", (d) => {
    attention.notify();
    if (d.conversation === current && !document.hidden) chat.markRead(current);
  });
  chat.on("state", (d) => renderConnection(d.state));
  chat.on("keyrequest", (d) => {
    const conv = d.request.conversation;
    if (!keyRequests.has(conv)) keyRequests.set(conv, new Map());
    keyRequests.get(conv).set(d.request.recipient_device, d.request);
    if (conv === current) renderKeyRequests();
    renderList();
  });
  chat.on("keysshared", (d) => {
    // Shown in the thread (renderThread); a supervisor has no thread: the supervision panel says it.
    if (!chat.summary(d.conversation)) $("#supervision-keys").textContent = noticeText(d.conversation, d.notice);
  });
  chat.on("items", (d) => {
    if (d.conversation === current) renderItemsPanel($("#items-panel"), chat.itemsOf(current));
  });
  chat.on("structurekey", (d) => renderStructureKeyWaiting(d.waiting));
  chat.on("authfailed", expired);
  chat.start();
  if (me.role === "supervisor") loadSupervision();
}

// ---------------------------------------------------------------- conversation list

function normalise(text) {
  return (text || "").normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
}

function renderList() {
  const list = $("#conv-list");
  const query = normalise($("#search").value.trim());
  const all = chat.sortedSummaries();
  const items = all.filter(
    (s) => (!query || normalise(s.peer?.display_name).includes(query) || normalise(s.peer?.login).includes(query)) && (!toAnswer || awaitsAnswer(s)),
  );
  const focusedId = document.activeElement?.closest?.(".conv")?.dataset.id;
  reconcile(
    list,
    items,
    (s) => s.id,
    (s) => JSON.stringify([s.peer?.display_name, s.unread, s.flagged, s.peer_online, s.last_at, s.id === current, s.peer?.programme, preview(s), s.archived?.at, s.deleted_at, phoneRequestOf(s.id)?.recipient_device]),
    renderConversation,
  );
  if (focusedId && document.activeElement === document.body) list.querySelector(`[data-id="${CSS.escape(focusedId)}"]`)?.focus();
  const empty = $("#conv-empty");
  empty.hidden = items.length > 0;
  empty.textContent = !all.length ? t("noConversation") : toAnswer && !query ? t("noToAnswer") : t("noMatch");
  const total = all.reduce((n, s) => n + (s.unread || 0), 0);
  const badge = $("#unread-total");
  badge.hidden = total === 0;
  badge.textContent = total;
  badge.setAttribute("aria-label", t("unreadCount", { n: total }));
}

/** The beneficiary wrote last (system events aside): the "à répondre" filter. */
function awaitsAnswer(s) {
  const last = s.last_message;
  return !!last && last.sender === s.beneficiary_id;
}

/** The list's one-line preview of the last message (decrypted on this device). */
function preview(s) {
  const p = s.preview;
  if (!p) return "";
  if (p.system || p.error || !p.content) return p.system ? "" : t("waitingKeys");
  const titleOf = (id) => {
    const listed = chat.itemsOf(s.id)?.items.find((i) => i.id === id)?.content?.title;
    if (listed) return listed;
    const thread = chat.thread(s.id);
    return thread ? [...thread.items.values()].find((m) => m.clientId === id)?.content?.title : null;
  };
  const text = previewText(p, { peerName: s.peer?.display_name || "", titleOf }).replace(/\s+/g, " ");
  return p.mine ? `${t("you")} : ${text}` : text;
}

function renderConversation(s) {
  const name = s.deleted_at ? "Compte supprimé" : s.peer?.display_name || s.peer?.login || "?";
  const line2 = [
    s.deleted_at ? h("span", { class: "tag tag-deleted" }, "Compte supprimé") : null,
    s.archived ? h("span", { class: "tag tag-archived" }, "Archivé") : null,
    s.deleted_at ? null : h("span", {}, h("span", { class: `presence-dot${s.peer_online ? " on" : ""}`, "aria-hidden": "true" }), s.peer_online ? t("online") : t("offline")),
    s.peer?.programme ? h("span", {}, s.peer.programme) : null,
    s.flagged ? h("span", { class: "tag tag-flag" }, t("flagged")) : null,
    s.unread > 0 ? h("span", { class: "badge" }, h("span", { "aria-hidden": "true" }, s.unread), h("span", { class: "visually-hidden" }, t("unreadCount", { n: s.unread }))) : null,
  ];
  const button = h(
    "button",
    {
      type: "button",
      class: `conv${s.unread > 0 ? " unread" : ""}`,
      "aria-current": s.id === current ? "true" : null,
      dataset: { id: s.id },
      onclick: () => select(s.id),
    },
    h("span", { class: "name" }, name),
    h("span", { class: "time" }, shortTime(s.last_at)),
    h("span", { class: "preview" }, preview(s)),
    h("span", { class: "line2" }, ...line2),
  );
  const li = h("li", {}, button);
  // A beneficiary's new phone waits for this counsellor: asked here, in the list,
  // without opening the thread; one click approves and shares the history.
  const phone = phoneRequestOf(s.id);
  if (phone) li.append(newPhoneRequest(s.id, phone, name));
  return li;
}

/** A beneficiary's device waiting for this counsellor's approval, if any. */
function phoneRequestOf(conv) {
  return [...(keyRequests.get(conv)?.values() || [])].find((r) => r.kind === "approve");
}

function newPhoneRequest(conv, request, name) {
  const approve = h("button", { type: "button", class: "primary small", "aria-label": t("approveNewPhoneFor", { name }) }, t("approve"));
  approve.addEventListener("click", async () => {
    approve.disabled = true;
    try {
      await chat.approveKeyRequest(request);
      keyRequests.get(conv)?.delete(request.recipient_device);
      renderList();
      if (conv === current) renderKeyRequests();
    } catch (err) {
      approve.disabled = false;
      alertError(err);
    }
  });
  return h("div", { class: "conv-request", role: "status" }, h("span", {}, t("listNewPhone", { name })), approve);
}

function listKeys(event) {
  const buttons = [...$("#conv-list").querySelectorAll(".conv")];
  const i = buttons.indexOf(document.activeElement);
  let next = null;
  if (event.key === "ArrowDown") next = buttons[Math.min(buttons.length - 1, i + 1)];
  else if (event.key === "ArrowUp") next = buttons[Math.max(0, i - 1)];
  else if (event.key === "Home") next = buttons[0];
  else if (event.key === "End") next = buttons[buttons.length - 1];
  if (next) {
    event.preventDefault();
    next.focus();
  }
}

// ---------------------------------------------------------------- portfolio (console/portfolio.js)

let portfolio = null;

// Broadcast (console/broadcast.js) shares the portfolio's place and its way back.
let broadcaster = null;

function showBroadcast() {
  portfolio.hide();
  $("#thread-empty").hidden = true;
  $("#supervision").hidden = true;
  $("#thread-view").hidden = true;
  broadcaster.show();
}

function showPortfolio() {
  broadcaster?.hide();
  $("#thread-empty").hidden = true;
  $("#supervision").hidden = true;
  $("#thread-view").hidden = true;
  portfolio.show();
}

function closePortfolio() {
  portfolio.hide();
  broadcaster?.hide();
  if (current) $("#thread-view").hidden = false;
  else if (me.role === "supervisor") $("#supervision").hidden = false;
  else $("#thread-empty").hidden = false;
}

function select(id) {
  if (current && current !== id) typing.stop(current);
  portfolio?.hide();
  broadcaster?.hide();
  current = id;
  $("#thread-empty").hidden = true;
  $("#supervision").hidden = true;
  $("#thread-view").hidden = false;
  $("#messages").replaceChildren();
  chat.openThread(id);
  $("#items-panel").replaceChildren();
  chat.loadItems(id).catch(() => {});
  renderList();
  renderThreadHead();
  renderThread();
  renderTyping();
  renderKeyRequests();
  chat.markRead(id);
  notifications.viewing(id);
  renderMute();
  $("#mute-status").textContent = "";
}

/** The thread's "mute notifications" button (counsellors, once notifications are on). */
function renderMute() {
  const button = $("#btn-mute");
  button.hidden = !current || !notifications.mine || me.role !== "counsellor";
  const muted = Boolean(current) && notifications.isMuted(current);
  button.textContent = muted ? t("pushUnmute") : t("pushMute");
  button.setAttribute("aria-pressed", muted ? "true" : "false");
}

// ---------------------------------------------------------------- thread

function closeThread() {
  current = null;
  notifications.viewing(null);
  $("#thread-view").hidden = true;
  $("#messages").replaceChildren();
  if (me.role === "supervisor") $("#supervision").hidden = false;
  else $("#thread-empty").hidden = false;
}

function renderThreadHead() {
  const s = chat.summary(current);
  if (!s) return;
  const name = s.peer?.display_name || s.peer?.login || "";
  $("#thread-title").textContent = t("messagesOf", { name }) + (s.peer?.programme ? ` (${s.peer.programme})` : "");
  renderPresence($("#thread-presence"), s);
  const notice = archiveNotice(s);
  $("#archived-banner").hidden = !notice;
  $("#archived-banner").textContent = notice;
  setComposerEnabled(!readOnly(s));
  $("#btn-archive").hidden = s.counsellor_id !== me.id || readOnly(s);
  $("#btn-export").hidden = Boolean(s.deleted_at);
  if (s.deleted_at) $("#thread-title").textContent = "Compte supprimé";
  $("#btn-safety").hidden = Boolean(s.deleted_at);
  $("#key-requests").hidden = Boolean(s.deleted_at);
  if (s.deleted_at) $("#thread-presence").textContent = "";
  renderReissueButton(s, me);
  const flag = $("#btn-flag");
  flag.hidden = s.counsellor_id !== me.id || Boolean(s.deleted_at);
  flag.setAttribute("aria-pressed", s.flagged ? "true" : "false");
  flag.textContent = s.flagged ? t("flagged") : t("flag");
}

function renderThread() {
  const thread = chat.thread(current);
  const s = chat.summary(current);
  if (!thread || !s) return;
  const log = $("#log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 80;
  const peerName = s.peer?.display_name || "";
  if (s.deleted_at) {
    // A deleted beneficiary's conversation: what this console still held goes too.
    $("#messages").replaceChildren();
    $("#btn-older").hidden = true;
    return;
  }
  const conv = current;
  // Local notices (keys this console shared) after the message they followed.
  const extra = chat.noticesFor(current).map((notice) => ({
    key: notice.id,
    at: notice.afterSeq + 0.5,
    render: () =>
      h(
        "li",
        { class: `msg msg-system msg-notice${notice.kind === "security" ? " msg-security" : ""}`, role: notice.kind === "security" ? "alert" : null },
        h("p", { class: "msg-text" }, noticeText(conv, notice)),
      ),
  }));
  renderThreadList($("#messages"), { chat, conversation: current, summary: s, peerName, extra, onError: alertError });
  $("#btn-older").hidden = !thread.hasOlder;
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function renderTyping() {
  const el = $("#typing");
  el.textContent = current && peerTyping.get(current) ? t("typing", { name: chat.peerName(current) }) : "";
}

function onTypingInput() {
  if (!current) return;
  typing.input(current);
}

function onSend(event) {
  event.preventDefault();
  const sent = sendComposed(chat, typing, current);
  notifications.invite();
  return sent;
}

async function toggleFlag() {
  const s = chat.summary(current);
  if (!s) return;
  try {
    await chat.setFlag(current, !s.flagged);
  } catch (err) {
    alertError(err);
  }
}

/** The display name of a user of conversation `conv`, as far as this console knows it. */
function userName(conv, userId) {
  if (userId === me.id) return me.display_name;
  const s = chat.summary(conv);
  if (s?.peer?.id === userId) return s.peer.display_name || s.peer.login;
  const known = (structure?.counsellors || []).find((c) => c.id === userId);
  if (known) return known.display_name;
  const listed = (structure?.conversations || []).find((c) => c.beneficiary?.id === userId || c.beneficiary_id === userId);
  return listed?.beneficiary?.display_name || t("unknownPerson");
}

function noticeText(conv, notice) {
  const name = userName(conv, notice.userId);
  if (notice.kind === "security" && notice.reason?.startsWith("structure_key_")) return t("securityStructureKey");
  if (notice.kind === "security") return t(notice.recovered ? "securityBadEnvelopeRecovered" : "securityBadEnvelope", { name });
  return t(notice.reason === "transfer" ? "keysSharedTransfer" : "keysSharedNewDevice", { name });
}

function renderKeyRequests() {
  const box = $("#key-requests");
  const conv = current;
  const waiting = [...(keyRequests.get(conv)?.values() || [])];
  setChildren(
    box,
    ...waiting.map((request) => {
      const approve = h("button", { type: "button", class: "primary" }, t("approve"));
      approve.addEventListener("click", async () => {
        approve.disabled = true;
        try {
          await chat.approveKeyRequest(request);
          keyRequests.get(conv)?.delete(request.recipient_device);
          if (conv === current) renderKeyRequests();
        } catch (err) {
          approve.disabled = false;
          alertError(err);
        }
      });
      const text = t("keyRequestFor", { name: chat.peerName(conv) });
      return h("div", { class: "notice key-request row", role: "status" }, h("span", {}, text), approve);
    }),
  );
}

function alertError(err) {
  const status = $("#conn");
  status.textContent = t("genericError", { message: err.message });
}

// ---------------------------------------------------------------- dialogs

function openBeneficiaryDialog() {
  $("#beneficiary-form").reset();
  $("#b-error").textContent = "";
  $("#dlg-beneficiary").showModal();
}

async function createBeneficiary(event) {
  event.preventDefault();
  const error = $("#b-error");
  error.textContent = "";
  const name = $("#b-name").value.trim();
  const login = $("#b-login").value.trim();
  if (!name || !login) {
    error.textContent = "Le nom et l'identifiant sont obligatoires.";
    return;
  }
  if (loginProblem(login)) {
    error.textContent = loginProblem(login);
    return;
  }
  try {
    // The code is made here: the server gets only its proof, and the keys of
    // what is written before activation wait in the activation box.
    const code = newCode();
    const made = await derive(code);
    const created = await api.createBeneficiary(login, name, $("#b-programme").value, made.proofText);
    try {
      await leaveActivationBox(keys, api, created.conversation_id, made.boxKey);
    } catch (err) {
      console.warn("activation box not left", err.message);
    }
    $("#dlg-beneficiary").close();
    await chat.refreshSummaries();
    select(created.conversation_id);
    showActivation({ ...created, activation_code: created.activation_code || code });
  } catch (err) {
    error.textContent = err.message;
  }
}

function openSafety() {
  return openSafetyDialog(chat, keys, current);
}

/** "Sécurité": this person's devices, safety number, recovery-key renewal (shared/devices.js). */
function openSecurity() {
  return openDevicesDialog($("#dlg-security"), {
    api,
    keys,
    showId: true,
    onSafety: current ? openSafety : null,
    onRenew: () =>
      openRenewDialog($("#dlg-renew"), {
        api,
        keys,
        user: me,
        stop: () => chat?.stop(),
        saveSession: (login) => sessionStorage.setItem(SESSION_KEY, login.token),
        onDone: () => location.reload(),
      }),
  });
}

// ---------------------------------------------------------------- supervision

let structure = null;

/** Staff devices waiting for the structure key, each with an approval button (supervisors). */
function renderStructureKeyWaiting(waiting) {
  const box = $("#structure-key-box");
  box.hidden = !waiting.length;
  setChildren(
    $("#structure-key-waiting"),
    ...waiting.map((d) => {
      const name = chat.nameOf(d.user_id) || (structure?.counsellors || []).find((c) => c.id === d.user_id)?.display_name || t("unknownPerson");
      const role = d.role === "supervisor" ? "responsable de structure" : "conseiller·ère";
      const button = h(
        "button",
        {
          type: "button",
          class: "secondary",
          onclick: async () => {
            button.disabled = true;
            try {
              await chat.keys.structure.approve(d.device_id);
              $("#structure-key-status").textContent = `Clé de la structure confiée à l'appareil de ${name}.`;
              renderStructureKeyWaiting(chat.keys.structure.waiting);
            } catch (err) {
              button.disabled = false;
              $("#structure-key-status").textContent = t("genericError", { message: err.message });
            }
          },
        },
        "Confier la clé",
        h("span", { class: "visually-hidden" }, ` de la structure à ${name}`),
      );
      return h("li", {}, h("span", {}, `Nouvel appareil de ${name} (${role}) `), h("span", { class: "mono" }, d.device_id.slice(0, 8)), " ", button);
    }),
  );
}

async function loadSupervision(done = "") {
  $("#thread-empty").hidden = true;
  const section = $("#supervision");
  section.hidden = false;
  const status = $("#supervision-status");
  status.textContent = t("loading");
  try {
    structure = await api.structure();
  } catch (err) {
    status.textContent = err instanceof ApiError && err.status === 404 ? t("noStructureList") : t("genericError", { message: err.message });
    return;
  }
  status.textContent = done;
  const counsellors = new Map((structure.counsellors || []).map((c) => [c.id, c]));
  const body = $("#supervision-body");
  setChildren(
    body,
    ...(structure.conversations || []).map((c) => {
      const who = c.beneficiary?.display_name || c.beneficiary_id;
      const counsellor = counsellors.get(c.counsellor_id)?.display_name || c.counsellor_id;
      const extra = c.temporary_until ? ` (temporaire jusqu'au ${longTime(c.temporary_until)})` : "";
      if (c.deleted_at) return h("tr", {}, h("td", {}, "Compte supprimé"), h("td", {}, counsellor), h("td", {}));
      if (c.archived) {
        const state = ` (archivé : ${archiveReasonText(c.archived.reason)})`;
        const restore = h("button", { type: "button", class: "secondary", onclick: () => restoreArchived(c) }, "Restaurer", h("span", { class: "visually-hidden" }, ` ${who}`));
        return h("tr", {}, h("td", {}, who), h("td", {}, counsellor + state), h("td", {}, restore));
      }
      const button = h("button", { type: "button", class: "secondary", onclick: () => openTransfer(c) }, t("transfer"), h("span", { class: "visually-hidden" }, ` ${who}`));
      return h("tr", {}, h("td", {}, who), h("td", {}, counsellor + extra), h("td", {}, button));
    }),
  );
  $("#supervision-table").hidden = false;
}

let transferring = null;

function openTransfer(conv) {
  transferring = conv;
  $("#transfer-form").reset();
  $("#transfer-error").textContent = "";
  $("#transfer-who").textContent = `${t("beneficiary")} : ${conv.beneficiary?.display_name || conv.beneficiary_id}`;
  setChildren(
    $("#transfer-to"),
    ...(structure.counsellors || []).filter((c) => c.id !== conv.counsellor_id).map((c) => h("option", { value: c.id }, c.display_name)),
  );
  $("#dlg-transfer").showModal();
}

async function submitTransfer(event) {
  event.preventDefault();
  const mode = new FormData(event.target).get("mode");
  const until = $("#transfer-until").value;
  const error = $("#transfer-error");
  if (mode === "temporary" && !until) {
    error.textContent = "Indiquez la date de fin du transfert temporaire.";
    return;
  }
  try {
    const untilTs = until ? new Date(`${until}T23:59:59`).getTime() / 1000 : undefined;
    await api.transfer(transferring.id, mode === "take_back" ? undefined : $("#transfer-to").value, mode, untilTs);
    $("#dlg-transfer").close();
    await loadSupervision(t("transferDone"));
  } catch (err) {
    error.textContent = t("genericError", { message: err.message });
  }
}

// ---------------------------------------------------------------- data lifecycle

async function onExport() {
  if (!current) return;
  try {
    await exportConversation(chat, current, $("#export-status"));
  } catch (err) {
    $("#export-status").textContent = t("genericError", { message: err.message });
  }
}

function openArchive() {
  const s = chat.summary(current);
  if (!s) return;
  $("#archive-form").reset();
  $("#archive-error").textContent = "";
  $("#archive-who").textContent = `${t("beneficiary")} : ${s.peer?.display_name || ""}`;
  $("#dlg-archive").showModal();
}

async function submitArchive(event) {
  event.preventDefault();
  try {
    await api.archive(current, $("#archive-reason").value);
    $("#dlg-archive").close();
  } catch (err) {
    $("#archive-error").textContent = t("genericError", { message: err.message });
  }
}

async function restoreArchived(conv) {
  try {
    await api.restore(conv.id);
    await loadSupervision("Conversation restaurée.");
  } catch (err) {
    $("#supervision-status").textContent = t("genericError", { message: err.message });
  }
}

init().catch(showStartError);
