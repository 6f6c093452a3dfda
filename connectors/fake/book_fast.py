"""The fake exchange's fast path for books at ``--book-rate max``: a cycle's frames from
pre-rendered templates (docs: testing.md#order-books-on-the-fake-exchange).

On demand, the book market gives each symbol's messages as runs of its
:class:`~connectors.fake.book_market.BookCycle` (the level changes of cycle message ``n % length``
are fixed; only the update ids and the event time change from turn to turn). A
:class:`BookTemplate` is, per cycle message, the frame the session's own encoder gives for it
with the event time (ms) and the first and last update ids cut out, as a ``%``-format string:
a frame is then one format call. It is made by calling the encoder with sentinel values and
kept only when the encoder's output for probe messages (other turns, other times) equals the
template's, byte for byte, for every message of the cycle; otherwise (an encoder that writes
other fields from the ids or the time, or non-ASCII text) :class:`BookRunFrames` calls the
encoder per message. Every message of a run is one frame, in order. The frames of a round
are WebSocket-framed here in one piece (:func:`~connectors.fake.fast.frame_ascii`), as the
trade fast path's are.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Final

from connectors.fake.book_market import BookCycle, BookMessage, CycleRun
from connectors.fake.fast import frame_ascii, frame_texts

MS_SENTINEL: Final = 4_102_444_799_123
"""The event time (ms) a template is made with."""
FIRST_SENTINEL: Final = 918_273_645_546_372_811
"""The first update id a template is made with."""
LAST_SENTINEL: Final = 918_273_645_546_372_819
"""The last update id a template is made with."""
_CUT: Final = re.compile(f"({MS_SENTINEL}|{FIRST_SENTINEL}|{LAST_SENTINEL})")
_ORDER: Final = [str(MS_SENTINEL), str(FIRST_SENTINEL), str(LAST_SENTINEL)]
_PROBES: Final = ((1, 1_700_000_000_000_123), (7, 1_765_432_109_876_543), (1009, 999_999_999))
"""(turns, event time µs) of the probe messages a template must reproduce."""

Encode = Callable[[BookMessage], str | None]
"""A session's encoder for one stream: message -> frame text (None: nothing sent)."""


class BookTemplate:
    """Per message of one cycle, its frame as ``fmt % (event ms, first id, last id)``."""

    __slots__ = ("_cycle", "_formats")

    def __init__(self, cycle: BookCycle, formats: Sequence[str]) -> None:
        self._cycle = cycle
        self._formats = tuple(formats)

    @classmethod
    def of(cls, cycle: BookCycle, encode: Encode) -> BookTemplate | None:
        """The template of ``encode`` over ``cycle``, or None when a frame is not ASCII, not
        the three values in that order (event time, first id, last id) each once, or not a
        function of them by plain substitution (probes differ)."""
        formats = []
        for pos in range(cycle.length):
            msg = cycle.message(pos, MS_SENTINEL * 1000)
            msg.first_id, msg.update_id, msg.prev_id = FIRST_SENTINEL, LAST_SENTINEL, -2
            text = encode(msg)
            if text is None or not text.isascii():
                return None
            parts = _CUT.split(text)
            if parts[1::2] != _ORDER:
                return None
            formats.append("%d".join(part.replace("%", "%%") for part in parts[0::2]))
        template = cls(cycle, formats)
        for pos in range(cycle.length):
            for turns, ts_us in _PROBES:
                n = pos + turns * cycle.length
                run = CycleRun(cycle, n, 1, ts_us)
                if template.texts(run) != [encode(cycle.message(n, ts_us))]:
                    return None
        return template

    def texts(self, run: CycleRun) -> list[str]:
        """The frames of ``run``'s messages, in order."""
        cycle, formats = self._cycle, self._formats
        length, prefix, total, base = cycle.length, cycle.prefix, cycle.total, cycle.base_id
        ts_us, out = run.ts_us - run.first, list[str]()
        append = out.append
        for n in range(run.first, run.first + run.count):
            turn, pos = divmod(n, length)
            start = base + turn * total
            append(
                formats[pos]
                % ((ts_us + n) // 1000, start + prefix[pos] + 1, start + prefix[pos + 1])
            )
        return out


class BookRunFrames:
    """Renders runs as frames for one connection: per (stream, cycle) from a template when
    the encoder passes its probes, else through the encoder per message."""

    def __init__(self, encode: Callable[[BookMessage, str], str | None]) -> None:
        self._encode = encode
        self._templates: dict[tuple[str, int], tuple[BookCycle, BookTemplate | None]] = {}

    def template(self, cycle: BookCycle, stream: str) -> BookTemplate | None:
        """The template of ``stream``'s frames over ``cycle`` (None: encode per message)."""
        key = (stream, id(cycle))
        found = self._templates.get(key)
        if found is None or found[0] is not cycle:
            encode = self._encode
            found = (cycle, BookTemplate.of(cycle, lambda msg: encode(msg, stream)))
            self._templates[key] = found
        return found[1]

    def render(self, runs: Sequence[tuple[str, CycleRun]]) -> bytes:
        """The frames of the runs (each on its stream: one frame per message), in order,
        framed and joined. ValueError when the encoder sends nothing for a message."""
        texts: list[str] = []
        ascii_only = True
        for stream, run in runs:
            template = self.template(run.cycle, stream)
            if template is not None:
                texts += template.texts(run)
                continue
            for msg in run.messages():
                text = self._encode(msg, stream)
                if text is None:
                    raise ValueError(f"{stream}: the encoder sends nothing for a cycle message")
                ascii_only = ascii_only and text.isascii()
                texts.append(text)
        return frame_ascii(texts) if ascii_only else frame_texts(texts)
