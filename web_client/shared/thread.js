/**
 * Pieces of the thread view shared by the console and the app: the typing
 * notifier, stored and pending (outbox) message bubbles, presence and
 * connection lines, the composer's Enter key and the safety-number dialog.
 * Element ids are the same in both pages (#conn, #message, #composer,
 * #dlg-safety, #safety-intro, #safety-number).
 */

import { formatSafetyNumber } from "./crypto.js";
import { t, lastSeenText } from "./i18n.js";
import { $, h, setChildren, renderMessage, connectionText } from "./ui.js";

/**
 * Throttled "is typing" signals for `chat`: `input(id)` on each keystroke
 * sends `typing: true` at most every 3 s and `typing: false` 4 s after the
 * last one; `stop(id)` ends it at once (on send, or on leaving the thread).
 */
export function createTypingNotifier(chat) {
  let sent = 0;
  let stopTimer = null;
  return {
    input(id) {
      const now = Date.now();
      if (now - sent > 3000) {
        chat.setTyping(id, true);
        sent = now;
      }
      clearTimeout(stopTimer);
      stopTimer = setTimeout(() => {
        chat.setTyping(id, false);
        sent = 0;
      }, 4000);
    },
    stop(id) {
      clearTimeout(stopTimer);
      if (sent) chat.setTyping(id, false);
      sent = 0;
    },
  };
}

/** What makes a stored message's bubble change (for `reconcile`). */
export function storedSignature(item, summary) {
  return JSON.stringify([!!item.content, item.error, item.mine && item.seq <= (summary.peer_read || 0)]);
}

/** A stored message, with "sent"/"read" under the user's own ones. */
export function renderStoredMessage(item, summary, peerName) {
  let status = null;
  if (item.mine && !item.system) {
    status = item.seq <= (summary.peer_read || 0) ? { kind: "read", text: t("statusRead") } : { kind: "sent", text: t("statusSent") };
  }
  return renderMessage(item, { peerName, status });
}

/** An outbox entry not yet acknowledged, with retry/discard once it failed. */
export function renderPendingMessage(entry, chat) {
  const item = { mine: true, system: false, msgType: entry.msgType, content: entry.content, createdAt: entry.createdAt };
  const text = { pending: t("statusPending"), sending: t("statusSending"), failed: t("statusFailed") }[entry.state];
  const li = renderMessage(item, {
    status: { kind: entry.state, text },
    onRetry: () => chat.retry(entry.clientId),
    onDiscard: () => chat.discard(entry.clientId),
  });
  li.classList.add("msg-pending");
  return li;
}

/** The peer's presence dot and "online" / "last seen" text. */
export function renderPresence(el, summary) {
  setChildren(
    el,
    h("span", { class: `presence-dot${summary.peer_online ? " on" : ""}`, "aria-hidden": "true" }),
    summary.peer_online ? t("online") : lastSeenText(summary.peer_last_seen),
  );
}

/** The connection state line (#conn). */
export function renderConnection(state) {
  const conn = $("#conn");
  conn.textContent = connectionText(state);
  conn.className = `conn conn-${state}`;
}

/** Enter sends (Shift+Enter: new line); `when()` may restrict it (e.g. to fine pointers). */
export function bindEnterToSend(when = () => true) {
  $("#message").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing && when()) {
      e.preventDefault();
      $("#composer").requestSubmit();
    }
  });
}

/** Open the safety-number dialog for conversation `id`. */
export async function openSafetyDialog(chat, keys, id) {
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

/** Send the composer's text to conversation `id`, end the typing signal, scroll to the end. */
export async function sendComposed(chat, typing, id) {
  const input = $("#message");
  const text = input.value.trim();
  if (!text || !id) return;
  input.value = "";
  typing.stop(id);
  await chat.sendText(id, text);
  const log = $("#log");
  log.scrollTop = log.scrollHeight;
}
