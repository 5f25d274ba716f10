/**
 * Push notifications, service-worker side (imported by app/sw.js and
 * console/sw.js, both module service workers).
 *
 * The push payload (docs/protocol.md, "Push notifications") carries the
 * stored message still encrypted; it is opened here with the epoch key this
 * browser holds in IndexedDB (idb.js, store `epochs`), never by the server or
 * the push service. Without the key (another browser, history not shared yet)
 * or when the payload had to be shortened (too large, or refused by the push
 * service), a generic text is shown. The preview is not a verified message:
 * the AES-GCM tag proves it was written by a holder of the epoch key; the
 * signature is checked when the conversation opens.
 *
 * A push for the conversation a visible, focused window shows right now is
 * not shown. Clicking a notification focuses a window of the app (which
 * opens the conversation) or opens one.
 */

import { b64decode, messageAad, utf8decode } from "./crypto.js";
import { idbEntries, idbGet } from "./idb.js";
import { dateLong, t, whenText } from "./i18n.js";
import { stdToUrl } from "./wire.js";

const PREVIEW_CHARS = 120;

/** The first characters of a text, on one line, with an ellipsis if cut. */
export function shorten(text, max = PREVIEW_CHARS) {
  const line = String(text || "").replace(/\s+/g, " ").trim();
  return line.length > max ? `${line.slice(0, max - 1).trimEnd()}…` : line;
}

/** The epoch key for `conversation`/`epoch` held by any account of this browser, or null. */
async function heldKey(conversation, epoch) {
  const accounts = await idbEntries("devices");
  for (const [userId] of accounts) {
    const key = await idbGet("epochs", `${userId}|${conversation}|${epoch}`);
    if (key) return key;
  }
  return null;
}

/** Decrypt a message in history shape (standard base64 fields); the content object or null. */
export async function openMessage(message) {
  try {
    const key = await heldKey(message.conversation, message.epoch);
    if (!key || !message.nonce || !message.body) return null;
    const aad = messageAad({
      conversation: message.conversation,
      epoch: message.epoch,
      senderDevice: message.device,
      clientId: message.client_id,
      msgType: message.msg_type,
      meta: message.meta || {},
      version: message.v ?? 1,
    });
    const pt = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: b64decode(stdToUrl(message.nonce)), additionalData: aad, tagLength: 128 },
      key,
      b64decode(stdToUrl(message.body)),
    );
    return JSON.parse(utf8decode(new Uint8Array(pt)));
  } catch {
    return null;
  }
}

function generic(payload) {
  return payload.sender_role === "beneficiary" ? t("pushGenericFromBeneficiary") : t("pushGenericFromCounsellor");
}

/** What a message's content says, in one line (text, or the kind of item). */
function contentLine(msgType, content, meta) {
  if (msgType === "text" || msgType === "notice") return shorten(content && content.text);
  if (msgType === "action") return t("pushAction", { title: shorten((content && content.title) || "", 80) });
  if (msgType === "appointment") {
    return meta && meta.starts_at ? t("pushAppointmentAt", { when: whenText(meta.starts_at) }) : t("pushAppointment");
  }
  if (msgType === "offer") return t("pushOffer", { title: shorten((content && content.title) || "", 80) });
  if (msgType === "attachment") return t("pushAttachment");
  return shorten(content && content.text);
}

/**
 * The notification for a push payload: { title, body, tag, conversation }.
 * Exported for the browser tests.
 */
export async function notificationFor(payload) {
  const conversation = payload.conversation || null;
  const base = { title: t("appName"), tag: conversation || payload.kind, conversation };
  if (payload.kind === "message") {
    const sys = String(payload.msg_type || "").startsWith("system.");
    if (sys) return { ...base, body: t("pushSystem") };
    const content = payload.message ? await openMessage(payload.message) : null;
    if (!content) return { ...base, body: generic(payload) };
    const line = contentLine(payload.msg_type, content, payload.message.meta);
    if (!line) return { ...base, body: generic(payload) };
    return { ...base, body: `${payload.sender_name} : ${line}` };
  }
  if (payload.kind === "key_request") return { ...base, body: t("pushKeyRequest") };
  if (payload.kind === "reminder") {
    const at = payload.at ? whenText(payload.at) : "";
    const key = payload.item_type === "action" ? "pushReminderAction" : "pushReminderAppointment";
    return { ...base, tag: `${conversation}|${payload.item}|${payload.when}`, body: t(key, { when: at }) };
  }
  if (payload.kind === "notice") return { ...base, body: t("pushInactivity", { date: payload.deletion_at ? dateLong(payload.deletion_at) : "" }) };
  return { ...base, body: generic(payload) };
}

/** True if a visible, focused window of this scope shows `conversation` right now. */
async function onScreen(conversation) {
  if (!conversation) return false;
  const viewing = await idbGet("kv", "push-viewing").catch(() => null);
  if (!viewing || viewing.conversation !== conversation) return false;
  const scope = self.registration.scope;
  const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
  return windows.some((w) => w.url.startsWith(scope) && w.visibilityState === "visible" && w.focused);
}

/** Where a click on a notification for `conversation` leads, in this scope. */
function targetUrl(conversation) {
  const scope = new URL(self.registration.scope);
  return conversation ? `${scope.pathname}?c=${encodeURIComponent(conversation)}` : scope.pathname;
}

/** `push` event: decrypt, decide, show. */
export function onPush(event) {
  event.waitUntil(
    (async () => {
      let payload = {};
      try {
        payload = event.data ? event.data.json() : {};
      } catch {
        payload = {};
      }
      const n = await notificationFor(payload);
      if (await onScreen(n.conversation)) return;
      await self.registration.showNotification(n.title, {
        body: n.body,
        tag: n.tag,
        renotify: true,
        icon: "/shared/icons/icon-192.png",
        badge: "/shared/icons/favicon.png",
        lang: "fr",
        data: { conversation: n.conversation, url: targetUrl(n.conversation) },
      });
    })(),
  );
}

/** `notificationclick`: focus a window of the app on that conversation, or open one. */
export function onNotificationClick(event) {
  event.notification.close();
  const data = event.notification.data || {};
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const scope = self.registration.scope;
      const mine = windows.find((w) => w.url.startsWith(scope));
      if (mine) {
        mine.postMessage({ type: "open-conversation", conversation: data.conversation });
        // Focusing needs the click's user activation; without it the window still opens the conversation.
        await mine.focus().catch(() => {});
        return;
      }
      await self.clients.openWindow(data.url || scope);
    })(),
  );
}
