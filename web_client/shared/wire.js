/**
 * Small wire helpers shared by the console and the app.
 *
 * docs/protocol.md: WebSocket frames and message history carry binary fields
 * as standard base64 with padding; the key API (and crypto.js) uses
 * base64url without padding. These convert between the two spellings.
 */

import { b64encode } from "./b64.js";

/** base64url (no padding) -> standard base64 with padding. */
export function urlToStd(text) {
  const s = text.replace(/-/g, "+").replace(/_/g, "/");
  return s + "=".repeat((4 - (s.length % 4)) % 4);
}

/** standard base64 (padding optional) -> base64url without padding. */
export function stdToUrl(text) {
  return (text || "").replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A random id for frames, client message ids and device ids: [A-Za-z0-9_-]. */
export function newId(bytes = 12) {
  return b64encode(globalThis.crypto.getRandomValues(new Uint8Array(bytes)));
}

/** Sleep helper (used for retry backoffs, never to wait for the server). */
export function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
