/**
 * A QR code encoder (ISO/IEC 18004), written for the activation sheet: byte
 * mode, error correction level M, versions 1 to 20 (up to 666 bytes of UTF-8),
 * the mask chosen by the standard's penalty rules. Everything happens on the
 * device: the activation link never leaves the page.
 *
 * encodeQr(text, { mask? }) -> { size, version, mask, dark(x, y) } (a given mask, 0 to 7,
 * instead of the best one: for tests)
 * qrSvg(text, { label }) -> an <svg> element (4-module quiet zone), or throws
 * RangeError if the text does not fit.
 */

const MAX_VERSION = 20;
// Level M, per version (index 0 unused): error correction codewords per block, and blocks.
const EC_PER_BLOCK = [0, 10, 16, 26, 18, 24, 16, 18, 22, 22, 26, 30, 22, 22, 24, 24, 28, 28, 26, 26, 26];
const BLOCKS = [0, 1, 1, 1, 2, 2, 4, 4, 4, 5, 5, 5, 8, 9, 9, 10, 10, 11, 13, 14, 16];
const LEVEL_M_BITS = 0b00;

// ---------------------------------------------------------------- GF(256), Reed-Solomon

const EXP = new Uint8Array(512);
const LOG = new Uint8Array(256);
{
  let v = 1;
  for (let i = 0; i < 255; i += 1) {
    EXP[i] = v;
    LOG[v] = i;
    v <<= 1;
    if (v & 0x100) v ^= 0x11d;
  }
  for (let i = 255; i < 512; i += 1) EXP[i] = EXP[i - 255];
}

function gfMul(a, b) {
  return a === 0 || b === 0 ? 0 : EXP[LOG[a] + LOG[b]];
}

/** The generator polynomial of degree n, highest coefficient first (leading 1 omitted). */
function generator(n) {
  let poly = [1];
  for (let i = 0; i < n; i += 1) {
    const next = new Array(poly.length + 1).fill(0);
    for (let j = 0; j < poly.length; j += 1) {
      next[j] ^= poly[j];
      next[j + 1] ^= gfMul(poly[j], EXP[i]);
    }
    poly = next;
  }
  return poly.slice(1);
}

/** The n error correction codewords of `data` (the remainder of data·x^n by the generator). */
function reedSolomon(data, n) {
  const gen = generator(n);
  const rem = new Array(n).fill(0);
  for (const byte of data) {
    const factor = byte ^ rem.shift();
    rem.push(0);
    for (let i = 0; i < n; i += 1) rem[i] ^= gfMul(gen[i], factor);
  }
  return rem;
}

// ---------------------------------------------------------------- capacities

function sizeOf(version) {
  return version * 4 + 17;
}

/** Modules left for data and error correction once the function patterns are drawn. */
function rawModules(version) {
  let n = (16 * version + 128) * version + 64;
  if (version >= 2) {
    const align = Math.floor(version / 7) + 2;
    n -= (25 * align - 10) * align - 55;
    if (version >= 7) n -= 36;
  }
  return n;
}

function dataCodewords(version) {
  return Math.floor(rawModules(version) / 8) - EC_PER_BLOCK[version] * BLOCKS[version];
}

function alignmentPositions(version) {
  if (version === 1) return [];
  const count = Math.floor(version / 7) + 2;
  const step = Math.ceil((version * 4 + 4) / (count * 2 - 2)) * 2;
  const last = sizeOf(version) - 7;
  const positions = [6];
  for (let i = count - 2; i >= 0; i -= 1) positions.push(last - i * step);
  return positions;
}

// ---------------------------------------------------------------- data bits

function dataBits(bytes, version) {
  const bits = [];
  const put = (value, length) => {
    for (let i = length - 1; i >= 0; i -= 1) bits.push((value >>> i) & 1);
  };
  put(0b0100, 4); // byte mode
  put(bytes.length, version < 10 ? 8 : 16);
  for (const b of bytes) put(b, 8);
  const capacity = dataCodewords(version) * 8;
  put(0, Math.min(4, capacity - bits.length)); // terminator
  while (bits.length % 8) bits.push(0);
  const codewords = [];
  for (let i = 0; i < bits.length; i += 8) codewords.push(bits.slice(i, i + 8).reduce((a, b) => (a << 1) | b, 0));
  for (let pad = 0xec; codewords.length < capacity / 8; pad ^= 0xec ^ 0x11) codewords.push(pad);
  return codewords;
}

