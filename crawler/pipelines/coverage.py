"""Field coverage: per item field, how many scraped items had it filled, written into the stats.

The control plane judges a finished (or running) crawl from its stats, among them "is every named
field present in at least X% of the items". This extension counts, for every item that was
scraped, which of its fields hold a value, and writes the counts into ``crawler.stats`` (through
a ``StatsBuffer``: before every report and at close, not per item), so they travel in every
heartbeat and in the final report (``extensions/report.py``):

- ``crawlfleet/fields_seen``: the number of items checked;
- ``crawlfleet/fields/<name>``: how many of them had the field ``<name>`` filled (a field is
  tracked from the first item that declares or holds it, starting at 0, so a field that is never
  filled shows as 0 rather than missing);
- ``crawlfleet/fields_untracked``: field occurrences (one per item and field name) not counted
  because ``CRAWLFLEET_FIELD_COVERAGE_MAX_FIELDS`` distinct names were already tracked. A spider
  yielding arbitrary dict keys thus cannot blow up the stats; above zero, coverage is partial.

The control plane parses these key formats: keep them as they are.

Why the last item pipeline and not an extension on ``item_scraped`` (which would match Scrapy's
habit of keeping stats in extensions, as ``CoreStats`` does): Scrapy 2.19 runs every receiver of
that signal as an asyncio task of its own, gathered per item, which cost more than everything
else this stack does per item (bench/crawl_instructions.py counted a sixth of the stack's
instructions per page in it). As the last pipeline (order 1000, after every sink, in
``ITEM_PIPELINES_BASE`` so that a spider setting its own ``ITEM_PIPELINES`` keeps it) it sees
exactly the items that went through every other pipeline without being dropped, the ones
``item_scraped`` would name, so at the end ``fields_seen`` equals
``item_scraped_count`` and the counts describe the items the crawl delivered (validated and
cleaned; dropped items count in ``crawlfleet/items_invalid`` instead). Keep it last: an item a
pipeline after it drops would still be counted here.

Field names are the ones the item declares (``scrapy.Item`` fields, dataclass or attrs fields,
through itemadapter's ``field_names()``) plus any keys it holds. Empty means ``None``, a string
of only whitespace, or an empty collection (list, tuple, set, dict, bytes); ``0`` and ``False``
are values. ``CRAWLFLEET_FIELD_COVERAGE_ENABLED = False`` turns the pipeline off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from itemadapter import ItemAdapter
from scrapy.exceptions import NotConfigured

from crawler.items import dataclass_field_names
from crawler.statsbuffer import StatsBuffer

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

FIELD_PREFIX = "crawlfleet/fields/"
SEEN_KEY = "crawlfleet/fields_seen"
UNTRACKED_KEY = "crawlfleet/fields_untracked"
DEFAULT_MAX_FIELDS = 100

_EMPTY_COLLECTIONS = (list, tuple, set, frozenset, bytes, bytearray, Mapping)


def is_filled(value: Any) -> bool:
    """Whether a field value counts as present: not None, blank text or an empty collection."""
    if value is None:
        return False
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, _EMPTY_COLLECTIONS):
        return len(value) > 0
    return True


def field_values(item: Any) -> Iterable[tuple[str, Any]]:
    """(name, value) for every declared field and every held key; None for declared-but-unset."""
    cls = type(item)
    if dataclasses.is_dataclass(cls) and not isinstance(item, type):
        # A dataclass holds exactly its declared fields: no adapter, no de-duplication needed.
        try:
            return [(name, getattr(item, name)) for name in dataclass_field_names(cls)]
        except AttributeError:
            pass  # a deleted field: let ItemAdapter decide, as for any other item
    return _adapted_field_values(item)


def _adapted_field_values(item: Any) -> Iterator[tuple[str, Any]]:
    adapter = ItemAdapter(item)
    seen: set[str] = set()
    for name in (*adapter.field_names(), *adapter.keys()):
        key = str(name)
        if key in seen:
            continue
        seen.add(key)
        yield key, adapter.get(name)


class FieldCoveragePipeline:
    """Counts the fields of every item that reaches it and passes the item on unchanged."""

    def __init__(self, counters: StatsBuffer, max_fields: int = DEFAULT_MAX_FIELDS) -> None:
        # Ten counts per item: kept in memory, written into the stats before they are read.
        self.counters = counters
        self.max_fields = max(0, max_fields)
        self.tracked: set[str] = set()
        self._keys: dict[str, str] = {}  # name -> its stats key, built once per tracked name

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> FieldCoveragePipeline:
        settings = crawler.settings
        if not settings.getbool("CRAWLFLEET_FIELD_COVERAGE_ENABLED", True):
            raise NotConfigured("CRAWLFLEET_FIELD_COVERAGE_ENABLED is off")
        return cls(
            StatsBuffer.of(crawler),
            settings.getint("CRAWLFLEET_FIELD_COVERAGE_MAX_FIELDS", DEFAULT_MAX_FIELDS),
        )

    def process_item(self, item: Any) -> Any:
        self.count(item)
        return item

    def count(self, item: Any) -> None:
        """Add one item to the counts."""
        inc = self.counters.inc
        inc(SEEN_KEY)
        keys = self._keys
        untracked = 0
        for name, value in field_values(item):
            key = keys.get(name)
            if key is None:
                if len(keys) >= self.max_fields:
                    untracked += 1
                    continue
                key = keys[name] = FIELD_PREFIX + name
                self.tracked.add(name)
                inc(key, 0)  # present from now on, even at 0
            if is_filled(value):
                inc(key)
        if untracked:
            inc(UNTRACKED_KEY, untracked)
