"""The ecommerce job's pure logic: validation, KPIs worked out by hand, deterministic outputs."""

from __future__ import annotations

import io
import json
import random
from decimal import Decimal

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batch.csvutil import InputError
from batch.ecommerce import (
    CATEGORY_KPI_SCHEMA,
    ORDER_KPI_SCHEMA,
    category_kpis,
    order_kpis,
    parse_orders,
    rejected_csv,
    to_jsonl,
    to_parquet,
)

HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
FILE_A = (
    HEADER
    + "O1,C1,2024-03-01,books,B1,2,10.50,false\n"
    + "O2,C2,2024-03-01,books,B2,1,4.25,true\n"
    + "O3,C1,2024-03-01,toys,T1,3,1.10,false\n"
    + "O4,C3,2024-03-02,toys,T2,5,2.005,FALSE\n"
).encode()
# Columns in another order, a duplicate of O1 across files.
FILE_B = (
    b"returned,unit_price,quantity,product_id,category,order_date,customer_id,order_id\n"
    b"0,0.3333,1,T1,toys,2024-03-02,C3,O5\n"
    b"false,99,1,B9,books,2024-03-01,C9,O1\n"
)


def test_hand_worked_kpis() -> None:
    result = parse_orders([("b.csv", FILE_B), ("a.csv", FILE_A)])
    assert [o.order_id for o in result.orders] == ["O1", "O2", "O3", "O4", "O5"]
    [dup] = result.rejected
    assert (dup.source, dup.row_number, dup.kind) == ("b.csv", 3, "duplicate-id")
    assert "a.csv line 2" in dup.reason
    # 2024-03-01: O1 2 x 10.50 = 21.00, O2 returned (no revenue, no items), O3 3 x 1.10 = 3.30
    #   revenue 24.30, items 2 + 3 = 5, return rate 1/3, customers {C1, C2}
    # 2024-03-02: O4 5 x 2.005 = 10.025, O5 1 x 0.3333 = 0.3333 -> 10.3583, items 6, customers {C3}
    assert order_kpis(result.orders) == [
        {
            "order_date": "2024-03-01",
            "total_orders": 3,
            "total_revenue": Decimal("24.3000"),
            "total_items_sold": 5,
            "return_rate": Decimal("0.333333"),
            "unique_customers": 2,
        },
        {
            "order_date": "2024-03-02",
            "total_orders": 2,
            "total_revenue": Decimal("10.3583"),
            "total_items_sold": 6,
            "return_rate": Decimal("0.000000"),
            "unique_customers": 1,
        },
    ]
    # books 03-01: 21.00 over 2 orders -> 10.50; 1 of 2 returned -> 0.5
    # toys 03-01: 3.30 / 1; toys 03-02: 10.3583 / 2 = 5.17915 -> half-even -> 5.1792
    assert category_kpis(reversed(result.orders)) == [
        {
            "category": "books",
            "order_date": "2024-03-01",
            "orders": 2,
            "daily_revenue": Decimal("21.0000"),
            "avg_order_value": Decimal("10.5000"),
            "avg_return_rate": Decimal("0.500000"),
        },
        {
            "category": "toys",
            "order_date": "2024-03-01",
            "orders": 1,
            "daily_revenue": Decimal("3.3000"),
            "avg_order_value": Decimal("3.3000"),
            "avg_return_rate": Decimal("0.000000"),
        },
        {
            "category": "toys",
            "order_date": "2024-03-02",
            "orders": 2,
            "daily_revenue": Decimal("10.3583"),
            "avg_order_value": Decimal("5.1792"),
            "avg_return_rate": Decimal("0.000000"),
        },
    ]


def test_jsonl_bytes_and_parquet_round_trip() -> None:
    result = parse_orders([("a.csv", FILE_A), ("b.csv", FILE_B)])
    rows = order_kpis(result.orders)
    data = to_jsonl(reversed(rows))
    assert data == to_jsonl(rows)
    assert data.splitlines()[0] == (
        b'{"order_date":"2024-03-01","total_orders":3,"total_revenue":"24.3000",'
        b'"total_items_sold":5,"return_rate":"0.333333","unique_customers":2}'
    )
    for kpis, schema in (
        (rows, ORDER_KPI_SCHEMA),
        (category_kpis(result.orders), CATEGORY_KPI_SCHEMA),
    ):
        blob = to_parquet(kpis, schema)
        assert blob == to_parquet(list(reversed(kpis)), schema)
        table = pq.read_table(io.BytesIO(blob))
        assert table.schema.equals(schema)
        back = [
            {k: format(v, "f") if isinstance(v, Decimal) else v for k, v in row.items()}
            for row in table.to_pylist()
        ]
        assert back == [json.loads(line) for line in to_jsonl(kpis).splitlines()]