/** Split into blocks, add each block's error correction, interleave. */
function interleaved(data, version) {
  const blocks = BLOCKS[version];
  const ecLen = EC_PER_BLOCK[version];
  const total = Math.floor(rawModules(version) / 8);
  const shortLen = Math.floor(total / blocks) - ecLen; // data codewords of a short block
  const longCount = total % blocks;
  const shortCount = blocks - longCount;
  const dataBlocks = [];
  const ecBlocks = [];
  let at = 0;
  for (let b = 0; b < blocks; b += 1) {
    const len = shortLen + (b < shortCount ? 0 : 1);
    const block = data.slice(at, at + len);
    at += len;
    dataBlocks.push(block);
    ecBlocks.push(reedSolomon(block, ecLen));
  }
  const out = [];
  for (let i = 0; i <= shortLen; i += 1) for (const block of dataBlocks) if (i < block.length) out.push(block[i]);
  for (let i = 0; i < ecLen; i += 1) for (const block of ecBlocks) out.push(block[i]);
  return out;
}

// ---------------------------------------------------------------- the matrix

class Matrix {
  constructor(version) {
    this.version = version;
    this.size = sizeOf(version);
    this.dark = new Uint8Array(this.size * this.size);
    this.fixed = new Uint8Array(this.size * this.size);
  }

  get(x, y) {
    return this.dark[y * this.size + x] === 1;
  }

  setFixed(x, y, dark) {
    this.dark[y * this.size + x] = dark ? 1 : 0;
    this.fixed[y * this.size + x] = 1;
  }

  isFixed(x, y) {
    return this.fixed[y * this.size + x] === 1;
  }
}

function drawFunctionPatterns(m) {
  const n = m.size;
  for (let i = 0; i < n; i += 1) {
    m.setFixed(6, i, i % 2 === 0);
    m.setFixed(i, 6, i % 2 === 0);
  }
  // Finders with their separators (drawn over the edges that fall outside).
  for (const [cx, cy] of [[3, 3], [n - 4, 3], [3, n - 4]]) {
    for (let dy = -4; dy <= 4; dy += 1) {
      for (let dx = -4; dx <= 4; dx += 1) {
        const x = cx + dx;
        const y = cy + dy;
        if (x < 0 || y < 0 || x >= n || y >= n) continue;
        const ring = Math.max(Math.abs(dx), Math.abs(dy));
        m.setFixed(x, y, ring !== 2 && ring !== 4);
      }
    }
  }
  const positions = alignmentPositions(m.version);
  const last = positions.length - 1;
  positions.forEach((cx, i) => {
    positions.forEach((cy, j) => {
      if ((i === 0 && j === 0) || (i === 0 && j === last) || (i === last && j === 0)) return; // finders
      for (let dy = -2; dy <= 2; dy += 1) {
        for (let dx = -2; dx <= 2; dx += 1) m.setFixed(cx + dx, cy + dy, Math.max(Math.abs(dx), Math.abs(dy)) !== 1);
      }
    });
  });
  drawFormat(m, 0); // reserves the format areas; redrawn with the chosen mask
  drawVersion(m);
}

function formatBits(mask) {
  const data = (LEVEL_M_BITS << 3) | mask;
  let rem = data;
  for (let i = 0; i < 10; i += 1) rem = (rem << 1) ^ ((rem >>> 9) * 0x537);
  return ((data << 10) | rem) ^ 0x5412;
}

function drawFormat(m, mask) {
  const bits = formatBits(mask);
  const bit = (i) => ((bits >>> i) & 1) === 1;
  const n = m.size;
  // Around the top-left finder.
  for (let i = 0; i <= 5; i += 1) m.setFixed(8, i, bit(i));
  m.setFixed(8, 7, bit(6));
  m.setFixed(8, 8, bit(7));
  m.setFixed(7, 8, bit(8));
  for (let i = 9; i < 15; i += 1) m.setFixed(14 - i, 8, bit(i));
  // The copy split between the other two finders.
  for (let i = 0; i < 8; i += 1) m.setFixed(n - 1 - i, 8, bit(i));
  for (let i = 8; i < 15; i += 1) m.setFixed(8, n - 15 + i, bit(i));
  m.setFixed(8, n - 8, true); // the dark module
}

function drawVersion(m) {
  if (m.version < 7) return;
  let rem = m.version;
  for (let i = 0; i < 12; i += 1) rem = (rem << 1) ^ ((rem >>> 11) * 0x1f25);
  const bits = (m.version << 12) | rem;
  for (let i = 0; i < 18; i += 1) {
    const dark = ((bits >>> i) & 1) === 1;
    const a = m.size - 11 + (i % 3);
    const b = Math.floor(i / 3);
    m.setFixed(a, b, dark);
    m.setFixed(b, a, dark);
  }
}

function placeData(m, codewords) {
  const n = m.size;
  let i = 0;
  const total = codewords.length * 8;
  for (let right = n - 1; right >= 1; right -= 2) {
    if (right === 6) right = 5; // the vertical timing pattern
    const upward = ((right + 1) & 2) === 0;
    for (let vert = 0; vert < n; vert += 1) {
      const y = upward ? n - 1 - vert : vert;
      for (let j = 0; j < 2; j += 1) {
        const x = right - j;
        if (m.isFixed(x, y)) continue;
        if (i < total) m.dark[y * n + x] = (codewords[i >>> 3] >>> (7 - (i & 7))) & 1;
        i += 1;
      }
    }
  }
}

