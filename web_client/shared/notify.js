/**
 * Push notifications, page side, for the app and the console.
 *
 * - `Notifications.invite()`: the French explanation with "Activer" / "Plus
 *   tard", shown at a sensible moment chosen by the caller (after the person's
 *   first message, never on first load), only if the browser can do it, the
 *   permission was never asked and the person did not say "Plus tard".
 * - `Notifications.openSettings()`: the device's notification settings
 *   (on/off, kinds of notifications, quiet hours, the account's devices that
 *   receive them); counsellors also mute a conversation from its header.
 * - `Notifications.viewing(conversation)`: which conversation is on screen,
 *   so that the service worker does not notify it (push-sw.js).
 * - a click on a notification asks the page to open its conversation
 *   (`onOpen`), or opens the page with `?c=<conversation>`.
 *
 * The subscription goes to the server with this device's session
 * (`POST /api/push/subscriptions`); the payloads stay end-to-end encrypted
 * (docs/protocol.md, "Push notifications").
 */

import { ApiError } from "./api.js";
import { b64decode } from "./b64.js";
import { dateLong, t } from "./i18n.js";
import { idbDelete, idbGet, idbPut } from "./idb.js";
import { h, setChildren } from "./ui.js";

const TYPES = [
  ["messages", "pushTypeMessages"],
  ["actions", "pushTypeActions"],
  ["appointments", "pushTypeAppointments"],
  ["reminders", "pushTypeReminders"],
];
const STAFF_TYPES = [...TYPES, ["key_requests", "pushTypeKeyRequests"]];

/** True if this browser can receive Web Push. */
export function pushSupported() {
  return "serviceWorker" in navigator && "PushManager" in window && "Notification" in window;
}

export class Notifications {
  /**
   * `api`: the session's Api; `sw`: the service worker's URL; `scope`: its
   * scope; `banner`: where the invitation goes; `staff`: a counsellor or
   * supervisor (key requests, per-conversation mute); `onOpen(conversation)`.
   */
  constructor({ api, sw, scope, banner, staff = false, onOpen = () => {} }) {
    this.api = api;
    this.sw = sw;
    this.scope = scope;
    this.banner = banner;
    this.staff = staff;
    this.onOpen = onOpen;
    this.mine = null;
    this.dialog = null;
    if (!pushSupported()) return;
    this.ready = navigator.serviceWorker.register(sw, { scope, type: "module" }).catch(() => null);
    navigator.serviceWorker.addEventListener("message", (event) => {
      const data = event.data || {};
      if (data.type === "open-conversation" && data.conversation) this.onOpen(data.conversation);
    });
    // Leaving the page: nothing of this scope is on screen any more.
    window.addEventListener("pagehide", () => this.viewing(null));
    const asked = new URLSearchParams(location.search).get("c");
    if (asked) queueMicrotask(() => this.onOpen(asked));
  }

  /** Which conversation is on screen (null: none), for the service worker. */
  async viewing(conversation) {
    try {
      if (conversation && document.visibilityState === "visible") await idbPut("kv", "push-viewing", { conversation });
      else await idbDelete("kv", "push-viewing");
    } catch {
      // IndexedDB unavailable: notifications are then shown even for the open conversation.
    }
  }

  async registration() {
    const reg = await this.ready;
    if (!reg) throw new Error("service worker unavailable");
    await navigator.serviceWorker.ready;
    return reg;
  }

