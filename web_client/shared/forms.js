/**
 * The dialogs of the accompaniment thread, shared by the console and the app:
 * share an offer, create or change an action, comment it, set or change an
 * appointment, edit and delete a message, the counsellor's notice. Each is a
 * modal <dialog> built here (labels tied to their fields, errors in a
 * role="alert" paragraph, Escape closes), removed when closed. Every check a
 * device can make happens before sending (items.js); what is sent goes
 * through the chat client's outbox, so it survives a lost connection.
 */

import { t } from "./i18n.js";
import { h } from "./ui.js";
import {
  APPOINTMENT_KINDS,
  FormError,
  LIMITS,
  OFFER_KINDS,
  appointmentKindText,
  buildAction,
  buildActionChange,
  buildAppointment,
  buildComment,
  buildNotice,
  buildOffer,
  buildStatusChange,
  dateInput,
  nowSeconds,
  offerKindText,
  statusText,
  timeInput,
} from "./items.js";
import { newId } from "./wire.js";

let counter = 0;

/**
 * Open a modal form. `fields`: [{name, label, type, options?: [[value, label]],
 * value?, required?, max?}]. `onSubmit(values)` may throw FormError (shown
 * next to its field) or return a promise; the dialog closes when it resolves.
 */
export function formDialog({ title, intro = "", fields, submitText, onSubmit, extra = null }) {
  counter += 1;
  const prefix = `f${counter}`;
  const titleId = `${prefix}-heading`;
  const error = h("p", { class: "error", role: "alert" });
  const inputs = new Map();
  const rows = fields.map((f) => {
    const id = `${prefix}-${f.name}`;
    let input;
    if (f.type === "textarea") {
      input = h("textarea", { id, name: f.name, rows: 3, maxlength: f.max || null });
      input.value = f.value || "";
    } else if (f.type === "select") {
      input = h("select", { id, name: f.name }, ...f.options.map(([value, label]) => h("option", { value }, label)));
      if (f.value) input.value = f.value;
    } else {
      input = h("input", { id, name: f.name, type: f.type || "text", maxlength: f.max || null, min: f.min || null, autocomplete: "off" });
      input.value = f.value ?? "";
    }
    if (f.required) input.setAttribute("aria-required", "true");
    inputs.set(f.name, input);
    return [h("label", { for: id }, f.label), input];
  });
  const cancel = h("button", { type: "button", class: "ghost" }, t("cancel"));
  const submit = h("button", { type: "submit", class: "primary" }, submitText);
  const form = h(
    "form",
    { class: "stack", novalidate: true },
    h("h2", { id: titleId }, title),
    intro ? h("p", { class: "muted" }, intro) : null,
    ...rows,
    extra,
    error,
    h("div", { class: "actions" }, cancel, submit),
  );
  const dialog = h("dialog", { "aria-labelledby": titleId, class: "item-dialog" }, form);
  cancel.addEventListener("click", () => dialog.close());
  dialog.addEventListener("close", () => dialog.remove());
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    for (const input of inputs.values()) input.removeAttribute("aria-invalid");
    const values = Object.fromEntries([...inputs].map(([name, input]) => [name, input.value]));
    submit.disabled = true;
    try {
      await onSubmit(values);
      dialog.close();
    } catch (err) {
      error.textContent = err.message;
      const input = err instanceof FormError ? inputs.get(err.field) : null;
      if (input) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", error.id || (error.id = `${prefix}-error`));
        input.focus();
      }
    } finally {
      submit.disabled = false;
    }
  });
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}

/** A yes/no question as a modal dialog; resolves true when confirmed. */
export function confirmDialog(text, confirmText, { danger = true } = {}) {
  return new Promise((resolve) => {
    counter += 1;
    const id = `c${counter}-text`;
    let answer = false;
    const no = h("button", { type: "button", class: "ghost" }, t("cancel"));
    const yes = h("button", { type: "button", class: danger ? "danger" : "primary" }, confirmText);
    const dialog = h("dialog", { "aria-labelledby": id, role: "alertdialog" }, h("p", { id }, text), h("div", { class: "actions" }, no, yes));
    no.addEventListener("click", () => dialog.close());
    yes.addEventListener("click", () => {
      answer = true;
      dialog.close();
    });
    dialog.addEventListener("close", () => {
      dialog.remove();
      resolve(answer);
    });
    document.body.append(dialog);
    dialog.showModal();
    no.focus();
  });
}

export function openOfferDialog(chat, conversation) {
  return formDialog({
    title: t("shareOffer"),
    submitText: t("shareOffer"),
    fields: [
      { name: "kind", label: t("fKind"), type: "select", options: OFFER_KINDS.map((k) => [k, offerKindText(k)]) },
      { name: "title", label: t("fTitle"), required: true, max: LIMITS.title },
      { name: "company", label: t("fCompany"), max: LIMITS.company },
      { name: "place", label: t("fPlace"), max: LIMITS.place },
      { name: "url", label: t("fUrl"), type: "url", max: LIMITS.url },
      { name: "note", label: t("fNote"), type: "textarea", max: LIMITS.note },
    ],
    onSubmit: (v) => {
      const { content, meta } = buildOffer(v);
      return chat.send(conversation, "offer", content, meta);
    },
  });
}

