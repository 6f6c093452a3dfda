"""The recording format (docs: recording-and-replay.md): lines, files in three encodings, bad input,
cryptofeed import."""

from __future__ import annotations

import dataclasses
import gzip
import os
import re
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from connectors.binance import BinanceProtocol
from connectors.coinbase import CoinbaseProtocol
from connectors.recording import (
    RecordedFrame,
    RecordingWriter,
    convert_cryptofeed,
    epoch_text_to_ns,
    iter_records,
    parse_line,
    to_line,
)
from engine.errors import RecordingError
from tests.conftest import FIXTURES

CRYPTOFEED = Path(FIXTURES) / "cryptofeed-recordings"
BINANCE_FILE = CRYPTOFEED / "BINANCE.ws.1.0"
COINBASE_FILE = CRYPTOFEED / "COINBASE.ws.28.0"

FRAMES = [
    RecordedFrame(1, "binance", "out", "", "wss://stream.binance.com:9443/ws"),
    RecordedFrame(2, "binance", "out", '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}'),
    RecordedFrame(3, "binance", "in", '{"result":null,"id":1}'),
    RecordedFrame(4, "binance", "in", 'line\nbreak "quoted" \\ unicode é 🚀'),
]


def test_line_has_exactly_the_spec_fields() -> None:
    line = to_line(FRAMES[2])
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert orjson.loads(line) == {
        "ts": 3,
        "exchange": "binance",
        "dir": "in",
        "frame": '{"result":null,"id":1}',
    }
    assert list(orjson.loads(to_line(FRAMES[0]))) == ["ts", "exchange", "dir", "frame", "url"]
    assert FRAMES[0].is_connect and not FRAMES[1].is_connect


frame_strategy = st.builds(
    RecordedFrame,
    ts=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    exchange=st.text(min_size=1),
    dir=st.sampled_from(["in", "out"]),
    frame=st.text(),
    url=st.none() | st.text(),
)


@given(frame_strategy)
def test_any_frame_round_trips(frame: RecordedFrame) -> None:
    line = to_line(frame)
    parsed = parse_line(line)
    assert parsed == frame and hash(parsed) == hash(frame) and repr(parsed) == repr(frame)
    assert parse_line(line.decode()) == frame
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.ts = 0  # type: ignore[misc]


@pytest.mark.parametrize("name", ["rec.jsonl", "rec.jsonl.gz", "rec.jsonl.zst"])
def test_file_round_trip_in_each_encoding(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    with RecordingWriter(path) as writer:
        for frame in FRAMES:
            writer.write(frame)
    assert writer.count == len(FRAMES)
    head = path.read_bytes()[:4]
    if name.endswith(".gz"):
        assert head[:2] == b"\x1f\x8b"
    elif name.endswith(".zst"):
        assert head == b"\x28\xb5\x2f\xfd"
    else:
        assert head == b'{"ts'
    assert list(iter_records([path])) == FRAMES


def test_large_file_streams_across_buffer_flushes(tmp_path: Path) -> None:
    path = tmp_path / "big.zst"
    frames = [RecordedFrame(i, "binance", "in", "x" * (i % 300)) for i in range(20_000)]
    with RecordingWriter(path) as writer:
        for frame in frames:
            writer.write(frame)
    assert list(iter_records([str(path)])) == frames


def test_several_files_in_order_and_mixed_encodings(tmp_path: Path) -> None:
    paths = [tmp_path / "a.gz", tmp_path / "b", tmp_path / "c.zst"]
    expected = []
    for n, path in enumerate(paths):
        with RecordingWriter(path) as writer:
            for i in range(5):
                frame = RecordedFrame(n * 10 + i, "coinbase", "in", f"{n}:{i}")
                writer.write(frame)
                expected.append(frame)
    assert list(iter_records(paths)) == expected


def test_encoding_is_detected_from_content_not_suffix(tmp_path: Path) -> None:
    lines = b"".join(to_line(f) for f in FRAMES)
    gz, zst = tmp_path / "really-gzip.jsonl", tmp_path / "really-zstd.gz"
    gz.write_bytes(gzip.compress(lines))
    # two zstd frames back to back: both are read
    half = len(lines) // 2
    cctx = zstandard.ZstdCompressor()
    zst.write_bytes(cctx.compress(lines[:half]) + cctx.compress(lines[half:]))
    assert list(iter_records([gz])) == FRAMES
    assert list(iter_records([zst])) == FRAMES


def test_blank_lines_are_skipped_and_crlf_accepted(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n" + to_line(FRAMES[2]).replace(b"\n", b"\r\n") + b"\n  \n")
    assert list(iter_records([path])) == [FRAMES[2]]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b"not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"exchange":"binance","dir":"in","frame":"x"}', "missing field 'ts'"),
        (b'{"ts":1.5,"exchange":"binance","dir":"in","frame":"x"}', "'ts' must be an integer"),
        (b'{"ts":true,"exchange":"binance","dir":"in","frame":"x"}', "'ts' must be an integer"),
        (b'{"ts":1,"exchange":"","dir":"in","frame":"x"}', "'exchange' must be"),
        (b'{"ts":1,"exchange":"binance","dir":"up","frame":"x"}', "'dir' must be"),
        (b'{"ts":1,"exchange":"binance","dir":"in","frame":{}}', "'frame' must be a string"),
        (b'{"ts":1,"exchange":"binance","dir":"in","frame":"x","url":3}', "'url' must be"),
    ],
)
def test_bad_line_names_the_problem(line: bytes, problem: str) -> None:
    with pytest.raises(RecordingError, match=re.escape(problem)):
        parse_line(line)


