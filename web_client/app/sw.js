/**
 * Service worker of the beneficiary app (a module worker): keeps the app
 * shell so the app opens without network. Network first (always the latest
 * code when online), the cache when offline. The API and the WebSocket are
 * never cached: messages are end-to-end encrypted and fetched fresh. Push
 * notifications: ../shared/push-sw.js (the preview is decrypted here, on the
 * device).
 */

import { onNotificationClick, onPush } from "../shared/push-sw.js";

self.addEventListener("push", onPush);
self.addEventListener("notificationclick", onNotificationClick);

const CACHE = "cejchat-app-v2";
const SHELL = [
  "/app/",
  "/app/index.html",
  "/app/app.css",
  "/app/touch.css",
  "/app/app.js",
  "/app/manifest.webmanifest",
  "/shared/base.css",
  "/shared/devices.css",
  "/shared/api.js",
  "/shared/attachment.js",
  "/shared/attach-ui.js",
  "/shared/b64.js",
  "/shared/meta.js",
  "/shared/cards.js",
  "/shared/chat.js",
  "/shared/crypto.js",
  "/shared/e2ee.js",
  "/shared/errors.js",
  "/shared/i18n.js",
  "/shared/forms.js",
  "/shared/idb.js",
  "/shared/items.js",
  "/shared/session.js",
  "/shared/socket.js",
  "/shared/ui.js",
  "/shared/lifecycle.js",
  "/shared/notify.js",
  "/shared/push-sw.js",
  "/shared/people.js",
  "/shared/activation.js",
  "/shared/device-name.js",
  "/shared/devices.js",
  "/shared/recovery.js",
  "/shared/wire.js",
  "/shared/icons/favicon.png",
  "/shared/icons/favicon-alert.png",
  "/shared/icons/icon-192.png",
  "/shared/icons/icon-512.png",
  "/shared/icons/icon-maskable-512.png",
];

self.addEventListener("install", (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(SHELL))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== CACHE).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/api/") || url.pathname === "/ws") return;
  if (!url.pathname.startsWith("/app/") && !url.pathname.startsWith("/shared/")) return;
  event.respondWith(
    fetch(request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(request, copy));
        }
        return response;
      })
      .catch(() =>
        caches.match(request).then((hit) => hit || (request.mode === "navigate" ? caches.match("/app/") : Response.error())),
      ),
  );
});
