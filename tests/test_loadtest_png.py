"""The pure-Python PNG writer/reader, the bitmap font and the stacked line chart."""

from __future__ import annotations

import struct
import zlib

import pytest

from feedvault.bitmapfont import GLYPH_HEIGHT, glyph, has_glyph
from feedvault.png import SIGNATURE, Canvas, PngError, decode_png, encode_png
from feedvault.pngchart import BLUE, RED, Panel, format_tick, nice_ticks, render_chart


def chunks(data: bytes) -> list[tuple[bytes, bytes, int]]:
    """(kind, body, stored CRC) of every chunk, parsed independently of feedvault.png."""
    out, pos = [], len(SIGNATURE)
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        out.append((kind, body, crc))
        pos += 12 + length
    return out


def test_png_signature_ihdr_crc_and_round_trip() -> None:
    rgb = bytes((i * 7) % 256 for i in range(4 * 3 * 3))  # 4x3 pixels
    data = encode_png(4, 3, rgb)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    found = chunks(data)
    assert [kind for kind, _, _ in found] == [b"IHDR", b"IDAT", b"IEND"]
    for kind, body, crc in found:
        assert zlib.crc32(kind + body) & 0xFFFFFFFF == crc
    assert struct.unpack(">IIBBBBB", found[0][1]) == (4, 3, 8, 2, 0, 0, 0)
    assert decode_png(data) == (4, 3, rgb)


def test_png_rejects_wrong_sizes_and_corruption() -> None:
    with pytest.raises(ValueError):
        encode_png(2, 2, b"\x00" * 11)
    with pytest.raises(ValueError):
        encode_png(0, 2, b"")
    data = bytearray(encode_png(2, 2, b"\x10" * 12))
    data[20] ^= 0xFF  # inside IHDR: its CRC no longer matches
    with pytest.raises(PngError, match="CRC"):
        decode_png(bytes(data))
    with pytest.raises(PngError, match="signature"):
        decode_png(b"GIF89a")


def test_decoder_handles_every_scanline_filter() -> None:
    # Rows filtered with Sub, Up, Average and Paeth by hand decode to the same pixels.
    width, height = 3, 5
    pixels = bytes(
        (x * 40 + y * 7 + c * 3) % 256
        for y in range(height)
        for x in range(width)
        for c in range(3)
    )
    stride = width * 3
    raw = bytearray()
    prev = bytes(stride)
    for y, kind in enumerate((0, 1, 2, 3, 4)):
        line = pixels[y * stride : (y + 1) * stride]
        raw.append(kind)
        for i in range(stride):
            left = line[i - 3] if i >= 3 else 0
            up, corner = prev[i], (prev[i - 3] if i >= 3 else 0)
            p = left + up - corner
            paeth = min(
                (abs(p - left), 0, left), (abs(p - up), 1, up), (abs(p - corner), 2, corner)
            )[2]
            pred = (0, left, up, (left + up) // 2, paeth)[kind]
            raw.append((line[i] - pred) & 0xFF)
        prev = line
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    data = (
        SIGNATURE
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    assert decode_png(data) == (width, height, pixels)


def test_canvas_lines_rectangles_text_and_clipping() -> None:
    canvas = Canvas(20, 10)
    canvas.line(0, 0, 19, 9, RED)
    assert canvas.get(0, 0) == RED and canvas.get(19, 9) == RED
    canvas.fill(-5, -5, 2, 2, BLUE)  # clipped, no error
    assert canvas.get(2, 2) == BLUE and canvas.get(3, 3) != BLUE
    canvas.set(100, 100, RED)  # outside: ignored
    end = canvas.text(0, 2, "1", RED)
    assert end == 6
    assert Canvas.text_width("12") == 11 and Canvas.text_height(2) == 2 * GLYPH_HEIGHT
    width, height, rgb = decode_png(canvas.to_png())
    assert (width, height) == (20, 10) and len(rgb) == 600


def test_font_covers_labels_and_maps_lower_case() -> None:
    for char in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ .,-+=/:%()_µ":
        assert has_glyph(char), char
        assert len(glyph(char)) == GLYPH_HEIGHT
    assert glyph("q") == glyph("Q")
    assert glyph("€") == glyph(" ")


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (0, 137_233, [0, 50_000, 100_000, 150_000]),
        (0, 1, [0, 0.5, 1]),
        (0, 0, [0, 0.5, 1]),
        (0, 30, [0, 10, 20, 30]),
        (-3, 7, [-4, -2, 0, 2, 4, 6, 8]),
    ],
)
def test_nice_ticks(lo: float, hi: float, expected: list[float]) -> None:
    max_ticks = 6 if lo < 0 else 4
    assert nice_ticks(lo, hi, max_ticks) == expected


def test_nice_ticks_rejects_bad_ranges() -> None:
    with pytest.raises(ValueError):
        nice_ticks(2, 1)
    with pytest.raises(ValueError):
        nice_ticks(0, float("inf"))


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (2.5, "2.5"), (750, "750"), (12_000, "12K"), (1_500_000, "1.5M"), (2e9, "2G")],
)
def test_format_tick(value: float, text: str) -> None:
    assert format_tick(value) == text


def test_chart_is_a_decodable_png_with_the_series_drawn() -> None:
    points = [(float(t), 1000.0 * t) for t in range(11)]
    data = render_chart(
        [Panel("trades/s", points, BLUE), Panel("RSS MB", [], RED)],
        title="test",
        x_label="seconds",
        width=600,
        panel_height=200,
    )
    width, height, rgb = decode_png(data)
    assert width == 600 and height > 2 * 200
    colors = {bytes(rgb[i : i + 3]) for i in range(0, len(rgb), 3)}
    assert bytes(BLUE) in colors  # the line and the panel title
    assert bytes(RED) in colors  # the empty panel's title
    assert bytes((0, 0, 0)) in colors  # axes


def test_chart_needs_panels_and_room() -> None:
    with pytest.raises(ValueError):
        render_chart([])
    with pytest.raises(ValueError):
        render_chart([Panel("x", [])], width=50)
