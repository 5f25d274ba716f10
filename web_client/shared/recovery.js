/**
 * Renewing the recovery key (docs/security.md, "Renewing the recovery key";
 * the server side is chat_server/tools/devices.py).
 *
 * A backup holds one device's private keys and the recovery key opens it, so
 * a new key comes with a new device identity and the old identity is removed:
 *  1. a clear warning, the password and a confirmation box;
 *  2. this browser makes a new device (keys generated extractable, sealed
 *     into the new backup under a new recovery key, then imported
 *     non-extractable; the raw bytes are wiped), and sends it with the backup
 *     and the password (POST /api/keys/backup/renew): the server registers it
 *     and removes the device the old backup held;
 *  3. this device re-wraps every epoch key it holds for the new device, only
 *     after checking that the server lists it with exactly the keys made here
 *     (the one exception to "the app never re-wraps for anyone": it is this
 *     person's own new identity, made on this device);
 *  4. it opens a session as the new device, stores the new keys, and removes
 *     the old device (DELETE /api/devices/{old}): this browser is now the new
 *     device, and nothing new is ever wrapped for the identity the old key
 *     opens;
 *  5. the new key is shown once; `onDone()` then reloads the page.
 */

import * as C from "./crypto.js";
import { idbPut } from "./idb.js";
import { deviceName } from "./device-name.js";
import { h, setChildren } from "./ui.js";
import { newId } from "./wire.js";

const TEXT = {
  title: "Renouveler ma clé de récupération",
  warning: "Attention : votre clé de récupération actuelle ne fonctionnera plus. Elle ne permettra plus de retrouver vos messages sur un nouvel appareil. Une nouvelle clé sera affichée une seule fois : notez-la et gardez-la en lieu sûr.",
  detail: "Cet appareil reste connecté. Si un autre appareil avait été restauré avec l'ancienne clé, il sera retiré.",
  password: "Mot de passe (pour confirmer)",
  understood: "Je comprends que mon ancienne clé ne fonctionnera plus",
  submit: "Renouveler la clé",
  cancel: "Annuler",
  working: "Renouvellement en cours… Ne fermez pas cette page.",
  wrongPassword: "Mot de passe incorrect.",
  notApproved: "Cet appareil attend encore l'accord de votre conseiller : vous pourrez renouveler votre clé ensuite.",
  failed: "Le renouvellement a échoué : {message}",
  unfinished: "Le renouvellement n'a pas pu se terminer ({message}). Votre ancienne clé ne fonctionne déjà plus : renouvelez à nouveau depuis cet appareil pour obtenir une clé qui ouvre tout votre historique.",
  mustConfirm: "Cochez la case pour confirmer.",
  doneTitle: "Votre nouvelle clé de récupération",
  doneIntro: "Notez cette clé et gardez-la en lieu sûr : elle seule permet de retrouver vos messages sur un nouvel appareil. L'ancienne clé ne fonctionne plus.",
  copy: "Copier",
  copied: "Copiée",
  noted: "J'ai noté ma nouvelle clé de récupération",
  finish: "Terminer",
};

function fmt(key, vars = {}) {
  return TEXT[key].replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}

/**
 * Fill `dialog` with the renewal form and open it. `user` is the account
 * ({ id, login }); `stop()` stops the page's realtime client before the
 * switch; `saveSession(login)` keeps the new session (token, device id) the
 * way the page does; `onDone()` runs after the new key was acknowledged.
 */
export function openRenewDialog(dialog, { api, keys, user, stop, saveSession, onDone }) {
  const titleId = `${dialog.id}-title`;
  const warnId = `${dialog.id}-warning`;
  const pw = h("input", { id: "renew-password", type: "password", autocomplete: "current-password", required: true });
  const box = h("input", { type: "checkbox", id: "renew-understood" });
  const error = h("p", { class: "error", role: "alert" });
  const submit = h("button", { type: "submit", class: "danger" }, TEXT.submit);
  const cancel = h("button", { type: "button", class: "ghost" }, TEXT.cancel);
  cancel.addEventListener("click", () => dialog.close());
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    h("h2", { id: titleId }, TEXT.title),
    h("p", { id: warnId, class: "warning" }, TEXT.warning),
    h("p", {}, TEXT.detail),
    h("label", { for: "renew-password" }, TEXT.password),
    pw,
    h("p", { class: "check" }, box, h("label", { for: "renew-understood" }, TEXT.understood)),
    error,
    h("div", { class: "actions" }, cancel, submit),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    if (!box.checked) {
      error.textContent = TEXT.mustConfirm;
      return;
    }
    if (!pw.value) {
      error.textContent = TEXT.wrongPassword;
      return;
    }
    submit.disabled = true;
    cancel.disabled = true;
    error.textContent = TEXT.working;
    let text;
    try {
      text = await renew({ api, keys, user, password: pw.value, stop, saveSession });
    } catch (err) {
      error.textContent =
        err.code === "wrong_password"
          ? TEXT.wrongPassword
          : err.code === "device_not_approved"
            ? TEXT.notApproved
            : fmt(err.afterAccepted ? "unfinished" : "failed", { message: err.message });
      submit.disabled = false;
      cancel.disabled = false;
      return;
    }
    pw.value = "";
    showNewKey(dialog, text, onDone);
  });
  dialog.setAttribute("aria-labelledby", titleId);
  dialog.setAttribute("aria-describedby", warnId);
  setChildren(dialog, form);
  if (!dialog.open) dialog.showModal();
  pw.focus();
}

