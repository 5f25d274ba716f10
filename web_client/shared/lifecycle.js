/**
 * The data lifecycle in the browser apps (docs/privacy.md):
 *
 * - export of a whole conversation, decrypted on this device: every page of
 *   the history is fetched (the same ciphertext the server already serves),
 *   each message decrypted and verified here with the keys in IndexedDB, and
 *   the result offered as a JSON file and as a printable page (the browser's
 *   "print" saves it as PDF). Nothing decrypted is sent anywhere;
 * - the account deletion dialog of the beneficiary's app;
 * - the archive state of a conversation (read-only banner and composer).
 */

import { longTime } from "./i18n.js";
import { foldThread, previewText } from "./items.js";
import { $, archiveReasonText, h, messageText, setChildren } from "./ui.js";

const PAGE = 200;
const MAX_PAGES = 10_000; // 2 million messages: far beyond any conversation

const TEXT = {
  you: "Vous",
  system: "Information",
  otherCounsellor: "Conseiller précédent",
  title: "Conversation avec {name}",
  exportedBy: "Exportée le {date} par {name}, déchiffrée sur cet appareil.",
  count: "{n} messages.",
  print: "Imprimer ou enregistrer en PDF",
  download: "Télécharger (JSON)",
  close: "Fermer",
  loading: "Préparation de l'export… {n} messages",
  attachment: "Pièce jointe : {name}",
  unreadable: "(message illisible sur cet appareil)",
  archived: "Conversation archivée le {date} ({reason}) : lecture seule.",
  archivedApp: "Votre conseiller a clôturé votre accompagnement ({reason}). La conversation reste lisible mais vous ne pouvez plus écrire.",
  deleted: "Le bénéficiaire a supprimé son compte : la conversation a été effacée.",
};

function tr(key, vars = {}) {
  return TEXT[key].replace(/\{(\w+)\}/g, (_, name) => String(vars[name] ?? ""));
}

/** Every stored message of the conversation, oldest first (bounded pages of the history API). */
export async function fetchAll(api, conversation, onProgress = () => {}) {
  const all = [];
  let after = 0;
  for (let pages = 0; pages < MAX_PAGES; pages++) {
    const page = await api.messages(conversation, { after, limit: PAGE });
    const msgs = page.messages || [];
    all.push(...msgs);
    onProgress(all.length);
    if (!page.has_more || !msgs.length) break;
    after = msgs[msgs.length - 1].seq;
  }
  return all;
}

function attachmentName(content) {
  if (!content || typeof content !== "object") return null;
  return content.name || content.filename || content.file?.name || null;
}

/**
 * The export document of one conversation: `{format, version, exported_at,
 * exported_by, conversation, messages: [{seq, at, author, author_id, type, text,
 * attachment, content, meta, verified}]}`. `chat` is the page's ChatClient.
 */
export async function buildExport(chat, conversation, onProgress) {
  const summary = chat.summary(conversation) || { id: conversation };
  const peerName = summary.peer?.display_name || summary.peer?.login || "";
  const raw = await fetchAll(chat.api, conversation, onProgress);
  const items = [];
  for (const m of raw) {
    const item = chat.item(m);
    if (!item.system) {
      try {
        item.content = await chat.keys.decrypt(m);
      } catch (err) {
        item.error = err?.code || "decrypt_failed";
      }
    }
    items.push(item);
  }
  // Items (actions, appointments) are folds of their events: their titles come from the whole thread.
  const fold = foldThread(items);
  const messages = items.map((item) => {
    const m = item.raw;
    const author = item.system ? TEXT.system : item.mine ? chat.user.display_name : m.sender === summary.peer?.id ? peerName : TEXT.otherCounsellor;
    let text;
    if (item.error) text = TEXT.unreadable;
    else if (item.system) text = messageText(item, peerName);
    else text = previewText(item, { peerName, fold }) || messageText(item, peerName);
    return {
      seq: m.seq,
      at: new Date(m.created_at * 1000).toISOString(),
      author,
      author_id: m.sender,
      type: m.msg_type,
      text,
      attachment: attachmentName(item.content),
      content: item.content,
      meta: m.meta || {},
      verified: !item.system && !item.error,
    };
  });
  return {
    format: "cej-chat-export",
    version: 1,
    exported_at: new Date().toISOString(),
    exported_by: { id: chat.user.id, display_name: chat.user.display_name, role: chat.user.role },
    conversation: {
      id: conversation,
      with: peerName,
      archived: summary.archived || null,
    },
    messages,
  };
}

