"""Level-2 order book feeds, one module per exchange (docs: order-books.md).

:mod:`connectors.books.base` holds the contract (:class:`~connectors.books.base.BookFeed`) and
the state every feed shares; :mod:`connectors.books.registry` builds a feed by exchange name.
"""
