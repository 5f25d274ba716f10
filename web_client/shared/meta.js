/**
 * The canonical encoding of a message's server-visible `meta` (format
 * version 2), as docs/crypto-format.md ("Canonical meta") defines it and
 * chat_server/crypto/meta.py writes it: JSON text in UTF-8, object members
 * sorted by key (keys are 1 to 64 characters of [A-Za-z0-9_]), no
 * whitespace, integers in [-(2^53 - 1), 2^53 - 1] only, strings escaped the
 * way JSON.stringify escapes them, lone surrogates refused, at most 8
 * levels of nesting.
 */

export const MAX_META_DEPTH = 8;
const META_KEY = /^[A-Za-z0-9_]{1,64}$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function sorted(value, where, depth) {
  if (depth > MAX_META_DEPTH) throw new RangeError(`${where}: nested more than ${MAX_META_DEPTH} levels`);
  if (value === null || typeof value === "boolean") return value;
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new RangeError(`${where}: only integers in ±(2^53 - 1) have a canonical form`);
    return value;
  }
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw new RangeError(`${where}: string is not valid Unicode`);
    return value;
  }
  if (Array.isArray(value)) return value.map((item, i) => sorted(item, `${where}[${i}]`, depth + 1));
  if (typeof value === "object" && Object.getPrototypeOf(value) === Object.prototype) {
    const out = {};
    // Keys are ASCII, so the default sort (UTF-16 code units) is code-point order.
    for (const key of Object.keys(value).sort()) {
      if (!META_KEY.test(key)) throw new RangeError(`${where}: key ${JSON.stringify(key.slice(0, 40))} is not [A-Za-z0-9_]{1,64}`);
      out[key] = sorted(value[key], `${where}.${key}`, depth + 1);
    }
    return out;
  }
  throw new TypeError(`${where}: a ${typeof value} has no canonical form`);
}

/** The canonical text of `meta` (an object); throws if it has none. */
export function canonicalMetaText(meta) {
  if (meta === null || typeof meta !== "object" || Array.isArray(meta)) throw new TypeError("meta must be an object");
  return JSON.stringify(sorted(meta, "meta", 1));
}

/** The canonical bytes (UTF-8) of `meta`. */
export function canonicalMeta(meta) {
  return new TextEncoder().encode(canonicalMetaText(meta));
}
