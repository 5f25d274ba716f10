/**
 * The thread as people read it, shared by the console and the app: day
 * separators, text with safe links, edits and deletions applied to the
 * message they change, one card per offer, action and appointment with its
 * state folded from its events (the events stay as short lines), comments
 * as bubbles, notices as lines, and the outbox at the end.
 *
 * Rows are kept with `reconcile` (ui.js): a row is redrawn only when its
 * signature changes, so screen readers hear only what is new.
 */

import { t, clock, dayKey, dayLabel, dateLong, whenText } from "./i18n.js";
import { h, reconcile, renderMessage } from "./ui.js";
import { attachmentBlock, pendingAttachment } from "./attach-ui.js";
import {
  ACTION_TRANSITIONS,
  appointmentKindText,
  foldThread,
  offerKindText,
  overdue,
  previewText,
  safeUrl,
  statusText,
  transitionText,
} from "./items.js";
import {
  answerAppointment,
  cancelAppointment,
  deleteMessage,
  openActionDialog,
  openAppointmentDialog,
  openCommentDialog,
  openEditDialog,
  setActionStatus,
} from "./forms.js";

const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"]+/gi;

/** Text with its http(s) links as safe anchors (new tab, no opener, no referrer, full URL on hover). */
export function linkify(text) {
  const out = [];
  let last = 0;
  for (const match of text.matchAll(URL_IN_TEXT)) {
    let raw = match[0];
    const trail = raw.match(/[.,;:!?)\]]+$/);
    if (trail) raw = raw.slice(0, -trail[0].length);
    const href = safeUrl(raw);
    if (!href) continue;
    out.push(text.slice(last, match.index));
    out.push(link(href, raw));
    last = match.index + raw.length;
  }
  out.push(text.slice(last));
  return out.filter((x) => x !== "");
}

/** A safe external link: http(s) only, new tab, `rel="noopener noreferrer"`, the URL as its title. */
export function link(href, text) {
  return h("a", { href, target: "_blank", rel: "noopener noreferrer", title: href, class: "ext-link" }, text);
}

function actionsRow(...buttons) {
  const kept = buttons.filter(Boolean);
  return kept.length ? h("div", { class: "card-actions" }, ...kept) : null;
}

function button(text, onclick, cls = "secondary small") {
  return h("button", { type: "button", class: cls, onclick }, text);
}

function stamp(item) {
  return item.createdAt ? h("p", { class: "msg-meta" }, h("time", { datetime: new Date(item.createdAt * 1000).toISOString() }, clock(item.createdAt))) : null;
}

function who(item, ctx) {
  return item.mine ? t("you") : ctx.peerName;
}

function offerCard(m, ctx) {
  const c = m.content || {};
  const deleted = ctx.fold.deleted.has(m.seq);
  if (deleted) return deletedBubble(m, ctx);
  const url = safeUrl(c.url);
  const details = [c.company, c.place].filter(Boolean).join(" · ");
  return h(
    "li",
    { class: `msg card card-offer ${(m.right ?? m.mine) ? "card-mine" : "card-peer"}` },
    h("p", { class: "card-kind" }, h("span", { class: "tag" }, t("offerLabel")), " ", offerKindText(m.meta.kind), h("span", { class: "visually-hidden" }, ` — ${who(m, ctx)}`)),
    h("h3", { class: "card-title" }, c.title || ""),
    details ? h("p", {}, details) : null,
    c.note ? h("p", { class: "card-note" }, ...linkify(c.note)) : null,
    url ? h("p", {}, link(url, t("seeOffer")), h("span", { class: "visually-hidden" }, ` (${url})`)) : null,
    actionsRow(m.mine ? button(t("delete"), () => deleteMessage(ctx.chat, ctx.conversation, m), "ghost small") : null),
    stamp(m),
  );
}

function actionCard(m, ctx) {
  const item = ctx.fold.items.get(m.meta.item);
  const c = item?.content || m.content || {};
  const late = overdue(item);
  const status = item?.status || m.meta.status;
  const next = (ACTION_TRANSITIONS[status] || []).map((to) =>
    button(transitionText(status, to), () => setActionStatus(ctx.chat, ctx.conversation, item, to).catch(ctx.onError), to === "cancelled" ? "ghost small" : "secondary small"),
  );
  return h(
    "li",
    { class: `msg card card-action ${(m.right ?? m.mine) ? "card-mine" : "card-peer"}${late ? " card-late" : ""}`, dataset: { item: m.meta.item } },
    h("p", { class: "card-kind" }, h("span", { class: "tag" }, t("actionLabel")), " ", h("span", { class: `status status-${status}` }, statusText(status)), late ? h("span", { class: "tag tag-late" }, t("overdue")) : null),
    h("h3", { class: "card-title" }, c.title || ""),
    c.description ? h("p", { class: "card-note" }, ...linkify(c.description)) : null,
    item?.due ? h("p", {}, t("dueOn", { date: dateLong(item.due) })) : null,
    actionsRow(
      ...next,
      button(t("comment"), () => openCommentDialog(ctx.chat, ctx.conversation, item), "ghost small"),
      item && item.creator === ctx.chat.user.id ? button(t("edit"), () => openActionDialog(ctx.chat, ctx.conversation, item), "ghost small") : null,
    ),
    stamp(m),
  );
}

