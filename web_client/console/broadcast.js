/**
 * Broadcast in the console (issue #15, point 1; docs/protocol.md, "Broadcast"): saved
 * lists of one's own beneficiaries (GET/POST/PATCH/DELETE /api/broadcast-lists) and one
 * message sent to a list or to a hand-picked set.
 *
 * Sending: the broadcast is recorded first (POST /api/broadcasts, with the client id
 * chosen for each copy), then each copy is queued in the chat client's outbox as an
 * ordinary end-to-end encrypted message of its conversation (no shared key; a lost
 * connection only delays it). The view follows each copy live: "en cours d'envoi"
 * until its ack ("sent" event), "distribué" once stored, "lu" when the beneficiary's read
 * marker passes it (read receipts, "summaries" event), "échec" with a retry (the retry
 * resends under the same client id, so the server stores it once). Past broadcasts
 * come from GET /api/broadcasts (the server links copies to messages by client id).
 * A beneficiary on a temporary transfer is shown "absent temporairement" and left out.
 */

import { dateLong, shortTime } from "../shared/i18n.js";
import { $, h, setChildren } from "../shared/ui.js";
import { errorText } from "../shared/errors.js";
import { newId } from "../shared/wire.js";

const MAX_TEXT = 4000;
/** Conversations whose first epoch key is made at once (see prepareKeys). */
const KEY_WORKERS = 4;
const STATE_TEXT = {
  pending: "en cours d'envoi",
  delivered: "distribué",
  read: "lu",
  failed: "échec de l'envoi",
  transferred: "transféré à un autre conseiller",
};

function plural(n, word) {
  return `${n} ${word}${n > 1 ? "s" : ""}`;
}

export class Broadcaster {
  /** `open(conversationId)` opens a thread; `onClose()` goes back to the previous view. */
  constructor({ api, chat, me, open, onClose }) {
    this.api = api;
    this.chat = chat;
    this.me = me;
    this.open = open;
    this.onClose = onClose;
    this.lists = [];
    this.sends = [];
    this.editing = null;
    this.section = $("#broadcast");
    this.built = false;
    this.pendingRender = false;
    chat.on("sent", (d) => this.onSent(d));
    chat.on("thread", () => this.refreshStates());
    chat.on("summaries", () => {
      this.refreshStates();
      this.followChanges();
    });
    this.followed = "";
  }

  /** A transfer changed whom this counsellor follows: read the lists again (a permanent
   * transfer removes the beneficiary, a temporary one marks them absent). */
  followChanges() {
    const key = this.mine().map((s) => s.id).join(",");
    if (key === this.followed) return;
    this.followed = key;
    // Also the first time: the view may be open before the conversations arrive.
    if (this.visible) this.load();
  }

  /** The conversations this counsellor follows and may write to, by name. */
  mine() {
    return this.chat
      .sortedSummaries()
      .filter((s) => s.counsellor_id === this.me.id && !s.archived && !s.deleted_at)
      .sort((a, b) => this.nameOf(a).localeCompare(this.nameOf(b), "fr"));
  }

  nameOf(summary) {
    return summary.peer?.display_name || summary.peer?.login || "?";
  }

