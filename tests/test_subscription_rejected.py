"""A rejected subscription names the symbol (issue 12): the one the exchange's message names,
spelled as ``STREAMS`` spells it, or every symbol of the refused connection when the message
names none. The protocols' parsing of each exchange's refusal is tested in
``tests/test_*_protocol.py``; here the rule. Real sessions against the fake exchange's refusals
are in tests/test_session_conformance.py (on both transports)."""

from __future__ import annotations

import pytest

from connectors.base import ExchangeError, rejected_symbols
from engine.errors import SubscriptionRejected


@pytest.mark.parametrize(
    ("named", "connection", "expected"),
    [
        (("NOPEUSDT",), ["BTCUSDT", "NOPEUSDT"], ("NOPEUSDT",)),
        (("nopeusd",), ["BTCUSD", "NOPEUSD"], ("NOPEUSD",)),  # Bitstamp: channels lower case
        ((), ["BTCUSDT", "NOPEUSDT"], ("BTCUSDT", "NOPEUSDT")),  # unknown: the connection's
        (("XYZ",), ["BTCUSDT"], ("XYZ",)),  # not ours: as the exchange said it
    ],
)
def test_the_refused_symbols_are_those_named_else_the_connections(
    named: tuple[str, ...], connection: list[str], expected: tuple[str, ...]
) -> None:
    event = ExchangeError("refused", fatal=True, symbols=named)
    assert rejected_symbols(event, connection) == expected


def test_the_error_names_the_streams() -> None:
    err = SubscriptionRejected("okx", "okx error 60018: ...", ["NOPE-USDT"])
    assert str(err) == "okx rejected the subscription to okx:NOPE-USDT: okx error 60018: ..."
    assert err.streams == ("okx:NOPE-USDT",)
    assert str(SubscriptionRejected("okx", "m")) == "okx rejected the subscription: m"