function appointmentCard(m, ctx) {
  const item = ctx.fold.items.get(m.meta.item);
  const c = item?.content || m.content || {};
  const cancelled = item?.status === "cancelled";
  const startsAt = item?.startsAt || m.meta.starts_at;
  const visio = safeUrl(c.visio);
  let answer = null;
  if (item?.answer) {
    const mineAnswer = ctx.chat.user.role === "beneficiary";
    answer = mineAnswer ? t(item.answer === "yes" ? "answerYesMine" : "answerNoMine") : t(item.answer === "yes" ? "answerYes" : "answerNo");
  } else if (!cancelled) {
    answer = t("noAnswer");
  }
  const counsellor = ctx.summary.counsellor_id === ctx.chat.user.id;
  const beneficiary = ctx.summary.beneficiary_id === ctx.chat.user.id;
  return h(
    "li",
    { class: `msg card card-appointment ${(m.right ?? m.mine) ? "card-mine" : "card-peer"}${cancelled ? " card-cancelled" : ""}`, dataset: { item: m.meta.item } },
    h("p", { class: "card-kind" }, h("span", { class: "tag" }, t("appointmentLabel")), " ", appointmentKindText(c.kind || "individuel"), cancelled ? h("span", { class: "tag tag-late" }, t("rdvCancelled")) : null),
    c.title ? h("h3", { class: "card-title" }, c.title) : null,
    h("p", { class: "card-when" }, t("rdvWhen", { when: whenText(startsAt), duration: c.duration || "?" })),
    c.place ? h("p", {}, `${t("fPlace")} : ${c.place}`) : null,
    visio ? h("p", {}, link(visio, t("joinVisio"))) : null,
    c.note ? h("p", { class: "card-note" }, ...linkify(c.note)) : null,
    answer ? h("p", { class: "card-answer" }, answer) : null,
    cancelled
      ? null
      : actionsRow(
          beneficiary ? button(t("willCome"), () => answerAppointment(ctx.chat, ctx.conversation, item, true), "primary small") : null,
          beneficiary ? button(t("cannotCome"), () => answerAppointment(ctx.chat, ctx.conversation, item, false)) : null,
          counsellor ? button(t("edit"), () => openAppointmentDialog(ctx.chat, ctx.conversation, item), "secondary small") : null,
          counsellor ? button(t("cancelAppointment"), () => cancelAppointment(ctx.chat, ctx.conversation, item, ctx.peerName), "ghost small") : null,
        ),
    stamp(m),
  );
}

function deletedBubble(m, ctx) {
  return h(
    "li",
    { class: `msg ${(m.right ?? m.mine) ? "msg-mine" : "msg-peer"} msg-deleted` },
    h("span", { class: "visually-hidden" }, `${who(m, ctx)} : `),
    h("p", { class: "msg-text" }, t("deletedMessage")),
    stamp(m),
  );
}

function attachmentBubble(m, ctx) {
  if (ctx.fold.deleted.has(m.seq)) return deletedBubble(m, ctx);
  const li = renderMessage(m, { peerName: ctx.peerName, status: statusOf(m, ctx.summary) });
  li.classList.add("msg-attachment");
  li.querySelector(".msg-text").replaceChildren(attachmentBlock(m, ctx.chat));
  if (m.mine) {
    li.querySelector(".msg-meta").append(
      h("button", { type: "button", class: "link-button", onclick: () => deleteMessage(ctx.chat, ctx.conversation, m) }, t("delete"), h("span", { class: "visually-hidden" }, ` : ${m.content?.name || ""}`)),
    );
  }
  return li;
}

