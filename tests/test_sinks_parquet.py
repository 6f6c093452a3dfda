"""The Parquet encoder and decoder (sinks/parquet.py, docs: lake.md#formats): records round-trip
exactly, the schema is the contract's, partition fields live in the path and the metadata, text
that no decimal column can hold keeps its text, and a damaged body is an IntegrityError."""

from __future__ import annotations

import io
import sys
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.book_records import BookLevel
from engine.clock import FakeClock
from engine.errors import ConfigError, IntegrityError
from engine.records import Trade
from feedvault.config import load_stream_config
from sinks.encoders import decode_object, make_encoder
from sinks.keys import KeyTemplate
from sinks.parquet import (
    PENDING_ROW_BYTES,
    START_ROW_BYTES,
    ParquetEncoder,
    decode,
    fits,
    rows_per_group,
)
from sinks.windowing import Windower, WindowPolicy
from tests.harness import stream_settings
from tests.strategies import make_trade

PARTITION = {"exchange": "binance", "symbol": "BTC-USDT"}
EX_SYM = ["exchange", "symbol"]

#: Prices and sizes as exchanges send them (Binance's 8 places, Coinbase's varying scales,
#: Kraken's JSON numbers kept as text, exponent forms).
REAL_TEXTS = [
    ("27123.33000000", "0.00120000"),
    ("0.791", "450"),
    ("105944.2", "0.00027625"),
    ("78808.8", "0.00504905"),
    ("0.000000010000", "1E+2"),
    ("1e-3", "12345678901234567890.123456789012345678"),
]


def trades(n: int, **changes: Any) -> list[Trade]:
    out = []
    for i in range(n):
        price, size = REAL_TEXTS[i % len(REAL_TEXTS)]
        fields = {"trade_id": str(1000 + i), "price": price, "size": size}
        fields |= {"side": "sell" if i % 3 else "buy", "ts_event": 1_700_000_000_000_000 + i}
        fields["ts_recv"] = 1_700_000_000_000_000_123 + i * 1000
        out.append(make_trade("binance", "BTC-USDT", "BTCUSDT", **(fields | changes)))
    return out


