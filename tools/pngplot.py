"""Tiny plotting for the benchmarks' pictures, without matplotlib: an RGB numpy canvas, lines, filled rectangles,
text in a built-in 5x7 bitmap font (capitals, digits, a little punctuation; lower case is drawn as capitals), and
a PNG writer on zlib. Used by ``tools/wake_bench.py`` and ``tools/edge_bench/compare.py``.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

Color = tuple[int, int, int]
BLACK: Color = (0, 0, 0)
WHITE: Color = (255, 255, 255)
GREY: Color = (220, 220, 220)

# 5x7 glyphs, one string of 5 pixels per row, top to bottom
_FONT_ROWS = {
    "A": "01110 10001 10001 11111 10001 10001 10001", "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111", "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111", "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110", "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001", "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001", "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110", "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101", "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110", "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110", "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010", "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 10001 01010 00100 00100 00100", "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000", ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000", "-": "00000 00000 00000 11111 00000 00000 00000",
    ">": "01000 00100 00010 00001 00010 00100 01000", "<": "00010 00100 01000 10000 01000 00100 00010",
    "/": "00000 00001 00010 00100 01000 10000 00000", "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000", ":": "00000 01100 01100 00000 01100 01100 00000",
    "%": "11000 11001 00010 00100 01000 10011 00011", "+": "00000 00100 00100 11111 00100 00100 00000",
    "=": "00000 00000 11111 00000 11111 00000 00000", "'": "01100 00100 01000 00000 00000 00000 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100", "_": "00000 00000 00000 00000 00000 00000 11111",
    "×": "00000 10001 01010 00100 01010 10001 00000", "|": "00100 00100 00100 00100 00100 00100 00100",
    ";": "00000 01100 01100 00000 01100 00100 01000",
}
FONT: dict[str, np.ndarray] = {
    ch: np.array([[c == "1" for c in row] for row in rows.split()], dtype=bool) for ch, rows in _FONT_ROWS.items()}
GLYPH_W, GLYPH_H, ADVANCE = 5, 7, 6  # pixels at scale 1; ADVANCE includes one column of spacing
_SUBST = {"→": "->", "µ": "U", "≥": ">=", "≤": "<=", "–": "-", "—": "-"}


def _normalize(s: str) -> str:
    for a, b in _SUBST.items():
        s = s.replace(a, b)
    return s.upper()


def text_width(s: str, scale: int = 1) -> int:
    """Width in pixels of ``s`` drawn by ``text`` (no trailing spacing)."""
    n = len(_normalize(s))
    return max(0, n * ADVANCE - 1) * scale


def text(img: np.ndarray, x: int, y: int, s: str, color: Color = BLACK, scale: int = 1) -> int:
    """Draw ``s`` with its top-left corner at (x, y), clipped to the canvas; characters without a glyph are drawn as
    '?'. Returns the width drawn."""
    h, w = img.shape[:2]
    s = _normalize(s)
    for k, ch in enumerate(s):
        g = FONT.get(ch, FONT["?"])
        for i, j in zip(*np.nonzero(g), strict=True):
            yy, xx = y + i * scale, x + (k * ADVANCE + j) * scale
            if 0 <= yy < h and 0 <= xx < w:
                img[yy:yy + scale, xx:xx + scale] = color
    return text_width(s, scale)


def rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color) -> None:
    """Fill the rectangle [x0, x1) × [y0, y1), rounded to pixels and clipped to the canvas."""
    h, w = img.shape[:2]
    a, b = sorted((int(round(x0)), int(round(x1))))
    c, d = sorted((int(round(y0)), int(round(y1))))
    img[max(0, c):min(h, d), max(0, a):min(w, b)] = color


def line(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 2) -> None:
    """A straight line ``width`` pixels thick."""
    n = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
    for t in np.linspace(0, 1, n):
        x, y = int(round(x0 + (x1 - x0) * t)), int(round(y0 + (y1 - y0) * t))
        img[max(0, y - width // 2):y + width - width // 2, max(0, x - width // 2):x + width - width // 2] = color


def canvas(width: int, height: int, color: Color = WHITE) -> np.ndarray:
    return np.full((height, width, 3), color, np.uint8)


def png_bytes(img: np.ndarray) -> bytes:
    """An 8-bit RGB PNG of ``img`` (height × width × 3): signature, IHDR, one zlib IDAT (filter 0 per row), IEND."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].astype(np.uint8).tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def write_png(path: Path, img: np.ndarray) -> None:
    Path(path).write_bytes(png_bytes(img))