function textBubble(m, ctx, status) {
  if (ctx.fold.deleted.has(m.seq)) return deletedBubble(m, ctx);
  const edit = ctx.fold.edits.get(m.seq);
  const text = edit?.text ?? m.content?.text ?? "";
  const li = renderMessage(m, { peerName: ctx.peerName, status });
  li.querySelector(".msg-text").replaceChildren(...linkify(text));
  const foot = li.querySelector(".msg-meta");
  if (edit) foot.prepend(h("span", { class: "msg-edited" }, t("edited")));
  if (m.mine) {
    foot.append(
      h("button", { type: "button", class: "link-button", onclick: () => openEditDialog(ctx.chat, ctx.conversation, m, text) }, t("edit"), h("span", { class: "visually-hidden" }, ` : ${text.slice(0, 40)}`)),
      h("button", { type: "button", class: "link-button", onclick: () => deleteMessage(ctx.chat, ctx.conversation, m) }, t("delete"), h("span", { class: "visually-hidden" }, ` : ${text.slice(0, 40)}`)),
    );
  }
  return li;
}

function commentBubble(m, ctx) {
  const item = ctx.fold.items.get(m.meta.item);
  const li = renderMessage(m, { peerName: ctx.peerName });
  li.classList.add("msg-comment");
  li.querySelector(".msg-text").replaceChildren(...linkify(m.content?.text || ""));
  li.prepend(h("p", { class: "comment-about" }, t("eventComment", { title: item?.content?.title || t("actionLabel"), text: "" }).replace(/ : $/, "")));
  return li;
}

function eventLine(m, ctx) {
  const text = previewText(m, { peerName: m.mine ? t("you") : ctx.peerName, fold: ctx.fold });
  return h("li", { class: "msg msg-system msg-event" }, h("p", { class: "msg-text" }, text), stamp(m));
}

function noticeLine(m) {
  const c = m.content || {};
  const meta = m.meta || {};
  if (meta.ends_at <= meta.starts_at) return h("li", { class: "msg msg-system msg-event" }, h("p", { class: "msg-text" }, t("noticeLifted", { n: 1 })));
  const text = t("noticeLine", { start: dateLong(meta.starts_at), end: dateLong(meta.ends_at - 1), text: c.text || "" });
  return h("li", { class: "msg msg-system msg-event msg-notice-item" }, h("p", { class: "msg-text" }, text), stamp(m));
}

/** Sent / read under one's own messages. */
function statusOf(m, summary) {
  if (!m.mine || m.system) return null;
  return m.seq <= (summary.peer_read || 0) ? { kind: "read", text: t("statusRead") } : { kind: "sent", text: t("statusSent") };
}

/** The name to show for `m`'s author: its real sender, whoever the counsellor is now. */
function authorName(m, ctx) {
  if (m.mine || m.system) return ctx.peerName;
  return ctx.chat.nameOf?.(m.sender) || ctx.peerName;
}

function renderStored(m, base) {
  const ctx = { ...base, peerName: authorName(m, base) };
  if (m.system || m.error || !m.content) return renderMessage(m, { peerName: ctx.peerName, status: statusOf(m, ctx.summary), names: ctx.chat.people });
  switch (m.msgType) {
    case "text":
      return textBubble(m, ctx, statusOf(m, ctx.summary));
    case "offer":
      return offerCard(m, ctx);
    case "action":
      if (m.meta.event === "created") return actionCard(m, ctx);
      if (m.meta.event === "commented") return commentBubble(m, ctx);
      return eventLine(m, ctx);
    case "appointment":
      if (m.meta.event === "created") return appointmentCard(m, ctx);
      return eventLine(m, ctx);
    case "notice":
      return noticeLine(m);
    case "attachment":
      return attachmentBubble(m, ctx);
    default:
      return renderMessage(m, { peerName: ctx.peerName, status: statusOf(m, ctx.summary) });
  }
}

function signature(m, ctx) {
  const item = m.meta?.item ? ctx.fold.items.get(m.meta.item) : null;
  return JSON.stringify([
    !!m.content,
    m.error,
    m.mine && m.seq <= (ctx.summary.peer_read || 0),
    ctx.fold.deleted.has(m.seq),
    ctx.fold.edits.get(m.seq)?.text ?? null,
    item ? [item.status, item.due, item.startsAt, item.answer, item.content?.title, item.content?.description, item.content?.place, overdue(item)] : null,
    ctx.summary.counsellor_id,
    // Names arrive after the first drawing (GET /api/people).
    m.system ? [m.meta?.from, m.meta?.to, m.meta?.user].map((id) => ctx.chat.nameOf?.(id) || "") : authorName(m, ctx),
  ]);
}

/** An outbox entry (not acknowledged yet), with its French preview and retry/discard once failed. */
function renderPending(entry, ctx) {
  const text = { pending: t("statusPending"), sending: t("statusSending"), failed: t("statusFailed") }[entry.state];
  const item = { mine: true, system: false, msgType: "text", content: { text: previewText({ msgType: entry.msgType, content: entry.content, meta: entry.meta }, { fold: ctx.fold }) }, createdAt: entry.createdAt };
  const li = renderMessage(item, {
    status: { kind: entry.state, text },
    onRetry: () => ctx.chat.retry(entry.clientId),
    onDiscard: () => ctx.chat.discard(entry.clientId),
  });
  li.classList.add("msg-pending");
  if (entry.msgType === "attachment") li.querySelector(".msg-text").replaceChildren(pendingAttachment(entry));
  if (entry.state === "failed" && entry.errorCode) {
    const why = t(`err_${entry.errorCode}`);
    if (why !== `err_${entry.errorCode}`) li.querySelector(".msg-meta").before(h("p", { class: "msg-why" }, why));
  }
  return li;
}

