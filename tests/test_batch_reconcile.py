"""The reconcile job's pure logic: statuses, totals and the report worked out by hand."""

from __future__ import annotations

import io
import json
from decimal import Decimal

import pyarrow.parquet as pq
import pytest

from batch.csvutil import InputError
from batch.reconcile import (
    DETAIL_SCHEMA,
    detail_rows,
    parse_ledger,
    parse_processor,
    reconcile,
    summary,
    summary_markdown,
    to_json,
    to_jsonl,
    to_parquet,
)

LEDGER = (
    b"txn_id,account,amount,currency,timestamp\n"
    b"T1,A,10.00,USD,2024-05-01T10:00:00Z\n"  # matched
    b"T2,A,5.5,usd,2024-05-01T11:00:00+02:00\n"  # amount mismatch (processor 5.45)
    b"T3,A,100,JPY,2024-05-01T12:00:00Z\n"  # currency mismatch (processor USD)
    b"T4,B,1.250,KWD,2024-05-01T12:00:00Z\n"  # missing in processor
    b"T1,B,7,EUR,2024-05-01T12:00:00Z\n"  # same id, other account: missing in processor
    b"T1,A,10.00,USD,2024-05-01T10:00:00Z\n"  # duplicate of line 2
    b"T6,A,1.001,USD,2024-05-01T10:00:00Z\n"  # rejected: USD has 2 places
)
PROCESSOR = (
    b"account,reference,currency,amount,settled_at\n"
    b"A,T2,USD,5.45,2024-05-02T00:00:00Z\n"
    b"A,T1,USD,10,2024-05-02T00:00:00Z\n"
    b"A,T3,USD,100.00,2024-05-02T00:00:00Z\n"
    b"C,T5,EUR,-3.00,2024-05-02T00:00:00Z\n"  # missing in ledger (a refund)
    b"A,T3,USD,100.00,2024-05-02T00:00:00Z\n"  # duplicate of line 4
)


def test_statuses_and_totals() -> None:
    rec = reconcile(parse_ledger("ledger.csv", LEDGER), parse_processor("proc.csv", PROCESSOR))
    assert [p.ledger.key for p in rec.matched] == [("A", "T1")]
    [mismatch] = rec.amount_mismatches
    assert mismatch.difference == Decimal("-0.05")  # 5.45 - 5.50
    assert [p.ledger.key for p in rec.currency_mismatches] == [("A", "T3")]
    assert rec.currency_mismatches[0].difference is None
    assert [t.key for t in rec.missing_in_processor] == [("B", "T1"), ("B", "T4")]
    assert [t.key for t in rec.missing_in_ledger] == [("C", "T5")]
    report = summary(rec)
    assert report["counts"] == {
        "matched": 1,
        "amount-mismatch": 1,
        "currency-mismatch": 1,
        "missing-in-processor": 2,
        "missing-in-ledger": 1,
        "duplicate-ledger": 1,
        "duplicate-processor": 1,
    }
    assert report["balanced"] is False
    assert report["ledger"] == {
        "source": "ledger.csv",
        "rows": 7,
        "valid": 6,
        "rejected": 1,
        "rejected_by_kind": {"too-precise": 1},
        "duplicates": 1,
    }
    # USD: ledger 10.00 + 5.50 = 15.50; processor 5.45 + 10.00 + 100.00 = 115.45; matched 10.00
    # EUR: ledger 7.00, processor -3.00 -> -10.00; JPY 100 vs 0; KWD 1.250 vs 0.000
    assert report["by_currency"] == {
        "EUR": {
            "ledger_total": "7.00",
            "processor_total": "-3.00",
            "matched_total": "0.00",
            "difference": "-10.00",
        },
        "JPY": {
            "ledger_total": "100",
            "processor_total": "0",
            "matched_total": "0",
            "difference": "-100",
        },
        "KWD": {
            "ledger_total": "1.250",
            "processor_total": "0.000",
            "matched_total": "0.000",
            "difference": "-1.250",
        },
        "USD": {
            "ledger_total": "15.50",
            "processor_total": "115.45",
            "matched_total": "10.00",
            "difference": "99.95",
        },
    }
    markdown = summary_markdown(report)
    assert "| amount-mismatch | 1 |" in markdown
    assert "| rejected-ledger | 1 |" in markdown
    assert "| USD | 15.50 | 115.45 | 10.00 | 99.95 |" in markdown
    assert "Balanced: no." in markdown
    assert json.loads(to_json(report)) == json.loads(json.dumps(report))