def books(n: int) -> list[BookLevel]:
    return [
        BookLevel(
            "okx",
            "BTC-USDT",
            "BTC-USDT",
            1_700_000_000_000_000 + i // 4,
            1_700_000_000_000_000_123 + i // 4,
            None if i % 8 < 4 else str(i // 4),
            i < 4,
            "bid" if i % 2 else "ask",
            f"43000.{i:03d}",
            "0" if i % 5 == 0 else "0.5",
        )
        for i in range(n)
    ]


def encoded(records: list[Any], **kwargs: Any) -> bytes:
    encoder = ParquetEncoder(**({"kind": "trade", "partition": PARTITION} | kwargs))
    for start in range(0, len(records), 97):
        encoder.write(records[start : start + 97])
    return encoder.finish()


def table(body: bytes) -> pa.Table:
    return pq.ParquetFile(io.BytesIO(body)).read()


def test_trades_round_trip_in_row_groups_with_the_contract_schema() -> None:
    sent = trades(1000)
    body = encoded(sent, row_group_rows=300)
    assert decode_object("p/x-000001.parquet", body) == [vars(t) for t in sent]
    meta = pq.ParquetFile(io.BytesIO(body)).metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert sizes == [388, 388, 224]  # written once 300 are held (batches of 97), the rest at finish
    assert meta.row_group(0).column(0).compression == "ZSTD"
    encodings = {
        meta.schema.column(i).name: set(meta.row_group(0).column(i).encodings) for i in range(9)
    }
    assert "RLE_DICTIONARY" in encodings["raw_symbol"]
    assert "DELTA_BINARY_PACKED" in encodings["ts_recv"]
    assert "DELTA_BYTE_ARRAY" in encodings["price_text"]
    got = table(body)
    decimal = pa.decimal128(38, 18)
    assert got.schema.remove_metadata() == pa.schema(
        [
            ("raw_symbol", pa.string()),
            ("trade_id", pa.string()),
            ("price", decimal),
            ("size", decimal),
            ("side", pa.string()),
            ("ts_event", pa.timestamp("us", tz="UTC")),
            ("ts_recv", pa.timestamp("ns", tz="UTC")),
            ("price_text", pa.string()),
            ("size_text", pa.string()),
        ]
    )
    assert got.schema.metadata[b"feedvault.exchange"] == b"binance"
    assert got.schema.metadata[b"feedvault.symbol"] == b"BTC-USDT"
    assert got.column("price").to_pylist()[:2] == [Decimal("27123.33"), Decimal("0.791")]
    assert got.column("price_text").to_pylist()[:2] == ["27123.33000000", "0.791"]


def test_book_rows_round_trip_with_their_schema() -> None:
    sent = books(40)
    body = encoded(sent, kind="book", partition={"exchange": "okx", "symbol": "BTC-USDT"})
    assert decode_object("p/x.parquet", body) == [vars(row) for row in sent]
    got = table(body)
    assert got.column_names == [
        "raw_symbol",
        "ts_event",
        "ts_recv",
        "seq",
        "snapshot",
        "side",
        "price",
        "size",
        "price_text",
        "size_text",
    ]
    assert got.schema.field("snapshot").type == pa.bool_()
    assert got.column("seq").null_count == 20


def test_text_no_decimal_column_holds_keeps_its_text_and_a_null_decimal() -> None:
    texts = ["1e-19", "123456789012345678901", "0.1234567890123456789", " 1", "NaN", "-0.5"]
    sent = [make_trade("b", "S", "S", trade_id=str(i), price=t) for i, t in enumerate(texts)]
    body = encoded(sent, partition={})
    assert [r["price"] for r in decode(body)] == texts
    assert table(body).column("price").to_pylist() == [None] * 5 + [Decimal("-0.5")]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("27123.33000000", Decimal("27123.33")),
        ("1.50000000000000000000", Decimal("1.5")),  # 20 places, but trailing zeros
        (
            "99999999999999999999.999999999999999999",
            Decimal("99999999999999999999.999999999999999999"),
        ),
        ("1E+19", Decimal(10**19)),
        ("0E+30", Decimal(0)),
        ("-.5", Decimal("-0.5")),
        ("100000000000000000000", None),  # 21 integer digits
        ("1e-19", None),  # 19 places
        ("1E+20", None),
        (" 1", None),
        ("1_000", None),
        ("NaN", None),
        ("Infinity", None),
        ("\u0661", None),  # an Arabic-Indic digit: Python's Decimal takes it, not a plain number
    ],
)
def test_fits_is_the_exact_rule_of_the_decimal_columns(text: str, value: Decimal | None) -> None:
    assert fits(text) == value
    sent = [make_trade("b", "S", "S", price=text)]
    assert table(encoded(sent, partition={})).column("price").to_pylist() == [value]


def test_values_pyarrows_cast_would_wrap_around_are_null_not_wrong() -> None:
    """pyarrow's string-to-decimal cast accepts these and returns another number."""
    texts = ["340282366920938463804", "1.7E+26", "-3.4E+23", "1e-3", "99999999999999999999.5"]
    sent = [make_trade("b", "S", "S", trade_id=str(i), price=t) for i, t in enumerate(texts)]
    body = encoded(sent, partition={})
    assert [r["price"] for r in decode(body)] == texts
    expected = [None, None, None, Decimal("0.001"), Decimal("99999999999999999999.5")]
    assert table(body).column("price").to_pylist() == expected


