/**
 * After a login: make sure this browser has a registered device with keys.
 *
 *  - keys already here and registered: go on;
 *  - no keys here and no backup on the server (first device): create them,
 *    register, store the backup, show the recovery key once;
 *  - no keys here and a backup exists (new browser or phone): restore with
 *    the recovery key (this browser becomes the backed-up device: a new
 *    session is opened with its device id), or start as a new device and
 *    wait for a re-share (a new recovery key then replaces the old one).
 */

import { KeyManager, KeyError } from "./e2ee.js";
import { ApiError } from "./api.js";
import { idbPut } from "./idb.js";
import { b64encode } from "./b64.js";
import { newId } from "./wire.js";
import { h, setChildren } from "./ui.js";
import { t } from "./i18n.js";

/**
 * Resolve with { keys, login } where `login` is the (possibly renewed)
 * login answer. `relogin(deviceId, password)` opens a session bound to
 * another device id; `showSetup()` makes `container` visible.
 */
export async function ensureDevice({ api, login, password, container, showSetup, relogin }) {
  const keys = new KeyManager({ api, userId: login.user.id, deviceId: login.device_id, role: login.user.role });
  const hasKeys = await keys.load();
  const onServer = await keys.serverDevice();
  if (hasKeys && onServer && onServer.sig_pub === b64encode(keys.device.sigPublic)) return { keys, login, fresh: false };
  if (onServer && password) {
    // This device id is registered but its keys are not in this browser (storage
    // cleared): it can never be registered again, so open a session for a new one.
    const renewed = await relogin(newId(16), password);
    await api.logout().catch(() => {});
    api.token = renewed.token;
    await idbPut("logins", login.user.login.toLowerCase(), renewed.device_id);
    return ensureDevice({ api, login: renewed, password, container, showSetup, relogin });
  }
  showSetup();
  const backup = await keys.serverBackup();
  if (backup) {
    const restored = await askRestore(container, keys, password);
    if (restored) {
      const renewed = await relogin(restored.deviceId, restored.password);
      await api.logout().catch(() => {});
      api.token = renewed.token;
      await idbPut("logins", login.user.login.toLowerCase(), renewed.device_id);
      // This browser is now the backed-up device: same id, same keys, as the
      // server has it registered, so the envelopes addressed to it open again.
      const again = new KeyManager({ api, userId: renewed.user.id, deviceId: renewed.device_id, role: renewed.user.role });
      const registered = (await again.load()) ? await again.serverDevice() : null;
      if (!registered || registered.sig_pub !== b64encode(again.device.sigPublic) || registered.dh_pub !== b64encode(again.device.dhPublic)) {
        throw new KeyError("restore_mismatch", "the restored device is not the one registered on the server");
      }
      return { keys: again, login: renewed, fresh: false };
    }
  }
  const text = await createKeys(container, keys);
  await showRecoveryKey(container, text);
  return { keys, login, fresh: true };
}

function panel(container, title, intro, ...body) {
  const heading = h("h1", { id: "setup-title", tabindex: "-1" }, title);
  setChildren(container, h("div", { class: "card" }, heading, intro ? h("p", {}, intro) : null, ...body));
  heading.focus();
}

async function createKeys(container, keys) {
  panel(container, t("deviceSetupTitle"), t("deviceSetupIntro"), h("p", { role: "status" }, t("deviceWorking")));
  try {
    return await keys.setup();
  } catch (err) {
    if (err instanceof ApiError && err.code === "device_exists") throw new KeyError("device_conflict", err.message);
    throw err;
  }
}

function showRecoveryKey(container, text) {
  return new Promise((resolve) => {
    const box = h("input", { type: "checkbox", id: "recovery-ok" });
    const next = h("button", { type: "submit", class: "primary", disabled: true }, t("continue"));
    box.addEventListener("change", () => {
      next.disabled = !box.checked;
    });
    const copyBtn = h("button", { type: "button", class: "secondary" }, t("copy"));
    copyBtn.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(text);
        copyBtn.textContent = t("copied");
      } catch {
        /* clipboard refused: the key is on screen */
      }
    });
    const form = h(
      "form",
      { class: "stack" },
      h("p", { class: "recovery-key", id: "recovery-key", "aria-label": t("recoveryKey") }, text),
      copyBtn,
      h("p", { class: "check" }, box, h("label", { for: "recovery-ok" }, t("recoveryConfirm"))),
      next,
    );
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      if (!box.checked) return;
      setChildren(container);
      resolve();
    });
    panel(container, t("recoveryShowTitle"), t("recoveryShowIntro"), form);
  });
}

function askRestore(container, keys, knownPassword) {
  return new Promise((resolve) => {
    const error = h("p", { class: "error", role: "alert" });
    const keyInput = h("input", { id: "restore-key", name: "recovery", autocomplete: "off", spellcheck: "false", required: true, class: "mono" });
    const pwInput = knownPassword
      ? null
      : h("input", { id: "restore-password", type: "password", autocomplete: "current-password", required: true });
    const submit = h("button", { type: "submit", class: "primary" }, t("restore"));
    const form = h(
      "form",
      { class: "stack" },
      h("label", { for: "restore-key" }, t("recoveryKey")),
      keyInput,
      pwInput ? h("label", { for: "restore-password" }, t("password")) : null,
      pwInput,
      error,
      submit,
    );
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.textContent = "";
      try {
        const deviceId = await keys.restore(keyInput.value);
        resolve({ deviceId, password: knownPassword || pwInput.value });
      } catch (err) {
        error.textContent = err instanceof KeyError && err.code === "bad_recovery_key" ? t("restoreFailed") : t("genericError", { message: err.message });
        submit.disabled = false;
      }
    });
    const without = h("button", { type: "button", class: "secondary" }, t("noRecoveryKey"));
    without.addEventListener("click", () => {
      const go = h("button", { type: "button", class: "primary" }, t("continueWithoutKey"));
      go.addEventListener("click", () => resolve(null));
      const back = h("button", { type: "button", class: "secondary" }, t("cancel"));
      back.addEventListener("click", () => askRestore(container, keys, knownPassword).then(resolve));
      panel(container, t("noRecoveryKey"), t("noRecoveryKeyIntro"), h("div", { class: "row" }, go, back));
    });
    panel(container, t("restoreTitle"), t("restoreIntro"), form, without);
  });
}
