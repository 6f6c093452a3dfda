"""The fake exchange (docs: testing.md): a real WebSocket server on loopback, with a ledger.

- :mod:`connectors.fake.server`: :class:`~connectors.fake.server.FakeExchange`, the server;
- :mod:`connectors.fake.market`: the seeded synthetic market;
- :mod:`connectors.fake.ledger`: the record of sent trades;
- :mod:`connectors.fake.faults`: the faults it injects;
- :mod:`connectors.fake.adapters`: the per-exchange server protocol interface and registry
  (:mod:`connectors.fake.binance_server` is Binance's);
- :mod:`connectors.fake.cli`: ``feedvault fake-exchange``.
"""