  build() {
    if (this.built) return;
    this.built = true;
    setChildren(
      this.section,
      h(
        "div",
        { class: "portfolio-head" },
        h("h2", { id: "broadcast-title", tabindex: "-1" }, "Diffusion"),
        h("button", { type: "button", class: "ghost", onclick: () => this.onClose() }, "Fermer la diffusion"),
      ),
      h("p", { class: "muted" }, "Un message envoyé à plusieurs bénéficiaires : chacun le reçoit dans sa propre conversation, chiffré pour lui seul."),
      h(
        "div",
        { class: "broadcast-grid" },
        h(
          "section",
          { class: "broadcast-compose", "aria-labelledby": "bc-title" },
          h("h3", { id: "bc-title" }, "Nouveau message"),
          h(
            "form",
            { id: "bc-form", class: "stack", onsubmit: (e) => this.send(e) },
            h("label", { for: "bc-to" }, "Destinataires"),
            h("select", { id: "bc-to", onchange: () => this.renderPick() }),
            h(
              "fieldset",
              { id: "bc-pick", hidden: true },
              h("legend", {}, "Choisir les destinataires"),
              h(
                "p",
                { class: "row" },
                h("button", { type: "button", class: "ghost small", onclick: () => this.checkAll(true) }, "Tout cocher"),
                h("button", { type: "button", class: "ghost small", onclick: () => this.checkAll(false) }, "Tout décocher"),
              ),
              h("div", { id: "bc-pick-list", class: "broadcast-checks" }),
            ),
            h("p", { id: "bc-absent", class: "muted" }),
            h("label", { for: "bc-text" }, "Message"),
            h("textarea", { id: "bc-text", rows: 4, maxlength: MAX_TEXT }),
            h("p", { id: "bc-error", class: "error", role: "alert" }),
            h("button", { type: "submit", class: "primary", id: "bc-send" }, "Envoyer à tous"),
          ),
          h("h3", { id: "bc-sends-title" }, "Envois"),
          h("div", { id: "bc-sends", "aria-labelledby": "bc-sends-title" }),
          h("p", { id: "bc-status", class: "visually-hidden", role: "status" }),
        ),
        h(
          "section",
          { class: "broadcast-lists", "aria-labelledby": "bl-title" },
          h("h3", { id: "bl-title" }, "Mes listes de diffusion"),
          h("ul", { id: "bl-list", class: "panel-list" }),
          h(
            "form",
            { id: "bl-form", class: "stack", onsubmit: (e) => this.saveList(e) },
            h("h4", { id: "bl-form-title" }, "Nouvelle liste"),
            h("label", { for: "bl-name" }, "Nom de la liste"),
            h("input", { id: "bl-name", maxlength: 80, autocomplete: "off" }),
            h("fieldset", {}, h("legend", {}, "Bénéficiaires de la liste"), h("div", { id: "bl-members", class: "broadcast-checks" })),
            h("p", { id: "bl-error", class: "error", role: "alert" }),
            h(
              "div",
              { class: "row" },
              h("button", { type: "submit", class: "secondary", id: "bl-save" }, "Enregistrer la liste"),
              h("button", { type: "button", class: "ghost", id: "bl-cancel", hidden: true, onclick: () => this.editList(null) }, "Annuler"),
            ),
          ),
        ),
      ),
    );
  }

  async show() {
    this.build();
    this.section.hidden = false;
    $("#broadcast-title").focus();
    await Promise.all([this.load(), this.loadHistory()]);
  }

  hide() {
    if (this.section) this.section.hidden = true;
  }

  get visible() {
    return this.built && !this.section.hidden;
  }

  async load() {
    try {
      this.lists = (await this.api.get("/api/broadcast-lists")).lists || [];
    } catch (err) {
      $("#bl-error").textContent = errorText(err);
      this.lists = [];
    }
    this.render();
  }

  /** Past broadcasts from the server, merged with this session's (which know the text). */
  async loadHistory() {
    let found = [];
    try {
      found = (await this.api.get("/api/broadcasts")).broadcasts || [];
    } catch (err) {
      $("#bc-error").textContent = errorText(err);
      return;
    }
    for (const b of found) {
      let record = this.sends.find((r) => r.id === b.id);
      if (!record) {
        record = {
          id: b.id,
          label: b.label || "Destinataires choisis",
          text: null,
          at: b.created_at,
          copies: b.copies.map((c) => ({ conversation: c.conversation_id, name: c.beneficiary.display_name, clientId: c.client_id, seq: c.seq, state: c.state })),
        };
        this.sends.push(record);
      }
      for (const c of b.copies) {
        const copy = record.copies.find((x) => x.clientId === c.client_id);
        if (!copy) continue;
        if (c.seq !== null && copy.seq === null) copy.seq = c.seq;
        if (c.state === "read" || c.state === "transferred") copy.state = c.state;
        copy.serverRead = c.state === "read";
      }
    }
    this.sends.sort((a, b) => b.at - a.at);
    this.refreshStates();
  }