function showNewKey(dialog, text, onDone) {
  const titleId = `${dialog.id}-title`;
  const box = h("input", { type: "checkbox", id: "renewed-ok" });
  const finish = h("button", { type: "button", class: "primary", disabled: true }, TEXT.finish);
  box.addEventListener("change", () => {
    finish.disabled = !box.checked;
  });
  const copy = h("button", { type: "button", class: "secondary" }, TEXT.copy);
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      copy.textContent = TEXT.copied;
    } catch {
      /* clipboard refused: the key is on screen */
    }
  });
  finish.addEventListener("click", () => {
    dialog.close();
    onDone();
  });
  // Escape must not hide the only copy of the key before it was acknowledged.
  dialog.addEventListener("cancel", (e) => {
    if (!box.checked) e.preventDefault();
  });
  dialog.removeAttribute("aria-describedby");
  setChildren(
    dialog,
    h("h2", { id: titleId, tabindex: "-1" }, TEXT.doneTitle),
    h("p", {}, TEXT.doneIntro),
    h("p", { class: "recovery-key", id: "renewed-key" }, text),
    copy,
    h("p", { class: "check" }, box, h("label", { for: "renewed-ok" }, TEXT.noted)),
    h("div", { class: "actions" }, finish),
  );
  dialog.querySelector("h2").focus();
}

/** Steps 2 to 4 of the module; returns the new recovery key's text. */
async function renew({ api, keys, user, password, stop, saveSession }) {
  const oldDevice = keys.deviceId;
  const deviceId = newId(16);
  const generated = await C.generateDeviceKeys({ extractable: true });
  const { dhPriv, sigPriv } = await C.exportDevicePrivate(generated);
  const recoveryKey = C.generateRecoveryKey();
  let fresh;
  let text;
  try {
    const payload = {
      v: 1,
      user_id: user.id,
      devices: [{ device_id: deviceId, dh_priv: C.b64encode(dhPriv), sig_priv: C.b64encode(sigPriv) }],
      epoch_keys: [],
    };
    const backup = await C.sealBackup(recoveryKey, user.id, payload);
    fresh = await C.importDeviceKeys({ dhPriv, sigPriv }, { extractable: false });
    const regSig = await C.signRegistration(fresh, user.id, deviceId);
    const device = {
      device_id: deviceId,
      dh_pub: C.b64encode(fresh.dhPublic),
      sig_pub: C.b64encode(fresh.sigPublic),
      registration_sig: C.b64encode(regSig),
      name: deviceName(),
    };
    await api.renewRecovery(password, device, backup);
    text = C.formatRecoveryKey(recoveryKey);
  } finally {
    dhPriv.fill(0);
    sigPriv.fill(0);
    recoveryKey.fill(0);
  }
  // The server took the new backup: the old key already opens nothing. A failure
  // from here on says so (err.afterAccepted), and renewing again finishes the job.
  try {
    const conversations = (await api.conversations()).conversations || [];
    for (const conv of conversations) {
      const listed = await keys.listedDevice(conv.id, deviceId);
      // Only to the keys made here: the server cannot slip in another device.
      if (!listed || !C.bytesEqual(listed.dhPub, fresh.dhPublic) || !C.bytesEqual(listed.sigPub, fresh.sigPublic)) {
        throw new Error("le nouvel appareil n'est pas listé avec ses clés");
      }
      await keys.rewrapFor(conv.id, deviceId);
    }
    if (stop) stop();
    const login = await api.login(user.login, password, deviceId);
    api.token = login.token;
    await idbPut("devices", user.id, { userId: user.id, deviceId, ...fresh, createdAt: Date.now() / 1000 });
    await idbPut("logins", user.login.toLowerCase(), deviceId);
    await saveSession(login);
    await api.removeDevice(oldDevice);
  } catch (err) {
    throw Object.assign(err instanceof Error ? err : new Error(String(err)), { afterAccepted: true });
  }
  return text;
}
