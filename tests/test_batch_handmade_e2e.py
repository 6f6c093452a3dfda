"""``feedvault batch ecommerce|weather|reconcile`` end to end on small hand-made inputs.

Each test writes its inputs into moto's S3 server with boto3, runs ``feedvault batch JOB`` as a
subprocess configured by environment variables only (as an ECS task would), and compares every
output read back from S3 with values worked out by hand in the comments (exact ``Decimal``
money, floats rounded to 3 places as the jobs write them). The manifest must be complete and
list every output with its size and SHA-256.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import subprocess
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq

from tests.conftest import S3Server
from tests.harness import FEEDVAULT, base_env

PREFIX = "batch/"
INPUT_PREFIX = "input/"


def run_batch(s3: S3Server, bucket: str, job: str, run_id: str) -> subprocess.CompletedProcess[str]:
    env = base_env(
        OUTPUT_BUCKET=bucket,
        OUTPUT_PREFIX=PREFIX,
        INPUT_BUCKET=bucket,
        INPUT_PREFIX=INPUT_PREFIX,
        RUN_ID=run_id,
        **s3.env(),
    )
    return subprocess.run(
        [*FEEDVAULT, "batch", job], env=env, capture_output=True, text=True, timeout=60
    )


def put_inputs(s3: S3Server, bucket: str, files: dict[str, str]) -> None:
    client = s3.client()
    for name, text in files.items():
        client.put_object(Bucket=bucket, Key=INPUT_PREFIX + name, Body=text.encode())


def get(s3: S3Server, bucket: str, key: str) -> bytes:
    body: bytes = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return body


def manifest(s3: S3Server, bucket: str, run_id: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(get(s3, bucket, f"{PREFIX}_manifests/{run_id}.json"))
    return loaded


def assert_complete(
    s3: S3Server, bucket: str, run_id: str, job: str, records: dict[str, int]
) -> dict[str, Any]:
    """The run's manifest is complete and lists exactly the outputs ``records`` (name -> the
    job's count), each with the size and SHA-256 of the object in S3; the outputs are the only
    objects under ``{PREFIX}{job}/``."""
    doc = manifest(s3, bucket, run_id)
    assert (doc["status"], doc["stop_reason"], doc["error"]) == ("complete", "end", None)
    keys = [f"{PREFIX}{job}/{name}" for name in sorted(records)]
    assert [o["key"] for o in doc["objects"]] == keys
    assert s3.keys(bucket, f"{PREFIX}{job}/") == keys
    for entry in doc["objects"]:
        body = get(s3, bucket, entry["key"])
        assert entry["kind"] == "output"
        assert entry["bytes"] == len(body)
        assert entry["sha256"] == hashlib.sha256(body).hexdigest()
        assert entry["records"] == records[entry["key"].removeprefix(f"{PREFIX}{job}/")]
    return doc


def jsonl(s3: S3Server, bucket: str, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in get(s3, bucket, key).decode().splitlines()]


def parquet(s3: S3Server, bucket: str, key: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(get(s3, bucket, key))).to_pylist()
    return rows


def csv_rows(s3: S3Server, bucket: str, key: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(get(s3, bucket, key).decode())))


def as_text(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parquet rows with Decimals as the exact strings the JSON lines carry."""
    return [
        {k: format(v, "f") if isinstance(v, Decimal) else v for k, v in row.items()} for row in rows
    ]


# --------------------------------------------------------------------------------- ecommerce

