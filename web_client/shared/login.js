/**
 * Login steps shared by the console and the app: the remembered device id
 * per login name, the error texts, device set-up after a login, and the
 * page start-up wiring.
 */

import { ApiError } from "./api.js";
import { ensureDevice } from "./session.js";
import { idbGet, idbPut } from "./idb.js";
import { t } from "./i18n.js";
import { $, showScreen } from "./ui.js";
import { newId } from "./wire.js";

/**
 * Log in with the device id this browser used before for `name` (a new one
 * otherwise), keep the token on `api` and remember the device id.
 */
export async function loginRemembered(api, name, password) {
  const deviceId = (await idbGet("logins", name.toLowerCase())) || newId(16);
  const login = await api.login(name, password, deviceId);
  api.token = login.token;
  await idbPut("logins", name.toLowerCase(), login.device_id);
  return login;
}

/**
 * The French text for a failed login or activation: `unauthenticatedText`
 * for a 401; `invalidInputText`, when given, for an `invalid_input` refusal.
 */
export function loginError(err, unauthenticatedText, invalidInputText = null) {
  if (err instanceof ApiError) {
    if (err.status === 401) return unauthenticatedText;
    if (err.status === 429) return t("tooManyAttempts");
    if (err.status === 0) return t("networkError");
    if (invalidInputText !== null && err.code === "invalid_input") return invalidInputText;
  }
  return t("genericError", { message: err.message });
}

/** ensureDevice with the page's #screen-setup. */
export function setUpDevice(api, login, password) {
  return ensureDevice({
    api,
    login,
    password,
    container: $("#screen-setup"),
    showSetup: () => showScreen("screen-setup"),
    relogin: (deviceId, pw) => api.login(login.user.login, pw, deviceId),
  });
}

/** Every dialog's [data-close] button closes its dialog. */
export function bindDialogClose() {
  for (const btn of document.querySelectorAll("dialog [data-close]")) {
    btn.addEventListener("click", () => btn.closest("dialog").close());
  }
}

/** An error at start-up: back to the login screen with its text. */
export function showStartError(err) {
  showScreen("screen-login");
  $("#login-error").textContent = t("genericError", { message: err.message });
}

/** Log out on the server (the session ends on this side anyway), then `clear()` and reload. */
export async function logoutAndReload(api, chat, clear) {
  if (chat) chat.stop();
  try {
    await api.logout();
  } catch {
    /* the session ends anyway on this side */
  }
  await clear();
  location.reload();
}

/**
 * The login form's submit handler: check the fields, log in with the
 * remembered device id, then `enter(login, password)`. `busy` disables the
 * submit button while it runs; `invalidInputText` as for loginError.
 */
export function loginSubmitHandler(api, enter, { busy = false, invalidInputText = null } = {}) {
  return async (event) => {
    event.preventDefault();
    const error = $("#login-error");
    error.textContent = "";
    const name = $("#login-name").value.trim();
    const password = $("#login-password").value;
    if (!name || !password) {
      error.textContent = t("loginFailed");
      return;
    }
    const button = busy ? event.target.querySelector("button[type=submit]") : null;
    if (button) {
      button.disabled = true;
      button.textContent = t("signingIn");
    }
    try {
      const login = await loginRemembered(api, name, password);
      $("#login-password").value = "";
      await enter(login, password);
    } catch (err) {
      api.token = null;
      showScreen("screen-login");
      error.textContent = loginError(err, t("loginFailed"), invalidInputText);
    } finally {
      if (button) {
        button.disabled = false;
        button.textContent = t("signIn");
      }
    }
  };
}
