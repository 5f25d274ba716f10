/**
 * The accompaniment thread's structured messages, without the DOM:
 * bodies (what is encrypted) and meta (what the server sees) of offers,
 * actions, appointments and notices; the checks a device makes before
 * sending (docs/protocol.md, "Items"; the server repeats those it can see);
 * the fold of a thread's messages into item states, edits and deletions;
 * the French wording of statuses, kinds and previews.
 */

import { t } from "./i18n.js";

export const OFFER_KINDS = ["emploi", "alternance", "immersion", "service_civique", "evenement"];
export const ACTION_STATUSES = ["todo", "in_progress", "done", "cancelled"];
export const APPOINTMENT_KINDS = ["individuel", "atelier", "information_collective"];
/** Same transitions as the server (chat_server/rooms/items.py). */
export const ACTION_TRANSITIONS = {
  todo: ["in_progress", "done", "cancelled"],
  in_progress: ["todo", "done", "cancelled"],
  done: ["in_progress"],
  cancelled: ["todo"],
};
export const LIMITS = { title: 120, company: 120, place: 200, url: 500, note: 2000, text: 4000 };
const DAY = 86400;
const MAX_AHEAD = 2 * 366 * DAY;
const SKEW = 300;

/** Unix seconds now (Date.now, so a test's controlled clock applies). */
export function nowSeconds() {
  return Math.floor(Date.now() / 1000);
}

