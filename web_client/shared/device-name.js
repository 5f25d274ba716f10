/**
 * The name a device gives itself at registration ("Chrome sur Android"), so
 * that its owner recognises it in their device list (docs/privacy.md,
 * `devices.name`). Made from the browser's user agent only; at most 60
 * characters; never shown to anyone else.
 */

const BROWSERS = [
  [/Edg\//, "Edge"],
  [/SamsungBrowser\//, "Samsung Internet"],
  [/Firefox\//, "Firefox"],
  [/(Chrome|Chromium|CriOS)\//, "Chrome"],
  [/Safari\//, "Safari"],
];

const SYSTEMS = [
  [/iPhone/, "iPhone"],
  [/iPad/, "iPad"],
  [/Android/, "Android"],
  [/Windows/, "Windows"],
  [/Mac OS X|Macintosh/, "Mac"],
  [/CrOS/, "ChromeOS"],
  [/Linux/, "Linux"],
];

function first(table, ua) {
  for (const [re, name] of table) if (re.test(ua)) return name;
  return "";
}

/** "Chrome sur Android", "Firefox", "Navigateur sur Linux", or "" if nothing is known. */
export function deviceName(ua = globalThis.navigator?.userAgent || "") {
  const browser = first(BROWSERS, ua);
  const system = first(SYSTEMS, ua);
  const name = browser && system ? `${browser} sur ${system}` : browser || (system ? `Navigateur sur ${system}` : "");
  return name.slice(0, 60);
}
