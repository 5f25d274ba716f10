/**
 * "Mes appareils": the person's own devices (name, when added, last login,
 * which one is this one), removing one after a confirmation, and the ways to
 * the safety number and to renewing the recovery key. Shared by the app
 * (menu "Mes appareils et ma clé") and the console ("Sécurité").
 *
 * The server answers GET /api/devices with the caller's devices only and
 * DELETE /api/devices/{id} removes only one of the caller's own devices: its
 * sessions end at once (its open pages are logged out), and every
 * conversation gets a new epoch the removed device is not given
 * (docs/protocol.md, "Devices").
 */

import { dateLong, longTime } from "./i18n.js";
import { h, setChildren } from "./ui.js";

const TEXT = {
  title: "Mes appareils",
  intro: "Les appareils connectés à votre compte. Retirez celui que vous n'utilisez plus ou que vous ne reconnaissez pas : il sera déconnecté et ne pourra plus lire les nouveaux messages.",
  loading: "Chargement…",
  unnamed: "Appareil sans nom",
  thisDevice: "Cet appareil",
  added: "Ajouté le {date}",
  lastLogin: "Dernière connexion le {when}",
  remove: "Retirer",
  removeLabel: "Retirer l'appareil « {name} »",
  confirm: "Retirer « {name} » ? Il sera déconnecté tout de suite et ne pourra plus lire les nouveaux messages.",
  confirmYes: "Oui, retirer",
  cancel: "Annuler",
  removed: "L'appareil « {name} » a été retiré.",
  failed: "Impossible de retirer cet appareil : {message}",
  loadFailed: "Impossible d'afficher vos appareils : {message}",
  safety: "Voir le numéro de sécurité",
  renew: "Renouveler ma clé de récupération",
  close: "Fermer",
  technical: "Identifiant technique de cet appareil : ",
};

function fmt(key, vars = {}) {
  return TEXT[key].replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

/**
 * Fill `dialog` with the device list and open it (showModal).
 * `onSafety()` and `onRenew()`, when given, add their buttons (the dialog
 * closes first); `showId` adds this device's technical id (the console).
 */
export async function openDevicesDialog(dialog, { api, keys, onSafety = null, onRenew = null, showId = false }) {
  const titleId = `${dialog.id}-title`;
  const list = h("ul", { class: "device-list", "aria-labelledby": titleId });
  const status = h("p", { class: "device-status", role: "status" });
  const close = h("button", { type: "button", class: "primary" }, TEXT.close);
  close.addEventListener("click", () => dialog.close());
  const more = [];
  for (const [fn, label] of [[onSafety, TEXT.safety], [onRenew, TEXT.renew]]) {
    if (!fn) continue;
    const btn = h("button", { type: "button", class: "secondary" }, label);
    btn.addEventListener("click", () => {
      dialog.close();
      fn();
    });
    more.push(btn);
  }
  dialog.setAttribute("aria-labelledby", titleId);
  setChildren(
    dialog,
    h("h2", { id: titleId }, TEXT.title),
    h("p", {}, TEXT.intro),
    showId ? h("p", { class: "muted" }, TEXT.technical, h("span", { id: "this-device", class: "mono" }, keys.deviceId)) : null,
    list,
    status,
    more.length ? h("div", { class: "stack device-more" }, ...more) : null,
    h("div", { class: "actions" }, close),
  );
  if (!dialog.open) dialog.showModal();
  await renderList(list, status, api, keys);
}

async function renderList(list, status, api, keys) {
  setChildren(list, h("li", {}, TEXT.loading));
  let devices;
  try {
    devices = (await api.myDevices()).devices || [];
  } catch (err) {
    setChildren(list, h("li", { class: "error" }, fmt("loadFailed", { message: err.message })));
    return;
  }
  // This device first, then the most recently used.
  devices.sort((a, b) => Number(b.device_id === keys.deviceId) - Number(a.device_id === keys.deviceId) || (b.last_login_at || 0) - (a.last_login_at || 0));
  setChildren(list, ...devices.map((d) => deviceItem(d, list, status, api, keys)));
}

function deviceItem(d, list, status, api, keys) {
  const mine = d.device_id === keys.deviceId;
  const name = d.name || TEXT.unnamed;
  const dates = [d.created_at ? fmt("added", { date: dateLong(d.created_at) }) : "", d.last_login_at ? fmt("lastLogin", { when: longTime(d.last_login_at) }) : ""].filter(Boolean).join(" · ");
  const item = h(
    "li",
    { class: "device", dataset: { device: d.device_id } },
    h("p", { class: "device-name" }, h("strong", {}, name), mine ? h("span", { class: "badge" }, TEXT.thisDevice) : null),
    dates ? h("p", { class: "muted device-dates" }, dates) : null,
  );
  if (mine) return item;
  const actions = h("div", { class: "row device-actions" });
  const ask = h("button", { type: "button", class: "danger", "aria-label": fmt("removeLabel", { name }) }, TEXT.remove);
  ask.addEventListener("click", () => {
    const yes = h("button", { type: "button", class: "danger" }, TEXT.confirmYes);
    const no = h("button", { type: "button", class: "ghost" }, TEXT.cancel);
    const question = h("p", { class: "warning", role: "alert" }, fmt("confirm", { name }));
    no.addEventListener("click", () => {
      question.remove();
      setChildren(actions, ask);
      ask.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = true;
      no.disabled = true;
      try {
        await api.removeDevice(d.device_id);
        status.textContent = fmt("removed", { name });
        await renderList(list, status, api, keys);
      } catch (err) {
        status.textContent = fmt("failed", { message: err.message });
        yes.disabled = false;
        no.disabled = false;
      }
    });
    item.insertBefore(question, actions);
    setChildren(actions, no, yes);
    no.focus();
  });
  actions.append(ask);
  item.append(actions);
  return item;
}