ORDERS_HEADER = "order_id,customer_id,order_date,category,product_id,quantity,unit_price,returned\n"
ORDERS = {
    # Files are read by name: east/orders-c.csv, orders-a.csv, orders-b.csv.
    "east/orders-c.csv": ORDERS_HEADER
    + "C1,C6,2024-05-01,toys,T2,1,3.25,false\n"
    + "C2,C6,2024-05-02,toys,T2,2,-3.25,false\n"  # line 3: negative-value
    + "C3,C7,2024-05-01,toys,T3,1,1.00,false\n",
    "orders-a.csv": ORDERS_HEADER
    + "A1,C1,2024-05-01,books,B1,2,12.50,false\n"
    + "A2,C2,2024-05-01,books,B2,1,7.99,true\n"
    + "A3,C1,2024-05-01,games,G1,3,0.3333,false\n"
    + "A4,C3,2024-05-02,games,G2,1,59.90,0\n"
    + "A5,C4,2024-05-02,books,B1,4,12.50,TRUE\n"
    + "A6,,2024-05-02,books,B3,1,5.00,false\n",  # line 7: missing-field
    # columns in another order
    "orders-b.csv": "returned,order_id,customer_id,order_date,category,product_id,quantity,"
    "unit_price\n"
    + "false,B1,C2,2024-05-02,games,G3,2,19.995\n"
    + "false,A1,C9,2024-05-01,books,B1,1,1.00\n"  # line 3: duplicate of orders-a.csv line 2
    + "false,B2,C5,2024-13-01,books,B1,1,1.00\n"  # line 4: bad-date
    + "1,B3,C5,2024-05-01,toys,T1,10,0.1\n",
}
ECOMMERCE_OUTPUTS = {
    "category_kpis.jsonl": 5,
    "category_kpis/category_kpis.parquet": 5,
    "orders_kpis.jsonl": 2,
    "orders_kpis/orders_kpis.parquet": 2,
    "rejected/rejected.csv": 4,
}


