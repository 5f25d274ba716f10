/**
 * DOM helpers shared by the console and the app (no inline styles: classes
 * and the `hidden` attribute only, as the CSP requires), message rendering,
 * and the "new message while the tab is hidden" signals.
 */

import { t, clock, longTime } from "./i18n.js";

/** The archive reasons (codes of docs/protocol.md) in French. */
export const ARCHIVE_REASONS = {
  emploi: "sortie en emploi",
  formation: "sortie en formation",
  fin_accompagnement: "fin d'accompagnement",
  demenagement: "déménagement",
  autre: "autre motif",
};

export function archiveReasonText(code) {
  return ARCHIVE_REASONS[code] || ARCHIVE_REASONS.autre;
}

/** Create an element: h("button", {class: "x", onclick: fn}, "text", child). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function setChildren(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

export const $ = (sel, root = document) => root.querySelector(sel);

/** Show exactly one of the screens (the others get `hidden`). */
export function showScreen(id) {
  for (const el of document.querySelectorAll("[data-screen]")) el.hidden = el.id !== id;
}

/** The French text of a message item (decrypted content, system event, or fallback). */
export function messageText(item, peerName = "", names = null) {
  if (item.system) return systemText(item, peerName, names);
  if (item.error) {
    if (item.error === "device_mismatch") return t("unverifiableMessage");
    if (item.error === "bad_signature" || item.error === "unknown_device") return t("unverifiedMessage");
    if (item.error === "no_key") return t("unreadableMessage");
    return t("unreadableMessage");
  }
  if (!item.content) return t("waitingKeys");
  if (item.msgType === "text" && typeof item.content.text === "string") return item.content.text;
  return t("unknownType", { type: item.msgType });
}

/** "Claire Martin (conseiller·ère)", or a generic word when the name is not known. */
function personText(id, names, fallbackRole = "") {
  const name = (id && names?.nameOf(id)) || "";
  const role = (id && names?.roleOf(id)) || fallbackRole;
  const roleText = role ? t(`role_${role}`) : "";
  if (!name) return roleText ? t("somebodyRole", { role: roleText }) : t("somebody");
  return roleText ? `${name} (${roleText})` : name;
}

/**
 * A system event, naming who did what (issue #10, point 7). `names` is
 * `{ nameOf(id), roleOf(id) }` (chat.people); unknown people get a generic word.
 */
function systemText(item, peerName, names) {
  const meta = item.meta || {};
  switch (item.msgType) {
    case "system.counsellor_changed":
      if (meta.mode === "take_back") return t("sysTakeBack", { to: personText(meta.to, names, "counsellor"), from: personText(meta.from, names, "counsellor") });
      return t("sysCounsellorChangedNamed", { from: personText(meta.from, names, "counsellor"), to: personText(meta.to, names, "counsellor") });
    case "system.temporary_counsellor":
      return t("sysTemporaryCounsellorNamed", {
        from: personText(meta.from, names, "counsellor"),
        to: personText(meta.to, names, "counsellor"),
        date: meta.until ? longTime(meta.until) : "?",
      });
    case "system.epoch_rotated":
      return t("sysEpochRotated");
    case "system.archived":
      return t("sysArchived", { reason: archiveReasonText(item.meta?.reason) });
    case "system.restored":
      return t("sysRestored");
    case "system.inactivity_notice": {
      const date = meta.deletion_at ? longTime(meta.deletion_at) : "?";
      if (item.aboutMe) return t("sysInactivityNotice", { date });
      return t("sysInactivityNoticePeer", { name: peerName, date });
    }
    case "system.activation_issued":
      return t(meta.kind === "password_reset" ? "sysPasswordReset" : "sysActivationReissued", { date: meta.expires_at ? longTime(meta.expires_at) : "?" });
    case "system.device_changed": {
      const removed = meta.change === "removed";
      if (item.aboutMe) return t(removed ? "sysMyDeviceRemoved" : "sysMyDeviceAdded");
      const who = names ? personText(meta.user, names) : peerName || t("counsellor");
      return t(removed ? "sysDeviceRemovedFor" : "sysDeviceAddedFor", { name: who });
    }
    default:
      return t("unknownType", { type: item.msgType });
  }
}

/**
 * Keep `list` (an <ol>) in the order of `items`, creating one <li> per key
 * with `render(item)` and updating it when `signature(item)` changes.
 * Nodes are reused, so assistive technologies only hear what was added.
 */