def test_balanced_when_everything_matches() -> None:
    ledger = b"txn_id,account,amount,currency,timestamp\nT1,A,1,USD,2024-05-01T00:00:00Z\n"
    proc = b"reference,account,amount,currency,settled_at\nT1,A,1.00,USD,2024-05-01T01:00:00Z\n"
    report = summary(reconcile(parse_ledger("l", ledger), parse_processor("p", proc)))
    assert report["balanced"] is True
    assert "Balanced: yes." in summary_markdown(report)


def test_detail_rows_jsonl_and_parquet() -> None:
    rec = reconcile(parse_ledger("ledger.csv", LEDGER), parse_processor("proc.csv", PROCESSOR))
    rows = detail_rows(rec)
    assert len(rows) == 8  # 6 keys (A,T1 A,T2 A,T3 B,T1 B,T4 C,T5) + 2 duplicates
    lines = to_jsonl(rows)
    assert lines == to_jsonl(reversed(rows))
    assert (
        b'{"status":"amount-mismatch","account":"A","id":"T2","ledger_amount":"5.50",'
        b'"ledger_currency":"USD","processor_amount":"5.45","processor_currency":"USD",'
        b'"difference":"-0.05","ledger_row":3,"processor_row":2}\n'
    ) in lines
    blob = to_parquet(rows, DETAIL_SCHEMA)
    assert blob == to_parquet(list(reversed(rows)), DETAIL_SCHEMA)
    back = pq.read_table(io.BytesIO(blob)).to_pylist()
    assert back == [json.loads(line) for line in lines.splitlines()]


GOOD = "T9,A,1.00,USD,2024-05-01T00:00:00Z"


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("T9,A,1.00,USD", "wrong-field-count"),
        ("T9,,1.00,USD,2024-05-01T00:00:00Z", "missing-field"),
        ("T9,A,1.0O,USD,2024-05-01T00:00:00Z", "bad-decimal"),
        ('T9,A,"1,000.00",USD,2024-05-01T00:00:00Z', "bad-decimal"),
        ("T9,A,1.00,XYZ,2024-05-01T00:00:00Z", "unknown-currency"),
        ("T9,A,1.5,JPY,2024-05-01T00:00:00Z", "too-precise"),
        ("T9,A,1.0001,KWD,2024-05-01T00:00:00Z", "too-precise"),
        ("T9,A,1.00,USD,2024-05-01 00:00:00", "bad-timestamp"),
        ("T9,A,1.00,USD,2024-05-01", "bad-timestamp"),
        ("T9,A,1.00,USD,yesterday", "bad-timestamp"),
    ],
)
@pytest.mark.parametrize("side", ["ledger", "processor"])
def test_each_rejection_kind(side: str, line: str, kind: str) -> None:
    if side == "ledger":
        data = f"txn_id,account,amount,currency,timestamp\n{GOOD}\n{line}\n".encode()
        parsed = parse_ledger("f.csv", data)
    else:
        data = f"reference,account,amount,currency,settled_at\n{GOOD}\n{line}\n".encode()
        parsed = parse_processor("f.csv", data)
    assert list(parsed.transactions) == [("A", "T9")]
    [bad] = parsed.rejected
    assert (bad.source, bad.row_number, bad.raw_line, bad.kind) == ("f.csv", 3, line, kind)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\x80abc", "not UTF-8"),
        (b"reference,account,amount,currency,settled_at\n", "wrong header"),
        (b'txn_id,account,amount,currency,timestamp\n"T1,A,1,USD,x\n', "malformed CSV"),
    ],
)
def test_malformed_ledger(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_ledger("l.csv", data)