  /** The invitation, if it makes sense now. */
  async invite() {
    if (!pushSupported() || !this.banner || Notification.permission !== "default") return;
    if (await idbGet("kv", "push-invite-dismissed").catch(() => true)) return;
    const status = h("p", { class: "muted", role: "status" });
    const yes = h("button", { type: "button", class: "primary small" }, t("pushEnable"));
    const later = h("button", { type: "button", class: "ghost small" }, t("pushLater"));
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      status.textContent = await this.enable();
      yes.disabled = false;
      if (Notification.permission !== "default") setTimeout(() => (this.banner.hidden = true), 4000);
    });
    later.addEventListener("click", async () => {
      await idbPut("kv", "push-invite-dismissed", true).catch(() => {});
      this.banner.hidden = true;
    });
    setChildren(
      this.banner,
      h("p", { class: "push-invite-title" }, h("strong", {}, t(this.staff ? "pushInviteTitleStaff" : "pushInviteTitle"))),
      h("p", {}, t("pushInviteText")),
      h("p", { class: "row" }, yes, later),
      status,
    );
    this.banner.hidden = false;
  }

  /** Ask the permission, subscribe, register with the server; a French status line. */
  async enable(prefs = null) {
    if (!pushSupported()) return t("pushUnsupported");
    const permission = await Notification.requestPermission();
    if (permission !== "granted") return t("pushDenied");
    try {
      const reg = await this.registration();
      const { public_key: key } = await this.api.get("/api/push/key");
      let sub = await reg.pushManager.getSubscription();
      if (!sub) sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64decode(key) });
      const json = sub.toJSON();
      const body = { endpoint: json.endpoint, keys: json.keys, ...(prefs || (await this.currentPrefs())) };
      const answer = await this.api.post("/api/push/subscriptions", body);
      this.mine = answer.subscription;
      return t("pushEnabled");
    } catch (err) {
      return err instanceof ApiError ? t("pushRefused", { message: err.message }) : t("pushUnavailable");
    }
  }

  /** Stop notifications on this device. */
  async disable() {
    try {
      const reg = await this.registration();
      const sub = await reg.pushManager.getSubscription();
      if (sub) await sub.unsubscribe();
    } catch {
      // The server side is what matters: without it nothing is sent.
    }
    await this.api.request("DELETE", "/api/push/subscriptions");
    this.mine = null;
    return t("pushDisabled");
  }

  /** `{subscriptions, current}` from the server, and this device's subscription. */
  async list() {
    const answer = await this.api.get("/api/push/subscriptions");
    this.mine = answer.subscriptions.find((s) => s.id === answer.current) || null;
    return answer;
  }

  async currentPrefs() {
    const s = this.mine;
    if (!s) return {};
    return {
      muted_types: s.muted_types,
      quiet_start: s.quiet_start,
      quiet_end: s.quiet_end,
      timezone: s.timezone,
      muted_conversations: s.muted_conversations,
    };
  }

  /** True if `conversation` is muted on this device. */
  isMuted(conversation) {
    return Boolean(this.mine && this.mine.muted_conversations.includes(conversation));
  }

  /** Mute or unmute a conversation on this device (counsellors); a French status line. */
  async toggleMute(conversation) {
    if (!this.mine) await this.list();
    if (!this.mine) return t("pushNotEnabled");
    const prefs = await this.currentPrefs();
    const muted = new Set(prefs.muted_conversations);
    if (muted.has(conversation)) muted.delete(conversation);
    else muted.add(conversation);
    const answer = await this.api.request("PUT", "/api/push/preferences", { ...prefs, muted_conversations: [...muted] });
    this.mine = answer.subscription;
    return this.isMuted(conversation) ? t("pushMuted") : t("pushUnmuted");
  }

  /** The settings dialog. */
  async openSettings() {
    if (!this.dialog) {
      this.dialog = h("dialog", { id: "dlg-notifications", "aria-labelledby": "dlg-notifications-title" });
      document.body.append(this.dialog);
    }
    const dlg = this.dialog;
    let listing = { subscriptions: [], current: null };
    try {
      listing = await this.list();
    } catch {
      // Shown as "off" below; the buttons say why if they fail.
    }
    const on = Boolean(this.mine);
    const prefs = this.mine || { muted_types: [], quiet_start: "20:00", quiet_end: "08:00" };
    const status = h("p", { class: "muted", role: "status", id: "push-status" });
    const types = (this.staff ? STAFF_TYPES : TYPES).map(([value, label]) =>
      h(
        "label",
        { class: "check" },
        h("input", { type: "checkbox", name: "push-type", value, checked: !prefs.muted_types.includes(value) }),
        ` ${t(label)}`,
      ),
    );
    const start = h("input", { type: "time", id: "push-quiet-start", value: prefs.quiet_start, required: true });
    const end = h("input", { type: "time", id: "push-quiet-end", value: prefs.quiet_end, required: true });
    const devices = listing.subscriptions.map((s) =>
      h(
        "li",
        {},
        s.id === listing.current ? t("pushThisDevice") : t("pushOtherDevice", { service: s.push_service }),
        ` — ${t("pushSince", { date: dateLong(s.created_at) })}`,
      ),
    );
    const chosen = () => ({
      muted_types: [...dlg.querySelectorAll("input[name=push-type]")].filter((i) => !i.checked).map((i) => i.value),
      quiet_start: start.value || "20:00",
      quiet_end: end.value || "08:00",
      timezone: "Europe/Paris",
      muted_conversations: this.mine ? this.mine.muted_conversations : [],
    });
    const toggle = h("button", { type: "button", class: on ? "secondary" : "primary", id: "push-toggle" }, on ? t("pushTurnOff") : t("pushTurnOn"));
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      status.textContent = on ? await this.disable().catch(() => t("networkError")) : await this.enable(chosen());
      toggle.disabled = false;
      await this.openSettings();
      $status(dlg).textContent = status.textContent;
    });
    const save = h("button", { type: "submit", class: "primary", hidden: !on }, t("pushSave"));
    const form = h(
      "form",
      { class: "stack", method: "dialog" },
      h("h2", { id: "dlg-notifications-title" }, t("pushSettingsTitle")),
      h("p", {}, t("pushSettingsIntro")),
      h("p", { class: "row" }, h("strong", {}, on ? t("pushStateOn") : t("pushStateOff")), " ", toggle),
      h("fieldset", {}, h("legend", {}, t("pushKinds")), ...types),
      h(
        "fieldset",
        {},
        h("legend", {}, t("pushQuietHours")),
        h("p", { class: "hint", id: "push-quiet-hint" }, t("pushQuietHint")),
        h("label", { for: "push-quiet-start" }, t("pushQuietFrom")),
        start,
        h("label", { for: "push-quiet-end" }, t("pushQuietTo")),
        end,
      ),
      h("h3", {}, t("pushDevices")),
      devices.length ? h("ul", { id: "push-devices" }, ...devices) : h("p", { class: "muted" }, t("pushNoDevice")),
      status,
      h("div", { class: "actions" }, h("button", { type: "button", class: "ghost", "data-close": true }, t("pushClose")), save),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const answer = await this.api.request("PUT", "/api/push/preferences", chosen());
        this.mine = answer.subscription;
        status.textContent = t("pushSaved");
      } catch (err) {
        status.textContent = err instanceof ApiError ? t("pushRefused", { message: err.message }) : t("networkError");
      }
    });
    form.querySelector("[data-close]").addEventListener("click", () => dlg.close());
    setChildren(dlg, form);
    if (!dlg.open) dlg.showModal();
  }
}

function $status(dlg) {
  return dlg.querySelector("#push-status");
}
