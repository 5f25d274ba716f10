/**
 * Attachments in both apps: the file picker (and the camera on the phone),
 * the checks before anything leaves the device (type from the file's first
 * bytes, size, images re-encoded without EXIF), the upload progress of an
 * outbox entry, and the bubble of a received file (thumbnail, open or
 * download after decryption on the device, with a progress bar).
 */

import * as A from "./attachment.js";
import { b64decode } from "./b64.js";
import { t } from "./i18n.js";
import { $, h } from "./ui.js";

const DAY = 86400;
let limitsCache = null;
let knownLimits = null;

/** The server's attachment limits (cached for the page's life). */
export async function attachmentLimits(chat) {
  if (!limitsCache) {
    limitsCache = chat.api.get("/api/attachments/limits").then(
      (limits) => (knownLimits = limits),
      (err) => {
        limitsCache = null;
        throw err;
      },
    );
  }
  return limitsCache;
}

/** "1,2 Mo", "350 ko". */
export function sizeText(bytes) {
  if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toLocaleString("fr-FR", { maximumFractionDigits: 1 })} Mo`;
  return `${Math.max(1, Math.round(bytes / 1024))} ko`;
}

function typeLabel(type) {
  return { "application/pdf": "PDF", "image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP" }[type] || type;
}

/**
 * Check and queue `file` (a File) for conversation `conversation`. Resolves to
 * null once queued, or to the French reason it was refused (nothing sent).
 */
export async function queueFile(chat, conversation, file) {
  const limits = await attachmentLimits(chat);
  let bytes = new Uint8Array(await file.arrayBuffer());
  const type = A.sniffMediaType(bytes.subarray(0, 16));
  if (!type || !limits.types.includes(type)) return t("attachWrongType");
  let thumb = null;
  if (type.startsWith("image/")) {
    try {
      const prepared = await A.prepareImage(bytes, type, limits.image_quality);
      bytes = prepared.bytes;
      thumb = prepared.thumb;
    } catch {
      return t("attachUnreadableImage");
    }
  }
  if (bytes.length > limits.max_bytes) return t("attachTooLarge", { max: sizeText(limits.max_bytes) });
  const key = A.newFileKey();
  const body = JSON.parse(A.attachmentBody({ key, name: file.name || "fichier", type, size: bytes.length, digest: await A.sha256(bytes), thumb }));
  await chat.sendAttachment(conversation, body, bytes);
  return null;
}

/**
 * Wire the picker buttons of a page: `#btn-attach` opens `#attach-file`,
 * `#btn-camera` (the phone) opens `#attach-camera`; refusals go to `#attach-error`.
 */
export function bindAttachButtons(chat, conversationOf) {
  // Known before the thread is drawn: the lifetime ("expirée") and the scanner's button.
  attachmentLimits(chat).catch(() => null);
  const error = $("#attach-error");
  const pick = async (input) => {
    const file = input.files && input.files[0];
    input.value = "";
    if (!file) return;
    error.hidden = true;
    const conv = conversationOf();
    if (!conv) return;
    let why;
    try {
      why = await queueFile(chat, conv, file);
    } catch (err) {
      why = t("genericError", { message: err.message || err.code });
    }
    if (why) {
      error.textContent = why;
      error.hidden = false;
    }
  };
  for (const [buttonId, inputId] of [["#btn-attach", "#attach-file"], ["#btn-camera", "#attach-camera"]]) {
    const button = $(buttonId);
    const input = $(inputId);
    if (!button || !input) continue;
    button.addEventListener("click", () => input.click());
    input.addEventListener("change", () => pick(input));
  }
  watchUploads(chat);
}

const watched = new WeakSet();

/** Move the progress bar of each uploading outbox entry (`#up-<clientId>`). */
export function watchUploads(chat) {
  if (watched.has(chat)) return;
  watched.add(chat);
  chat.on("upload", ({ clientId, loaded, total }) => {
    const bar = document.getElementById(`up-${clientId}`);
    if (bar && total) bar.value = loaded / total;
  });
}

/** The upload block of a pending attachment entry (name, size, progress bar). */
export function pendingAttachment(entry) {
  const c = entry.content || {};
  return h(
    "div",
    { class: "attachment" },
    h("p", { class: "attachment-name" }, c.name || ""),
    h("p", { class: "attachment-size" }, `${typeLabel(c.type)} · ${sizeText(c.size || 0)}`),
    entry.state === "failed" ? null : h("progress", { id: `up-${entry.clientId}`, max: "1", value: entry.meta?.blob ? "1" : "0", "aria-label": t("attachUploading", { name: c.name || "" }) }),
  );
}

function dataUrl(type, bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `data:${type};base64,${btoa(bin)}`;
}

/** Whether the attachment of message `m` is past its lifetime (the server deleted it). */
export function isExpired(m, ttlDays = 120) {
  return !!m.createdAt && m.createdAt + ttlDays * DAY < Date.now() / 1000;
}

