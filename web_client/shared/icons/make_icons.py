"""Draw the PNG icons of the console and the app (no dependency: zlib + struct).

    python3 web_client/shared/icons/make_icons.py

A blue rounded square with a white speech bubble; the "alert" favicon adds a
red dot (shown in the tab while new messages wait).
"""

import math
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLUE = (11, 79, 156)
WHITE = (255, 255, 255)
RED = (200, 30, 30)


def _png(size, pixel):
    rows = []
    for y in range(size):
        row = bytearray([0])
        for x in range(size):
            row.extend(pixel(x + 0.5, y + 0.5, size))
        rows.append(bytes(row))
    raw = b"".join(rows)

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 6, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _inside_rounded(x, y, x0, y0, x1, y1, r):
    cx = min(max(x, x0 + r), x1 - r)
    cy = min(max(y, y0 + r), y1 - r)
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r and x0 <= x <= x1 and y0 <= y <= y1


def _bubble(x, y, s):
    if _inside_rounded(x, y, 0.2 * s, 0.24 * s, 0.8 * s, 0.66 * s, 0.12 * s):
        return True
    # the tail: a triangle under the bubble's left part
    ax, ay, bx, by, cx, cy = 0.3 * s, 0.64 * s, 0.46 * s, 0.64 * s, 0.28 * s, 0.8 * s
    d = (by - cy) * (ax - cx) + (cx - bx) * (ay - cy)
    a = ((by - cy) * (x - cx) + (cx - bx) * (y - cy)) / d
    b = ((cy - ay) * (x - cx) + (ax - cx) * (y - cy)) / d
    return a >= 0 and b >= 0 and a + b <= 1


def _dots(x, y, s):
    for cx in (0.36, 0.5, 0.64):
        if math.hypot(x - cx * s, y - 0.45 * s) <= 0.045 * s:
            return True
    return False


def icon(maskable=False, alert=False):
    def pixel(x, y, s):
        pad = 0 if maskable else 0.04 * s
        if not _inside_rounded(x, y, pad, pad, s - pad, s - pad, 0 if maskable else 0.2 * s):
            return (0, 0, 0, 0)
        if alert and math.hypot(x - 0.78 * s, y - 0.22 * s) <= 0.2 * s:
            return (*RED, 255)
        inner = (x - s / 2) / 0.8 + s / 2, (y - s / 2) / 0.8 + s / 2
        px, py = inner if maskable else (x, y)
        if _bubble(px, py, s):
            return (*BLUE, 255) if _dots(px, py, s) else (*WHITE, 255)
        return (*BLUE, 255)

    return pixel


def main():
    (HERE / "favicon.png").write_bytes(_png(32, icon()))
    (HERE / "favicon-alert.png").write_bytes(_png(32, icon(alert=True)))
    (HERE / "icon-192.png").write_bytes(_png(192, icon()))
    (HERE / "icon-512.png").write_bytes(_png(512, icon()))
    (HERE / "icon-maskable-512.png").write_bytes(_png(512, icon(maskable=True)))


if __name__ == "__main__":
    main()
