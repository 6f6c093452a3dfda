"""One engine, four exchanges at once, two of them disconnecting: a complete manifest whose
per-symbol counts match each fake exchange's ledger."""

from __future__ import annotations

import collections
from contextlib import ExitStack
from pathlib import Path

from tests.conftest import S3Server
from tests.harness import (
    base_env,
    fake_exchange,
    read_manifest,
    run_verify,
    start_stream,
    stored_trades,
    trade_identity,
)

PREFIX = "streaming/mixed/"
EXCHANGES = {
    # exchange: (symbol as in STREAMS, faults)
    "binance": ("BTCUSDT", "disconnect-every=2"),
    "coinbase": ("BTC-USD", None),
    "kraken": ("BTC/USD", "disconnect-every=2.5"),
    "okx": ("BTC-USDT", None),
}


def test_four_exchanges_in_one_process(s3_server: S3Server, bucket: str, tmp_path: Path) -> None:
    with ExitStack() as stack:
        fakes = {
            name: stack.enter_context(
                fake_exchange(
                    tmp_path, protocol=name, symbols=symbol, rate="300", faults=faults, name=name
                )
            )
            for name, (symbol, faults) in EXCHANGES.items()
        }
        env = base_env(
            S3_BUCKET=bucket,
            S3_PREFIX=PREFIX,
            MAX_RUNTIME_SECONDS="7",
            STREAMS=",".join(f"{name}:{symbol}" for name, (symbol, _) in EXCHANGES.items()),
            WINDOW_SECONDS="3",
            **{f"{name.upper()}_WS_URL": fx.url for name, fx in fakes.items()},
            **s3_server.env(),
        )
        proc = start_stream(env)
        out, err = proc.communicate(timeout=60)
        ledgers = {name: fx.stop() for name, fx in fakes.items()}
    assert proc.returncode == 0, err[-2000:] + out[-2000:]
    manifest = read_manifest(s3_server.client(), bucket, PREFIX)
    assert manifest["status"] == "complete"
    assert manifest["counters"]["reconnects"] >= 2
    stored = stored_trades(s3_server.client(), bucket, PREFIX)
    sent = [trade_identity(t) for ledger in ledgers.values() for t in ledger]
    got = [trade_identity(t) for t in stored]
    assert sorted(got) == sorted(sent)
    per_symbol_sent = collections.Counter((t[0], t[1]) for t in sent)
    per_symbol_manifest: collections.Counter[tuple[str, str]] = collections.Counter()
    for obj in manifest["objects"]:
        [name] = obj["symbols"]  # one symbol per object with the default key template
        exchange, symbol = name.split(":", 1)
        per_symbol_manifest[(exchange, symbol)] += obj["records"]
    assert per_symbol_manifest == per_symbol_sent
    assert {exchange for exchange, _ in per_symbol_sent} == set(EXCHANGES)
    result = run_verify(s3_server.env(), bucket, PREFIX)
    assert result.returncode == 0, result.stdout + result.stderr