/** Offer `data` as a JSON file download (a blob URL; nothing leaves the device). */
export function downloadJson(data, conversationName) {
  const blob = new Blob([JSON.stringify(data, null, 2)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const day = new Date().toISOString().slice(0, 10);
  const slug = (conversationName || "conversation").normalize("NFD").replace(/[^\w-]+/g, "-").replace(/^-|-$/g, "").toLowerCase();
  const a = h("a", { href: url, download: `conversation-${slug || "export"}-${day}.json`, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * Show the export as a printable page over the app (`#export-view`); the
 * rest of the page is hidden while it is shown, and on paper.
 */
export function showPrintable(data) {
  let view = $("#export-view");
  if (!view) {
    view = h("section", { id: "export-view", class: "export-view", "aria-labelledby": "export-title", tabindex: "-1" });
    document.body.append(view);
  }
  const close = () => {
    view.hidden = true;
    document.body.classList.remove("exporting");
  };
  const title = tr("title", { name: data.conversation.with || "" });
  setChildren(
    view,
    h(
      "div",
      { class: "export-actions" },
      h("button", { type: "button", class: "primary", onclick: () => window.print() }, TEXT.print),
      h("button", { type: "button", class: "secondary", onclick: () => downloadJson(data, data.conversation.with) }, TEXT.download),
      h("button", { type: "button", class: "ghost", onclick: close }, TEXT.close),
    ),
    h("h1", { id: "export-title" }, title),
    h("p", { class: "export-note" }, tr("exportedBy", { date: longTime(Date.parse(data.exported_at) / 1000), name: data.exported_by.display_name })),
    h("p", { class: "export-note" }, tr("count", { n: data.messages.length })),
    h(
      "ol",
      { class: "export-messages" },
      ...data.messages.map((m) =>
        h(
          "li",
          { class: `export-msg${m.type.startsWith("system.") ? " export-system" : ""}` },
          h("p", { class: "export-head" }, h("strong", {}, m.author), ` — ${longTime(Date.parse(m.at) / 1000)}`),
          h("p", { class: "export-text" }, m.text),
          m.attachment ? h("p", { class: "export-attachment" }, tr("attachment", { name: m.attachment })) : null,
        ),
      ),
    ),
  );
  document.body.classList.add("exporting");
  view.hidden = false;
  view.focus();
  return view;
}

/** Export button handler: build, then show the printable page (with its JSON download). */
export async function exportConversation(chat, conversation, status) {
  const say = (text) => {
    if (status) status.textContent = text;
  };
  say(tr("loading", { n: 0 }));
  const data = await buildExport(chat, conversation, (n) => say(tr("loading", { n })));
  say("");
  return showPrintable(data);
}

/** The read-only notice of an archived or deleted conversation ("" if it is live). */
export function archiveNotice(summary, { forBeneficiary = false } = {}) {
  if (!summary) return "";
  if (summary.deleted_at) return TEXT.deleted;
  if (!summary.archived) return "";
  const reason = archiveReasonText(summary.archived.reason);
  if (forBeneficiary) return tr("archivedApp", { reason });
  return tr("archived", { date: longTime(summary.archived.at), reason });
}

/** Whether nobody can write in this conversation any more. */
export function readOnly(summary) {
  return Boolean(summary?.archived || summary?.deleted_at);
}

/** Disable (or enable) the composer of the page: its text area and its send button. */
export function setComposerEnabled(enabled) {
  const form = $("#composer");
  if (!form) return;
  for (const el of form.querySelectorAll("textarea, button")) el.disabled = !enabled;
}
