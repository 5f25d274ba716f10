/**
 * Names of the people a thread mentions (GET /api/people, docs/protocol.md):
 * the sender of each message and whoever a system event names (a previous
 * counsellor, the supervisor who transferred, the owner of a new device).
 * The conversation list only carries the current peer; a thread outlives
 * its counsellors. Ids are fetched in batches of at most 50, each once.
 */

const BATCH = 50;

export class People {
  /** `onChange()` is called after names arrived. */
  constructor(api, onChange = () => {}) {
    this.api = api;
    this.onChange = onChange;
    this.known = new Map();
    this.asked = new Set();
    this.wanted = new Set();
    this.timer = null;
  }

  /** Remember people already known (oneself, the list's peers). */
  add(person) {
    if (person?.id && person.display_name) this.known.set(person.id, { display_name: person.display_name, role: person.role });
  }

  nameOf(id) {
    return this.known.get(id)?.display_name || "";
  }

  roleOf(id) {
    return this.known.get(id)?.role || "";
  }

  /** Ask for the names of `ids` not known yet (batched; each id at most once). */
  want(ids) {
    for (const id of ids) {
      if (id && id !== "system" && !this.known.has(id) && !this.asked.has(id)) this.wanted.add(id);
    }
    if (!this.wanted.size || this.timer) return;
    this.timer = setTimeout(() => this.fetch(), 50);
  }

  async fetch() {
    this.timer = null;
    const ids = [...this.wanted].slice(0, BATCH);
    for (const id of ids) {
      this.wanted.delete(id);
      this.asked.add(id);
    }
    try {
      const answer = await this.api.people(ids);
      for (const p of answer.people || []) this.add(p);
      if ((answer.people || []).length) this.onChange();
    } catch {
      for (const id of ids) this.asked.delete(id); // asked again with the next thread
    }
    if (this.wanted.size) this.want([]);
  }
}

/** The ids a stored message mentions (its sender, and the people of a system event). */
export function mentioned(m) {
  const meta = m.meta || {};
  return [m.sender, meta.from, meta.to, meta.by, meta.user].filter((id) => typeof id === "string");
}
