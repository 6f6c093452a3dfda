"""The fake exchange's fast path for max mode: trades as runs of ids over rings of values, frames
rendered from templates in batches (docs: load-testing.md#the-load-generator).

At ``--rate max`` the exact path builds a :class:`~engine.records.Trade` per frame, encodes it,
frames it through websockets and adds it to the ledger: about 5.5 µs of CPU per frame, which
caps what a client can be shown to read. The fast path does per frame only what cannot be done
per batch:

- **Rings.** Per symbol, the market makes once a :class:`Ring` of realistic (price, size, side)
  values (a random walk on the symbol's tick, seeded); trade id ``tid`` takes slot
  ``tid % len(ring)``. A trade is then fully given by (ring, id, event time).
- **Runs.** A batch is one :class:`Run`: round-robin over some rings, each ring's ids counting up
  from its first id without a gap, one event time (ms) for the whole batch, exactly the ids and
  order :meth:`~connectors.fake.market.Market.take` would give. The ledger keeps runs, not
  trades, and regenerates each trade on reading (:meth:`Run.trades`).
- **Templates.** A :class:`Template` is the frame a protocol's own encoder gives for each ring
  slot, with the trade id and the event time cut out: made by calling the encoder with
  sentinel values, and kept only when the encoder's output for probe trades equals the
  template's (byte for byte, every slot). A batch's frames are then joins of cached pieces.
  Encoders that derive other fields from the id or the time (Bitstamp's order ids, Kraken's and
  Coinbase's ISO times) fail the probes and are called per trade instead; stateful ones
  (Coinbase marks a product's first trade) are always called per trade, in send order.

The frames are WebSocket-framed here (server frames are unmasked and no compression is
negotiated) and written in one piece by the server.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import cycle, islice
from typing import Final, TypeVar

from engine.records import Trade

ID_SENTINEL: Final = 918_273_645_546_372_819
"""The trade id a template is made with (18 digits: every protocol's integer id form)."""
MS_SENTINEL: Final = 4_102_444_799_123
"""The event time (ms) a template is made with. Its µs rendering starts with its digits, so an
encoder writing µs (``ts_event``) gets the right text by the same cut."""
_PROBES: Final = ((1, 1_700_000_000_000), (7, 1_765_432_109_876), (15_625, 999_999_999_999))
"""(ring turns, ms) of the probe trades a template must reproduce (per slot: id = slot + turns
* ring size)."""
_PROBE_BIG_ID: Final = 10**17
"""One more probe per slot with an id of this size (18 digits)."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ring:
    """A symbol's ring of (price, size, side) values; trade id ``tid`` takes slot
    ``tid % len(values)``."""

    exchange: str
    symbol: str
    raw_symbol: str
    values: tuple[tuple[str, str, str], ...]

    def trade_at(self, slot: int, tid: int, ts_ms: int) -> Trade:
        """The trade with slot ``slot``'s values, id ``tid`` and event time ``ts_ms``."""
        price, size, side = self.values[slot]
        return Trade(
            self.exchange,
            self.symbol,
            self.raw_symbol,
            str(tid),
            price,
            size,
            side,
            ts_ms * 1000,
            0,
        )

    def trade(self, tid: int, ts_ms: int) -> Trade:
        """Trade ``tid`` of this ring at event time ``ts_ms``."""
        return self.trade_at(tid % len(self.values), tid, ts_ms)


@dataclass(frozen=True, slots=True)
class Run:
    """Trades sent in one batch: ``count`` of them round-robin over ``rings`` (trade ``i`` is of
    ``rings[i % len(rings)]``), each ring's ids counting up from its entry in ``first_ids``,
    all at event time ``ts_ms``."""

    rings: tuple[Ring, ...]
    first_ids: tuple[int, ...]
    count: int
    ts_ms: int

    def shares(self) -> list[tuple[Ring, int, int]]:
        """(ring, first id, how many) per ring, in the run's order."""
        width = len(self.rings)
        whole, extra = divmod(self.count, width)
        return [
            (ring, first, whole + (1 if j < extra else 0))
            for j, (ring, first) in enumerate(zip(self.rings, self.first_ids, strict=True))
        ]

    def head(self, count: int) -> Run:
        """The run's first ``count`` trades (0 <= count <= ``self.count``)."""
        return Run(self.rings, self.first_ids, count, self.ts_ms)

    def trades(self) -> Iterator[Trade]:
        """The run's trades in send order."""
        rings, firsts, width, ts_ms = self.rings, self.first_ids, len(self.rings), self.ts_ms
        for i in range(self.count):
            turn, j = divmod(i, width)
            yield rings[j].trade(firsts[j] + turn, ts_ms)


def interleave(parts: Sequence[list[T]], count: int) -> list[T]:
    """Round-robin merge: item ``i`` of the result is item ``i // w`` of ``parts[i % w]``
    (``w = len(parts)``); the parts have the sizes :meth:`Run.shares` gives for ``count``."""
    width = len(parts)
    if width == 1:
        return parts[0]
    out: list[T] = [parts[0][0]] * count
    for j, part in enumerate(parts):
        out[j::width] = part
    return out


class Template:
    """The text an encoder gives for every slot of one ring, with the id and time cut out.

    ``pieces[slot]`` holds the text between the id's occurrences, each of those split at the
    time's occurrences: ``str(tid).join(str(ms).join(p) for p in pieces[slot])``.
    """

    __slots__ = ("_pieces", "_size")

    def __init__(self, pieces: Sequence[tuple[tuple[str, ...], ...]]) -> None:
        self._pieces = tuple(pieces)
        self._size = len(self._pieces)

    @classmethod
    def of(cls, ring: Ring, render: Callable[[Trade], str], *, ascii_only: bool) -> Template | None:
        """The template of ``render`` (an encoder: trade -> text) over ``ring``, or None when
        ``render``'s text is not a function of the id and time by plain substitution (probes
        differ), or (``ascii_only``) is not ASCII."""
        id_text, ms_text = str(ID_SENTINEL), str(MS_SENTINEL)
        pieces = []
        for slot in range(len(ring.values)):
            text = render(ring.trade_at(slot, ID_SENTINEL, MS_SENTINEL))
            if ascii_only and not text.isascii():
                return None
            pieces.append(tuple(tuple(part.split(ms_text)) for part in text.split(id_text)))
        template = cls(pieces)
        size = len(ring.values)
        for slot in range(size):
            probes = [(slot + turns * size, ms) for turns, ms in _PROBES]
            probes.append((_PROBE_BIG_ID + slot + size - _PROBE_BIG_ID % size, _PROBES[0][1]))
            for tid, ms in probes:
                if template.text(tid, ms) != render(ring.trade(tid, ms)):
                    return None
        return template

    def text(self, tid: int, ms: int) -> str:
        """The text of trade ``tid`` at ``ms`` (one at a time; :meth:`texts` for a batch)."""
        ms_text = str(ms)
        return str(tid).join(ms_text.join(p) for p in self._pieces[tid % self._size])

    def texts(self, first: int, count: int, ms: int) -> list[str]:
        """The texts of ids ``first`` .. ``first + count - 1``, all at ``ms``."""
        if count <= 0:
            return []
        size, ms_text = self._size, str(ms)
        start = first % size
        # the pieces of the slots in use, the time filled in once per slot
        used = [
            tuple(ms_text.join(p) for p in self._pieces[(start + k) % size])
            for k in range(min(count, size))
        ]
        return list(map(_join, map(str, range(first, first + count)), islice(cycle(used), count)))


def _join(sep: str, pieces: tuple[str, ...]) -> str:
    return sep.join(pieces)


class _Headers(dict[int, str]):
    """Payload length -> the header of an unmasked, final WebSocket text frame, as latin-1
    text (so that it joins ASCII frame text before one encode)."""

    def __missing__(self, length: int) -> str:
        header = frame_header(length).decode("latin-1")
        self[length] = header
        return header


def frame_header(length: int) -> bytes:
    """The header of an unmasked, final WebSocket text frame of ``length`` payload bytes."""
    if length < 126:
        return bytes((0x81, length))
    if length < 1 << 16:
        return b"\x81\x7e" + struct.pack("!H", length)
    return b"\x81\x7f" + struct.pack("!Q", length)


_HEADERS: Final = _Headers()


def frame_ascii(texts: list[str]) -> bytes:
    """ASCII texts as consecutive WebSocket text frames, in one bytes object."""
    headers = list(map(_HEADERS.__getitem__, map(len, texts)))
    return "".join(interleave([headers, texts], 2 * len(texts))).encode("latin-1")


def frame_texts(texts: Sequence[str]) -> bytes:
    """Any texts as consecutive WebSocket text frames (UTF-8; lone surrogates pass through as
    the exact path's ``surrogateescape`` sends them)."""
    parts: list[bytes] = []
    for text in texts:
        data = text.encode("utf-8", "surrogateescape")
        parts.append(frame_header(len(data)))
        parts.append(data)
    return b"".join(parts)


def frames_within(data: bytes, nbytes: int) -> int:
    """How many whole frames of ``data`` (consecutive unmasked WebSocket frames) lie within
    its first ``nbytes`` bytes."""
    offset = frames = 0
    end = min(nbytes, len(data))
    while offset + 2 <= len(data):
        length = data[offset + 1] & 0x7F
        head = 2
        if length == 126:
            (length,) = struct.unpack_from("!H", data, offset + 2)
            head = 4
        elif length == 127:
            (length,) = struct.unpack_from("!Q", data, offset + 2)
            head = 10
        offset += head + length
        if offset > end:
            break
        frames += 1
    return frames


class RunFrames:
    """Renders runs as frames for one connection (one stream per symbol): from a template per
    (stream, ring) when the session's encoder is pure and passes the probes, else through the
    encoder per trade, in send order."""

    def __init__(self, encode: Callable[[Trade, str], str], pure: bool) -> None:
        self._encode = encode
        self._pure = pure
        self._templates: dict[tuple[str, str], Template | None] = {}

    def template(self, ring: Ring, stream: str) -> Template | None:
        """The template of ``stream``'s frames over ``ring`` (None: encode per trade)."""
        key = (stream, ring.raw_symbol)
        if key not in self._templates:
            encode = self._encode
            self._templates[key] = (
                Template.of(ring, lambda t: encode(t, stream), ascii_only=True)
                if self._pure
                else None
            )
        return self._templates[key]

    def render(self, run: Run, streams: Sequence[str]) -> bytes:
        """The frames of ``run``'s trades (``streams[j]`` carries ``run.rings[j]``'s), framed
        and joined."""
        templates = [self.template(r, s) for r, s in zip(run.rings, streams, strict=True)]
        if all(t is not None for t in templates):
            parts = [
                t.texts(first, count, run.ts_ms)
                for t, (_ring, first, count) in zip(templates, run.shares(), strict=True)
                if t is not None
            ]
            return frame_ascii(interleave(parts, run.count))
        encode, width = self._encode, len(streams)
        return frame_texts(
            [encode(trade, streams[i % width]) for i, trade in enumerate(run.trades())]
        )