@pytest.mark.parametrize(
    ("template", "columns", "meta"),
    [
        (None, [], ["exchange", "symbol"]),
        ("{prefix}{dataset}/{exchange}/{symbol}/{date}/{run_id}-{seq}.{ext}", EX_SYM, []),
        ("{prefix}{dataset}/exchange={exchange}/{run_id}-{seq}.{ext}", ["symbol"], ["exchange"]),
        ("{prefix}{dataset}/{date}/{run_id}-{seq}.{ext}", EX_SYM, []),
    ],
    ids=["default", "not-hive", "no-symbol", "no-partition"],
)
def test_the_windower_leaves_only_the_templates_hive_fields_to_the_path_and_metadata(
    template: str | None, columns: list[str], meta: list[str]
) -> None:
    clock = FakeClock(1_700_000_000)
    sent = trades(10) + trades(5, symbol="ETH-USDT", raw_symbol="ETHUSDT")
    windower = Windower(
        WindowPolicy(),
        KeyTemplate(template) if template else KeyTemplate(),
        prefix="p/",
        run_id="r",
        format="parquet",
        clock=clock,
    )
    windower.add(sent)
    closed = windower.close_all()
    assert all(w.key.endswith(".parquet") and w.format == "parquet" for w in closed)
    decoded = [r for w in closed for r in decode_object(w.key, w.body)]
    assert sorted(decoded, key=lambda r: r["trade_id"]) == sorted(
        (vars(t) for t in sent), key=lambda r: r["trade_id"]
    )
    for window in closed:
        got = table(window.body)
        assert [n for n in ("exchange", "symbol") if n in got.column_names] == columns
        keys = [k.decode() for k in got.schema.metadata if k.startswith(b"feedvault.")]
        assert sorted(keys) == sorted(["feedvault.record", *(f"feedvault.{m}" for m in meta)])


def test_compressed_size_grows_between_row_groups_and_ends_exact() -> None:
    """It grows with each batch while rows are buffered; when a row group is written the
    estimate of its rows gives way to their stored size (it may step down); exact at the end."""
    encoder = ParquetEncoder(kind="trade", partition=PARTITION, row_group_rows=500)
    encoder.write(trades(400))  # no row group yet: the buffered rows are estimated
    assert encoder.pending_rows == 400 and encoder.compressed_size >= 400 * START_ROW_BYTES
    encoder.write(trades(200))  # 600 held: written as one row group
    assert encoder.pending_rows == 0
    written = encoder.compressed_size
    encoder.write(trades(300))
    assert encoder.pending_rows == 300 and encoder.compressed_size > written
    estimate = encoder.compressed_size
    body = encoder.finish()
    assert encoder.compressed_size == len(body) and encoder.raw_size > 0
    assert 0.9 < estimate / len(body) < 1.1  # the rows alike, the estimate close


def test_rows_per_group_is_a_quarter_of_the_window_in_memory_at_most_4_mib() -> None:
    assert rows_per_group() == rows_per_group(64 * 1024 * 1024) == 8192
    assert rows_per_group(16 * 1024 * 1024) == 8192
    assert rows_per_group(1024 * 1024) == 512
    assert rows_per_group(2_000) == 1


def test_a_small_window_closes_near_its_bound_with_few_rows_buffered() -> None:
    """Twelve symbols, batches of 25: each window closes by its bytes near ``max_bytes`` (not
    at a 10,000-row group), and no row group (the rows buffered before it was written) holds
    more than :func:`rows_per_group` plus one batch."""
    max_bytes = 64 * 1024
    budget = rows_per_group(max_bytes)
    assert budget * PENDING_ROW_BYTES <= max_bytes // 4
    windower = Windower(
        WindowPolicy(max_bytes=max_bytes),
        KeyTemplate(),
        prefix="p/",
        run_id="r",
        format="parquet",
        clock=FakeClock(1_700_000_000),
    )
    symbols = [f"S{n}" for n in range(12)]
    closed = [
        window
        for batch in range(150)
        for symbol in symbols
        for window in windower.add(trades(25, symbol=symbol, trade_id=str(batch)))
    ]
    assert {decode(w.body)[0]["symbol"] for w in closed} == set(symbols)
    for window in closed:
        assert 0.85 * max_bytes < len(window.body) < 1.1 * max_bytes, window.records
        meta = pq.ParquetFile(io.BytesIO(window.body)).metadata
        groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert max(groups) <= budget + 25 - 1 and sum(groups) == window.records
    total = sum(w.records for w in closed + windower.close_all())
    assert total == 150 * 25 * len(symbols)