def test_bad_line_in_a_file_names_file_and_line(tmp_path: Path) -> None:
    good, path = tmp_path / "good.jsonl", tmp_path / "bad.jsonl.gz"
    good.write_bytes(to_line(FRAMES[0]))
    with gzip.open(path, "wb") as fh:
        fh.write(to_line(FRAMES[1]) + b"\n" + to_line(FRAMES[2]) + b'{"ts": "soon"}\n')
    got: list[RecordedFrame] = []
    with pytest.raises(RecordingError, match=re.escape(f"{path}:4: ")):
        got.extend(iter_records([good, path]))
    assert got == FRAMES[:3]  # everything before the bad line was delivered


def test_missing_and_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="cannot open"):
        list(iter_records([tmp_path / "nope.zst"]))
    truncated = tmp_path / "cut.gz"
    truncated.write_bytes(gzip.compress(b"".join(to_line(f) for f in FRAMES * 50))[:-20])
    with pytest.raises(RecordingError, match=re.escape(str(truncated))):
        list(iter_records([truncated]))
    bad_zstd = tmp_path / "bad.zst"
    bad_zstd.write_bytes(b"\x28\xb5\x2f\xfd" + os.urandom(64))
    with pytest.raises(RecordingError, match=re.escape(str(bad_zstd))):
        list(iter_records([bad_zstd]))


def test_writer_rejects_bad_dir_and_use_after_close(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="dir"):
        to_line(RecordedFrame(1, "binance", "sideways", "x"))
    writer = RecordingWriter(tmp_path / "w.gz")
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RecordingError, match="closed"):
        writer.write(FRAMES[0])


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1633998512.0633569", 1_633_998_512_063_356_900),
        ("1633998511.159679", 1_633_998_511_159_679_000),
        ("1618677817", 1_618_677_817_000_000_000),
        ("0.000000001", 1),
        ("1.1234567899", 1_123_456_789),  # beyond ns: truncated
    ],
)
def test_epoch_text_is_converted_exactly(text: str, ns: int) -> None:
    assert epoch_text_to_ns(text) == ns


@pytest.mark.parametrize("text", ["", "1e9", "-1.5", "1.", ".5", "12a", "\uff11\uff12"])
def test_epoch_text_rejects_non_decimals(text: str) -> None:
    with pytest.raises(ValueError):
        epoch_text_to_ns(text)