export function openActionDialog(chat, conversation, existing = null) {
  const tomorrow = dateInput(nowSeconds() + 7 * 86400);
  return formDialog({
    title: existing ? t("changeAction") : t("newAction"),
    submitText: existing ? t("save") : t("newAction"),
    fields: [
      { name: "title", label: t("fTitle"), required: true, max: LIMITS.title, value: existing?.content?.title || "" },
      { name: "description", label: t("fDescription"), type: "textarea", max: LIMITS.note, value: existing?.content?.description || "" },
      { name: "due", label: t("fDue"), type: "date", required: true, value: existing?.due ? dateInput(existing.due) : tomorrow },
      ...(existing
        ? []
        : [{ name: "status", label: t("fStatus"), type: "select", options: ["todo", "in_progress"].map((s) => [s, statusText(s)]) }]),
    ],
    onSubmit: (v) => {
      if (existing) {
        const { content, meta } = buildActionChange(v, existing.id);
        return chat.send(conversation, "action", content, meta);
      }
      const item = newId();
      const { content, meta } = buildAction(v, item);
      return chat.send(conversation, "action", content, meta, item);
    },
  });
}

export function openCommentDialog(chat, conversation, item) {
  return formDialog({
    title: t("commentAction"),
    intro: item.content?.title ? `« ${item.content.title} »` : "",
    submitText: t("send"),
    fields: [{ name: "text", label: t("fComment"), type: "textarea", required: true, max: LIMITS.text }],
    onSubmit: (v) => {
      const { content, meta } = buildComment(v.text, item.id);
      return chat.send(conversation, "action", content, meta);
    },
  });
}

export function setActionStatus(chat, conversation, item, to) {
  const { content, meta } = buildStatusChange(item.id, item.status, to);
  return chat.send(conversation, "action", content, meta);
}

export function openAppointmentDialog(chat, conversation, existing = null) {
  const start = existing?.startsAt || nowSeconds() + 2 * 86400;
  const c = existing?.content || {};
  return formDialog({
    title: existing ? t("changeAppointment") : t("newAppointment"),
    submitText: existing ? t("save") : t("newAppointment"),
    fields: [
      { name: "kind", label: t("fKind"), type: "select", options: APPOINTMENT_KINDS.map((k) => [k, appointmentKindText(k)]), value: c.kind },
      { name: "title", label: t("fTitle"), max: LIMITS.title, value: c.title || "" },
      { name: "date", label: t("fDate"), type: "date", required: true, value: dateInput(start) },
      { name: "time", label: t("fTime"), type: "time", required: true, value: existing ? timeInput(start) : "10:00" },
      { name: "duration", label: t("fDuration"), type: "number", required: true, value: String(c.duration || 30), min: 5 },
      { name: "place", label: t("fPlace"), max: LIMITS.place, value: c.place || "" },
      { name: "visio", label: t("fVisio"), type: "url", max: LIMITS.url, value: c.visio || "" },
      { name: "note", label: t("fNote"), type: "textarea", max: LIMITS.note, value: c.note || "" },
    ],
    onSubmit: (v) => {
      if (existing) {
        const { content, meta } = buildAppointment(v, existing.id, "changed");
        return chat.send(conversation, "appointment", content, meta);
      }
      const item = newId();
      const { content, meta } = buildAppointment(v, item);
      return chat.send(conversation, "appointment", content, meta, item);
    },
  });
}

export async function cancelAppointment(chat, conversation, item, peerName) {
  if (!(await confirmDialog(t("cancelAppointmentConfirm", { name: peerName }), t("cancelAppointment")))) return null;
  return chat.send(conversation, "appointment", {}, { item: item.id, event: "cancelled" });
}

export function answerAppointment(chat, conversation, item, yes) {
  return chat.send(conversation, "appointment", { answer: yes ? "yes" : "no" }, { item: item.id, event: "answered" });
}

export function openEditDialog(chat, conversation, message, currentText) {
  return formDialog({
    title: t("editMessage"),
    submitText: t("save"),
    fields: [{ name: "text", label: t("messageLabel"), type: "textarea", required: true, max: LIMITS.text, value: currentText }],
    onSubmit: (v) => {
      const text = (v.text || "").trim();
      if (!text) throw new FormError("text", t("fieldRequired", { label: t("messageLabel") }));
      if (text.length > LIMITS.text) throw new FormError("text", t("fieldTooLong", { label: t("messageLabel"), max: LIMITS.text }));
      return chat.send(conversation, "edit", { text }, { target_seq: message.seq });
    },
  });
}

export async function deleteMessage(chat, conversation, message) {
  if (!(await confirmDialog(t("deleteConfirm"), t("delete")))) return null;
  return chat.send(conversation, "delete", {}, { target_seq: message.seq });
}

/**
 * The counsellor's notice: one encrypted copy in each of `conversations`.
 * `lift`: a notice that ends now (the banner goes away at once).
 */
export function openNoticeDialog(chat, conversations, onDone) {
  const today = dateInput(nowSeconds());
  const lift = h("button", { type: "button", class: "secondary" }, t("noticeLift"));
  const dialog = formDialog({
    title: t("noticeTitle"),
    intro: t("noticeIntro"),
    submitText: t("noticeSend"),
    fields: [
      { name: "text", label: t("fNoticeText"), type: "textarea", required: true, max: LIMITS.note },
      { name: "start", label: t("fStart"), type: "date", required: true, value: today },
      { name: "end", label: t("fEnd"), type: "date", required: true, value: today },
    ],
    extra: h("p", {}, lift),
    onSubmit: async (v) => {
      const { content, meta } = buildNotice(v);
      for (const conv of conversations) await chat.send(conv, "notice", content, meta);
      onDone(t("noticeSent", { n: conversations.length }));
    },
  });
  lift.addEventListener("click", async () => {
    const now = nowSeconds();
    for (const conv of conversations) await chat.send(conv, "notice", { text: "" }, { starts_at: now, ends_at: now });
    dialog.close();
    onDone(t("noticeLifted", { n: conversations.length }));
  });
  return dialog;
}
