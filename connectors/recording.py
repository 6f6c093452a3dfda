"""The recording format: raw WebSocket frames, one JSON object per line.

See docs/recording-and-replay.md#the-recording-format.

A line is ``{"ts": <int ns>, "exchange": "binance", "dir": "in"|"out", "frame": "<text>"}`` plus
``"url"`` on connect lines, then ``"\\n"``. Files may be plain, gzip (``.gz``) or zstd (``.zst``).

Contracts:

- :func:`to_line` and :func:`parse_line` are exact inverses: ``parse_line(to_line(f)) == f`` for
  every :class:`RecordedFrame` (any text, any int ``ts``).
- :func:`iter_records` streams several files in order with bounded memory (one line at a time);
  the compression is detected from the file's magic bytes (the suffix is not trusted), so a
  mis-named file still reads. Blank lines are skipped. Any bad input raises
  :class:`~engine.errors.RecordingError` naming ``file:line``.
- :class:`RecordingWriter` chooses the compression from the suffix (``.gz``, ``.zst``, else
  plain) and buffers writes; the file is complete once the ``with`` block (or :meth:`close`)
  returns.
- A *connect* (the client opened a connection) is a line with ``dir="out"``, an empty
  ``frame`` and ``url`` set (:attr:`RecordedFrame.is_connect`). Readers that only want received
  frames keep ``dir == "in"`` and never see it.
- :func:`convert_cryptofeed` turns cryptofeed's capture format into :class:`RecordedFrame` s;
  its float-seconds times become integer nanoseconds from the decimal text itself (never through
  ``float``), truncated to whole nanoseconds; the REST responses of a capture's ``*.http.*``
  files become ``http`` lines merged in by time
  (docs: recording-and-replay.md#converting-other-captures).

Unknown extra keys in a line are ignored (forward compatibility); missing or mistyped known keys
are errors.
"""

from __future__ import annotations

import glob
import gzip
import heapq
import io
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Literal, Protocol

import orjson
import zstandard

from engine.errors import RecordingError

Direction = Literal["in", "out"]

DIR_IN: Final = "in"
DIR_OUT: Final = "out"
GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_FLUSH_BYTES: Final = 1 << 20
_READ_BUFFER: Final = 1 << 20
_loads: Final = orjson.loads
_dumps: Final = orjson.dumps


class _Sink(Protocol):
    def write(self, data: bytes | bytearray, /) -> int: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class RecordedFrame:
    """One recorded WebSocket frame (or connect event).

    ``ts``: local time in integer nanoseconds since the Unix epoch (receive time for ``in``, send
    time for ``out``); ``exchange``: feedvault's exchange name; ``dir``: ``"in"`` received from
    the exchange, ``"out"`` sent by the client; ``frame``: the text frame; ``url``: set on
    connect lines only (by convention, see the module docstring); ``http`` (``"GET <url>"``)
    and ``status``: set on the lines of REST responses (a book snapshot the client fetched;
    ``frame`` is the body).
    """

    ts: int
    exchange: str
    dir: str
    frame: str
    url: str | None = None
    http: str | None = None
    status: int | None = None
    channel: str | None = None
    """On connect lines: the channel the connection was for (``trades``, ``book``); None in
    recordings made before books (trades)."""
    symbols: tuple[str, ...] | None = None
    """On book connect lines: the symbols the connection was for."""

    @property
    def is_connect(self) -> bool:
        """True for a connect event: ``dir="out"``, empty frame, ``url`` set."""
        return self.url is not None and self.dir == DIR_OUT and self.frame == ""