# -- the real cryptofeed captures -------------------------------------------------------------


_CONNECT = re.compile(r"^(\S+) <-> ([0-9.]+)$")
_SENT = re.compile(r"^(\S+) <- ([0-9.]+): (.*)$")
_RECEIVED = re.compile(r"^([0-9.]+): (.*)$")


def _independent(path: Path, exchange: str) -> list[RecordedFrame]:
    """The expected frames, by regular expressions and Decimal (not the code under test)."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        if m := _CONNECT.match(line):
            ts = int(Decimal(m[2]) * 10**9)
            out.append(RecordedFrame(ts, exchange, "out", "", m[1]))
        elif m := _SENT.match(line):
            out.append(RecordedFrame(int(Decimal(m[2]) * 10**9), exchange, "out", m[3]))
        else:
            m = _RECEIVED.match(line)
            assert m is not None, line
            out.append(RecordedFrame(int(Decimal(m[1]) * 10**9), exchange, "in", m[2]))
    return out


def test_binance_capture_converts_exactly() -> None:
    frames = list(convert_cryptofeed(BINANCE_FILE, "binance"))
    assert frames == _independent(BINANCE_FILE, "binance")
    text = BINANCE_FILE.read_text(encoding="utf-8")
    assert len(frames) == sum(1 for line in text.splitlines() if line)
    assert sum(f.is_connect for f in frames) == text.count(" <-> ") == 1
    assert frames[1] == RecordedFrame(
        1_633_998_512_063_356_900, "binance", "in", text.splitlines()[1].split(": ", 1)[1]
    )
    proto = BinanceProtocol("aggTrade")
    trades = [t for f in frames if f.dir == "in" for t in _trades(proto.parse(f.frame, f.ts))]
    assert len(trades) == text.count('"e":"aggTrade"') == 2
    assert trades[0].trade_id == "15683430" and trades[0].ts_recv == 1_633_998_523_957_215_000
    assert trades[0].price == "0.35280000" and trades[0].side == "buy"


def test_coinbase_capture_converts_exactly() -> None:
    frames = list(convert_cryptofeed(COINBASE_FILE, "coinbase"))
    assert frames == _independent(COINBASE_FILE, "coinbase")
    text = COINBASE_FILE.read_text(encoding="utf-8")
    assert len(frames) == sum(1 for line in text.splitlines() if line)
    assert [f.dir for f in frames[:4]] == ["out"] * 4
    assert frames[0].url == "wss://ws-feed.pro.coinbase.com" and frames[0].is_connect
    assert frames[1].ts == 1_618_677_817_020_616_000 and '"channels":["level2"]' in frames[1].frame
    proto = CoinbaseProtocol()
    trades = [t for f in frames if f.dir == "in" for t in _trades(proto.parse(f.frame, f.ts))]
    assert len(trades) == text.count('"type":"match"') + text.count('"type":"last_match"')
    assert all(t.ts_recv % 100 == 0 for t in trades)  # from the 7-decimal text, no float noise


def test_converted_capture_round_trips_through_a_zstd_file(tmp_path: Path) -> None:
    frames = list(convert_cryptofeed(COINBASE_FILE, "coinbase"))
    path = tmp_path / "coinbase.jsonl.zst"
    with RecordingWriter(path) as writer:
        for frame in frames:
            writer.write(frame)
    assert list(iter_records([path])) == frames


def test_bad_capture_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "capture"
    path.write_text("1.5: {}\nwss://x <=> 3\n", encoding="utf-8")
    with pytest.raises(RecordingError, match=re.escape(f"{path}:2: ")):
        list(convert_cryptofeed(path, "binance"))
    path.write_text("abc: {}\n", encoding="utf-8")
    with pytest.raises(RecordingError, match=":1: "):
        list(convert_cryptofeed(path, "binance"))


def _trades(result: object) -> tuple[object, ...]:
    return result if isinstance(result, tuple) else ()
