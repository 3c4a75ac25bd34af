"""The ``books`` list-and-detail crawl, fanned out over several workers through Redis.

Start K workers with the same ``crawl_id`` (and the same ``start_url``): the list page is fetched
once, its detail pages are spread over whichever workers are free, and each book lands in exactly
one worker's output.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scrapy.http import Response

from crawler.items import BookItem
from crawler.spiders.base import Arg, positive_int, url_argument
from crawler.spiders.books import DEFAULT_START, parse_book
from crawler.spiders.shared import SharedSpider


class SharedBooksSpider(SharedSpider):
    name = "shared_books"
    arguments = {
        **SharedSpider.arguments,
        "start_url": Arg(url_argument, DEFAULT_START, "first list page (seeded once per crawl)"),
        "max_pages": Arg(positive_int, 0, "stop after this many list pages (0: all)"),
    }
    start_url: str
    max_pages: int

    def start_urls_from_arguments(self) -> list[str]:
        return [self.start_url]

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        # The page number travels in meta, which scrapy-redis stores with the queued request, so
        # max_pages holds across workers.
        page = response.meta.get("page", 1)
        yield from response.follow_all(css="ul.books li.book a", callback=self.parse_book)
        next_page = response.css("a.next::attr(href)").get()
        if next_page and (not self.max_pages or page < self.max_pages):
            yield response.follow(next_page, callback=self.parse, meta={"page": page + 1})

    def parse_book(self, response: Response) -> BookItem:
        return parse_book(response)
