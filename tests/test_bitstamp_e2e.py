"""End to end, as the Fargate task runs: fake Bitstamp -> `feedvault stream` (env only) -> S3,
through reconnect notices (``bts:request_reconnect``). The tests every exchange shares are in
tests/test_exchanges_e2e.py."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import S3Server
from tests.harness import assert_stored_exactly_once
from tests.test_exchanges_e2e import EXCHANGES


def test_reconnect_notices_reconnect_and_lose_nothing(
    s3_server: S3Server, bucket: str, tmp_path: Path
) -> None:
    """The run is stopped (SIGTERM) once it has connected three times, however long the start
    and the reconnects took on a loaded machine."""
    # a notice at each connection's age 2 s: the second connection lived between two notices
    run = EXCHANGES["bitstamp"].run(
        s3_server,
        bucket,
        tmp_path,
        faults="shutdown-notice-every=2",
        runtime="120",
        connections=3,
    )
    run.assert_exit(0)
    manifest = run.manifest()
    assert (manifest["status"], manifest["stop_reason"]) == ("complete", "signal")
    assert manifest["counters"]["reconnects"] >= 2  # three connections
    assert len({t["conn"] for t in run.ledger}) >= 2  # the fake saw the client come back
    stored = run.stored()
    assert_stored_exactly_once(run.ledger, stored)
    assert manifest["counters"]["parsed"] == len(stored)