/** True for an absolute http(s) URL (the only links the apps open). */
export function safeUrl(text) {
  if (!text || text.length > LIMITS.url) return null;
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

export class FormError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

function need(value, field, label, max) {
  const v = (value || "").trim();
  if (!v) throw new FormError(field, t("fieldRequired", { label }));
  if (v.length > max) throw new FormError(field, t("fieldTooLong", { label, max }));
  return v;
}

function optional(value, field, label, max) {
  const v = (value || "").trim();
  if (v.length > max) throw new FormError(field, t("fieldTooLong", { label, max }));
  return v;
}

function checkDate(seconds, field, { pastOk = false } = {}) {
  if (!Number.isFinite(seconds)) throw new FormError(field, t("dateRequired"));
  const now = nowSeconds();
  if (!pastOk && seconds < now - SKEW) throw new FormError(field, t("dateInPast"));
  if (seconds > now + MAX_AHEAD) throw new FormError(field, t("dateTooFar"));
}

/** Seconds of a local date ("2026-12-03") at the end of that day (a due date). */
export function endOfDay(dateText) {
  if (!dateText) return NaN;
  const d = new Date(`${dateText}T23:59:59`);
  return Math.floor(d.getTime() / 1000);
}

/** Seconds of a local date at the start of that day. */
export function startOfDay(dateText) {
  if (!dateText) return NaN;
  return Math.floor(new Date(`${dateText}T00:00:00`).getTime() / 1000);
}

/** Seconds of a local date and time ("2026-12-03", "14:30"). */
export function dateTime(dateText, timeText) {
  if (!dateText || !timeText) return NaN;
  return Math.floor(new Date(`${dateText}T${timeText}:00`).getTime() / 1000);
}

/** "2026-12-03" for seconds, in the browser's time zone (form defaults). */
export function dateInput(seconds) {
  const d = new Date(seconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export function timeInput(seconds) {
  const d = new Date(seconds * 1000);
  return `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
}

// ---------------------------------------------------------------- building messages

/** An offer from the form's values: {content, meta}. Throws FormError. */
export function buildOffer(v) {
  const content = {
    title: need(v.title, "title", t("fTitle"), LIMITS.title),
    company: optional(v.company, "company", t("fCompany"), LIMITS.company),
    place: optional(v.place, "place", t("fPlace"), LIMITS.place),
    url: "",
    note: optional(v.note, "note", t("fNote"), LIMITS.note),
  };
  if (!OFFER_KINDS.includes(v.kind)) throw new FormError("kind", t("fieldRequired", { label: t("fKind") }));
  const url = (v.url || "").trim();
  if (url) {
    content.url = safeUrl(url);
    if (!content.url) throw new FormError("url", t("badUrl"));
  }
  return { content, meta: { kind: v.kind } };
}

/** A new action: {content, meta} with meta.item = `item`. */
export function buildAction(v, item) {
  const content = {
    title: need(v.title, "title", t("fTitle"), LIMITS.title),
    description: optional(v.description, "description", t("fDescription"), LIMITS.note),
  };
  const due = endOfDay(v.due);
  checkDate(due, "due");
  const status = ACTION_STATUSES.includes(v.status) && v.status !== "cancelled" ? v.status : "todo";
  return { content, meta: { item, event: "created", status, due } };
}

/** An action's title, description or due date changed. */
export function buildActionChange(v, item) {
  const content = {
    title: need(v.title, "title", t("fTitle"), LIMITS.title),
    description: optional(v.description, "description", t("fDescription"), LIMITS.note),
  };
  const due = endOfDay(v.due);
  checkDate(due, "due");
  return { content, meta: { item, event: "changed", due } };
}

export function buildStatusChange(item, from, to) {
  if (!(ACTION_TRANSITIONS[from] || []).includes(to)) throw new FormError("status", t("badTransition"));
  return { content: {}, meta: { item, event: "status_changed", status: to } };
}

export function buildComment(text, item) {
  return { content: { text: need(text, "text", t("fComment"), LIMITS.text) }, meta: { item, event: "commented" } };
}

/** A new or changed appointment. */
export function buildAppointment(v, item, event = "created") {
  const startsAt = dateTime(v.date, v.time);
  checkDate(startsAt, "date");
  const duration = Number.parseInt(v.duration, 10);
  if (!Number.isInteger(duration) || duration < 5 || duration > 600) throw new FormError("duration", t("badDuration"));
  if (!APPOINTMENT_KINDS.includes(v.kind)) throw new FormError("kind", t("fieldRequired", { label: t("fKind") }));
  const content = {
    title: optional(v.title, "title", t("fTitle"), LIMITS.title),
    kind: v.kind,
    duration,
    place: optional(v.place, "place", t("fPlace"), LIMITS.place),
    visio: "",
    note: optional(v.note, "note", t("fNote"), LIMITS.note),
  };
  const visio = (v.visio || "").trim();
  if (visio) {
    content.visio = safeUrl(visio);
    if (!content.visio) throw new FormError("visio", t("badUrl"));
  }
  if (!content.place && !content.visio) throw new FormError("place", t("placeOrVisio"));
  return { content, meta: { item, event, starts_at: startsAt } };
}

export function buildNotice(v) {
  const text = need(v.text, "text", t("fNoticeText"), LIMITS.note);
  const startsAt = startOfDay(v.start);
  const endsAt = endOfDay(v.end) + 1;
  checkDate(startsAt, "start", { pastOk: true });
  checkDate(endsAt, "end");
  if (endsAt <= startsAt) throw new FormError("end", t("endBeforeStart"));
  return { content: { text }, meta: { starts_at: startsAt, ends_at: endsAt } };
}

// ---------------------------------------------------------------- folding a thread

/**
 * Fold a thread's items (sorted by seq) into what to show:
 *  - `items`: Map item id -> {kind, id, seq (creation), content, status,
 *    due, startsAt, answer, cancelled, creator, events: [seq]};
 *  - `edits`: Map target seq -> the latest edit's content; `deleted`: Set of seqs;
 *  - `hidden`: Set of seqs not drawn as rows (edits, deletes, status changes
 *    of items whose card is shown).
 * Events that do not follow (a transition that does not exist) are ignored.
 */
export function foldThread(messages) {
  const items = new Map();
  const edits = new Map();
  const deleted = new Set();
  const hidden = new Set();
  for (const m of messages) {
    const meta = m.meta || {};
    if (m.msgType === "edit" || m.msgType === "delete") {
      hidden.add(m.seq);
      const target = messages.find((x) => x.seq === meta.target_seq);
      if (target && target.sender === m.sender) {
        if (m.msgType === "delete") deleted.add(meta.target_seq);
        else if (m.content) edits.set(meta.target_seq, m.content);
      }
      continue;
    }
    if (m.msgType !== "action" && m.msgType !== "appointment") continue;
    const id = meta.item;
    if (meta.event === "created") {
      if (items.has(id)) continue;
      items.set(id, {
        kind: m.msgType,
        id,
        seq: m.seq,
        creator: m.sender,
        content: m.content || null,
        status: m.msgType === "action" ? meta.status : "scheduled",
        due: meta.due ?? null,
        startsAt: meta.starts_at ?? null,
        answer: null,
        events: [],
      });
      continue;
    }
    const item = items.get(id);
    if (!item || item.kind !== m.msgType) continue;
    item.events.push(m.seq);
    if (m.msgType === "action") {
      if (meta.event === "status_changed") {
        if (!(ACTION_TRANSITIONS[item.status] || []).includes(meta.status)) continue;
        item.status = meta.status;
      } else if (meta.event === "changed") {
        if (meta.due) item.due = meta.due;
        if (m.content) item.content = { ...(item.content || {}), ...m.content };
      }
    } else if (item.status !== "cancelled") {
      if (meta.event === "changed") {
        item.startsAt = meta.starts_at;
        if (m.content) item.content = { ...(item.content || {}), ...m.content };
        item.answer = null;
      } else if (meta.event === "cancelled") {
        item.status = "cancelled";
      } else if (meta.event === "answered" && m.content) {
        item.answer = m.content.answer === "yes" ? "yes" : "no";
      }
    }
  }
  return { items, edits, deleted, hidden };
}

/** Whether an action is late: due passed and neither done nor cancelled. */
export function overdue(item, now = nowSeconds()) {
  return item.kind === "action" && item.due && item.due < now && item.status !== "done" && item.status !== "cancelled";
}

/** The button that moves an action from `from` to `to`. */
export function transitionText(from, to) {
  if (from === "done" && to === "in_progress") return t("actionReopen");
  if (from === "cancelled" && to === "todo") return t("actionRestore");
  return t(`setStatus_${to}`);
}

export function statusText(status) {
  return t(`status_${status}`);
}

export function offerKindText(kind) {
  return t(`offer_${kind}`);
}

export function appointmentKindText(kind) {
  return t(`rdv_${kind}`);
}

/** A short French line for a message (the list's preview, event lines). */
export function previewText(item, { peerName = "", fold = null, titleOf = null } = {}) {
  const c = item.content || {};
  const meta = item.meta || {};
  const ofItem = fold?.items.get(meta.item);
  const title = ofItem?.content?.title || c.title || (titleOf && titleOf(meta.item)) || t("actionLabel");
  switch (item.msgType) {
    case "text":
      return c.text || "";
    case "edit":
      return c.text || "";
    case "delete":
      return t("deletedMessage");
    case "offer":
      return t("previewOffer", { title: c.title || "" });
    case "attachment":
      return t("previewAttachment", { name: c.name || "" });
    case "notice":
      return t("previewNotice", { text: c.text || "" });
    case "action":
      if (meta.event === "created") return t("previewAction", { title });
      if (meta.event === "status_changed") return t("eventStatus", { title, status: statusText(meta.status) });
      if (meta.event === "commented") return t("eventComment", { title, text: c.text || "" });
      return t("eventActionChanged", { title });
    case "appointment":
      if (meta.event === "created") return t("previewAppointment", { title: c.title || appointmentKindText(c.kind || "individuel") });
      if (meta.event === "changed") return t("eventRdvChanged");
      if (meta.event === "cancelled") return t("eventRdvCancelled");
      if (item.mine) return c.answer === "yes" ? t("answerYesMine") : t("answerNoMine");
      return c.answer === "yes" ? t("eventRdvYes", { name: peerName }) : t("eventRdvNo", { name: peerName });
    default:
      return "";
  }
}