  render() {
    setChildren(
      $("#bl-list"),
      ...(this.lists.length ? [] : [h("li", {}, "Aucune liste pour l'instant.")]),
      ...this.lists.map((l) => {
        const absent = l.members.filter((m) => m.state === "absent").length;
        return h(
          "li",
          { dataset: { id: l.id } },
          h("span", { class: "panel-title" }, l.name),
          ` — ${plural(l.members.length, "bénéficiaire")}`,
          absent ? h("span", { class: "muted" }, ` (dont ${absent} absent${absent > 1 ? "s" : ""} temporairement)`) : "",
          h(
            "div",
            { class: "row" },
            h("button", { type: "button", class: "ghost small", onclick: () => this.editList(l) }, "Modifier", h("span", { class: "visually-hidden" }, ` la liste ${l.name}`)),
            h("button", { type: "button", class: "danger small", onclick: () => this.deleteList(l) }, "Supprimer", h("span", { class: "visually-hidden" }, ` la liste ${l.name}`)),
          ),
        );
      }),
    );
    this.keepMemberTicks();
    const to = $("#bc-to");
    // The list just saved, else the one chosen before, else the first list.
    const chosen = this.chosen ?? (to.options.length ? to.value : (this.lists[0]?.id ?? ""));
    this.chosen = undefined;
    setChildren(
      to,
      ...this.lists.map((l) => h("option", { value: l.id }, `Liste : ${l.name}`)),
      h("option", { value: "" }, "Choisir les destinataires…"),
    );
    if ([...to.options].some((o) => o.value === chosen)) to.value = chosen;
    const picked = new Set([...$("#bc-pick-list").querySelectorAll("input:checked")].map((i) => i.value));
    this.checkboxes($("#bc-pick-list"), "bcp", picked);
    this.renderPick();
    this.renderSends();
  }

  checkboxes(container, prefix, checked) {
    setChildren(
      container,
      ...this.mine().map((s) =>
        h(
          "p",
          { class: "check" },
          h("input", { type: "checkbox", id: `${prefix}-${s.id}`, value: s.beneficiary_id, dataset: { conv: s.id, name: this.nameOf(s) }, checked: checked.has(s.beneficiary_id) }),
          h("label", { for: `${prefix}-${s.id}` }, this.nameOf(s)),
        ),
      ),
    );
  }

  checkAll(on) {
    for (const input of $("#bc-pick-list").querySelectorAll("input")) input.checked = on;
  }

  renderMembersForm() {
    const l = this.editing;
    $("#bl-form-title").textContent = l ? `Modifier « ${l.name} »` : "Nouvelle liste";
    $("#bl-save").textContent = l ? "Enregistrer les changements" : "Enregistrer la liste";
    $("#bl-cancel").hidden = !l;
    this.checkboxes($("#bl-members"), "blm", new Set(l ? l.members.map((m) => m.beneficiary.id) : []));
  }

  /** The list form's ticks as they are (a re-render after a transfer keeps them). */
  keepMemberTicks() {
    const ticked = new Set([...$("#bl-members").querySelectorAll("input:checked")].map((i) => i.value));
    if (!ticked.size) return this.renderMembersForm();
    this.checkboxes($("#bl-members"), "blm", ticked);
  }

  editList(l) {
    this.editing = l;
    $("#bl-name").value = l ? l.name : "";
    $("#bl-error").textContent = "";
    this.renderMembersForm();
    $("#bl-name").focus();
  }

  async saveList(event) {
    event.preventDefault();
    const error = $("#bl-error");
    error.textContent = "";
    const name = $("#bl-name").value.trim();
    const members = [...$("#bl-members").querySelectorAll("input:checked")].map((i) => i.value);
    if (!name) {
      error.textContent = "Donnez un nom à la liste.";
      return;
    }
    if (!members.length) {
      error.textContent = "Cochez au moins un bénéficiaire.";
      return;
    }
    try {
      const saved = this.editing
        ? await this.api.request("PATCH", `/api/broadcast-lists/${encodeURIComponent(this.editing.id)}`, { name, members })
        : await this.api.post("/api/broadcast-lists", { name, members });
      this.chosen = saved.list.id; // the send form offers the list just saved
      this.editing = null;
      for (const input of $("#bl-members").querySelectorAll("input")) input.checked = false;
      $("#bl-name").value = "";
      await this.load();
      $("#bc-status").textContent = `Liste « ${name} » enregistrée.`;
    } catch (err) {
      error.textContent = errorText(err);
    }
  }

