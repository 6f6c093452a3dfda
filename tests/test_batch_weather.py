"""The weather job's pure logic: units, UTC days, summaries, anomalies, the quality report."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from batch.csvutil import InputError
from batch.weather import (
    ANOMALY_SCHEMA,
    DAILY_SCHEMA,
    OBSERVATION_SCHEMA,
    anomalies,
    daily_summaries,
    observation_rows,
    parse_weather,
    quality_report,
    to_jsonl,
    to_parquet,
)

HEADER = "station_id,timestamp,temperature_f,humidity_pct,precipitation_in,wind_speed_mph\n"
S1 = (
    HEADER
    # 00:30 at +02:00 is 22:30 UTC the day before. 50 F = 10 C, 0.1 in = 2.54 mm, 10 mph = 4.4704
    + "S1,2024-06-01T00:30:00+02:00,50,40,0.1,10\n"
    + "S1,2024-06-01T12:00:00Z,68,60,0,0\n"  # 20 C
    + "S1,2024-06-01T18:00:00Z,86,80,1,5\n"  # 30 C, 25.4 mm, 2.2352 m/s
).encode()
S2 = (
    b'{"station_id":"S2","timestamp":"2024-06-01T00:00:00Z","temperature_k":283.15,'
    b'"humidity_pct":"55","precipitation_mm":0,"wind_speed_kmh":36,"note":"ignored"}\n'
)


def test_units_days_and_summaries() -> None:
    parsed = parse_weather([("s2.ndjson", S2), ("s1.csv", S1)])
    assert not parsed.rejected
    assert daily_summaries(parsed.observations) == [
        {
            "station_id": "S1",
            "date": "2024-05-31",
            "temperature_min_c": 10.0,
            "temperature_max_c": 10.0,
            "temperature_mean_c": 10.0,
            "precipitation_total_mm": 2.54,
            "humidity_mean_pct": 40.0,
            "wind_speed_max_ms": 4.47,  # 4.4704 to 3 places
            "observation_count": 1,
        },
        {
            "station_id": "S1",
            "date": "2024-06-01",
            "temperature_min_c": 20.0,
            "temperature_max_c": 30.0,
            "temperature_mean_c": 25.0,  # (20 + 30) / 2
            "precipitation_total_mm": 25.4,  # 0 + 1 in
            "humidity_mean_pct": 70.0,  # (60 + 80) / 2
            "wind_speed_max_ms": 2.235,  # 5 mph = 2.2352
            "observation_count": 2,
        },
        {
            "station_id": "S2",
            "date": "2024-06-01",
            "temperature_min_c": 10.0,  # 283.15 K
            "temperature_max_c": 10.0,
            "temperature_mean_c": 10.0,
            "precipitation_total_mm": 0.0,
            "humidity_mean_pct": 55.0,
            "wind_speed_max_ms": 10.0,  # 36 km/h
            "observation_count": 1,
        },
    ]
    assert observation_rows(parsed.observations)[0] == {
        "station_id": "S1",
        "timestamp": "2024-05-31T22:30:00Z",
        "temperature_c": 10.0,
        "humidity_pct": 40.0,
        "precipitation_mm": 2.54,
        "wind_speed_ms": 4.47,
    }
    report = quality_report(parsed)
    assert report["files"]["s1.csv"] == {
        "format": "csv",
        "rows": 3,
        "valid": 3,
        "rejected": 0,
        "units": {
            "humidity_pct": 3,
            "precipitation_in": 3,
            "temperature_f": 3,
            "wind_speed_mph": 3,
        },
    }
    assert report["files"]["s2.ndjson"]["format"] == "ndjson"
    assert (report["rows"], report["valid"], report["stations"], report["station_days"]) == (
        4,
        4,
        2,
        3,
    )


def _days(station: str, means: list[float]) -> bytes:
    lines = ["station_id,timestamp,temperature_c,humidity_pct,precipitation_mm,wind_speed_ms"]
    lines += [f"{station},2024-01-{d + 1:02d}T12:00:00Z,{t},50,0,1" for d, t in enumerate(means)]
    return ("\n".join(lines) + "\n").encode()


def test_anomaly_population_std() -> None:
    # 11 days: ten at 10 C, one at 20 C. mu = 10 + 10/11 = 10.909; population sigma =
    # sqrt((10 * (10/11)^2 + (100/11)^2) / 11) = 10 * sqrt(10) / 11 = 2.875;
    # z = (100/11) / 2.875 = sqrt(10) = 3.162 > 3
    parsed = parse_weather([("a.csv", _days("A", [10.0] * 10 + [20.0]))])
    assert anomalies(parsed.observations) == [
        {
            "station_id": "A",
            "date": "2024-01-11",
            "temperature_mean_c": 20.0,
            "station_mean_c": 10.909,
            "station_std_c": 2.875,
            "z_score": 3.162,
        }
    ]
    assert quality_report(parsed)["anomalies"] == 1
    # 5 days: |z| can be at most sqrt(n - 1) = 2, however far the outlier: no anomaly.
    assert (
        anomalies(parse_weather([("b.csv", _days("B", [10, 10, 10, 10, 55]))]).observations) == []
    )
    # A constant series has sigma 0: no anomaly.
    assert anomalies(parse_weather([("c.csv", _days("C", [5.0] * 12))]).observations) == []


CSV_BAD = [
    ("S1,2024-06-02T00:00:00Z,50,40,0", "wrong-field-count"),
    ("S1,2024-06-02T00:00:00Z,,40,0,1", "missing-field"),
    (",2024-06-02T00:00:00Z,50,40,0,1", "missing-field"),
    ("S1,2024-06-02T00:00:00,50,40,0,1", "bad-timestamp"),
    ("S1,2024-06-02,50,40,0,1", "bad-timestamp"),
    ("S1,2024-06-02T00:00:00Z,warm,40,0,1", "bad-number"),
    ("S1,2024-06-02T00:00:00Z,nan,40,0,1", "bad-number"),
    ("S1,2024-06-02T00:00:00Z,50,101,0,1", "out-of-range"),  # humidity
    ("S1,2024-06-02T00:00:00Z,150,40,0,1", "out-of-range"),  # 150 F = 65.6 C
    ("S1,2024-06-02T00:00:00Z,50,40,-0.1,1", "out-of-range"),
    ("S1,2024-06-02T00:00:00Z,50,40,0,300", "out-of-range"),  # 300 mph = 134 m/s
    ("S1,2024-06-01T14:00:00+02:00,50,40,0,1", "duplicate"),  # = 12:00Z of line 3
]


@pytest.mark.parametrize(("line", "kind"), CSV_BAD)
def test_each_csv_rejection_kind(line: str, kind: str) -> None:
    parsed = parse_weather([("s1.csv", S1 + line.encode() + b"\n")])
    assert len(parsed.observations) == 3
    [bad] = parsed.rejected
    assert (bad.source, bad.row_number, bad.raw_line, bad.kind) == ("s1.csv", 5, line, kind)
    assert quality_report(parsed)["rejected_by_kind"] == {kind: 1}


NDJSON_BAD = [
    ('{"station_id":"S2","timestamp":"2024-06-01T01:00:00Z"', "bad-json"),
    ("[1, 2]", "bad-json"),
    (S2.decode().strip().replace('"note"', '"temperature_c"'), "bad-units"),
    (S2.decode().strip().replace('"temperature_k"', '"temp"'), "bad-units"),
    (S2.decode().strip().replace('"55"', "null"), "missing-field"),
    (S2.decode().strip().replace('"55"', "true"), "bad-number"),
    (S2.decode().strip().replace('"2024-06-01T00:00:00Z"', "1717200000"), "bad-timestamp"),
    (S2.decode().strip(), "duplicate"),
]


@pytest.mark.parametrize(("line", "kind"), NDJSON_BAD)
def test_each_ndjson_rejection_kind(line: str, kind: str) -> None:
    parsed = parse_weather([("s2.jsonl", S2 + b"\n" + line.encode() + b"\n")])
    assert len(parsed.observations) == 1
    [bad] = parsed.rejected
    assert (bad.row_number, bad.raw_line, bad.kind) == (3, line, kind)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"\xc3\x28", "not UTF-8"),
        (
            b"station_id,timestamp,humidity_pct,precipitation_mm,wind_speed_ms\n",
            "one temperature column",
        ),
        (
            b"station_id,timestamp,temperature_c,temperature_f,humidity_pct,precipitation_mm,"
            b"wind_speed_ms\n",
            r"found temperature_c, temperature_f",
        ),
        (
            b"station,timestamp,temperature_c,humidity_pct,precipitation_mm,wind_speed_ms\n",
            "no station_id column",
        ),
    ],
)
def test_malformed_files(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_weather([("w.csv", data)])


def test_outputs_are_deterministic_and_order_free() -> None:
    lines = S1.decode().splitlines()
    shuffled = (lines[0] + "\n" + "\n".join(reversed(lines[1:])) + "\n").encode()
    one = parse_weather([("s1.csv", S1), ("s2.ndjson", S2)])
    two = parse_weather([("s2.ndjson", S2), ("s1.csv", shuffled)])
    for rows_of, schema in (
        (daily_summaries, DAILY_SCHEMA),
        (observation_rows, OBSERVATION_SCHEMA),
        (anomalies, ANOMALY_SCHEMA),
    ):
        rows = rows_of(one.observations)
        assert to_jsonl(rows) == to_jsonl(rows_of(two.observations))
        blob = to_parquet(rows, schema)
        assert blob == to_parquet(rows_of(two.observations), schema)
        back = pq.read_table(io.BytesIO(blob)).to_pylist()
        assert back == [json.loads(line) for line in to_jsonl(rows).splitlines()]
