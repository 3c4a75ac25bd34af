"""CSV sink: one file per job, written atomically.

Rows go to ``<dir>/<spider>/<job>.csv.part`` and the file is renamed into place only when the
spider closes, so a reader never sees a half-written file. Columns come from the item type's
declared fields (or the first dict item's keys) and never change within a file; an item with
fields outside them is refused and counted, never truncated silently.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from pathlib import Path
from typing import Any, TextIO

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem, NotConfigured

from crawler.items import item_fields
from crawler.statsbuffer import StatsBuffer

logger = logging.getLogger(__name__)


def job_id_of(spider: Any) -> str:
    """Scrapyd passes ``_job``; a local run gets a sortable timestamp."""
    job = getattr(spider, "_job", None)
    return str(job) if job else time.strftime("%Y%m%dT%H%M%S") + f"-{os.getpid()}"


class _CsvFile:
    def __init__(self, final: Path, columns: list[str]) -> None:
        self.final = final
        self.partial = final.with_name(final.name + ".part")
        self.columns = columns
        self.column_set = frozenset(columns)
        final.parent.mkdir(parents=True, exist_ok=True)
        self.handle: TextIO = self.partial.open("w", newline="", encoding="utf-8")
        # A plain writer fed rows in column order: what DictWriter does, without re-checking
        # every row's keys against the columns (process_item has done that already).
        self.writer = csv.writer(self.handle)
        self.writer.writerow(columns)
        self.rows = 0

    def write(self, row: dict[str, Any]) -> None:
        """One row; the caller checked that ``row`` has no key outside the columns."""
        # csv builds the whole line before writing it, so a row is either written or not.
        get = row.get
        self.writer.writerow([get(column, "") for column in self.columns])
        self.rows += 1

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.partial, self.final)


class CsvPipeline:
    def __init__(self, crawler: Crawler, directory: str) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.counters = StatsBuffer.of(crawler)  # one count per row: written in batches
        self.directory = Path(directory)
        self.files: dict[str, _CsvFile] = {}
        self.job = ""

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CsvPipeline:
        directory = crawler.settings.get("CRAWLFLEET_CSV_DIR", "")
        if not directory:
            raise NotConfigured("CRAWLFLEET_CSV_DIR is empty")
        return cls(crawler, directory)

    def open_spider(self) -> None:
        self.job = job_id_of(self.crawler.spider)

    def _file_for(self, item: Any) -> _CsvFile:
        kind = type(item).__name__
        handle = self.files.get(kind)
        if handle is None:
            spider = self.crawler.spider.name
            suffix = "" if not self.files else f".{kind}"
            path = self.directory / spider / f"{self.job}{suffix}.csv"
            handle = self.files[kind] = _CsvFile(path, list(ItemAdapter(item).field_names()))
            logger.info("writing %s items to %s", kind, path)
        return handle

    def process_item(self, item: Any) -> Any:
        handle = self._file_for(item)
        row = item_fields(item)
        if not handle.column_set.issuperset(row):
            extra = sorted(set(row) - handle.column_set)
            self.stats.inc_value("crawlfleet/csv/items_refused")
            raise DropItem(f"item has fields outside the CSV columns: {', '.join(extra)}")
        handle.write(row)
        self.counters.inc("crawlfleet/csv/items_written")
        return item

    def close_spider(self) -> None:
        self.counters.flush()
        for handle in self.files.values():
            handle.commit()
            self.stats.set_value(f"crawlfleet/csv/file/{handle.final.stem}", str(handle.final))