  async deleteList(l) {
    if (!window.confirm(`Supprimer la liste « ${l.name} » ? Les messages déjà envoyés restent dans les conversations.`)) return;
    try {
      await this.api.request("DELETE", `/api/broadcast-lists/${encodeURIComponent(l.id)}`);
      if (this.editing?.id === l.id) {
        this.editing = null;
        for (const input of $("#bl-members").querySelectorAll("input")) input.checked = false;
      }
      await this.load();
      $("#bc-status").textContent = `Liste « ${l.name} » supprimée.`;
    } catch (err) {
      $("#bl-error").textContent = errorText(err);
    }
  }

  renderPick() {
    const id = $("#bc-to").value;
    const pick = $("#bc-pick");
    pick.hidden = Boolean(id);
    const list = this.lists.find((l) => l.id === id);
    const absent = list ? list.members.filter((m) => m.state === "absent") : [];
    $("#bc-absent").textContent = absent.length
      ? `Absent${absent.length > 1 ? "s" : ""} temporairement, non destinataire${absent.length > 1 ? "s" : ""} : ${absent.map((m) => m.beneficiary.display_name).join(", ")}`
      : "";
  }

  recipients() {
    const id = $("#bc-to").value;
    if (id) {
      const list = this.lists.find((l) => l.id === id);
      return (list?.members || []).filter((m) => m.state === "present" && !m.archived).map((m) => ({ conversation: m.conversation_id, name: m.beneficiary.display_name }));
    }
    return [...$("#bc-pick-list").querySelectorAll("input:checked")].map((i) => ({ conversation: i.dataset.conv, name: i.dataset.name }));
  }

  async send(event) {
    event.preventDefault();
    const error = $("#bc-error");
    error.textContent = "";
    const text = $("#bc-text").value.trim();
    const to = this.recipients();
    if (!to.length) {
      error.textContent = "Choisissez au moins un destinataire.";
      return;
    }
    if (!text) {
      error.textContent = "Écrivez le message.";
      return;
    }
    const listId = $("#bc-to").value || null;
    const copies = to.map((r) => ({ ...r, clientId: newId(), seq: null, state: "pending" }));
    const button = $("#bc-send");
    button.disabled = true;
    const started = performance.now();
    let recorded;
    try {
      recorded = (await this.api.post("/api/broadcasts", { list_id: listId, copies: copies.map((c) => ({ conversation_id: c.conversation, client_id: c.clientId })) })).broadcast;
    } catch (err) {
      error.textContent = errorText(err);
      button.disabled = false;
      return;
    }
    const record = { id: recorded.id, label: recorded.label || "Destinataires choisis", text, at: recorded.created_at, copies, started, elapsed: null };
    this.sends.unshift(record);
    $("#bc-text").value = "";
    button.disabled = false;
    this.renderSends();
    this.prepareKeys(copies);
    for (const copy of copies) await this.chat.send(copy.conversation, "text", { text }, {}, copy.clientId);
  }

  /**
   * Make the missing epoch keys of the recipients' conversations a few at a time, while
   * the outbox sends one copy after the other: the first message of a conversation
   * (a key, its HPKE envelopes, its commitment) then costs no wait in the queue. The
   * outbox asks for the same key and shares the job (KeyManager.rotate); a failure here is
   * left to the outbox, which reports it on the copy.
   */
  async prepareKeys(copies) {
    const queue = copies.filter((c) => {
      const s = this.chat.summary(c.conversation);
      return s && (!s.epoch || s.rotation_required);
    });
    const worker = async () => {
      for (let c = queue.shift(); c; c = queue.shift()) {
        const s = this.chat.summary(c.conversation);
        try {
          const epoch = await this.chat.keys.writableEpoch(c.conversation, { epoch: s.epoch || 0, rotationRequired: !!s.rotation_required });
          if (epoch > (s.epoch || 0)) s.epoch = epoch;
          s.rotation_required = false;
        } catch {
          /* the outbox meets it again and shows it on the copy */
        }
      }
    };
    await Promise.all(Array.from({ length: KEY_WORKERS }, worker));
  }