export function reconcile(list, items, key, signature, render) {
  const existing = new Map();
  for (const li of list.children) existing.set(li.dataset.key, li);
  const wanted = new Set();
  let cursor = list.firstElementChild;
  for (const item of items) {
    const k = key(item);
    wanted.add(k);
    const sig = signature(item);
    let li = existing.get(k);
    if (!li) {
      li = render(item);
      li.dataset.key = k;
      li.dataset.sig = sig;
    } else if (li.dataset.sig !== sig) {
      const fresh = render(item);
      fresh.dataset.key = k;
      fresh.dataset.sig = sig;
      li.replaceWith(fresh);
      if (cursor === li) cursor = fresh;
      existing.set(k, fresh);
      li = fresh;
    }
    if (li !== cursor) list.insertBefore(li, cursor);
    else cursor = cursor.nextElementSibling;
  }
  for (const [k, li] of existing) if (!wanted.has(k) && li.parentNode === list) li.remove();
}

/** One message bubble. `status` is shown under the user's own messages. */
export function renderMessage(item, { peerName, status, onRetry, onDiscard, names = null } = {}) {
  const right = item.right ?? item.mine;
  const cls = ["msg", item.system ? "msg-system" : right ? "msg-mine" : "msg-peer"];
  if (item.error) cls.push("msg-error");
  if (item.quiet) cls.push("msg-quiet");
  const who = item.system ? "" : item.mine ? t("you") : peerName;
  const time = item.createdAt ? clock(item.createdAt) : "";
  const children = [];
  // A colleague's message on this side (a previous counsellor): named, visibly.
  if (!item.system && right && !item.mine) children.push(h("p", { class: "msg-author" }, peerName || t("counsellor")));
  else if (!item.system) children.push(h("span", { class: "visually-hidden" }, `${who} : `));
  children.push(h("p", { class: "msg-text" }, messageText(item, peerName, names)));
  if (!item.system && item.content && item.version === 1) {
    children.push(h("p", { class: "msg-legacy" }, t("legacyFormat")));
  }
  const foot = h("p", { class: "msg-meta" });
  if (time) foot.append(h("time", { datetime: new Date(item.createdAt * 1000).toISOString() }, time));
  if (status) {
    foot.append(h("span", { class: `msg-status status-${status.kind}` }, status.text));
    if (status.kind === "failed") {
      foot.append(h("button", { type: "button", class: "link-button", onclick: onRetry }, t("retry")));
      foot.append(h("button", { type: "button", class: "link-button", onclick: onDiscard }, t("discard")));
    }
  }
  children.push(foot);
  return h("li", { class: cls.join(" ") }, ...children);
}

/** Signals for a new message while the page is hidden: beep, title, favicon. */
export class Attention {
  constructor(baseTitle) {
    this.baseTitle = baseTitle;
    this.count = 0;
    this.audio = null;
    this.favicon = document.querySelector("link[rel=icon]");
    this.normalIcon = this.favicon ? this.favicon.getAttribute("href") : null;
    // Browsers only let audio start after a user gesture: prepare it on the first one.
    const unlock = () => {
      try {
        this.audio = this.audio || new AudioContext();
        if (this.audio.state === "suspended") this.audio.resume();
      } catch {
        this.audio = null;
      }
    };
    document.addEventListener("pointerdown", unlock, { once: true });
    document.addEventListener("keydown", unlock, { once: true });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden) this.reset();
    });
  }

  notify() {
    if (!document.hidden) return false;
    this.count += 1;
    document.title = `${t("newMessageTitle", { n: this.count })} — ${this.baseTitle}`;
    if (this.favicon) this.favicon.setAttribute("href", "/shared/icons/favicon-alert.png");
    this.beep();
    return true;
  }

  beep() {
    const ctx = this.audio;
    if (!ctx || ctx.state !== "running") return;
    const osc = ctx.createOscillator();
    const gain = ctx.createGain();
    osc.type = "sine";
    osc.frequency.value = 880;
    gain.gain.setValueAtTime(0.0001, ctx.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.2, ctx.currentTime + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, ctx.currentTime + 0.25);
    osc.connect(gain).connect(ctx.destination);
    osc.start();
    osc.stop(ctx.currentTime + 0.3);
  }

  reset() {
    this.count = 0;
    document.title = this.baseTitle;
    if (this.favicon && this.normalIcon) this.favicon.setAttribute("href", this.normalIcon);
  }
}

/** Text and class of the connection state. */
export function connectionText(state) {
  return { online: t("online"), connecting: t("connecting"), reconnecting: t("reconnecting"), offline: t("offline"), idle: t("offline") }[state] || state;
}