/**
 * The content of a received (or sent) attachment message: thumbnail, name,
 * size, and "Ouvrir"/"Afficher l'image" + "Télécharger", decrypted on the device.
 */
export function attachmentBlock(m, chat) {
  const c = m.content || {};
  const box = h("div", { class: "attachment" });
  const status = h("p", { class: "attachment-status", role: "status" });
  const bar = h("progress", { max: "1", value: "0", hidden: true, "aria-label": t("attachDownloading", { name: c.name || "" }) });
  if (c.thumb?.data) {
    try {
      box.append(h("img", { class: "attachment-thumb", src: dataUrl(c.thumb.type || "image/jpeg", b64decode(c.thumb.data)), alt: t("attachPreview", { name: c.name || "" }) }));
    } catch {
      /* a bad thumbnail is only a missing preview */
    }
  }
  box.append(h("p", { class: "attachment-name" }, c.name || t("attachLabel")), h("p", { class: "attachment-size" }, `${typeLabel(c.type)} · ${sizeText(c.size || 0)}`));
  const expired = () => {
    box.classList.add("attachment-expired");
    setStatus(t("attachExpired"));
    for (const b of box.querySelectorAll("button")) b.remove();
  };
  const setStatus = (text) => {
    status.textContent = text;
  };
  const fetchFile = async () => {
    setStatus("");
    bar.hidden = false;
    bar.value = 0;
    try {
      const response = await fetch(`/api/attachments/${encodeURIComponent(m.meta.blob)}`, {
        headers: { Authorization: `Bearer ${chat.api.token}` },
        credentials: "omit",
        cache: "no-store",
      });
      if (!response.ok) {
        const data = await response.json().catch(() => ({}));
        const code = data.error?.code || "";
        if (code === "attachment_expired") expired();
        else setStatus(code === "attachment_not_found" ? t("attachGone") : t("genericError", { message: data.error?.message || response.status }));
        return null;
      }
      const body = { key: b64decode(c.key), size: c.size, digest: b64decode(c.sha256) };
      const plain = await A.decryptResponse(body.key, response, (loaded, total) => {
        if (total) bar.value = loaded / total;
      });
      await A.checkFile(body, plain);
      return new Blob([plain], { type: c.type });
    } catch (err) {
      setStatus(err instanceof A.AttachmentError ? t("attachCorrupt") : t("networkError"));
      return null;
    } finally {
      bar.hidden = true;
    }
  };
  const save = (blob) => {
    const url = URL.createObjectURL(blob);
    const a = h("a", { href: url, download: c.name || "piece-jointe" });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
  };
  const open = async () => {
    const blob = await fetchFile();
    if (!blob) return;
    if (c.type?.startsWith("image/")) {
      const url = URL.createObjectURL(blob);
      box.querySelector(".attachment-full")?.remove();
      box.append(h("img", { class: "attachment-full", src: url, alt: c.name || t("attachLabel") }));
    } else {
      const url = URL.createObjectURL(blob);
      // "noopener" would make window.open return null even when the tab opens:
      // cut the opener by hand and download only when the tab was blocked.
      const win = window.open(url, "_blank");
      if (win) win.opener = null;
      else save(blob);
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    }
  };
  const download = async () => {
    const blob = await fetchFile();
    if (blob) save(blob);
  };
  const scan = async () => {
    setStatus(t("attachScanning"));
    try {
      const granted = await chat.api.request("POST", `/api/attachments/${encodeURIComponent(m.meta.blob)}/grant`);
      const response = await fetch(knownLimits.scan_url, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        credentials: "omit",
        body: JSON.stringify({ url: new URL(granted.url, location.origin).href, key: c.key, sha256: c.sha256, size: c.size }),
      });
      const verdict = await response.json();
      if (verdict.status === "clean") setStatus(t("attachScanClean"));
      else if (verdict.status === "infected") setStatus(t("attachScanInfected", { threat: verdict.threat || "?" }));
      else setStatus(t("attachScanFailed"));
    } catch {
      setStatus(t("attachScanFailed"));
    }
  };
  const suffix = h("span", { class: "visually-hidden" }, ` : ${c.name || ""}`);
  box.append(
    h(
      "p",
      { class: "attachment-actions" },
      h("button", { type: "button", class: "secondary small attachment-open", onclick: open }, c.type?.startsWith("image/") ? t("attachShow") : t("attachOpen"), suffix),
      " ",
      h("button", { type: "button", class: "secondary small attachment-download", onclick: download }, t("attachDownload"), suffix.cloneNode(true)),
      knownLimits?.scan_url && !m.mine ? " " : null,
      knownLimits?.scan_url && !m.mine ? h("button", { type: "button", class: "secondary small attachment-scan", onclick: scan }, t("attachScan"), suffix.cloneNode(true)) : null,
    ),
    bar,
    status,
  );
  if (isExpired(m, knownLimits?.ttl_days)) expired();
  return box;
}