/**
 * Draw conversation `conversation`'s thread into `list` (an <ol>).
 * `extra`: local notices [{key, at (a seq + 0.5), render()}]. Returns the fold.
 */
export function renderThreadList(list, { chat, conversation, summary, peerName, extra = [], onError = () => {} }) {
  const thread = chat.thread(conversation);
  const messages = thread.sorted();
  const fold = foldThread(messages);
  const ctx = { chat, conversation, summary, peerName, fold, onError };
  const rows = [];
  let day = null;
  const entries = messages.filter((m) => !fold.hidden.has(m.seq)).map((m) => ({ kind: "m", m, at: m.seq, when: m.createdAt }));
  for (const x of extra) entries.push({ kind: "x", x, at: x.at, when: null });
  entries.sort((a, b) => a.at - b.at);
  for (const e of entries) {
    if (e.when) {
      const key = dayKey(e.when);
      if (key !== day) {
        day = key;
        rows.push({ kind: "d", key, label: dayLabel(e.when) });
      }
    }
    rows.push(e);
  }
  const outbox = chat.outboxFor(conversation);
  if (outbox.length) {
    const key = dayKey(Date.now() / 1000);
    if (key !== day) rows.push({ kind: "d", key, label: dayLabel(Date.now() / 1000) });
  }
  for (const entry of outbox) rows.push({ kind: "o", entry });
  reconcile(
    list,
    rows,
    (r) => (r.kind === "m" ? `m${r.m.seq}` : r.kind === "d" ? `d${r.key}` : r.kind === "x" ? `x${r.x.key}` : `o${r.entry.clientId}`),
    (r) => {
      if (r.kind === "m") return signature(r.m, ctx);
      if (r.kind === "d") return r.label;
      if (r.kind === "x") return "x";
      return `${r.entry.state}`;
    },
    (r) => {
      if (r.kind === "m") return renderStored(r.m, ctx);
      if (r.kind === "d") return h("li", { class: "day-sep" }, h("h3", { class: "day-label" }, r.label));
      if (r.kind === "x") return r.x.render();
      return renderPending(r.entry, ctx);
    },
  );
  return fold;
}

/** Load earlier messages while keeping what the reader looks at in place. */
export async function loadOlderKeepingPlace(chat, conversation, log) {
  const before = log.scrollHeight - log.scrollTop;
  await chat.loadOlder(conversation);
  // The thread event re-rendered synchronously: restore the distance from the bottom.
  log.scrollTop = log.scrollHeight - before;
}

/** The items panel: open actions (overdue marked) and coming appointments. */
export function renderItemsPanel(el, items, { now = Date.now() / 1000 } = {}) {
  const list = items?.items || [];
  const actions = list.filter((i) => i.kind === "action" && (i.status === "todo" || i.status === "in_progress")).sort((a, b) => (a.due || 0) - (b.due || 0));
  const rdvs = list.filter((i) => i.kind === "appointment" && i.status !== "cancelled" && i.starts_at >= now - 3600).sort((a, b) => a.starts_at - b.starts_at);
  const actionLi = (i) => {
    const late = i.due && i.due < now;
    return h(
      "li",
      { class: late ? "late" : "" },
      h("span", { class: "panel-title" }, i.content?.title || t("actionLabel")),
      " — ",
      statusText(i.status),
      i.due ? `, ${t("dueOn", { date: dateLong(i.due) }).toLowerCase()}` : "",
      late ? h("span", { class: "tag tag-late" }, t("overdue")) : null,
    );
  };
  const rdvLi = (i) =>
    h("li", {}, h("span", { class: "panel-title" }, i.content?.title || appointmentKindText(i.content?.kind || "individuel")), " — ", whenText(i.starts_at));
  el.replaceChildren(
    h("h3", {}, t("openActions")),
    actions.length ? h("ul", { class: "panel-list" }, ...actions.map(actionLi)) : h("p", { class: "muted" }, t("noOpenActions")),
    h("h3", {}, t("comingAppointments")),
    rdvs.length ? h("ul", { class: "panel-list" }, ...rdvs.map(rdvLi)) : h("p", { class: "muted" }, t("noComingAppointments")),
  );
}
