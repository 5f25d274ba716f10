/**
 * The portfolio dashboard (issue #15, point 2): one row per beneficiary from
 * GET /api/portfolio (server-visible fields only: no message is decrypted
 * here), sortable columns (aria-sort), filters, CSV export (GET
 * /api/portfolio.csv). Supervisors see their structure with each row's
 * counsellor and can keep one counsellor's rows.
 */

import { dateLong, longTime, shortTime } from "../shared/i18n.js";
import { $, h, setChildren } from "../shared/ui.js";
import { errorText } from "../shared/errors.js";

const DAY = 86400;
const INACTIVE_DAYS = 15;

/** Columns: key, header, sort value (null sorts last), cell. */
function columns(supervisor, now) {
  const cols = [
    { key: "name", label: "Bénéficiaire", value: (r) => (r.beneficiary.display_name || r.beneficiary.login || "").toLocaleLowerCase("fr") },
    supervisor ? { key: "counsellor", label: "Conseiller", value: (r) => (r.counsellor.display_name || "").toLocaleLowerCase("fr") } : null,
    { key: "activity", label: "Dernière activité dans l'app", value: (r) => (r.online ? now : r.last_app_activity), desc: true },
    { key: "unread", label: "Non lus (conseiller / bénéficiaire)", value: (r) => r.unread_counsellor, desc: true },
    { key: "waiting", label: "En attente de réponse depuis", value: (r) => r.waiting_since },
    { key: "overdue", label: "Démarches en retard", value: (r) => r.overdue_actions, desc: true },
    { key: "appointment", label: "Prochain rendez-vous", value: (r) => r.next_appointment },
    { key: "flagged", label: "Prioritaire", value: (r) => (r.flagged ? 1 : 0), desc: true },
  ];
  return cols.filter(Boolean);
}

function ago(seconds, now) {
  const days = Math.floor((now - seconds) / DAY);
  if (days <= 0) return `aujourd'hui, ${shortTime(seconds)}`;
  if (days === 1) return "hier";
  return `il y a ${days} jours`;
}

const FILTERS = [
  { id: "pf-waiting", label: "En attente de réponse", test: (r) => r.waiting_since !== null },
  { id: "pf-overdue", label: "Démarches en retard", test: (r) => r.overdue_actions > 0 },
  { id: "pf-inactive", label: `Inactifs depuis ${INACTIVE_DAYS} jours`, test: (r, now) => !r.online && (!r.last_app_activity || r.last_app_activity < now - INACTIVE_DAYS * DAY) },
  { id: "pf-soon", label: "Rendez-vous d'ici demain soir", test: (r, now) => r.next_appointment !== null && r.next_appointment < endOfTomorrow(now) },
  { id: "pf-flagged", label: "Prioritaires", test: (r) => r.flagged },
];

function endOfTomorrow(now) {
  const d = new Date(now * 1000);
  d.setDate(d.getDate() + 2);
  d.setHours(0, 0, 0, 0);
  return d.getTime() / 1000;
}

function normalise(text) {
  return (text || "").normalize("NFD").replace(/[\u0300-\u036f]/g, "").toLowerCase();
}

export class Portfolio {
  /** `open(conversationId)` opens a thread (counsellors); `onClose()` goes back. */
  constructor({ api, me, open, onClose }) {
    this.api = api;
    this.me = me;
    this.open = open;
    this.onClose = onClose;
    this.rows = [];
    this.now = Date.now() / 1000;
    this.sort = { key: "activity", desc: true };
    this.section = $("#portfolio");
    this.built = false;
  }

  get supervisor() {
    return this.me.role === "supervisor";
  }

  build() {
    if (this.built) return;
    this.built = true;
    const filters = FILTERS.map((f) =>
      h("p", { class: "check" }, h("input", { type: "checkbox", id: f.id, onchange: () => this.render() }), h("label", { for: f.id }, f.label)),
    );
    const counsellor = this.supervisor
      ? h("p", {}, h("label", { for: "pf-counsellor" }, "Conseiller"), h("select", { id: "pf-counsellor", onchange: () => this.render() }))
      : null;
    setChildren(
      this.section,
      h(
        "div",
        { class: "portfolio-head" },
        h("h2", { id: "portfolio-title", tabindex: "-1" }, "Tableau de bord"),
        h(
          "div",
          { class: "row" },
          h("button", { type: "button", class: "secondary", id: "btn-portfolio-refresh", onclick: () => this.load() }, "Actualiser"),
          h("button", { type: "button", class: "secondary", id: "btn-portfolio-csv", onclick: () => this.exportCsv() }, "Exporter (CSV)"),
          h("button", { type: "button", class: "ghost", id: "btn-portfolio-close", onclick: () => this.onClose() }, "Fermer le tableau de bord"),
        ),
      ),
      h("p", { class: "muted" }, "Uniquement ce que le serveur voit : dates, compteurs, échéances. Aucun message n'est lu."),
      h(
        "div",
        { class: "portfolio-filters", role: "group", "aria-label": "Filtres" },
        h("p", {}, h("label", { for: "pf-search" }, "Rechercher"), h("input", { id: "pf-search", type: "search", autocomplete: "off", oninput: () => this.render() })),
        counsellor,
        ...filters,
      ),
      h("p", { id: "portfolio-status", class: "muted", role: "status" }),
      h(
        "div",
        { class: "portfolio-scroll" },
        h(
          "table",
          { class: "table portfolio-table", id: "portfolio-table" },
          h("caption", { class: "visually-hidden" }, "Bénéficiaires suivis : cliquez sur un en-tête pour trier"),
          h("thead", {}, h("tr", { id: "portfolio-headers" })),
          h("tbody", { id: "portfolio-body" }),
        ),
      ),
    );
  }

