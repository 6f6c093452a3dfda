"""Limits on feed input, and naming what a rejected frame did wrong (issue 7).

What bounds a frame from an exchange:

- size: the session's WebSocket ``max_size`` (1 MiB). websockets fails the connection with
  1009 when a frame's header announces more; the session counts that as an invalid frame of
  kind ``oversized`` (logged once) and reconnects with backoff.
- nesting: no feedvault code walks a decoded frame recursively; the parsers read fixed paths
  (depth 4 at most) and ignore every other field. The decoders bound the nesting they accept:
  orjson refuses more than 1024 levels (in Rust, no Python recursion), and Kraken's
  exact-decimal decoder (the standard library's recursive ``json``) is guarded by
  :func:`exceeds_depth` at :data:`MAX_JSON_DEPTH` before it runs. A frame the parser rejects
  that is nested deeper than :data:`MAX_JSON_DEPTH` is counted as kind ``nesting``.

  A per-frame depth pre-scan on the orjson path was measured and rejected: counting brackets
  costs ~0.34 µs per Binance frame on the 2-core machine (~15% of its parse, ~5% of the
  ~7 µs per trade of the whole pipeline), and an exact scan of a 1024-trade Bybit frame costs
  2.4x its parse. The scan runs only on frames already rejected (:func:`classify`), and on
  Kraken's frames, whose decoder costs ~2.5 µs anyway.
- invalid UTF-8: frames are read undecoded; the decoders reject invalid UTF-8 (kind ``utf8``).
- huge numbers: a JSON number beyond the float range makes orjson fail (kind ``number``); a
  trade id, time or amount beyond what its field allows is a ``type``/``time`` error of the
  parser.
- symbols: :func:`connectors.symbols.canonical_symbol` accepts only ``BASE-QUOTE`` assets of
  ``[A-Z0-9]``; ``/`` beyond one separator, ``..``, NUL and the like make a ``symbol`` error.
  Object keys are built from the canonical symbol and sanitized again (``sinks.keys``).

Every rejected frame is counted (``invalid``) and logged once per exchange and kind.
"""

from __future__ import annotations

import re
from typing import Final

from engine.errors import MalformedFrame

MAX_JSON_DEPTH: Final = 64
"""Arrays and objects nested deeper than this are refused by Kraken's decoder and classified
as ``nesting`` when a frame is rejected."""

_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_TO_SQUARE: Final = bytes.maketrans(b"{}", b"[]")
_NOT_BRACKET: Final = bytes(c for c in range(256) if c not in b"[]{}")


def exceeds_depth(frame: bytes | str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when the JSON text ``frame`` nests arrays/objects deeper than ``limit``.

    Exact for valid JSON (brackets inside strings are ignored); for invalid JSON an answer
    about its brackets. Cheap when it can be: a frame with at most ``limit`` opening brackets
    cannot exceed it (two ``count`` calls); otherwise strings are removed and the brackets
    kept (C speed), a run of ``limit + 1`` openers proves it, and at most ``limit`` passes
    remove one innermost level each.
    """
    data = frame.encode("utf-8", "surrogatepass") if isinstance(frame, str) else frame
    if data.count(b"[") + data.count(b"{") <= limit:
        return False
    brackets = _STRING.sub(b"", data).translate(_TO_SQUARE, _NOT_BRACKET)
    if b"[" * (limit + 1) in brackets:
        return True
    for _ in range(limit):
        shorter = brackets.replace(b"[]", b"")
        if not shorter:
            return False
        if len(shorter) == len(brackets):
            return False  # unbalanced: not nesting, just broken
        brackets = shorter
    return b"[" in brackets


def _valid_utf8(frame: bytes | str) -> bool:
    if isinstance(frame, str):
        return True
    try:
        frame.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def classify(frame: bytes | str, exc: MalformedFrame) -> MalformedFrame:
    """The error to count for a frame the parser rejected with ``exc``: ``utf8`` for bytes
    that are not UTF-8, ``nesting`` beyond :data:`MAX_JSON_DEPTH`, ``number`` for a JSON
    number out of range, else ``exc`` itself. Runs only on rejected frames (never on the hot
    path of accepted ones)."""
    if exc.kind in ("json", "not-object", "type"):
        if not _valid_utf8(frame):
            return MalformedFrame("utf8", "frame is not valid UTF-8")
        if exceeds_depth(frame):
            return MalformedFrame("nesting", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if exc.kind == "json" and "infinity" in exc.detail:
            return MalformedFrame("number", exc.detail)
    return exc


def oversized(max_size: int) -> MalformedFrame:
    """The error counted for a frame over the session's size limit (closed with 1009)."""
    return MalformedFrame(
        "oversized", f"frame over the {max_size}-byte limit; the connection was closed (1009)"
    )
