/**
 * Onboarding in the console (issue #15, point 3): the activation dialog (login,
 * code, expiry, a link and a QR code made on this device, a printable sheet)
 * and issuing a new code for the open conversation's beneficiary, which also
 * resets a forgotten password (POST /api/conversations/{id}/activation). The
 * code is made here (shared/activation.js): the server gets its proof only,
 * and before activation a new activation box carries the keys of what was
 * already written, so the first phone reads it at once.
 */

import { longTime } from "../shared/i18n.js";
import { $, setChildren } from "../shared/ui.js";
import { qrSvg } from "../shared/qr.js";
import { errorText } from "../shared/errors.js";
import { derive, newCode, resealActivationBox } from "../shared/activation.js";

/** The app's address with the code filled in (the app reads `?code=`). */
export function activationLink(code) {
  return `${location.origin}/app/?code=${encodeURIComponent(code)}`;
}

const TITLES = {
  created: (name) => `Compte créé pour ${name}`,
  reissue: (name) => `Nouveau code d'activation pour ${name}`,
  password_reset: (name) => `Nouveau mot de passe pour ${name}`,
};
const KIND_TEXT = {
  created: "Transmettez ce code au bénéficiaire : il s'en sert une seule fois pour activer son compte.",
  reissue: "L'ancien code ne fonctionne plus. Transmettez celui-ci au bénéficiaire.",
  password_reset: "Le compte était déjà activé : avec ce code, le bénéficiaire choisit un nouveau mot de passe. L'ancien reste valable jusque-là.",
};

/** Fill and open the activation dialog. `issued`: {user, activation_code, activation_expires, kind?}. */
export function showActivation(issued) {
  const kind = issued.kind || "created";
  const name = issued.user.display_name || issued.user.login;
  const link = activationLink(issued.activation_code);
  $("#dlg-code-title").textContent = TITLES[kind](name);
  $("#activation-kind").textContent = KIND_TEXT[kind];
  $("#activation-name").textContent = name;
  $("#activation-login").textContent = issued.user.login;
  $("#activation-code").textContent = issued.activation_code;
  $("#activation-expires").textContent = longTime(issued.activation_expires);
  const anchor = $("#activation-link");
  anchor.href = link;
  anchor.textContent = link;
  setChildren($("#activation-qr"), qrSvg(link, { label: `QR code du lien d'activation de ${name}` }));
  $("#activation-status").textContent = "";
  const dialog = $("#dlg-code");
  if (!dialog.open) dialog.showModal();
}

/** Wire the dialog's buttons and the thread's "Code d'activation" button once. */
export function bindOnboarding({ api, keys, currentConversation, peerName }) {
  $("#btn-copy-link").addEventListener("click", async () => {
    const status = $("#activation-status");
    try {
      await navigator.clipboard.writeText($("#activation-link").href);
      status.textContent = "Lien copié.";
    } catch {
      status.textContent = "Copie impossible : sélectionnez le lien à la main.";
    }
  });
  $("#btn-print-sheet").addEventListener("click", () => {
    document.body.classList.add("printing-sheet");
    window.print();
  });
  window.addEventListener("afterprint", () => document.body.classList.remove("printing-sheet"));
  $("#btn-reissue").addEventListener("click", () => {
    $("#reissue-error").textContent = "";
    $("#reissue-who").textContent = `Bénéficiaire : ${peerName()}`;
    $("#dlg-reissue").showModal();
  });
  $("#reissue-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = event.target.querySelector("[type=submit]");
    submit.disabled = true;
    try {
      // Made here, as at creation: the server gets only the proof; before
      // activation a new box carries the keys of what was already written.
      const conversation = currentConversation();
      const code = newCode();
      const made = await derive(code);
      const issued = await api.post(`/api/conversations/${encodeURIComponent(conversation)}/activation`, { activation_proof: made.proofText });
      if (issued.kind === "reissue") {
        try {
          await resealActivationBox(keys(), api, conversation, made.boxKey);
        } catch (err) {
          console.warn("activation box not left", err.message);
        }
      }
      $("#dlg-reissue").close();
      showActivation({ ...issued, activation_code: issued.activation_code || code });
    } catch (err) {
      $("#reissue-error").textContent = errorText(err);
    } finally {
      submit.disabled = false;
    }
  });
}

/** Show the thread's button only to the beneficiary's current counsellor, while the thread is writable. */
export function renderReissueButton(summary, me) {
  $("#btn-reissue").hidden = !summary || me.role !== "counsellor" || summary.counsellor_id !== me.id || Boolean(summary.archived || summary.deleted_at);
}

const LOGIN_RE = /^[\p{L}\p{N}._@-]{2,64}$/u;

/** A login the server will accept (accounts._check_login), checked before sending. */
export function loginProblem(login) {
  return LOGIN_RE.test(login) ? "" : errorText({ code: "invalid_login" });
}
