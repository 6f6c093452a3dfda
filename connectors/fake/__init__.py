"""The fake exchange (docs: testing.md): a real WebSocket server on loopback, with a ledger.

- :mod:`connectors.fake.server`: :class:`~connectors.fake.server.FakeExchange`, the server;
- :mod:`connectors.fake.market`: the seeded synthetic market;
- :mod:`connectors.fake.ledger`: the record of sent trades;
- :mod:`connectors.fake.book_market`: the seeded evolving order books, one per symbol;
- :mod:`connectors.fake.book_ledger`: the books made and served;
- :mod:`connectors.fake.book_channels`: what an adapter says about book channels and REST;
- :mod:`connectors.fake.faults`: the faults it injects;
- :mod:`connectors.fake.adapters`: the per-exchange server protocol interface and registry
  (:mod:`connectors.fake.binance_server` is Binance's);
- :mod:`connectors.fake.cli`: ``feedvault fake-exchange``.
"""
