"""Which streamed objects ``feedvault batch compact`` reads, and on which day (pure).

Sources, under the streaming prefix (``INPUT_PREFIX``):

* every run manifest ``{prefix}_manifests/*.json`` of a stream or replay run: each trade object
  it lists (not raw capture, not a book object, not a batch output) with its size and checksum,
  which the job checks before trusting the bytes (book objects: :mod:`batch.compact_book`);
* every object under ``{prefix}trades/`` (the default key layout) that no manifest lists: what a
  run killed before its manifest left behind. Its run id is read from the file name
  (``{window_start}-{run_id}-{seq}.{ext}``) where it has that shape.

A trade belongs to the UTC day of its ``ts_event``. An object may hold trades of the days that
its time span touches, widened by :data:`MARGIN_US` (exchange and local clocks disagree a
little, and a late trade joins the window open when it arrives): for a listed object the span
is its ``first_ts_event``..``last_ts_event``; for an unlisted one, the hour of its
``date=``/``hour=`` partition. Days are processed in order and each object is read once, on the
first day of the range it may hold (:attr:`SourceObject.read_day`); its trades of later days wait
for their day. Objects that can hold no day of the range are not read at all. An unlisted object
whose key has no ``date=`` partition (a custom ``KEY_TEMPLATE``) is read on the first day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from batch.compact import US_PER_DAY, US_PER_HOUR
from batch.compact_book import is_book_key
from sinks.keys import is_raw_key
from sinks.manifest import MANIFEST_DIR, OUTPUT_KIND, Manifest, StoredObjectEntry
from sinks.writer import ListedObject

MARGIN_US: Final = US_PER_HOUR
TRADES_DIR: Final = "trades/"
EPOCH: Final = dt.date(1970, 1, 1)

_NAME = re.compile(r"\d{8}T\d{6}Z-(?P<run>.+)-\d+\.[A-Za-z0-9.]+")
_DATE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")
_HOUR = re.compile(r"/hour=(\d{2})/")


def day_number(day: dt.date) -> int:
    """Days since 1970-01-01."""
    return (day - EPOCH).days


def day_date(number: int) -> dt.date:
    return EPOCH + dt.timedelta(days=number)


@dataclass(frozen=True, slots=True)
class DayRange:
    """UTC days ``first``..``last`` (inclusive), as day numbers."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError("a day range must not end before it starts")

    @classmethod
    def of(cls, first: dt.date, last: dt.date) -> DayRange:
        return cls(day_number(first), day_number(last))

    @property
    def days(self) -> range:
        return range(self.first, self.last + 1)

    @property
    def start_us(self) -> int:
        return self.first * US_PER_DAY

    @property
    def end_us(self) -> int:
        """The end of the last day (exclusive), µs since the epoch."""
        return (self.last + 1) * US_PER_DAY

    def label(self) -> str:
        return f"{day_date(self.first).isoformat()}..{day_date(self.last).isoformat()}"


@dataclass(frozen=True, slots=True)
class SourceObject:
    """A trade object to read. ``entry`` is its manifest entry (``None``: listed by no
    manifest); ``run_id`` is the manifest's run, or the one in the file name, or ``None``;
    ``first_day``/``last_day`` bound the days its trades may fall on."""

    key: str
    run_id: str | None
    entry: StoredObjectEntry | None
    first_day: int
    last_day: int

    def read_day(self, days: DayRange) -> int:
        return max(self.first_day, days.first)

    def overlaps(self, days: DayRange) -> bool:
        return self.last_day >= days.first and self.first_day <= days.last


def is_manifest_key(prefix: str, key: str) -> bool:
    """A run manifest directly under ``{prefix}_manifests/``."""
    directory = prefix + MANIFEST_DIR
    return key.startswith(directory) and key.endswith(".json") and "/" not in key[len(directory) :]


def is_stream_manifest(manifest: Manifest) -> bool:
    """A stream or replay run (a batch job's manifest lists outputs, not trade windows)."""
    words = manifest.command.split()
    return not (len(words) > 1 and words[1] == "batch") and not any(
        entry.kind == OUTPUT_KIND for entry in manifest.objects
    )


def run_id_from_key(key: str) -> str | None:
    """The run id in a default-layout file name, else ``None``."""
    match = _NAME.fullmatch(key.rsplit("/", 1)[-1])
    return match.group("run") if match else None


def _listed_days(key: str, days: DayRange) -> tuple[int, int]:
    date = _DATE.search(key)
    if date is None:
        return days.first, days.last
    try:
        day = day_number(dt.date.fromisoformat(date.group(1)))
    except ValueError:
        return days.first, days.last
    hour_match = _HOUR.search(key)
    hour = int(hour_match.group(1)) if hour_match else None
    first = day - 1 if hour in (None, 0) else day
    last = day + 1 if hour in (None, 23) else day
    return first, last


def plan_objects(
    prefix: str,
    manifests: Sequence[Manifest],
    listed: Iterable[ListedObject],
    days: DayRange,
) -> list[SourceObject]:
    """Every object to read for ``days``, sorted by (read day, key); see the module docstring.

    A key listed by several manifests is taken from the first (manifests in run id order)."""
    chosen: dict[str, SourceObject] = {}
    for manifest in sorted(manifests, key=lambda m: m.run_id):
        if not is_stream_manifest(manifest):
            continue
        for entry in manifest.objects:
            if (
                entry.key in chosen
                or is_raw_key(prefix, entry.key)
                or is_book_key(prefix, entry.key)
                or entry.records == 0
            ):
                continue
            low = min(entry.first_ts_event, entry.last_ts_event) - MARGIN_US
            high = max(entry.first_ts_event, entry.last_ts_event) + MARGIN_US
            source = SourceObject(
                entry.key, manifest.run_id, entry, low // US_PER_DAY, high // US_PER_DAY
            )
            if source.overlaps(days):
                chosen[entry.key] = source
    manifested = {entry.key for m in manifests for entry in m.objects}
    for obj in listed:
        if obj.key in manifested or obj.key.endswith("/"):
            continue
        first, last = _listed_days(obj.key, days)
        source = SourceObject(obj.key, run_id_from_key(obj.key), None, first, last)
        if source.overlaps(days):
            chosen[obj.key] = source
    return sorted(chosen.values(), key=lambda s: (s.read_day(days), s.key))


def by_read_day(sources: Sequence[SourceObject], days: DayRange) -> dict[int, list[SourceObject]]:
    """``sources`` grouped by the day they are read on (every day of ``days`` present)."""
    grouped: dict[int, list[SourceObject]] = {day: [] for day in days.days}
    for source in sources:
        grouped[source.read_day(days)].append(source)
    return grouped