  onSent({ clientId, seq }) {
    for (const record of this.sends) {
      const copy = record.copies.find((c) => c.clientId === clientId);
      if (!copy) continue;
      copy.seq = seq;
      copy.state = "delivered";
    }
    this.refreshStates();
  }

  /** Recompute each copy's state from the outbox and the read receipts; render soon. */
  refreshStates() {
    if (!this.sends.length) return;
    for (const record of this.sends) {
      for (const copy of record.copies) {
        if (copy.state === "transferred") continue;
        if (copy.seq === null) {
          const entry = this.chat.outbox.find((e) => e.clientId === copy.clientId);
          copy.state = entry?.state === "failed" ? "failed" : "pending";
          copy.error = entry?.state === "failed" ? errorText({ code: entry.errorCode, message: entry.error }) : null;
        } else {
          const summary = this.chat.summary(copy.conversation);
          const read = copy.serverRead || copy.state === "read" || (summary?.peer_read || 0) >= copy.seq;
          // No longer in this counsellor's list: transferred (its read state is not ours).
          copy.state = read ? "read" : summary ? "delivered" : "transferred";
        }
      }
      if (record.started !== undefined && record.elapsed === null && record.copies.every((c) => c.seq !== null)) {
        record.elapsed = performance.now() - record.started;
        $("#bc-status").textContent = `Message envoyé à ${plural(record.copies.length, "bénéficiaire")}.`;
      }
    }
    if (this.pendingRender) return;
    this.pendingRender = true;
    requestAnimationFrame(() => {
      this.pendingRender = false;
      this.renderSends();
    });
  }

  retry(copies) {
    for (const c of copies) {
      c.state = "pending";
      this.chat.retry(c.clientId);
    }
    this.renderSends();
  }

  renderSends() {
    if (!this.visible) return;
    setChildren(
      $("#bc-sends"),
      ...(this.sends.length ? [] : [h("p", { class: "muted" }, "Aucun envoi pour l'instant.")]),
      ...this.sends.map((record) => {
        const total = record.copies.length;
        const done = record.copies.filter((c) => c.seq !== null).length;
        const read = record.copies.filter((c) => c.state === "read").length;
        const failed = record.copies.filter((c) => c.state === "failed");
        const title = record.text
          ? `« ${record.text.slice(0, 80)}${record.text.length > 80 ? "…" : ""} »`
          : `Message du ${dateLong(record.at)} à ${shortTime(record.at)}`;
        return h(
          "article",
          { class: "broadcast-send", dataset: { id: record.id, elapsedMs: record.elapsed === null || record.elapsed === undefined ? "" : String(Math.round(record.elapsed)) } },
          h("p", { class: "panel-title" }, `${record.label} : ${title}`),
          h("label", { for: `bp-${record.id}` }, `Envoyé à ${done} / ${total}`),
          h("progress", { id: `bp-${record.id}`, max: total, value: done }),
          h("p", { class: "broadcast-read" }, `Lu par ${read} / ${total}`),
          failed.length
            ? h(
                "p",
                { class: "error row" },
                `${plural(failed.length, "envoi")} en échec.`,
                h("button", { type: "button", class: "secondary small", onclick: () => this.retry(failed) }, "Réessayer les envois en échec"),
              )
            : null,
          h(
            "details",
            { open: total <= 10 || failed.length > 0 ? true : null },
            h("summary", {}, "Détail par destinataire"),
            h(
              "ul",
              { class: "panel-list broadcast-copies" },
              ...record.copies.map((c) =>
                h(
                  "li",
                  { class: c.state === "failed" ? "late" : "", dataset: { state: c.state, conversation: c.conversation } },
                  h("button", { type: "button", class: "link-button", onclick: () => this.open(c.conversation) }, c.name),
                  ` — ${STATE_TEXT[c.state]}`,
                  c.state === "failed" && c.error ? h("span", { class: "muted" }, ` (${c.error})`) : null,
                  c.state === "failed"
                    ? h("button", { type: "button", class: "secondary small", onclick: () => this.retry([c]) }, "Réessayer", h("span", { class: "visually-hidden" }, ` pour ${c.name}`))
                    : null,
                ),
              ),
            ),
          ),
        );
      }),
    );
  }
}