const MASKS = [
  (x, y) => (x + y) % 2 === 0,
  (x, y) => y % 2 === 0,
  (x) => x % 3 === 0,
  (x, y) => (x + y) % 3 === 0,
  (x, y) => (Math.floor(x / 3) + Math.floor(y / 2)) % 2 === 0,
  (x, y) => ((x * y) % 2) + ((x * y) % 3) === 0,
  (x, y) => (((x * y) % 2) + ((x * y) % 3)) % 2 === 0,
  (x, y) => (((x + y) % 2) + ((x * y) % 3)) % 2 === 0,
];

function applyMask(m, mask) {
  const test = MASKS[mask];
  for (let y = 0; y < m.size; y += 1) {
    for (let x = 0; x < m.size; x += 1) if (!m.isFixed(x, y) && test(x, y)) m.dark[y * m.size + x] ^= 1;
  }
}

/** The standard's penalty score (lower is easier to read). */
function penalty(m) {
  const n = m.size;
  let score = 0;
  const finderLike = [
    [1, 0, 1, 1, 1, 0, 1, 0, 0, 0, 0],
    [0, 0, 0, 0, 1, 0, 1, 1, 1, 0, 1],
  ];
  for (const horizontal of [true, false]) {
    for (let a = 0; a < n; a += 1) {
      const line = [];
      for (let b = 0; b < n; b += 1) line.push(horizontal ? m.dark[a * n + b] : m.dark[b * n + a]);
      let run = 1;
      for (let b = 1; b <= n; b += 1) {
        if (b < n && line[b] === line[b - 1]) run += 1;
        else {
          if (run >= 5) score += 3 + (run - 5);
          run = 1;
        }
      }
      for (let b = 0; b + 11 <= n; b += 1) {
        for (const pattern of finderLike) if (pattern.every((v, k) => line[b + k] === v)) score += 40;
      }
    }
  }
  for (let y = 0; y + 1 < n; y += 1) {
    for (let x = 0; x + 1 < n; x += 1) {
      const c = m.dark[y * n + x];
      if (c === m.dark[y * n + x + 1] && c === m.dark[(y + 1) * n + x] && c === m.dark[(y + 1) * n + x + 1]) score += 3;
    }
  }
  const dark = m.dark.reduce((a, b) => a + b, 0);
  const total = n * n;
  score += Math.floor(Math.abs(dark * 20 - total * 10) / total) * 10;
  return score;
}

/** The QR code of `text` (UTF-8, byte mode, level M), in the smallest version it fits. */
export function encodeQr(text, { mask: forced = null } = {}) {
  const bytes = [...new TextEncoder().encode(text)];
  let version = 1;
  while (version <= MAX_VERSION && Math.ceil((4 + (version < 10 ? 8 : 16) + bytes.length * 8) / 8) > dataCodewords(version)) version += 1;
  if (version > MAX_VERSION) throw new RangeError(`text too long for a QR code (${bytes.length} bytes)`);
  const codewords = interleaved(dataBits(bytes, version), version);
  let best = null;
  for (let mask = 0; mask < 8; mask += 1) {
    if (forced !== null && mask !== forced) continue;
    const m = new Matrix(version);
    drawFunctionPatterns(m);
    placeData(m, codewords);
    applyMask(m, mask);
    drawFormat(m, mask);
    const score = penalty(m);
    if (!best || score < best.score) best = { m, mask, score };
  }
  const { m, mask } = best;
  return { size: m.size, version, mask, dark: (x, y) => m.get(x, y) };
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An <svg> of the QR code of `text`, with a 4-module quiet zone; `label` is its accessible name. */
export function qrSvg(text, { label = "" } = {}) {
  const qr = encodeQr(text);
  const side = qr.size + 8;
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${side} ${side}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("role", "img");
  if (label) svg.setAttribute("aria-label", label);
  svg.classList.add("qr");
  const background = document.createElementNS(SVG_NS, "rect");
  background.setAttribute("width", String(side));
  background.setAttribute("height", String(side));
  background.setAttribute("fill", "#fff");
  const path = document.createElementNS(SVG_NS, "path");
  let d = "";
  for (let y = 0; y < qr.size; y += 1) {
    for (let x = 0; x < qr.size; x += 1) if (qr.dark(x, y)) d += `M${x + 4} ${y + 4}h1v1h-1z`;
  }
  path.setAttribute("d", d);
  path.setAttribute("fill", "#000");
  svg.append(background, path);
  return svg;
}