def test_a_large_window_gets_large_row_groups_and_round_trips() -> None:
    """The real windower past one row group: the default ``WINDOW_MAX_BYTES`` (64 MiB) makes
    row groups of 8,192 rows (plus part of a batch), and the records decode as sent."""
    windower = Windower(
        WindowPolicy(),
        KeyTemplate(),
        prefix="p/",
        run_id="r",
        format="parquet",
        clock=FakeClock(1_700_000_000),
    )
    sent = trades(20_000)
    for start in range(0, len(sent), 100):
        assert windower.add(sent[start : start + 100]) == []
    (window,) = windower.close_all()
    meta = pq.ParquetFile(io.BytesIO(window.body)).metadata
    groups = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert groups == [8200, 8200, 3600]
    assert decode_object(window.key, window.body) == [vars(t) for t in sent]


def test_raw_capture_objects_stay_ndjson_zst_under_format_parquet() -> None:
    windower = Windower(
        WindowPolicy(),
        KeyTemplate("{prefix}{dataset}/exchange={exchange}/{run_id}-{seq}.{ext}"),
        prefix="p/",
        run_id="r",
        format="parquet",
        dataset="raw",
        clock=FakeClock(1_700_000_000),
        trade_ids=False,
    )
    assert windower.format == "ndjson.zst"


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: body[: len(body) // 2],
        lambda body: body[:-3],
        lambda body: body + b"junk",
        lambda body: b"PAR1 not parquet at all PAR1",
        lambda body: body[:200] + bytes([body[200] ^ 0xFF]) + body[201:],  # in a data page
    ],
    ids=["half", "footer-cut", "trailing", "garbage", "flipped"],
)
def test_a_damaged_body_is_an_integrity_error(damage: Any) -> None:
    body = encoded(trades(300))
    with pytest.raises(IntegrityError, match="corrupt parquet"):
        decode_object("p/x.parquet", damage(body))


def test_a_parquet_file_not_of_feedvault_is_an_integrity_error() -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"a": [1]}), sink)
    with pytest.raises(IntegrityError, match="not a feedvault parquet"):
        decode(sink.getvalue())
    body = encoded(trades(3), partition={"exchange": "binance"})
    stripped = table(body).replace_schema_metadata({b"feedvault.record": b"trade"})
    sink = io.BytesIO()
    pq.write_table(stripped, sink)
    with pytest.raises(IntegrityError, match="no column or metadata for 'exchange'"):
        decode(sink.getvalue())


def test_format_parquet_without_pyarrow_is_a_config_error_naming_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ConfigError) as info:
        load_stream_config(stream_settings(FORMAT="parquet"))
    assert info.value.variable == "FORMAT"
    assert "pip install 'feedvault[lake]'" in str(info.value)
    assert load_stream_config(stream_settings(FORMAT="ndjson.zst")).sink.format == "ndjson.zst"
    with pytest.raises(ConfigError, match="FORMAT"):
        make_encoder("parquet")


_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
_numeric = st.from_regex(r"[+-]?[0-9]{0,24}(\.[0-9]{0,22})?([eE][+-]?[0-9]{1,2})?", fullmatch=True)
_number = (
    st.decimals(allow_nan=False, allow_infinity=False, places=None).map(str) | _numeric | _text
)
_trade = st.builds(
    Trade,
    _text,
    _text,
    _text,
    _text,
    _number,
    _number,
    _text,
    st.integers(0, 2**62),
    st.integers(0, 2**63 - 1),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_trade, max_size=40), st.integers(1, 50))
def test_any_trades_round_trip_and_each_decimal_is_what_fits_makes_of_its_text(
    sent: list[Trade], rows: int
) -> None:
    body = encoded(sent, partition={}, row_group_rows=rows)
    assert decode_object("p/x.parquet", body) == [vars(t) for t in sent]
    got = table(body)
    for column in ("price", "size"):
        for value, text in zip(
            got.column(column).to_pylist(), got.column(f"{column}_text").to_pylist(), strict=True
        ):
            assert value == fits(text)