BAD_ROWS = [
    ("O9,C1,2024-03-01,books,B1,2,10.50", "wrong-field-count"),
    ("O9,,2024-03-01,books,B1,2,10.50,false", "missing-field"),
    ("O9,C1,2024-02-30,books,B1,2,10.50,false", "bad-date"),
    ("O9,C1,01/03/2024,books,B1,2,10.50,false", "bad-date"),
    ("O9,C1,2024-03-01,books,B1,two,10.50,false", "bad-integer"),
    ("O9,C1,2024-03-01,books,B1,1.5,10.50,false", "bad-integer"),
    ("O9,C1,2024-03-01,books,B1,2,1e3,false", "bad-decimal"),
    ('O9,C1,2024-03-01,books,B1,2,"10,50",false', "bad-decimal"),
    ("O9,C1,2024-03-01,books,B1,2,NaN,false", "bad-decimal"),
    ("O9,C1,2024-03-01,books,B1,-2,10.50,false", "negative-value"),
    ("O9,C1,2024-03-01,books,B1,2,-0.01,false", "negative-value"),
    ("O9,C1,2024-03-01,books,B1,1000000001,10.50,false", "out-of-range"),
    ("O9,C1,2024-03-01,books,B1,1,1000000000000,false", "out-of-range"),
    ("O9,C1,2024-03-01,books,B1,2,10.50001,false", "too-precise"),
    ("O9,C1,2024-03-01,books,B1,2,10.50,maybe", "bad-boolean"),
    ("O1,C1,2024-03-01,books,B1,2,10.50,false", "duplicate-id"),
]


@pytest.mark.parametrize(("line", "kind"), BAD_ROWS)
def test_each_rejection_kind(line: str, kind: str) -> None:
    data = (HEADER + "O1,C1,2024-03-01,books,B1,0,0,true\n" + line + "\n").encode()
    result = parse_orders([("x.csv", data)])
    assert [o.order_id for o in result.orders] == ["O1"]  # quantity and price 0 are valid
    [bad] = result.rejected
    assert (bad.source, bad.row_number, bad.raw_line, bad.kind) == ("x.csv", 3, line, kind)
    assert bad.reason.startswith(kind + ": ")
    assert result.rejected_by_kind() == {kind: 1}


def test_rejected_rows_of_a_bad_first_do_not_claim_the_id() -> None:
    data = (HEADER + "O1,C1,bad,books,B1,1,1,true\nO1,C1,2024-03-01,books,B1,1,1,true\n").encode()
    result = parse_orders([("x.csv", data)])
    assert [(o.order_id, o.row_number) for o in result.orders] == [("O1", 3)]
    assert [r.kind for r in result.rejected] == ["bad-date"]


def test_rejected_csv_and_raw_lines() -> None:
    data = (
        "\ufeff" + HEADER.replace("\n", "\r\n") + '"O1",C1,2024-03-01,"multi\nline",B1,1,1,yes\r\n'
    ).encode()
    result = parse_orders([("x.csv", data)])
    [bad] = result.rejected
    assert bad.row_number == 2 and bad.raw_line == '"O1",C1,2024-03-01,"multi\nline",B1,1,1,yes'
    assert rejected_csv(result.rejected) == (
        b"source,row_number,kind,reason,raw_line\n"
        b"x.csv,2,bad-boolean,bad-boolean: returned is not true/false/1/0: 'yes',"
        b'"""O1"",C1,2024-03-01,""multi\nline"",B1,1,1,yes"\n'
    )


def test_header_only_and_blank_lines() -> None:
    assert parse_orders([("x.csv", HEADER.encode() + b"\n\n")]).orders == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b" \n\n", "empty file"),
        (b"\xff\xfe" + HEADER.encode(), "not UTF-8"),
        (b"order_id,customer_id\nO1,C1\n", "wrong header"),
        (HEADER.replace("returned", "refunded").encode(), "missing returned; unexpected refunded"),
        (HEADER.encode() + b'O1,"C1,2024-03-01,books,B1,1,1,true\n', "line 2: malformed CSV"),
        (b"order_id,order_id\n", "twice"),
    ],
)
def test_malformed_files(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        parse_orders([("x.csv", data)])
    assert info.value.source == "x.csv"


def test_same_name_twice() -> None:
    with pytest.raises(InputError, match="given twice"):
        parse_orders([("a.csv", FILE_A), ("a.csv", FILE_A)])


order_line = st.tuples(
    st.sampled_from(["C1", "C2", "C3"]),
    st.sampled_from(["2024-03-01", "2024-03-02"]),
    st.sampled_from(["books", "toys"]),
    st.integers(0, 1000),
    st.decimals(min_value=0, max_value=10**6, places=4, allow_nan=False, allow_infinity=False),
    st.booleans(),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(order_line, max_size=30), st.randoms(use_true_random=False))
def test_revenue_is_exact_and_order_free(
    lines: list[tuple[str, str, str, int, Decimal, bool]], rnd: random.Random
) -> None:
    text = [
        f"O{i},{c},{d},{cat},P,{q},{p},{'true' if r else 'false'}"
        for i, (c, d, cat, q, p, r) in enumerate(lines)
    ]
    result = parse_orders([("x.csv", (HEADER + "\n".join(text)).encode())])
    assert len(result.orders) == len(lines) and not result.rejected
    # Exact revenue: the sum over days (or categories) is the sum of q * p, returns excluded.
    expected = sum((q * p for (_, _, _, q, p, r) in lines if not r), Decimal(0))
    assert (
        sum((Decimal(str(r["total_revenue"])) for r in order_kpis(result.orders)), Decimal(0))
        == expected
    )
    assert (
        sum((Decimal(str(r["daily_revenue"])) for r in category_kpis(result.orders)), Decimal(0))
        == expected
    )
    assert sum(int(str(r["total_orders"])) for r in order_kpis(result.orders)) == len(lines)
    shuffled = list(text)
    rnd.shuffle(shuffled)
    again = parse_orders([("x.csv", (HEADER + "\n".join(shuffled)).encode())])
    assert to_jsonl(order_kpis(again.orders)) == to_jsonl(order_kpis(result.orders))
    assert to_jsonl(category_kpis(again.orders)) == to_jsonl(category_kpis(result.orders))
