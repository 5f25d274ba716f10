/**
 * Service worker of the counsellor console (a module worker): push
 * notifications only (the console is not an offline app). The preview is
 * decrypted here with the keys this browser holds: ../shared/push-sw.js.
 */

import { onNotificationClick, onPush } from "../shared/push-sw.js";

self.addEventListener("push", onPush);
self.addEventListener("notificationclick", onNotificationClick);
self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));