def test_ecommerce_hand_made_kpis_inputs_moved_and_a_rerun_with_nothing_new_fails(
    s3_server: S3Server, bucket: str
) -> None:
    put_inputs(s3_server, bucket, ORDERS)
    first = run_batch(s3_server, bucket, "ecommerce", "run-1")
    assert first.returncode == 0, first.stderr[-2000:]
    doc = assert_complete(s3_server, bucket, "run-1", "ecommerce", ECOMMERCE_OUTPUTS)
    # rows = newlines read: 4 + 7 + 5; every input moved.
    assert doc["counters"] == {"rows": 16, "files": 3, "outputs": 5, "inputs_moved": 3}

    # Valid orders. Returned orders count as orders but bring no revenue and no items.
    # 2024-05-01: A1 C1 books 2 x 12.50 = 25.00 | A2 C2 books returned | A3 C1 games
    #   3 x 0.3333 = 0.9999 | B3 C5 toys returned | C1 C6 toys 1 x 3.25 | C3 C7 toys 1 x 1.00
    #   orders 6, revenue 25.00 + 0.9999 + 3.25 + 1.00 = 30.2499, items 2 + 3 + 1 + 1 = 7,
    #   return rate 2/6 = 0.333333, customers {C1, C2, C5, C6, C7} = 5
    # 2024-05-02: A4 C3 games 1 x 59.90 | A5 C4 books returned | B1 C2 games 2 x 19.995 = 39.99
    #   orders 3, revenue 59.90 + 39.99 = 99.89, items 1 + 2 = 3, return rate 1/3,
    #   customers {C3, C4, C2} = 3
    orders = [
        {
            "order_date": "2024-05-01",
            "total_orders": 6,
            "total_revenue": "30.2499",
            "total_items_sold": 7,
            "return_rate": "0.333333",
            "unique_customers": 5,
        },
        {
            "order_date": "2024-05-02",
            "total_orders": 3,
            "total_revenue": "99.8900",
            "total_items_sold": 3,
            "return_rate": "0.333333",
            "unique_customers": 3,
        },
    ]
    # avg_order_value = net revenue / orders placed, half-even to 4 places;
    # avg_return_rate = returned / orders.
    categories = [
        # A1 25.00, A2 returned: 25.00 / 2 = 12.50, 1/2 returned
        {
            "category": "books",
            "order_date": "2024-05-01",
            "orders": 2,
            "daily_revenue": "25.0000",
            "avg_order_value": "12.5000",
            "avg_return_rate": "0.500000",
        },
        # A5 returned only
        {
            "category": "books",
            "order_date": "2024-05-02",
            "orders": 1,
            "daily_revenue": "0.0000",
            "avg_order_value": "0.0000",
            "avg_return_rate": "1.000000",
        },
        # A3 0.9999
        {
            "category": "games",
            "order_date": "2024-05-01",
            "orders": 1,
            "daily_revenue": "0.9999",
            "avg_order_value": "0.9999",
            "avg_return_rate": "0.000000",
        },
        # A4 59.90 + B1 39.99 = 99.89; / 2 = 49.945
        {
            "category": "games",
            "order_date": "2024-05-02",
            "orders": 2,
            "daily_revenue": "99.8900",
            "avg_order_value": "49.9450",
            "avg_return_rate": "0.000000",
        },
        # B3 returned, C1 3.25, C3 1.00: 4.25 / 3 = 1.41666.. -> 1.4167, 1/3 returned
        {
            "category": "toys",
            "order_date": "2024-05-01",
            "orders": 3,
            "daily_revenue": "4.2500",
            "avg_order_value": "1.4167",
            "avg_return_rate": "0.333333",
        },
    ]
    kpis = f"{PREFIX}ecommerce/"
    assert jsonl(s3_server, bucket, kpis + "orders_kpis.jsonl") == orders
    assert jsonl(s3_server, bucket, kpis + "category_kpis.jsonl") == categories
    parquet_orders = parquet(s3_server, bucket, kpis + "orders_kpis/orders_kpis.parquet")
    assert parquet_orders[0]["total_revenue"] == Decimal("30.2499")
    assert as_text(parquet_orders) == orders
    categories_parquet = parquet(s3_server, bucket, kpis + "category_kpis/category_kpis.parquet")
    assert as_text(categories_parquet) == categories
    assert csv_rows(s3_server, bucket, kpis + "rejected/rejected.csv") == [
        ["source", "row_number", "kind", "reason", "raw_line"],
        [
            "east/orders-c.csv",
            "3",
            "negative-value",
            "negative-value: unit_price is negative: -3.25",
            "C2,C6,2024-05-02,toys,T2,2,-3.25,false",
        ],
        [
            "orders-a.csv",
            "7",
            "missing-field",
            "missing-field: customer_id is empty",
            "A6,,2024-05-02,books,B3,1,5.00,false",
        ],
        [
            "orders-b.csv",
            "3",
            "duplicate-id",
            "duplicate-id: order_id 'A1' already seen in orders-a.csv line 2",
            "false,A1,C9,2024-05-01,books,B1,1,1.00",
        ],
        [
            "orders-b.csv",
            "4",
            "bad-date",
            "bad-date: order_date is not a YYYY-MM-DD date: '2024-13-01'",
            "false,B2,C5,2024-13-01,books,B1,1,1.00",
        ],
    ]

    # The inputs moved, byte for byte, under processed/ (sub-directories kept).
    moved = sorted(f"{INPUT_PREFIX}processed/{name}" for name in ORDERS)
    assert s3_server.keys(bucket, INPUT_PREFIX) == moved
    for name, text in ORDERS.items():
        assert get(s3_server, bucket, f"{INPUT_PREFIX}processed/{name}") == text.encode()
    logged = [json.loads(line) for line in first.stdout.splitlines() if line.startswith("{")]
    assert sorted(e["source"] for e in logged if e.get("event") == "input_moved") == [
        f"s3://{bucket}/{INPUT_PREFIX}{name}" for name in sorted(ORDERS)
    ]

    # A rerun with nothing new fails clearly and leaves the outputs of run-1 as they are.
    before = {key: get(s3_server, bucket, key) for key in s3_server.keys(bucket, kpis)}
    second = run_batch(s3_server, bucket, "ecommerce", "run-2")
    assert second.returncode == 1, second.stderr[-2000:]
    failed = manifest(s3_server, bucket, "run-2")
    assert (failed["status"], failed["stop_reason"]) == ("incomplete", "error")
    assert failed["error"] == (
        f"no new input under s3://{bucket}/{INPUT_PREFIX}: all 3 input objects are already "
        f"under s3://{bucket}/{INPUT_PREFIX}processed/ (processed by earlier runs); "
        "the outputs of the last run are left as they are"
    )
    assert failed["objects"] == [] and failed["counters"]["inputs_moved"] == 0
    assert {key: get(s3_server, bucket, key) for key in s3_server.keys(bucket, kpis)} == before
    assert s3_server.keys(bucket, INPUT_PREFIX) == moved

    # A new file is processed alone: its KPIs replace those of run-1.
    # 2024-06-01: D1 C1 books 3 x 2.50 = 7.50, D2 C1 books returned -> 2 orders, 7.5000,
    #   3 items, return rate 1/2, 1 customer; books: 7.50 / 2 = 3.75
    put_inputs(
        s3_server,
        bucket,
        {
            "orders-d.csv": ORDERS_HEADER
            + "D1,C1,2024-06-01,books,B1,3,2.50,false\n"
            + "D2,C1,2024-06-01,books,B2,1,9.99,true\n"
        },
    )
    third = run_batch(s3_server, bucket, "ecommerce", "run-3")
    assert third.returncode == 0, third.stderr[-2000:]
    records = {**ECOMMERCE_OUTPUTS, "category_kpis.jsonl": 1, "orders_kpis.jsonl": 1}
    records |= {"category_kpis/category_kpis.parquet": 1, "orders_kpis/orders_kpis.parquet": 1}
    records["rejected/rejected.csv"] = 0
    doc = assert_complete(s3_server, bucket, "run-3", "ecommerce", records)
    assert doc["counters"]["inputs_moved"] == 1
    assert jsonl(s3_server, bucket, kpis + "orders_kpis.jsonl") == [
        {
            "order_date": "2024-06-01",
            "total_orders": 2,
            "total_revenue": "7.5000",
            "total_items_sold": 3,
            "return_rate": "0.500000",
            "unique_customers": 1,
        }
    ]
    assert jsonl(s3_server, bucket, kpis + "category_kpis.jsonl") == [
        {
            "category": "books",
            "order_date": "2024-06-01",
            "orders": 2,
            "daily_revenue": "7.5000",
            "avg_order_value": "3.7500",
            "avg_return_rate": "0.500000",
        }
    ]
    assert s3_server.keys(bucket, INPUT_PREFIX) == sorted(
        [*moved, f"{INPUT_PREFIX}processed/orders-d.csv"]
    )