def to_line(frame: RecordedFrame) -> bytes:
    """One recording line for ``frame``: a JSON object and ``b"\\n"``.

    Keys, in order: ``ts``, ``exchange``, ``dir``, ``frame`` and ``url`` only when it is set.
    Raises :class:`RecordingError` if ``ts`` does not fit JSON's 64-bit integers or ``dir`` is
    not ``in``/``out``.
    """
    if frame.dir != DIR_IN and frame.dir != DIR_OUT:
        raise RecordingError(f"dir must be 'in' or 'out', not {frame.dir!r}")
    doc: dict[str, object] = {
        "ts": frame.ts,
        "exchange": frame.exchange,
        "dir": frame.dir,
        "frame": frame.frame,
    }
    if frame.url is not None:
        doc["url"] = frame.url
    if frame.channel is not None:
        doc["channel"] = frame.channel
    if frame.symbols is not None:
        doc["symbols"] = list(frame.symbols)
    if frame.http is not None:
        doc["http"] = frame.http
        doc["status"] = frame.status
    try:
        return _dumps(doc, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError as exc:
        raise RecordingError(f"cannot encode frame: {exc}") from exc


def _bad(problem: str, line: bytes | str) -> RecordingError:
    text = line if isinstance(line, str) else line.decode("utf-8", "replace")
    text = text.rstrip("\r\n")
    shown = text if len(text) <= 80 else text[:77] + "..."
    return RecordingError(f"{problem}: {shown!r}")


def parse_line(line: bytes | str) -> RecordedFrame:
    """Parse one recording line (with or without its trailing newline).

    Raises :class:`RecordingError` saying what is wrong (not JSON, not an object, a missing or
    mistyped field, a ``dir`` other than ``in``/``out``), with the start of the line.

    The hot path of every replay: one ``orjson.loads``, the checks in one expression, and the
    frozen frame built through its slots (half the cost of the dataclass ``__init__``).
    """
    try:
        doc = _loads(line)
    except orjson.JSONDecodeError as exc:
        raise _bad(f"not JSON ({exc})", line) from exc
    try:
        ts = doc["ts"]
        exchange = doc["exchange"]
        direction = doc["dir"]
        text = doc["frame"]
        url = doc.get("url")
    except (KeyError, TypeError, AttributeError):
        raise _diagnose(doc, line) from None
    if (
        type(ts) is not int
        or type(exchange) is not str
        or not exchange
        or (direction != DIR_IN and direction != DIR_OUT)
        or type(text) is not str
        or (url is not None and type(url) is not str)
    ):
        raise _diagnose(doc, line)
    frame = _new(RecordedFrame)
    _set_ts(frame, ts)
    _set_exchange(frame, exchange)
    _set_dir(frame, direction)
    _set_frame(frame, text)
    _set_url(frame, url)
    http = doc.get("http")
    if http is None:
        _set_http(frame, None)
        _set_status(frame, None)
    elif type(http) is str and type(doc.get("status")) is int:
        _set_http(frame, http)
        _set_status(frame, doc["status"])
    else:
        raise _bad("'http' must be a string with an integer 'status'", line)
    channel = doc.get("channel") if url is not None else None
    _set_channel(frame, channel if type(channel) is str else None)
    symbols = doc.get("symbols") if url is not None else None
    _set_symbols(
        frame,
        tuple(symbols)
        if type(symbols) is list and all(type(item) is str for item in symbols)
        else None,
    )
    return frame


def _diagnose(doc: object, line: bytes | str) -> RecordingError:
    """The error for a parsed line that is not a valid record (slow path)."""
    if type(doc) is not dict:
        return _bad("not a JSON object", line)
    for name in ("ts", "exchange", "dir", "frame"):
        if name not in doc:
            return _bad(f"missing field {name!r}", line)
    if type(doc["ts"]) is not int:
        return _bad("'ts' must be an integer (nanoseconds)", line)
    if type(doc["exchange"]) is not str or not doc["exchange"]:
        return _bad("'exchange' must be a non-empty string", line)
    if doc["dir"] != DIR_IN and doc["dir"] != DIR_OUT:
        return _bad("'dir' must be 'in' or 'out'", line)
    if type(doc["frame"]) is not str:
        return _bad("'frame' must be a string", line)
    return _bad("'url' must be a string", line)


_Setter = Callable[[RecordedFrame, object], None]
_new: Final = object.__new__
_set_ts: Final[_Setter] = vars(RecordedFrame)["ts"].__set__
_set_exchange: Final[_Setter] = vars(RecordedFrame)["exchange"].__set__
_set_channel: Final[_Setter] = vars(RecordedFrame)["channel"].__set__
_set_symbols: Final[_Setter] = vars(RecordedFrame)["symbols"].__set__
_set_http: Final[_Setter] = vars(RecordedFrame)["http"].__set__
_set_status: Final[_Setter] = vars(RecordedFrame)["status"].__set__
_set_dir: Final[_Setter] = vars(RecordedFrame)["dir"].__set__
_set_frame: Final[_Setter] = vars(RecordedFrame)["frame"].__set__
_set_url: Final[_Setter] = vars(RecordedFrame)["url"].__set__


def _open_binary(path: Path) -> IO[bytes]:
    """Open ``path`` for reading, decompressing by magic bytes. Raises :class:`RecordingError`."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError as exc:
        raise RecordingError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    try:
        head = raw.read(4)
        raw.seek(0)
    except OSError as exc:
        raw.close()
        raise RecordingError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if head.startswith(GZIP_MAGIC):
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), _READ_BUFFER)
    if head == ZSTD_MAGIC:
        reader = zstandard.ZstdDecompressor().stream_reader(
            raw, read_across_frames=True, closefd=True
        )
        return io.BufferedReader(reader, _READ_BUFFER)
    return raw


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, line)`` of a file, blank lines skipped; errors name ``path:line``."""
    number = 0
    with _open_binary(path) as stream:
        try:
            for line in stream:
                number += 1
                if line.isspace() or not line:
                    continue
                yield number, line
        except (OSError, EOFError, zstandard.ZstdError) as exc:
            raise RecordingError(f"{path}:{number + 1}: cannot decompress or read: {exc}") from exc


def iter_records(paths: Sequence[str | Path]) -> Iterator[RecordedFrame]:
    """Every frame of ``paths``, file after file, line after line, in file order.

    Streaming: memory is bounded by one line plus the decompressor's buffers. Raises
    :class:`RecordingError` ``"FILE:LINE: problem: 'start of line'"`` on the first bad line, or
    naming the file if it cannot be opened or decompressed.
    """
    for name in paths:
        path = Path(name)
        for number, line in _lines(path):
            try:
                frame = parse_line(line)
            except RecordingError as exc:
                raise RecordingError(f"{path}:{number}: {exc}") from exc
            yield frame


class RecordingWriter:
    """Write :class:`RecordedFrame` s to ``path``: gzip for ``.gz``, zstd for ``.zst``, else plain.

    Use as a context manager (or call :meth:`close`). Writes are buffered and flushed in about
    1 MiB pieces; the file is complete and closed when :meth:`close` returns. ``level`` is the
    compression level (default: zstd 3, gzip 6). Raises :class:`RecordingError` on I/O errors.
    ``count`` is the number of frames written so far.
    """

    def __init__(self, path: str | Path, *, level: int | None = None) -> None:
        self.path = Path(path)
        self.count = 0
        self._buffer = bytearray()
        self._closed = False
        try:
            self._raw: IO[bytes] = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot create: {exc.strerror or exc}") from exc
        self._out: _Sink
        suffix = self.path.suffix
        if suffix == ".gz":
            self._out = gzip.GzipFile(
                fileobj=self._raw, mode="wb", compresslevel=6 if level is None else level
            )
        elif suffix == ".zst":
            compressor = zstandard.ZstdCompressor(level=3 if level is None else level)
            self._out = compressor.stream_writer(self._raw, closefd=False)
        else:
            self._out = self._raw

    def write(self, frame: RecordedFrame) -> None:
        """Append one frame. Raises :class:`RecordingError` if closed or on an I/O error."""
        self.write_line(to_line(frame))

    def write_line(self, line: bytes) -> None:
        """Append one already encoded line (from :func:`to_line`); the caller vouches for it."""
        if self._closed:
            raise RecordingError(f"{self.path}: writer is closed")
        self._buffer += line
        self.count += 1
        if len(self._buffer) >= _FLUSH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        try:
            self._out.write(self._buffer)
        except OSError as exc:
            raise RecordingError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
        self._buffer.clear()

    def close(self) -> None:
        """Flush, finish the compressed stream and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
            if self._out is not self._raw:
                self._out.close()
        finally:
            self._raw.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def epoch_text_to_ns(text: str) -> int:
    """``"1633998512.0633569"`` -> ``1633998512063356900``: decimal seconds to integer ns, exactly.

    Digits beyond the ninth decimal are truncated. Raises :class:`ValueError` for anything but
    ``DIGITS[.DIGITS]``.
    """
    whole, dot, frac = text.partition(".")
    if (
        not whole.isascii()
        or not whole.isdigit()
        or (dot and not (frac.isascii() and frac.isdigit()))
    ):
        raise ValueError(f"not a decimal epoch: {text!r}")
    return int(whole) * 1_000_000_000 + int((frac[:9]).ljust(9, "0"))


def _convert_line(line: str, exchange: str) -> RecordedFrame:
    """One cryptofeed capture line -> a frame. Raises :class:`ValueError` with the problem."""
    if line[:1].isdigit():  # "EPOCH: TEXT": received
        epoch, sep, text = line.partition(": ")
        if not sep:
            raise ValueError("received line without ': '")
        return RecordedFrame(epoch_text_to_ns(epoch), exchange, DIR_IN, text)
    url, sep, rest = line.partition(" ")
    if not sep or not url:
        raise ValueError("not 'EPOCH: TEXT', 'URL <-> EPOCH' or 'URL <- EPOCH: TEXT'")
    if rest.startswith("<-> "):  # "URL <-> EPOCH": connect
        return RecordedFrame(epoch_text_to_ns(rest[4:].strip()), exchange, DIR_OUT, "", url)
    if rest.startswith("<- "):  # "URL <- EPOCH: TEXT": sent by the client
        epoch, sep, text = rest[3:].partition(": ")
        if not sep:
            raise ValueError("sent line without ': '")
        return RecordedFrame(epoch_text_to_ns(epoch), exchange, DIR_OUT, text)
    raise ValueError("expected '<->' or '<-' after the URL")


def _convert_http_line(line: str, exchange: str) -> RecordedFrame:
    """One line of a cryptofeed ``*.http.*`` capture, ``URL -> EPOCH: BODY``, -> a REST
    response line. Raises :class:`ValueError` with the problem."""
    url, sep, rest = line.partition(" -> ")
    if not sep or not url or " " in url:
        raise ValueError("not 'URL -> EPOCH: BODY'")
    epoch, sep, body = rest.partition(": ")
    if not sep:
        raise ValueError("http line without ': ' after the time")
    return RecordedFrame(
        epoch_text_to_ns(epoch), exchange, DIR_IN, body, http=f"GET {url}", status=200
    )


def _converted(
    source: Path, exchange: str, convert: Callable[[str, str], RecordedFrame]
) -> Iterator[RecordedFrame]:
    for number, raw in _lines(source):
        try:
            frame = convert(raw.decode("utf-8").rstrip("\r\n"), exchange)
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecordingError(f"{source}:{number}: {exc}") from exc
        yield frame


def http_siblings(path: str | Path) -> list[Path]:
    """The ``*.http.*`` files beside a cryptofeed ``*.ws.*`` capture, sorted by name:
    ``BINANCE.ws.1.0`` -> ``BINANCE.http.*`` (cryptofeed numbers the two kinds of file
    independently, so every one of them is the same session's). Empty for a file whose name
    has no ``.ws.``."""
    source = Path(path)
    prefix, sep, _ = source.name.partition(".ws.")
    if not sep or not prefix:
        return []
    return sorted(p for p in source.parent.glob(f"{glob.escape(prefix)}.http.*") if p.is_file())


def convert_cryptofeed(
    path: str | Path, exchange: str, *, http: Sequence[str | Path] = ()
) -> Iterator[RecordedFrame]:
    """The frames of a cryptofeed capture file (plain, ``.gz`` or ``.zst``), in file order,
    merged by time with the REST responses of the ``http`` capture files.

    - ``URL <-> EPOCH`` (connection opened) -> ``dir="out"``, ``frame=""``, ``url=URL``;
    - ``URL <- EPOCH: TEXT`` (client sent) -> ``dir="out"``, ``frame=TEXT``;
    - ``EPOCH: TEXT`` (received) -> ``dir="in"``, ``frame=TEXT``;
    - in an ``http`` file, ``URL -> EPOCH: BODY`` (a GET and the body it returned) ->
      ``dir="in"``, ``http="GET URL"``, ``status=200`` (cryptofeed records only the bodies it
      used), ``frame=BODY``.

    EPOCH (float seconds) becomes integer nanoseconds from its decimal text. The merge keeps
    each file's own order and, at equal times, puts the WebSocket frame first (streamed: one
    line of each file in memory). Blank lines are skipped. Raises :class:`RecordingError`
    ``"FILE:LINE: problem"`` on a line in none of these forms or not UTF-8.
    """
    frames = _converted(Path(path), exchange, _convert_line)
    if not http:
        yield from frames
        return
    responses = [_converted(Path(p), exchange, _convert_http_line) for p in http]
    yield from heapq.merge(frames, *responses, key=_by_ts)


def _by_ts(frame: RecordedFrame) -> int:
    return frame.ts