  async show() {
    this.build();
    this.section.hidden = false;
    $("#portfolio-title").focus();
    await this.load();
  }

  hide() {
    this.section.hidden = true;
  }

  async load() {
    const status = $("#portfolio-status");
    status.textContent = "Chargement…";
    try {
      const answer = await this.api.get("/api/portfolio");
      this.rows = answer.rows || [];
      this.now = answer.now || Date.now() / 1000;
    } catch (err) {
      status.textContent = errorText(err);
      return;
    }
    if (this.supervisor) {
      const select = $("#pf-counsellor");
      const chosen = select.value;
      const seen = new Map(this.rows.map((r) => [r.counsellor.id, r.counsellor.display_name || r.counsellor.id]));
      setChildren(select, h("option", { value: "" }, "Tous les conseillers"), ...[...seen].sort((a, b) => a[1].localeCompare(b[1], "fr")).map(([id, name]) => h("option", { value: id }, name)));
      select.value = seen.has(chosen) ? chosen : "";
    }
    this.render();
  }

  visibleRows() {
    const query = normalise($("#pf-search").value.trim());
    const who = this.supervisor ? $("#pf-counsellor").value : "";
    const active = FILTERS.filter((f) => $(`#${f.id}`).checked);
    const col = columns(this.supervisor, this.now).find((c) => c.key === this.sort.key);
    const rows = this.rows.filter(
      (r) =>
        (!query || normalise(r.beneficiary.display_name).includes(query) || normalise(r.beneficiary.login).includes(query)) &&
        (!who || r.counsellor.id === who) &&
        active.every((f) => f.test(r, this.now)),
    );
    const sign = this.sort.desc ? -1 : 1;
    return rows.sort((a, b) => {
      const va = col.value(a);
      const vb = col.value(b);
      if (va === null || va === undefined) return vb === null || vb === undefined ? 0 : 1;
      if (vb === null || vb === undefined) return -1;
      return (va < vb ? -1 : va > vb ? 1 : 0) * sign;
    });
  }

  render() {
    const cols = columns(this.supervisor, this.now);
    setChildren(
      $("#portfolio-headers"),
      ...cols.map((c) => {
        const sorted = c.key === this.sort.key;
        return h(
          "th",
          { scope: "col", "aria-sort": sorted ? (this.sort.desc ? "descending" : "ascending") : null },
          h(
            "button",
            {
              type: "button",
              class: "sort-button",
              dataset: { sort: c.key },
              onclick: () => {
                this.sort = sorted ? { key: c.key, desc: !this.sort.desc } : { key: c.key, desc: Boolean(c.desc) };
                this.render();
              },
            },
            c.label,
            h("span", { "aria-hidden": "true", class: "sort-mark" }, sorted ? (this.sort.desc ? " ▼" : " ▲") : ""),
          ),
        );
      }),
    );
    const rows = this.visibleRows();
    setChildren($("#portfolio-body"), ...rows.map((r) => this.renderRow(r)));
    $("#portfolio-status").textContent = `${rows.length} bénéficiaire${rows.length > 1 ? "s" : ""} sur ${this.rows.length}.`;
  }

  renderRow(r) {
    const now = this.now;
    const name = r.beneficiary.display_name || r.beneficiary.login;
    const mine = r.counsellor.id === this.me.id;
    const nameCell = mine
      ? h("button", { type: "button", class: "link-button", onclick: () => this.open(r.conversation_id) }, name)
      : h("span", {}, name);
    const cells = [
      h("th", { scope: "row" }, nameCell, r.beneficiary.programme ? h("span", { class: "muted" }, ` ${r.beneficiary.programme}`) : null, r.archived ? h("span", { class: "tag tag-archived" }, " Archivé") : null),
      this.supervisor ? h("td", {}, r.counsellor.display_name || "", r.temporary_until ? h("span", { class: "muted" }, ` (temporaire jusqu'au ${dateLong(r.temporary_until)})`) : null) : null,
      h("td", { dataset: { col: "activity" } }, r.online ? "En ligne" : r.last_app_activity ? h("span", { title: longTime(r.last_app_activity) }, ago(r.last_app_activity, now)) : "Jamais"),
      h("td", { dataset: { col: "unread" } }, `${r.unread_counsellor} / ${r.unread_beneficiary}`),
      h("td", { dataset: { col: "waiting" } }, r.waiting_since ? h("span", { title: longTime(r.waiting_since) }, ago(r.waiting_since, now)) : "—"),
      h("td", { dataset: { col: "overdue" }, class: r.overdue_actions ? "late" : null }, r.open_actions ? `${r.overdue_actions} sur ${r.open_actions}` : "0"),
      h("td", { dataset: { col: "appointment" } }, r.next_appointment ? longTime(r.next_appointment) : "—"),
      h("td", { dataset: { col: "flagged" } }, r.flagged ? h("span", { class: "tag tag-flag" }, "Prioritaire") : ""),
    ];
    return h("tr", { dataset: { id: r.conversation_id, login: r.beneficiary.login || "" } }, ...cells);
  }

  async exportCsv() {
    const status = $("#portfolio-status");
    try {
      const response = await fetch("/api/portfolio.csv", { headers: { Authorization: `Bearer ${this.api.token}` }, credentials: "omit", cache: "no-store" });
      if (!response.ok) {
        const body = await response.json().catch(() => ({}));
        throw Object.assign(new Error(), { status: response.status, code: body.error?.code });
      }
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: `portefeuille-${new Date().toISOString().slice(0, 10)}.csv` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
      status.textContent = "Export CSV téléchargé.";
    } catch (err) {
      status.textContent = errorText(err);
    }
  }
}
