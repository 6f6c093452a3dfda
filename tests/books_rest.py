"""Helpers shared by the REST-snapshot book feeds' tests (Binance, Bitstamp): hostile frames
built from a valid one, and the checks that only ``MalformedFrame`` escapes ``parse`` and
``snapshot_fetched`` (and that a bad snapshot body is asked for again)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import orjson
from hypothesis import strategies as st

from connectors.books.base import BookFeed
from engine.errors import MalformedFrame
from tests.strategies import json_values


def level_lists(price_places: int, size_places: int) -> st.SearchStrategy[list[tuple[str, str]]]:
    """Up to six (price, size) decimal texts with these numbers of places (size 0 included:
    a removal)."""
    return st.lists(
        st.tuples(
            st.decimals(min_value=0, max_value=10**6, places=price_places).map(str),
            st.decimals(min_value=0, max_value=1000, places=size_places).map(str),
        ),
        max_size=6,
    )


def edited_frames(valid: str, paths: Sequence[tuple[str, ...]]) -> st.SearchStrategy[str]:
    """Frames for ``parse``: the valid frame ``valid`` with the field at one of ``paths`` (keys
    from the top) replaced by any JSON value; any JSON value; any short text."""
    doc_of_valid = orjson.loads(valid)

    def edit(path: tuple[str, ...], value: Any) -> str:
        doc = orjson.loads(orjson.dumps(doc_of_valid))
        where = doc
        for key in path[:-1]:
            where = where[key]
        where[path[-1]] = value
        return json.dumps(doc)

    edited = st.builds(edit, st.sampled_from(list(paths)), json_values)
    return edited | json_values.map(json.dumps) | st.text(max_size=40)


def parse_only_malformed(feed: BookFeed, frames: Sequence[str], ts_recv: int) -> None:
    """Parse every frame: only :class:`MalformedFrame` may escape, and every row returned
    carries price and size as decimal text."""
    for frame in frames:
        try:
            result = feed.parse(frame, ts_recv)
        except MalformedFrame:
            continue
        if isinstance(result, list | tuple):
            for row in result:
                assert isinstance(row.price, str) and isinstance(row.size, str)
                Decimal(row.price)
                Decimal(row.size)


def snapshot_only_malformed(
    feed: BookFeed, raw_symbol: str, doc: dict[str, Any], key: str | None, value: Any, ts_recv: int
) -> None:
    """``feed.snapshot_fetched`` of ``doc`` with ``doc[key]`` set to ``value`` (``value`` is
    the whole body when ``key`` is None): only :class:`MalformedFrame` may escape, and then
    the snapshot of ``raw_symbol`` is asked for again."""
    body: Any = value if key is None else {**doc, key: value}
    try:
        feed.snapshot_fetched(raw_symbol, json.dumps(body), ts_recv)
    except MalformedFrame:
        assert [a.raw_symbol for a in feed.take_actions()] == [raw_symbol]  # asked again
