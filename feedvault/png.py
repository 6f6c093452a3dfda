"""A tiny PNG writer and reader (pure Python: ``zlib`` + ``struct``), and a raster canvas.

Only what the load-test chart needs (no matplotlib in the image):

- :func:`encode_png` writes an 8-bit RGB, non-interlaced PNG (signature, IHDR, one IDAT, IEND,
  each chunk with its CRC-32);
- :func:`decode_png` reads such a file back (any of the five scanline filters), checking the
  signature, every CRC and the IHDR, so tests can prove the output is a valid, decodable PNG;
- :class:`Canvas` is a mutable RGB raster with clipped pixels, lines, rectangles and text in the
  5x7 bitmap font of :mod:`feedvault.bitmapfont`.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from feedvault.bitmapfont import GLYPH_HEIGHT, GLYPH_WIDTH, glyph

SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
Color = tuple[int, int, int]

_BIT_DEPTH: Final = 8
_COLOR_RGB: Final = 2


class PngError(ValueError):
    """The bytes are not a PNG this module can read."""


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def encode_png(width: int, height: int, rgb: bytes | bytearray) -> bytes:
    """The PNG file of a ``width`` x ``height`` image given as rows of RGB bytes, top first.

    Raises ValueError when ``rgb`` is not exactly ``width * height * 3`` bytes or a size is not
    positive.
    """
    if width <= 0 or height <= 0:
        raise ValueError("width and height must be positive")
    stride = width * 3
    if len(rgb) != stride * height:
        raise ValueError(f"expected {stride * height} bytes of RGB, got {len(rgb)}")
    raw = bytearray()
    view = memoryview(rgb)
    for y in range(height):
        raw.append(0)  # filter type 0 (None)
        raw += view[y * stride : (y + 1) * stride]
    header = struct.pack(">IIBBBBB", width, height, _BIT_DEPTH, _COLOR_RGB, 0, 0, 0)
    return (
        SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(raw), 9))
        + _chunk(b"IEND", b"")
    )


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    """``(width, height, rgb)`` of an 8-bit RGB non-interlaced PNG; :class:`PngError` otherwise
    (bad signature, truncated chunk, CRC mismatch, unsupported IHDR, bad filter, wrong size)."""
    if not data.startswith(SIGNATURE):
        raise PngError("not a PNG signature")
    pos = len(SIGNATURE)
    header: tuple[int, ...] | None = None
    idat = bytearray()
    ended = False
    while pos < len(data) and not ended:
        if pos + 8 > len(data):
            raise PngError("truncated chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise PngError(f"truncated {kind!r} chunk")
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise PngError(f"CRC mismatch in {kind!r} chunk")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            ended = True
        pos += 12 + length
    if header is None or not ended:
        raise PngError("missing IHDR or IEND")
    width, height, depth, color, _compression, _filter, interlace = header
    if (depth, color, interlace) != (_BIT_DEPTH, _COLOR_RGB, 0):
        raise PngError(
            f"unsupported IHDR: depth {depth}, color type {color}, interlace {interlace}"
        )
    try:
        raw = zlib.decompress(bytes(idat))
    except zlib.error as exc:
        raise PngError(f"bad image data: {exc}") from None
    stride = width * 3
    if len(raw) != (stride + 1) * height:
        raise PngError("image data does not match the IHDR size")
    return width, height, _unfilter(raw, stride, height)


def _unfilter(raw: bytes, stride: int, height: int) -> bytes:
    out = bytearray(stride * height)
    prev = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - 3] if i >= 3 else 0
            up = prev[i]
            corner = prev[i - 3] if i >= 3 else 0
            if kind == 0:
                continue
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + pred) & 0xFF
            else:
                raise PngError(f"unknown filter type {kind}")
        out[y * stride : (y + 1) * stride] = line
        prev = line
    return bytes(out)


class Canvas:
    """An RGB raster, origin top-left. Drawing outside the canvas is clipped, never an error."""

    def __init__(self, width: int, height: int, background: Color = (255, 255, 255)) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("width and height must be positive")
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        """Paint one pixel (ignored outside the canvas)."""
        if 0 <= x < self.width and 0 <= y < self.height:
            at = (y * self.width + x) * 3
            self.pixels[at : at + 3] = bytes(color)

    def get(self, x: int, y: int) -> Color:
        at = (y * self.width + x) * 3
        return (self.pixels[at], self.pixels[at + 1], self.pixels[at + 2])

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        """Fill the rectangle with corners (x0, y0) and (x1, y1), inclusive."""
        left, right = max(min(x0, x1), 0), min(max(x0, x1), self.width - 1)
        top, bottom = max(min(y0, y1), 0), min(max(y0, y1), self.height - 1)
        if left > right or top > bottom:
            return
        span = bytes(color) * (right - left + 1)
        for y in range(top, bottom + 1):
            at = (y * self.width + left) * 3
            self.pixels[at : at + len(span)] = span

    def line(self, x0: int, y0: int, x1: int, y1: int, color: Color, width: int = 1) -> None:
        """A straight line (Bresenham); ``width`` > 1 paints a square brush of that size."""
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        x, y = x0, y0
        while True:
            if width == 1:
                self.set(x, y, color)
            else:
                self.fill(x, y, x + width - 1, y + width - 1, color)
            if x == x1 and y == y1:
                return
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x += sx
            if e2 <= dx:
                err += dx
                y += sy

    def text(self, x: int, y: int, text: str, color: Color, scale: int = 1) -> int:
        """Draw ``text`` with its top-left corner at (x, y); return the x after its last glyph.

        Letters are drawn upper case; characters the font lacks are drawn as blanks."""
        for char in text:
            rows = glyph(char)
            for row, bits in enumerate(rows):
                for col in range(GLYPH_WIDTH):
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)):
                        px, py = x + col * scale, y + row * scale
                        self.fill(px, py, px + scale - 1, py + scale - 1, color)
            x += (GLYPH_WIDTH + 1) * scale
        return x

    def vtext(self, x: int, y: int, text: str, color: Color, scale: int = 1) -> None:
        """Draw ``text`` rotated a quarter turn counter-clockwise, reading bottom to top, with
        its first glyph's bottom-left corner at (x, y)."""
        for char in text:
            rows = glyph(char)
            for row, bits in enumerate(rows):
                for col in range(GLYPH_WIDTH):
                    if bits & (1 << (GLYPH_WIDTH - 1 - col)):
                        px, py = x + row * scale, y - col * scale
                        self.fill(px, py - scale + 1, px + scale - 1, py, color)
            y -= (GLYPH_WIDTH + 1) * scale

    @staticmethod
    def text_width(text: str, scale: int = 1) -> int:
        """Width in pixels of ``text`` drawn by :meth:`text` (without the trailing gap)."""
        return max(len(text) * (GLYPH_WIDTH + 1) * scale - scale, 0)

    @staticmethod
    def text_height(scale: int = 1) -> int:
        return GLYPH_HEIGHT * scale

    def to_png(self) -> bytes:
        """The canvas as a PNG file."""
        return encode_png(self.width, self.height, self.pixels)