# ----------------------------------------------------------------------------------- weather

WEATHER = {
    # Fahrenheit, inches, km/h: 50 F = 10 C, 68 F = 20 C, 32 F = 0 C; 0.1 in = 2.54 mm,
    # 0.5 in = 12.7 mm; 36 km/h = 10 m/s, 18 km/h = 5 m/s, 7.2 km/h = 2 m/s.
    "station-a.csv": "station_id,timestamp,temperature_f,humidity_pct,precipitation_in,"
    "wind_speed_kmh\n"
    + "S1,2024-05-01T00:00:00Z,50,80,0.1,36\n"
    + "S1,2024-05-01T12:00:00+02:00,68,60,0,18\n"  # 10:00 UTC
    + "S1,2024-05-01T23:30:00-01:00,32,100,0.5,7.2\n"  # 00:30 UTC the next day
    + "S1,2024-05-02T06:00:00Z,999,50,0,0\n"  # line 5: 999 F = 537.2 C, out-of-range
    + "S1,2024-05-01T02:00:00+02:00,50,80,0.1,36\n",  # line 6: 00:00 UTC again, duplicate
    # NDJSON, units per record: 283.15 K = 10 C, 10 mph = 4.4704 m/s
    "station-b.ndjson": '{"station_id":"S2","timestamp":"2024-05-01T06:00:00Z",'
    '"temperature_k":283.15,"humidity_pct":"55","precipitation_mm":1.5,"wind_speed_mph":10}\n'
    '{"station_id":"S2","timestamp":"2024-05-01T18:00:00Z","temperature_c":14,'
    '"humidity_pct":65,"precipitation_mm":0,"wind_speed_ms":3}\n'
    "not json\n"  # line 3: bad-json
    '{"station_id":"S2","timestamp":"2024-05-01","temperature_c":1,"humidity_pct":1,'
    '"precipitation_mm":0,"wind_speed_ms":0}\n',  # line 4: bad-timestamp (no time, no zone)
    # 12 days at noon: 10 C on 2024-05-01..11, 30 C on 2024-05-12
    "station-c.csv": "station_id,timestamp,temperature_c,humidity_pct,precipitation_mm,"
    "wind_speed_ms\n"
    + "".join(
        f"S3,2024-05-{day:02d}T12:00:00Z,{30 if day == 12 else 10},50,0,1\n" for day in range(1, 13)
    ),
}
WEATHER_OUTPUTS = {
    "anomalies.jsonl": 1,
    "anomalies/anomalies.parquet": 1,
    "daily.jsonl": 15,
    "daily/daily.parquet": 15,
    "observations.jsonl": 17,
    "observations/observations.parquet": 17,
    "quality.json": 1,
    "rejected/rejected.csv": 4,
}


def observation(
    station: str, time: str, temp: float, hum: float, rain: float, wind: float
) -> dict[str, Any]:
    return {
        "station_id": station,
        "timestamp": time,
        "temperature_c": temp,
        "humidity_pct": hum,
        "precipitation_mm": rain,
        "wind_speed_ms": wind,
    }


def day(
    station: str,
    date: str,
    t: tuple[float, ...],
    rain: float,
    hum: float,
    wind: float,
    n: int,
) -> dict[str, Any]:
    return {
        "station_id": station,
        "date": date,
        "temperature_min_c": t[0],
        "temperature_max_c": t[1],
        "temperature_mean_c": t[2],
        "precipitation_total_mm": rain,
        "humidity_mean_pct": hum,
        "wind_speed_max_ms": wind,
        "observation_count": n,
    }


def test_weather_hand_made_daily_summaries_anomaly_and_quality(
    s3_server: S3Server, bucket: str
) -> None:
    put_inputs(s3_server, bucket, WEATHER)
    result = run_batch(s3_server, bucket, "weather", "run-1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert_complete(s3_server, bucket, "run-1", "weather", WEATHER_OUTPUTS)
    out = f"{PREFIX}weather/"

    twelve = [f"2024-05-{d:02d}" for d in range(1, 13)]
    s3_temp = {d: 30.0 if d == "2024-05-12" else 10.0 for d in twelve}
    assert jsonl(s3_server, bucket, out + "observations.jsonl") == [
        observation("S1", "2024-05-01T00:00:00Z", 10.0, 80.0, 2.54, 10.0),
        observation("S1", "2024-05-01T10:00:00Z", 20.0, 60.0, 0.0, 5.0),
        observation("S1", "2024-05-02T00:30:00Z", 0.0, 100.0, 12.7, 2.0),
        observation("S2", "2024-05-01T06:00:00Z", 10.0, 55.0, 1.5, 4.47),
        observation("S2", "2024-05-01T18:00:00Z", 14.0, 65.0, 0.0, 3.0),
        *(observation("S3", f"{d}T12:00:00Z", s3_temp[d], 50.0, 0.0, 1.0) for d in twelve),
    ]
    # S1 2024-05-01: 10 and 20 C -> mean 15; rain 2.54 + 0; humidity (80 + 60) / 2; wind 10
    # S1 2024-05-02: the 00:30 UTC reading alone
    # S2 2024-05-01: 10 and 14 C -> mean 12; rain 1.5; humidity (55 + 65) / 2; wind 4.47
    daily = [
        day("S1", "2024-05-01", (10.0, 20.0, 15.0), 2.54, 70.0, 10.0, 2),
        day("S1", "2024-05-02", (0.0, 0.0, 0.0), 12.7, 100.0, 2.0, 1),
        day("S2", "2024-05-01", (10.0, 14.0, 12.0), 1.5, 60.0, 4.47, 2),
        *(day("S3", d, (s3_temp[d],) * 3, 0.0, 50.0, 1.0, 1) for d in twelve),
    ]
    assert jsonl(s3_server, bucket, out + "daily.jsonl") == daily
    # S3: 11 days at 10, one at 30 -> mu = 140 / 12 = 11.667; population sigma =
    # 20 * sqrt(11) / 12 = 5.528; z = (30 - mu) / sigma = sqrt(11) = 3.317 > 3.
    # S1 and S2 (2 and 1 days) cannot have an anomaly (|z| <= sqrt(n - 1) < 3).
    anomalies = [
        {
            "station_id": "S3",
            "date": "2024-05-12",
            "temperature_mean_c": 30.0,
            "station_mean_c": 11.667,
            "station_std_c": 5.528,
            "z_score": 3.317,
        }
    ]
    assert jsonl(s3_server, bucket, out + "anomalies.jsonl") == anomalies
    for stem in ("observations", "daily", "anomalies"):
        assert parquet(s3_server, bucket, f"{out}{stem}/{stem}.parquet") == jsonl(
            s3_server, bucket, f"{out}{stem}.jsonl"
        )
    csv_units = {"humidity_pct": 3, "precipitation_in": 3, "temperature_f": 3, "wind_speed_kmh": 3}
    assert json.loads(get(s3_server, bucket, out + "quality.json")) == {
        "files": {
            "station-a.csv": {
                "format": "csv",
                "rows": 5,
                "valid": 3,
                "rejected": 2,
                "units": csv_units,
            },
            "station-b.ndjson": {
                "format": "ndjson",
                "rows": 4,
                "valid": 2,
                "rejected": 2,
                "units": {
                    "humidity_pct": 2,
                    "precipitation_mm": 2,
                    "temperature_c": 1,
                    "temperature_k": 1,
                    "wind_speed_mph": 1,
                    "wind_speed_ms": 1,
                },
            },
            "station-c.csv": {
                "format": "csv",
                "rows": 12,
                "valid": 12,
                "rejected": 0,
                "units": {
                    "humidity_pct": 12,
                    "precipitation_mm": 12,
                    "temperature_c": 12,
                    "wind_speed_ms": 12,
                },
            },
        },
        "rows": 21,
        "valid": 17,
        "rejected": 4,
        "rejected_by_kind": {"bad-json": 1, "bad-timestamp": 1, "duplicate": 1, "out-of-range": 1},
        "stations": 3,
        "station_days": 15,  # 2 + 1 + 12
        "anomalies": 1,
    }
    rejected = csv_rows(s3_server, bucket, out + "rejected/rejected.csv")
    assert [row[:3] for row in rejected] == [
        ["source", "row_number", "kind"],
        ["station-a.csv", "5", "out-of-range"],
        ["station-a.csv", "6", "duplicate"],
        ["station-b.ndjson", "3", "bad-json"],
        ["station-b.ndjson", "4", "bad-timestamp"],
    ]
    assert rejected[2][3] == "duplicate: station S1 at 2024-05-01T00:00:00Z seen before"
    # weather leaves its inputs where they are
    assert s3_server.keys(bucket, INPUT_PREFIX) == [INPUT_PREFIX + n for n in sorted(WEATHER)]


# --------------------------------------------------------------------------------- reconcile

LEDGER = (
    "txn_id,account,amount,currency,timestamp\n"
    "T1,ACC1,100.00,USD,2024-05-01T10:00:00Z\n"  # line 2
    "T2,ACC1,50.5,usd,2024-05-01T11:00:00Z\n"  # line 3: 50.50 USD
    "T3,ACC2,1000,JPY,2024-05-01T12:00:00+09:00\n"  # line 4
    "T4,ACC2,20.00,EUR,2024-05-01T13:00:00Z\n"  # line 5
    "T5,ACC3,7.25,USD,2024-05-01T14:00:00Z\n"  # line 6
    "T10,ACC4,1.5,KWD,2024-05-01T15:00:00Z\n"  # line 7: 1.500 KWD (3 places)
    "T1,ACC1,100.00,USD,2024-05-01T10:00:00Z\n"  # line 8: duplicate of line 2
    "T6,ACC3,1.005,USD,2024-05-01T15:00:00Z\n"  # line 9: too-precise
    "T7,ACC3,3.00,XXX,2024-05-01T15:00:00Z\n"  # line 10: unknown-currency
)
PROCESSOR = (
    "reference,account,amount,currency,settled_at\n"
    "T1,ACC1,100,USD,2024-05-02T00:00:00Z\n"  # line 2: 100.00, matches ledger line 2
    "T2,ACC1,50.49,USD,2024-05-02T00:00:00Z\n"  # line 3: 50.49 - 50.50 = -0.01
    "T3,ACC2,1000,JPY,2024-05-02T00:00:00Z\n"  # line 4: matched
    "T4,ACC2,20.00,GBP,2024-05-02T00:00:00Z\n"  # line 5: EUR vs GBP
    "T8,ACC1,12.34,USD,2024-05-02T00:00:00Z\n"  # line 6: not in the ledger
    "T1,ACC9,5.00,USD,2024-05-02T00:00:00Z\n"  # line 7: same id, other account: not in ledger
    "T10,ACC4,1.500,KWD,2024-05-02T00:00:00Z\n"  # line 8: matched
    "T9,ACC1,,USD,2024-05-02T00:00:00Z\n"  # line 9: missing-field
)
RECONCILE_INPUTS = {"ledger-2024-05-01.csv": LEDGER, "Processor-2024-05-01.csv": PROCESSOR}


def detail(
    status: str,
    account: str,
    txn: str,
    ledger: tuple[str, str, int] | None,
    processor: tuple[str, str, int] | None,
    difference: str | None,
) -> dict[str, Any]:
    return {
        "status": status,
        "account": account,
        "id": txn,
        "ledger_amount": ledger[0] if ledger else None,
        "ledger_currency": ledger[1] if ledger else None,
        "processor_amount": processor[0] if processor else None,
        "processor_currency": processor[1] if processor else None,
        "difference": difference,
        "ledger_row": ledger[2] if ledger else None,
        "processor_row": processor[2] if processor else None,
    }


def test_reconcile_hand_made_statuses_totals_and_summary(s3_server: S3Server, bucket: str) -> None:
    put_inputs(s3_server, bucket, RECONCILE_INPUTS)
    result = run_batch(s3_server, bucket, "reconcile", "run-1")
    assert result.returncode == 0, result.stderr[-2000:]
    records = {
        "details.jsonl": 9,
        "details/details.parquet": 9,
        "rejected.csv": 3,
        "summary.json": 1,
        "summary.md": 1,
    }
    assert_complete(s3_server, bucket, "run-1", "reconcile", records)
    out = f"{PREFIX}reconcile/"

    # Keys are (account, id); amounts at the currency's minor unit; difference = processor -
    # ledger, none across currencies.
    expected = [
        detail("amount-mismatch", "ACC1", "T2", ("50.50", "USD", 3), ("50.49", "USD", 3), "-0.01"),
        detail("currency-mismatch", "ACC2", "T4", ("20.00", "EUR", 5), ("20.00", "GBP", 5), None),
        detail("duplicate-ledger", "ACC1", "T1", ("100.00", "USD", 8), None, None),
        detail("matched", "ACC1", "T1", ("100.00", "USD", 2), ("100.00", "USD", 2), "0.00"),
        detail("matched", "ACC2", "T3", ("1000", "JPY", 4), ("1000", "JPY", 4), "0"),
        detail("matched", "ACC4", "T10", ("1.500", "KWD", 7), ("1.500", "KWD", 8), "0.000"),
        detail("missing-in-ledger", "ACC1", "T8", None, ("12.34", "USD", 6), None),
        detail("missing-in-ledger", "ACC9", "T1", None, ("5.00", "USD", 7), None),
        detail("missing-in-processor", "ACC3", "T5", ("7.25", "USD", 6), None, None),
    ]
    details = jsonl(s3_server, bucket, out + "details.jsonl")
    assert details == expected  # sorted by their JSON bytes: status first
    assert parquet(s3_server, bucket, out + "details/details.parquet") == expected

    # Totals of the first valid occurrence of each key, per side and currency:
    # ledger USD 100.00 + 50.50 + 7.25 = 157.75; processor USD 100.00 + 50.49 + 12.34 + 5.00
    # = 167.83; matched USD 100.00; difference 167.83 - 157.75 = 10.08.
    # EUR only in the ledger (20.00), GBP only in the processor (20.00); JPY and KWD matched.
    summary = json.loads(get(s3_server, bucket, out + "summary.json"))
    assert summary == {
        "balanced": False,
        "counts": {
            "matched": 3,
            "amount-mismatch": 1,
            "currency-mismatch": 1,
            "missing-in-processor": 1,
            "missing-in-ledger": 2,
            "duplicate-ledger": 1,
            "duplicate-processor": 0,
        },
        "ledger": {
            "source": "ledger-2024-05-01.csv",
            "rows": 9,
            "valid": 7,  # 6 keys + 1 duplicate
            "rejected": 2,
            "rejected_by_kind": {"too-precise": 1, "unknown-currency": 1},
            "duplicates": 1,
        },
        "processor": {
            "source": "Processor-2024-05-01.csv",
            "rows": 8,
            "valid": 7,
            "rejected": 1,
            "rejected_by_kind": {"missing-field": 1},
            "duplicates": 0,
        },
        "by_currency": {
            "EUR": totals("20.00", "0.00", "0.00", "-20.00"),
            "GBP": totals("0.00", "20.00", "0.00", "20.00"),
            "JPY": totals("1000", "1000", "1000", "0"),
            "KWD": totals("1.500", "1.500", "1.500", "0.000"),
            "USD": totals("157.75", "167.83", "100.00", "10.08"),
        },
    }
    markdown = get(s3_server, bucket, out + "summary.md").decode().splitlines()
    assert "Balanced: no." in markdown
    assert "| missing-in-ledger | 2 |" in markdown
    assert "| USD | 157.75 | 167.83 | 100.00 | 10.08 |" in markdown
    assert csv_rows(s3_server, bucket, out + "rejected.csv") == [
        ["source", "row_number", "kind", "reason", "raw_line"],
        [
            "Processor-2024-05-01.csv",
            "9",
            "missing-field",
            "missing-field: amount is empty",
            "T9,ACC1,,USD,2024-05-02T00:00:00Z",
        ],
        [
            "ledger-2024-05-01.csv",
            "9",
            "too-precise",
            "too-precise: amount has more than 2 decimal places for USD",
            "T6,ACC3,1.005,USD,2024-05-01T15:00:00Z",
        ],
        [
            "ledger-2024-05-01.csv",
            "10",
            "unknown-currency",
            "unknown-currency: currency is not a known code: 'XXX'",
            "T7,ACC3,3.00,XXX,2024-05-01T15:00:00Z",
        ],
    ]
    # reconcile leaves its inputs where they are
    assert s3_server.keys(bucket, INPUT_PREFIX) == [
        INPUT_PREFIX + name for name in sorted(RECONCILE_INPUTS)
    ]


def totals(ledger: str, processor: str, matched: str, difference: str) -> dict[str, str]:
    return {
        "ledger_total": ledger,
        "processor_total": processor,
        "matched_total": matched,
        "difference": difference,
    }
